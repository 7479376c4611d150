//! Human-readable output: tables, field lists, JSON pretty-printing and small formatting helpers.

use serde_json::Value;

/// Pretty-prints a JSON text with two-space indentation, keeping its key order and values
/// exactly as sent. `None` when `raw` is not JSON.
pub fn pretty_json(raw: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(raw).ok()?;
    let mut out = String::with_capacity(raw.len() * 2);
    let chars: Vec<char> = raw.chars().collect();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                let mut j = i;
                while j < chars.len() && matches!(chars[j], ' ' | '\t' | '\n' | '\r') {
                    j += 1;
                }
                out.push(c);
                if chars.get(j) == Some(&close) {
                    out.push(close);
                    i = j + 1;
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            ' ' | '\t' | '\n' | '\r' => {}
            c => out.push(c),
        }
    }
    Some(out)
}

/// `3600` → `1h`, `5400` → `1h30m`, `0` → `0s`.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, len) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    out
}

/// How to show a successful reply in human mode.
pub(super) enum Render {
    UserCreated,
    UserList,
    UserShow,
    UserRemoved(String),
    KeyCreated(String),
    KeyList,
    KeyShow,
    KeyRevoked(String),
    KeyRotated(String, u64),
    KeyToggled(String, bool),
    HostSet(String),
    HostList,
    HostRemoved(String),
    Usage,
    ImageDeleted(Option<String>),
}

/// A field as display text: strings as-is, numbers and booleans printed, null/missing as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(text).collect();
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(",")
            }
        }
        other => other.to_string(),
    }
}

fn limits_text(v: &Value) -> String {
    match v.as_object() {
        Some(m) => {
            let parts: Vec<String> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect();
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(", ")
            }
        }
        None => text(v),
    }
}

fn models_text(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => text(v),
        _ => "all".into(),
    }
}

fn expires_text(v: &Value) -> String {
    match v.as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "never".into(),
    }
}

fn key_status(k: &Value, now: i64) -> &'static str {
    if k["disabled"].as_bool() == Some(true) {
        return "disabled";
    }
    if let Some(exp) = k["expires_at"]
        .as_str()
        .and_then(crate::time::parse_rfc3339)
    {
        if exp <= now {
            return "expired";
        }
    }
    "active"
}

fn count(v: &Value) -> String {
    match v {
        Value::Array(a) => a.len().to_string(),
        Value::Null => "0".into(),
        other => text(other),
    }
}

/// The secret of a KEYCREATED object (or a bare string).
fn secret(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => text(&v["key"]),
    }
}

fn data(v: &Value) -> &[Value] {
    match &v["data"] {
        Value::Array(a) => a,
        _ => match v {
            Value::Array(a) => a,
            _ => &[],
        },
    }
}

/// Aligned columns separated by two spaces; `right` marks right-aligned (numeric) columns.
fn table(headers: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let n = cells.len();
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&pad);
                s.push_str(cell);
            } else {
                s.push_str(cell);
                if i + 1 < n {
                    s.push_str(&pad);
                }
            }
            if i + 1 < n {
                s.push_str("  ");
            }
        }
        s.push('\n');
        s
    };
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = line(&header);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(&format!(
            "{:<width$}  {v}\n",
            format!("{k}:"),
            width = w + 1
        ));
    }
    out
}

const STORE_NOTE: &str = "(store it now: it is not shown again)";

