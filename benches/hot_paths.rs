//! Per-request costs of the gateway's own work, measured in isolation: key hashing, the warm
//! key check and the store read of a cache miss with a million keys stored, the upstream
//! request rewrite, the route label, the model gate, the limit check, usage parsing of a 4 KiB
//! SSE chunk, and the Idempotency-Key fingerprint.
//!
//! `cargo bench --bench hot_paths`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use futures_util::StreamExt;
use pingora::http::RequestHeader;

use sha2::{Digest, Sha256};
use tollgate::auth::{generate_id, generate_secret, hash_secret, hex, KeyDirectory};
use tollgate::config::BackendUrl;
use tollgate::gateway::model_gate::{BodyKind, ModelGate};
use tollgate::gateway::rewrite::{
    bearer, rewrite_upstream_request, BodyFraming, Credential, UpstreamHead,
};
use tollgate::gateway::route::route_label;
use tollgate::gateway::upstream::Backend;
use tollgate::limits::{Limiter, Limits, Subject};
use tollgate::store::{KeyRecord, Store, StoreSlot};
use tollgate::usage::parse::{ResponseKind, UsageMeter};

/// Key checks against a store of many keys: 1,000,000 under `cargo bench`, 1,000 when the
/// binary runs in criterion's test mode (`cargo test --all-targets` runs every bench once,
/// without `--bench` among the arguments), where a million inserts would only slow the test
/// run down. The count is part of the bench names.
///
/// Measured: SHA-256 of a key; the warm key check with every key cached in the
/// `KeyDirectory` (keys taken in a scattered order); and the store read of the miss path,
/// `Store::key_by_hash`, with sled's page cache warm.
fn key_check(c: &mut Criterion) {
    let keys: usize = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        1_000
    };
    let count = match keys {
        n if n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    };
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    // Large enough for sled to keep every page of a million keys in memory.
    let store = Arc::new(Store::open(&dir, 1024, Duration::from_secs(1)).expect("open store"));

    // Random ids and secrets as the admin API makes them; sled is concurrent, so the inserts
    // are split over the cores. A key check reads only the key record, not its user's.
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = keys.div_ceil(threads);
    let secrets: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let store = &store;
                let n = per_thread.min(keys.saturating_sub(t * per_thread));
                s.spawn(move || {
                    (0..n)
                        .map(|_| {
                            let secret = generate_secret("sk-tg-");
                            let record = KeyRecord {
                                id: generate_id("key_"),
                                user: "bench".into(),
                                hash: hex(&hash_secret(&secret)),
                                source: "admin".into(),
                                ..KeyRecord::default()
                            };
                            store.put_key(&record, None).expect("store key");
                            secret
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("insert thread"))
            .collect()
    });
    store.flush().expect("flush");
    let inserted = started.elapsed();

    let slot = Arc::new(StoreSlot::default());
    slot.set(store.clone());
    let directory = KeyDirectory::new(slot);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    // Each miss reads sled on the blocking pool; a few lookups in flight at once (as from many
    // connections) warm the cache in a fraction of the time of one after the other.
    runtime.block_on(
        futures_util::stream::iter(&secrets).for_each_concurrent(16, |secret| {
            let directory = &directory;
            async move {
                directory.authenticate(secret, 0).await.expect("warm a key");
            }
        }),
    );
    let warmed = started.elapsed();
    assert_eq!(directory.cached_keys(), keys);
    eprintln!(
        "key check setup: {keys} keys inserted with {threads} threads in {:.1} s, \
         all cached in {:.1} s",
        inserted.as_secs_f64(),
        warmed.as_secs_f64()
    );
    let hashes: Vec<String> = secrets.iter().map(|s| hex(&hash_secret(s))).collect();

    c.bench_function("sha256 of a key", |b| {
        b.iter(|| hash_secret(black_box(&secrets[0])))
    });
    // A prime stride (coprime with 1,000 and 1,000,000) visits every key in a scattered order.
    const STRIDE: usize = 7_919;
    let mut i = 0usize;
    c.bench_function(
        &format!("warm key check, {count} keys in store, {count} cached"),
        |b| {
            b.iter(|| {
                i = (i + STRIDE) % keys;
                runtime.block_on(directory.authenticate(black_box(&secrets[i]), 0))
            })
        },
    );
    let mut i = 0usize;
    c.bench_function(
        &format!("key check through sled, {count} keys in store"),
        |b| {
            b.iter(|| {
                i = (i + STRIDE) % keys;
                store.key_by_hash(black_box(&hashes[i]))
            })
        },
    );

    drop(directory);
    drop(store);
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
    // A pool key, its header value prepared once as the gateway's pools do.
    let provider_key = bearer("sk-provider").expect("key");
    c.bench_function("upstream request rewrite", |b| {
        b.iter(|| {
            let mut req = template.clone();
            let head = UpstreamHead {
                backend: &backend,
                credential: Credential::Prepared(&provider_key),
                request_id: "req_0123456789",
                uncompressed: true,
                framing: BodyFraming::Length(120),
            };
            rewrite_upstream_request(&mut req, &head)
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
    // The whole body of a non-streamed chat completion, as the mock upstream of `make bench`
    // answers it: metered from a fresh meter to its usage.
    let body = bytes::Bytes::from_static(
        br#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Hello from mock","refusal":null,"role":"assistant"}}],"created":1795349487,"id":"chatcmpl-mock639317","model":"gpt-4o-mini","object":"chat.completion","system_fingerprint":"fp_mock","usage":{"completion_tokens":3,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":7,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":0},"total_tokens":10}}"#,
    );
    c.bench_function("usage parsing, 525-byte chat completion JSON", |b| {
        b.iter(|| {
            let mut meter = UsageMeter::new(ResponseKind::Json, false);
            meter.feed(black_box(body.clone()));
            meter.finish();
            meter.reported()
        })
    });
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
