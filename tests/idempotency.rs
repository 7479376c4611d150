//! Idempotency-Key end to end (SPEC §3.5, §3.6, §4, §6; issue 4): what a client sees and what
//! the mock upstream counted. Replays are byte-identical (JSON, audio bytes, SSE transcripts)
//! and marked `Idempotent-Replayed: true`; concurrent duplicates make one upstream call and get
//! 409; a different body under the same key gets 422; malformed keys get 400; the scope is (key
//! id, method, path and query as sent, Idempotency-Key); what is not stored is released so a
//! retry goes upstream again; stale claims are dropped (also after a crash); records expire, are
//! swept from sled and survive restarts; replays count as requests but charge no tokens; the
//! outcomes are counted in `tollgate_idempotency_total`; and the official Python SDK works with
//! `extra_headers={"Idempotency-Key": …}`.
//!
//! A note on waiting: the gateway settles a claimant's record (stores or releases it) in its
//! logging phase, which runs just after the last byte of the response went out. A retry sent
//! in that instant is, per SPEC, still "in flight" and may get 409. So before a retry the tests
//! wait until `tollgate_idempotency_total{result="stored"|"skipped"}` says the claimant settled
//! (`settled`), instead of sleeping.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use common::assert::{assert_error, header_str};
use common::mock::{self, MockUpstream, Mode};
use common::{
    eventually, free_port, fresh_client, new_user, start_with_mock, temp_dir, wait_until,
    GatewayConfig, TestGateway,
};

const WAIT: Duration = Duration::from_secs(30);

