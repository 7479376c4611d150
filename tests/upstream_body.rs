//! How a request body the gateway must see reaches the upstream (src/gateway/body.rs): small
//! bodies of declared length are read during admission and sent with their exact
//! `Content-Length` (also after `include_usage` grew them); large ones and those whose client
//! waits for `100 Continue` stream through as before; a refused model never reaches upstream.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{fresh_client, new_user, start_with_mock};

async fn post(url: &str, key: &str, body: &str) -> (u16, String) {
    let resp = fresh_client()
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn small_bodies_go_upstream_with_their_exact_length() {
    let (mock, gw) = start_with_mock("").await;
    let (_, key) = new_user(&gw, "len").await;

    // A stream: the gateway adds `stream_options.include_usage`, so the length changes.
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "count"}]})
    .to_string();
    let (status, text) = post(&gw.url("/v1/chat/completions"), &key, &body).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("data: [DONE]"), "{text}");
    let upstream = mock.last_request().expect("the mock got the request");
    let sent: Value = upstream.json().expect("JSON upstream");
    assert_eq!(
        sent["stream_options"]["include_usage"],
        json!(true),
        "{sent}"
    );
    assert!(upstream.body.len() > body.len());
    assert_eq!(
        upstream.header("content-length"),
        Some(upstream.body.len().to_string().as_str()),
        "headers: {:?}",
        upstream.headers
    );
    assert_eq!(upstream.header("transfer-encoding"), None);

    // Not a stream: the body goes unchanged, with the client's length.
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let (status, text) = post(&gw.url("/v1/chat/completions"), &key, &body).await;
    assert_eq!(status, 200, "{text}");
    let upstream = mock.last_request().expect("the mock got the request");
    assert_eq!(upstream.body, body.as_bytes());
    assert_eq!(
        upstream.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn bodies_past_the_early_read_limit_stream_through_whole() {
    let (mock, gw) = start_with_mock("").await;
    let (_, key) = new_user(&gw, "big").await;
    let content = "0123456789abcdef".repeat(12 * 1024); // 192 KiB of content
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": content}]})
    .to_string();
    let (status, text) = post(&gw.url("/v1/chat/completions"), &key, &body).await;
    assert_eq!(status, 200, "{text}");
    let upstream = mock.last_request().expect("the mock got the request");
    let mut sent: Value = upstream.json().expect("JSON upstream");
    assert_eq!(sent["stream_options"]["include_usage"], json!(true));
    sent.as_object_mut().unwrap().remove("stream_options");
    assert_eq!(sent, serde_json::from_str::<Value>(&body).unwrap());
}

/// A client that sends `Expect: 100-continue` waits for the interim answer before its body:
/// the gateway must not wait for that body first.
#[tokio::test]
async fn a_client_waiting_for_100_continue_is_not_kept_waiting() {
    let (mock, gw) = start_with_mock("").await;
    let (_, key) = new_user(&gw, "expect").await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let addr = gw.url("").trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();

    let mut seen = Vec::new();
    let interim = read_until(&mut sock, &mut seen, "100 Continue").await;
    assert!(
        interim,
        "no 100 Continue; got {:?}",
        String::from_utf8_lossy(&seen)
    );

    sock.write_all(body.as_bytes()).await.unwrap();
    let done = read_until(&mut sock, &mut seen, "Hello from mock").await;
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(done, "no answer after the body: {text}");
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    assert_eq!(
        mock.last_request().expect("upstream request").body,
        body.as_bytes()
    );
}

/// Reads into `seen` until it holds `needle` (true), or 10 s pass or the socket closes (false).
async fn read_until(sock: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, needle: &str) -> bool {
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(seen).contains(needle) {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    found.unwrap_or(false)
}

#[tokio::test]
async fn a_refused_model_never_reaches_the_upstream() {
    let (mock, gw) = start_with_mock("").await;
    new_user(&gw, "picky").await;
    let created = gw
        .admin_expect(
            201,
            "POST",
            "/admin/users/picky/keys",
            Some(json!({"models": ["gpt-4o-mini"]})),
        )
        .await;
    let key = created["key"].as_str().expect("key").to_string();
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let (status, text) = post(&gw.url("/v1/chat/completions"), &key, &body).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("model_not_allowed"), "{text}");
    assert_eq!(mock.request_count(), 0, "the refused request went upstream");
}
