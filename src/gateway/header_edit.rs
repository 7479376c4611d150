//! Editing request and response heads in their plain header map.
//!
//! Pingora's `insert_header` and `remove_header` keep a second, case-preserving map in step
//! with the plain one, and `insert_header` parses (and, for a name outside the standard list,
//! copies) the name on every call. A proxied response gets about fifteen headers from the
//! gateway, and on the benchmark those calls were about 6 µs of every request's CPU. Header
//! names are case-insensitive (RFC 9110 §5.1), so the gateway gives up the peer's spelling:
//! the head is taken apart into `http`'s parts, edited with prepared names, and put back
//! without a case map. Pingora then writes standard names in their usual title case
//! (`Content-Type`) and the others in lower case, as HTTP/2 always does.

use http::{HeaderMap, Request, Response};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

/// Runs `edit` on the response's plain header map. A non-standard reason phrase is kept.
pub fn edit_response<T>(resp: &mut ResponseHeader, edit: impl FnOnce(&mut HeaderMap) -> T) -> T {
    let custom_reason = resp
        .get_reason_phrase()
        .filter(|reason| Some(*reason) != resp.status.canonical_reason())
        .map(str::to_owned);
    // An empty head allocates nothing; it only holds the place while the parts are edited.
    let empty = ResponseHeader::from(Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, empty).into();
    let out = edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if custom_reason.is_some() {
        // Cannot fail: `set_reason_phrase` only stores the text.
        let _ = resp.set_reason_phrase(custom_reason.as_deref());
    }
    out
}

/// Runs `edit` on the request's parts (method, URI, headers). Whether an HTTP/2 upstream gets
/// END_STREAM with the headers is kept; the URI is what the request-target is written from.
pub fn edit_request(
    req: &mut RequestHeader,
    edit: impl FnOnce(&mut http::request::Parts) -> Result<()>,
) -> Result<()> {
    let send_end_stream = req.send_end_stream();
    let empty = RequestHeader::from(Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, empty).into();
    let result = edit(&mut parts);
    *req = RequestHeader::from(parts);
    if let Some(send_end_stream) = send_end_stream {
        req.set_send_end_stream(send_end_stream);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};

    fn wire(resp: &ResponseHeader) -> String {
        let mut buf = Vec::new();
        resp.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn a_parsed_response_keeps_its_headers_and_reason_and_takes_new_ones() {
        let mut resp = ResponseHeader::build(404, Some(2)).unwrap();
        resp.append_header("X-Upstream-Thing", "a").unwrap();
        resp.append_header("X-Upstream-Thing", "b").unwrap();
        resp.insert_header("Content-Type", "application/json")
            .unwrap();
        resp.set_reason_phrase(Some("Nowhere")).unwrap();
        edit_response(&mut resp, |headers| {
            headers.insert(
                HeaderName::from_static("x-added"),
                HeaderValue::from_static("1"),
            );
        });
        assert_eq!(resp.status, 404);
        assert_eq!(resp.get_reason_phrase(), Some("Nowhere"));
        let values: Vec<_> = resp.headers.get_all("x-upstream-thing").iter().collect();
        assert_eq!(values, ["a", "b"]);
        assert_eq!(resp.headers[CONTENT_TYPE], "application/json");
        // Without the case map, the head is still written whole: standard names titled.
        let text = wire(&resp);
        assert!(
            text.contains("Content-Type: application/json\r\n"),
            "{text}"
        );
        assert!(text.contains("x-upstream-thing: a\r\n"), "{text}");
        assert!(text.contains("x-added: 1\r\n"), "{text}");
        // Pingora's own methods still work on the result.
        resp.insert_header("x-later", "2").unwrap();
        assert_eq!(resp.headers["x-later"], "2");
    }

    #[test]
    fn a_canonical_reason_stays_canonical() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        edit_response(&mut resp, |_| ());
        assert_eq!(resp.get_reason_phrase(), Some("OK"));
    }

    #[test]
    fn a_request_keeps_method_uri_and_end_stream() {
        let mut req = RequestHeader::build("POST", b"/v1/chat?x=1", None).unwrap();
        req.append_header("Authorization", "Bearer a").unwrap();
        req.set_version(http::Version::HTTP_2);
        req.set_send_end_stream(false);
        edit_request(&mut req, |parts| {
            parts.headers.remove(http::header::AUTHORIZATION);
            Ok(())
        })
        .unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.uri, "/v1/chat?x=1");
        assert!(req.headers.get("authorization").is_none());
        assert_eq!(req.send_end_stream(), Some(false));
    }
}
