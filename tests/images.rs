//! `GET /prompt/{description}` end to end (SPEC §3.4, issue 5): parameters and the cache key,
//! HIT/MISS, ETag and 304, the key by `?key=`, the disk cache across restarts and after a torn
//! file, LRU eviction, single flight, backend failover and `url` replies, the admin image
//! routes (and the CLI), `images_per_day`, and the image cache metrics.
//! Hosting providers and `store_generations` are in tests/image_hosting.rs.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::assert::{assert_error, header_str, metric_series};
use common::mock::{ImageOptions, ImageReply, MockUpstream, Mode};
use common::{eventually, new_user, GatewayConfig, TestGateway, ADMIN_TOKEN};

const WAIT: Duration = Duration::from_secs(30);

/// An `images` pool over `backends` (the first one also serves `/v1`), and an `images` section.
fn config(first: &str, backends: &[String], images_extra: &str) -> GatewayConfig {
    let list = backends
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    GatewayConfig::new(first)
        .upstreams(&format!(
            "upstreams:\n  openai:\n    backends: [\"{first}\"]\n    keys: [sk-upstream-test]\n  images:\n    backends: [{list}]\n    keys: [sk-backend]\n    connect_timeout_ms: 500\n    read_timeout_ms: 1500\nroutes:\n  - {{ prefix: /v1/images, upstream: images }}\n  - {{ prefix: /v1, upstream: openai }}\n"
        ))
        .extra(&format!(
            "images:\n  upstream: images\n  default_model: gpt-image-1\n  default_size: 256x256\n{images_extra}"
        ))
}

async fn setup(images_extra: &str) -> (MockUpstream, TestGateway, String) {
    let mock = MockUpstream::start().await;
    mock.set_image_options(ImageOptions::default());
    let gw = TestGateway::start(config(&mock.url(), &[mock.url()], images_extra)).await;
    let (_, key) = new_user(&gw, "painter").await;
    (mock, gw, key)
}

