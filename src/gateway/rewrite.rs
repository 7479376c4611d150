//! The upstream request (SPEC §3.1): the client's credentials and gateway-only headers out,
//! the provider key and the backend's `Host` in, hop-by-hop headers dropped.

use http::header::{self, HeaderName};
use pingora::http::RequestHeader;
use pingora::prelude::*;

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

pub fn rewrite_upstream_request(
    req: &mut RequestHeader,
    backend: &Backend,
    upstream_key: Option<&str>,
    request_id: &str,
) -> Result<()> {
    // Headers the client nominated as hop-by-hop in `Connection` go too.
    let nominated: Vec<HeaderName> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in nominated {
        req.remove_header(&name);
    }
    for name in &STRIPPED {
        req.remove_header(name);
    }

    let path_and_query = req
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let upstream_path = backend.upstream_path(path_and_query);
    let uri = upstream_path
        .parse::<http::Uri>()
        .or_err(InvalidHTTPHeader, "upstream path")?;
    req.set_uri(uri);

    req.insert_header(header::HOST, backend.authority.as_str())?;
    if let Some(key) = upstream_key {
        req.insert_header(header::AUTHORIZATION, format!("Bearer {key}"))?;
    }
    req.insert_header("x-tollgate-request-id", request_id)?;
    Ok(())
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
        rewrite_upstream_request(&mut req, &backend, Some("sk-provider"), "req_1").unwrap();
        let get = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(req.uri.to_string(), "/openai/v1/chat/completions?a=1");
        assert_eq!(get("authorization").as_deref(), Some("Bearer sk-provider"));
        assert_eq!(get("host").as_deref(), Some("api.example.com"));
        assert_eq!(get("x-tollgate-request-id").as_deref(), Some("req_1"));
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
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

    #[test]
    fn no_key_means_no_authorization() {
        let backend = Backend::new(BackendUrl {
            tls: false,
            host: "10.0.0.1".into(),
            port: 8000,
            base_path: String::new(),
        });
        let mut req = RequestHeader::build("GET", b"/v1/models", None).unwrap();
        req.append_header("authorization", "Bearer sk-tg-x")
            .unwrap();
        rewrite_upstream_request(&mut req, &backend, None, "r").unwrap();
        assert!(req.headers.get("authorization").is_none());
        assert_eq!(req.headers.get("host").unwrap(), "10.0.0.1:8000");
    }
}
