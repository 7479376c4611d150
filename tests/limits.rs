//! Rate limits, budgets and usage metering end to end (SPEC §3.6, §4, the usage routes of §3
//! and §5, and `tollgate_rate_limited_total` of §6): what a client sees from a running gateway
//! in front of the mock upstream.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use rand::seq::SliceRandom;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use common::assert::{assert_error, header_str, metric_series};
use common::mock::MockUpstream;
use common::{
    chat_body, eventually, fresh_client, start_with_mock, GatewayConfig, TestGateway, ADMIN_TOKEN,
};

const WAIT: Duration = Duration::from_secs(30);

/// What a client got back: status, headers and the body (JSON when it parses).
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        header_str(&self.headers, name)
    }
}

async fn read_reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

/// A chat completion for `model` with `key` and extra request headers.
async fn chat_with(
    client: &reqwest::Client,
    gw: &TestGateway,
    key: &str,
    model: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body(model));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read_reply(req.send().await.unwrap()).await
}

/// A plain `gpt-4o-mini` chat completion with `key` on a fresh connection.
async fn chat(gw: &TestGateway, key: &str) -> Reply {
    chat_with(&fresh_client(), gw, key, "gpt-4o-mini", &[]).await
}

/// A 429 of a minute/hour window or of `max_concurrent` (SPEC §3.6, §4); returns
/// (`Retry-After` in seconds, `retry-after-ms`).
fn assert_window_429(reply: &Reply, kind: &str) -> (u64, u64) {
    assert_eq!(reply.status, 429, "expected a 429: {}", reply.body);
    assert_error(&reply.body, kind, "rate_limit_exceeded");
    let secs: u64 = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", reply.headers))
        .parse()
        .expect("Retry-After in whole seconds");
    let ms: u64 = reply
        .header("retry-after-ms")
        .unwrap_or_else(|| panic!("no retry-after-ms: {:?}", reply.headers))
        .parse()
        .expect("retry-after-ms is an integer");
    assert!(secs >= 1, "Retry-After {secs}");
    assert_eq!(
        secs,
        ms.div_ceil(1000),
        "Retry-After is retry-after-ms rounded up"
    );
    assert_ne!(
        reply.header("x-should-retry"),
        Some("false"),
        "a window refusal is worth retrying"
    );
    (secs, ms)
}

/// A 429 of a daily budget (SPEC §3.6, §4).
fn assert_budget_429(reply: &Reply) {
    assert_eq!(reply.status, 429, "expected a 429: {}", reply.body);
    assert_error(&reply.body, "insufficient_quota", "insufficient_quota");
    assert_eq!(
        reply.header("x-should-retry"),
        Some("false"),
        "{:?}",
        reply.headers
    );
    assert_eq!(
        reply.header("retry-after"),
        None,
        "no Retry-After on a budget refusal"
    );
}

/// `^(\d+h)?(\d+m)?\d+(\.\d+)?s$|^\d+ms$`: the duration style of `x-ratelimit-reset-*`.
fn is_reset_duration(s: &str) -> bool {
    fn digits(s: &str) -> usize {
        s.bytes().take_while(u8::is_ascii_digit).count()
    }
    if let Some(ms) = s.strip_suffix("ms") {
        return !ms.is_empty() && digits(ms) == ms.len();
    }
    let Some(mut rest) = s.strip_suffix('s') else {
        return false;
    };
    for unit in ['h', 'm'] {
        let n = digits(rest);
        if n > 0 && rest[n..].starts_with(unit) {
            rest = &rest[n + 1..];
        }
    }
    let whole = digits(rest);
    if whole == 0 {
        return false;
    }
    match rest[whole..].strip_prefix('.') {
        None => whole == rest.len(),
        Some(frac) => !frac.is_empty() && digits(frac) == frac.len(),
    }
}

async fn rate_limited(gw: &TestGateway, limit: &str) -> f64 {
    metric_series(
        &gw.metrics().await,
        &format!("tollgate_rate_limited_total{{limit=\"{limit}\"}}"),
    )
    .unwrap_or(0.0)
}

/// `GET /admin/usage` with `query`: the `data` rows.
async fn admin_usage(gw: &TestGateway, query: &str) -> Vec<Value> {
    let body = gw
        .admin_expect(200, "GET", &format!("/admin/usage{query}"), None)
        .await;
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {body}"))
        .clone()
}

fn sum(rows: &[Value], field: &str) -> u64 {
    rows.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum()
}

