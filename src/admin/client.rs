//! Blocking HTTP client for the admin API (SPEC section 5), used by `tollgate admin`.
//!
//! [`execute`] runs one [`AdminResource`] command and renders the reply as a table (default) or
//! as the server's JSON (`--json`). Exit statuses: 0 success, 1 error reply or unreachable
//! server, 2 usage error.

use std::fmt;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::cli::{
    AdminResource, Expiry, HostsVerb, ImagesVerb, KeysVerb, UsersVerb, EXIT_ERROR, EXIT_OK,
    EXIT_USAGE,
};

/// Timeout for a whole admin request (connect, send, receive).
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest reply body read.
const MAX_REPLY_BYTES: u64 = 256 * 1024 * 1024;

/// HTTP method of an admin request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A successful (2xx) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Raw body text; empty for 204.
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Why an admin request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// No connection, or no reply in time.
    Unreachable { url: String, detail: String },
    /// The server answered with a non-2xx status.
    Api {
        status: u16,
        message: String,
        code: Option<String>,
    },
    /// The reply could not be read or understood.
    BadReply { url: String, detail: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { url, detail } => {
                write!(f, "cannot reach admin API at {url}: {detail}")
            }
            ClientError::Api {
                message,
                code: Some(code),
                ..
            } => write!(f, "{message} ({code})"),
            ClientError::Api {
                status, message, ..
            } => {
                if message.starts_with(&format!("HTTP {status}")) {
                    write!(f, "{message}")
                } else {
                    write!(f, "{message} (HTTP {status})")
                }
            }
            ClientError::BadReply { url, detail } => {
                write!(f, "bad reply from admin API at {url}: {detail}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// Admin API client: base URL, bearer token, and a ureq agent with a 30 s timeout.
pub struct AdminClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

// Hand-written so that the token never reaches a log.
impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl AdminClient {
    /// `base_url` is like `http://127.0.0.1:8081` (a trailing `/` is ignored).
    /// Fails when the URL is not http(s) or the token cannot be sent in a header.
    pub fn new(base_url: &str, token: &str) -> Result<Self, String> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let lower = base.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') => {}
            _ => {
                return Err(format!(
                    "invalid admin URL `{base}` (expected http://HOST:PORT)"
                ))
            }
        }
        if token.is_empty() || !token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(
                "the admin token must be non-empty printable ASCII without spaces".to_string(),
            );
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            // Never hand the token to a proxy or to another host.
            .proxy(None)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("tollgate-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(AdminClient {
            base,
            token: token.to_string(),
            agent,
        })
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends `method base+path` with the bearer token and an optional JSON body.
    /// `path` must already be percent-encoded (see [`encode_segment`]).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let url = format!("{}{}", self.base, path);
        let auth = format!("Bearer {}", self.token);
        let result = match method {
            Method::Get => self
                .agent
                .get(&url)
                .header("Authorization", &auth)
                .header("Accept", "application/json")
                .call(),
            Method::Delete => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .header("Accept", "application/json")
                .call(),
            Method::Post | Method::Put | Method::Patch => {
                let builder = match method {
                    Method::Post => self.agent.post(&url),
                    Method::Put => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                }
                .header("Authorization", &auth)
                .header("Accept", "application/json");
                match body {
                    Some(b) => {
                        let bytes = serde_json::to_vec(b).map_err(|e| ClientError::BadReply {
                            url: self.base.clone(),
                            detail: format!("cannot encode request: {e}"),
                        })?;
                        builder
                            .header("Content-Type", "application/json")
                            .send(&bytes[..])
                    }
                    None => builder.send_empty(),
                }
            }
        };
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::Io(_) | ureq::Error::Timeout(_) => self.transport_error(e),
                e => ClientError::BadReply {
                    url: self.base.clone(),
                    detail: e.to_string(),
                },
            })?;
        if (200..300).contains(&status) {
            Ok(Reply { status, body: text })
        } else {
            Err(api_error(status, &text))
        }
    }

    fn transport_error(&self, e: ureq::Error) -> ClientError {
        let detail = match &e {
            ureq::Error::Timeout(_) => format!("no reply within {} s", TIMEOUT.as_secs()),
            ureq::Error::TlsRequired => {
                "this build's admin client speaks plain http only; use an http:// URL".to_string()
            }
            _ => e.to_string(),
        };
        match e {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::TlsRequired => ClientError::Unreachable {
                url: self.base.clone(),
                detail,
            },
            _ => ClientError::BadReply {
                url: self.base.clone(),
                detail,
            },
        }
    }
}

