//! `${VAR}` interpolation of string values, and the brace shielding that lets `${…}` stand unquoted in
//! YAML flow collections. The rules are in the [module documentation](super).

use serde_yaml::Value;

/// Stand-ins for the braces of `${…}` while the YAML parser runs (Unicode private-use characters).
pub(super) const SHIELD_OPEN: char = '\u{E000}';
pub(super) const SHIELD_CLOSE: char = '\u{E001}';

/// `keys: [${OPENAI_API_KEY}]`, as the SPEC writes it, is not valid YAML: inside a flow collection `{` and
/// `}` are indicators, so the parser stops at the `{`. Before parsing, the braces of each `${…}` become
/// private-use characters that YAML treats as plain text (one character each, so error columns stay right);
/// [`unshield`] turns them back in every string afterwards. This only turns would-be syntax errors into the
/// obvious reading: wherever `${…}` was already valid (block values, quoted strings, comments) the parsed
/// text is the same. Interpolation itself still happens after parsing. `None` = nothing to do, or the text
/// already holds a stand-in character (then it is parsed unchanged).
pub(super) fn shield(yaml: &str) -> Option<String> {
    if !yaml.contains("${") || yaml.contains([SHIELD_OPEN, SHIELD_CLOSE]) {
        return None;
    }
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        // Only a well-formed reference on one line is shielded; anything else is left for the YAML parser
        // (and then the interpolation) to judge as written.
        match after.find('}').filter(|&end| is_reference(&after[..end])) {
            Some(end) => {
                out.push_str(&rest[..=i]);
                out.push(SHIELD_OPEN);
                out.push_str(&after[..end]);
                out.push(SHIELD_CLOSE);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[..i + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// `[A-Za-z_][A-Za-z0-9_]*`, as in the shell.
fn is_var_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `NAME` or `NAME:-default`, with a default free of quotes and line breaks.
fn is_reference(inner: &str) -> bool {
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, d),
        None => (inner, ""),
    };
    is_var_name(name) && !default.contains(['\'', '"', '\n', '\r'])
}

pub(super) fn unshield(v: &mut Value) {
    match v {
        Value::String(s) if s.contains([SHIELD_OPEN, SHIELD_CLOSE]) => {
            *s = s.replace(SHIELD_OPEN, "{").replace(SHIELD_CLOSE, "}");
        }
        Value::Sequence(items) => items.iter_mut().for_each(unshield),
        Value::Mapping(map) => {
            for (mut k, mut val) in std::mem::take(map) {
                unshield(&mut k);
                unshield(&mut val);
                map.insert(k, val);
            }
        }
        Value::Tagged(t) => unshield(&mut t.value),
        _ => {}
    }
}

/// Replaces `${VAR}` / `${VAR:-default}` and unescapes `$${`. Returns every problem in the string.
pub(super) fn interpolate(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut errors = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                errors.push("unclosed `${` (write `$${` for a literal `${`)".to_string());
                return Err(errors);
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                errors.push(format!(
                    "`${{{inner}}}` is not `${{VAR}}` or `${{VAR:-default}}` (write `$${{` for a literal `${{`)"
                ));
            } else {
                match (env(name), default) {
                    (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => errors.push(format!("environment variable {name} is not set")),
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