/// Waits until `GET /admin/usage{query}` adds up to `requests` (usage is debited once the
/// response is on its way, so right after a reply it may lag a moment) and returns its rows.
async fn usage_settled(gw: &TestGateway, query: &str, requests: u64) -> Vec<Value> {
    let settled = eventually(WAIT, || async {
        sum(&admin_usage(gw, query).await, "requests") >= requests
    })
    .await;
    let rows = admin_usage(gw, query).await;
    assert!(
        settled,
        "usage{query} never reached {requests} requests: {rows:?}"
    );
    rows
}

/// `GET /account` with `key`.
async fn account(gw: &TestGateway, key: &str) -> Value {
    let reply = read_reply(
        fresh_client()
            .get(gw.url("/account"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "/account: {}", reply.body);
    reply.body
}

/// Sends SIGTERM and waits until the process has exited (a zombie until it is reaped).
async fn terminate_gracefully(gw: &mut TestGateway) {
    common::terminate_gracefully(gw, WAIT).await;
}

/// A mock, a gateway in front of it and user `user` with one key limited by `limits`; returns
/// (mock, gateway, key id, key).
async fn limited_key(user: &str, limits: Value) -> (MockUpstream, TestGateway, String, String) {
    let (mock, gw) = start_with_mock("").await;
    gw.create_user(user).await;
    let (id, key) = gw.create_key(user, json!({ "limits": limits })).await;
    (mock, gw, id, key)
}

/// SPEC §3.6 exactness: a key limited to N requests a minute admits exactly N out of 2N sent
/// at once; the others get a proper window 429 and never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_2n_concurrent_requests_admits_exactly_n() {
    const N: usize = 20;
    let (mock, gw, _, key) = limited_key("burst", json!({"requests_per_minute": N})).await;

    // A connection per request: nothing waits for another request's connection.
    let client = fresh_client();
    let replies = futures_util::future::join_all(
        (0..2 * N).map(|_| chat_with(&client, &gw, &key, "gpt-4o-mini", &[])),
    )
    .await;

    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status != 200).collect();
    assert_eq!(ok, N, "admitted out of {}", 2 * N);
    assert_eq!(refused.len(), N);
    for reply in refused {
        assert_window_429(reply, "requests");
    }
    assert_eq!(
        mock.request_count(),
        N,
        "requests that reached the upstream"
    );
}

/// SPEC §3.6: `max_concurrent` caps requests in flight (429 type `requests`, `Retry-After: 1`);
/// once they are done, the key is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_caps_requests_in_flight() {
    let (mock, gw, _, key) = limited_key("conc", json!({"max_concurrent": 3})).await;

    let client = fresh_client();
    let slow = futures_util::future::join_all((0..3).map(|_| {
        chat_with(
            &client,
            &gw,
            &key,
            "gpt-4o-mini",
            &[("x-mock-first-byte-delay-ms", "3000")],
        )
    }));
    let check = async {
        assert!(
            mock.wait_for_requests(3, WAIT).await,
            "the three slow requests never reached the upstream"
        );
        let refused = futures_util::future::join_all(
            (0..3).map(|_| chat_with(&client, &gw, &key, "gpt-4o-mini", &[])),
        )
        .await;
        for reply in &refused {
            let (secs, ms) = assert_window_429(reply, "requests");
            assert_eq!(
                (secs, ms),
                (1, 1000),
                "Retry-After of a concurrency refusal"
            );
        }
    };
    let (slow, ()) = tokio::join!(slow, check);
    for reply in &slow {
        assert_eq!(reply.status, 200, "a slow request: {}", reply.body);
    }
    assert_eq!(
        mock.request_count(),
        3,
        "refused requests reached the upstream"
    );

    // The slots are given back as the requests finish (their bookkeeping ends just after
    // the last byte went out): wait for that, then a new request is served.
    let freed = eventually(WAIT, || async {
        account(&gw, &key).await["remaining"]["max_concurrent"] == 3
    })
    .await;
    assert!(
        freed,
        "in-flight slots not freed: {}",
        account(&gw, &key).await
    );
    let reply = chat(&gw, &key).await;
    assert_eq!(
        reply.status, 200,
        "after the slow ones finished: {}",
        reply.body
    );
}

