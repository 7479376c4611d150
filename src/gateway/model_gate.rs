//! The `models` allow-list of a key, checked against the `model` field of a JSON or
//! multipart body. The gateway holds the body back (bounded by `max_body_bytes`) until it is
//! complete and checked, so a refused request never reaches the upstream complete.

use serde_json::Value;

pub enum BodyKind {
    Json,
    Multipart { boundary: String },
}

impl BodyKind {
    /// The kind of body worth checking, from its `Content-Type`; `None` for others.
    pub fn from_content_type(content_type: &str) -> Option<BodyKind> {
        // Compared without regard to case, and without a lower-cased copy per request.
        let essence = content_type.split(';').next().unwrap_or("").trim();
        let ends_with_json = essence.len() >= 5
            && essence.as_bytes()[essence.len() - 5..].eq_ignore_ascii_case(b"+json");
        if essence.eq_ignore_ascii_case("application/json") || ends_with_json {
            return Some(BodyKind::Json);
        }
        if essence.eq_ignore_ascii_case("multipart/form-data") {
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
}

/// The `model` of a JSON body: `Ok(None)` when there is none, `Err` when the body is not
/// JSON or `model` is not a string.
pub fn json_model(body: &[u8]) -> Result<Option<String>, &'static str> {
    if body.is_empty() {
        return Ok(None);
    }
    // Every metered request passes here: read `model` alone and skip the rest unbuilt. Bodies
    // that are not an object with at most one `model` take the slow path below (serde would
    // also read a struct from an array, hence the look at the first byte).
    if body.trim_ascii_start().first() != Some(&b'{') {
        return json_model_slow(body);
    }
    #[derive(serde::Deserialize)]
    struct ModelOnly {
        model: Option<Value>,
    }
    match serde_json::from_slice::<ModelOnly>(body) {
        Ok(ModelOnly { model: None }) => Ok(None),
        Ok(ModelOnly {
            model: Some(Value::String(m)),
        }) => Ok(Some(m)),
        Ok(ModelOnly { model: Some(_) }) => Err("`model` must be a string"),
        Err(_) => json_model_slow(body),
    }
}

fn json_model_slow(body: &[u8]) -> Result<Option<String>, &'static str> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("model") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(m)) => Ok(Some(m.clone())),
            Some(_) => Err("`model` must be a string"),
        },
        Ok(_) => Ok(None),
        Err(_) => Err("the request body is not valid JSON"),
    }
}

impl ModelGate {
    pub fn new(allowed: Vec<String>, kind: BodyKind) -> Self {
        ModelGate { allowed, kind }
    }

    pub fn verdict(&self, body: &[u8]) -> Verdict {
        let model = match &self.kind {
            BodyKind::Json => match json_model(body) {
                Ok(model) => model,
                Err(why) => return Verdict::Malformed(why),
            },
            BodyKind::Multipart { boundary } => multipart_field(body, boundary, "model"),
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
        ModelGate::new(vec!["gpt-4o-mini".into()], kind).verdict(body)
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
    fn model_of_json_bodies() {
        let model = |body: &[u8]| json_model(body);
        assert_eq!(
            model(br#"{"messages":[{"model":"inner"}],"model":"m"}"#),
            Ok(Some("m".into()))
        );
        assert_eq!(model(br#"{"model":null}"#), Ok(None));
        assert_eq!(model(b""), Ok(None));
        // Not an object: no model, as before.
        assert_eq!(model(br#"["model"]"#), Ok(None));
        // A repeated member: the last one counts, as in a full parse.
        assert_eq!(model(br#"{"model":"a","model":"b"}"#), Ok(Some("b".into())));
        assert!(model(br#"{"model":["x"]}"#).is_err());
        assert!(model(br#"{"model":"a""#).is_err());
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
        // Media types are case-insensitive (RFC 9110 §8.3.1); the boundary keeps its case.
        for json in [
            "Application/JSON",
            "application/vnd.api+JSON ; x=1",
            " +json",
        ] {
            assert!(
                matches!(BodyKind::from_content_type(json), Some(BodyKind::Json)),
                "{json}"
            );
        }
        for other in ["json", "", "é+jso", "text/plain"] {
            assert!(BodyKind::from_content_type(other).is_none(), "{other}");
        }
        let Some(BodyKind::Multipart { boundary }) =
            BodyKind::from_content_type("Multipart/Form-Data; Boundary=AbC")
        else {
            panic!("not multipart")
        };
        assert_eq!(boundary, "AbC");
    }
}
