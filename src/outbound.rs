//! Requests the gateway makes on its own behalf: image generation calls, fetching a backend's
//! image URL, uploads to an image host. They go through Pingora's connector (the same TLS stack,
//! CA handling and timeouts as proxied traffic), with a bounded response body and an overall
//! deadline, so a slow or hostile peer can cost neither memory nor a hung request.
//!
//! Errors never carry the URL: upload URLs can hold credentials in their query.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;

use crate::gateway::upstream::{timed_peer, Resolver};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// Not an absolute http(s) URL we are willing to call.
    InvalidUrl(&'static str),
    Connect(String),
    Timeout,
    /// The response body exceeded the limit.
    TooLarge(usize),
    Protocol(String),
}

impl std::fmt::Display for OutboundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutboundError::InvalidUrl(why) => write!(f, "invalid URL: {why}"),
            OutboundError::Connect(e) => write!(f, "connect failed: {e}"),
            OutboundError::Timeout => f.write_str("timed out"),
            OutboundError::TooLarge(limit) => write!(f, "response larger than {limit} bytes"),
            OutboundError::Protocol(e) => write!(f, "bad response: {e}"),
        }
    }
}

/// Bounds of one exchange.
#[derive(Clone)]
pub struct Limits {
    pub connect_timeout: Duration,
    /// Longest silence between two bytes of the response.
    pub read_timeout: Duration,
    /// Deadline for the whole exchange, connect to last body byte.
    pub total_timeout: Duration,
    pub max_response_bytes: usize,
    /// Trusted roots in place of the system's (see `gateway::upstream::load_ca`).
    pub ca: Option<Arc<CaType>>,
}

pub struct Response {
    pub status: u16,
    pub header: ResponseHeader,
    pub body: Bytes,
}

impl Response {
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An absolute http(s) URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The `Host` header: host, with the port when it is not the scheme's default.
    pub authority: String,
    pub path_and_query: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, OutboundError> {
        // Schemes are case-insensitive (RFC 3986 §3.1).
        let scheme_end = url.find("://").unwrap_or(0);
        let (tls, rest) = match url[..scheme_end].to_ascii_lowercase().as_str() {
            "https" => (true, &url[scheme_end + 3..]),
            "http" => (false, &url[scheme_end + 3..]),
            _ => return Err(OutboundError::InvalidUrl("only http and https are allowed")),
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        if authority.is_empty() || authority.contains('@') {
            return Err(OutboundError::InvalidUrl("bad authority"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| OutboundError::InvalidUrl("bad port"))?,
            ),
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(OutboundError::InvalidUrl("bad host"));
        }
        let tail = tail.split('#').next().unwrap_or("");
        let path_and_query = match tail.chars().next() {
            Some('/') => tail.to_string(),
            Some(_) => format!("/{tail}"),
            None => "/".to_string(),
        };
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path_and_query,
        })
    }

    /// `scheme://authority`, to resolve relative URLs an API answers with.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// Shared by every caller; connections are not pooled (these calls are rare next to proxied
/// traffic and often go to hosts seen once).
pub struct HttpClient {
    connector: Connector,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient {
            connector: Connector::new(None),
        }
    }
}

impl HttpClient {
    /// One request to an absolute URL.
    pub async fn send(
        &self,
        resolver: &Resolver,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        limits: &Limits,
    ) -> Result<Response, OutboundError> {
        let target = Target::parse(url)?;
        let work = async {
            let addr = resolver
                .resolve(&target.host, target.port)
                .await
                .map_err(|e| OutboundError::Connect(format!("resolving {}: {e}", target.host)))?;
            let peer = timed_peer(
                addr,
                target.tls,
                &target.host,
                limits.connect_timeout,
                limits.read_timeout,
                limits.ca.clone(),
            );
            let mut head = request_head(method, &target.path_and_query)?;
            set(&mut head, "host", &target.authority)?;
            for (name, value) in headers {
                set(&mut head, name, value)?;
            }
            self.exchange_unbounded(&peer, head, body, limits.max_response_bytes)
                .await
        };
        tokio::time::timeout(limits.total_timeout, work)
            .await
            .unwrap_or(Err(OutboundError::Timeout))
    }