/// SPEC §3.6: "With 10,000 keys sending traffic at once, a key under its limit is never
/// refused." Every key may make two requests a minute and makes two, all keys at once in a
/// random order: all 20,000 are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keys_under_their_limits_are_never_refused() {
    use tollgate::auth::{generate_id, generate_secret, hash_secret, hex};
    use tollgate::config::LimitValues;
    use tollgate::store::{KeyRecord, Store, UserRecord};

    const KEYS: usize = 10_000;
    let mock = MockUpstream::start().await;
    // This test is about the limiter, not the upstream: 200 requests at a time through a
    // debug build on 2 cores can take longer than the harness's short upstream timeouts.
    let upstreams = format!(
        "upstreams:\n  openai:\n    backends: [\"{}\"]\n    keys: [sk-upstream-test]\n    connect_timeout_ms: 30000\n    read_timeout_ms: 60000\n",
        mock.url()
    );
    let mut gw = TestGateway::start(GatewayConfig::new(&mock.url()).upstreams(&upstreams)).await;

    // Writing 10,000 keys through the admin API would flush each one: write them directly.
    gw.stop();
    let dir = gw.dir.join("data");
    let secrets: Vec<String> = tokio::task::spawn_blocking(move || {
        let store = Store::open(&dir, 16, Duration::from_secs(5)).expect("open the store");
        let now = tollgate::time::now_unix();
        let user = UserRecord {
            name: "many".into(),
            email: None,
            created_at: now,
            limits: None,
        };
        assert!(store.insert_user(&user).unwrap());
        let limits = LimitValues {
            requests_per_minute: Some(2),
            ..LimitValues::default()
        };
        let secrets: Vec<String> = (0..KEYS)
            .map(|_| {
                let secret = generate_secret("sk-tg-");
                let record = KeyRecord {
                    id: generate_id("key_"),
                    user: "many".into(),
                    created_at: now,
                    limits: Some(limits.clone()),
                    hash: hex(&hash_secret(&secret)),
                    source: "admin".into(),
                    ..KeyRecord::default()
                };
                store.put_key(&record, None).unwrap();
                secret
            })
            .collect();
        store.flush().unwrap();
        secrets
    })
    .await
    .unwrap();
    gw.spawn().await;

    let mut order: Vec<usize> = (0..KEYS).flat_map(|i| [i, i]).collect();
    order.shuffle(&mut rand::rng());
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let url = gw.url("/v1/models");
    let failures: Vec<String> = stream::iter(order)
        .map(|i| {
            let (client, url, secret) = (client.clone(), url.clone(), secrets[i].clone());
            async move {
                match client.get(url).bearer_auth(secret).send().await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.bytes().await;
                        None
                    }
                    Ok(resp) => {
                        let status = resp.status();
                        let text = resp.text().await.unwrap_or_default();
                        Some(format!("key #{i}: {status} {text}"))
                    }
                    Err(e) => Some(format!("key #{i}: {e}")),
                }
            }
        })
        .buffer_unordered(200)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {} requests were not served, e.g. {:?}",
        failures.len(),
        2 * KEYS,
        &failures[..failures.len().min(5)]
    );
    assert_eq!(mock.request_count(), 2 * KEYS);

    // The limit is real: a third request within the minute is refused.
    for i in [0, KEYS / 2, KEYS - 1] {
        let reply = read_reply(
            fresh_client()
                .get(gw.url("/v1/models"))
                .bearer_auth(&secrets[i])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_window_429(&reply, "requests");
    }
    assert_eq!(mock.request_count(), 2 * KEYS);
}

