//! Tests of the mock OpenAI upstream itself (tests/common/mock.rs), so the
//! gateway tests built on it can trust what it does.

#[path = "common/mock.rs"]
mod mock;

// What `hosting` and `oauth` serve with; next to them here as in tests/common.
#[path = "common/serve.rs"]
mod serve;

// Uses `super::mock` and `super::serve`, so it sits next to them here as in tests/common.
#[path = "common/hosting.rs"]
mod hosting;

// Uses `super::mock` and `super::serve` too.
#[path = "common/oauth.rs"]
mod oauth;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mock::{MockUpstream, Mode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Split a whole SSE body into events (without the trailing blank line).
fn split_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// The JSON of a `data:` event; None for `[DONE]`.
fn data_json(event: &str) -> Option<Value> {
    let data = event.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str(data).ok()
}

async fn post_json(
    mock: &MockUpstream,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(format!("{}{path}", mock.url())).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn chat_completion_json() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "abcd"},
        {"role": "user", "content": [{"type": "text", "text": "efghi"}]}
    ]});
    let resp = post_json(&mock, "/v1/chat/completions", body.clone(), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_mock_"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // 9 bytes of content -> ceil(9 / 4) = 3 prompt tokens.
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 6);

    // Recorded as received.
    assert_eq!(mock.request_count(), 1);
    let rec = &mock.requests()[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/v1/chat/completions");
    assert_eq!(rec.header("Content-Type"), Some("application/json"));
    assert_eq!(rec.json().unwrap(), body);

    // Path prefix, default model, x-mock-chunks.
    let resp = post_json(
        &mock,
        "/base/v1/chat/completions?x=1",
        json!({"messages": []}),
        &[("x-mock-chunks", "5")],
    )
    .await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert_eq!(v["usage"]["prompt_tokens"], 1);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(mock.requests()[1].path, "/base/v1/chat/completions?x=1");
}

#[tokio::test]
async fn invalid_json_and_unknown_url() {
    let mock = MockUpstream::start().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let resp = client()
        .get(format!("{}/v2/nothing", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "unknown_url");
    assert_eq!(v["error"]["param"], Value::Null);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v2/nothing"));
}

#[tokio::test]
async fn chat_stream_shape_and_usage_only_when_asked() {
    let mock = MockUpstream::start().await;
    let req =
        json!({"model": "m1", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = post_json(
        &mock,
        "/v1/chat/completions",
        req,
        &[("x-mock-delay-ms", "0")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(resp.headers().get("content-length").is_none());
    let events = split_events(&resp.text().await.unwrap());
    // role + 3 pieces + finish + [DONE]
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events.iter().filter_map(|e| data_json(e)).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "m1");
        assert!(c.get("usage").is_none(), "no usage unless asked: {c}");
    }

    let req = json!({"stream": true, "stream_options": {"include_usage": true},
                     "messages": [{"role": "user", "content": "hello world!"}]});
    let resp = post_json(
        &mock,
        "/v1/chat/completions",
        req,
        &[("x-mock-chunks", "2")],
    )
    .await;
    let events = split_events(&resp.text().await.unwrap());
    // role + 2 pieces + finish + usage + [DONE]
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events.iter().filter_map(|e| data_json(e)).collect();
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                   "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
    );
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c["usage"], Value::Null);
        assert!(c.get("usage").is_some());
    }
}

// Multi-threaded: the producer task and the connection race for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sse_arrives_incrementally() {
    let mock = MockUpstream::start().await;
    let req = json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = post_json(
        &mock,
        "/v1/chat/completions",
        req,
        &[("x-mock-delay-ms", "150"), ("x-mock-chunks", "3")],
    )
    .await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = Instant::now();
    let first = String::from_utf8(first.to_vec()).unwrap();
    // The first HTTP chunk is exactly the role event, not the whole stream.
    assert_eq!(split_events(&first).len(), 1, "{first:?}");
    assert!(first.contains("\"role\":\"assistant\""));

    let mut rest = String::new();
    let mut reads = 0;
    while let Some(chunk) = body.next().await {
        rest.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        reads += 1;
    }
    // 5 more events, 150 ms apart: the tail arrived well after the head,
    // and in several pieces.
    assert!(first_at.elapsed() >= Duration::from_millis(600));
    assert!(reads >= 5, "events were coalesced: {reads} reads");
    assert!(rest.ends_with("data: [DONE]\n\n"));
    assert_eq!(split_events(&rest).len(), 5);
}

