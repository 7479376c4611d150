//! The upstream request (SPEC §3.1): the client's credentials and gateway-only headers out,
//! the provider key and the backend's `Host` in, hop-by-hop headers dropped.

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;

use super::header_edit::edit_request;
use super::respond::TOLLGATE_REQUEST_ID;
use super::upstream::Backend;

/// Headers that belong to one connection (RFC 9110 §7.6.1) or to the gateway alone.
/// `transfer-encoding` is left to Pingora, which frames the upstream body itself.
/// Names, not strings: removing by a `HeaderName` skips parsing the name on every request.
const STRIPPED: [HeaderName; 10] = [
    header::AUTHORIZATION,
    HeaderName::from_static("x-host-final"),
    HeaderName::from_static("x-upstream-key"),
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// `stripped_present`'s bit for `Connection`.
const CONNECTION_BIT: u16 = 1 << 3;

/// Which of `STRIPPED` the request carries, as bit `i` for `STRIPPED[i]`. A request has a
/// handful of headers and usually just one of these (`Authorization`): one pass comparing
/// names costs less than a hashed removal for each of the ten.
fn stripped_present(headers: &http::HeaderMap) -> u16 {
    headers
        .keys()
        .filter_map(|name| STRIPPED.iter().position(|s| s == name))
        .fold(0, |bits, i| bits | 1 << i)
}

/// What the gateway's reading of the body changes in the request head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BodyFraming {
    /// The client's framing goes through.
    AsSent,
    /// The gateway read the whole body and sends it at this length.
    Length(usize),
    /// The body may grow on the way (`stream_options`); Pingora frames it as chunked.
    Chunked,
}

/// The credential the upstream request carries. Not `Debug`: a client's own key must never
/// end up printed.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// No `Authorization` at all.
    None,
    /// The client's own provider key: its header value is made for this request.
    Own(&'a str),
    /// A pool key's header value, made when the pool was built.
    Prepared(&'a HeaderValue),
}

/// `Bearer <key>`, marked sensitive so that it is never printed.
pub fn bearer(key: &str) -> std::result::Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {key}"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Everything the upstream head gets besides what the client sent.
pub struct UpstreamHead<'a> {
    pub backend: &'a Backend,
    pub credential: Credential<'a>,
    pub request_id: &'a str,
    /// Metered responses are parsed, so they must come uncompressed.
    pub uncompressed: bool,
    pub framing: BodyFraming,
}