/// The chat body every test sends unless it needs another one (sent verbatim, so "the same
/// body" means the same bytes).
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;
const CHAT_OTHER: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say goodbye"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A response as the client got it: status, headers and the raw body bytes.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("read the response body");
        Reply {
            status,
            headers,
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        header_str(&self.headers, name)
    }

    /// `Idempotent-Replayed: true` is present.
    fn replayed(&self) -> bool {
        let value = self.header("idempotent-replayed");
        assert!(
            value.is_none() || value == Some("true"),
            "idempotent-replayed must be absent or `true`, got {value:?}"
        );
        value == Some("true")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request builder on a fresh connection: `method path` with `key`, extra `headers` and the
/// `body` bytes exactly as given (JSON content type when there is a body).
fn request(
    gw: &TestGateway,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = fresh_client()
        .request(method, gw.url(path))
        .bearer_auth(key);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if !body.is_empty() {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    req
}

/// Sends a request (see [`request`]) and reads the whole reply.
async fn send(
    gw: &TestGateway,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    Reply::read(
        request(gw, method, path, key, headers, body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A builder for `POST /v1/chat/completions` with `headers` and the streaming body.
fn stream_request(
    gw: &TestGateway,
    key: &str,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    request(
        gw,
        "POST",
        "/v1/chat/completions",
        key,
        headers,
        CHAT_STREAM,
    )
}

/// Sends `POST /v1/chat/completions` with `headers` and the streaming body; reads the reply.
async fn stream_chat(gw: &TestGateway, key: &str, headers: &[(&str, &str)]) -> Reply {
    send(
        gw,
        "POST",
        "/v1/chat/completions",
        key,
        headers,
        CHAT_STREAM,
    )
    .await
}

/// `POST /v1/chat/completions` with `Idempotency-Key: idem`, more headers and `body`.
async fn chat(
    gw: &TestGateway,
    key: &str,
    idem: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut all = vec![("idempotency-key", idem)];
    all.extend_from_slice(headers);
    send(gw, "POST", "/v1/chat/completions", key, &all, body).await
}

/// A mock and a gateway in front of it with `extra` config, and a user with a key (secret).
async fn setup(extra: &str) -> (MockUpstream, TestGateway, String) {
    let (mock, gw) = start_with_mock(extra).await;
    let (_, secret) = new_user(&gw, "idem").await;
    (mock, gw, secret)
}

/// `tollgate_idempotency_total{result="…"}` (0 while the series does not exist).
fn idem_metric(metrics: &str, result: &str) -> u64 {
    let series = format!("tollgate_idempotency_total{{result=\"{result}\"}}");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|rest| rest.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// All five outcome counters: stored, replayed, conflict, mismatch, skipped.
async fn idem_counts(gw: &TestGateway) -> [u64; 5] {
    let text = gw.metrics().await;
    ["stored", "replayed", "conflict", "mismatch", "skipped"].map(|r| idem_metric(&text, r))
}

/// Waits until `claims` claimants have settled (stored or skipped): the gateway has finished
/// with them, so a retry is judged against the outcome.
async fn settled(gw: &TestGateway, claims: u64) {
    let done = eventually(WAIT, || async {
        let c = idem_counts(gw).await;
        c[0] + c[4] >= claims
    })
    .await;
    assert!(
        done,
        "{claims} idempotent request(s) never settled; counters [stored, replayed, conflict, \
         mismatch, skipped] = {:?}",
        idem_counts(gw).await
    );
}

/// Sends SIGTERM and waits until the process has exited (a zombie until `stop` reaps it).
async fn terminate_gracefully(gw: &mut TestGateway) {
    common::terminate_gracefully(gw, WAIT).await;
}

/// Idempotency records in the sled store at `data` (the gateway must not hold it).
async fn stored_records(data: PathBuf) -> usize {
    tokio::task::spawn_blocking(move || {
        let store = tollgate::store::Store::open(&data, 8, Duration::from_secs(5))
            .expect("open the gateway's store");
        store.idempotent_responses()
    })
    .await
    .unwrap()
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Idempotency records durable on disk while the gateway runs: sled is crash-safe and the
/// write-behind flushes after writing, so a copy of the data directory, opened as after a crash,
/// shows what a SIGKILL would leave behind.
async fn durable_records(gw: &TestGateway) -> usize {
    let copy = temp_dir("idem-copy");
    let data = gw.dir.join("data");
    let target = copy.join("data");
    let counted = tokio::task::spawn_blocking(move || {
        copy_dir(&data, &target).ok()?;
        let store = tollgate::store::Store::open(&target, 8, Duration::from_secs(5)).ok()?;
        Some(store.idempotent_responses())
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&copy);
    counted.unwrap_or(0)
}

/// Headers that differ per response by nature: the connection's own (hop-by-hop) and the ones
/// the gateway adds to each request it serves.
fn per_response(name: &str) -> bool {
    matches!(
        name,
        // Pingora stamps every HTTP/1 response with the current `Date` as it writes the head,
        // the original's and the replay's alike; two requests a second apart differ there.
        "date"
            | "x-tollgate-request-id"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "idempotent-replayed"
    ) || name.starts_with("x-ratelimit-")
}

/// The headers of `reply` as sorted (name, value) pairs, less [`per_response`] ones.
fn comparable_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| !per_response(n.as_str()))
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// 1-3: byte-identical replays: JSON, binary, SSE

/// SPEC §3.5: the second identical request gets the stored response byte for byte — same
/// status, body and headers (the upstream's own `x-request-id` included, `content-length`
/// recomputed to the same value) but for the per-request `x-tollgate-request-id` and `date` — plus
/// `Idempotent-Replayed: true`, and makes no upstream call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_byte_identical() {
    let (mock, gw, key) = setup("").await;

    let first = chat(&gw, &key, "replay-1", &[], CHAT).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(
        !first.replayed(),
        "the original must not be marked replayed"
    );
    assert_eq!(
        first.json()["choices"][0]["message"]["content"],
        "Hello from mock"
    );
    assert_eq!(mock.request_count(), 1);
    settled(&gw, 1).await;

    let second = chat(&gw, &key, "replay-1", &[], CHAT).await;
    assert_eq!(mock.request_count(), 1, "the replay went upstream");
    assert_eq!(second.status, first.status);
    assert!(second.replayed(), "headers: {:?}", second.headers);
    assert_eq!(second.body, first.body, "the replayed body differs");
    assert_eq!(
        comparable_headers(&second.headers),
        comparable_headers(&first.headers),
        "the replayed headers differ"
    );
    let upstream_rid = first.header("x-request-id").unwrap_or_default();
    assert!(
        upstream_rid.starts_with("req_mock_"),
        "the upstream's x-request-id: {:?}",
        first.headers
    );
    assert_eq!(second.header("x-request-id"), Some(upstream_rid));
    assert_eq!(
        second.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    assert_eq!(
        first.header("content-length"),
        second.header("content-length")
    );
    let (rid1, rid2) = (
        first.header("x-tollgate-request-id").unwrap_or_default(),
        second.header("x-tollgate-request-id").unwrap_or_default(),
    );
    assert!(!rid1.is_empty() && !rid2.is_empty());
    assert_ne!(rid1, rid2, "each response has its own gateway request id");

    // A third time: still the same bytes, still one upstream call.
    let third = chat(&gw, &key, "replay-1", &[], CHAT).await;
    assert!(third.replayed());
    assert_eq!(third.body, first.body);
    assert_eq!(mock.request_count(), 1);
}

/// Binary bodies replay intact: `/v1/audio/speech` twice under one key gives the same 64 KiB
/// (the mock's bytes for that input), as `audio/mpeg`, with one upstream call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_binary_safe() {
    let (mock, gw, key) = setup("").await;
    let input = "Idempotent audio, please";
    let body = json!({"model": "gpt-4o-mini-tts", "input": input, "voice": "alloy"}).to_string();
    let headers = [("idempotency-key", "speech-1")];

    let first = send(&gw, "POST", "/v1/audio/speech", &key, &headers, &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(!first.replayed());
    assert_eq!(first.body.as_ref(), mock::speech_bytes(input).as_slice());
    settled(&gw, 1).await;

    let second = send(&gw, "POST", "/v1/audio/speech", &key, &headers, &body).await;
    assert_eq!(second.status, 200);
    assert!(second.replayed());
    assert_eq!(mock.request_count(), 1, "the replay went upstream");
    assert_eq!(
        second.body.as_ref(),
        mock::speech_bytes(input).as_slice(),
        "the replayed audio differs"
    );
    assert_eq!(second.header("content-type"), Some("audio/mpeg"));
    assert_eq!(
        second.header("content-length"),
        Some(mock::SPEECH_BYTES.to_string().as_str())
    );
}

/// SSE: the first client gets the stream live (its first event arrives while the request is
/// still in flight — an identical request sent then gets 409 — and before `[DONE]`), and the
/// replay is the full transcript, byte-identical to what the first client received, as
/// `text/event-stream`, with no upstream call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_is_live_first_and_replayed_whole() {
    let (mock, gw, key) = setup("").await;
    let headers = [
        ("idempotency-key", "stream-1"),
        ("x-mock-chunks", "10"),
        ("x-mock-delay-ms", "100"),
    ];

    let resp = stream_request(&gw, &key, &headers).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header_str(resp.headers(), "idempotent-replayed").is_none());
    assert!(header_str(resp.headers(), "content-type")
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    let mut stream = resp.bytes_stream();
    let mut received = Vec::new();
    let first_chunk = stream
        .next()
        .await
        .expect("the stream ended without data")
        .expect("read the first chunk");
    received.extend_from_slice(&first_chunk);
    assert!(
        !String::from_utf8_lossy(&first_chunk).contains("[DONE]"),
        "the first chunk already holds the whole stream: {:?}",
        String::from_utf8_lossy(&first_chunk)
    );
    // The stream is live: the request is still in flight while its first event is here.
    let during = stream_chat(&gw, &key, &headers).await;
    assert_eq!(during.status, 409, "{}", during.text());
    assert_error(
        &during.json(),
        "invalid_request_error",
        "idempotency_request_in_progress",
    );
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.expect("read the stream"));
    }
    let transcript = String::from_utf8_lossy(&received).into_owned();
    assert!(transcript.contains("tok9 "), "{transcript}");
    assert!(transcript.ends_with("data: [DONE]\n\n"), "{transcript}");
    assert_eq!(mock.request_count(), 1);
    settled(&gw, 1).await;

    let replay = stream_chat(&gw, &key, &headers).await;
    assert_eq!(replay.status, 200);
    assert!(replay.replayed());
    assert!(
        replay
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/event-stream"),
        "{:?}",
        replay.headers
    );
    assert_eq!(
        replay.text(),
        transcript,
        "the replayed transcript differs from what the first client received"
    );
    assert_eq!(replay.body.as_ref(), received.as_slice());
    assert_eq!(mock.request_count(), 1, "the replay went upstream");
}

// ---------------------------------------------------------------------------------------------
// 4-6: concurrency, body mismatch, malformed keys

/// N concurrent identical requests: exactly one upstream call; the others get 409
/// `idempotency_request_in_progress` with `Retry-After: 1`; a retry after the first completed
/// gets the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_make_one_upstream_call() {
    const N: usize = 10;
    let (mock, gw, key) = setup("").await;
    let headers = [
        ("idempotency-key", "concurrent-1"),
        ("x-mock-first-byte-delay-ms", "1000"),
    ];
    let gw = std::sync::Arc::new(gw);
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (gw, key) = (gw.clone(), key.clone());
            tokio::spawn(async move {
                send(&gw, "POST", "/v1/chat/completions", &key, &headers, CHAT).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    let ok: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let conflicts: Vec<&Reply> = replies.iter().filter(|r| r.status == 409).collect();
    assert_eq!(
        (ok.len(), conflicts.len()),
        (1, N - 1),
        "statuses: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(mock.request_count(), 1, "duplicates went upstream");
    assert!(!ok[0].replayed());
    for c in &conflicts {
        assert_error(
            &c.json(),
            "invalid_request_error",
            "idempotency_request_in_progress",
        );
        assert_eq!(c.header("retry-after"), Some("1"), "{:?}", c.headers);
        assert!(!c.replayed());
    }

    settled(&gw, 1).await;
    let retry = send(&gw, "POST", "/v1/chat/completions", &key, &headers, CHAT).await;
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert!(retry.replayed());
    assert_eq!(retry.body, ok[0].body);
    assert_eq!(mock.request_count(), 1);
}

/// A different body under the same key gets 422 `idempotency_key_reused`, while the first
/// request is still in flight and after it completed; the same body gets 409 and then the
/// replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_body_under_the_same_key_is_refused() {
    let (mock, gw, key) = setup("").await;
    let gw = std::sync::Arc::new(gw);
    let held = [
        ("idempotency-key", "reused-1"),
        ("x-mock-first-byte-delay-ms", "2000"),
    ];
    let first = {
        let (gw, key) = (gw.clone(), key.clone());
        tokio::spawn(
            async move { send(&gw, "POST", "/v1/chat/completions", &key, &held, CHAT).await },
        )
    };
    assert!(
        mock.wait_for_requests(1, WAIT).await,
        "the first request never reached the upstream"
    );

    // In flight.
    let other = chat(&gw, &key, "reused-1", &[], CHAT_OTHER).await;
    assert_eq!(other.status, 422, "{}", other.text());
    assert_error(
        &other.json(),
        "invalid_request_error",
        "idempotency_key_reused",
    );
    let same = chat(&gw, &key, "reused-1", &[], CHAT).await;
    assert_eq!(same.status, 409, "{}", same.text());
    assert_eq!(mock.request_count(), 1);

    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(!first.replayed());
    settled(&gw, 1).await;

    // Completed.
    let other = chat(&gw, &key, "reused-1", &[], CHAT_OTHER).await;
    assert_eq!(other.status, 422, "{}", other.text());
    assert_error(
        &other.json(),
        "invalid_request_error",
        "idempotency_key_reused",
    );
    assert!(!other.replayed());
    let same = chat(&gw, &key, "reused-1", &[], CHAT).await;
    assert_eq!(same.status, 200);
    assert!(same.replayed());
    assert_eq!(same.body, first.body);
    assert_eq!(
        mock.request_count(),
        1,
        "a refused or replayed request went upstream"
    );
}

/// Keys must be 1–255 visible ASCII characters, else 400 `invalid_idempotency_key` (and
/// nothing goes upstream); a 255-character key works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_keys_are_refused() {
    let (mock, gw, key) = setup("").await;
    let long = "k".repeat(256);
    let bad: Vec<(&str, HeaderValue)> = vec![
        ("empty", HeaderValue::from_static("")),
        ("256 characters", HeaderValue::from_str(&long).unwrap()),
        ("a space", HeaderValue::from_static("has space")),
        ("a tab", HeaderValue::from_static("has\ttab")),
        (
            "non-ASCII",
            HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
        ),
    ];
    for (what, value) in bad {
        let resp = fresh_client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("idempotency-key", value)
            .body(CHAT)
            .send()
            .await
            .unwrap();
        let reply = Reply::read(resp).await;
        assert_eq!(reply.status, 400, "key with {what}: {}", reply.text());
        assert_error(
            &reply.json(),
            "invalid_request_error",
            "invalid_idempotency_key",
        );
    }
    assert_eq!(
        mock.request_count(),
        0,
        "a request with a malformed key went upstream"
    );

    let longest = "k".repeat(255);
    let first = chat(&gw, &key, &longest, &[], CHAT).await;
    assert_eq!(first.status, 200, "255 characters: {}", first.text());
    assert!(!first.replayed());
    settled(&gw, 1).await;
    let second = chat(&gw, &key, &longest, &[], CHAT).await;
    assert_eq!(second.status, 200);
    assert!(second.replayed(), "a 255-character key is not honoured");
    assert_eq!(mock.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 7: scope

/// A request's (method, path and query, gateway key).
type Target<'a> = (&'a str, &'a str, &'a str);

/// The same Idempotency-Key and body under a different path, query (taken as sent, not
/// reordered), method or gateway key is another scope: it goes upstream again, and each scope
/// replays its own response. On GET the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_is_key_method_path_and_query() {
    let (mock, gw, key) = setup("").await;
    let (_, other_user) = new_user(&gw, "someone-else").await;
    let (_, same_user_other_key) = gw.create_key("idem", json!({"label": "second"})).await;
    let body = r#"{"n":1}"#;
    let mut claims = 0;

    // (what, first request, second request) as (method, path, key).
    let pairs: Vec<(&str, Target, Target)> = vec![
        (
            "path",
            ("POST", "/v1/echo", &key),
            ("POST", "/v1/other/echo", &key),
        ),
        (
            "query value",
            ("POST", "/v1/echo?a=1", &key),
            ("POST", "/v1/echo?a=2", &key),
        ),
        (
            "query order",
            ("POST", "/v1/echo?a=1&b=2", &key),
            ("POST", "/v1/echo?b=2&a=1", &key),
        ),
        (
            "method",
            ("POST", "/v1/echo", &key),
            ("PUT", "/v1/echo", &key),
        ),
        (
            "method (PATCH, DELETE)",
            ("PATCH", "/v1/echo", &key),
            ("DELETE", "/v1/echo", &key),
        ),
        (
            "another user",
            ("POST", "/v1/echo", &key),
            ("POST", "/v1/echo", &other_user),
        ),
        (
            "another key of the same user",
            ("POST", "/v1/echo", &key),
            ("POST", "/v1/echo", &same_user_other_key),
        ),
    ];
    for (i, (what, a, b)) in pairs.into_iter().enumerate() {
        let idem = format!("scope-{i}");
        let headers = [("idempotency-key", idem.as_str())];
        let before = mock.request_count();

        let first_a = send(&gw, a.0, a.1, a.2, &headers, body).await;
        assert_eq!(first_a.status, 200, "{what}: {}", first_a.text());
        assert!(!first_a.replayed(), "{what}: first request replayed");
        claims += 1;
        settled(&gw, claims).await;

        let first_b = send(&gw, b.0, b.1, b.2, &headers, body).await;
        assert_eq!(first_b.status, 200, "{what}: {}", first_b.text());
        assert!(
            !first_b.replayed(),
            "{what}: {} {} got the response of {} {}",
            b.0,
            b.1,
            a.0,
            a.1
        );
        assert_eq!(
            mock.request_count(),
            before + 2,
            "{what}: the second scope did not go upstream"
        );
        let seen = mock.last_request().unwrap();
        assert_eq!((seen.method.as_str(), seen.path.as_str()), (b.0, b.1));
        claims += 1;
        settled(&gw, claims).await;

        // Each scope replays its own response.
        let again_a = send(&gw, a.0, a.1, a.2, &headers, body).await;
        let again_b = send(&gw, b.0, b.1, b.2, &headers, body).await;
        assert!(
            again_a.replayed() && again_b.replayed(),
            "{what}: no replay"
        );
        assert_eq!(again_a.body, first_a.body, "{what}");
        assert_eq!(again_b.body, first_b.body, "{what}");
        assert_eq!(mock.request_count(), before + 2, "{what}");
    }

    // GET: the header is ignored, even a malformed one.
    let before = mock.request_count();
    for value in ["get-1", "get-1", "not a valid key"] {
        let reply = send(
            &gw,
            "GET",
            "/v1/models",
            &key,
            &[("idempotency-key", value)],
            "",
        )
        .await;
        assert_eq!(
            reply.status,
            200,
            "GET with key {value:?}: {}",
            reply.text()
        );
        assert!(!reply.replayed(), "a GET was replayed");
    }
    assert_eq!(
        mock.request_count(),
        before + 3,
        "GETs must all go upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// 8: what is not stored

/// Sends the same request twice (waiting for the first to settle) and asserts both went
/// upstream and neither was replayed; returns the two replies.
async fn not_stored(
    gw: &TestGateway,
    mock: &MockUpstream,
    claims: &mut u64,
    what: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (Reply, Reply) {
    let before = mock.request_count();
    let first = send(gw, "POST", "/v1/chat/completions", key, headers, body).await;
    *claims += 1;
    settled(gw, *claims).await;
    let second = send(gw, "POST", "/v1/chat/completions", key, headers, body).await;
    *claims += 1;
    settled(gw, *claims).await;
    assert!(!first.replayed() && !second.replayed(), "{what}: replayed");
    assert_eq!(
        mock.request_count(),
        before + 2,
        "{what}: the retry did not go upstream (first {}, second {}: {})",
        first.status,
        second.status,
        second.text()
    );
    (first, second)
}

/// Not stored, and released so a retry goes upstream: upstream 5xx, 408, 409 and 429,
/// responses over `max_response_bytes`, and streams cut short. A 4xx such as 400 is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_responses_release_the_key() {
    let (mock, gw, key) = setup("idempotency: {max_response_bytes: 2000}").await;
    let mut claims = 0;
    let skipped_before = idem_counts(&gw).await[4];

    for status in ["500", "503", "429", "409", "408"] {
        let idem = format!("status-{status}");
        let headers = [
            ("idempotency-key", idem.as_str()),
            ("x-mock-status", status),
        ];
        let (first, second) = not_stored(
            &gw,
            &mock,
            &mut claims,
            &format!("upstream {status}"),
            &key,
            &headers,
            CHAT,
        )
        .await;
        let expected: u16 = status.parse().unwrap();
        assert_eq!((first.status, second.status), (expected, expected));
    }

    // Larger than max_response_bytes: 300 pieces of text make well over 2000 bytes.
    let headers = [("idempotency-key", "too-large"), ("x-mock-chunks", "300")];
    let (first, second) =
        not_stored(&gw, &mock, &mut claims, "too large", &key, &headers, CHAT).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert!(first.body.len() > 2000, "{} bytes", first.body.len());
    let text: String = (0..300).map(|i| format!("tok{i} ")).collect();
    assert_eq!(
        first.json()["choices"][0]["message"]["content"],
        text.as_str(),
        "the client still gets the whole large response"
    );

    // Cut short: the upstream drops the stream after two events.
    mock.set_mode(Mode::StreamThenDrop {
        events_before_drop: 2,
    });
    let headers = [("idempotency-key", "cut-short")];
    let resp = stream_request(&gw, &key, &headers).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "a stream cut short upstream must not end cleanly for the client"
    );
    claims += 1;
    settled(&gw, claims).await;
    mock.set_mode(Mode::Normal);
    let before = mock.request_count();
    let retry = stream_chat(&gw, &key, &headers).await;
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert!(!retry.replayed(), "a stream cut short was stored");
    assert_eq!(
        mock.request_count(),
        before + 1,
        "the retry did not go upstream"
    );
    assert!(retry.text().ends_with("data: [DONE]\n\n"));
    assert!(retry.body.len() <= 2000, "{} bytes", retry.body.len());
    claims += 1;
    settled(&gw, claims).await;
    // The complete retry is stored in turn.
    let again = stream_chat(&gw, &key, &headers).await;
    assert!(again.replayed());
    assert_eq!(again.body, retry.body);
    assert_eq!(mock.request_count(), before + 1);

    let skipped = idem_counts(&gw).await[4] - skipped_before;
    assert_eq!(skipped, 5 * 2 + 2 + 1, "skipped outcomes");

    // Stored: an upstream 400, and a response within the size cap.
    for (what, headers) in [
        (
            "upstream 400",
            vec![("idempotency-key", "status-400"), ("x-mock-status", "400")],
        ),
        (
            "within the cap",
            vec![("idempotency-key", "small"), ("x-mock-chunks", "20")],
        ),
    ] {
        let before = mock.request_count();
        let first = send(&gw, "POST", "/v1/chat/completions", &key, &headers, CHAT).await;
        assert!(
            first.body.len() <= 2000,
            "{what}: {} bytes",
            first.body.len()
        );
        claims += 1;
        settled(&gw, claims).await;
        let second = send(&gw, "POST", "/v1/chat/completions", &key, &headers, CHAT).await;
        assert!(!first.replayed(), "{what}");
        assert!(second.replayed(), "{what}: not stored ({})", second.status);
        assert_eq!(second.status, first.status, "{what}");
        assert_eq!(second.body, first.body, "{what}");
        assert_eq!(mock.request_count(), before + 1, "{what}");
    }
}

/// A gateway error (502: no backend reachable) is not stored either: the retry is tried again,
/// and once the backend is up the same request goes through and is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_release_the_key() {
    let port = free_port();
    let gw = TestGateway::start(GatewayConfig::new(&format!("http://127.0.0.1:{port}"))).await;
    let (_, key) = new_user(&gw, "idem").await;

    for n in 1..=2 {
        let reply = chat(&gw, &key, "dead-upstream", &[], CHAT).await;
        assert_eq!(reply.status, 502, "attempt {n}: {}", reply.text());
        assert_error(&reply.json(), "upstream_error", "upstream_unavailable");
        assert!(
            !reply.replayed(),
            "attempt {n}: a gateway error was replayed"
        );
        settled(&gw, n).await;
    }
    assert_eq!(idem_counts(&gw).await[4], 2, "skipped");

    // The backend comes up: the same request now goes upstream.
    let mock = MockUpstream::start_on(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("bind the mock on the formerly dead port");
    let reply = chat(&gw, &key, "dead-upstream", &[], CHAT).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!reply.replayed());
    assert_eq!(mock.request_count(), 1);
    settled(&gw, 3).await;
    let again = chat(&gw, &key, "dead-upstream", &[], CHAT).await;
    assert!(again.replayed());
    assert_eq!(again.body, reply.body);
    assert_eq!(mock.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 9: stale claims

/// A claim older than `inflight_timeout_s` is dropped: while the first request is still held
/// upstream, an identical one gets 409 at first and, once the claim is stale, goes upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_claim_is_dropped() {
    let (mock, gw, key) = setup("idempotency: {inflight_timeout_s: 1}").await;
    let gw = std::sync::Arc::new(gw);
    let headers = [
        ("idempotency-key", "stale-1"),
        ("x-mock-first-byte-delay-ms", "3000"),
    ];
    let first = {
        let (gw, key) = (gw.clone(), key.clone());
        tokio::spawn(async move {
            send(&gw, "POST", "/v1/chat/completions", &key, &headers, CHAT).await
        })
    };
    assert!(mock.wait_for_requests(1, WAIT).await);

    // Probe with the identical request: 409 while the claim is fresh; once it is older than
    // inflight_timeout_s a probe is let through to the upstream (the first is still held there).
    let mut conflicts = 0;
    let mut let_through = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline && !first.is_finished() {
        let probe = {
            let (gw, key) = (gw.clone(), key.clone());
            tokio::spawn(async move {
                send(&gw, "POST", "/v1/chat/completions", &key, &headers, CHAT).await
            })
        };
        // Either the gateway answers the probe itself, or the probe reaches the upstream.
        let decided = wait_until(WAIT, || probe.is_finished() || mock.request_count() >= 2).await;
        assert!(decided, "a probe was neither answered nor sent upstream");
        if mock.request_count() >= 2 {
            assert!(
                !first.is_finished(),
                "the first request finished before the probe went upstream: the test proves \
                 nothing"
            );
            let_through = Some(probe);
            break;
        }
        let reply = probe.await.unwrap();
        assert_eq!(reply.status, 409, "{}", reply.text());
        conflicts += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = let_through.expect("the stale claim was never dropped");
    assert!(conflicts >= 1, "a fresh claim must answer 409");
    let second = second.await.unwrap();
    assert_eq!(second.status, 200, "{}", second.text());
    assert!(!second.replayed());
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(mock.request_count(), 2);
}

/// A crash mid-request leaves nothing locked: after SIGKILL with a request held upstream and a
/// restart, the same request goes upstream (no 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_request_leaves_no_claim() {
    let (mock, mut gw, key) = setup("").await;
    let headers = [
        ("idempotency-key", "crash-1"),
        ("x-mock-first-byte-delay-ms", "3000"),
    ];
    let held = request(&gw, "POST", "/v1/chat/completions", &key, &headers, CHAT).send();
    let held = tokio::spawn(held);
    assert!(mock.wait_for_requests(1, WAIT).await);
    gw.stop();
    assert!(
        held.await.unwrap().is_err(),
        "the held request should die with the gateway"
    );
    gw.spawn().await;

    let reply = chat(
        &gw,
        &key,
        "crash-1",
        &[("x-mock-first-byte-delay-ms", "3000")],
        CHAT,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!reply.replayed());
    assert_eq!(
        mock.request_count(),
        2,
        "the retry after the crash did not go upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// 10-11: TTL, sweep, restarts

/// Records live for `ttl_s`: replayed at once, and after expiry the same request goes upstream
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_after_ttl() {
    let (mock, gw, key) = setup("idempotency: {ttl_s: 2}").await;
    let first = chat(&gw, &key, "ttl-1", &[], CHAT).await;
    assert_eq!(first.status, 200);
    settled(&gw, 1).await;
    let replay = chat(&gw, &key, "ttl-1", &[], CHAT).await;
    assert!(replay.replayed(), "no replay within the TTL");
    assert_eq!(mock.request_count(), 1);

    // Poll until the response is no longer replayed (every poll before that is a replay).
    let mut fresh = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let reply = chat(&gw, &key, "ttl-1", &[], CHAT).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if !reply.replayed() {
            fresh = Some(reply);
            break;
        }
        assert_eq!(reply.body, first.body);
        assert_eq!(mock.request_count(), 1, "a replay went upstream");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = fresh.expect("the record never expired");
    assert_eq!(
        mock.request_count(),
        2,
        "after expiry the request goes upstream"
    );
    assert_ne!(fresh.json()["id"], first.json()["id"], "a new completion");
    settled(&gw, 2).await;
    // … and is stored anew.
    let again = chat(&gw, &key, "ttl-1", &[], CHAT).await;
    assert!(again.replayed());
    assert_eq!(again.body, fresh.body);
}

/// The background sweep removes expired records from sled (so the database does not grow):
/// with `ttl_s: 1`, three stored records are on disk after a graceful stop (control: only the
/// sweep removes them); after a restart and the sweep (every 60 s; its log line says when it
/// ran), the store holds none. The only long test (about 65 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_expired_records() {
    let (mock, mut gw, key) = setup("idempotency: {ttl_s: 1}").await;
    for i in 0..3 {
        let reply = chat(&gw, &key, &format!("sweep-{i}"), &[], CHAT).await;
        assert_eq!(reply.status, 200);
    }
    settled(&gw, 3).await;
    assert_eq!(mock.request_count(), 3);

    // Control: written (and already expired), but still in sled until a sweep.
    terminate_gracefully(&mut gw).await;
    assert_eq!(
        stored_records(gw.dir.join("data")).await,
        3,
        "the records were not written at a graceful stop"
    );

    gw.spawn().await;
    let swept = wait_until(Duration::from_secs(75), || {
        gw.stderr().contains("expired idempotency records")
    })
    .await;
    assert!(swept, "no sweep within 75 s; stderr:\n{}", gw.stderr());
    assert!(
        gw.stderr()
            .contains("removed 3 expired idempotency records"),
        "{}",
        gw.stderr()
    );
    terminate_gracefully(&mut gw).await;
    assert_eq!(
        stored_records(gw.dir.join("data")).await,
        0,
        "expired records are still in sled after the sweep"
    );
}

/// Records survive a graceful restart: replayed afterwards with no upstream call. Also after
/// SIGKILL, once the write-behind has put the record on disk — awaited by polling a copy of the
/// data directory (opened as sled would after a crash) until it holds the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_restarts() {
    let (mock, mut gw, key) = setup("").await;
    let first = chat(&gw, &key, "restart-1", &[], CHAT).await;
    assert_eq!(first.status, 200);
    settled(&gw, 1).await;

    terminate_gracefully(&mut gw).await;
    gw.spawn().await;
    let replay = chat(&gw, &key, "restart-1", &[], CHAT).await;
    assert_eq!(replay.status, 200);
    assert!(replay.replayed(), "not replayed after a graceful restart");
    assert_eq!(replay.body, first.body);
    assert_eq!(mock.request_count(), 1);

    // SIGKILL: a second record, durable within the write-behind's second.
    let second = chat(&gw, &key, "restart-2", &[], CHAT).await;
    assert_eq!(second.status, 200);
    assert_eq!(mock.request_count(), 2);
    let durable = eventually(Duration::from_secs(10), || async {
        durable_records(&gw).await >= 2
    })
    .await;
    assert!(durable, "the record never reached the disk");
    gw.stop();
    gw.spawn().await;
    for (idem, original) in [("restart-1", &first), ("restart-2", &second)] {
        let replay = chat(&gw, &key, idem, &[], CHAT).await;
        assert_eq!(replay.status, 200);
        assert!(replay.replayed(), "{idem}: not replayed after SIGKILL");
        assert_eq!(replay.body, original.body, "{idem}");
    }
    assert_eq!(
        mock.request_count(),
        2,
        "a replay after a restart went upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// 12-13: usage and metrics

/// What `GET /admin/usage?key=…&by=day` adds up to: (requests, prompt, completion, errors).
async fn usage_of(gw: &TestGateway, id: &str) -> (u64, u64, u64, u64) {
    let body = gw
        .admin_expect(200, "GET", &format!("/admin/usage?key={id}&by=day"), None)
        .await;
    let rows = body["data"].as_array().cloned().unwrap_or_default();
    let sum = |f: &str| rows.iter().map(|r| r[f].as_u64().unwrap_or(0)).sum();
    (
        sum("requests"),
        sum("prompt_tokens"),
        sum("completion_tokens"),
        sum("errors"),
    )
}

/// SPEC §3.6: a replay counts as a request but charges no tokens; a refused 422 counts as
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_counts_as_a_request_and_charges_no_tokens() {
    let (mock, gw) = start_with_mock("").await;
    let (id, key) = new_user(&gw, "payer").await;

    let first = chat(&gw, &key, "usage-1", &[], CHAT).await;
    assert_eq!(first.status, 200);
    let usage = first.json()["usage"].clone();
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt > 0 && completion > 0, "{usage}");
    settled(&gw, 1).await;
    let replay = chat(&gw, &key, "usage-1", &[], CHAT).await;
    assert!(replay.replayed());
    assert_eq!(mock.request_count(), 1);

    let reached = eventually(WAIT, || async { usage_of(&gw, &id).await.0 >= 2 }).await;
    assert!(reached, "usage: {:?}", usage_of(&gw, &id).await);
    assert_eq!(
        usage_of(&gw, &id).await,
        (2, prompt, completion, 0),
        "(requests, prompt, completion, errors) after an original and a replay"
    );

    // A refusal (422) is not a request; a plain request afterwards settles the count.
    let refused = chat(&gw, &key, "usage-1", &[], CHAT_OTHER).await;
    assert_eq!(refused.status, 422);
    let plain = send(&gw, "POST", "/v1/chat/completions", &key, &[], CHAT).await;
    assert_eq!(plain.status, 200);
    let reached = eventually(WAIT, || async { usage_of(&gw, &id).await.0 >= 3 }).await;
    assert!(reached, "usage: {:?}", usage_of(&gw, &id).await);
    assert_eq!(
        usage_of(&gw, &id).await,
        (3, 2 * prompt, 2 * completion, 0),
        "the 422 was counted, or the replay charged tokens"
    );
}

/// SPEC §3.6: replays count against the request windows, refusals (409, 422) do not. A key
/// allowed two requests a minute: the original, a 422 and a replay leave it at its limit, so the
/// next replay is refused with 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_count_against_request_limits() {
    let (mock, gw) = start_with_mock("").await;
    new_user(&gw, "limited").await;
    let (_, key) = gw
        .create_key("limited", json!({"limits": {"requests_per_minute": 2}}))
        .await;

    let first = chat(&gw, &key, "limit-1", &[], CHAT).await;
    assert_eq!(first.status, 200, "{}", first.text());
    settled(&gw, 1).await;
    let refused = chat(&gw, &key, "limit-1", &[], CHAT_OTHER).await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    let replay = chat(&gw, &key, "limit-1", &[], CHAT).await;
    assert_eq!(replay.status, 200, "the 422 was counted: {}", replay.text());
    assert!(replay.replayed());
    assert_eq!(replay.header("x-ratelimit-remaining-requests"), Some("0"));
    let over = chat(&gw, &key, "limit-1", &[], CHAT).await;
    assert_eq!(
        over.status,
        429,
        "the replay was not counted: {}",
        over.text()
    );
    assert_error(&over.json(), "requests", "rate_limit_exceeded");
    assert!(!over.replayed());
    assert_eq!(mock.request_count(), 1);
}

/// SPEC §6: `tollgate_idempotency_total{result}` counts stored, replayed, conflict, mismatch
/// and skipped outcomes; requests without the header count nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_counted_in_metrics() {
    let (mock, gw, key) = setup("").await;
    assert_eq!(idem_counts(&gw).await, [0; 5]);

    let plain = send(&gw, "POST", "/v1/chat/completions", &key, &[], CHAT).await;
    assert_eq!(plain.status, 200);

    // stored + replayed
    assert_eq!(chat(&gw, &key, "m-1", &[], CHAT).await.status, 200);
    settled(&gw, 1).await;
    assert!(chat(&gw, &key, "m-1", &[], CHAT).await.replayed());

    // conflict + mismatch while in flight, then stored
    let gw = std::sync::Arc::new(gw);
    let held = {
        let (gw, key) = (gw.clone(), key.clone());
        tokio::spawn(async move {
            chat(
                &gw,
                &key,
                "m-2",
                &[("x-mock-first-byte-delay-ms", "1500")],
                CHAT,
            )
            .await
        })
    };
    assert!(mock.wait_for_requests(3, WAIT).await);
    assert_eq!(chat(&gw, &key, "m-2", &[], CHAT).await.status, 409);
    assert_eq!(chat(&gw, &key, "m-2", &[], CHAT_OTHER).await.status, 422);
    assert_eq!(held.await.unwrap().status, 200);
    settled(&gw, 2).await;

    // skipped
    let failed = chat(&gw, &key, "m-3", &[("x-mock-status", "500")], CHAT).await;
    assert_eq!(failed.status, 500);
    settled(&gw, 3).await;

    assert_eq!(
        idem_counts(&gw).await,
        [2, 1, 1, 1, 1],
        "[stored, replayed, conflict, mismatch, skipped]"
    );
    assert_eq!(mock.request_count(), 4);
}

// ---------------------------------------------------------------------------------------------
// 14: the official Python SDK

/// Runs with GW_URL, GW_KEY; prints OK lines and exits non-zero with a reason on failure.
const SDK_SCRIPT: &str = r#"
import os, sys
from openai import OpenAI

client = OpenAI(base_url=os.environ["GW_URL"] + "/v1", api_key=os.environ["GW_KEY"],
                max_retries=0, timeout=30)
messages = [{"role": "user", "content": "Say hello"}]
headers = {"Idempotency-Key": "sdk-order-0001"}

raw = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=messages, extra_headers=headers)
assert raw.headers.get("idempotent-replayed") is None, dict(raw.headers)
first = raw.parse()
print("OK first", first.id)
sys.stdout.flush()
# Wait for the go-ahead (the test waits until the gateway settled the first request).
sys.stdin.readline()

second = client.chat.completions.create(
    model="gpt-4o-mini", messages=messages, extra_headers=headers)
assert second.id == first.id, (first.id, second.id)
assert second.choices[0].message.content == first.choices[0].message.content
print("OK same completion")

raw = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=messages, extra_headers=headers)
assert raw.headers.get("idempotent-replayed") == "true", dict(raw.headers)
assert raw.parse().id == first.id
print("OK replayed header")
"#;

/// The official `openai` Python SDK with `extra_headers={"Idempotency-Key": …}`: identical calls
/// return the identical completion, the upstream sees one request, and `with_raw_response`
/// shows `idempotent-replayed: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_with_extra_headers() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    common::python::require_openai();
    let (mock, gw, key) = setup("").await;
    let mut child = common::python::sdk_command(SDK_SCRIPT, &gw.url(""), &key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first_line = tokio::task::spawn_blocking(move || {
        let line = lines.next().and_then(Result::ok);
        (line, lines)
    });
    let (line, lines) = first_line.await.unwrap();
    if !line.as_deref().unwrap_or_default().starts_with("OK first") {
        let out = child.wait_with_output().unwrap();
        panic!(
            "the SDK script failed at its first call: {line:?}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    settled(&gw, 1).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let (rest, status, stderr) = tokio::task::spawn_blocking(move || {
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let out = child.wait_with_output().unwrap();
        (
            rest,
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "the SDK script failed ({status}):\nstdout:\n{}\nstderr:\n{stderr}",
        rest.join("\n")
    );
    for step in ["OK same completion", "OK replayed header"] {
        assert!(rest.iter().any(|l| l == step), "{step} missing: {rest:?}");
    }
    assert_eq!(mock.request_count(), 1, "the SDK's repeats went upstream");
}
