//! End-to-end tests of the proxy path (SPEC §2, §3, §3.1–§3.3, §4, §5): authentication,
//! the model allow-list, BYOK, the gateway's local routes, routing and base paths, the
//! upstream request rewrite, `X-Host-Final`, failover and health checks, and the access log.
//!
//! Every test starts its own gateway process and mock upstream(s) and asserts what a client
//! sees (status, the §4 error body, headers) and what the upstream received.

mod common;

use std::time::Duration;

use common::assert::{assert_error, assert_key_format, assert_request_id_headers, header_str};
use common::mock::{MockUpstream, Mode};
use common::{
    chat_body, eventually, free_port, fresh_client, start_with_mock, wait_until, GatewayConfig,
    TestGateway, ADMIN_TOKEN,
};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

/// How long to wait for a condition that should hold almost at once.
const WAIT: Duration = Duration::from_secs(10);
/// Guard against a gateway that never answers (the test fails instead of hanging).
const NO_HANG: Duration = Duration::from_secs(30);
const POOL_KEY: &str = "sk-upstream-test";
/// The caller's own provider key in the BYOK tests.
const OWN_KEY: &str = "sk-caller-own-key";

// ---------------------------------------------------------------------------------------------
// Helpers

/// Sends a request, failing the test (rather than hanging) if no answer comes.
async fn send(req: reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(NO_HANG, req.send())
        .await
        .expect("the gateway did not answer")
        .expect("request failed")
}

/// Status, headers and body (JSON when it parses, else a JSON string) of a response.
async fn read(resp: reqwest::Response) -> (u16, HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = tokio::time::timeout(NO_HANG, resp.text())
        .await
        .expect("the body never ended")
        .expect("body read failed");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// The body of a response that must be a 200.
async fn read_ok(resp: reqwest::Response) -> Value {
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Asserts a gateway-made error (SPEC §4): status, `error.type`, `error.code`, a message, and
/// the request-id headers of a gateway response (SPEC §3.7). Returns the body.
async fn expect_error(resp: reqwest::Response, status: u16, kind: &str, code: &str) -> Value {
    let (got, headers, body) = read(resp).await;
    assert_eq!(got, status, "unexpected status; body: {body}");
    assert_error(&body, kind, code);
    assert_request_id_headers(&headers);
    body
}

/// `expect_error` for the 401 of a missing, unknown or revoked key.
async fn expect_invalid_api_key(resp: reqwest::Response) {
    expect_error(resp, 401, "invalid_request_error", "invalid_api_key").await;
}

/// `expect_error` for a chat completion with `key`.
async fn expect_chat_error(gw: &TestGateway, key: &str, status: u16, kind: &str, code: &str) {
    expect_error(chat(gw, key).await, status, kind, code).await;
}

/// Creates a user through the admin API; returns its first key's (id, secret).
async fn new_user(gw: &TestGateway, name: &str) -> (String, String) {
    let (status, body) = gw
        .admin("POST", "/admin/users", Some(json!({"name": name})))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["key"]["id"].as_str().expect("key id").to_string();
    let key = body["key"]["key"].as_str().expect("key secret").to_string();
    assert_key_format(&key);
    (id, key)
}

/// `N` mock upstreams, started one after the other.
async fn start_mocks<const N: usize>() -> [MockUpstream; N] {
    let mut mocks = Vec::with_capacity(N);
    for _ in 0..N {
        mocks.push(MockUpstream::start().await);
    }
    mocks
        .try_into()
        .unwrap_or_else(|_| unreachable!("N mocks were started"))
}

/// A mock upstream, a gateway in front of it, and the user `alice`: her first key's
/// (id, secret).
async fn start_with_alice() -> (MockUpstream, TestGateway, String, String) {
    let (mock, gw) = start_with_mock("").await;
    let (id, key) = new_user(&gw, "alice").await;
    (mock, gw, id, key)
}

async fn chat(gw: &TestGateway, key: &str) -> reqwest::Response {
    send(gw.chat_request(key)).await
}

async fn chat_status(gw: &TestGateway, key: &str) -> u16 {
    let resp = chat(gw, key).await;
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    status
}

/// `GET /v1/echo` through the gateway; returns the response headers and what the mock saw.
async fn echo(req: reqwest::RequestBuilder) -> (HeaderMap, Value) {
    let (status, headers, body) = read(send(req).await).await;
    assert_eq!(status, 200, "echo failed: {body}");
    (headers, body)
}

/// The sum of a metric's samples whose labels include all of `labels` (0 when absent).
fn metric_value(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn upstreams_yaml(name: &str, backends: &[String], keys: &[&str], more: &str) -> String {
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "  {name}:\n    backends: [{}]\n    keys: [{}]\n    connect_timeout_ms: 1000\n    read_timeout_ms: 5000\n{more}",
        backends.join(", "),
        keys.join(", "),
    )
}

/// A gateway whose only upstream is `openai` with these backends, keys and more settings.
async fn start_openai_pool(backends: &[String], keys: &[&str], more: &str) -> TestGateway {
    let ups = format!(
        "upstreams:\n{}",
        upstreams_yaml("openai", backends, keys, more)
    );
    TestGateway::start(GatewayConfig::new(&backends[0]).upstreams(&ups)).await
}

/// The `id`s of a model list reply.
fn model_ids(body: &Value) -> Vec<&str> {
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default())
        .collect()
}

/// The parts of a raw HTTP/1.1 response: status, headers (lowercased names), body (de-chunked).
fn parse_raw(raw: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("no end of head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size..];
            rest = rest.strip_prefix("\r\n").unwrap_or(rest);
        }
        out
    } else {
        body.to_string()
    };
    (status, headers, body)
}