/// Turns a non-2xx reply into [`ClientError::Api`], reading `{"error":{"message","code"}}`.
fn api_error(status: u16, body: &str) -> ClientError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let err = &v["error"];
    let message = match &err["message"] {
        Value::String(m) if !m.is_empty() => m.clone(),
        _ => match &err {
            Value::String(m) if !m.is_empty() => m.clone(),
            _ => {
                let snippet: String = body.trim().chars().take(200).collect();
                if snippet.is_empty() || v.is_object() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {snippet}")
                }
            }
        },
    };
    let code = match &err["code"] {
        Value::String(c) if !c.is_empty() => Some(c.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => match &err["type"] {
            Value::String(t) if !t.is_empty() => Some(t.clone()),
            _ => None,
        },
    };
    ClientError::Api {
        status,
        message,
        code,
    }
}

/// Percent-encodes a path segment or query value: everything but `A-Z a-z 0-9 - . _ ~`.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` from the pairs whose value is present (empty string when none are).
pub fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|v| format!("{}={}", encode_segment(k), encode_segment(v)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

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

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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

/// What to send for one command.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    render: Render,
}

/// How to show a successful reply in human mode.
enum Render {
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

fn segment(what: &str, value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err(format!("empty {what}"))
    } else {
        Ok(encode_segment(value))
    }
}

