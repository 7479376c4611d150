//! TLS towards upstreams (SPEC §2 `ca_file`, §3.2 origins with TLS and SNI): gateway A proxies
//! over TLS to gateway B's TLS listener, whose certificate is signed by a test CA that A trusts
//! only through `ca_file`; B proxies to the mock. Without the CA, A must refuse B.

mod common;

use common::mock::MockUpstream;
use common::{GatewayConfig, TestGateway};
use serde_json::json;

/// Gateway B with a TLS listener in front of a mock; returns (mock, B, B's TLS port, a key of
/// B, the path of the CA that signed B's certificate).
async fn tls_gateway() -> (MockUpstream, TestGateway, u16, String, String) {
    let mock = MockUpstream::start().await;
    let mut b = TestGateway::start(GatewayConfig::new(&mock.url())).await;
    let (ca, cert, key) = common::ca_signed_cert(&b.dir);
    let tls_port = b.add_tls_listener(&cert, &key).await;
    let b_key = b.create_user("a-gateway").await;
    (mock, b, tls_port, b_key, ca)
}

fn chat() -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "over TLS"}]})
}

/// Gateway A started with `config`, and its answer to one chat completion by one of its users
/// (with `x-host-final: HOST` when `host_final` is given).
async fn chat_through_a(
    config: GatewayConfig,
    host_final: Option<String>,
) -> (TestGateway, reqwest::Response) {
    let a = TestGateway::start(config).await;
    let a_key = a.create_user("alice").await;
    let mut request = a.post("/v1/chat/completions", &a_key);
    if let Some(host) = host_final {
        request = request.header("x-host-final", host);
    }
    let resp = request.json(&chat()).send().await.unwrap();
    (a, resp)
}

/// Asserts that A served `resp` with 200 (showing the body and A's stderr otherwise).
async fn assert_served(resp: reqwest::Response, a: &TestGateway) -> reqwest::Response {
    let status = resp.status();
    assert_eq!(
        status,
        200,
        "{}\n{}",
        resp.text().await.unwrap(),
        a.stderr()
    );
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_pool_reaches_a_tls_backend_trusted_through_ca_file() {
    let (mock, _b, tls_port, b_key, ca) = tls_gateway().await;
    let upstreams = format!(
        "upstreams:\n  openai:\n    backends: [\"https://localhost:{tls_port}/v1\"]\n    keys: [{b_key}]\n    ca_file: '{ca}'\n"
    );
    let (a, resp) = chat_through_a(
        GatewayConfig::new("http://unused").upstreams(&upstreams),
        None,
    )
    .await;
    let resp = assert_served(resp, &a).await;
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from mock");

    // B authenticated A with the key A injected, and sent its own pool key on.
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-upstream-test")
    );
    assert_eq!(
        seen.header("host"),
        Some(mock.url().trim_start_matches("http://"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_with_502() {
    let (mock, _b, tls_port, b_key, _ca) = tls_gateway().await;
    let upstreams = format!(
        "upstreams:\n  openai:\n    backends: [\"https://localhost:{tls_port}\"]\n    keys: [{b_key}]\n    connect_timeout_ms: 2000\n"
    );
    let (_a, resp) = chat_through_a(
        GatewayConfig::new("http://unused").upstreams(&upstreams),
        None,
    )
    .await;
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_error");
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(
        mock.request_count(),
        0,
        "nothing may pass an unverified TLS peer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_host_final_reaches_a_tls_origin_with_its_sni_and_keys() {
    let (mock, _b, tls_port, b_key, ca) = tls_gateway().await;
    // No origin: it defaults to https://HOST[:PORT], so TLS with SNI `localhost`.
    let hosts =
        format!("hosts:\n  \"localhost:{tls_port}\": {{ keys: [{b_key}], ca_file: '{ca}' }}\n");
    let (a, resp) = chat_through_a(
        GatewayConfig::new("http://127.0.0.1:9").extra(&hosts),
        Some(format!("LOCALHOST:{tls_port}")),
    )
    .await;
    assert_served(resp, &a).await;
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.last_request().unwrap().header("x-host-final"), None);
}
