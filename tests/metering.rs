//! Token metering end to end (SPEC §3.6, issue 3 item 3): what a request is debited with, read
//! back from `GET /admin/usage` and `tollgate_tokens_total`, for every metered endpoint, JSON and
//! SSE; the `include_usage` injection and the removal of the usage-only chunk; estimates for
//! streams that end without usage (cut short upstream, or by the client); upstream errors; token
//! limits fed by metering; and the official Python SDK reading a stream it did not ask usage for.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use common::assert::{assert_error, header_str};
use common::mock::{MockUpstream, Mode};
use common::{eventually, fresh_client, new_user, start_with_mock, TestGateway};

const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers

/// What `GET /admin/usage?key=…&by=day` adds up to for one key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Debited {
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    images: u64,
    errors: u64,
}

/// A mock, a gateway in front of it with `extra` config, and a user `meter` with a key.
async fn setup(extra: &str) -> (MockUpstream, TestGateway, String, String) {
    let (mock, gw) = start_with_mock(extra).await;
    let (id, secret) = new_user(&gw, "meter").await;
    (mock, gw, id, secret)
}

/// The usage of key `id` by day (rows of every day added up; normally there is one).
async fn usage_of(gw: &TestGateway, id: &str) -> Debited {
    let body = gw
        .admin_expect(200, "GET", &format!("/admin/usage?key={id}&by=day"), None)
        .await;
    let rows = body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {body}"));
    let sum = |field: &str| rows.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum();
    Debited {
        requests: sum("requests"),
        prompt_tokens: sum("prompt_tokens"),
        completion_tokens: sum("completion_tokens"),
        images: sum("images"),
        errors: sum("errors"),
    }
}

/// Waits until key `id` has `requests` requests in its usage (the debit happens in the
/// logging phase, just after the response went out) and returns its usage then.
async fn settled(gw: &TestGateway, id: &str, requests: u64) -> Debited {
    let reached = eventually(WAIT, || async {
        usage_of(gw, id).await.requests >= requests
    })
    .await;
    let usage = usage_of(gw, id).await;
    assert!(
        reached,
        "usage of {id} never reached {requests} requests: {usage:?}"
    );
    assert_eq!(usage.requests, requests, "{usage:?}");
    usage
}