pub fn rewrite_upstream_request(req: &mut RequestHeader, head: &UpstreamHead) -> Result<()> {
    // Prepared before the edit, so that a value that cannot be a header fails cleanly.
    let host = head
        .backend
        .host_header
        .clone()
        .ok_or_else(|| Error::explain(InvalidHTTPHeader, "upstream host"))?;
    let request_id =
        HeaderValue::from_str(head.request_id).or_err(InvalidHTTPHeader, "request id")?;
    let authorization = match head.credential {
        Credential::None => None,
        Credential::Own(key) => Some(bearer(key).or_err(InvalidHTTPHeader, "provider key")?),
        Credential::Prepared(value) => Some(value.clone()),
    };
    edit_request(req, |parts| {
        let headers = &mut parts.headers;
        let present = stripped_present(headers);
        // Headers the client nominated as hop-by-hop in `Connection` go too.
        let nominated: Vec<HeaderName> = if present & CONNECTION_BIT != 0 {
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
                .collect()
        } else {
            Vec::new()
        };
        for name in &nominated {
            headers.remove(name);
        }
        for (i, name) in STRIPPED.iter().enumerate() {
            if present & (1 << i) != 0 {
                headers.remove(name);
            }
        }

        // An origin-form target going to a backend without a base path is already what the
        // upstream must see; anything else is rebuilt as the backend's path.
        let keep_target = head.backend.base_path.is_empty()
            && parts.uri.scheme().is_none()
            && parts.uri.path_and_query().is_some();
        if !keep_target {
            let path_and_query = parts
                .uri
                .path_and_query()
                .map(|pq| pq.as_str())
                .unwrap_or("/");
            parts.uri = head
                .backend
                .upstream_path(path_and_query)
                .parse::<http::Uri>()
                .or_err(InvalidHTTPHeader, "upstream path")?;
        }

        headers.insert(header::HOST, host);
        if let Some(authorization) = authorization {
            headers.insert(header::AUTHORIZATION, authorization);
        }
        headers.insert(TOLLGATE_REQUEST_ID, request_id);
        if head.uncompressed {
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        match head.framing {
            BodyFraming::AsSent => {}
            BodyFraming::Length(len) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            BodyFraming::Chunked => {
                headers.remove(header::CONTENT_LENGTH);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendUrl;

    #[test]
    fn rewrites_credentials_host_path_and_hop_by_hop() {
        let backend = Backend::new(BackendUrl {
            tls: true,
            host: "api.example.com".into(),
            port: 443,
            base_path: "/openai/v1".into(),
        });
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions?a=1", None).unwrap();
        for (k, v) in [
            ("authorization", "Bearer sk-tg-secret"),
            ("host", "gateway.local"),
            ("x-host-final", "x.example"),
            ("x-upstream-key", "sk-byok"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("content-type", "application/json"),
        ] {
            req.append_header(k, v).unwrap();
        }
        let head = UpstreamHead {
            backend: &backend,
            credential: Credential::Own("sk-provider"),
            request_id: "req_1",
            uncompressed: true,
            framing: BodyFraming::Length(42),
        };
        rewrite_upstream_request(&mut req, &head).unwrap();
        let get = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(req.uri.to_string(), "/openai/v1/chat/completions?a=1");
        assert_eq!(get("authorization").as_deref(), Some("Bearer sk-provider"));
        assert!(req.headers["authorization"].is_sensitive());
        assert_eq!(get("host").as_deref(), Some("api.example.com"));
        assert_eq!(get("x-tollgate-request-id").as_deref(), Some("req_1"));
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert_eq!(get("accept-encoding").as_deref(), Some("identity"));
        assert_eq!(get("content-length").as_deref(), Some("42"));
        for gone in [
            "x-host-final",
            "x-upstream-key",
            "connection",
            "x-private",
            "keep-alive",
        ] {
            assert_eq!(get(gone), None, "{gone}");
        }
    }

    /// A plain-HTTP backend without a base path.
    fn plain_backend(host: &str, port: u16) -> Backend {
        Backend::new(BackendUrl {
            tls: false,
            host: host.into(),
            port,
            base_path: String::new(),
        })
    }

    #[test]
    fn the_strip_pass_finds_each_stripped_name_it_is_given() {
        assert_eq!(
            STRIPPED[CONNECTION_BIT.trailing_zeros() as usize],
            header::CONNECTION
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("a"));
        assert_eq!(stripped_present(&headers), 0);
        for (i, name) in STRIPPED.iter().enumerate() {
            headers.append(name.clone(), HeaderValue::from_static("b"));
            assert_eq!(stripped_present(&headers), (1u16 << (i + 1)) - 1, "{name}");
        }
    }

    #[test]
    fn no_key_means_no_authorization() {
        let backend = plain_backend("10.0.0.1", 8000);
        let mut req = RequestHeader::build("GET", b"/v1/models", None).unwrap();
        req.append_header("authorization", "Bearer sk-tg-x")
            .unwrap();
        req.append_header("content-length", "7").unwrap();
        req.append_header("accept-encoding", "gzip").unwrap();
        let head = UpstreamHead {
            backend: &backend,
            credential: Credential::None,
            request_id: "r",
            uncompressed: false,
            framing: BodyFraming::Chunked,
        };
        rewrite_upstream_request(&mut req, &head).unwrap();
        assert!(req.headers.get("authorization").is_none());
        assert!(req.headers.get("content-length").is_none());
        assert_eq!(req.headers.get("accept-encoding").unwrap(), "gzip");
        assert_eq!(req.headers.get("host").unwrap(), "10.0.0.1:8000");
        assert_eq!(req.uri.to_string(), "/v1/models");
    }

    #[test]
    fn a_prepared_key_goes_as_prepared_and_an_absolute_target_becomes_a_path() {
        let backend = plain_backend("10.0.0.1", 80);
        let prepared = bearer("sk-pool").unwrap();
        let mut req =
            RequestHeader::build("POST", b"http://gateway.local/v1/embeddings?x=1", None).unwrap();
        let head = UpstreamHead {
            backend: &backend,
            credential: Credential::Prepared(&prepared),
            request_id: "r",
            uncompressed: false,
            framing: BodyFraming::AsSent,
        };
        rewrite_upstream_request(&mut req, &head).unwrap();
        assert_eq!(req.headers["authorization"], "Bearer sk-pool");
        assert!(req.headers["authorization"].is_sensitive());
        assert_eq!(req.uri.to_string(), "/v1/embeddings?x=1");
        assert_eq!(req.headers["host"], "10.0.0.1");
    }

    #[test]
    fn a_key_that_cannot_be_a_header_fails_the_request_cleanly() {
        let backend = plain_backend("h", 80);
        let mut req = RequestHeader::build("GET", b"/v1/models", None).unwrap();
        let head = UpstreamHead {
            backend: &backend,
            credential: Credential::Own("sk-bad\nkey"),
            request_id: "r",
            uncompressed: false,
            framing: BodyFraming::AsSent,
        };
        let e = rewrite_upstream_request(&mut req, &head).unwrap_err();
        assert_eq!(e.etype(), &InvalidHTTPHeader);
    }
}