// ---------------------------------------------------------------------------------------------
// 1. Authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_unknown_key_is_401_invalid_api_key() {
    let (mock, gw, _, key) = start_with_alice().await;

    let no_key = gw.http.post(gw.url("/v1/chat/completions"));
    expect_invalid_api_key(send(no_key.json(&chat_body("gpt-4o-mini"))).await).await;

    // Well-formed but never issued.
    let unknown = format!("sk-tg-{}", "A".repeat(40));
    expect_invalid_api_key(chat(&gw, &unknown).await).await;
    // Not a bearer token at all.
    let basic = send(
        gw.http
            .post(gw.url("/v1/chat/completions"))
            .header("authorization", format!("Basic {key}"))
            .json(&chat_body("gpt-4o-mini")),
    )
    .await;
    expect_invalid_api_key(basic).await;
    assert_eq!(mock.request_count(), 0, "refused requests reached upstream");

    assert_eq!(chat_status(&gw, &key).await, 200);
    assert!(mock.wait_for_requests(1, WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_stops_working_at_once() {
    let (mock, gw, id, key) = start_with_alice().await;
    // Warm the key so it sits in the gateway's hot-key cache.
    assert_eq!(chat_status(&gw, &key).await, 200);
    assert_eq!(chat_status(&gw, &key).await, 200);

    let (status, body) = gw.delete_key(&id).await;
    assert_eq!(status, 204, "{body}");
    expect_invalid_api_key(chat(&gw, &key).await).await;
    assert_eq!(mock.request_count(), 2);
    let (status, _) = gw.get_key(&id).await;
    assert_eq!(status, 404, "a revoked key is gone from the admin API");
}

/// `PATCH /admin/keys/{id}` that must answer 200; returns the key record.
async fn patch_ok(gw: &TestGateway, id: &str, patch: Value) -> Value {
    let (status, body) = gw.patch_key(id, patch).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_key_is_403_until_enabled_again() {
    let (mock, gw, id, key) = start_with_alice().await;
    assert_eq!(chat_status(&gw, &key).await, 200);

    let body = patch_ok(&gw, &id, json!({"disabled": true})).await;
    assert_eq!(body["disabled"], true, "{body}");
    expect_chat_error(&gw, &key, 403, "permission_error", "key_disabled").await;
    assert_eq!(mock.request_count(), 1);

    patch_ok(&gw, &id, json!({"disabled": false})).await;
    assert_eq!(chat_status(&gw, &key).await, 200);
    assert!(mock.wait_for_requests(2, WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_created_with_expires_in_s_expires() {
    let (_mock, gw, _, _) = start_with_alice().await;
    let (_, key) = gw.create_key("alice", json!({"expires_in_s": 1})).await;
    assert_key_format(&key);

    // Until it expires the key works; afterwards it is refused as expired, nothing else.
    let deadline = tokio::time::Instant::now() + WAIT;
    let body = loop {
        let (status, _, body) = read(chat(&gw, &key).await).await;
        match status {
            200 => {}
            401 => break body,
            other => panic!("unexpected status {other}: {body}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["error"]["code"], "key_expired", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    // And it stays expired.
    expect_chat_error(&gw, &key, 401, "invalid_request_error", "key_expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_at_in_the_past_takes_effect_at_once() {
    let (mock, gw, id, key) = start_with_alice().await;
    assert_eq!(chat_status(&gw, &key).await, 200);

    patch_ok(&gw, &id, json!({"expires_at": "2020-01-01T00:00:00Z"})).await;
    expect_chat_error(&gw, &key, 401, "invalid_request_error", "key_expired").await;
    assert_eq!(mock.request_count(), 1);

    // Clearing the expiry brings it back.
    patch_ok(&gw, &id, json!({"expires_at": null})).await;
    assert_eq!(chat_status(&gw, &key).await, 200);
}

/// `POST /admin/keys/{id}/rotate` with `grace_s`, which must answer 200; returns the reply and
/// the new secret (checked for the key format).
async fn rotate_ok(gw: &TestGateway, id: &str, grace_s: u64) -> (Value, String) {
    let (status, body) = gw.rotate_key(id, json!({"grace_s": grace_s})).await;
    assert_eq!(status, 200, "{body}");
    let new = body["key"].as_str().expect("new key").to_string();
    assert_key_format(&new);
    (body, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_with_grace_keeps_both_secrets_working() {
    let (mock, gw, id, old) = start_with_alice().await;
    assert_eq!(chat_status(&gw, &old).await, 200);

    let (body, new) = rotate_ok(&gw, &id, 3600).await;
    assert_eq!(body["id"], id.as_str(), "rotation keeps the key id: {body}");
    assert_ne!(new, old);

    assert_eq!(chat_status(&gw, &old).await, 200, "old key within grace");
    assert_eq!(chat_status(&gw, &new).await, 200, "new key");
    assert!(mock.wait_for_requests(3, WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_without_grace_stops_the_old_secret_at_once() {
    let (mock, gw, id, old) = start_with_alice().await;
    assert_eq!(chat_status(&gw, &old).await, 200);

    let (_, new) = rotate_ok(&gw, &id, 0).await;

    expect_invalid_api_key(chat(&gw, &old).await).await;
    assert_eq!(chat_status(&gw, &new).await, 200);
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_stops_all_its_keys_at_once() {
    let (mock, gw, _, first) = start_with_alice().await;
    let (_, second) = gw.create_key("alice", json!({"label": "second"})).await;
    let (_, other) = new_user(&gw, "bob").await;
    for key in [&first, &second, &other] {
        assert_eq!(chat_status(&gw, key).await, 200);
    }

    gw.admin_expect(204, "DELETE", "/admin/users/alice", None)
        .await;
    for key in [&first, &second] {
        expect_invalid_api_key(chat(&gw, key).await).await;
    }
    assert_eq!(
        chat_status(&gw, &other).await,
        200,
        "other users unaffected"
    );
    assert_eq!(mock.request_count(), 4);
}

// ---------------------------------------------------------------------------------------------
// 2. Model allow-list

/// `start_with_alice`, with a gateway client that opens a new connection for every request
/// (`fresh_client`) and a key of hers for `models` only.
async fn start_with_model_key(models: &[&str]) -> (MockUpstream, TestGateway, String) {
    let (mock, mut gw, _, _) = start_with_alice().await;
    gw.http = fresh_client();
    let (_, key) = gw.create_key("alice", json!({ "models": models })).await;
    (mock, gw, key)
}

/// `expect_error` for the 403 of a model outside the key's list (`param` is `model`).
async fn expect_model_not_allowed(resp: reqwest::Response) {
    let body = expect_error(resp, 403, "permission_error", "model_not_allowed").await;
    assert_eq!(body["error"]["param"], "model", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_allow_list_refuses_other_models_before_upstream() {
    let (mock, gw, key) = start_with_model_key(&["gpt-4o-mini"]).await;

    let gpt_4o = |key: &str| {
        send(
            gw.post("/v1/chat/completions", key)
                .json(&chat_body("gpt-4o")),
        )
    };
    expect_model_not_allowed(gpt_4o(&key).await).await;
    // The refused request never reached the upstream complete, and no connection lingers.
    assert_eq!(
        mock.request_count(),
        0,
        "a refused request reached upstream"
    );
    assert!(
        mock.wait_for_open_connections(0, WAIT).await,
        "an upstream connection stayed open: {}",
        mock.open_connections()
    );
    assert_eq!(
        mock.request_count(),
        0,
        "a refused request reached upstream"
    );

    // Malformed JSON cannot be checked: 400, nothing upstream.
    let resp = send(
        gw.post("/v1/chat/completions", &key)
            .header("content-type", "application/json")
            .body("{\"model\": \"gpt-4o-mini\", "),
    )
    .await;
    expect_error(resp, 400, "invalid_request_error", "invalid_request").await;
    assert!(mock.wait_for_open_connections(0, WAIT).await);
    assert_eq!(mock.request_count(), 0);

    // The allowed model passes, with its body intact.
    let body = read_ok(chat(&gw, &key).await).await;
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert!(mock.wait_for_requests(1, WAIT).await);
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.json().unwrap(), chat_body("gpt-4o-mini"));
    assert_eq!(mock.request_count(), 1);

    // A key without a list may use any model.
    let (_, free) = gw.create_key("alice", json!({})).await;
    assert_eq!(gpt_4o(&free).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_allow_list_checks_multipart_bodies() {
    let (mock, gw, chat_only) = start_with_model_key(&["gpt-4o-mini"]).await;
    let (_, whisper) = gw
        .create_key("alice", json!({"models": ["whisper-1"]}))
        .await;
    let audio: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let upload = |key: &str| {
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(audio.clone())
                    .file_name("speech.wav")
                    .mime_str("audio/wav")
                    .unwrap(),
            )
            .text("model", "whisper-1");
        send(gw.post("/v1/audio/transcriptions", key).multipart(form))
    };

    expect_model_not_allowed(upload(&chat_only).await).await;
    assert!(mock.wait_for_open_connections(0, WAIT).await);
    assert_eq!(mock.request_count(), 0, "a refused upload reached upstream");

    let body = read_ok(upload(&whisper).await).await;
    assert_eq!(body["text"], "mock transcription", "{body}");
    assert_eq!(body["received"]["fields"]["model"], "whisper-1", "{body}");
    assert_eq!(
        body["received"]["files"]["file"]["bytes"],
        audio.len(),
        "{body}"
    );
    assert_eq!(mock.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 3. BYOK

async fn byok_gateway(mode: &str) -> (MockUpstream, TestGateway, String) {
    let (mock, gw) = start_with_mock(&format!("auth:\n  byok: {mode}\n")).await;
    let (_, key) = new_user(&gw, "alice").await;
    (mock, gw, key)
}

/// What the upstream saw of `GET /v1/echo` with `key` and the caller's own provider key.
async fn echo_with_own_key(gw: &TestGateway, key: &str) -> Value {
    let (_, seen) = echo(gw.get("/v1/echo", key).header("x-upstream-key", OWN_KEY)).await;
    seen
}

/// Asserts the upstream got `Authorization: Bearer {key}` and no `x-upstream-key`.
fn assert_upstream_key(seen: &Value, key: &str) {
    assert_eq!(seen["headers"]["authorization"], format!("Bearer {key}"));
    assert!(seen["headers"].get("x-upstream-key").is_none(), "{seen}");
}

/// The caller's own provider key without a gateway key is refused.
async fn expect_own_key_alone_refused(gw: &TestGateway) {
    let resp = send(
        gw.http
            .get(gw.url("/v1/echo"))
            .header("x-upstream-key", OWN_KEY),
    )
    .await;
    expect_invalid_api_key(resp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byok_off_strips_the_callers_key() {
    let (mock, gw, key) = byok_gateway("off").await;
    assert_upstream_key(&echo_with_own_key(&gw, &key).await, POOL_KEY);

    // The gateway key is still required.
    expect_own_key_alone_refused(&gw).await;
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byok_optional_uses_the_callers_key_when_given() {
    let (mock, gw, key) = byok_gateway("optional").await;
    assert_upstream_key(&echo_with_own_key(&gw, &key).await, OWN_KEY);

    let (_, seen) = echo(gw.get("/v1/echo", &key)).await;
    assert_eq!(
        seen["headers"]["authorization"],
        format!("Bearer {POOL_KEY}")
    );

    expect_own_key_alone_refused(&gw).await;
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byok_required_refuses_requests_without_a_provider_key() {
    let (mock, gw, key) = byok_gateway("required").await;
    let resp = chat(&gw, &key).await;
    expect_error(resp, 400, "invalid_request_error", "upstream_key_required").await;
    assert_eq!(mock.request_count(), 0);

    assert_upstream_key(&echo_with_own_key(&gw, &key).await, OWN_KEY);

    // A provider key does not replace the gateway key.
    expect_own_key_alone_refused(&gw).await;
    assert_eq!(mock.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Local routes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_needs_no_key_and_reveals_no_backend() {
    let [m1, m2] = start_mocks().await;
    let backends = [m1.url(), format!("{}/v1", m2.url())];
    let gw = start_openai_pool(&backends, &["sk-provider-secret-0001"], "").await;

    let resp = send(gw.http.get(gw.url("/status"))).await;
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert!(body["version"].is_string(), "{body}");
    assert!(body["uptime_s"].is_u64(), "{body}");
    assert_eq!(body["upstreams"]["openai"]["backends"], 2, "{body}");
    assert_eq!(body["upstreams"]["openai"]["healthy"], 2, "{body}");
    assert!(header_str(&headers, "x-tollgate-request-id").is_some());
    let text = body.to_string();
    for secret in [
        m1.url(),
        m2.url(),
        m1.addr().port().to_string(),
        m2.addr().port().to_string(),
        "127.0.0.1".to_string(),
        "sk-provider-secret-0001".to_string(),
    ] {
        assert!(!text.contains(&secret), "/status reveals {secret}: {text}");
    }
    assert_eq!(m1.request_count() + m2.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_describes_the_calling_key() {
    let (mock, gw, _, _) = start_with_alice().await;
    let (id, key) = gw
        .create_key(
            "alice",
            json!({
                "label": "laptop",
                "expires_in_s": 86400,
                "models": ["gpt-4o-mini"],
                "limits": {"requests_per_minute": 10}
            }),
        )
        .await;

    let body = read_ok(send(gw.get("/account", &key)).await).await;
    assert_eq!(body["key_id"], id.as_str(), "{body}");
    assert_eq!(body["user"], "alice", "{body}");
    assert_eq!(body["label"], "laptop", "{body}");
    for field in ["created_at", "expires_at"] {
        let ts = body[field].as_str().unwrap_or_default();
        assert!(
            ts.len() >= 20 && ts.contains('T') && ts.ends_with('Z'),
            "{field} is not RFC 3339 UTC: {body}"
        );
    }
    assert_eq!(body["models"], json!(["gpt-4o-mini"]), "{body}");
    assert_eq!(body["limits"]["requests_per_minute"], 10, "{body}");
    assert!(body["remaining"].is_object(), "{body}");
    let text = body.to_string();
    assert!(!text.contains(&key), "/account shows the secret: {text}");

    expect_invalid_api_key(send(gw.http.get(gw.url("/account"))).await).await;
    assert_eq!(mock.request_count(), 0, "/account is answered locally");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_rotate_key_replaces_the_secret_at_once() {
    let (mock, gw, id, old) = start_with_alice().await;
    assert_eq!(chat_status(&gw, &old).await, 200);

    let body = read_ok(send(gw.post("/account/rotate-key", &old)).await).await;
    assert_eq!(body["key_id"], id.as_str(), "{body}");
    let new = body["key"].as_str().expect("key").to_string();
    assert_key_format(&new);
    assert_ne!(new, old);

    expect_invalid_api_key(chat(&gw, &old).await).await;
    assert_eq!(chat_status(&gw, &new).await, 200);
    let body = read_ok(send(gw.get("/account", &new)).await).await;
    assert_eq!(body["key_id"], id.as_str());
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_models_are_answered_locally_and_filtered() {
    let (mock, gw) = start_with_mock("models:\n  - {id: a, owned_by: x}\n  - {id: b}\n").await;
    let (_, all) = new_user(&gw, "alice").await;
    let (_, only_a) = gw.create_key("alice", json!({"models": ["a"]})).await;

    let body = read_ok(send(gw.get("/v1/models", &all)).await).await;
    assert_eq!(body["object"], "list", "{body}");
    assert_eq!(model_ids(&body), ["a", "b"], "{body}");
    assert_eq!(body["data"][0]["owned_by"], "x", "{body}");
    assert_eq!(body["data"][0]["object"], "model", "{body}");

    let body = read_ok(send(gw.get("/v1/models", &only_a)).await).await;
    assert_eq!(model_ids(&body), ["a"], "{body}");

    expect_invalid_api_key(send(gw.http.get(gw.url("/v1/models"))).await).await;
    assert_eq!(mock.request_count(), 0, "GET /v1/models went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_proxied_when_not_configured() {
    let (mock, gw, _, key) = start_with_alice().await;
    let body = read_ok(send(gw.get("/v1/models", &key)).await).await;
    assert!(model_ids(&body).contains(&"gpt-4o-mini"), "{body}");
    assert!(mock.wait_for_requests(1, WAIT).await);
    assert_eq!(mock.last_request().unwrap().path, "/v1/models");
}

// ---------------------------------------------------------------------------------------------
// 5. Routing and base paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pick_the_upstream_by_prefix() {
    let [openai, images] = start_mocks().await;
    let ups = format!(
        "upstreams:\n{}{}routes:\n  - {{prefix: /v1/images, upstream: images}}\n  - {{prefix: /v1, upstream: openai}}\n",
        upstreams_yaml("openai", &[openai.url()], &["sk-openai-key"], ""),
        upstreams_yaml("images", &[images.url()], &["sk-images-key"], ""),
    );
    let gw = TestGateway::start(GatewayConfig::new(&openai.url()).upstreams(&ups)).await;
    let (_, key) = new_user(&gw, "alice").await;

    let resp = send(
        gw.post("/v1/images/generations", &key)
            .json(&json!({"prompt": "a lighthouse", "model": "gpt-image-1"})),
    )
    .await;
    let body = read_ok(resp).await;
    assert!(body["data"][0]["b64_json"].is_string(), "{body}");
    assert!(images.wait_for_requests(1, WAIT).await);
    let seen = images.last_request().unwrap();
    assert_eq!(seen.path, "/v1/images/generations");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-images-key"));

    assert_eq!(chat_status(&gw, &key).await, 200);
    assert!(openai.wait_for_requests(1, WAIT).await);
    let seen = openai.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-openai-key"));

    let resp = send(gw.get("/other", &key)).await;
    expect_error(resp, 404, "invalid_request_error", "not_found").await;
    assert_eq!(openai.request_count(), 1);
    assert_eq!(images.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_base_paths_follow_the_v1_rule() {
    let [with_v1, bare, prefixed] = start_mocks().await;
    let backends = [
        format!("{}/v1", with_v1.url()),
        bare.url(),
        format!("{}/proxy/v1", prefixed.url()),
    ];
    let gw = start_openai_pool(&backends, &[POOL_KEY], "").await;
    let (_, key) = new_user(&gw, "alice").await;

    let mocks = [&with_v1, &bare, &prefixed];
    let gw_ref = &gw;
    let key_ref = key.as_str();
    let all_reached = eventually(WAIT, || async move {
        assert_eq!(chat_status(gw_ref, key_ref).await, 200);
        mocks.iter().all(|m| m.request_count() > 0)
    })
    .await;
    assert!(all_reached, "round-robin never reached every backend");
    for (mock, expected) in [
        (&with_v1, "/v1/chat/completions"),
        (&bare, "/v1/chat/completions"),
        (&prefixed, "/proxy/v1/chat/completions"),
    ] {
        for seen in mock.requests() {
            assert_eq!(seen.path, expected, "backend {}", mock.url());
        }
    }
    // The query string follows the path.
    let (_, seen) = echo(gw.get("/v1/echo?a=1&b=two", &key)).await;
    assert_eq!(seen["query"], "a=1&b=two", "{seen}");
}

// ---------------------------------------------------------------------------------------------
// 6. Upstream request rewrite

/// Asserts the upstream got the pool key and the mock's own address as `Host`.
fn assert_pool_credentials_and_host(seen: &Value, mock: &MockUpstream) {
    let h = &seen["headers"];
    assert_eq!(h["authorization"], format!("Bearer {POOL_KEY}"), "{seen}");
    assert_eq!(
        h["host"],
        format!("127.0.0.1:{}", mock.addr().port()),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_request_carries_pool_credentials_host_and_request_id() {
    let (mock, gw, _, key) = start_with_alice().await;

    let (headers, seen) = echo(
        gw.get("/v1/echo?x=1", &key)
            .header("x-upstream-key", OWN_KEY)
            .header("x-custom-header", "kept")
            .header("openai-organization", "org-123"),
    )
    .await;
    let h = &seen["headers"];
    assert_pool_credentials_and_host(&seen, &mock);
    assert!(h.get("x-upstream-key").is_none(), "{seen}");
    assert!(h.get("x-host-final").is_none(), "{seen}");
    assert_eq!(h["x-custom-header"], "kept", "{seen}");
    assert_eq!(h["openai-organization"], "org-123", "{seen}");
    assert_eq!(seen["path"], "/v1/echo", "{seen}");
    assert_eq!(seen["query"], "x=1", "{seen}");
    let sent = h["x-tollgate-request-id"]
        .as_str()
        .expect("request id upstream");
    assert!(!sent.is_empty());
    assert_eq!(header_str(&headers, "x-tollgate-request-id"), Some(sent));
    let text = seen.to_string();
    assert!(
        !text.contains(&key),
        "the gateway key went upstream: {text}"
    );

    // Every request gets its own id.
    let (headers2, seen2) = echo(gw.get("/v1/echo", &key)).await;
    let sent2 = seen2["headers"]["x-tollgate-request-id"].as_str().unwrap();
    assert_ne!(sent, sent2);
    assert_eq!(header_str(&headers2, "x-tollgate-request-id"), Some(sent2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (mock, gw, _, key) = start_with_alice().await;

    let request = format!(
        "GET /v1/echo HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer {key}\r\n\
         Connection: close, x-private-hop\r\nX-Private-Hop: secret-hop\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-End-To-End: kept\r\n\r\n"
    );
    let addr = gw.addr();
    let raw = tokio::task::spawn_blocking(move || common::raw_request(addr, request.as_bytes()))
        .await
        .unwrap();
    let (status, headers, body) = parse_raw(&raw);
    assert_eq!(status, 200, "{raw}");
    let seen: Value = serde_json::from_str(&body).expect("echo JSON");
    let h = &seen["headers"];
    for gone in ["x-private-hop", "keep-alive", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded: {seen}");
    }
    if let Some(conn) = h.get("connection").and_then(Value::as_str) {
        assert!(
            !conn.to_ascii_lowercase().contains("x-private-hop"),
            "the client's Connection header was forwarded: {seen}"
        );
    }
    assert_eq!(h["x-end-to-end"], "kept", "{seen}");
    assert_pool_credentials_and_host(&seen, &mock);
    let rid = headers
        .iter()
        .find(|(k, _)| k == "x-tollgate-request-id")
        .map(|(_, v)| v.as_str());
    assert_eq!(rid, h["x-tollgate-request-id"].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_keys_rotate_round_robin() {
    let mock = MockUpstream::start().await;
    let gw = start_openai_pool(&[mock.url()], &["sk-pool-k1", "sk-pool-k2"], "").await;
    let (_, key) = new_user(&gw, "alice").await;

    let mut seen = Vec::new();
    for _ in 0..6 {
        let (_, echo) = echo(gw.get("/v1/echo", &key)).await;
        seen.push(
            echo["headers"]["authorization"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "keys do not alternate: {seen:?}");
    }
    for auth in &seen {
        assert!(
            auth == "Bearer sk-pool-k1" || auth == "Bearer sk-pool-k2",
            "{seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_rotate_round_robin() {
    let [a, b] = start_mocks().await;
    let gw = start_openai_pool(&[a.url(), b.url()], &[POOL_KEY], "").await;
    let (_, key) = new_user(&gw, "alice").await;

    let mut order = Vec::new();
    for i in 1..=6 {
        let before_a = a.request_count();
        assert_eq!(chat_status(&gw, &key).await, 200);
        assert!(
            wait_until(WAIT, || a.request_count() + b.request_count() >= i).await,
            "request {i} was not recorded"
        );
        order.push(if a.request_count() > before_a {
            'a'
        } else {
            'b'
        });
    }
    assert_eq!(a.request_count(), 3, "{order:?}");
    assert_eq!(b.request_count(), 3, "{order:?}");
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "backends do not alternate: {order:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. X-Host-Final

/// A chat completion with `key` whose `X-Host-Final` is `host`.
async fn chat_via_host(gw: &TestGateway, key: &str, host: &str) -> reqwest::Response {
    send(gw.chat_request(key).header("x-host-final", host)).await
}

/// `expect_error` for the 403 of an `X-Host-Final` host that is not listed.
async fn expect_host_not_allowed(resp: reqwest::Response) {
    expect_error(resp, 403, "permission_error", "host_not_allowed").await;
}

/// A gateway in front of the mock `default`, with more config YAML, and the user `alice`'s key.
async fn start_with_hosts(default: &MockUpstream, extra: &str) -> (TestGateway, String) {
    let gw = TestGateway::start(GatewayConfig::new(&default.url()).extra(extra)).await;
    let (_, key) = new_user(&gw, "alice").await;
    (gw, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_host_final_goes_to_the_configured_origin_with_its_keys() {
    let [default, host_mock] = start_mocks().await;
    let port = host_mock.addr().port();
    let hosts_yaml = format!(
        "hosts:\n  \"myhost.test:{port}\": {{origin: \"http://127.0.0.1:{port}\", keys: [sk-host-config-secret]}}\n"
    );
    let (gw, key) = start_with_hosts(&default, &hosts_yaml).await;

    // Host names are case-insensitive.
    let (_, seen) = echo(
        gw.get("/v1/echo?q=1", &key)
            .header("x-host-final", format!("MyHost.Test:{port}")),
    )
    .await;
    let h = &seen["headers"];
    assert_eq!(h["authorization"], "Bearer sk-host-config-secret", "{seen}");
    assert_eq!(h["host"], format!("127.0.0.1:{port}"), "{seen}");
    assert!(h.get("x-host-final").is_none(), "{seen}");
    assert_eq!(seen["path"], "/v1/echo", "{seen}");
    assert_eq!(seen["query"], "q=1", "{seen}");
    assert_eq!(host_mock.request_count(), 1);
    assert_eq!(default.request_count(), 0, "the default pool was used");

    let resp = chat_via_host(&gw, &key, &format!("myhost.test:{port}")).await;
    assert_eq!(resp.status(), 200);
    assert!(host_mock.wait_for_requests(2, WAIT).await);
    assert_eq!(
        host_mock.last_request().unwrap().path,
        "/v1/chat/completions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_host_final_refuses_unlisted_hosts_without_connecting() {
    let [default, listed, unlisted] = start_mocks().await;
    let lport = listed.addr().port();
    let hosts_yaml = format!(
        "hosts:\n  \"listed.test:{lport}\": {{origin: \"http://127.0.0.1:{lport}\", keys: [hk]}}\n"
    );
    let (gw, key) = start_with_hosts(&default, &hosts_yaml).await;

    for value in [
        format!("127.0.0.1:{}", unlisted.addr().port()),
        format!("localhost:{}", unlisted.addr().port()),
        "evil.example".to_string(),
        format!("listed.test:{lport}/path"),
        format!("listed.test:{}", lport.wrapping_add(1)),
    ] {
        expect_host_not_allowed(chat_via_host(&gw, &key, &value).await).await;
    }
    assert_eq!(unlisted.request_count(), 0);
    assert_eq!(unlisted.open_connections(), 0, "a connection was made");
    assert_eq!(listed.request_count(), 0);
    assert_eq!(listed.open_connections(), 0);
    assert_eq!(default.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_added_through_the_admin_api_work_at_once_and_persist() {
    let [default, host_mock] = start_mocks().await;
    let port = host_mock.addr().port();
    let hosts_yaml = "hosts:\n  configured.test: {origin: \"http://127.0.0.1:9\", keys: [sk-configured-host-secret]}\n";
    let (mut gw, key) = start_with_hosts(&default, hosts_yaml).await;
    let host = format!("added.test:{port}");
    let host_key = "sk-added-host-secret-0123456789";
    let call = |gw: &TestGateway| {
        gw.get("/v1/echo", &key)
            .header("x-host-final", host.as_str())
    };
    let expect_host_key_used = |seen: &Value| {
        assert_eq!(
            seen["headers"]["authorization"],
            format!("Bearer {host_key}")
        );
    };

    expect_host_not_allowed(send(call(&gw)).await).await;

    let (status, body) = gw
        .admin(
            "PUT",
            &format!("/admin/hosts/{host}"),
            Some(json!({"keys": [host_key], "origin": format!("http://127.0.0.1:{port}")})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    assert!(
        !body.to_string().contains(host_key),
        "PUT echoes the key: {body}"
    );

    let (_, seen) = echo(call(&gw)).await;
    expect_host_key_used(&seen);
    assert_eq!(seen["headers"]["host"], format!("127.0.0.1:{port}"));
    assert_eq!(host_mock.request_count(), 1);

    let list = gw.admin_expect(200, "GET", "/admin/hosts", None).await;
    let text = list.to_string();
    for secret in [host_key, "sk-configured-host-secret"] {
        assert!(
            !text.contains(secret),
            "a host key is listed in full: {text}"
        );
    }
    let hosts = list["data"].as_array().expect("data");
    let added = hosts
        .iter()
        .find(|h| h["host"] == host.as_str())
        .unwrap_or_else(|| panic!("{host} not listed: {list}"));
    assert_eq!(
        added["origin"],
        format!("http://127.0.0.1:{port}"),
        "{list}"
    );
    assert_eq!(added["keys"].as_array().map(Vec::len), Some(1), "{list}");
    assert!(
        hosts.iter().any(|h| h["host"] == "configured.test"),
        "configured hosts are listed too: {list}"
    );

    // A restart keeps it.
    gw.stop();
    gw.spawn().await;
    let (_, seen) = echo(call(&gw)).await;
    expect_host_key_used(&seen);
    assert_eq!(host_mock.request_count(), 2);

    gw.admin_expect(204, "DELETE", &format!("/admin/hosts/{host}"), None)
        .await;
    expect_host_not_allowed(send(call(&gw)).await).await;
    assert_eq!(host_mock.request_count(), 2);
    assert_eq!(default.request_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Failover, timeouts and health checks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_fail_over_and_the_dead_backend_is_skipped() {
    let live = MockUpstream::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = start_openai_pool(&[dead, live.url()], &[POOL_KEY], "").await;
    let (_, key) = new_user(&gw, "alice").await;

    for i in 0..10 {
        let (status, _, body) = read(chat(&gw, &key).await).await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body["object"], "chat.completion", "request {i}: {body}");
    }
    assert_eq!(live.request_count(), 10);
    let metrics = gw.metrics().await;
    let connect_errors = metric_value(
        &metrics,
        "tollgate_upstream_errors_total",
        &["kind=\"connect\"", "upstream=\"openai\""],
    );
    assert!(
        connect_errors >= 1.0,
        "the dead backend was never tried: {connect_errors}"
    );
    assert!(
        connect_errors < 10.0,
        "the dead backend is never skipped: {connect_errors} connect errors"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_is_502_upstream_unavailable() {
    let backends = [
        format!("http://127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", free_port()),
    ];
    let mut gw = start_openai_pool(&backends, &[POOL_KEY], "").await;
    gw.http = fresh_client();
    let (_, key) = new_user(&gw, "alice").await;

    let unavailable =
        |resp: reqwest::Response| expect_error(resp, 502, "upstream_error", "upstream_unavailable");
    for _ in 0..2 {
        unavailable(chat(&gw, &key).await).await;
    }
    // The error body names no backend.
    let body = unavailable(send(gw.get("/v1/models", &key)).await).await;
    for b in &backends {
        assert!(!body.to_string().contains(b.as_str()), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_504_upstream_timeout() {
    let mock = MockUpstream::start().await;
    mock.set_mode(Mode::Hang);
    let ups = format!(
        "upstreams:\n  openai:\n    backends: [\"{}\"]\n    keys: [{POOL_KEY}]\n    connect_timeout_ms: 1000\n    read_timeout_ms: 500\n",
        mock.url()
    );
    let gw = TestGateway::start(GatewayConfig::new(&mock.url()).upstreams(&ups)).await;
    let (_, key) = new_user(&gw, "alice").await;

    expect_chat_error(&gw, &key, 504, "upstream_error", "upstream_timeout").await;
    assert!(mock.wait_for_requests(1, WAIT).await, "never sent upstream");
    assert!(
        mock.wait_for_open_connections(0, WAIT).await,
        "the gateway kept the timed-out upstream connection open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_takes_a_failing_backend_out_and_back() {
    let mock = MockUpstream::start().await;
    mock.set_mode(Mode::Status(
        503,
        json!({"error": {"message": "down", "type": "server_error", "param": null, "code": null}})
            .to_string(),
    ));
    let health_check = "    health_check: {path: /v1/models, interval_s: 1}\n";
    let gw = start_openai_pool(&[mock.url()], &[POOL_KEY], health_check).await;
    let gw_ref = &gw;
    let healthy = move || async move {
        let body = read_ok(send(gw_ref.http.get(gw_ref.url("/status"))).await).await;
        assert_eq!(body["upstreams"]["openai"]["backends"], 1, "{body}");
        body["upstreams"]["openai"]["healthy"].as_u64()
    };

    assert!(
        eventually(WAIT, || async move { healthy().await == Some(0) }).await,
        "a backend answering 503 stays healthy"
    );
    assert!(
        mock.request_count() > 0,
        "no health probe reached the backend"
    );
    let probe = mock.last_request().unwrap();
    assert_eq!(probe.method, "GET");
    assert_eq!(probe.path, "/v1/models");

    mock.set_mode(Mode::Normal);
    assert!(
        eventually(WAIT, || async move { healthy().await == Some(1) }).await,
        "the backend did not come back after recovering"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Access log

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request_and_no_secrets() {
    let (_mock, gw, _, key) = start_with_alice().await;
    let unknown = format!("sk-tg-{}", "Z".repeat(40));
    let byok = "sk-caller-byok-secret-42";

    let mut expected: Vec<(String, u16, &str)> = Vec::new();
    let mut record = |resp: &reqwest::Response, path: &'static str| {
        let rid = header_str(resp.headers(), "x-tollgate-request-id")
            .expect("request id")
            .to_string();
        expected.push((rid, resp.status().as_u16(), path));
    };

    let resp = chat(&gw, &key).await;
    record(&resp, "/v1/chat/completions");
    let resp = chat(&gw, &unknown).await;
    record(&resp, "/v1/chat/completions");
    let resp = send(
        gw.get("/v1/echo", &key)
            .query(&[("api_key", "sk-in-query-secret")])
            .header("x-upstream-key", byok),
    )
    .await;
    record(&resp, "/v1/echo");
    let resp = send(gw.get("/other", &key)).await;
    record(&resp, "/other");
    let resp = send(gw.get("/account", &key)).await;
    record(&resp, "/account");
    assert_eq!(
        expected.iter().map(|e| e.1).collect::<Vec<_>>(),
        [200, 401, 200, 404, 200]
    );

    let logged = wait_until(WAIT, || {
        let out = gw.stdout();
        expected
            .iter()
            .all(|(rid, _, _)| out.contains(rid.as_str()))
    })
    .await;
    let out = gw.stdout();
    assert!(logged, "not every request was logged:\n{out}");

    let lines: Vec<Value> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for (rid, status, path) in &expected {
        let matching: Vec<&Value> = lines
            .iter()
            .filter(|l| l["request_id"] == rid.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "one line for {rid}:\n{out}");
        assert_eq!(matching[0]["status"], *status, "{}", matching[0]);
        assert_eq!(matching[0]["path"], *path, "{}", matching[0]);
    }

    let logs = format!("{out}\n{}", gw.stderr());
    for secret in [
        key.as_str(),
        unknown.as_str(),
        POOL_KEY,
        ADMIN_TOKEN,
        byok,
        "sk-in-query-secret",
    ] {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Connection handling after gateway errors

/// Reads what arrives next on `stream` into `buf`; `None` when the gateway closed or reset the
/// connection. Fails the test with `what` when nothing comes.
async fn read_more(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    what: &str,
) -> Option<()> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(NO_HANG, stream.read(&mut chunk))
        .await
        .expect(what)
        .ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

/// One HTTP/1.1 exchange on an open connection: the status and `Connection` header of the
/// answer, or `None` when the gateway closed or reset the connection instead of answering.
async fn exchange(stream: &mut tokio::net::TcpStream, request: &[u8]) -> Option<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    stream.write_all(request).await.ok()?;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, &mut buf, "the gateway neither answered nor closed").await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let (status, headers, _) = parse_raw(&head);
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let length: usize = find("content-length")
        .and_then(|v| v.parse().ok())
        .expect("gateway answers here carry a Content-Length");
    while buf.len() < head_end + length {
        read_more(stream, &mut buf, "the body never ended").await?;
    }
    Some((status, find("connection").unwrap_or_default()))
}

/// Every client library keeps connections alive and reuses them. An error answer that leaves
/// the connection open (no `Connection: close`) must keep serving it; one that is going to
/// close it must say so, or the client's next request on that connection fails with a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_responses_leave_the_connection_usable() {
    let [mock, silent] = start_mocks().await;
    silent.set_mode(Mode::Hang);
    let dead = free_port();
    let ups = format!(
        "upstreams:\n{}  slow:\n    backends: [\"{}\"]\n    keys: [{POOL_KEY}]\n    read_timeout_ms: 500\n\
         routes:\n  - {{prefix: /v1/slow, upstream: slow}}\n  - {{prefix: /v1, upstream: openai}}\n",
        upstreams_yaml("openai", &[mock.url()], &[POOL_KEY], ""),
        silent.url(),
    );
    let gw = TestGateway::start(
        GatewayConfig::new(&mock.url())
            .upstreams(&ups)
            .extra(&format!(
                "hosts:\n  dead.test: {{origin: \"http://127.0.0.1:{dead}\", keys: [hk]}}\n"
            )),
    )
    .await;
    new_user(&gw, "alice").await;
    let (_, key) = gw
        .create_key("alice", json!({"models": ["gpt-4o-mini"]}))
        .await;
    let unknown = format!("sk-tg-{}", "Q".repeat(40));
    let post_to = |path: &str, key: &str, body: &str, extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let post =
        |key: &str, body: &str, extra: &str| post_to("/v1/chat/completions", key, body, extra);
    let mini = chat_body("gpt-4o-mini").to_string();
    let allowed = post(&key, &mini, "");
    let cases = [
        ("unknown key", post(&unknown, &mini, ""), 401),
        (
            "model not allowed",
            post(&key, &chat_body("gpt-4o").to_string(), ""),
            403,
        ),
        ("malformed JSON", post(&key, "{\"model\": ", ""), 400),
        (
            "upstream unavailable",
            post(&key, &mini, "X-Host-Final: dead.test\r\n"),
            502,
        ),
        (
            "upstream timeout",
            post_to("/v1/slow/chat/completions", &key, &mini, ""),
            504,
        ),
    ];
    let mut broken = Vec::new();
    for (what, request, status) in cases {
        let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let (got, connection) = exchange(&mut stream, &request)
            .await
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(got, status, "{what}");
        if connection.eq_ignore_ascii_case("close") {
            continue;
        }
        match exchange(&mut stream, &allowed).await {
            Some((200, _)) => {}
            other => broken.push(format!(
                "{what}: answered {status} with `Connection: {connection}`, then the next \
                 request on the connection got {other:?}"
            )),
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