fn build_call(resource: &AdminResource, now: i64) -> Result<Call, String> {
    let call = |method, path: String, body, render| Call {
        method,
        path,
        body,
        render,
    };
    Ok(match resource {
        AdminResource::Users { verb } => match verb {
            UsersVerb::Add {
                name,
                email,
                limits,
            } => {
                segment("user name", name)?;
                let mut body = Map::new();
                body.insert("name".into(), json!(name));
                if let Some(e) = email {
                    body.insert("email".into(), json!(e));
                }
                if let Some(l) = limits.to_json() {
                    body.insert("limits".into(), l);
                }
                call(
                    Method::Post,
                    "/admin/users".into(),
                    Some(Value::Object(body)),
                    Render::UserCreated,
                )
            }
            UsersVerb::List => call(Method::Get, "/admin/users".into(), None, Render::UserList),
            UsersVerb::Show { name } => call(
                Method::Get,
                format!("/admin/users/{}", segment("user name", name)?),
                None,
                Render::UserShow,
            ),
            UsersVerb::Rm { name } => call(
                Method::Delete,
                format!("/admin/users/{}", segment("user name", name)?),
                None,
                Render::UserRemoved(name.clone()),
            ),
        },
        AdminResource::Keys { verb } => match verb {
            KeysVerb::Create(k) => {
                let mut body = Map::new();
                if let Some(l) = &k.label {
                    body.insert("label".into(), json!(l));
                }
                match &k.expires {
                    Some(Expiry::In(s)) => {
                        body.insert("expires_in_s".into(), json!(s));
                    }
                    Some(Expiry::At(t)) => {
                        body.insert("expires_at".into(), json!(t));
                    }
                    None => {}
                }
                if let Some(models) = &k.models {
                    let models: Vec<&str> = models
                        .iter()
                        .map(|m| m.trim())
                        .filter(|m| !m.is_empty())
                        .collect();
                    if models.is_empty() {
                        return Err("--models needs at least one model name".into());
                    }
                    body.insert("models".into(), json!(models));
                }
                if let Some(l) = k.limits.to_json() {
                    body.insert("limits".into(), l);
                }
                call(
                    Method::Post,
                    format!("/admin/users/{}/keys", segment("user name", &k.user)?),
                    Some(Value::Object(body)),
                    Render::KeyCreated(k.user.clone()),
                )
            }
            KeysVerb::List { user } => call(
                Method::Get,
                format!("/admin/keys{}", query_string(&[("user", user.clone())])),
                None,
                Render::KeyList,
            ),
            KeysVerb::Show { id } => call(
                Method::Get,
                format!("/admin/keys/{}", segment("key id", id)?),
                None,
                Render::KeyShow,
            ),
            KeysVerb::Revoke { id } => call(
                Method::Delete,
                format!("/admin/keys/{}", segment("key id", id)?),
                None,
                Render::KeyRevoked(id.clone()),
            ),
            KeysVerb::Rotate { id, grace } => {
                let grace = grace.unwrap_or(0);
                call(
                    Method::Post,
                    format!("/admin/keys/{}/rotate", segment("key id", id)?),
                    Some(json!({ "grace_s": grace })),
                    Render::KeyRotated(id.clone(), grace),
                )
            }
            KeysVerb::Disable { id } | KeysVerb::Enable { id } => {
                let disabled = matches!(verb, KeysVerb::Disable { .. });
                call(
                    Method::Patch,
                    format!("/admin/keys/{}", segment("key id", id)?),
                    Some(json!({ "disabled": disabled })),
                    Render::KeyToggled(id.clone(), disabled),
                )
            }
        },
        AdminResource::Hosts { verb } => match verb {
            HostsVerb::Set { host, keys, origin } => {
                let mut body = Map::new();
                body.insert("keys".into(), json!(keys));
                if let Some(o) = origin {
                    body.insert("origin".into(), json!(o));
                }
                call(
                    Method::Put,
                    format!("/admin/hosts/{}", segment("host", host)?),
                    Some(Value::Object(body)),
                    Render::HostSet(host.clone()),
                )
            }
            HostsVerb::List => call(Method::Get, "/admin/hosts".into(), None, Render::HostList),
            HostsVerb::Rm { host } => call(
                Method::Delete,
                format!("/admin/hosts/{}", segment("host", host)?),
                None,
                Render::HostRemoved(host.clone()),
            ),
        },
        AdminResource::Usage(u) => {
            let from = u.since.map(|s| {
                let s = i64::try_from(s).unwrap_or(i64::MAX);
                // Clamp to the epoch: the server's formats start there.
                crate::time::rfc3339(now.saturating_sub(s).max(0))
            });
            let q = query_string(&[
                ("user", u.user.clone()),
                ("key", u.key.clone()),
                ("from", from),
                ("by", u.by.map(|b| b.as_str().to_string())),
            ]);
            call(Method::Get, format!("/admin/usage{q}"), None, Render::Usage)
        }
        AdminResource::Images {
            verb: ImagesVerb::Purge(p),
        } => match (&p.hash, &p.prompt) {
            (Some(hash), _) => call(
                Method::Delete,
                format!("/admin/images/{}", segment("hash", hash)?),
                None,
                Render::ImageDeleted(Some(hash.clone())),
            ),
            (None, Some(prompt)) => {
                let mut body = Map::new();
                body.insert("description".into(), json!(prompt));
                if let Some(w) = p.width {
                    body.insert("width".into(), json!(w));
                }
                if let Some(h) = p.height {
                    body.insert("height".into(), json!(h));
                }
                if let Some(m) = &p.model {
                    body.insert("model".into(), json!(m));
                }
                if let Some(s) = p.seed {
                    body.insert("seed".into(), json!(s));
                }
                call(
                    Method::Post,
                    "/admin/images/purge".into(),
                    Some(Value::Object(body)),
                    Render::ImageDeleted(None),
                )
            }
            (None, None) => return Err("images purge needs a HASH or --prompt".into()),
        },
    })
}

/// Runs one admin command against `client`, writing results to `out` and errors to `err`.
/// Returns the exit status: 0 success, 1 error reply / unreachable / bad reply, 2 usage error.
pub fn execute(
    client: &AdminClient,
    resource: &AdminResource,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let call = match build_call(resource, now_unix()) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_USAGE;
        }
    };
    let reply = match client.request(call.method, &call.path, call.body.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_ERROR;
        }
    };
    if json {
        if !reply.body.trim().is_empty() {
            let text = pretty_json(&reply.body).unwrap_or_else(|| reply.body.clone());
            let _ = writeln!(out, "{text}");
        }
        return EXIT_OK;
    }
    let v = reply.json();
    let needs_json = !matches!(
        call.render,
        Render::UserRemoved(_)
            | Render::KeyRevoked(_)
            | Render::HostRemoved(_)
            | Render::KeyToggled(..)
            | Render::HostSet(_)
            | Render::ImageDeleted(Some(_))
    );
    if needs_json && !v.is_object() {
        let _ = writeln!(
            err,
            "error: bad reply from admin API at {}: expected a JSON object (HTTP {})",
            client.base_url(),
            reply.status
        );
        return EXIT_ERROR;
    }
    let text = render(&call.render, &v, now_unix());
    let _ = out.write_all(text.as_bytes());
    EXIT_OK
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

