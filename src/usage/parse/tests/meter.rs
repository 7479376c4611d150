//! `UsageMeter` as a whole: the final usage, arbitrary input, `FeedInput`, and a micro benchmark.

use super::fixtures::*;
use super::*;

#[test]
fn stream_cut_short_is_estimated() {
    // The stream stops mid-way through a chunk: no usage ever arrives.
    let full = CHAT_SSE_WITH_USAGE.as_bytes();
    let cut = full
        .windows(6)
        .position(|w| w == b"\"stop\"")
        .unwrap_or(full.len());
    let o = run_all(ResponseKind::Sse, true, &full[..cut]);
    assert_eq!(o.reported, None);
    assert_eq!(o.content, chat_content());
    let mut m = UsageMeter::new(ResponseKind::Sse, true);
    m.feed(Bytes::copy_from_slice(&full[..cut]));
    let (u, estimated) = final_usage(&m, 1001);
    assert!(estimated);
    assert_eq!(
        u,
        Usage {
            prompt_tokens: 251,
            completion_tokens: chat_content().div_ceil(4),
            images: 0
        }
    );
    // Without `finish` (a client hang-up) the content already seen is still counted.
    assert_eq!(m.content_bytes(), chat_content());
}

#[test]
fn reported_usage_is_not_estimated() {
    let mut m = UsageMeter::new(ResponseKind::Sse, false);
    m.feed(Bytes::from_static(CHAT_SSE_WITH_USAGE.as_bytes()));
    assert_eq!(
        final_usage(&m, 10_000),
        (usage(19, 10).unwrap_or_default(), false)
    );
}

#[test]
fn arbitrary_bytes_never_panic_and_pass_through() {
    // A small xorshift generator: deterministic, no dependency.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"data: {}[]\":,\\\n\r usage null choices event 0123 \xc3\xa9 \xff";
    for round in 0..300 {
        let len = (next() % 600) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        for kind in [ResponseKind::Json, ResponseKind::Sse] {
            for strip in [false, true] {
                let mut m = UsageMeter::new(kind, strip);
                let mut out = Vec::new();
                let mut rest = &body[..];
                while !rest.is_empty() {
                    let n = ((next() % 40) as usize + 1).min(rest.len());
                    out.extend_from_slice(&m.feed(Bytes::copy_from_slice(&rest[..n])));
                    rest = &rest[n..];
                }
                out.extend_from_slice(&m.finish());
                if !strip || kind == ResponseKind::Json {
                    assert_eq!(out, body, "round {round}");
                }
            }
        }
    }
    // Deep nesting is fine too.
    let deep = format!("{}{}", "[{\"a\":".repeat(10_000), "}]".repeat(10_000));
    run(ResponseKind::Json, false, &[deep.as_bytes()]);
    let deep_sse = format!("data: {}\n\n", "[".repeat(100_000));
    run(ResponseKind::Sse, true, &[deep_sse.as_bytes()]);
}

#[test]
fn feed_accepts_bytes_refs_and_slices_without_copying_bytes() {
    let body = Bytes::from_static(CHAT_SSE_WITH_USAGE.as_bytes());
    let mut m = UsageMeter::new(ResponseKind::Sse, false);
    let out = m.feed(&body);
    assert_eq!(out.as_ptr(), body.as_ptr(), "no copy when nothing changes");
    let mut m2 = UsageMeter::new(ResponseKind::Sse, false);
    let slice: &[u8] = &body;
    assert_eq!(m2.feed(slice), body);
    let v = body.to_vec();
    let mut m3 = UsageMeter::new(ResponseKind::Json, false);
    assert_eq!(m3.feed(&v), body);
    assert_eq!(m.reported(), m2.reported());
}

// --- Micro benchmark ------------------------------------------------------------------------------

/// `cargo test --release -- --ignored --nocapture bench_sse_chunk` prints the cost of one 4 KiB chunk.
#[test]
#[ignore]
fn bench_sse_chunk() {
    let one = r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"xY"}"#;
    let mut chunk = Vec::new();
    while chunk.len() + one.len() + 2 <= 4096 {
        chunk.extend_from_slice(one.as_bytes());
        chunk.extend_from_slice(b"\n\n");
    }
    let events = chunk.len() / (one.len() + 2);
    let chunk = Bytes::from(chunk);
    // The bulk of a large JSON body: embedding floats inside `data`.
    let mut floats = Vec::new();
    while floats.len() < 4096 - 24 {
        floats.extend_from_slice(b"\n        -0.0069292834,");
    }
    let json = Bytes::from(floats);
    for (name, kind, strip, data) in [
        ("sse meter", ResponseKind::Sse, false, &chunk),
        ("sse strip", ResponseKind::Sse, true, &chunk),
        ("json embeddings", ResponseKind::Json, false, &json),
    ] {
        let mut m = UsageMeter::new(kind, strip);
        if kind == ResponseKind::Json {
            m.feed(Bytes::from_static(
                b"{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"embedding\":[",
            ));
        }
        let n = 100_000u32;
        let t = std::time::Instant::now();
        let mut total = 0usize;
        for _ in 0..n {
            total += m.feed(data.clone()).len();
        }
        let ns = t.elapsed().as_nanos() / u128::from(n);
        println!(
            "{name}: {} bytes -> {ns} ns/chunk, {:.0} MB/s (out {total}; SSE chunk = {events} events)",
            data.len(),
            data.len() as f64 * 1e3 / ns as f64
        );
    }
}