/// SPEC §3.6: `x-ratelimit-*` on served responses, for the tightest window of each kind,
/// with duration-style resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_on_served_responses() {
    let (_mock, gw) = start_with_mock("").await;
    gw.create_user("hdr").await;
    let (_, key) = gw
        .create_key(
            "hdr",
            json!({"limits": {"requests_per_minute": 3, "tokens_per_minute": 1000}}),
        )
        .await;

    for remaining in ["2", "1", "0"] {
        let reply = chat(&gw, &key).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(
            reply.header("x-ratelimit-remaining-requests"),
            Some(remaining),
            "{:?}",
            reply.headers
        );
        let reset = reply
            .header("x-ratelimit-reset-requests")
            .unwrap_or_default();
        assert!(
            is_reset_duration(reset),
            "x-ratelimit-reset-requests: {reset:?}"
        );
        assert_eq!(reply.header("x-ratelimit-limit-tokens"), Some("1000"));
        let tokens_left: u64 = reply
            .header("x-ratelimit-remaining-tokens")
            .unwrap_or_else(|| panic!("no x-ratelimit-remaining-tokens: {:?}", reply.headers))
            .parse()
            .expect("x-ratelimit-remaining-tokens is an integer");
        assert!(tokens_left <= 1000, "remaining tokens {tokens_left}");
        let reset = reply.header("x-ratelimit-reset-tokens").unwrap_or_default();
        assert!(
            is_reset_duration(reset),
            "x-ratelimit-reset-tokens: {reset:?}"
        );
    }
    // The fourth is refused, and the refusal carries the same trio.
    let refused = chat(&gw, &key).await;
    assert_window_429(&refused, "requests");
    assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));

    // A key with only a daily budget shows the day's numbers, and no token trio.
    let (_, day_key) = gw
        .create_key("hdr", json!({"limits": {"requests_per_day": 5}}))
        .await;
    let reply = chat(&gw, &day_key).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("5"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("4"));
    let reset = reply
        .header("x-ratelimit-reset-requests")
        .unwrap_or_default();
    assert!(
        is_reset_duration(reset),
        "x-ratelimit-reset-requests: {reset:?}"
    );
    assert_eq!(reply.header("x-ratelimit-limit-tokens"), None);

    // A key without limits gets none of these headers.
    let (_, free_key) = gw.create_key("hdr", json!({})).await;
    let reply = chat(&gw, &free_key).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-ratelimit-limit-requests"), None);
}

#[test]
fn reset_duration_pattern() {
    for ok in [
        "1s",
        "59s",
        "59.9s",
        "1m0s",
        "6m0s",
        "1h2m3s",
        "350ms",
        "0s",
        "23h59m59.25s",
    ] {
        assert!(is_reset_duration(ok), "{ok}");
    }
    for bad in [
        "", "s", "ms", "1.s", "1m", "1h", "60", "1.5ms", "m0s", "1x0s", "1s ",
    ] {
        assert!(!is_reset_duration(bad), "{bad}");
    }
}

/// SPEC §3.6, §4: a spent daily budget is `insufficient_quota` with `x-should-retry: false`,
/// survives a graceful restart, and the usage of the day is all kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_budget_is_final_and_survives_a_graceful_restart() {
    let (_mock, mut gw) = start_with_mock("").await;
    gw.create_user("daily").await;
    let (id, key) = gw
        .create_key("daily", json!({"limits": {"requests_per_day": 2}}))
        .await;

    for _ in 0..2 {
        let reply = chat(&gw, &key).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_budget_429(&chat(&gw, &key).await);
    usage_settled(&gw, &format!("?key={id}"), 2).await;

    terminate_gracefully(&mut gw).await;
    gw.spawn().await;

    assert_budget_429(&chat(&gw, &key).await);
    let rows = admin_usage(&gw, &format!("?key={id}")).await;
    assert_eq!(
        sum(&rows, "requests"),
        2,
        "usage after a graceful restart: {rows:?}"
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["key_id"], id.as_str());
    assert_eq!(rows[0]["user"], "daily");
}

