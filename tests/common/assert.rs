//! Assertions shared by the end-to-end tests: the SPEC §4 error body, the request-id headers of
//! gateway-made responses (SPEC §3.7), the format of gateway keys, and whether the public API
//! accepts a key.

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::TestGateway;

/// Asserts `body` is an error in the SPEC §4 shape (`error` with `message`, `type`, `param` and
/// `code`) and returns its `code`.
pub fn assert_error_shape(body: &Value) -> String {
    let err = &body["error"];
    assert!(err.is_object(), "not an error object: {body}");
    assert!(err["message"].is_string(), "error.message: {body}");
    assert!(err["type"].is_string(), "error.type: {body}");
    assert!(
        err.as_object().unwrap().contains_key("param"),
        "error.param: {body}"
    );
    assert!(
        err.as_object().unwrap().contains_key("code"),
        "error.code: {body}"
    );
    err["code"].as_str().unwrap_or_default().to_string()
}

/// Asserts an error body has `error.type` `kind`, `error.code` `code` and a message.
pub fn assert_error(body: &Value, kind: &str, code: &str) {
    assert_eq!(body["error"]["type"], kind, "error.type; body: {body}");
    assert_eq!(body["error"]["code"], code, "error.code; body: {body}");
    assert!(
        body["error"]["message"].is_string(),
        "error.message; body: {body}"
    );
}

/// A header's value as text (None when absent or not visible ASCII).
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Asserts the request-id headers of a gateway-made response: a non-empty
/// `x-tollgate-request-id` and an equal `x-request-id`. Returns the id.
pub fn assert_request_id_headers(headers: &HeaderMap) -> String {
    let rid = header_str(headers, "x-tollgate-request-id").unwrap_or_default();
    assert!(
        !rid.is_empty(),
        "x-tollgate-request-id missing: {headers:?}"
    );
    assert_eq!(
        header_str(headers, "x-request-id"),
        Some(rid),
        "x-request-id on a gateway-made response"
    );
    rid.to_string()
}

/// `sk-tg-` followed by exactly 40 characters of [A-Za-z0-9].
pub fn is_gateway_key(key: &str) -> bool {
    key.strip_prefix("sk-tg-")
        .is_some_and(|rest| rest.len() == 40 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Asserts `key` has the gateway key format (see [`is_gateway_key`]).
pub fn assert_key_format(key: &str) {
    assert!(is_gateway_key(key), "key format: {key}");
}

/// Asserts the public API refuses `key` with `status` and error `code` (in the SPEC §4 shape).
pub async fn assert_refused(gw: &TestGateway, key: &str, status: u16, code: &str) {
    let (got, body) = gw.chat_reply(key, "gpt-4o-mini").await;
    assert_eq!(got, status, "public API with this key: {body}");
    assert_eq!(assert_error_shape(&body), code, "{body}");
}

/// Asserts the public API serves a chat completion with `key`.
pub async fn assert_works(gw: &TestGateway, key: &str) {
    let (status, body) = gw.chat_reply(key, "gpt-4o-mini").await;
    assert_eq!(status, 200, "public API with this key: {body}");
}

/// The value of one metric series (`name{labels}`, labels in Prometheus' sorted order) in
/// Prometheus text, if present.
pub fn metric_series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("metric value"))
}
