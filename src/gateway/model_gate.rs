//! The `models` allow-list of a key, checked against the `model` field of a JSON or
//! multipart body. The body is held back (bounded by `max_body_bytes`) until it is complete
//! and checked, so a refused request never reaches the upstream complete.

use serde_json::Value;

pub enum BodyKind {
    Json,
    Multipart { boundary: String },
}

impl BodyKind {
    /// The kind of body worth checking, from its `Content-Type`; `None` for others.
    pub fn from_content_type(content_type: &str) -> Option<BodyKind> {
        let lower = content_type.to_ascii_lowercase();
        let essence = lower.split(';').next().unwrap_or("").trim();
        if essence == "application/json" || essence.ends_with("+json") {
            return Some(BodyKind::Json);
        }
        if essence == "multipart/form-data" {
            let boundary = content_type.split(';').find_map(|param| {
                let (name, value) = param.trim().split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("boundary")
                    .then(|| value.trim().trim_matches('"').to_string())
            })?;
            return Some(BodyKind::Multipart { boundary });
        }
        None
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    ModelNotAllowed(String),
    Malformed(&'static str),
}

pub struct ModelGate {
    allowed: Vec<String>,
    kind: BodyKind,
    held: Vec<u8>,
}

impl ModelGate {
    pub fn new(allowed: Vec<String>, kind: BodyKind) -> Self {
        ModelGate {
            allowed,
            kind,
            held: Vec::new(),
        }
    }

    pub fn hold(&mut self, chunk: &[u8]) {
        self.held.extend_from_slice(chunk);
    }

    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    pub fn verdict(&self) -> Verdict {
        let model = match &self.kind {
            BodyKind::Json => {
                if self.held.is_empty() {
                    return Verdict::Allowed;
                }
                match serde_json::from_slice::<Value>(&self.held) {
                    Ok(Value::Object(map)) => match map.get("model") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(m)) => Some(m.clone()),
                        Some(_) => return Verdict::Malformed("`model` must be a string"),
                    },
                    Ok(_) => None,
                    Err(_) => return Verdict::Malformed("the request body is not valid JSON"),
                }
            }
            BodyKind::Multipart { boundary } => multipart_field(&self.held, boundary, "model"),
        };
        match model {
            Some(m) if !self.allowed.contains(&m) => Verdict::ModelNotAllowed(m),
            _ => Verdict::Allowed,
        }
    }
}

/// The value of a text field of a multipart/form-data body.
pub fn multipart_field(body: &[u8], boundary: &str, field: &str) -> Option<String> {
    let delimiter = format!("--{boundary}");
    let wanted = format!("name=\"{field}\"");
    let mut rest = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        let headers_end = find(rest, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&rest[..headers_end]).to_ascii_lowercase();
        let content = &rest[headers_end + 4..];
        let content_end = find(content, delimiter.as_bytes()).unwrap_or(content.len());
        let is_field = headers.lines().any(|l| {
            l.starts_with("content-disposition") && l.contains(&wanted) && !l.contains("filename=")
        });
        if is_field {
            let value = &content[..content_end];
            let value = value.strip_suffix(b"\r\n").unwrap_or(value);
            return Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(kind: BodyKind, body: &[u8]) -> Verdict {
        let mut g = ModelGate::new(vec!["gpt-4o-mini".into()], kind);
        for chunk in body.chunks(7) {
            g.hold(chunk);
        }
        g.verdict()
    }

    #[test]
    fn json_bodies() {
        assert_eq!(
            gate(BodyKind::Json, br#"{"model":"gpt-4o-mini"}"#),
            Verdict::Allowed
        );
        assert_eq!(
            gate(BodyKind::Json, br#"{"model":"gpt-4o"}"#),
            Verdict::ModelNotAllowed("gpt-4o".into())
        );
        assert_eq!(gate(BodyKind::Json, br#"{"input":"x"}"#), Verdict::Allowed);
        assert!(matches!(
            gate(BodyKind::Json, b"{nope"),
            Verdict::Malformed(_)
        ));
        assert!(matches!(
            gate(BodyKind::Json, br#"{"model":5}"#),
            Verdict::Malformed(_)
        ));
    }

    #[test]
    fn multipart_bodies() {
        let ct = "multipart/form-data; boundary=XyZ";
        let BodyKind::Multipart { boundary } = BodyKind::from_content_type(ct).unwrap() else {
            panic!("not multipart")
        };
        assert_eq!(boundary, "XyZ");
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"model\"\r\n\r\n\x00\x01name=\"model\"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
        assert_eq!(
            multipart_field(body, "XyZ", "model").as_deref(),
            Some("whisper-1")
        );
        let kind = BodyKind::Multipart {
            boundary: "XyZ".into(),
        };
        assert_eq!(
            gate(kind, body),
            Verdict::ModelNotAllowed("whisper-1".into())
        );
    }

    #[test]
    fn content_types() {
        assert!(matches!(
            BodyKind::from_content_type("application/json; charset=utf-8"),
            Some(BodyKind::Json)
        ));
        assert!(BodyKind::from_content_type("audio/mpeg").is_none());
        assert!(BodyKind::from_content_type("multipart/form-data").is_none());
    }
}