pub(super) fn render(r: &Render, v: &Value, now: i64) -> String {
    match r {
        Render::UserCreated => {
            let user = &v["user"];
            let name = text(&user["name"]);
            let key = &v["key"];
            let mut s = format!("user {name} created\n");
            if !key["id"].is_null() {
                s.push_str(&format!("key id: {}\n", text(&key["id"])));
            }
            s.push_str(&format!("key: {}\n{STORE_NOTE}\n", secret(key)));
            s
        }
        Render::UserList => {
            let rows: Vec<Vec<String>> = data(v)
                .iter()
                .map(|u| {
                    vec![
                        text(&u["name"]),
                        text(&u["email"]),
                        count(&u["keys"]),
                        text(&u["created_at"]),
                    ]
                })
                .collect();
            table(
                &["NAME", "EMAIL", "KEYS", "CREATED"],
                &[false, false, true, false],
                &rows,
            )
        }
        Render::UserShow => fields(&[
            ("name", text(&v["name"])),
            ("email", text(&v["email"])),
            ("created", text(&v["created_at"])),
            ("limits", limits_text(&v["limits"])),
            ("keys", text(&v["keys"])),
        ]),
        Render::UserRemoved(name) => format!("user {name} removed\n"),
        Render::KeyCreated(user) => format!(
            "key {} created for user {}\nkey: {}\n{STORE_NOTE}\n",
            text(&v["id"]),
            match &v["user"] {
                Value::String(u) => u.clone(),
                _ => user.clone(),
            },
            secret(v)
        ),
        Render::KeyList => {
            let rows: Vec<Vec<String>> = data(v)
                .iter()
                .map(|k| {
                    vec![
                        text(&k["id"]),
                        text(&k["user"]),
                        text(&k["label"]),
                        key_status(k, now).to_string(),
                        expires_text(&k["expires_at"]),
                        models_text(&k["models"]),
                    ]
                })
                .collect();
            table(
                &["ID", "USER", "LABEL", "STATUS", "EXPIRES", "MODELS"],
                &[],
                &rows,
            )
        }
        Render::KeyShow => {
            let mut rows = vec![
                ("id", text(&v["id"])),
                ("user", text(&v["user"])),
                ("label", text(&v["label"])),
                ("status", key_status(v, now).to_string()),
                ("created", text(&v["created_at"])),
                ("expires", expires_text(&v["expires_at"])),
                ("models", models_text(&v["models"])),
                ("limits", limits_text(&v["limits"])),
                ("source", text(&v["source"])),
            ];
            if let Some(until) = v["previous_key_valid_until"].as_str() {
                rows.push(("old secret valid until", until.to_string()));
            }
            fields(&rows)
        }
        Render::KeyRevoked(id) => format!("key {id} revoked\n"),
        Render::KeyRotated(id, grace) => {
            let mut s = format!("key {id} rotated\nkey: {}\n{STORE_NOTE}\n", secret(v));
            if *grace > 0 {
                s.push_str(&format!(
                    "the old secret keeps working for {}\n",
                    format_duration(*grace)
                ));
            } else {
                s.push_str("the old secret no longer works\n");
            }
            s
        }
        Render::KeyToggled(id, disabled) => {
            format!(
                "key {id} {}\n",
                if *disabled { "disabled" } else { "enabled" }
            )
        }
        Render::HostSet(host) => {
            let origin = match v["origin"].as_str() {
                Some(o) if !o.is_empty() => o.to_string(),
                _ => format!("https://{host}"),
            };
            let n = v["keys"].as_array().map(Vec::len);
            match n {
                Some(n) => format!(
                    "host {host} set (origin {origin}, {n} key{})\n",
                    if n == 1 { "" } else { "s" }
                ),
                None => format!("host {host} set (origin {origin})\n"),
            }
        }
        Render::HostList => {
            let rows: Vec<Vec<String>> = data(v)
                .iter()
                .map(|h| {
                    let host = text(&h["host"]);
                    let origin = match h["origin"].as_str() {
                        Some(o) if !o.is_empty() => o.to_string(),
                        _ => format!("https://{host}"),
                    };
                    vec![host, origin, text(&h["keys"]), text(&h["source"])]
                })
                .collect();
            table(&["HOST", "ORIGIN", "KEYS", "SOURCE"], &[], &rows)
        }
        Render::HostRemoved(host) => format!("host {host} removed\n"),
        Render::Usage => {
            const NUMS: [&str; 5] = [
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "images",
                "errors",
            ];
            let entries = data(v);
            let mut totals = [0u64; 5];
            let mut rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    let mut row = vec![text(&e["period"]), text(&e["user"]), text(&e["key_id"])];
                    for (t, f) in totals.iter_mut().zip(NUMS) {
                        *t = t.saturating_add(e[f].as_u64().unwrap_or(0));
                        row.push(match &e[f] {
                            Value::Null => "0".into(),
                            n => text(n),
                        });
                    }
                    row
                })
                .collect();
            if entries.len() > 1 {
                let mut row = vec!["total".to_string(), String::new(), String::new()];
                row.extend(totals.iter().map(u64::to_string));
                rows.push(row);
            }
            table(
                &[
                    "PERIOD",
                    "USER",
                    "KEY",
                    "REQUESTS",
                    "PROMPT",
                    "COMPLETION",
                    "IMAGES",
                    "ERRORS",
                ],
                &[false, false, false, true, true, true, true, true],
                &rows,
            )
        }
        Render::ImageDeleted(hash) => {
            let hash = match (hash, v["deleted"].as_str()) {
                (Some(h), _) => h.clone(),
                (None, Some(h)) => h.to_string(),
                (None, None) => "-".to_string(),
            };
            format!("image {hash} deleted\n")
        }
    }
}