/// `POST path` through the gateway with `key`, the JSON `body` exactly as given and extra
/// headers.
async fn send(
    gw: &TestGateway,
    key: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> reqwest::Response {
    let mut req = fresh_client()
        .post(gw.url(path))
        .bearer_auth(key)
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(body.to_string()).send().await.unwrap()
}

/// `POST path` straight to the mock: status and body text.
async fn direct(
    mock: &MockUpstream,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = fresh_client()
        .post(format!("{}{path}", mock.url()))
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.body(body.to_string()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Status, content type and body text of a gateway response.
async fn read(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let content_type = header_str(resp.headers(), "content-type")
        .unwrap_or_default()
        .to_string();
    (status, content_type, resp.text().await.unwrap())
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Sends `body` to `path`, asserts a 200 and returns the `usage` of the JSON reply.
async fn reported_usage(gw: &TestGateway, key: &str, path: &str, body: &str) -> Value {
    let (status, _, text) = read(send(gw, key, path, &[], body).await).await;
    assert_eq!(status, 200, "{text}");
    parse(&text)["usage"].clone()
}

/// The JSON of every `data:` line of an SSE transcript (`[DONE]` left out).
fn sse_data(transcript: &str) -> Vec<Value> {
    transcript
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| *d != "[DONE]")
        .map(parse)
        .collect()
}

/// The (prompt, completion) of the first event with a non-null top-level `usage`.
fn stream_usage(transcript: &str) -> Option<(u64, u64)> {
    sse_data(transcript)
        .iter()
        .find(|e| e["usage"].is_object())
        .map(|e| {
            (
                e["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
                e["usage"]["completion_tokens"].as_u64().unwrap_or(0),
            )
        })
}

/// Bytes of generated text in a chat/completions SSE transcript (`delta.content` / `text`).
fn streamed_content_bytes(transcript: &str) -> u64 {
    sse_data(transcript)
        .iter()
        .flat_map(|e| e["choices"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            let text = c["delta"]["content"].as_str().or(c["text"].as_str());
            text.map_or(0, str::len) as u64
        })
        .sum()
}

/// Replaces the values that differ between two otherwise identical mock answers (timestamps
/// and per-request ids) with `N`.
fn normalize(text: &str) -> String {
    common::mask_digits_after(text, common::MOCK_VOLATILE)
}

/// `body` (a JSON object) with `stream_options.include_usage` set to true.
fn with_include_usage(body: &str) -> String {
    let mut v = parse(body);
    v["stream_options"] = json!({"include_usage": true});
    v.to_string()
}

/// Asserts the mock got `client_body` with `stream_options: {include_usage: true}` added and
/// nothing else changed.
fn assert_injected(mock: &MockUpstream, client_body: &str) {
    let recorded = mock.last_request().expect("the mock got no request");
    let mut upstream = recorded
        .json()
        .unwrap_or_else(|| panic!("upstream body not JSON: {:?}", recorded.body));
    assert_eq!(
        upstream["stream_options"]["include_usage"],
        json!(true),
        "include_usage was not injected upstream: {upstream}"
    );
    if let Some(obj) = upstream.as_object_mut() {
        obj.remove("stream_options");
    }
    assert_eq!(upstream, parse(client_body), "the rest of the body changed");
}

/// Asserts a transcript the gateway stripped for a client that did not ask for usage: no
/// usage-only chunk, no `usage` member at all, a choice in every chunk.
fn assert_no_usage(transcript: &str) {
    assert!(
        !transcript.contains("\"usage\""),
        "a usage field reached a client that did not ask for usage:\n{transcript}"
    );
    for event in sse_data(transcript) {
        assert!(
            event["choices"].as_array().is_some_and(|c| !c.is_empty()),
            "a chunk without choices reached the client: {event}"
        );
    }
}

/// Value of the series `name{labels}` (labels in any order) in Prometheus text; 0 if absent.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((inner, value)) = rest.split_once("} ") else {
            continue;
        };
        let mut got: Vec<&str> = inner.split(',').filter(|s| !s.is_empty()).collect();
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        got.sort_unstable();
        want.sort_unstable();
        if got == want {
            return value.trim().parse().expect("metric value");
        }
    }
    0.0
}

fn tokens_metric(text: &str, kind: &str, model: &str) -> u64 {
    metric(
        text,
        "tollgate_tokens_total",
        &[("kind", kind), ("model", model)],
    ) as u64
}

fn chat_json_body(content: &str) -> String {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}).to_string()
}