#[tokio::test]
async fn completions_embeddings_models() {
    let mock = MockUpstream::start().await;
    let v: Value = post_json(&mock, "/v1/completions", json!({"prompt": "12345678"}), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Hello from mock");
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let req = json!({"prompt": "x", "stream": true, "stream_options": {"include_usage": true}});
    let text = post_json(&mock, "/v1/completions", req, &[("x-mock-delay-ms", "0")])
        .await
        .text()
        .await
        .unwrap();
    let events = split_events(&text);
    // 3 pieces + finish + usage + [DONE]
    assert_eq!(events.len(), 6, "{events:?}");
    let chunks: Vec<Value> = events.iter().filter_map(|e| data_json(e)).collect();
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, "tok0 tok1 tok2 ");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);

    let v: Value = post_json(
        &mock,
        "/v1/embeddings",
        json!({"input": ["a", "bb"], "model": "e"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "e");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
    let v2: Value = post_json(
        &mock,
        "/v1/embeddings",
        json!({"input": ["a", "bb"], "model": "e"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["data"], v2["data"], "embeddings are deterministic");

    let v: Value = client()
        .get(format!("{}/v1/models", mock.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", "gpt-4o", "gpt-image-1"]);
    assert_eq!(v["data"][0]["owned_by"], "mock");

    let resp = client()
        .get(format!("{}/v1/models/gpt-4o", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "gpt-4o");
    assert_eq!(v["object"], "model");
    let resp = client()
        .get(format!("{}/v1/models/nope", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn responses_api() {
    let mock = MockUpstream::start().await;
    let v: Value = post_json(
        &mock,
        "/v1/responses",
        json!({"model": "gpt-4o", "input": "abcdefgh"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello from mock");
    assert_eq!(v["usage"]["input_tokens"], 2);
    assert_eq!(v["usage"]["output_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 5);

    let text = post_json(
        &mock,
        "/v1/responses",
        json!({"input": [{"role": "user", "content": "hi"}], "stream": true}),
        &[("x-mock-delay-ms", "0"), ("x-mock-chunks", "2")],
    )
    .await
    .text()
    .await
    .unwrap();
    let events = split_events(&text);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.lines().next().unwrap().strip_prefix("event: ").unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "response.output_text.delta")
            .count(),
        2
    );
    let datas: Vec<Value> = events.iter().map(|e| data_json(e).unwrap()).collect();
    for (i, (kind, d)) in kinds.iter().zip(&datas).enumerate() {
        assert_eq!(d["type"], *kind);
        assert_eq!(d["sequence_number"], i);
    }
    let deltas: String = datas
        .iter()
        .filter_map(|d| d.get("delta").and_then(Value::as_str))
        .collect();
    assert_eq!(deltas, "tok0 tok1 ");
    let done = &datas.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["usage"]["input_tokens"], 1);
    assert_eq!(done["usage"]["output_tokens"], 2);
    assert_eq!(done["output"][0]["content"][0]["text"], "tok0 tok1 ");
}

#[tokio::test]
async fn images_generations_b64_and_url() {
    let mock = MockUpstream::start().await;
    let v: Value = post_json(
        &mock,
        "/v1/images/generations",
        json!({"prompt": "a cat", "n": 2, "size": "1024x1024", "model": "gpt-image-1"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["b64_json"], mock::base64_encode(mock::PNG_1X1));
    assert!(v["created"].as_u64().is_some());
    assert_eq!(v["usage"]["input_tokens"], 2);
    assert_eq!(v["usage"]["output_tokens"], 544);
    assert_eq!(v["usage"]["total_tokens"], 546);
    // base64 of the PNG signature.
    assert!(v["data"][0]["b64_json"]
        .as_str()
        .unwrap()
        .starts_with("iVBORw0KGgo"));

    let v: Value = post_json(
        &mock,
        "/v1/images/generations",
        json!({"prompt": "a cat", "response_format": "url"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    let url = v["data"][0]["url"].as_str().unwrap();
    assert_eq!(url, format!("{}/files/img.png", mock.url()));
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), mock::PNG_1X1);
}

#[tokio::test]
async fn multipart_echo() {
    let mock = MockUpstream::start().await;
    let image: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let form = reqwest::multipart::Form::new()
        .text("prompt", "add a hat; please")
        .text("n", "2")
        .text("model", "gpt-image-1")
        .part(
            "image",
            reqwest::multipart::Part::bytes(image.clone())
                .file_name("in put.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let resp = client()
        .post(format!("{}/v1/images/edits", mock.url()))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(v["data"][0]["b64_json"].is_string());
    let received = &v["received"];
    assert_eq!(
        received["fields"],
        json!({"prompt": "add a hat; please", "n": "2", "model": "gpt-image-1"})
    );
    let file = &received["files"]["image"];
    assert_eq!(file["filename"], "in put.png");
    assert_eq!(file["bytes"], 3000);
    assert_eq!(file["checksum"], mock::checksum(&image));
    assert_eq!(file["content_type"], "image/png");
    assert_eq!(received["parts"].as_array().unwrap().len(), 4);
    assert_eq!(v["usage"]["input_tokens_details"]["image_tokens"], 65);

    let audio = vec![7u8; 2048];
    let form = reqwest::multipart::Form::new()
        .text("model", "gpt-4o-transcribe")
        .part(
            "file",
            reqwest::multipart::Part::bytes(audio.clone()).file_name("a.mp3"),
        );
    let v: Value = client()
        .post(format!("{}/v1/audio/transcriptions", mock.url()))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["text"], "mock transcription");
    assert_eq!(v["received"]["fields"]["model"], "gpt-4o-transcribe");
    assert_eq!(v["received"]["files"]["file"]["bytes"], 2048);
    assert_eq!(v["received"]["files"]["file"]["checksum"], 7 * 2048);
    assert_eq!(v["usage"]["input_tokens"], 2);

    // Not multipart -> OpenAI-style 400.
    let resp = post_json(&mock, "/v1/audio/transcriptions", json!({}), &[]).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn speech_bytes_are_deterministic() {
    let mock = MockUpstream::start().await;
    let req = json!({"model": "tts-1", "input": "Say hello", "voice": "alloy"});
    let resp = post_json(&mock, "/v1/audio/speech", req.clone(), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes.len(), 64 * 1024);
    assert_eq!(bytes.as_ref(), mock::speech_bytes("Say hello").as_slice());
    let again = post_json(&mock, "/v1/audio/speech", req, &[])
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes, again);
    assert_ne!(mock::speech_bytes("a"), mock::speech_bytes("ab"));
}

#[tokio::test]
async fn echo_reports_the_request() {
    let mock = MockUpstream::start().await;
    let resp = client()
        .put(format!("{}/prefix/echo?a=1&b=2", mock.url()))
        .header("x-custom", "one")
        .header("authorization", "Bearer sk-test")
        .body(vec![1u8, 2, 3, 250])
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/prefix/echo");
    assert_eq!(v["query"], "a=1&b=2");
    assert_eq!(v["headers"]["x-custom"], "one");
    assert_eq!(v["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(v["body_len"], 4);
    assert_eq!(v["body_checksum"], 256);

    let v: Value = client()
        .get(format!("{}/echo", mock.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["query"], Value::Null);
}

#[tokio::test]
async fn header_knobs_status_and_first_byte_delay() {
    let mock = MockUpstream::start().await;
    let resp = post_json(
        &mock,
        "/v1/chat/completions",
        json!({}),
        &[("x-mock-status", "429")],
    )
    .await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let resp = post_json(
        &mock,
        "/v1/embeddings",
        json!({}),
        &[("x-mock-status", "503")],
    )
    .await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");

    let started = Instant::now();
    let resp = post_json(
        &mock,
        "/v1/chat/completions",
        json!({"messages": []}),
        &[("x-mock-first-byte-delay-ms", "300")],
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn incomplete_request_is_not_recorded() {
    let mock = MockUpstream::start().await;
    let mut sock = TcpStream::connect(mock.addr()).await.unwrap();
    sock.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    assert!(mock.wait_for_open_connections(1, WAIT).await);
    drop(sock);
    // Once the mock has seen the hang-up, the request can no longer complete.
    assert!(mock.wait_for_open_connections(0, WAIT).await);
    assert_eq!(mock.request_count(), 0);

    // A complete request on a raw socket is recorded.
    let mut sock = TcpStream::connect(mock.addr()).await.unwrap();
    sock.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        .await
        .unwrap();
    assert!(mock.wait_for_requests(1, WAIT).await);
    assert_eq!(mock.requests()[0].body, b"abc");
}

#[tokio::test]
async fn mode_status() {
    let mock = MockUpstream::start().await;
    mock.set_mode(Mode::Status(503, r#"{"error":{"message":"down"}}"#.into()));
    for path in ["/v1/chat/completions", "/v1/models"] {
        let resp = client()
            .post(format!("{}{path}", mock.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"error":{"message":"down"}}"#
        );
    }
    mock.set_mode(Mode::Normal);
    let resp = post_json(&mock, "/v1/chat/completions", json!({}), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn mode_hang_records_and_never_answers() {
    let mock = MockUpstream::start().await;
    mock.set_mode(Mode::Hang);
    let mut sock = TcpStream::connect(mock.addr()).await.unwrap();
    sock.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    assert!(mock.wait_for_requests(1, WAIT).await);
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(300), sock.read(&mut buf)).await;
    assert!(read.is_err(), "hung request must get no bytes and no EOF");
    assert_eq!(mock.open_connections(), 1);
    // The client giving up frees the connection.
    drop(sock);
    assert!(mock.wait_for_open_connections(0, WAIT).await);

    // reqwest sees a timeout.
    let err = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .get(format!("{}/v1/models", mock.url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
}

// Multi-threaded: the producer task and the connection race for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mode_drop_connection() {
    let mock = MockUpstream::start().await;
    mock.set_mode(Mode::DropConnection);
    let mut sock = TcpStream::connect(mock.addr()).await.unwrap();
    sock.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(WAIT, sock.read_to_end(&mut buf))
        .await
        .expect("socket closed")
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "no response bytes: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(mock.request_count(), 1);

    let err = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout());
    assert_eq!(mock.request_count(), 2);
}

// Multi-threaded: the producer task and the connection race for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mode_stream_then_drop() {
    let mock = MockUpstream::start().await;
    mock.set_mode(Mode::StreamThenDrop {
        events_before_drop: 2,
    });
    // Non-streaming requests are unaffected.
    let resp = post_json(&mock, "/v1/chat/completions", json!({}), &[]).await;
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap();

    for delay in ["0", "20"] {
        let req = json!({"stream": true, "messages": []});
        let resp = post_json(
            &mock,
            "/v1/chat/completions",
            req,
            &[("x-mock-delay-ms", delay)],
        )
        .await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut received = String::new();
        let mut error = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => received.push_str(std::str::from_utf8(&b).unwrap()),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        assert!(
            error.is_some(),
            "stream must end with an error, got {received:?}"
        );
        assert_eq!(split_events(&received).len(), 2, "{received:?}");
        assert!(!received.contains("[DONE]"));
    }

    // Zero events: head arrives, then the body aborts.
    mock.set_mode(Mode::StreamThenDrop {
        events_before_drop: 0,
    });
    let req = json!({"stream": true, "messages": []});
    let resp = post_json(&mock, "/v1/chat/completions", req, &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());

    // The mock dropped these itself; they are not client cancellations.
    assert_eq!(mock.cancelled_streams(), 0);
}

// Multi-threaded: the producer task and the connection race for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_disconnect_cancels_stream() {
    let mock = MockUpstream::start().await;
    let req = json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = post_json(
        &mock,
        "/v1/chat/completions",
        req,
        &[("x-mock-delay-ms", "50"), ("x-mock-chunks", "100")],
    )
    .await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(mock.cancelled_streams(), 0);
    drop(body);
    assert!(mock.wait_for_cancelled_streams(1, WAIT).await);
    assert!(mock.wait_for_open_connections(0, WAIT).await);

    // A stream read to the end is not a cancellation.
    let req = json!({"stream": true, "messages": []});
    let text = post_json(
        &mock,
        "/v1/chat/completions",
        req,
        &[("x-mock-delay-ms", "0")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(mock.cancelled_streams(), 1);
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let mock = MockUpstream::start().await;
    let client = client();
    for _ in 0..3 {
        let resp = client
            .get(format!("{}/v1/models", mock.url()))
            .send()
            .await
            .unwrap();
        resp.bytes().await.unwrap();
    }
    assert_eq!(mock.request_count(), 3);
    assert_eq!(mock.open_connections(), 1);
    drop(client);
    assert!(mock.wait_for_open_connections(0, WAIT).await);
}

#[tokio::test]
async fn wait_for_requests_times_out_and_wakes() {
    let mock = MockUpstream::start().await;
    assert!(!mock.wait_for_requests(1, Duration::from_millis(50)).await);
    let url = mock.url();
    let sender = tokio::spawn(async move {
        client()
            .get(format!("{url}/v1/models"))
            .send()
            .await
            .unwrap();
    });
    assert!(mock.wait_for_requests(1, WAIT).await);
    sender.await.unwrap();
}

#[tokio::test]
async fn dropping_the_mock_closes_connections() {
    let mock = MockUpstream::start().await;
    let addr = mock.addr();
    mock.set_mode(Mode::Hang);
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(mock.wait_for_requests(1, WAIT).await);
    drop(mock);
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, sock.read(&mut buf))
        .await
        .expect("connection closed after drop")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn start_on_given_address() {
    let probe = MockUpstream::start().await;
    // Port in use -> error, not a panic.
    assert!(MockUpstream::start_on(probe.addr()).await.is_err());
    let mock = MockUpstream::start_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        mock.url(),
        format!("http://127.0.0.1:{}", mock.addr().port())
    );
}

// ---------------------------------------------------------------------------
// Generated images (ImageOptions) and the hosting mocks (tests/common/hosting.rs)

use hosting::{HostingKind, MockHosting};
use mock::{generated_png, png_chunks, png_text, ImageOptions, ImageParams, ImageReply};

/// Standard base64 (with padding) back to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64 digit") as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn kinds(png: &[u8]) -> Vec<String> {
    png_chunks(png)
        .unwrap_or_else(|e| panic!("invalid PNG: {e}"))
        .into_iter()
        .map(|c| c.kind)
        .collect()
}

fn params(prompt: &str, model: &str, size: &str, seed: Option<i64>, index: u32) -> ImageParams {
    ImageParams {
        index,
        ..ImageParams::new(prompt, model, size, seed)
    }
}

#[test]
fn crc32_and_png_checker() {
    // The standard CRC-32 check value.
    assert_eq!(mock::crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(mock::crc32(b""), 0);
    // The checker accepts the reference PNG and rejects damage.
    assert_eq!(kinds(mock::PNG_1X1), ["IHDR", "IDAT", "IEND"]);
    let mut bad = mock::PNG_1X1.to_vec();
    bad[40] ^= 1; // inside IDAT
    assert!(png_chunks(&bad).unwrap_err().contains("bad CRC"));
    assert!(png_chunks(&mock::PNG_1X1[1..]).is_err());
    assert!(png_chunks(&mock::PNG_1X1[..mock::PNG_1X1.len() - 12]).is_err());
    let mut trailing = mock::PNG_1X1.to_vec();
    trailing.push(0);
    assert!(png_chunks(&trailing).is_err());
}

#[test]
fn generated_png_is_valid_deterministic_and_distinct() {
    let base = params("a red fox", "gpt-image-1", "512x512", Some(42), 0);
    let png = generated_png(&base, None);
    assert_eq!(kinds(&png), ["IHDR", "IDAT", "tEXt", "IEND"]);
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.ends_with(&mock::PNG_1X1[mock::PNG_1X1.len() - 12..]));
    // Same pixels as the reference image.
    assert_eq!(&png[..33], &mock::PNG_1X1[..33]);
    assert_eq!(
        png_text(&png).unwrap(),
        "prompt=a red fox\nmodel=gpt-image-1\nsize=512x512\nseed=42\nn=0"
    );
    assert_eq!(png, generated_png(&base.clone(), None), "deterministic");

    let variants = [
        base.clone(),
        params("a red fox!", "gpt-image-1", "512x512", Some(42), 0),
        params("a red fox", "dall-e-3", "512x512", Some(42), 0),
        params("a red fox", "gpt-image-1", "512x768", Some(42), 0),
        params("a red fox", "gpt-image-1", "512x512", Some(43), 0),
        params("a red fox", "gpt-image-1", "512x512", None, 0),
        params("a red fox", "gpt-image-1", "512x512", Some(42), 1),
    ];
    let images: Vec<Vec<u8>> = variants.iter().map(|p| generated_png(p, None)).collect();
    for (i, a) in images.iter().enumerate() {
        kinds(a);
        for b in &images[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert!(png_text(&images[5]).unwrap().contains("\nseed=none\n"));

    // Non-ASCII and newlines are escaped: the text stays printable Latin-1.
    let odd = generated_png(&params("ünï\ncode 100%", "m", "64x64", Some(-1), 0), None);
    let text = png_text(&odd).unwrap();
    assert!(
        text.starts_with("prompt=%C3%BCn%C3%AF%0Acode 100%25\nmodel=m\n"),
        "{text}"
    );
    assert!(text.contains("seed=-1"));
}

#[test]
fn generated_png_pads_to_the_exact_size() {
    let p = params("pad me", "gpt-image-1", "1024x1024", Some(7), 0);
    let plain = generated_png(&p, None);
    let text = png_text(&plain).unwrap();
    for target in [
        plain.len(),
        plain.len() + 1,
        plain.len() + 11,
        plain.len() + 12,
        plain.len() + 13,
        4096,
        3 * 1024 * 1024 + 5,
    ] {
        let padded = generated_png(&p, Some(target));
        assert_eq!(padded.len(), target);
        let chunks = kinds(&padded);
        assert_eq!(chunks.first().unwrap(), "IHDR");
        assert_eq!(chunks.last().unwrap(), "IEND");
        assert_eq!(png_text(&padded).unwrap(), text, "target {target}");
        assert_eq!(padded, generated_png(&p, Some(target)));
        if target >= plain.len() + 12 {
            assert!(chunks.contains(&"tgPd".to_string()), "{chunks:?}");
        }
    }
    // Too small to honour: not shrunk.
    assert_eq!(generated_png(&p, Some(10)), plain);
    // Different parameters padded to one size still differ.
    let other = params("pad me", "gpt-image-1", "1024x1024", Some(8), 0);
    assert_ne!(
        generated_png(&p, Some(4096)),
        generated_png(&other, Some(4096))
    );
}

#[tokio::test]
async fn seeded_generations_answer_generated_pngs() {
    let mock = MockUpstream::start().await;
    let request = json!({"prompt": "a lighthouse", "n": 1, "model": "gpt-image-1",
                         "size": "512x768", "seed": 7});
    let v: Value = post_json(&mock, "/v1/images/generations", request.clone(), &[])
        .await
        .json()
        .await
        .unwrap();
    let png = base64_decode(v["data"][0]["b64_json"].as_str().unwrap());
    let expected = generated_png(
        &ImageParams::new("a lighthouse", "gpt-image-1", "512x768", Some(7)),
        None,
    );
    assert_eq!(png, expected);
    assert_eq!(v["size"], "512x768");

    let again: Value = post_json(&mock, "/v1/images/generations", request, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["data"], v["data"], "same parameters, same bytes");

    // Defaults fill in model and size; n indexes the images of one reply.
    let v: Value = post_json(
        &mock,
        "/v1/images/generations",
        json!({"prompt": "a lighthouse", "n": 2, "seed": 8}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    let first = base64_decode(v["data"][0]["b64_json"].as_str().unwrap());
    let second = base64_decode(v["data"][1]["b64_json"].as_str().unwrap());
    assert_eq!(
        png_text(&first).unwrap(),
        "prompt=a lighthouse\nmodel=gpt-image-1\nsize=1024x1024\nseed=8\nn=0"
    );
    assert!(png_text(&second).unwrap().ends_with("\nn=1"));
    assert_eq!(mock.generated_images().len(), 4);
    assert_eq!(mock.generated_images()[3], second);
    assert_eq!(mock.image_generation_count(), 3);

    // Seeded, with response_format url and no options: a URL to the bytes.
    let v: Value = post_json(
        &mock,
        "/v1/images/generations",
        json!({"prompt": "p", "seed": 1, "response_format": "url"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    let url = v["data"][0]["url"].as_str().unwrap();
    assert_eq!(url, format!("{}/files/gen/5.png", mock.url()));
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        generated_png(
            &ImageParams::new("p", "gpt-image-1", "1024x1024", Some(1)),
            None
        )
    );
    let resp = client()
        .get(format!("{}/files/gen/99.png", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn image_options_url_reply_serves_the_padded_bytes() {
    let mock = MockUpstream::start().await;
    mock.set_image_options(ImageOptions {
        size_bytes: Some(50_000),
        reply: ImageReply::Url,
        ..Default::default()
    });
    // No seed and a b64 request: the options decide.
    let v: Value = post_json(
        &mock,
        "/v1/images/generations",
        json!({"prompt": "a cat", "size": "256x256", "model": "m", "response_format": "b64_json"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    let url = v["data"][0]["url"].as_str().unwrap();
    assert!(v["data"][0].get("b64_json").is_none(), "{v}");
    assert_eq!(url, format!("{}/files/gen/1.png", mock.url()));
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes.len(), 50_000);
    assert_eq!(
        bytes.as_ref(),
        generated_png(
            &ImageParams::new("a cat", "m", "256x256", None),
            Some(50_000)
        )
    );

    // Edits use the same scheme (fields from the form).
    let form = reqwest::multipart::Form::new()
        .text("prompt", "add a hat")
        .text("seed", "3")
        .part(
            "image",
            reqwest::multipart::Part::bytes(vec![1u8; 10]).file_name("in.png"),
        );
    let v: Value = client()
        .post(format!("{}/v1/images/edits", mock.url()))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = v["data"][0]["url"].as_str().unwrap();
    let bytes = client()
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        bytes.as_ref(),
        generated_png(
            &ImageParams::new("add a hat", "gpt-image-1", "1024x1024", Some(3)),
            Some(50_000)
        )
    );
    assert_eq!(v["received"]["fields"]["seed"], "3");
    assert_eq!(
        mock.image_generation_count(),
        1,
        "edits are not generations"
    );

    // UrlOverride: that exact URL.
    mock.set_image_options(ImageOptions {
        reply: ImageReply::UrlOverride("ftp://example.invalid/x.png".into()),
        ..Default::default()
    });
    let v: Value = post_json(&mock, "/v1/images/generations", json!({"prompt": "x"}), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"], json!([{"url": "ftp://example.invalid/x.png"}]));

    // B64 with options: the generated image inline, response_format ignored.
    mock.set_image_options(ImageOptions::default());
    let v: Value = post_json(
        &mock,
        "/v1/images/generations",
        json!({"prompt": "x", "response_format": "url"}),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    let png = base64_decode(v["data"][0]["b64_json"].as_str().unwrap());
    assert_eq!(
        png,
        generated_png(
            &ImageParams::new("x", "gpt-image-1", "1024x1024", None),
            None
        )
    );

    // Cleared: back to the legacy answer.
    mock.clear_image_options();
    assert_eq!(mock.image_options(), None);
    let v: Value = post_json(&mock, "/v1/images/generations", json!({"prompt": "x"}), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["b64_json"], mock::base64_encode(mock::PNG_1X1));
}

#[tokio::test]
async fn image_options_malformed_not_json_delay_and_modes() {
    let mock = MockUpstream::start().await;
    mock.set_image_options(ImageOptions {
        reply: ImageReply::Malformed,
        ..Default::default()
    });
    let resp = post_json(&mock, "/v1/images/generations", json!({"prompt": "x"}), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert!(v["created"].is_u64() && v.get("data").is_none(), "{v}");

    mock.set_image_options(ImageOptions {
        reply: ImageReply::NotJson,
        ..Default::default()
    });
    let resp = post_json(&mock, "/v1/images/generations", json!({"prompt": "x"}), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    mock.set_image_options(ImageOptions {
        delay: Duration::from_millis(300),
        ..Default::default()
    });
    let started = Instant::now();
    let resp = post_json(&mock, "/v1/images/generations", json!({"prompt": "x"}), &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status(), 200);
    // Other endpoints are not delayed by image options.
    let started = Instant::now();
    post_json(&mock, "/v1/chat/completions", json!({}), &[]).await;
    assert!(started.elapsed() < Duration::from_millis(300));

    // Modes apply to image calls, and those calls still count.
    mock.set_mode(Mode::Status(503, r#"{"error":{"message":"down"}}"#.into()));
    let resp = post_json(&mock, "/v1/images/generations", json!({"prompt": "x"}), &[]).await;
    assert_eq!(resp.status(), 503);
    mock.set_mode(Mode::DropConnection);
    let err = client()
        .post(format!("{}/v1/images/generations", mock.url()))
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout());
    assert_eq!(mock.image_generation_count(), 5);

    mock.set_mode(Mode::Hang);
    let url = mock.url();
    let pending = tokio::spawn(async move {
        let _ = client()
            .post(format!("{url}/v1/images/generations"))
            .json(&json!({"prompt": "x"}))
            .send()
            .await;
    });
    assert!(mock.wait_for_image_generations(6, WAIT).await);
    assert!(
        !mock
            .wait_for_image_generations(7, Duration::from_millis(50))
            .await
    );
    pending.abort();
}

// --- hosting mocks

/// Uploads `bytes` the way `kind`'s API wants, with `credential`.
async fn host_upload(h: &MockHosting, bytes: &[u8], credential: &str) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec())
        .file_name("image.png")
        .mime_str("image/png")
        .unwrap();
    let form = reqwest::multipart::Form::new().part(h.kind().file_field(), part);
    let req = match h.kind() {
        HostingKind::Smms => client()
            .post(h.upload_url())
            .header("authorization", credential),
        HostingKind::Picgo => client()
            .post(h.upload_url())
            .header("x-api-key", credential),
        HostingKind::CloudflareImgbed => client()
            .post(h.upload_url())
            .query(&[("authCode", credential)]),
    };
    req.multipart(form).send().await.unwrap()
}

/// GETs `url`, expecting `bytes` as image/png.
async fn assert_serves(url: &str, bytes: &[u8]) {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes);
}

fn check_upload(h: &MockHosting, index: usize, bytes: &[u8], credential: &str, url: &str) {
    let uploads = h.uploads();
    let up = &uploads[index];
    assert_eq!(up.field, h.kind().file_field());
    assert_eq!(up.filename.as_deref(), Some("image.png"));
    assert_eq!(up.content_type.as_deref(), Some("image/png"));
    assert_eq!(up.bytes, bytes);
    assert_eq!(up.auth.as_deref(), Some(credential));
    assert_eq!(up.url, url);
}

#[tokio::test]
async fn hosting_smms() {
    let h = MockHosting::start(HostingKind::Smms).await;
    assert_eq!(h.credential(), hosting::DEFAULT_CREDENTIAL);
    assert_eq!(h.upload_url(), format!("{}/api/v2/upload", h.url()));
    let png = generated_png(&ImageParams::new("a", "m", "64x64", Some(1)), Some(2000));

    let resp = host_upload(&h, &png, "test-credential").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["code"], "success");
    assert_eq!(v["message"], "Upload success.");
    assert!(v["RequestId"].is_string());
    let data = &v["data"];
    assert_eq!(
        (data["width"].as_u64(), data["height"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(data["size"], 2000);
    assert_eq!(data["filename"], "image.png");
    for key in ["storename", "path", "hash", "delete", "page"] {
        assert!(data[key].is_string(), "{key}: {v}");
    }
    let url = data["url"].as_str().unwrap();
    assert!(url.starts_with(&h.url()) && url.ends_with(".png"), "{url}");
    assert_eq!(h.upload_count(), 1);
    check_upload(&h, 0, &png, "test-credential", url);
    assert_serves(url, &png).await;

    // The same bytes again: refused, pointing at the first copy.
    let v: Value = host_upload(&h, &png, "test-credential")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(v["code"], "image_repeated");
    assert_eq!(v["images"], url);
    assert_eq!(
        v["message"],
        format!("Image upload repeated limit, this image exists at: {url}")
    );

    // Wrong token (and a Bearer prefix is wrong too): HTTP 200, unauthorized.
    let other = generated_png(&ImageParams::new("b", "m", "64x64", Some(1)), None);
    for token in ["nope", "Bearer test-credential"] {
        let resp = host_upload(&h, &other, token).await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            (&v["success"], &v["code"], &v["message"], &v["data"]),
            (
                &json!(false),
                &json!("unauthorized"),
                &json!("Unauthorized."),
                &json!("")
            )
        );
    }
    h.set_credential("tok-2");
    let v: Value = host_upload(&h, &other, "tok-2").await.json().await.unwrap();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(h.upload_count(), 2);
    assert_eq!(h.upload_attempts(), 5);

    h.set_failing(Some(503));
    let third = generated_png(&ImageParams::new("c", "m", "64x64", Some(1)), None);
    let resp = host_upload(&h, &third, "tok-2").await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(h.upload_count(), 2);
    // Hosted files keep being served.
    assert_serves(url, &png).await;
    let resp = client()
        .get(format!("{}/i/none.png", h.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn hosting_picgo() {
    let h = MockHosting::start(HostingKind::Picgo).await;
    assert_eq!(h.upload_url(), format!("{}/api/1/upload", h.url()));
    h.set_credential("chv_key");
    let png = generated_png(&ImageParams::new("a", "m", "64x64", Some(1)), None);

    let resp = host_upload(&h, &png, "wrong").await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status_code"], 400);
    assert_eq!(v["error"]["message"], "Invalid API v1 key.");
    assert_eq!(v["error"]["code"], 100);
    assert_eq!(v["status_txt"], "Bad Request");
    assert_eq!(h.upload_count(), 0);

    let resp = host_upload(&h, &png, "chv_key").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status_code"], 200);
    assert_eq!(
        v["success"],
        json!({"message": "image uploaded", "code": 200})
    );
    assert_eq!(v["status_txt"], "OK");
    let image = &v["image"];
    assert_eq!(image["extension"], "png");
    assert_eq!(image["size"], png.len());
    assert_eq!(image["mime"], "image/png");
    let url = image["url"].as_str().unwrap();
    check_upload(&h, 0, &png, "chv_key", url);
    assert_serves(url, &png).await;
    assert_serves(image["display_url"].as_str().unwrap(), &png).await;
    assert_eq!(image["image"]["url"], url);

    // Picgo takes repeated bytes (only SM.MS refuses them).
    let resp = host_upload(&h, &png, "chv_key").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.upload_count(), 2);
    assert_ne!(h.uploads()[1].url, url);

    h.set_failing(Some(500));
    let resp = host_upload(&h, &png, "chv_key").await;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status_code"], 500);
    assert!(v["error"]["message"].is_string());
}

#[tokio::test]
async fn hosting_cloudflare_imgbed() {
    let h = MockHosting::start(HostingKind::CloudflareImgbed).await;
    assert_eq!(h.upload_url(), format!("{}/upload", h.url()));
    let png = generated_png(&ImageParams::new("a", "m", "64x64", Some(1)), Some(10_000));

    let resp = host_upload(&h, &png, "bad").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.text().await.unwrap(), "Unauthorized");
    assert_eq!(h.upload_count(), 0);

    let resp = host_upload(&h, &png, "test-credential").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let src = v[0]["src"].as_str().unwrap();
    assert!(src.starts_with("/file/") && src.ends_with(".png"), "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1);
    let url = format!("{}{src}", h.url());
    check_upload(&h, 0, &png, "test-credential", &url);
    assert_serves(&url, &png).await;
    let rec = h
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert!(rec.path.contains("authCode=bad"), "{}", rec.path);

    // An API token in Authorization works too; returnFormat=full gives an absolute URL.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"GIF89a".to_vec()).file_name("x.gif"),
    );
    let v: Value = client()
        .post(format!("{}?returnFormat=full", h.upload_url()))
        .bearer_auth("test-credential")
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let full = v[0]["src"].as_str().unwrap();
    assert!(full.starts_with(&h.url()) && full.ends_with(".gif"), "{v}");
    let resp = client().get(full).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "image/gif");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"GIF89a");
    assert_eq!(h.uploads()[1].auth.as_deref(), Some("test-credential"));
    assert!(h.wait_for_uploads(2, WAIT).await);

    h.set_failing(Some(502));
    let resp = host_upload(&h, &png, "test-credential").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(h.upload_count(), 2);
    h.set_failing(None);
    assert_eq!(host_upload(&h, &png, "test-credential").await.status(), 200);
    assert_eq!(h.upload_count(), 3);
}

// --- OAuth / OIDC provider mock (tests/common/oauth.rs)

use oauth::{DeviceState, MockEmail, MockIdentity, MockOauth, CLIENT_ID, CLIENT_SECRET};

/// A client that does not follow redirects.
fn oauth_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A PKCE pair: (verifier, S256 challenge).
fn pkce(seed: char) -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let verifier: String = std::iter::repeat_n(seed, 20)
        .chain("-._~0123456789abcdefghijklmnop".chars())
        .collect();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    oauth::parse_form(url.split_once('?').map(|(_, q)| q).unwrap_or(""))
}

/// Authorizes at `{base}{path}` and returns the code from the 302.
async fn oauth_authorize(
    base: &str,
    path: &str,
    redirect_uri: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut query = vec![
        ("client_id", CLIENT_ID),
        ("redirect_uri", redirect_uri),
        ("state", "st ate/1+x"),
        ("scope", "read:user user:email openid"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    query.extend_from_slice(extra);
    let resp = oauth_client()
        .get(format!("{base}{path}"))
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap());
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(redirect_uri), "{location}");
    let q = query_of(&location);
    assert_eq!(q["state"], "st ate/1+x", "{location}");
    q["code"].clone()
}

fn code_form<'a>(code: &'a str, redirect: &'a str, verifier: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("code", code),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
    ]
}

/// POSTs `form` to GitHub's token endpoint with `Accept: application/json`.
async fn github_token_json(o: &MockOauth, form: &[(&str, &str)]) -> Value {
    let resp = oauth_client()
        .post(format!("{}/login/oauth/access_token", o.url()))
        .header("accept", "application/json")
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    resp.json().await.unwrap()
}

async fn get_with_auth(url: &str, auth: &str) -> (u16, Value) {
    let resp = oauth_client()
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn oauth_github_web_flow() {
    let o = MockOauth::start().await;
    let redirect = "http://127.0.0.1:9/auth/github/callback";

    // Unknown client.
    let resp = oauth_client()
        .get(format!("{}/login/oauth/authorize", o.url()))
        .query(&[("client_id", "nope"), ("redirect_uri", redirect)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(o.issued_codes(), 0);

    // JSON variant.
    let (verifier, challenge) = pkce('a');
    let code = oauth_authorize(
        &o.url(),
        "/login/oauth/authorize",
        redirect,
        &challenge,
        &[],
    )
    .await;
    assert_eq!(o.issued_codes(), 1);
    let v = github_token_json(&o, &code_form(&code, redirect, &verifier)).await;
    let token = v["access_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("gho_"), "{v}");
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["scope"], "read:user,user:email");

    // Form variant (no Accept), client by HTTP Basic, redirect_uri with a query.
    let redirect_q = "http://127.0.0.1:9/cb?x=1";
    let (verifier2, challenge2) = pkce('b');
    let code2 = oauth_authorize(
        &o.url(),
        "/login/oauth/authorize",
        redirect_q,
        &challenge2,
        &[],
    )
    .await;
    let resp = oauth_client()
        .post(format!("{}/login/oauth/access_token", o.url()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("code", code2.as_str()),
            ("redirect_uri", redirect_q),
            ("code_verifier", verifier2.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/x-www-form-urlencoded"));
    let text = resp.text().await.unwrap();
    let f = oauth::parse_form(&text);
    assert!(f["access_token"].starts_with("gho_"), "{text}");
    assert_eq!(f["token_type"], "bearer");
    assert_eq!(f["scope"], "read:user,user:email");

    // JSON request body.
    let (verifier3, challenge3) = pkce('c');
    let code3 = oauth_authorize(
        &o.url(),
        "/login/oauth/authorize",
        redirect,
        &challenge3,
        &[],
    )
    .await;
    let v: Value = oauth_client()
        .post(format!("{}/login/oauth/access_token", o.url()))
        .header("accept", "application/json")
        .json(&json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "code": code3,
            "redirect_uri": redirect, "code_verifier": verifier3, "grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["access_token"].as_str().unwrap().starts_with("gho_"),
        "{v}"
    );
    assert_eq!(o.token_requests().len(), 3);
    assert_eq!(o.issued_tokens(), 3);
    assert!(o.wait_for_token_requests(3, WAIT).await);
    let recorded = &o.token_requests()[0];
    assert!(String::from_utf8_lossy(&recorded.body).contains("code_verifier="));

    // The API.
    let api = o.api_url();
    assert_eq!(api, format!("{}/api/v3", o.url()));
    let (status, user) = get_with_auth(&format!("{api}/user"), &format!("Bearer {token}")).await;
    assert_eq!(status, 200);
    assert_eq!(user["id"], 4242);
    assert_eq!(user["login"], "octo");
    assert_eq!(user["name"], "Octo Cat");
    assert_eq!(user["email"], "octo@example.com");
    let (status, emails) =
        get_with_auth(&format!("{api}/user/emails"), &format!("token {token}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        emails,
        json!([{"email": "octo@example.com", "verified": true, "primary": true, "visibility": null}])
    );
    for bad in ["Bearer gho_forged", "Basic abc", ""] {
        let (status, body) = get_with_auth(&format!("{api}/user"), bad).await;
        assert_eq!(status, 401, "{bad}");
        assert_eq!(body["message"], "Bad credentials");
    }
    let resp = oauth_client()
        .get(format!("{api}/user/emails"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Another identity for the next authorizations; tokens keep theirs.
    o.set_identity(MockIdentity {
        id: 7,
        login: "hubot".into(),
        sub: "sub-7".into(),
        name: "Hubot".into(),
        emails: vec![
            MockEmail {
                email: "hubot@other.org".into(),
                verified: false,
                primary: false,
            },
            MockEmail {
                email: "hubot@example.com".into(),
                verified: false,
                primary: true,
            },
        ],
    });
    let (verifier4, challenge4) = pkce('d');
    let code4 = oauth_authorize(
        &o.url(),
        "/login/oauth/authorize",
        redirect,
        &challenge4,
        &[],
    )
    .await;
    let v = github_token_json(&o, &code_form(&code4, redirect, &verifier4)).await;
    let token4 = v["access_token"].as_str().unwrap();
    let (_, user) = get_with_auth(&format!("{api}/user"), &format!("Bearer {token4}")).await;
    assert_eq!(
        (user["id"].clone(), user["login"].clone()),
        (json!(7), json!("hubot"))
    );
    assert_eq!(user["email"], "hubot@example.com");
    let (_, emails) =
        get_with_auth(&format!("{api}/user/emails"), &format!("Bearer {token4}")).await;
    assert_eq!(emails.as_array().unwrap().len(), 2);
    let (_, user) = get_with_auth(&format!("{api}/user"), &format!("Bearer {token}")).await;
    assert_eq!(user["login"], "octo");
    assert_eq!(o.issued_codes(), 4);
}

#[tokio::test]
async fn oauth_github_refusals() {
    let o = MockOauth::start().await;
    let redirect = "http://127.0.0.1:9/auth/github/callback";
    let (verifier, challenge) = pkce('a');
    let (other_verifier, _) = pkce('z');
    let code = oauth_authorize(
        &o.url(),
        "/login/oauth/authorize",
        redirect,
        &challenge,
        &[],
    )
    .await;

    let err = |v: &Value, code: &str| {
        assert_eq!(v["error"], code, "{v}");
        assert!(v["error_description"].is_string(), "{v}");
        assert!(v.get("access_token").is_none(), "{v}");
    };
    // Wrong verifier, missing verifier, wrong redirect_uri, bad secret, missing secret.
    err(
        &github_token_json(&o, &code_form(&code, redirect, &other_verifier)).await,
        "bad_verification_code",
    );
    let mut form = code_form(&code, redirect, &verifier);
    form.pop();
    err(&github_token_json(&o, &form).await, "bad_verification_code");
    err(
        &github_token_json(&o, &code_form(&code, "http://127.0.0.1:9/other", &verifier)).await,
        "redirect_uri_mismatch",
    );
    let mut form = code_form(&code, redirect, &verifier);
    form[1].1 = "wrong-secret";
    err(
        &github_token_json(&o, &form).await,
        "incorrect_client_credentials",
    );
    form.remove(1);
    err(
        &github_token_json(&o, &form).await,
        "incorrect_client_credentials",
    );
    let resp = oauth_client()
        .post(format!("{}/login/oauth/access_token", o.url()))
        .header("accept", "application/json")
        .basic_auth(CLIENT_ID, Some("wrong-secret"))
        .form(&[
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    err(&resp.json().await.unwrap(), "incorrect_client_credentials");
    // Unknown code; form-encoded error.
    let resp = oauth_client()
        .post(format!("{}/login/oauth/access_token", o.url()))
        .form(&code_form("not-a-code", redirect, &verifier))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let f = oauth::parse_form(&resp.text().await.unwrap());
    assert_eq!(f["error"], "bad_verification_code");
    assert_eq!(o.issued_tokens(), 0);

    // Failed attempts do not use the code up; success does.
    let v = github_token_json(&o, &code_form(&code, redirect, &verifier)).await;
    assert!(v["access_token"].is_string(), "{v}");
    err(
        &github_token_json(&o, &code_form(&code, redirect, &verifier)).await,
        "bad_verification_code",
    );
    // An unsupported grant type.
    let mut form = code_form(&code, redirect, &verifier);
    form.push(("grant_type", "password"));
    err(
        &github_token_json(&o, &form).await,
        "unsupported_grant_type",
    );
    // A challenge method other than S256 is refused at authorize.
    let resp = oauth_client()
        .get(format!("{}/login/oauth/authorize", o.url()))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect),
            ("code_challenge", "x"),
            ("code_challenge_method", "plain"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(o.issued_codes(), 1);
    assert_eq!(o.issued_tokens(), 1);
    assert_eq!(o.token_requests().len(), 10);
}

#[tokio::test]
async fn oauth_oidc_flow() {
    let o = MockOauth::start().await;
    let issuer = o.issuer();
    assert_eq!(issuer, format!("{}/oidc", o.url()));
    let d: Value = oauth_client()
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], issuer);
    assert_eq!(d["authorization_endpoint"], format!("{issuer}/authorize"));
    assert_eq!(d["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(d["userinfo_endpoint"], format!("{issuer}/userinfo"));
    assert_eq!(
        d["device_authorization_endpoint"],
        format!("{issuer}/device/code")
    );
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["scopes_supported"], json!(["openid", "email", "profile"]));

    let redirect = "http://127.0.0.1:9/auth/google/callback";
    let (verifier, challenge) = pkce('o');
    // No response_type; no openid scope.
    for query in [
        vec![
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect),
            ("scope", "openid"),
        ],
        vec![
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect),
            ("scope", "email"),
            ("response_type", "code"),
        ],
        vec![
            ("client_id", "nope"),
            ("redirect_uri", redirect),
            ("scope", "openid"),
            ("response_type", "code"),
        ],
    ] {
        let resp = oauth_client()
            .get(format!("{issuer}/authorize"))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{query:?}");
    }
    assert_eq!(o.issued_codes(), 0);

    let code = oauth_authorize(
        &o.url(),
        "/oidc/authorize",
        redirect,
        &challenge,
        &[("response_type", "code"), ("nonce", "n-123")],
    )
    .await;
    let token_url = format!("{issuer}/token");
    let post = |form: Vec<(&'static str, String)>, basic: bool| {
        let mut req = oauth_client().post(&token_url).form(&form);
        if basic {
            req = req.basic_auth(CLIENT_ID, Some(CLIENT_SECRET));
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let base = |code: &str, redirect: &str, verifier: &str| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", redirect.to_string()),
            ("code_verifier", verifier.to_string()),
        ]
    };
    let (other_verifier, _) = pkce('p');
    let (s, v) = post(base(&code, redirect, &other_verifier), true).await;
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_grant")));
    let (s, v) = post(base(&code, "http://127.0.0.1:9/x", &verifier), true).await;
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_grant")));
    let mut bad_secret = base(&code, redirect, &verifier);
    bad_secret.push(("client_id", CLIENT_ID.into()));
    bad_secret.push(("client_secret", "wrong".into()));
    let (s, v) = post(bad_secret, false).await;
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_client")));
    let (s, v) = post(base(&code, redirect, &verifier), false).await;
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_client")));
    // A JSON body is not OIDC.
    let resp = oauth_client()
        .post(&token_url)
        .json(
            &json!({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "code_verifier": verifier, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Client by Basic.
    let (s, v) = post(base(&code, redirect, &verifier), true).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    let token = v["access_token"].as_str().unwrap().to_string();
    let id_token = v["id_token"].as_str().unwrap();
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: Value = {
        use base64::Engine as _;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(claims["sub"], "sub-4242");
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["nonce"], "n-123");
    // Used up.
    let (s, v) = post(base(&code, redirect, &verifier), true).await;
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_grant")));

    // Client by body fields.
    let (verifier2, challenge2) = pkce('q');
    let code2 = oauth_authorize(
        &o.url(),
        "/oidc/authorize",
        redirect,
        &challenge2,
        &[("response_type", "code")],
    )
    .await;
    let mut form = base(&code2, redirect, &verifier2);
    form.push(("client_id", CLIENT_ID.into()));
    form.push(("client_secret", CLIENT_SECRET.into()));
    let (s, v) = post(form, false).await;
    assert_eq!(s, 200, "{v}");

    let (s, info) = get_with_auth(&format!("{issuer}/userinfo"), &format!("Bearer {token}")).await;
    assert_eq!(s, 200);
    assert_eq!(info["sub"], "sub-4242");
    assert_eq!(info["name"], "Octo Cat");
    assert_eq!(info["email"], "octo@example.com");
    assert_eq!(info["email_verified"], true);
    let (s, _) = get_with_auth(&format!("{issuer}/userinfo"), "Bearer forged").await;
    assert_eq!(s, 401);
    // Tokens stay with their shape; codes too.
    let (s, _) = get_with_auth(&format!("{}/user", o.api_url()), &format!("Bearer {token}")).await;
    assert_eq!(s, 401);
    let (verifier3, challenge3) = pkce('r');
    let gh_code = oauth_authorize(
        &o.url(),
        "/login/oauth/authorize",
        redirect,
        &challenge3,
        &[],
    )
    .await;
    let (s, v) = post(base(&gh_code, redirect, &verifier3), true).await;
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_grant")));
    let v = github_token_json(&o, &code_form(&gh_code, redirect, &verifier3)).await;
    let gh_token = v["access_token"].as_str().unwrap();
    let (s, _) = get_with_auth(&format!("{issuer}/userinfo"), &format!("Bearer {gh_token}")).await;
    assert_eq!(s, 401);
}

/// Device flow: asks for a code at `path` and returns (answer, device_code).
async fn device_start(o: &MockOauth, path: &str, json_accept: bool) -> (Value, String) {
    let mut req = oauth_client()
        .post(format!("{}{path}", o.url()))
        .form(&[("client_id", CLIENT_ID), ("scope", "read:user openid")]);
    if json_accept {
        req = req.header("accept", "application/json");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| {
        let f = oauth::parse_form(&text);
        json!({
            "device_code": f["device_code"], "user_code": f["user_code"],
            "verification_uri": f["verification_uri"],
            "expires_in": f["expires_in"].parse::<u64>().unwrap(),
            "interval": f["interval"].parse::<u64>().unwrap(),
        })
    });
    let device = v["device_code"].as_str().unwrap().to_string();
    (v, device)
}

async fn device_poll(o: &MockOauth, path: &str, device: &str) -> (u16, Value) {
    let resp = oauth_client()
        .post(format!("{}{path}", o.url()))
        .header("accept", "application/json")
        .form(&[
            ("client_id", CLIENT_ID),
            ("device_code", device),
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn oauth_github_device_flow() {
    let o = MockOauth::start().await;
    let (v, _) = device_start(&o, "/login/device/code", false).await;
    assert_eq!(v["user_code"], "ABCD-1234");
    assert_eq!(v["verification_uri"], format!("{}/login/device", o.url()));
    assert_eq!(
        (v["expires_in"].clone(), v["interval"].clone()),
        (json!(900), json!(5))
    );
    let (v, device) = device_start(&o, "/login/device/code", true).await;
    assert_eq!(v["user_code"], "ABCD-1234");
    assert_eq!(v["expires_in"], 900);

    let path = "/login/oauth/access_token";
    for (state, error) in [
        (DeviceState::Pending, "authorization_pending"),
        (DeviceState::SlowDown, "slow_down"),
        (DeviceState::Expired, "expired_token"),
        (DeviceState::Denied, "access_denied"),
    ] {
        o.set_device_state(state);
        let (s, v) = device_poll(&o, path, &device).await;
        assert_eq!((s, v["error"].clone()), (200, json!(error)), "{state:?}");
        if state == DeviceState::SlowDown {
            assert_eq!(v["interval"], 10);
        }
    }
    let (s, v) = device_poll(&o, path, "unknown").await;
    assert_eq!(
        (s, v["error"].clone()),
        (200, json!("incorrect_device_code"))
    );
    o.set_device_state(DeviceState::Approved);
    let (s, v) = device_poll(&o, path, &device).await;
    assert_eq!(s, 200);
    assert_eq!(v["token_type"], "bearer");
    let token = v["access_token"].as_str().unwrap();
    assert!(token.starts_with("gho_"));
    let (s, user) =
        get_with_auth(&format!("{}/user", o.api_url()), &format!("Bearer {token}")).await;
    assert_eq!((s, user["id"].clone()), (200, json!(4242)));
    // Redeemed once.
    let (_, v) = device_poll(&o, path, &device).await;
    assert_eq!(v["error"], "incorrect_device_code");
    // Form-encoded answer without Accept.
    let (_, device2) = device_start(&o, "/login/device/code", true).await;
    let text = oauth_client()
        .post(format!("{}{path}", o.url()))
        .form(&[
            ("client_id", CLIENT_ID),
            ("device_code", device2.as_str()),
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        oauth::parse_form(&text)["access_token"].starts_with("gho_"),
        "{text}"
    );
    // Unknown client at the device endpoint.
    let resp = oauth_client()
        .post(format!("{}/login/device/code", o.url()))
        .form(&[("client_id", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn oauth_oidc_device_flow() {
    let o = MockOauth::start().await;
    let issuer = o.issuer();
    let (v, device) = device_start(&o, "/oidc/device/code", false).await;
    assert_eq!(v["user_code"], "ABCD-1234");
    assert_eq!(v["verification_uri"], format!("{issuer}/device"));
    assert_eq!(
        v["verification_uri_complete"],
        format!("{issuer}/device?user_code=ABCD-1234")
    );
    assert_eq!(
        (v["expires_in"].clone(), v["interval"].clone()),
        (json!(600), json!(5))
    );

    let path = "/oidc/token";
    for (state, error) in [
        (DeviceState::Pending, "authorization_pending"),
        (DeviceState::SlowDown, "slow_down"),
        (DeviceState::Expired, "expired_token"),
        (DeviceState::Denied, "access_denied"),
    ] {
        o.set_device_state(state);
        let (s, v) = device_poll(&o, path, &device).await;
        assert_eq!((s, v["error"].clone()), (400, json!(error)), "{state:?}");
    }
    // A GitHub device code is not the OIDC provider's.
    let (_, gh_device) = device_start(&o, "/login/device/code", true).await;
    let (s, v) = device_poll(&o, path, &gh_device).await;
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_grant")));
    o.set_device_state(DeviceState::Approved);
    o.set_identity(MockIdentity {
        id: 1,
        login: "ann".into(),
        sub: "sub-ann".into(),
        name: "Ann".into(),
        emails: vec![MockEmail {
            email: "ann@example.com".into(),
            verified: false,
            primary: true,
        }],
    });
    let (s, v) = device_poll(&o, path, &device).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    let token = v["access_token"].as_str().unwrap();
    let (s, info) = get_with_auth(&format!("{issuer}/userinfo"), &format!("Bearer {token}")).await;
    assert_eq!(s, 200);
    assert_eq!(info["sub"], "sub-ann");
    assert_eq!(info["email"], "ann@example.com");
    assert_eq!(info["email_verified"], false);
    let (s, v) = device_poll(&o, path, &device).await;
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_grant")));
    assert_eq!(o.token_requests().len(), 7);
}