/// SPEC §3: a user's limits apply across all the user's keys; SPEC §5 / issue: a key's limits
/// changed through the admin API apply from the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_limits_span_keys_and_changes_apply_at_once() {
    let (_mock, gw) = start_with_mock("").await;
    let first = gw.create_user("team").await;
    gw.admin_expect(
        200,
        "PATCH",
        "/admin/users/team",
        Some(json!({"limits": {"requests_per_minute": 2}})),
    )
    .await;
    let (_, second) = gw.create_key("team", json!({})).await;

    assert_eq!(chat(&gw, &first).await.status, 200);
    assert_eq!(chat(&gw, &second).await.status, 200);
    assert_window_429(&chat(&gw, &first).await, "requests");
    assert_window_429(&chat(&gw, &second).await, "requests");

    // Another user is not touched by the team's limit.
    let other = gw.create_user("solo").await;
    assert_eq!(chat(&gw, &other).await.status, 200);

    // A key's own limit, tightened and then removed.
    let (id, key) = gw
        .create_key("solo", json!({"limits": {"requests_per_minute": 5}}))
        .await;
    assert_eq!(chat(&gw, &key).await.status, 200);
    let (status, body) = gw
        .patch_key(&id, json!({"limits": {"requests_per_minute": 1}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_window_429(&chat(&gw, &key).await, "requests");
    let (status, body) = gw.patch_key(&id, json!({"limits": null})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(chat(&gw, &key).await.status, 200);
}

/// Sliding windows (SPEC §3.6) count the requests of the last minute, whether or not a limit
/// was set when they were made: setting 1 request a minute on a key that has just made one
/// refuses its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_at_run_time_counts_the_minute_already_used() {
    let (_mock, gw) = start_with_mock("").await;
    gw.create_user("late").await;
    let (id, key) = gw.create_key("late", json!({})).await;
    assert_eq!(chat(&gw, &key).await.status, 200);
    let (status, body) = gw
        .patch_key(&id, json!({"limits": {"requests_per_minute": 1}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_window_429(&chat(&gw, &key).await, "requests");
}

/// SPEC §3: the config's `limits` are every key's defaults; a key's own limits override them
/// field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_defaults_apply_and_key_limits_override_them() {
    let (_mock, gw) = start_with_mock("limits: { requests_per_minute: 2 }").await;
    let plain = gw.create_user("dflt").await;
    for _ in 0..2 {
        assert_eq!(chat(&gw, &plain).await.status, 200);
    }
    assert_window_429(&chat(&gw, &plain).await, "requests");

    let (_, own) = gw
        .create_key("dflt", json!({"limits": {"requests_per_minute": 5}}))
        .await;
    for i in 0..5 {
        let reply = chat(&gw, &own).await;
        assert_eq!(reply.status, 200, "request {i} of 5: {}", reply.body);
    }
    assert_window_429(&chat(&gw, &own).await, "requests");

    // Overriding one field keeps the others' defaults: a key with only a daily budget still
    // has the default 2 a minute.
    let (_, day_only) = gw
        .create_key("dflt", json!({"limits": {"requests_per_day": 100}}))
        .await;
    for _ in 0..2 {
        assert_eq!(chat(&gw, &day_only).await.status, 200);
    }
    assert_window_429(&chat(&gw, &day_only).await, "requests");
}

/// SPEC §3.6: requests the gateway refuses (401, 403) count neither against the limits nor
/// in usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_not_counted() {
    let (mock, gw) = start_with_mock("").await;
    gw.create_user("picky").await;
    let (id, key) = gw
        .create_key(
            "picky",
            json!({"models": ["gpt-4o-mini"], "limits": {"requests_per_minute": 1}}),
        )
        .await;
    let client = fresh_client();

    for _ in 0..2 {
        let reply = chat_with(&client, &gw, &key, "gpt-4o", &[]).await;
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert_error(&reply.body, "permission_error", "model_not_allowed");
    }
    let (status, body) = gw.patch_key(&id, json!({"disabled": true})).await;
    assert_eq!(status, 200, "{body}");
    let reply = chat(&gw, &key).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_error(&reply.body, "permission_error", "key_disabled");
    let (status, body) = gw.patch_key(&id, json!({"disabled": false})).await;
    assert_eq!(status, 200, "{body}");
    for bad in ["sk-tg-0000000000000000000000000000000000000000", "nonsense"] {
        let reply = chat(&gw, bad).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }

    let reply = chat(&gw, &key).await;
    assert_eq!(
        reply.status, 200,
        "the refusals used up the limit: {}",
        reply.body
    );
    assert_window_429(&chat(&gw, &key).await, "requests");
    assert_eq!(mock.request_count(), 1);

    let rows = usage_settled(&gw, &format!("?key={id}"), 1).await;
    assert_eq!(
        sum(&rows, "requests"),
        1,
        "only the served request is in usage: {rows:?}"
    );
    assert_eq!(sum(&rows, "errors"), 0, "{rows:?}");
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

fn is_hour(s: &str) -> bool {
    s.len() == 20
        && is_date(&s[..10])
        && s.as_bytes()[10] == b'T'
        && s[11..13].bytes().all(|c| c.is_ascii_digit())
        && &s[13..] == ":00:00Z"
}

fn row_of<'a>(rows: &'a [Value], key_id: &str) -> &'a Value {
    let found: Vec<&Value> = rows.iter().filter(|r| r["key_id"] == key_id).collect();
    assert_eq!(found.len(), 1, "one row for {key_id}: {rows:?}");
    found[0]
}

/// SPEC §3 and §5: `GET /admin/usage` (by day and hour, filtered), `GET /account/usage`,
/// `remaining` in `GET /account`, and `tollgate admin usage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_reported_per_key_user_and_period() {
    let (_mock, gw) = start_with_mock("").await;
    let alice1 = gw.create_user("alice").await;
    let (alice2_id, alice2) = gw
        .create_key(
            "alice",
            json!({"limits": {"requests_per_minute": 10, "requests_per_day": 100}}),
        )
        .await;
    let bob = gw.create_user("bob").await;
    let id_of = |v: Value| v["key_id"].as_str().unwrap().to_string();
    let alice1_id = id_of(account(&gw, &alice1).await);
    let bob_id = id_of(account(&gw, &bob).await);

    // `remaining` counts down with each request.
    let before = account(&gw, &alice2).await;
    assert_eq!(before["remaining"]["requests_per_minute"], 10, "{before}");
    assert_eq!(before["remaining"]["requests_per_day"], 100, "{before}");

    let client = fresh_client();
    for _ in 0..2 {
        assert_eq!(chat(&gw, &alice1).await.status, 200);
    }
    let failed = chat_with(
        &client,
        &gw,
        &alice1,
        "gpt-4o-mini",
        &[("x-mock-status", "500")],
    )
    .await;
    assert_eq!(failed.status, 500, "{}", failed.body);
    assert_eq!(chat(&gw, &alice2).await.status, 200);
    for _ in 0..2 {
        assert_eq!(chat(&gw, &bob).await.status, 200);
    }

    let after = account(&gw, &alice2).await;
    assert_eq!(after["remaining"]["requests_per_minute"], 9, "{after}");
    assert_eq!(after["remaining"]["requests_per_day"], 99, "{after}");

    let rows = usage_settled(&gw, "?by=day", 6).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let today = tollgate::time::date(tollgate::time::now_unix());
    for row in &rows {
        let period = row["period"].as_str().unwrap_or_default();
        assert!(is_date(period), "period by day: {row}");
        assert_eq!(period, today, "{row}");
        for field in ["prompt_tokens", "completion_tokens", "images"] {
            assert!(row[field].is_u64(), "{field}: {row}");
        }
    }
    let expect = |key_id: &str, user: &str, requests: u64, errors: u64| {
        let row = row_of(&rows, key_id);
        assert_eq!(row["user"], user, "{row}");
        assert_eq!(row["requests"], requests, "{row}");
        assert_eq!(row["errors"], errors, "{row}");
        assert_eq!(row["images"], 0, "{row}");
    };
    expect(&alice1_id, "alice", 3, 1);
    expect(&alice2_id, "alice", 1, 0);
    expect(&bob_id, "bob", 2, 0);

    // The default is by day, too.
    assert_eq!(admin_usage(&gw, "").await, rows);

    let hourly = admin_usage(&gw, "?by=hour").await;
    assert_eq!(sum(&hourly, "requests"), 6, "{hourly:?}");
    for row in &hourly {
        let period = row["period"].as_str().unwrap_or_default();
        assert!(is_hour(period), "period by hour: {row}");
    }

    let alices = admin_usage(&gw, "?user=alice").await;
    assert_eq!(alices.len(), 2, "{alices:?}");
    assert!(alices.iter().all(|r| r["user"] == "alice"), "{alices:?}");
    assert_eq!(sum(&alices, "requests"), 4);
    let one = admin_usage(&gw, &format!("?key={bob_id}")).await;
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["requests"], 2);
    assert_eq!(
        admin_usage(&gw, &format!("?user=alice&key={bob_id}")).await,
        Vec::<Value>::new()
    );

    assert_eq!(
        admin_usage(&gw, "?from=2020-01-01&to=2020-01-02").await,
        Vec::<Value>::new()
    );
    assert_eq!(
        admin_usage(
            &gw,
            "?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z&by=hour"
        )
        .await,
        Vec::<Value>::new()
    );
    assert_eq!(
        sum(
            &admin_usage(&gw, &format!("?from={today}")).await,
            "requests"
        ),
        6
    );
    let (status, body) = gw.admin("GET", "/admin/usage?by=week", None).await;
    assert_eq!(status, 400, "{body}");

    // The user's own view: all of alice's keys, by date, none of bob's.
    let reply = read_reply(
        client
            .get(gw.url("/account/usage?days=7"))
            .bearer_auth(&alice2)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let data = reply.body["data"].as_array().expect("data").clone();
    assert_eq!(data.len(), 1, "{}", reply.body);
    assert_eq!(data[0]["date"], today.as_str());
    assert_eq!(data[0]["requests"], 4, "{}", reply.body);
    assert_eq!(data[0]["errors"], 1, "{}", reply.body);
    for field in ["prompt_tokens", "completion_tokens", "images"] {
        assert!(data[0][field].is_u64(), "{field}: {}", reply.body);
    }

    // The CLI shows the same as a table.
    let (code, stdout, stderr) = admin_cli(&gw, &["usage", "--by", "day"]).await;
    assert_eq!(code, 0, "tollgate admin usage: {code}\n{stdout}\n{stderr}");
    for (key_id, requests) in [(&alice1_id, "3"), (&alice2_id, "1"), (&bob_id, "2")] {
        let line = stdout
            .lines()
            .find(|l| l.contains(key_id.as_str()))
            .unwrap_or_else(|| panic!("no line for {key_id}:\n{stdout}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        let at = cells.iter().position(|c| *c == key_id.as_str()).unwrap();
        assert_eq!(
            cells.get(at + 1),
            Some(&requests),
            "requests of {key_id}: {line}"
        );
    }
}

/// SPEC §6: `tollgate_rate_limited_total{limit}` counts refusals by the limit that refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refusals_are_counted_in_metrics() {
    let (_mock, gw, _, minute) = limited_key("metered", json!({"requests_per_minute": 1})).await;
    let (_, day) = gw
        .create_key("metered", json!({"limits": {"requests_per_day": 1}}))
        .await;

    assert_eq!(chat(&gw, &minute).await.status, 200);
    assert_window_429(&chat(&gw, &minute).await, "requests");
    assert_eq!(chat(&gw, &day).await.status, 200);
    for _ in 0..2 {
        assert_budget_429(&chat(&gw, &day).await);
    }

    let text = gw.metrics().await;
    let series = |limit: &str| {
        metric_series(
            &text,
            &format!("tollgate_rate_limited_total{{limit=\"{limit}\"}}"),
        )
    };
    assert_eq!(series("requests_per_minute"), Some(1.0), "{text}");
    assert_eq!(series("requests_per_day"), Some(2.0), "{text}");
    assert_eq!(series("max_concurrent").unwrap_or(0.0), 0.0, "{text}");
}

fn python_with_openai() {
    let out = Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .map_err(|e| e.to_string());
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "these tests need python3 with the `openai` package (`make deps`): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run python3: {e}"),
    }
}