fn chat_stream_body(content: &str) -> String {
    json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "messages": [{"role": "user", "content": content}]
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// 1. Chat JSON

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_json_is_debited_with_the_usage_the_client_got() {
    let (mock, gw, id, key) = setup("").await;
    let body = chat_json_body("Tell me a short story about metering");
    let (status, _, text) = read(send(&gw, &key, "/v1/chat/completions", &[], &body).await).await;
    assert_eq!(status, 200, "{text}");
    let reply = parse(&text);
    let prompt = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    let completion = reply["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(prompt > 0 && completion > 0, "{reply}");

    // Not a stream: nothing is injected.
    assert_eq!(mock.last_request().unwrap().body, body.as_bytes());

    let usage = settled(&gw, &id, 1).await;
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (prompt, completion),
        "{usage:?}"
    );
    assert_eq!((usage.images, usage.errors), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// 2. Chat SSE, the client did not ask for usage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_without_usage_gets_it_injected_and_stripped() {
    let (mock, gw, id, key) = setup("").await;
    let body = chat_stream_body("Count to five, please");
    let knobs = [("x-mock-chunks", "5"), ("x-mock-delay-ms", "1")];
    let (status, content_type, transcript) =
        read(send(&gw, &key, "/v1/chat/completions", &knobs, &body).await).await;
    assert_eq!(status, 200, "{transcript}");
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );

    // Upstream: include_usage added, nothing else changed.
    assert_injected(&mock, &body);

    // Client: no usage-only chunk, no usage field, and otherwise what the upstream sends to a
    // request without include_usage.
    assert_no_usage(&transcript);
    assert!(transcript.ends_with("data: [DONE]\n\n"), "{transcript}");
    let (direct_status, plain) = direct(&mock, "/v1/chat/completions", &knobs, &body).await;
    assert_eq!(direct_status, 200);
    assert_eq!(normalize(&transcript), normalize(&plain));

    // Metered: the usage the upstream sends for that stream.
    let (_, with_usage) = direct(
        &mock,
        "/v1/chat/completions",
        &knobs,
        &with_include_usage(&body),
    )
    .await;
    let (prompt, completion) = stream_usage(&with_usage).expect("the mock sent no usage");
    assert_eq!(completion, 5);
    let usage = settled(&gw, &id, 1).await;
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (prompt, completion),
        "{usage:?}"
    );
    assert_eq!(usage.errors, 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Chat SSE, the client asked for usage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_with_usage_passes_the_usage_chunk_unchanged() {
    let (mock, gw, id, key) = setup("").await;
    let body = with_include_usage(&chat_stream_body("Count to four"));
    let knobs = [("x-mock-chunks", "4"), ("x-mock-delay-ms", "1")];
    let (status, _, transcript) =
        read(send(&gw, &key, "/v1/chat/completions", &knobs, &body).await).await;
    assert_eq!(status, 200, "{transcript}");

    // The client's body went upstream as it was.
    assert_eq!(mock.last_request().unwrap().body, body.as_bytes());

    // The usage-only chunk is there, and the whole transcript is the upstream's.
    let events = sse_data(&transcript);
    let usage_chunk = events
        .iter()
        .find(|e| e["usage"].is_object())
        .unwrap_or_else(|| panic!("no usage chunk reached the client:\n{transcript}"));
    assert_eq!(usage_chunk["choices"], json!([]), "{usage_chunk}");
    let (direct_status, upstream) = direct(&mock, "/v1/chat/completions", &knobs, &body).await;
    assert_eq!(direct_status, 200);
    assert_eq!(normalize(&transcript), normalize(&upstream));

    let (prompt, completion) = stream_usage(&transcript).unwrap();
    let usage = settled(&gw, &id, 1).await;
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (prompt, completion),
        "{usage:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Completions, embeddings, Responses, images

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_json_and_stream_are_metered() {
    let (mock, gw) = start_with_mock("").await;

    // JSON.
    let (json_id, json_key) = new_user(&gw, "completions-json").await;
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time, far away"})
        .to_string();
    let reported = reported_usage(&gw, &json_key, "/v1/completions", &body).await;
    let expected = (
        reported["prompt_tokens"].as_u64().unwrap(),
        reported["completion_tokens"].as_u64().unwrap(),
    );
    let usage = settled(&gw, &json_id, 1).await;
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), expected);

    // SSE without include_usage: injected upstream, stripped for the client, metered.
    let (sse_id, sse_key) = new_user(&gw, "completions-sse").await;
    let body = json!({
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "Write six words",
        "stream": true
    })
    .to_string();
    let knobs = [("x-mock-chunks", "6"), ("x-mock-delay-ms", "1")];
    let (status, content_type, transcript) =
        read(send(&gw, &sse_key, "/v1/completions", &knobs, &body).await).await;
    assert_eq!(status, 200, "{transcript}");
    assert!(content_type.starts_with("text/event-stream"));
    assert_injected(&mock, &body);
    assert_no_usage(&transcript);
    let (_, plain) = direct(&mock, "/v1/completions", &knobs, &body).await;
    assert_eq!(normalize(&transcript), normalize(&plain));
    let (_, with_usage) =
        direct(&mock, "/v1/completions", &knobs, &with_include_usage(&body)).await;
    let expected = stream_usage(&with_usage).expect("the mock sent no usage");
    let usage = settled(&gw, &sse_id, 1).await;
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_metered_as_prompt_only() {
    let (mock, gw, id, key) = setup("").await;
    let body = json!({
        "model": "text-embedding-3-small",
        "input": ["the first sentence to embed", "and a second one"]
    })
    .to_string();
    let reported = reported_usage(&gw, &key, "/v1/embeddings", &body).await;
    let prompt = reported["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 0);
    assert_eq!(mock.last_request().unwrap().body, body.as_bytes());
    let usage = settled(&gw, &id, 1).await;
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (prompt, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_json_and_stream_are_metered_from_their_usage() {
    let (mock, gw) = start_with_mock("").await;

    // JSON: `usage.input_tokens` / `usage.output_tokens`.
    let (json_id, json_key) = new_user(&gw, "responses-json").await;
    let body = json!({"model": "gpt-4o-mini", "input": "Say hello in three languages"}).to_string();
    let reported = reported_usage(&gw, &json_key, "/v1/responses", &body).await;
    let expected = (
        reported["input_tokens"].as_u64().unwrap(),
        reported["output_tokens"].as_u64().unwrap(),
    );
    let usage = settled(&gw, &json_id, 1).await;
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), expected);

    // SSE: from `response.completed`; nothing is injected for the Responses API.
    let (sse_id, sse_key) = new_user(&gw, "responses-sse").await;
    let body =
        json!({"model": "gpt-4o-mini", "input": "Stream seven pieces", "stream": true}).to_string();
    let knobs = [("x-mock-chunks", "7"), ("x-mock-delay-ms", "1")];
    let (status, content_type, transcript) =
        read(send(&gw, &sse_key, "/v1/responses", &knobs, &body).await).await;
    assert_eq!(status, 200, "{transcript}");
    assert!(content_type.starts_with("text/event-stream"));
    assert_eq!(mock.last_request().unwrap().body, body.as_bytes());
    let completed = sse_data(&transcript)
        .into_iter()
        .find(|e| e["type"] == "response.completed")
        .unwrap_or_else(|| panic!("no response.completed:\n{transcript}"));
    let expected = (
        completed["response"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap(),
        completed["response"]["usage"]["output_tokens"]
            .as_u64()
            .unwrap(),
    );
    assert_eq!(expected.1, 7);
    let usage = settled(&gw, &sse_id, 1).await;
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_generations_count_images_and_their_usage() {
    let (_mock, gw, id, key) = setup("").await;
    let body =
        json!({"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "n": 1}).to_string();
    let (status, _, text) = read(send(&gw, &key, "/v1/images/generations", &[], &body).await).await;
    assert_eq!(status, 200, "{text}");
    let reply = parse(&text);
    let returned = reply["data"].as_array().map_or(0, Vec::len) as u64;
    assert_eq!(returned, 1, "{reply}");
    let usage = settled(&gw, &id, 1).await;
    assert_eq!(usage.images, returned, "{usage:?}");
    if reply["usage"].is_object() {
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (
                reply["usage"]["input_tokens"].as_u64().unwrap(),
                reply["usage"]["output_tokens"].as_u64().unwrap()
            )
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A stream cut short upstream

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_is_estimated_from_its_content() {
    let (mock, gw, id, key) = setup("").await;
    mock.set_mode(Mode::StreamThenDrop {
        events_before_drop: 3,
    });
    let body = chat_stream_body("This stream will not get to the end");
    let resp = send(&gw, &key, "/v1/chat/completions", &[], &body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut received = Vec::new();
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let received = String::from_utf8(received).unwrap();
    assert!(
        error.is_some(),
        "the stream ended cleanly although the upstream broke off: {received:?}"
    );
    assert!(!received.contains("[DONE]"), "{received}");
    assert_no_usage(&received);
    // role, tok0, tok1.
    assert_eq!(sse_data(&received).len(), 3, "{received}");
    let content = streamed_content_bytes(&received);
    assert_eq!(content, "tok0 tok1 ".len() as u64, "{received}");
    assert_injected(&mock, &body);

    let usage = settled(&gw, &id, 1).await;
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        ((body.len() as u64).div_ceil(4), content.div_ceil(4)),
        "estimate: prompt = ceil({} body bytes / 4), completion = ceil({content} content bytes / 4)",
        body.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. A client hanging up mid-stream

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_stream_is_still_metered() {
    let (mock, gw, id, key) = setup("").await;
    let body = chat_stream_body("Talk for a long while");
    let knobs = [("x-mock-chunks", "200"), ("x-mock-delay-ms", "50")];
    let resp = send(&gw, &key, "/v1/chat/completions", &knobs, &body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    // Read until some generated text has passed (the first event is the role chunk), then
    // hang up.
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("tok0") {
        let chunk = stream
            .next()
            .await
            .expect("the stream ended early")
            .unwrap();
        received.extend_from_slice(&chunk);
    }
    drop(stream);
    let received = String::from_utf8(received).unwrap();
    assert!(!received.contains("[DONE]"));

    assert!(
        mock.wait_for_cancelled_streams(1, WAIT).await,
        "the upstream stream kept running after the client left"
    );
    let usage = settled(&gw, &id, 1).await;
    let content = streamed_content_bytes(&received);
    assert!(content > 0);
    assert!(usage.completion_tokens > 0, "{usage:?}");
    assert!(
        usage.completion_tokens >= content.div_ceil(4),
        "less than what reached the client ({content} bytes): {usage:?}"
    );
    assert_eq!(usage.prompt_tokens, (body.len() as u64).div_ceil(4));
}

// ---------------------------------------------------------------------------------------------
// 7. Upstream errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_not_charged_tokens() {
    let (mock, gw) = start_with_mock("").await;
    for (code, user, errors) in [(500u16, "err-500", 1u64), (400, "err-400", 0)] {
        let (id, key) = new_user(&gw, user).await;
        let status_header = code.to_string();
        for body in [chat_json_body("hello"), chat_stream_body("hello")] {
            let (status, _, text) = read(
                send(
                    &gw,
                    &key,
                    "/v1/chat/completions",
                    &[("x-mock-status", &status_header)],
                    &body,
                )
                .await,
            )
            .await;
            assert_eq!(status, code, "{text}");
            assert!(parse(&text)["error"].is_object(), "{text}");
        }
        let usage = settled(&gw, &id, 2).await;
        assert_eq!(
            usage,
            Debited {
                requests: 2,
                prompt_tokens: 0,
                completion_tokens: 0,
                images: 0,
                errors: 2 * errors,
            },
            "upstream {code}"
        );
    }
    assert_eq!(mock.request_count(), 4);
    let metrics = gw.metrics().await;
    for kind in ["prompt", "completion"] {
        assert_eq!(tokens_metric(&metrics, kind, "other"), 0, "{metrics}");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. A key with a model allow-list

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_a_model_allow_list_is_metered_on_streams() {
    let (mock, gw) = start_with_mock("").await;
    gw.admin_expect(201, "POST", "/admin/users", Some(json!({"name": "listed"})))
        .await;
    let (id, key) = gw
        .create_key("listed", json!({"models": ["gpt-4o-mini"]}))
        .await;
    let body = chat_stream_body("Only the allowed model");
    let knobs = [("x-mock-chunks", "4"), ("x-mock-delay-ms", "1")];
    let (status, _, transcript) =
        read(send(&gw, &key, "/v1/chat/completions", &knobs, &body).await).await;
    assert_eq!(status, 200, "{transcript}");
    assert_injected(&mock, &body);
    assert_no_usage(&transcript);
    let (_, plain) = direct(&mock, "/v1/chat/completions", &knobs, &body).await;
    assert_eq!(normalize(&transcript), normalize(&plain));
    let (_, with_usage) = direct(
        &mock,
        "/v1/chat/completions",
        &knobs,
        &with_include_usage(&body),
    )
    .await;
    let expected = stream_usage(&with_usage).unwrap();
    let usage = settled(&gw, &id, 1).await;
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), expected);
}

// ---------------------------------------------------------------------------------------------
// 9, 10. Token limits are fed by metering

/// The total tokens of one JSON chat of `body`, asked of the mock directly.
async fn total_tokens_of(mock: &MockUpstream, body: &str) -> u64 {
    let (status, text) = direct(mock, "/v1/chat/completions", &[], body).await;
    assert_eq!(status, 200);
    let total = parse(&text)["usage"]["total_tokens"].as_u64().unwrap();
    assert!(total > 0);
    total
}

/// Sends `body` twice with a key limited to exactly its tokens by `limit`; returns the
/// second reply (status, headers, body).
async fn second_request_at_the_limit(limit: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let (mock, gw) = start_with_mock("").await;
    let body = chat_json_body("Spend exactly the budget");
    let total = total_tokens_of(&mock, &body).await;
    gw.admin_expect(
        201,
        "POST",
        "/admin/users",
        Some(json!({"name": "limited"})),
    )
    .await;
    let (id, key) = gw
        .create_key("limited", json!({"limits": {limit: total}}))
        .await;

    let (status, _, text) = read(send(&gw, &key, "/v1/chat/completions", &[], &body).await).await;
    assert_eq!(status, 200, "first request under {limit} {total}: {text}");
    assert_eq!(parse(&text)["usage"]["total_tokens"], json!(total));
    // The debit lands in the limiter before it lands in the usage batch.
    let usage = settled(&gw, &id, 1).await;
    assert_eq!(usage.prompt_tokens + usage.completion_tokens, total);

    let upstream_before = mock.request_count();
    let resp = send(&gw, &key, "/v1/chat/completions", &[], &body).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    assert_eq!(
        mock.request_count(),
        upstream_before,
        "a refused request reached the upstream"
    );
    (status, headers, parse(&text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_refuses_once_the_window_is_at_the_limit() {
    let (status, headers, body) = second_request_at_the_limit("tokens_per_minute").await;
    assert_eq!(status, 429, "{body}");
    assert_error(&body, "tokens", "rate_limit_exceeded");
    let retry_after = header_str(&headers, "retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {headers:?}"));
    let secs: u64 = retry_after.parse().expect("Retry-After in whole seconds");
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    let ms: u64 = header_str(&headers, "retry-after-ms")
        .unwrap_or_else(|| panic!("no retry-after-ms: {headers:?}"))
        .parse()
        .expect("retry-after-ms in milliseconds");
    assert!(ms <= secs * 1000, "retry-after-ms {ms}, Retry-After {secs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_day_refuses_with_insufficient_quota() {
    let (status, headers, body) = second_request_at_the_limit("tokens_per_day").await;
    assert_eq!(status, 429, "{body}");
    assert_error(&body, "insufficient_quota", "insufficient_quota");
    assert_eq!(header_str(&headers, "x-should-retry"), Some("false"));
}

// ---------------------------------------------------------------------------------------------
// 11. tollgate_tokens_total

/// Asserts that the prompt and completion series of `tollgate_tokens_total` for `model` are
/// those of `usage`.
fn assert_tokens_metric(metrics: &str, model: &str, usage: &Value) {
    for kind in ["prompt", "completion"] {
        assert_eq!(
            tokens_metric(metrics, kind, model),
            usage[format!("{kind}_tokens")].as_u64().unwrap(),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_metric_is_labelled_by_configured_model_or_other() {
    let (_mock, gw, id, key) = setup("models:\n  - id: gpt-4o-mini\n").await;

    let body = chat_json_body("Count my tokens");
    let known = reported_usage(&gw, &key, "/v1/chat/completions", &body).await;
    settled(&gw, &id, 1).await;
    let metrics = gw.metrics().await;
    assert_tokens_metric(&metrics, "gpt-4o-mini", &known);
    assert_eq!(tokens_metric(&metrics, "prompt", "other"), 0, "{metrics}");

    // A model not in `models` is counted as `other` (and the known series stays as it was).
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Another model, longer prompt"}]})
        .to_string();
    let other = reported_usage(&gw, &key, "/v1/chat/completions", &body).await;
    settled(&gw, &id, 2).await;
    let metrics = gw.metrics().await;
    assert_tokens_metric(&metrics, "other", &other);
    assert_eq!(
        tokens_metric(&metrics, "prompt", "gpt-4o-mini"),
        known["prompt_tokens"].as_u64().unwrap(),
        "{metrics}"
    );
    assert!(
        !metrics.contains("model=\"gpt-4o\""),
        "an unlisted model got its own label:\n{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// 12. The official Python SDK

/// Streams without `stream_options` and indexes `choices[0]` of every chunk, as users do.
const SDK_STREAM: &str = r#"
import os, sys
from openai import OpenAI

client = OpenAI(base_url=os.environ["GW_URL"] + "/v1", api_key=os.environ["GW_KEY"],
                max_retries=0, timeout=30)
stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Hello"}],
    stream=True,
)
pieces = []
count = 0
try:
    for chunk in stream:
        count += 1
        pieces.append(chunk.choices[0].delta.content or "")
except IndexError as e:
    sys.exit(f"IndexError on chunk {count}: a chunk without choices reached the client ({e})")
text = "".join(pieces)
if text != "tok0 tok1 tok2 ":
    sys.exit(f"streamed text: {text!r}")
print(f"OK {count} chunks")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_stream_never_sees_the_usage_only_chunk() {
    common::python::require_openai();
    let (mock, gw, id, key) = setup("").await;
    let stdout = common::python::run_sdk_script(SDK_STREAM, gw.url(""), key).await;
    // role, three pieces, finish: the usage-only chunk is gone.
    assert!(stdout.contains("OK 5 chunks"), "{stdout}");

    // The gateway asked for usage on the SDK's behalf and metered it.
    let recorded = mock.last_request().unwrap().json().unwrap();
    assert_eq!(recorded["stream_options"]["include_usage"], json!(true));
    let usage = settled(&gw, &id, 1).await;
    assert_eq!(usage.completion_tokens, 3, "{usage:?}");
    assert!(usage.prompt_tokens > 0, "{usage:?}");
}
