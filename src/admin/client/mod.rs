//! Blocking HTTP client for the admin API (SPEC section 5), used by `tollgate admin`.
//!
//! [`execute`] runs one [`AdminResource`] command and renders the reply as a table (default) or
//! as the server's JSON (`--json`). Exit statuses: 0 success, 1 error reply or unreachable
//! server, 2 usage error.
//!
//! `commands` turns each resource and verb into a request and runs it, `render` turns
//! replies into text.
//!
//! [`AdminResource`]: crate::cli::AdminResource

use std::fmt;
use std::time::Duration;

use serde_json::Value;

mod commands;
mod render;
#[cfg(test)]
mod tests;

pub use commands::execute;
pub use render::{format_duration, pretty_json};

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