fn python(script: &str, gw: &TestGateway, key: &str) -> Command {
    let mut cmd = common::python::sdk_command(script, &gw.url(""), key);
    cmd.env_remove("OPENAI_MAX_RETRIES");
    cmd
}

/// Waits for a line on stdin, then makes one chat completion with the SDK's default retries.
const SDK_RETRIES_A_WINDOW_429: &str = r#"
import os, sys
import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["GW_URL"] + "/v1", api_key=os.environ["GW_KEY"], timeout=30)
assert client.max_retries == openai.DEFAULT_MAX_RETRIES, client.max_retries
print("READY", flush=True)
sys.stdin.readline()
raw = client.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
)
reply = raw.parse()
assert reply.choices[0].message.content == "Hello from mock", reply
print(f"OK retries_taken={raw.retries_taken}", flush=True)
"#;

/// SPEC §3.6 with the official SDK: a window 429 (here `max_concurrent`, `Retry-After: 1`) is
/// retried after backing off, and the retry is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_backs_off_and_retries_a_window_429() {
    python_with_openai();
    let (mock, gw, _, key) = limited_key("sdk", json!({"max_concurrent": 1})).await;

    // Python starts (and imports the SDK) first, so the slow request is surely still in
    // flight when the SDK's first attempt arrives.
    let mut child = python(SDK_RETRIES_A_WINDOW_429, &gw, &key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let stdout = child.stdout.take().unwrap();
    let (ready, stdout) = tokio::task::spawn_blocking(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    })
    .await
    .unwrap();
    if ready.trim() != "READY" {
        let out = child.wait_with_output().unwrap();
        panic!(
            "the SDK script did not start: {ready}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let client = fresh_client();
    let slow = chat_with(
        &client,
        &gw,
        &key,
        "gpt-4o-mini",
        &[("x-mock-first-byte-delay-ms", "1500")],
    );
    let sdk = async {
        assert!(
            mock.wait_for_requests(1, WAIT).await,
            "the slow request never reached the upstream"
        );
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        tokio::task::spawn_blocking(move || {
            let mut rest = String::new();
            let mut stdout = stdout;
            std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
            (child.wait_with_output().unwrap(), rest)
        })
        .await
        .unwrap()
    };
    let (slow, (out, stdout)) = tokio::join!(slow, sdk);
    assert_eq!(slow.status, 200, "the slow request: {}", slow.body);
    assert!(
        out.status.success(),
        "the SDK call failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let retries: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OK retries_taken="))
        .unwrap_or_else(|| panic!("no OK line:\n{stdout}"))
        .trim()
        .parse()
        .unwrap();
    assert!(retries >= 1, "the SDK did not retry: {stdout}");
    assert!(
        rate_limited(&gw, "max_concurrent").await >= 1.0,
        "the gateway refused nothing"
    );
    // The slow request and the one retry that was served.
    assert_eq!(mock.request_count(), 2);
}