    /// One request to a prepared peer (a pool backend), with a deadline for the whole exchange.
    pub async fn exchange(
        &self,
        peer: &HttpPeer,
        head: RequestHeader,
        body: Bytes,
        max_response_bytes: usize,
        total_timeout: Duration,
    ) -> Result<Response, OutboundError> {
        tokio::time::timeout(
            total_timeout,
            self.exchange_unbounded(peer, head, body, max_response_bytes),
        )
        .await
        .unwrap_or(Err(OutboundError::Timeout))
    }

    async fn exchange_unbounded(
        &self,
        peer: &HttpPeer,
        mut head: RequestHeader,
        body: Bytes,
        max_response_bytes: usize,
    ) -> Result<Response, OutboundError> {
        let (mut session, _) = self
            .connector
            .get_http_session(peer)
            .await
            .map_err(|e| classify(&e))?;
        if !body.is_empty() || head.method != http::Method::GET {
            set(&mut head, "content-length", &body.len().to_string())?;
        }
        session
            .write_request_header(Box::new(head))
            .await
            .map_err(|e| classify(&e))?;
        if !body.is_empty() {
            session
                .write_request_body(body, true)
                .await
                .map_err(|e| classify(&e))?;
        }
        session
            .finish_request_body()
            .await
            .map_err(|e| classify(&e))?;
        session
            .read_response_header()
            .await
            .map_err(|e| classify(&e))?;
        let header = session
            .response_header()
            .cloned()
            .ok_or_else(|| OutboundError::Protocol("no response header".into()))?;
        let mut collected = BytesMut::new();
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| classify(&e))?
        {
            if collected.len() + chunk.len() > max_response_bytes {
                return Err(OutboundError::TooLarge(max_response_bytes));
            }
            collected.extend_from_slice(&chunk);
        }
        Ok(Response {
            status: header.status.as_u16(),
            header,
            body: collected.freeze(),
        })
    }
}

pub fn request_head(method: &str, path_and_query: &str) -> Result<RequestHeader, OutboundError> {
    let mut head = RequestHeader::build(method, path_and_query.as_bytes(), None)
        .map_err(|_| OutboundError::InvalidUrl("bad path"))?;
    set(
        &mut head,
        "user-agent",
        concat!("tollgate/", env!("CARGO_PKG_VERSION")),
    )?;
    Ok(head)
}

fn set(head: &mut RequestHeader, name: &str, value: &str) -> Result<(), OutboundError> {
    head.insert_header(name.to_string(), value)
        .map_err(|_| OutboundError::Protocol(format!("invalid value for header {name}")))
}

fn classify(e: &pingora::Error) -> OutboundError {
    use pingora::ErrorType::*;
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout => OutboundError::Timeout,
        ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
        | TLSHandshakeFailure | InvalidCert | TLSHandshakeTimedout => {
            OutboundError::Connect(e.etype().as_str().into())
        }
        other => OutboundError::Protocol(other.as_str().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_and_https_urls_only() {
        let t = Target::parse("https://img.example.com/upload?authCode=x").unwrap();
        assert!(t.tls);
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("img.example.com", 443, "img.example.com")
        );
        assert_eq!(t.path_and_query, "/upload?authCode=x");
        assert_eq!(t.origin(), "https://img.example.com");

        assert!(Target::parse("HTTPS://h/x").unwrap().tls);
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (8080, "/"));
        assert_eq!(t.origin(), "http://127.0.0.1:8080");

        let t = Target::parse("http://[::1]:9000/a#frag").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert_eq!(t.path_and_query, "/a");

        for bad in [
            "file:///etc/passwd",
            "ftp://h/x",
            "gopher://h",
            "//h/x",
            "http://",
            "http://user:pw@h/",
            "http://h:99999/",
            "http://h x/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