fn cache_key(description: &str, w: u32, h: u32, model: &str, seed: i64) -> String {
    let canonical = format!(
        "{}|{w}|{h}|{model}|{seed}",
        description.trim().to_lowercase()
    );
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

async fn fetch(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("request");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

fn json_of(a: &Answer) -> Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|_| {
        panic!(
            "not JSON ({}): {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        )
    })
}

async fn metric(gw: &TestGateway, series: &str) -> f64 {
    metric_series(&gw.metrics().await, series).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn miss_then_hit_with_etag_304_cache_control_and_the_key_in_the_query() {
    let (mock, gw, key) = setup("").await;
    let path = "/prompt/A%20Red%20Fox%20?width=320&height=256&seed=7";
    let miss = fetch(gw.get(path, &key)).await;
    assert_eq!(miss.status, 200, "{}", String::from_utf8_lossy(&miss.body));
    let hash = cache_key("A Red Fox", 320, 256, "gpt-image-1", 7);
    assert_eq!(header_str(&miss.headers, "x-cache"), Some("MISS"));
    assert_eq!(header_str(&miss.headers, "content-type"), Some("image/png"));
    assert_eq!(
        header_str(&miss.headers, "etag"),
        Some(format!("\"{hash}\"").as_str())
    );
    assert_eq!(
        header_str(&miss.headers, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(miss.body.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(mock.generated_images(), vec![miss.body.clone()]);

    // What the backend was asked for, with the pool's key.
    let sent = mock.last_request().unwrap();
    assert!(
        sent.path.ends_with("/v1/images/generations"),
        "{}",
        sent.path
    );
    assert_eq!(sent.header("authorization"), Some("Bearer sk-backend"));
    assert_eq!(
        sent.json().unwrap(),
        json!({"prompt": "A Red Fox", "n": 1, "model": "gpt-image-1", "size": "320x256", "seed": 7})
    );

    // The same image however it is spelled, with the key in the query instead.
    let hit = fetch(gw.http.get(gw.url(&format!(
        "/prompt/a%20red%20fox?seed=007&height=256&width=320&model=gpt-image-1&key={key}"
    ))))
    .await;
    assert_eq!(hit.status, 200);
    assert_eq!(header_str(&hit.headers, "x-cache"), Some("HIT"));
    assert_eq!(hit.body, miss.body);
    assert_eq!(
        header_str(&hit.headers, "etag"),
        header_str(&miss.headers, "etag")
    );
    assert_eq!(mock.image_generation_count(), 1);

    let not_modified = fetch(
        gw.get(path, &key)
            .header("if-none-match", format!("\"{hash}\"")),
    )
    .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(
        header_str(&not_modified.headers, "etag"),
        Some(format!("\"{hash}\"").as_str())
    );

    // Also public at /images/{hash}.png.
    let public = fetch(gw.http.get(gw.url(&format!("/images/{hash}.png")))).await;
    assert_eq!(public.status, 200);
    assert_eq!(public.body, miss.body);
    let wrong_ext = fetch(gw.http.get(gw.url(&format!("/images/{hash}.jpg")))).await;
    assert_eq!(wrong_ext.status, 404);

    // Defaults: size from `default_size`, seed 42.
    let defaults = fetch(gw.get("/prompt/a%20red%20fox", &key)).await;
    assert_eq!(defaults.status, 200);
    assert_eq!(
        header_str(&defaults.headers, "etag"),
        Some(
            format!(
                "\"{}\"",
                cache_key("a red fox", 256, 256, "gpt-image-1", 42)
            )
            .as_str()
        )
    );

    // The `?key=` value never reaches a log.
    gw.http
        .get(gw.url(&format!("/prompt/logged?key={key}")))
        .send()
        .await
        .unwrap();
    assert!(!gw.stdout().contains(&key) && !gw.stderr().contains(&key));
    assert!(metric(&gw, "tollgate_image_cache_total{result=\"hit\"}").await >= 1.0);
    assert!(metric(&gw, "tollgate_image_cache_total{result=\"miss\"}").await >= 3.0);
}

#[tokio::test]
async fn bad_parameters_and_missing_keys_are_refused_in_the_openai_shape() {
    let (mock, gw, key) = setup("").await;
    for (query, param) in [
        ("width=10", "width"),
        ("width=5000", "width"),
        ("height=abc", "height"),
        ("seed=1.5", "seed"),
        ("model=", "model"),
    ] {
        let a = fetch(gw.get(&format!("/prompt/fox?{query}"), &key)).await;
        assert_eq!(a.status, 400, "{query}");
        let body = json_of(&a);
        assert_error(&body, "invalid_request_error", "invalid_request");
        assert_eq!(body["error"]["param"], param, "{query}");
    }
    let empty = fetch(gw.get("/prompt/%20%20", &key)).await;
    assert_eq!(empty.status, 400);
    let no_key = fetch(gw.http.get(gw.url("/prompt/fox"))).await;
    assert_eq!(no_key.status, 401);
    assert_error(
        &json_of(&no_key),
        "invalid_request_error",
        "invalid_api_key",
    );
    let bad_key = fetch(gw.http.get(gw.url("/prompt/fox?key=sk-tg-nope"))).await;
    assert_eq!(bad_key.status, 401);
    let post = fetch(gw.post("/prompt/fox", &key)).await;
    assert_eq!(post.status, 404);
    assert_eq!(mock.image_generation_count(), 0, "nothing was generated");
}

#[tokio::test]
async fn fifty_concurrent_misses_make_one_call_and_other_prompts_do_not_wait() {
    let mock = MockUpstream::start().await;
    // The foxes are held at the mock until the owl is done: no timing decides the order.
    mock.set_image_options(ImageOptions {
        hold_while_body_contains: Some("fifty foxes".into()),
        ..ImageOptions::default()
    });
    let mut config = config(&mock.url(), &[mock.url()], "");
    // Long enough that the held generation never times out, however slow the machine.
    config.upstreams = config
        .upstreams
        .replace("read_timeout_ms: 1500", "read_timeout_ms: 60000");
    let gw = TestGateway::start(config).await;
    let (_, key) = new_user(&gw, "painter").await;
    // The key is checked once before, so the foxes below wait on nothing but the flight.
    assert_eq!(fetch(gw.get("/account/images", &key)).await.status, 200);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let req = gw.get("/prompt/fifty%20foxes", &key);
        tasks.push(tokio::spawn(fetch(req)));
    }
    assert!(mock.wait_for_image_generations(1, WAIT).await);
    // Every fox request is inside the gateway before the held image can be released.
    assert!(
        eventually(WAIT, || async {
            metric(&gw, "tollgate_active_requests").await == 50.0
        })
        .await
    );
    // A different prompt is drawn and answered while the first is still being drawn.
    let owl = tokio::time::timeout(WAIT, fetch(gw.get("/prompt/one%20owl", &key)))
        .await
        .expect("the owl waited for the held foxes");
    assert_eq!(owl.status, 200);
    assert_eq!(mock.image_generation_count(), 2);
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "a fox request finished while its image was held"
    );
    mock.set_image_options(ImageOptions::default());
    let mut bodies = Vec::new();
    let mut misses = 0;
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(header_str(&a.headers, "x-cache"), Some("MISS"));
        misses += 1;
        bodies.push(a.body);
    }
    assert_eq!(misses, 50);
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "50 identical answers"
    );
    assert_ne!(owl.body, bodies[0]);
    assert_eq!(mock.image_generation_count(), 2, "one call per prompt");
    assert_eq!(
        metric(&gw, "tollgate_image_cache_total{result=\"coalesced\"}").await,
        49.0
    );
    assert_eq!(
        metric(&gw, "tollgate_image_cache_total{result=\"miss\"}").await,
        2.0
    );
}

#[tokio::test]
async fn failing_backends_are_skipped_and_all_failing_is_a_502() {
    let good = MockUpstream::start().await;
    good.set_image_options(ImageOptions::default());
    let erroring = MockUpstream::start().await;
    erroring.set_mode(Mode::Status(500, r#"{"error":{"message":"boom"}}"#.into()));
    let hanging = MockUpstream::start().await;
    hanging.set_mode(Mode::Hang);
    let malformed = MockUpstream::start().await;
    malformed.set_image_options(ImageOptions {
        reply: ImageReply::Malformed,
        ..ImageOptions::default()
    });
    let not_json = MockUpstream::start().await;
    not_json.set_image_options(ImageOptions {
        reply: ImageReply::NotJson,
        ..ImageOptions::default()
    });
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let backends = vec![
        dead.clone(),
        erroring.url(),
        hanging.url(),
        malformed.url(),
        not_json.url(),
        good.url(),
    ];
    let gw = TestGateway::start(config(&good.url(), &backends, "")).await;
    let (_, key) = new_user(&gw, "painter").await;
    // Whatever backend round-robin starts at, each request ends at the good one.
    for i in 0..3 {
        let a = fetch(gw.get(&format!("/prompt/failover%20{i}"), &key)).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        assert!(a.body.starts_with(b"\x89PNG"));
    }
    assert_eq!(good.image_generation_count(), 3);
    assert!(erroring.image_generation_count() >= 1);
    assert!(malformed.image_generation_count() >= 1);
    let errors = gw.metrics().await;
    for kind in ["connect", "status", "malformed"] {
        assert!(
            errors.contains(&format!(
                "tollgate_upstream_errors_total{{kind=\"{kind}\",upstream=\"images\"}}"
            )),
            "{kind}: {errors}"
        );
    }

    // Only failing backends left: 502 in the §4 shape, and nothing cached.
    let gw2 = TestGateway::start(config(&good.url(), &[dead, erroring.url()], "")).await;
    let (_, key2) = new_user(&gw2, "painter").await;
    let a = fetch(gw2.get("/prompt/nobody%20home", &key2)).await;
    assert_eq!(a.status, 502);
    assert_error(&json_of(&a), "upstream_error", "upstream_unavailable");
}

#[tokio::test]
async fn url_replies_are_fetched_over_http_only_and_bounded() {
    let (mock, gw, key) = setup("").await;
    mock.set_image_options(ImageOptions {
        reply: ImageReply::Url,
        ..ImageOptions::default()
    });
    let a = fetch(gw.get("/prompt/by%20url", &key)).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(mock.generated_images(), vec![a.body.clone()]);
    assert!(
        mock.requests()
            .iter()
            .any(|r| r.path.starts_with("/files/gen/")),
        "the gateway fetched the image from the URL"
    );

    for url in [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.png",
        "gopher://127.0.0.1/",
    ] {
        mock.set_image_options(ImageOptions {
            reply: ImageReply::UrlOverride(url.into()),
            ..ImageOptions::default()
        });
        let a = fetch(gw.get(&format!("/prompt/scheme%20{}", &url[..3]), &key)).await;
        assert_eq!(a.status, 502, "{url}");
    }

    // Larger than the 32 MiB cap: refused, not buffered.
    mock.set_image_options(ImageOptions {
        reply: ImageReply::Url,
        size_bytes: Some(33 * 1024 * 1024),
        ..ImageOptions::default()
    });
    let big = fetch(gw.get("/prompt/too%20big", &key)).await;
    assert_eq!(big.status, 502);
}

#[tokio::test]
async fn the_cache_survives_restarts_and_a_torn_file_is_never_served() {
    let (mock, mut gw, key) = setup("").await;
    let first = fetch(gw.get("/prompt/kept", &key)).await;
    let second = fetch(gw.get("/prompt/torn", &key)).await;
    assert_eq!((first.status, second.status), (200, 200));
    let images_dir = gw.dir.join("data/images");
    let torn_hash = cache_key("torn", 256, 256, "gpt-image-1", 42);
    let torn_file = images_dir.join(&torn_hash[..2]).join(&torn_hash);
    assert!(torn_file.exists(), "image files live below storage.path");

    gw.stop(); // SIGKILL
               // A file cut short, as a crash in the middle of writing would leave it if it were not
               // written atomically.
    let bytes = std::fs::read(&torn_file).unwrap();
    std::fs::write(&torn_file, &bytes[..bytes.len() / 2]).unwrap();
    gw.spawn().await;

    let kept = fetch(gw.get("/prompt/kept", &key)).await;
    assert_eq!(header_str(&kept.headers, "x-cache"), Some("HIT"));
    assert_eq!(kept.body, first.body);
    let regenerated = fetch(gw.get("/prompt/torn", &key)).await;
    assert_eq!(regenerated.status, 200);
    assert_eq!(header_str(&regenerated.headers, "x-cache"), Some("MISS"));
    assert_eq!(
        regenerated.body, second.body,
        "regenerated whole, never the torn copy"
    );
    assert_eq!(mock.image_generation_count(), 3);
}

#[tokio::test]
async fn least_recently_used_images_are_evicted_to_stay_under_the_bound() {
    // Room for three 20,000-byte images.
    let (mock, gw, key) = setup("  max_cache_bytes: 65000\n").await;
    mock.set_image_options(ImageOptions {
        size_bytes: Some(20_000),
        ..ImageOptions::default()
    });
    for name in ["one", "two", "three"] {
        assert_eq!(
            fetch(gw.get(&format!("/prompt/{name}"), &key)).await.status,
            200
        );
    }
    // "one" is read again, so "two" is now the least recently used.
    let one = fetch(gw.get("/prompt/one", &key)).await;
    assert_eq!(header_str(&one.headers, "x-cache"), Some("HIT"));
    assert_eq!(fetch(gw.get("/prompt/four", &key)).await.status, 200);

    let two = fetch(gw.get("/prompt/two", &key)).await;
    assert_eq!(
        header_str(&two.headers, "x-cache"),
        Some("MISS"),
        "two was evicted"
    );
    let one = fetch(gw.get("/prompt/one", &key)).await;
    assert_eq!(
        header_str(&one.headers, "x-cache"),
        Some("HIT"),
        "one was kept"
    );
    assert!(metric(&gw, "tollgate_image_cache_total{result=\"evicted\"}").await >= 2.0);

    let on_disk: u64 = walk(&gw.dir.join("data/images"));
    assert!(on_disk <= 65_000, "{on_disk} bytes of images on disk");
}

fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn admin_routes_and_the_cli_delete_cached_images() {
    let (mock, gw, key) = setup("").await;
    let hash = cache_key("gone", 256, 256, "gpt-image-1", 42);
    assert_eq!(fetch(gw.get("/prompt/gone", &key)).await.status, 200);

    let (status, _) = gw
        .admin("DELETE", &format!("/admin/images/{hash}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = gw
        .admin("DELETE", &format!("/admin/images/{hash}"), None)
        .await;
    assert_eq!(status, 404);
    let again = fetch(gw.get("/prompt/gone", &key)).await;
    assert_eq!(header_str(&again.headers, "x-cache"), Some("MISS"));

    // Purge by the parameters a /prompt request would use.
    let purge = json!({"description": "  GONE ", "width": 256, "seed": "42"});
    let (status, body) = gw
        .admin("POST", "/admin/images/purge", Some(purge.clone()))
        .await;
    assert_eq!((status, body.clone()), (200, json!({ "deleted": hash })));
    let (status, _) = gw.admin("POST", "/admin/images/purge", Some(purge)).await;
    assert_eq!(status, 404);

    // POST /cache/delete with X-Admin-Token, on the public listener too.
    assert_eq!(fetch(gw.get("/prompt/gone", &key)).await.status, 200);
    let wrong = fetch(
        gw.http
            .post(gw.url("/cache/delete"))
            .header("x-admin-token", "wrong-token-wrong-token")
            .json(&json!({"description": "gone"})),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let deleted = fetch(
        gw.http
            .post(gw.url("/cache/delete"))
            .header("x-admin-token", ADMIN_TOKEN)
            .json(&json!({"description": "gone"})),
    )
    .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(json_of(&deleted), json!({ "deleted": hash }));
    let bad = fetch(
        gw.http
            .post(gw.url("/cache/delete"))
            .header("x-admin-token", ADMIN_TOKEN)
            .json(&json!({"description": "gone", "width": 1})),
    )
    .await;
    assert_eq!(bad.status, 400);

    // And the CLI.
    assert_eq!(fetch(gw.get("/prompt/gone", &key)).await.status, 200);
    let out = admin_cli(&gw, &["images", "purge", "--prompt", "gone"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&hash));
    let out = admin_cli(&gw, &["images", "purge", &hash]);
    assert!(!out.status.success(), "already gone");
    assert_eq!(mock.image_generation_count(), 4);
}

fn admin_cli(gw: &TestGateway, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("admin")
        .args(args)
        .env(
            "TOLLGATE_ADMIN_URL",
            format!("http://127.0.0.1:{}", gw.admin_port),
        )
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap()
}

#[tokio::test]
async fn misses_count_against_images_per_day_and_hits_do_not() {
    let (mock, gw, _) = setup("").await;
    let (id, key) = gw
        .create_key("painter", json!({"limits": {"images_per_day": 2}}))
        .await;
    for name in ["a", "b"] {
        assert_eq!(
            fetch(gw.get(&format!("/prompt/{name}"), &key)).await.status,
            200
        );
    }
    let refused = fetch(gw.get("/prompt/c", &key)).await;
    assert_eq!(refused.status, 429);
    assert_error(
        &json_of(&refused),
        "insufficient_quota",
        "insufficient_quota",
    );
    // Hits are free.
    let hit = fetch(gw.get("/prompt/a", &key)).await;
    assert_eq!(header_str(&hit.headers, "x-cache"), Some("HIT"));
    assert_eq!(mock.image_generation_count(), 2);

    // Concurrent misses of different prompts cannot overrun the budget.
    let (_, fresh) = gw
        .create_key("painter", json!({"limits": {"images_per_day": 3}}))
        .await;
    mock.set_image_options(ImageOptions {
        delay: Duration::from_millis(300),
        ..ImageOptions::default()
    });
    let tasks: Vec<_> = (0..8)
        .map(|i| tokio::spawn(fetch(gw.get(&format!("/prompt/race%20{i}"), &fresh))))
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap().status {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 3);

    // The usage report counts the images.
    assert!(
        eventually(WAIT, || async {
            let (_, usage) = gw
                .admin("GET", &format!("/admin/usage?key={id}&by=day"), None)
                .await;
            usage["data"][0]["images"] == 2
        })
        .await
    );
}