const SDK_DOES_NOT_RETRY_A_BUDGET_429: &str = r#"
import os, sys
import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["GW_URL"] + "/v1", api_key=os.environ["GW_KEY"], timeout=30)
assert client.max_retries == openai.DEFAULT_MAX_RETRIES, client.max_retries
try:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
    )
    sys.exit("a spent budget was served")
except openai.RateLimitError as e:
    assert e.status_code == 429, e.status_code
    body = e.body if isinstance(e.body, dict) else {}
    assert body.get("type") == "insufficient_quota", body
    assert body.get("code") == "insufficient_quota", body
    print("OK RateLimitError", flush=True)
"#;

/// SPEC §3.6 with the official SDK: a budget 429 (`x-should-retry: false`) is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_does_not_retry_a_budget_429() {
    python_with_openai();
    let (mock, gw, _, key) = limited_key("sdkday", json!({"requests_per_day": 1})).await;
    assert_eq!(chat(&gw, &key).await.status, 200);
    assert_eq!(rate_limited(&gw, "requests_per_day").await, 0.0);

    let mut cmd = python(SDK_DOES_NOT_RETRY_A_BUDGET_429, &gw, &key);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run python3"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK RateLimitError"),
        "the SDK script failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        rate_limited(&gw, "requests_per_day").await,
        1.0,
        "the SDK must ask once and not retry"
    );
    assert_eq!(mock.request_count(), 1);
}

