//! Every body passes through unchanged (SPEC §3 `ANY /v1/…`): JSON, multipart uploads, binary
//! responses and SSE streams; the body-size cap (§2 `limits.max_body_bytes`, §4 413); a client
//! hanging up mid-stream ends the upstream request; upstream errors pass through (§4).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::assert::{assert_error, assert_error_shape};
use common::mock::{self, MockUpstream};
use common::{eventually, start_with_user, TestGateway};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// Replaces the values that legitimately differ between two otherwise identical mock answers
/// (timestamps and per-request ids) with `N`, leaving every other byte as it was.
fn normalize(text: &str) -> String {
    common::mask_digits_after(
        &common::mask_digits_after(text, common::MOCK_VOLATILE),
        &["req_mock_"],
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// What the mock answers when asked directly: status, content type and body.
async fn direct(
    mock: &MockUpstream,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Bytes) {
    let req = client().post(format!("{}{path}", mock.url()));
    let resp = with_json_body(req, headers, body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = content_type(&resp);
    (status, content_type, resp.bytes().await.unwrap())
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn setup(extra: &str) -> (MockUpstream, TestGateway, String) {
    start_with_user(extra, "bodies").await
}

/// `req` with `Content-Type: application/json`, then `headers`, and `body` as it is.
fn with_json_body(
    mut req: reqwest::RequestBuilder,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    req = req.header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(body)
}

/// `POST path` through the gateway with `key`, and `with_json_body(headers, body)`.
fn post_json(
    gw: &TestGateway,
    key: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    with_json_body(gw.post(path, key), headers, body)
}

/// Asserts `got` is what the mock answers to the same request asked directly (but for the
/// values `normalize` masks); returns the content type of the direct answer.
async fn assert_as_direct(
    mock: &MockUpstream,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    got: &str,
) -> String {
    let (status, direct_type, direct_body) = direct(mock, path, headers, body).await;
    assert_eq!(status, 200);
    let direct_text = String::from_utf8(direct_body.to_vec()).unwrap();
    assert_eq!(normalize(got), normalize(&direct_text));
    direct_type
}

/// The value of an unlabelled gauge in Prometheus text.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

async fn active_streams(gw: &TestGateway) -> Option<f64> {
    gauge(&gw.metrics().await, "tollgate_active_streams")
}

/// Asserts `body` is a SPEC §4 error of type `invalid_request_error` with `code`.
fn assert_gateway_error(body: &[u8], code: &str) {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    assert_error_shape(&v);
    assert_error(&v, "invalid_request_error", code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_request_and_response_pass_byte_for_byte() {
    let (mock, gw, key) = setup("").await;
    // Odd whitespace, key order, number spellings and a trailing newline: any re-serialisation
    // in the gateway would change these bytes.
    let sent: &[u8] = b"{ \"messages\" :[ {\"content\" : \"Say  hello\",\"role\":\"user\"}],\n\t\"model\":\"gpt-4o-mini\" ,\"zeta\":{\"b\":1,\"a\":[1.0e0, 2 ]},  \"temperature\":0.50 }\n";

    let resp = post_json(&gw, &key, "/v1/chat/completions", &[], sent.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let via_gateway_type = content_type(&resp);
    let via_gateway = resp.bytes().await.unwrap();

    assert_eq!(mock.request_count(), 1);
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(
        recorded.body,
        sent,
        "upstream got {:?}",
        String::from_utf8_lossy(&recorded.body)
    );
    assert_eq!(recorded.header("content-type"), Some("application/json"));

    let a = String::from_utf8(via_gateway.to_vec()).unwrap();
    let direct_type = assert_as_direct(&mock, "/v1/chat/completions", &[], sent, &a).await;
    assert_eq!(via_gateway_type, direct_type);
    assert_eq!(
        serde_json::from_str::<Value>(&a).unwrap()["choices"][0]["message"]["content"],
        "Hello from mock"
    );
}

/// 256 KiB in which every byte value occurs, in no simple repeating order.
fn binary_file() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut data: Vec<u8> = (0..=255u8).collect();
    data.extend((0..256 * 1023).map(|_| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 56) as u8
    }));
    data
}

/// Sends a reqwest multipart form through the gateway and asserts a 200; returns the bytes
/// sent, the content type sent and the (JSON) answer.
async fn upload(
    gw: &TestGateway,
    key: &str,
    path: &str,
    form: reqwest::multipart::Form,
) -> (Bytes, String, Value) {
    let mut req = gw.post(path, key).multipart(form).build().unwrap();
    // Capture the exact bytes reqwest produces, then send those.
    let body = req.body_mut().take().unwrap();
    let bytes = body.collect().await.unwrap().to_bytes();
    *req.body_mut() = Some(reqwest::Body::from(bytes.clone()));
    let content_type = req.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("multipart/form-data; boundary="));
    let resp = gw.http.execute(req).await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    (bytes, content_type, v)
}

/// Asserts the mock's answer `v` reports the form part `part` as `file`, named `filename`, of
/// `content_type`, and the text `fields`.
fn assert_received(
    v: &Value,
    (part, file, filename, content_type): (&str, &[u8], &str, &str),
    fields: &[(&str, &str)],
) {
    let received = &v["received"];
    let got = &received["files"][part];
    assert_eq!(got["bytes"], file.len(), "{received}");
    assert_eq!(got["checksum"], mock::checksum(file));
    assert_eq!(got["filename"], filename);
    assert_eq!(got["content_type"], content_type);
    for (name, value) in fields {
        assert_eq!(received["fields"][name], *value);
    }
}

/// Asserts the last request the mock got is `sent` (of `sent_type`) to `path`, unchanged.
fn assert_forwarded_unchanged(mock: &MockUpstream, path: &str, sent_type: &str, sent: &[u8]) {
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.path, path);
    assert_eq!(recorded.header("content-type"), Some(sent_type));
    assert_eq!(recorded.body.len(), sent.len());
    assert!(recorded.body == sent, "multipart body changed on the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_pass_byte_for_byte() {
    use reqwest::multipart::{Form, Part};
    let (mock, gw, key) = setup("").await;
    let file = binary_file();

    // Image edit: an image file and text fields (one with non-ASCII text).
    let form = Form::new()
        .text("model", "gpt-image-1")
        .text("prompt", "a cat wearing a hat — ünïcödé")
        .text("size", "256x256")
        .part(
            "image",
            Part::bytes(file.clone())
                .file_name("input.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let (sent, sent_type, v) = upload(&gw, &key, "/v1/images/edits", form).await;
    assert_received(
        &v,
        ("image", &file, "input.png", "image/png"),
        &[
            ("model", "gpt-image-1"),
            ("prompt", "a cat wearing a hat — ünïcödé"),
            ("size", "256x256"),
        ],
    );
    assert_eq!(v["size"], "256x256");
    assert_forwarded_unchanged(&mock, "/v1/images/edits", &sent_type, &sent);

    // Audio transcription: an audio file and text fields.
    let form = Form::new()
        .part(
            "file",
            Part::bytes(file.clone())
                .file_name("speech.mp3")
                .mime_str("audio/mpeg")
                .unwrap(),
        )
        .text("model", "whisper-1")
        .text("language", "en")
        .text("response_format", "json");
    let (sent, sent_type, v) = upload(&gw, &key, "/v1/audio/transcriptions", form).await;
    assert_eq!(v["text"], "mock transcription");
    assert_received(
        &v,
        ("file", &file, "speech.mp3", "audio/mpeg"),
        &[
            ("model", "whisper-1"),
            ("language", "en"),
            ("response_format", "json"),
        ],
    );
    assert_forwarded_unchanged(&mock, "/v1/audio/transcriptions", &sent_type, &sent);
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_speech_response_passes_unchanged() {
    let (_mock, gw, key) = setup("").await;
    let input = "The quick brown fox jumped over the lazy dog.";
    let resp = gw
        .post("/v1/audio/speech", &key)
        .json(&json!({"model": "gpt-4o-mini-tts", "input": input, "voice": "alloy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "audio/mpeg");
    let audio = resp.bytes().await.unwrap();
    let expected = mock::speech_bytes(input);
    assert_eq!(audio.len(), expected.len());
    assert!(audio == expected, "audio bytes changed on the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_body_bytes_is_refused_with_413() {
    let (mock, gw, key) = setup("limits: { max_body_bytes: 1024 }").await;
    let big = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x".repeat(2048)}]
    })
    .to_string();
    assert!(big.len() > 2048);

    // Declared with Content-Length.
    let resp = post_json(&gw, &key, "/v1/chat/completions", &[], big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.headers().contains_key("x-tollgate-request-id"));
    assert_gateway_error(&resp.bytes().await.unwrap(), "request_too_large");

    // Chunked: the size is only known while the body streams in.
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(256)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = post_json(&gw, &key, "/v1/chat/completions", &[], chunked)
        .send()
        .await
        .expect("the client should get the 413, not a broken connection");
    assert_eq!(resp.status(), 413);
    assert_gateway_error(&resp.bytes().await.unwrap(), "request_too_large");

    // If the gateway had opened an upstream request for the chunked body, that connection
    // must end without a complete request.
    assert!(
        mock.wait_for_open_connections(0, WAIT).await,
        "an upstream connection stayed open"
    );
    assert_eq!(
        mock.request_count(),
        0,
        "the upstream received an oversized body"
    );

    // A body under the limit still goes through (and is the only one the upstream saw).
    let small = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw
        .post("/v1/chat/completions", &key)
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.last_request().unwrap().json().unwrap(), small);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_reach_the_client_as_they_arrive() {
    let (mock, gw, key) = setup("").await;
    // The client asks for usage itself, so the gateway has nothing to add or remove and
    // the transcript must pass unchanged.
    let body = json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "count to twenty"}]
    })
    .to_string();
    let knobs = [("x-mock-chunks", "20"), ("x-mock-delay-ms", "100")];

    let req = post_json(&gw, &key, "/v1/chat/completions", &knobs, body.clone());
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("text/event-stream"));
    let mut stream = resp.bytes_stream();

    let first = stream.next().await.unwrap().unwrap();
    let first_text = String::from_utf8(first.to_vec()).unwrap();
    assert!(first_text.starts_with("data: "), "{first_text:?}");
    assert!(
        !first_text.contains("[DONE]"),
        "the first read already held the whole stream: {first_text:?}"
    );
    // The upstream stream is still running while the client holds its first event.
    assert_eq!(active_streams(&gw).await, Some(1.0));
    assert_eq!(mock.cancelled_streams(), 0);

    let mut transcript = first.to_vec();
    let mut later_reads = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if !chunk.is_empty() {
            later_reads += 1;
        }
        transcript.extend_from_slice(&chunk);
    }
    let transcript = String::from_utf8(transcript).unwrap();
    assert!(transcript.ends_with("data: [DONE]\n\n"), "{transcript}");
    // role + 20 pieces + finish + usage + [DONE] = 24 events, 100 ms apart upstream: a
    // gateway that forwards events as they come delivers them in many separate reads.
    let events = transcript.matches("data: ").count();
    assert_eq!(events, 24, "{transcript}");
    assert!(
        later_reads >= events / 2,
        "the remaining {} events came in only {later_reads} reads (buffered?)",
        events - 1
    );

    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.body, body.as_bytes());
    assert_as_direct(
        &mock,
        "/v1/chat/completions",
        &knobs,
        body.as_bytes(),
        &transcript,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hang_up_mid_stream_ends_the_upstream_request() {
    let (mock, gw, key) = setup("").await;
    let resp = gw
        .post("/v1/chat/completions", &key)
        .header("x-mock-chunks", "200")
        .header("x-mock-delay-ms", "50")
        .json(&json!({
            "model": "gpt-4o-mini",
            "stream": true,
            "messages": [{"role": "user", "content": "talk for a while"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: "));
    assert_eq!(active_streams(&gw).await, Some(1.0));

    // Hang up: the unread body cannot be reused, so the connection closes.
    drop(stream);

    assert!(
        mock.wait_for_cancelled_streams(1, WAIT).await,
        "the upstream stream kept running after the client left"
    );
    assert!(
        eventually(WAIT, || async { active_streams(&gw).await == Some(0.0) }).await,
        "tollgate_active_streams did not return to 0:\n{}",
        gw.metrics().await
    );
    assert!(
        eventually(WAIT, || async {
            gauge(&gw.metrics().await, "tollgate_active_requests") == Some(0.0)
        })
        .await,
        "tollgate_active_requests did not return to 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_stream_keeps_event_lines() {
    let (mock, gw, key) = setup("").await;
    let body = json!({"model": "gpt-4o-mini", "input": "Say hello", "stream": true}).to_string();
    let knobs = [("x-mock-chunks", "4"), ("x-mock-delay-ms", "5")];
    let req = post_json(&gw, &key, "/v1/responses", &knobs, body.clone());
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("text/event-stream"));
    let transcript = resp.text().await.unwrap();

    for kind in [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.completed",
    ] {
        assert!(
            transcript.contains(&format!("event: {kind}\ndata: {{")),
            "missing `event: {kind}` line:\n{transcript}"
        );
    }
    assert_eq!(
        transcript
            .matches("event: response.output_text.delta\n")
            .count(),
        4
    );
    assert_eq!(mock.last_request().unwrap().body, body.as_bytes());

    assert_as_direct(&mock, "/v1/responses", &knobs, body.as_bytes(), &transcript).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_responses_pass_through_unchanged() {
    let (mock, gw, key) = setup("").await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    for status in ["429", "400", "500"] {
        let knob = [("x-mock-status", status)];
        let req = post_json(&gw, &key, "/v1/chat/completions", &knob, body.clone());
        let resp = req.send().await.unwrap();
        let got_status = resp.status().as_u16();
        let got_type = content_type(&resp);
        let got = resp.bytes().await.unwrap();

        let (want_status, want_type, want) =
            direct(&mock, "/v1/chat/completions", &knob, body.as_bytes()).await;
        assert_eq!(got_status.to_string(), status);
        assert_eq!(got_status, want_status);
        assert_eq!(got_type, want_type, "content type for {status}");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "body for {status}"
        );
    }
}
