//! Per-request costs of the gateway's own work, measured in isolation: key hashing and the
//! warm key check, the upstream request rewrite, the route label, the model gate, the limit
//! check, usage parsing of a 4 KiB SSE chunk, and the Idempotency-Key fingerprint.
//!
//! `cargo bench --bench hot_paths`

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;

use sha2::{Digest, Sha256};
use tollgate::auth::{generate_secret, hash_secret, hex, KeyDirectory};
use tollgate::config::BackendUrl;
use tollgate::gateway::model_gate::{BodyKind, ModelGate};
use tollgate::gateway::rewrite::rewrite_upstream_request;
use tollgate::gateway::route::route_label;
use tollgate::gateway::upstream::Backend;
use tollgate::limits::{Limiter, Limits, Subject};
use tollgate::store::{KeyRecord, Store, StoreSlot};
use tollgate::usage::parse::{ResponseKind, UsageMeter};

fn key_check(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    let store = Arc::new(Store::open(&dir, 16, Duration::from_secs(1)).expect("open store"));
    let secret = generate_secret("sk-tg-");
    let record = KeyRecord {
        id: "key_bench".into(),
        user: "bench".into(),
        hash: hex(&hash_secret(&secret)),
        ..KeyRecord::default()
    };
    store.put_key(&record, None).expect("store key");
    let slot = Arc::new(StoreSlot::default());
    slot.set(store);
    let directory = KeyDirectory::new(slot);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(directory.authenticate(&secret, 0))
        .expect("warm the key");

    c.bench_function("sha256 of a key", |b| {
        b.iter(|| hash_secret(black_box(&secret)))
    });
    c.bench_function("warm key check", |b| {
        b.iter(|| runtime.block_on(directory.authenticate(black_box(&secret), 0)))
    });
    let _ = std::fs::remove_dir_all(dir);
}

fn rewrite(c: &mut Criterion) {
    let backend = Backend::new(BackendUrl {
        tls: true,
        host: "api.openai.com".into(),
        port: 443,
        base_path: "/v1".into(),
    });
    let mut template =
        RequestHeader::build("POST", b"/v1/chat/completions", None).expect("request");
    for (name, value) in [
        (
            "authorization",
            "Bearer sk-tg-0123456789012345678901234567890123456789",
        ),
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 1.55.0"),
        ("accept", "application/json"),
        ("connection", "keep-alive"),
    ] {
        template.append_header(name, value).expect("header");
    }
    c.bench_function("upstream request rewrite", |b| {
        b.iter(|| {
            let mut req = template.clone();
            rewrite_upstream_request(&mut req, &backend, Some("sk-provider"), "req_0123456789")
        })
    });
    c.bench_function("route label", |b| {
        b.iter(|| route_label(black_box("/v1/chat/completions")))
    });
}

fn model_gate(c: &mut Criterion) {
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark"}],"temperature":0.2}"#;
    c.bench_function("model gate on a small JSON body", |b| {
        b.iter(|| {
            let gate = ModelGate::new(vec!["gpt-4o-mini".into()], BodyKind::Json);
            gate.verdict(black_box(body))
        })
    });
}

/// Admission and release against a limiter that already tracks 100,000 keys (each with a
/// minute window, a day budget and a concurrency cap), keys taken in a scattered order.
fn limit_check(c: &mut Criterion) {
    const KEYS: usize = 100_000;
    let limiter = Arc::new(Limiter::default());
    let ids: Vec<String> = (0..KEYS).map(|i| format!("key_{i:08}")).collect();
    let limits = Limits {
        rpm: 1_000_000,
        rpd: 1_000_000_000,
        max_concurrent: 100,
        ..Limits::default()
    };
    let subject = |i: usize| Subject {
        key_id: &ids[i],
        user: &ids[i],
        key_limits: limits,
        user_limits: Limits::default(),
    };
    let now = tollgate::time::now_unix_ms();
    for i in 0..KEYS {
        drop(limiter.admit(&subject(i), now, false));
    }
    let mut i = 0usize;
    c.bench_function("limit check (admit + release), 100k keys", |b| {
        b.iter(|| {
            i = (i + 7_919) % KEYS;
            limiter.admit(black_box(&subject(i)), now, false)
        })
    });
}

/// A 4 KiB chunk of chat-completion SSE events, metered (and with the usage chunk stripping on,
/// as when the gateway injected `include_usage`).
fn usage_parsing(c: &mut Criterion) {
    let event = r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"xY"}"#;
    let mut chunk = Vec::new();
    while chunk.len() + event.len() + 2 <= 4096 {
        chunk.extend_from_slice(event.as_bytes());
        chunk.extend_from_slice(b"\n\n");
    }
    let chunk = bytes::Bytes::from(chunk);
    for (name, strip) in [
        ("usage parsing, 4 KiB SSE chunk", false),
        ("usage parsing + usage-chunk strip, 4 KiB SSE chunk", true),
    ] {
        let mut meter = UsageMeter::new(ResponseKind::Sse, strip);
        c.bench_function(name, |b| b.iter(|| meter.feed(black_box(chunk.clone()))));
    }
}

/// What an Idempotency-Key costs a request: its scope, and the SHA-256 of a 4 KiB body.
fn idempotency_fingerprint(c: &mut Criterion) {
    let body = vec![b'x'; 4096];
    c.bench_function("idempotency fingerprint (scope + 4 KiB body hash)", |b| {
        b.iter(|| {
            let scope = tollgate::idempotency::scope(
                black_box("key_bench"),
                "POST",
                "/v1/chat/completions",
                black_box(b"order-4711"),
            );
            let body_hash: [u8; 32] = Sha256::digest(black_box(&body)).into();
            (scope, body_hash)
        })
    });
}

criterion_group!(
    benches,
    key_check,
    rewrite,
    model_gate,
    limit_check,
    usage_parsing,
    idempotency_fingerprint
);
criterion_main!(benches);