/// `tollgate admin … ARGS` against `gw`; returns (exit code, stdout, stderr).
async fn admin_cli(gw: &TestGateway, args: &[&str]) -> (i32, String, String) {
    let url = gw.admin_url("");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["admin", "--url", &url, "--token", ADMIN_TOKEN])
            .args(&args)
            .env_remove("TOLLGATE_ADMIN_URL")
            .env_remove("TOLLGATE_ADMIN_TOKEN")
            .output()
            .expect("run tollgate admin")
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_user_and_key_limits_that_apply_at_once() {
    let (_mock, gw) = start_with_mock("").await;
    let key = gw.create_user("carol").await;
    let (key_id, _) = {
        let (status, body) = gw.admin("GET", "/admin/keys?user=carol", None).await;
        assert_eq!(status, 200, "{body}");
        (body["data"][0]["id"].as_str().unwrap().to_string(), ())
    };
    let send = || async {
        gw.chat_request(&key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send().await, 200);

    // The user's limit counts the request already made in its window.
    let (code, out, err) = admin_cli(&gw, &["users", "limits", "carol", "--rpm", "1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(send().await, 429);
    let (code, out, err) = admin_cli(&gw, &["users", "limits", "carol", "--clear"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(send().await, 200);

    // A key's own limit, then cleared.
    let (code, out, err) =
        admin_cli(&gw, &["--json", "keys", "limits", &key_id, "--rpd", "2"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let shown: Value = serde_json::from_str(&out).expect("--json prints the key record");
    assert_eq!(shown["limits"], json!({"requests_per_day": 2}));
    let refused = send().await;
    assert_eq!(refused, 429, "two requests already made today");
    let (code, _, _) = admin_cli(&gw, &["keys", "limits", &key_id, "--clear"]).await;
    assert_eq!(code, 0);
    assert_eq!(send().await, 200);

    // Nothing to set is a usage error; so is --clear with a limit.
    let (code, _, err) = admin_cli(&gw, &["users", "limits", "carol"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) =
        admin_cli(&gw, &["users", "limits", "carol", "--clear", "--rpm", "1"]).await;
    assert_eq!(code, 2, "{err}");
}
