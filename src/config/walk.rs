//! The walker: YAML paths, the walking state that collects every problem, and the typed readers every
//! section is built from (strings with interpolation, integers, lists, secret keys, files, addresses).
//! Unknown keys are reported with a "did you mean" hint.

use std::net::SocketAddr;
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::interpolate::interpolate;
use super::{parse_backend_url, ConfigError};

fn join(path: &str, key: &str) -> String {
    let needs_quotes = key.is_empty()
        || key
            .chars()
            .any(|c| matches!(c, '.' | '[' | ']' | '"') || c.is_whitespace());
    let key = if needs_quotes {
        format!("\"{key}\"")
    } else {
        key.to_string()
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// How a value looks, for "expected X, found Y".
pub(super) fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(_) => "a boolean".to_string(),
        Value::Number(n) if n.is_f64() => "a number with a fraction".to_string(),
        Value::Number(_) => "a number (quote it to make it a string)".to_string(),
        Value::String(_) => "a string".to_string(),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Walking state: the environment and everything found wrong so far.
pub(super) struct Cx<'e> {
    pub(super) env: &'e dyn Fn(&str) -> Option<String>,
    pub(super) errors: Vec<ConfigError>,
    /// Every listening address with its path, for the collision check at the end.
    pub(super) binds: Vec<(String, SocketAddr)>,
}

/// A mapping being read: remembers which keys the schema knows, so leftovers are reported as unknown.
pub(super) struct Obj<'v> {
    pub(super) map: &'v Mapping,
    pub(super) path: String,
    pub(super) known: Vec<&'static str>,
}