fn render(r: &Render, v: &Value, now: i64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{run_admin_with, AdminArgs, Cli, Command};
    use clap::Parser;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;
    use std::path::Path;
    use std::thread;

    const TOKEN: &str = "admin-token-0123456789";

    #[derive(Debug)]
    struct Recorded {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap()
        }
    }

    fn read_request(stream: &mut std::net::TcpStream) -> Recorded {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap().to_string();
        let target = parts.next().unwrap().to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        assert!(
            !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding")),
            "chunked bodies are not expected"
        );
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        Recorded {
            method,
            target,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }

    /// A one-shot admin server answering each connection with the next canned reply.
    fn fake_server(replies: Vec<(u16, String)>) -> (String, thread::JoinHandle<Vec<Recorded>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in replies {
                let (mut s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                seen.push(read_request(&mut s));
                let resp = format!(
                    "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).unwrap();
            }
            seen
        });
        (url, handle)
    }

    fn admin_args(url: &str, args: &[&str]) -> AdminArgs {
        let mut v = vec!["tollgate", "admin", "--url", url, "--token", TOKEN];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Admin(a) => a,
            c => panic!("{c:?}"),
        }
    }

    fn no_config(_: &Path) -> Result<(String, String), String> {
        panic!("the config file must not be read")
    }

    fn run_args(a: &AdminArgs) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_admin_with(a, &no_config, &mut out, &mut err);
        let (out, err) = (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        );
        assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "token leaked");
        (code, out, err)
    }

    /// Runs `tollgate admin ARGS` against a server giving one reply; returns what it saw.
    fn exchange(args: &[&str], status: u16, body: &str) -> (i32, String, String, Recorded) {
        let (url, server) = fake_server(vec![(status, body.to_string())]);
        let (code, out, err) = run_args(&admin_args(&url, args));
        let mut seen = server.join().unwrap();
        assert_eq!(seen.len(), 1);
        let req = seen.remove(0);
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        if req.method != "GET" && req.method != "DELETE" {
            assert_eq!(req.header("content-type"), Some("application/json"));
            let n = req
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .count();
            assert_eq!(n, 1, "{:?}", req.headers);
        }
        (code, out, err, req)
    }

    const USER: &str = r#"{"name":"alice","email":"a@x.org","created_at":"2026-11-22T13:00:00Z","limits":{"requests_per_day":200},"keys":["k1","k2"]}"#;

    #[test]
    fn users_add() {
        let reply = format!(
            r#"{{"user":{USER},"key":{{"id":"k1","user":"alice","key":"sk-tg-SECRET","label":null}}}}"#
        );
        let (code, out, err, req) = exchange(
            &["users", "add", "alice", "--email", "a@x.org"],
            201,
            &reply,
        );
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("POST", "/admin/users")
        );
        assert_eq!(req.json(), json!({"name": "alice", "email": "a@x.org"}));
        assert_eq!(
            out,
            "user alice created\nkey id: k1\nkey: sk-tg-SECRET\n(store it now: it is not shown again)\n"
        );

        let (code, _, _, req) = exchange(&["users", "add", "bob", "--rpd", "5"], 201, &reply);
        assert_eq!(code, 0);
        assert_eq!(
            req.json(),
            json!({"name": "bob", "limits": {"requests_per_day": 5}})
        );

        // --json prints the reply verbatim (key order kept), key included.
        let (code, out, _, _) = exchange(&["--json", "users", "add", "alice"], 201, &reply);
        assert_eq!(code, 0);
        assert!(
            out.starts_with("{\n  \"user\": {\n    \"name\": \"alice\",\n    \"email\""),
            "{out}"
        );
        assert!(out.contains("\"key\": \"sk-tg-SECRET\""));
        let reparsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(reparsed, serde_json::from_str::<Value>(&reply).unwrap());
    }

    #[test]
    fn users_list_show_rm() {
        let list = format!(
            r#"{{"data":[{USER},{{"name":"github:123","email":null,"created_at":"2026-11-23T00:00:00Z","limits":null,"keys":[]}}]}}"#
        );
        let (code, out, _, req) = exchange(&["users", "list"], 200, &list);
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("GET", "/admin/users")
        );
        assert_eq!(req.body, "");
        assert_eq!(
            out,
            "NAME        EMAIL    KEYS  CREATED\n\
             alice       a@x.org     2  2026-11-22T13:00:00Z\n\
             github:123  -           0  2026-11-23T00:00:00Z\n"
        );

        let (code, out, _, req) = exchange(&["users", "show", "github:123"], 200, USER);
        assert_eq!(code, 0);
        assert_eq!(req.target, "/admin/users/github%3A123");
        assert_eq!(
            out,
            "name:     alice\nemail:    a@x.org\ncreated:  2026-11-22T13:00:00Z\n\
             limits:   requests_per_day=200\nkeys:     k1,k2\n"
        );

        let (code, out, _, req) = exchange(&["users", "rm", "a/b c"], 204, "");
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("DELETE", "/admin/users/a%2Fb%20c")
        );
        assert_eq!(out, "user a/b c removed\n");

        let (code, out, err, _) = exchange(&["--json", "users", "rm", "bob"], 204, "");
        assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    }

    #[test]
    fn keys_create() {
        let reply = r#"{"id":"k9","user":"alice","label":"ci","created_at":"2026-11-22T13:00:00Z","expires_at":null,"disabled":false,"models":["a","b"],"limits":{},"source":"admin","key":"sk-tg-NEW"}"#;
        let (code, out, err, req) = exchange(
            &[
                "keys",
                "create",
                "--user",
                "github:1",
                "--label",
                "ci",
                "--expires",
                "30d",
                "--models",
                "a, b",
                "--rpm",
                "1",
                "--rph",
                "2",
                "--rpd",
                "3",
                "--tpm",
                "4",
                "--tpd",
                "5",
                "--images-per-day",
                "6",
                "--max-concurrent",
                "7",
            ],
            201,
            reply,
        );
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(req.method, "POST");
        assert_eq!(req.target, "/admin/users/github%3A1/keys");
        assert_eq!(
            req.json(),
            json!({
                "label": "ci",
                "expires_in_s": 2_592_000,
                "models": ["a", "b"],
                "limits": {
                    "requests_per_minute": 1, "requests_per_hour": 2, "requests_per_day": 3,
                    "tokens_per_minute": 4, "tokens_per_day": 5, "images_per_day": 6,
                    "max_concurrent": 7
                }
            })
        );
        assert_eq!(
            out,
            "key k9 created for user alice\nkey: sk-tg-NEW\n(store it now: it is not shown again)\n"
        );

        let (code, _, _, req) = exchange(
            &["keys", "create", "--user", "bob", "--expires", "2027-01-01"],
            201,
            reply,
        );
        assert_eq!(code, 0);
        assert_eq!(req.json(), json!({"expires_at": "2027-01-01"}));
    }

    #[test]
    fn keys_list_and_show() {
        let list = r#"{"data":[
            {"id":"k1","user":"alice","label":"laptop","created_at":"2026-01-01T00:00:00Z","expires_at":null,"disabled":false,"models":null,"limits":{},"source":"admin"},
            {"id":"k2","user":"alice","label":null,"created_at":"2026-01-01T00:00:00Z","expires_at":"2001-01-01T00:00:00Z","disabled":false,"models":[],"limits":{},"source":"admin"},
            {"id":"k3","user":"bob","label":"x","created_at":"2026-01-01T00:00:00Z","expires_at":"2999-01-01T00:00:00Z","disabled":true,"models":["gpt-4o","o3"],"limits":{},"source":"oauth"}
        ]}"#;
        let (code, out, _, req) = exchange(&["keys", "list", "--user", "a b&c"], 200, list);
        assert_eq!(code, 0);
        assert_eq!(req.target, "/admin/keys?user=a%20b%26c");
        assert_eq!(
            out,
            "ID  USER   LABEL   STATUS    EXPIRES               MODELS\n\
             k1  alice  laptop  active    never                 all\n\
             k2  alice  -       expired   2001-01-01T00:00:00Z  all\n\
             k3  bob    x       disabled  2999-01-01T00:00:00Z  gpt-4o,o3\n"
        );
        let (_, _, _, req) = exchange(&["keys", "list"], 200, r#"{"data":[]}"#);
        assert_eq!(req.target, "/admin/keys");

        let key = r#"{"id":"k1","user":"alice","label":"laptop","created_at":"2026-01-01T00:00:00Z","expires_at":null,"disabled":false,"models":["m"],"limits":{"requests_per_minute":10,"tokens_per_day":null},"source":"admin"}"#;
        let (code, out, _, req) = exchange(&["keys", "show", "k1"], 200, key);
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("GET", "/admin/keys/k1")
        );
        assert_eq!(
            out,
            "id:       k1\nuser:     alice\nlabel:    laptop\nstatus:   active\n\
             created:  2026-01-01T00:00:00Z\nexpires:  never\nmodels:   m\n\
             limits:   requests_per_minute=10\nsource:   admin\n"
        );
        let rotated = key.replace(
            r#""source":"admin""#,
            r#""source":"admin","previous_key_valid_until":"2026-01-02T00:00:00Z""#,
        );
        let (_, out, _, _) = exchange(&["keys", "show", "k1"], 200, &rotated);
        assert!(
            out.ends_with("old secret valid until:  2026-01-02T00:00:00Z\n"),
            "{out}"
        );
    }

    #[test]
    fn keys_revoke_rotate_disable_enable() {
        let (code, out, _, req) = exchange(&["keys", "revoke", "k1"], 204, "");
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("DELETE", "/admin/keys/k1")
        );
        assert_eq!(out, "key k1 revoked\n");

        let (code, out, _, req) = exchange(
            &["keys", "rotate", "k1", "--grace", "1h30m"],
            200,
            r#"{"id":"k1","key":"sk-tg-ROT"}"#,
        );
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("POST", "/admin/keys/k1/rotate")
        );
        assert_eq!(req.json(), json!({"grace_s": 5400}));
        assert_eq!(
            out,
            "key k1 rotated\nkey: sk-tg-ROT\n(store it now: it is not shown again)\n\
             the old secret keeps working for 1h30m\n"
        );
        let (_, out, _, req) = exchange(
            &["keys", "rotate", "k1"],
            200,
            r#"{"id":"k1","key":"sk-tg-ROT"}"#,
        );
        assert_eq!(req.json(), json!({"grace_s": 0}));
        assert!(out.ends_with("the old secret no longer works\n"));

        let rec = r#"{"id":"k1","disabled":true}"#;
        let (code, out, _, req) = exchange(&["keys", "disable", "k1"], 200, rec);
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("PATCH", "/admin/keys/k1")
        );
        assert_eq!(req.json(), json!({"disabled": true}));
        assert_eq!(out, "key k1 disabled\n");
        let (_, out, _, req) = exchange(&["keys", "enable", "k1"], 200, rec);
        assert_eq!(req.json(), json!({"disabled": false}));
        assert_eq!(out, "key k1 enabled\n");
    }

    #[test]
    fn hosts() {
        let (code, out, _, req) = exchange(
            &[
                "hosts",
                "set",
                "vllm.internal:8000",
                "--key",
                "k1",
                "--key",
                "k2",
                "--origin",
                "http://10.0.0.7:8000",
            ],
            200,
            r#"{"host":"vllm.internal:8000","origin":"http://10.0.0.7:8000","keys":["k1…","k2…"],"source":"admin"}"#,
        );
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("PUT", "/admin/hosts/vllm.internal%3A8000")
        );
        assert_eq!(
            req.json(),
            json!({"keys": ["k1", "k2"], "origin": "http://10.0.0.7:8000"})
        );
        assert_eq!(
            out,
            "host vllm.internal:8000 set (origin http://10.0.0.7:8000, 2 keys)\n"
        );

        let (_, out, _, req) = exchange(
            &["hosts", "set", "api.groq.com", "--key", "gsk"],
            200,
            r#"{"host":"api.groq.com","origin":null,"keys":["gsk…"],"source":"admin"}"#,
        );
        assert_eq!(req.json(), json!({"keys": ["gsk"]}));
        assert_eq!(
            out,
            "host api.groq.com set (origin https://api.groq.com, 1 key)\n"
        );

        let (code, out, _, req) = exchange(
            &["hosts", "list"],
            200,
            r#"{"data":[{"host":"api.groq.com","origin":"https://api.groq.com","keys":["gsk_…1234"],"source":"config"},{"host":"h","origin":null,"keys":[],"source":"admin"}]}"#,
        );
        assert_eq!(code, 0);
        assert_eq!(req.target, "/admin/hosts");
        assert_eq!(
            out,
            "HOST          ORIGIN                KEYS       SOURCE\n\
             api.groq.com  https://api.groq.com  gsk_…1234  config\n\
             h             https://h             -          admin\n"
        );

        let (code, out, _, req) = exchange(&["hosts", "rm", "api.groq.com"], 204, "");
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("DELETE", "/admin/hosts/api.groq.com")
        );
        assert_eq!(out, "host api.groq.com removed\n");
    }

    #[test]
    fn usage() {
        let reply = r#"{"data":[
            {"period":"2026-11-22","user":"alice","key_id":"k1","requests":10,"prompt_tokens":1000,"completion_tokens":20,"images":0,"errors":1},
            {"period":"2026-11-23","user":"alice","key_id":"k1","requests":5,"prompt_tokens":5,"completion_tokens":7,"images":2,"errors":0}
        ]}"#;
        let before = now_unix();
        let (code, out, err, req) = exchange(
            &[
                "usage", "--user", "github:1", "--key", "k1", "--since", "7d", "--by", "day",
            ],
            200,
            reply,
        );
        let after = now_unix();
        assert_eq!((code, err.as_str()), (0, ""));
        let (path, query) = req.target.split_once('?').unwrap();
        assert_eq!(path, "/admin/usage");
        let q: Vec<(&str, &str)> = query
            .split('&')
            .map(|p| p.split_once('=').unwrap())
            .collect();
        assert_eq!(q[0], ("user", "github%3A1"));
        assert_eq!(q[1], ("key", "k1"));
        assert_eq!(q[2].0, "from");
        assert_eq!(q[3], ("by", "day"));
        let from = crate::time::parse_rfc3339(&q[2].1.replace("%3A", ":")).unwrap();
        assert!(
            from >= before - 604_800 && from <= after - 604_800,
            "{from}"
        );
        assert_eq!(
            out,
            "PERIOD      USER   KEY  REQUESTS  PROMPT  COMPLETION  IMAGES  ERRORS\n\
             2026-11-22  alice  k1         10    1000          20       0       1\n\
             2026-11-23  alice  k1          5       5           7       2       0\n\
             total                         15    1005          27       2       1\n"
        );

        let (_, out, _, req) = exchange(&["usage"], 200, r#"{"data":[]}"#);
        assert_eq!(req.target, "/admin/usage");
        assert_eq!(
            out,
            "PERIOD  USER  KEY  REQUESTS  PROMPT  COMPLETION  IMAGES  ERRORS\n"
        );
    }

    #[test]
    fn images_purge() {
        let (code, out, _, req) = exchange(&["images", "purge", "ab12"], 204, "");
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("DELETE", "/admin/images/ab12")
        );
        assert_eq!(out, "image ab12 deleted\n");

        let (code, out, _, req) = exchange(
            &[
                "images",
                "purge",
                "--prompt",
                "a red fox",
                "--width",
                "512",
                "--height",
                "256",
                "--model",
                "m",
                "--seed",
                "7",
            ],
            200,
            r#"{"deleted":"ffee"}"#,
        );
        assert_eq!(code, 0);
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("POST", "/admin/images/purge")
        );
        assert_eq!(
            req.json(),
            json!({"description": "a red fox", "width": 512, "height": 256, "model": "m", "seed": 7})
        );
        assert_eq!(out, "image ffee deleted\n");

        let (_, _, _, req) = exchange(
            &["images", "purge", "--prompt", "x"],
            200,
            r#"{"deleted":"h"}"#,
        );
        assert_eq!(req.json(), json!({"description": "x"}));
    }

    #[test]
    fn error_replies() {
        let body = r#"{"error":{"message":"user not found","type":"invalid_request_error","param":null,"code":"not_found"}}"#;
        let (code, out, err, _) = exchange(&["users", "show", "nobody"], 404, body);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (1, "", "error: user not found (not_found)\n")
        );
        let (code, out, err, _) = exchange(&["--json", "users", "add", "alice"], 409, body);
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(err, "error: user not found (not_found)\n");

        let (code, _, err, _) = exchange(
            &["users", "list"],
            401,
            r#"{"error":{"message":"invalid admin token","code":null}}"#,
        );
        assert_eq!(
            (code, err.as_str()),
            (1, "error: invalid admin token (HTTP 401)\n")
        );
        let (code, _, err, _) = exchange(&["users", "list"], 502, "Bad Gateway");
        assert_eq!((code, err.as_str()), (1, "error: HTTP 502: Bad Gateway\n"));

        // A 2xx that is not JSON where JSON is needed.
        let (code, out, err, _) = exchange(&["users", "list"], 200, "<html>");
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(
            err.starts_with("error: bad reply from admin API at http://127.0.0.1:"),
            "{err}"
        );
    }

    #[test]
    fn unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let (code, out, err) = run_args(&admin_args(&url, &["users", "list"]));
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(
            err.starts_with(&format!("error: cannot reach admin API at {url}: ")),
            "{err}"
        );
    }

    #[test]
    fn usage_errors() {
        // No URL or token from flags, env or config.
        let mut a = admin_args("http://x:1", &["users", "list"]);
        a.url = None;
        a.token = None;
        a.config = None;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_admin_with(
            &a,
            &|_| Err("no admin section".to_string()),
            &mut out,
            &mut err,
        );
        assert_eq!(code, 2);
        assert!(String::from_utf8(err).unwrap().starts_with("error: "));

        // Empty path segment.
        let (code, _, err) = run_args(&admin_args("http://127.0.0.1:9", &["users", "show", ""]));
        assert_eq!((code, err.as_str()), (2, "error: empty user name\n"));
        // Bad URL and token.
        let (code, _, err) = run_args(&admin_args("ftp://h", &["users", "list"]));
        assert_eq!(code, 2, "{err}");
        assert!(AdminClient::new("http://h:1", "with space").is_err());
        assert!(AdminClient::new("http://h:1", "").is_err());
        let c = AdminClient::new("http://h:1/", TOKEN).unwrap();
        assert_eq!(c.base_url(), "http://h:1");
        assert!(!format!("{c:?}").contains(TOKEN));
    }

    #[test]
    fn url_and_token_from_config() {
        let (url, server) = fake_server(vec![(200, r#"{"data":[]}"#.to_string())]);
        let listen = url.trim_start_matches("http://").to_string();
        let mut a = admin_args("http://x:1", &["--json", "users", "list"]);
        a.url = None;
        a.token = None;
        a.config = Some("/some/tollgate.yaml".into());
        let seen_path = std::cell::RefCell::new(None);
        let from_config = |p: &Path| {
            *seen_path.borrow_mut() = Some(p.to_path_buf());
            Ok((
                listen.clone(),
                "${TOLLGATE_TEST_SURELY_UNSET_VAR:-cfg-token-123456}".to_string(),
            ))
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_admin_with(&a, &from_config, &mut out, &mut err);
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
        assert_eq!(String::from_utf8(out).unwrap(), "{\n  \"data\": []\n}\n");
        assert_eq!(
            seen_path.borrow().as_deref(),
            Some(Path::new("/some/tollgate.yaml"))
        );
        let seen = server.join().unwrap();
        assert_eq!(
            seen[0].header("authorization"),
            Some("Bearer cfg-token-123456")
        );
    }

    #[test]
    fn pretty_printing() {
        assert_eq!(pretty_json("{}").unwrap(), "{}");
        assert_eq!(pretty_json(" [ ] ").unwrap(), "[]");
        assert_eq!(
            pretty_json(r#"{"z":1,"a":[1,{"b":"x,y:{}[]\"\\"}],"e":{ },"n":null}"#).unwrap(),
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    {\n      \"b\": \"x,y:{}[]\\\"\\\\\"\n    }\n  ],\n  \"e\": {},\n  \"n\": null\n}"
        );
        assert_eq!(pretty_json("\"é\"").unwrap(), "\"é\"");
        assert_eq!(pretty_json("1.50e3").unwrap(), "1.50e3");
        assert!(pretty_json("{").is_none());
        assert!(pretty_json("").is_none());
    }

    #[test]
    fn encoding_and_formatting() {
        assert_eq!(encode_segment("github:123"), "github%3A123");
        assert_eq!(encode_segment("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(encode_segment("Az09-._~"), "Az09-._~");
        assert_eq!(query_string(&[("a", None), ("b", None)]), "");
        assert_eq!(
            query_string(&[
                ("a", Some("1 2".into())),
                ("b", None),
                ("c", Some("x".into()))
            ]),
            "?a=1%202&c=x"
        );
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(3600), "1h");
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(90_061), "1d1h1m1s");
    }
}