impl<'v> Obj<'v> {
    pub(super) fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`; absent and `null` are both `None`.
    pub(super) fn take(&mut self, key: &'static str) -> Option<(&'v Value, String)> {
        self.known.push(key);
        self.map
            .get(key)
            .filter(|v| !v.is_null())
            .map(|v| (v, join(&self.path, key)))
    }

    pub(super) fn require(
        &mut self,
        cx: &mut Cx,
        key: &'static str,
    ) -> Option<(&'v Value, String)> {
        let found = self.take(key);
        if found.is_none() {
            cx.err(&self.at(key), "required field is missing");
        }
        found
    }

    pub(super) fn string(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        let (v, p) = self.take(key)?;
        cx.string(v, &p)
    }

    pub(super) fn req_string(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        let (v, p) = self.require(cx, key)?;
        cx.string(v, &p)
    }

    pub(super) fn string_or(&mut self, cx: &mut Cx, key: &'static str, default: &str) -> String {
        self.string(cx, key).unwrap_or_else(|| default.to_string())
    }

    /// A string that must not be empty once interpolated.
    pub(super) fn nonempty_or(&mut self, cx: &mut Cx, key: &'static str, default: &str) -> String {
        let s = self.string_or(cx, key, default);
        if s.is_empty() {
            cx.err(&self.at(key), "must not be empty");
        }
        s
    }

    pub(super) fn u64(&mut self, cx: &mut Cx, key: &'static str) -> Option<u64> {
        let (v, p) = self.take(key)?;
        cx.u64(v, &p)
    }

    pub(super) fn u64_or(&mut self, cx: &mut Cx, key: &'static str, default: u64) -> u64 {
        self.u64(cx, key).unwrap_or(default)
    }

    /// A count or duration for which 0 makes no sense.
    pub(super) fn positive_or(&mut self, cx: &mut Cx, key: &'static str, default: u64) -> u64 {
        let n = self.u64_or(cx, key, default);
        if n == 0 {
            cx.err(&self.at(key), "must be greater than 0");
        }
        n
    }

    pub(super) fn bool_or(&mut self, cx: &mut Cx, key: &'static str, default: bool) -> bool {
        match self.take(key) {
            Some((Value::Bool(b), _)) => *b,
            Some((v, p)) => {
                cx.err(&p, format!("expected true or false, found {}", kind(v)));
                default
            }
            None => default,
        }
    }

    pub(super) fn string_list(&mut self, cx: &mut Cx, key: &'static str) -> Option<Vec<String>> {
        let (v, p) = self.take(key)?;
        cx.string_list(v, &p)
    }

    /// A file path that must exist when given.
    pub(super) fn file(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        let f = self.string(cx, key)?;
        cx.check_file(&self.at(key), &f);
        Some(f)
    }

    /// A required file path that must exist.
    pub(super) fn req_file(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        let (v, p) = self.require(cx, key)?;
        let f = cx.string(v, &p)?;
        cx.check_file(&p, &f);
        Some(f)
    }

    /// Reports the keys nobody asked for, with a suggestion when one is close to a known key.
    pub(super) fn finish(self, cx: &mut Cx) {
        for k in self.map.keys() {
            match k.as_str() {
                Some(name) if self.known.contains(&name) => {}
                Some(name) => {
                    // A near miss (`bakends`) or a truncation (`grace` for `grace_period_seconds`).
                    let close = |known: &&&str| {
                        edit_distance(known, name) <= 2
                            || (name.len() >= 4 && known.starts_with(name))
                    };
                    let hint = self
                        .known
                        .iter()
                        .filter(close)
                        .min_by_key(|known| edit_distance(known, name))
                        .map(|known| format!(" (did you mean `{known}`?)"))
                        .unwrap_or_default();
                    cx.err(&join(&self.path, name), format!("unknown key{hint}"));
                }
                None => cx.err(&self.path_or_root(), format!("unknown key {}", kind(k))),
            }
        }
    }

    fn path_or_root(&self) -> String {
        if self.path.is_empty() {
            "(root)".to_string()
        } else {
            self.path.clone()
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl<'e> Cx<'e> {
    pub(super) fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn object<'v>(&mut self, v: &'v Value, path: &str) -> Option<Obj<'v>> {
        match v {
            Value::Mapping(map) => Some(Obj {
                map,
                path: path.to_string(),
                known: Vec::new(),
            }),
            other => {
                self.err(path, format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }

    /// A mapping whose keys are names chosen by the user (upstreams, hosts, providers).
    pub(super) fn named<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
    ) -> Vec<(&'v str, &'v Value, String)> {
        let Value::Mapping(map) = v else {
            self.err(path, format!("expected a mapping, found {}", kind(v)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, val) in map {
            match k.as_str() {
                Some(name) => out.push((name, val, join(path, name))),
                None => self.err(path, format!("names must be strings, found {}", kind(k))),
            }
        }
        out
    }

    pub(super) fn list<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v [Value]> {
        match v {
            Value::Sequence(items) => Some(items),
            other => {
                self.err(path, format!("expected a list, found {}", kind(other)));
                None
            }
        }
    }

    pub(super) fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => match interpolate(s, self.env) {
                Ok(s) => Some(s),
                Err(messages) => {
                    for m in messages {
                        self.err(path, m);
                    }
                    None
                }
            },
            other => {
                self.err(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub(super) fn u64(&mut self, v: &Value, path: &str) -> Option<u64> {
        let message = match v {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => return Some(u),
                (None, Some(_)) => "must not be negative".to_string(),
                (None, None) => format!("expected an integer, found {n}"),
            },
            other => format!("expected an integer, found {}", kind(other)),
        };
        self.err(path, message);
        None
    }

    pub(super) fn string_list(&mut self, v: &Value, path: &str) -> Option<Vec<String>> {
        let items = self.list(v, path)?;
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(item, &index(path, i)))
                .collect(),
        )
    }

    /// Secret keys: an item that interpolates to `""` is dropped (`[${KEY:-}]` = no key); a literal `""` or
    /// a key with whitespace (which would break the `Authorization` header) is an error. Values never
    /// appear in messages.
    pub(super) fn key_list(&mut self, v: &Value, path: &str) -> Vec<String> {
        let Some(items) = self.list(v, path) else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            let Some(key) = self.string(item, &p) else {
                continue;
            };
            let interpolated = item.as_str().is_some_and(|raw| raw.contains('$'));
            if key.is_empty() {
                if !interpolated {
                    self.err(&p, "a key must not be empty");
                }
            } else if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.err(
                    &p,
                    "a key must not contain whitespace or control characters",
                );
            } else {
                keys.push(key);
            }
        }
        keys
    }

    pub(super) fn check_file(&mut self, path: &str, file: &str) {
        if file.is_empty() {
            self.err(path, "must not be empty");
        } else if !Path::new(file).is_file() {
            self.err(path, format!("file not found: {file}"));
        }
    }

    /// A listening address: literal `IP:PORT`, remembered for the collision check.
    pub(super) fn bind_addr(&mut self, path: &str, addr: &str) {
        match addr.parse::<SocketAddr>() {
            Ok(sa) => self.binds.push((path.to_string(), sa)),
            Err(_) => self.err(
                path,
                format!("`{addr}` is not IP:PORT, like 0.0.0.0:8080 or [::]:8080"),
            ),
        }
    }

    pub(super) fn url(&mut self, path: &str, url: &str) {
        if let Err(e) = parse_backend_url(url) {
            self.err(path, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("backends", "bakends"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("listen", "listen"), 0);
    }
}
