//! Images end to end beyond the plain `/prompt` cache (SPEC §3.4, §2 `images`): hosting
//! (`images.hosting` with SM.MS, PicGo and CloudFlare-ImgBed, against the mocks of
//! tests/common/hosting.rs): 302s to the hosted copy, one upload per image under concurrency and
//! across hits, the fallback to the bytes when an upload fails and the retry after it; and
//! `images.store_generations`: `/v1/images/generations` (JSON) and `/v1/images/edits` (multipart)
//! answers whose `b64_json` images become `{public_url}/images/{sha256}.png` URLs, served without
//! a key, right away and after a restart, and listed by `GET /account/images` for their owner
//! only. Last, the hosting credential and a `?key=` never reach the gateway's output.

mod common;

use std::time::Duration;

use base64::Engine;
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::assert::header_str;
use common::hosting::{HostingKind, MockHosting, DEFAULT_CREDENTIAL};
use common::mock::{generated_png, png_text, ImageOptions, ImageParams, MockUpstream, PNG_1X1};
use common::{eventually, new_user, wait_until, GatewayConfig, TestGateway};

const WAIT: Duration = Duration::from_secs(10);
/// `images.default_size` of every gateway here (small images, quick tests).
const SIZE: &str = "256x256";
const MODEL: &str = "gpt-image-1";
/// `images.public_url` where stored generations are configured.
const PUBLIC_URL: &str = "https://img.example.test";

// ---------------------------------------------------------------------------------------------
// Helpers

/// The `upstreams:` and `routes:` sections: an `openai` pool and an `images` pool, both the mock.
fn upstreams(mock: &MockUpstream) -> String {
    let url = mock.url();
    let pool = |name: &str, key: &str| {
        format!(
            "  {name}:\n    backends: [\"{url}\"]\n    keys: [{key}]\n    connect_timeout_ms: 1000\n    read_timeout_ms: 5000\n"
        )
    };
    format!(
        "upstreams:\n{}{}routes:\n  - {{ prefix: /v1/images, upstream: images }}\n  - {{ prefix: /v1, upstream: openai }}\n",
        pool("openai", "sk-upstream-test"),
        pool("images", "sk-backend"),
    )
}

/// The `images:` section, with `more` (indented lines) added.
fn images_section(more: &str) -> String {
    format!(
        "images:\n  upstream: images\n  default_model: {MODEL}\n  default_size: {SIZE}\n  max_cache_bytes: 104857600\n{more}"
    )
}

/// `images.hosting` for `hosting`'s provider, sending `credential`.
fn hosting_lines(hosting: &MockHosting, credential: &str) -> String {
    let url = hosting.upload_url();
    match hosting.kind() {
        HostingKind::Smms => format!(
            "  hosting:\n    provider: smms\n    key: \"{credential}\"\n    url: \"{url}\"\n"
        ),
        HostingKind::Picgo => format!(
            "  hosting:\n    provider: picgo\n    key: \"{credential}\"\n    url: \"{url}\"\n"
        ),
        HostingKind::CloudflareImgbed => format!(
            "  hosting:\n    provider: cloudflare_imgbed\n    url: \"{url}\"\n    auth_code: \"{credential}\"\n"
        ),
    }
}

/// `images.store_generations` on, URLs under [`PUBLIC_URL`].
fn storing() -> String {
    images_section(&format!(
        "  store_generations: true\n  public_url: {PUBLIC_URL}\n"
    ))
}

/// A mock upstream and a gateway in front of it with `images` (the `images:` section) and
/// `extra` more top-level YAML.
async fn start(images: &str, extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await;
    let config = GatewayConfig::new(&mock.url())
        .upstreams(&upstreams(&mock))
        .extra(images)
        .extra(extra);
    let gw = TestGateway::start(config).await;
    (mock, gw)
}

/// A mock hosting service of `kind` accepting `credential`, a mock upstream, and a gateway
/// uploading there with `gateway_credential`; plus a user `name`'s key (id, secret).
async fn start_hosting(
    kind: HostingKind,
    credential: &str,
    gateway_credential: &str,
    name: &str,
    extra: &str,
) -> (MockHosting, MockUpstream, TestGateway, String, String) {
    let hosting = MockHosting::start(kind).await;
    hosting.set_credential(credential);
    let images = images_section(&hosting_lines(&hosting, gateway_credential));
    let (mock, gw) = start(&images, extra).await;
    let (id, key) = new_user(&gw, name).await;
    (hosting, mock, gw, id, key)
}

/// A client that does not follow redirects (the 302s are what is tested), one connection per
/// request.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `/prompt/{description}` with spaces encoded, and `query` (without `?`) when not empty.
fn prompt_path(description: &str, query: &str) -> String {
    let encoded = description.replace(' ', "%20");
    if query.is_empty() {
        format!("/prompt/{encoded}")
    } else {
        format!("/prompt/{encoded}?{query}")
    }
}

/// `GET /prompt/{description}` with `Authorization: Bearer key`.
async fn prompt_bearer(gw: &TestGateway, description: &str, key: &str) -> reqwest::Response {
    client()
        .get(gw.url(&prompt_path(description, "")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// `GET /prompt/{description}?key=key`, no `Authorization`.
async fn prompt_query_key(gw: &TestGateway, description: &str, key: &str) -> reqwest::Response {
    client()
        .get(gw.url(&prompt_path(description, &format!("key={key}"))))
        .send()
        .await
        .unwrap()
}

/// The PNG the mock draws for a `/prompt` request with the gateway's defaults.
fn expected_prompt_png(description: &str) -> Vec<u8> {
    generated_png(&ImageParams::new(description, MODEL, SIZE, Some(42)), None)
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    header_str(resp.headers(), name)
        .unwrap_or_default()
        .to_string()
}

/// Asserts a 302 to the hosted copy and returns its `Location`.
fn assert_redirect(resp: &reqwest::Response, x_cache: &str, what: &str) -> String {
    assert_eq!(
        resp.status(),
        StatusCode::FOUND,
        "{what}: expected a 302 to the hosted copy; headers: {:?}",
        resp.headers()
    );
    assert_eq!(header(resp, "x-cache"), x_cache, "{what}: X-Cache");
    let location = header(resp, "location");
    assert!(!location.is_empty(), "{what}: no Location");
    location
}

/// Asserts a 200 with the image's bytes (the fallback when hosting fails) and returns them.
async fn assert_image(resp: reqwest::Response, x_cache: &str, what: &str) -> Vec<u8> {
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{what}: expected the image itself; headers: {:?}",
        resp.headers()
    );
    assert_eq!(header(&resp, "x-cache"), x_cache, "{what}: X-Cache");
    assert_eq!(header(&resp, "content-type"), "image/png", "{what}");
    assert!(
        header(&resp, "etag").starts_with('"'),
        "{what}: ETag {:?}",
        header(&resp, "etag")
    );
    resp.bytes().await.unwrap().to_vec()
}

/// GET an absolute URL (the hosted copy): status and bytes.
async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let resp = client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("b64_json is not base64 ({e})"))
}

/// `POST path` with a JSON body through the gateway: status and JSON reply.
async fn post_json(gw: &TestGateway, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let resp = client()
        .post(gw.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A `/v1/images/generations` request for one image the mock draws from `prompt` and `seed`.
fn generation(prompt: &str, seed: i64) -> Value {
    json!({"model": MODEL, "prompt": prompt, "n": 1, "size": SIZE, "seed": seed})
}

/// The image the mock drew for `prompt` and `seed` (one image, defaults as in [`generation`]).
fn drawn(prompt: &str, seed: i64) -> Vec<u8> {
    generated_png(&ImageParams::new(prompt, MODEL, SIZE, Some(seed)), None)
}

/// `POST /v1/images/edits` (multipart: an `image` file, `prompt`, `seed`, `model`, `size`, and
/// `response_format` when given): status and JSON reply.
async fn post_edit(
    gw: &TestGateway,
    key: &str,
    prompt: &str,
    seed: i64,
    response_format: Option<&str>,
) -> (u16, Value) {
    let mut form = Form::new()
        .text("model", MODEL)
        .text("prompt", prompt.to_string())
        .text("size", SIZE)
        .text("seed", seed.to_string())
        .part(
            "image",
            Part::bytes(PNG_1X1.to_vec())
                .file_name("input.png")
                .mime_str("image/png")
                .unwrap(),
        );
    if let Some(format) = response_format {
        form = form.text("response_format", format.to_string());
    }
    let resp = client()
        .post(gw.url("/v1/images/edits"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// `GET /images/{hash}.png` without a key: asserts a 200 image/png with the public immutable
/// headers and returns the bytes.
async fn stored_image(gw: &TestGateway, hash: &str) -> Vec<u8> {
    let resp = client()
        .get(gw.url(&format!("/images/{hash}.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET /images/{hash}.png");
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert_eq!(header(&resp, "etag"), format!("\"{hash}\""));
    let cache_control = header(&resp, "cache-control");
    assert!(
        cache_control.contains("immutable") && cache_control.contains("max-age=31536000"),
        "Cache-Control: {cache_control}"
    );
    resp.bytes().await.unwrap().to_vec()
}

/// `GET /images/{hash}.png` with `If-None-Match: "{hash}"`: the status.
async fn revalidate(gw: &TestGateway, hash: &str) -> StatusCode {
    client()
        .get(gw.url(&format!("/images/{hash}.png")))
        .header("if-none-match", format!("\"{hash}\""))
        .send()
        .await
        .unwrap()
        .status()
}

/// `GET /account/images` with `key`: the `data` array.
async fn account_images(gw: &TestGateway, key: &str) -> Vec<Value> {
    let resp = client()
        .get(gw.url("/account/images"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "GET /account/images: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {body}"))
        .clone()
}

/// Whether `GET /account/images` with `key` lists `hash`.
async fn lists(gw: &TestGateway, key: &str, hash: &str) -> bool {
    account_images(gw, key)
        .await
        .iter()
        .any(|image| image["hash"] == hash)
}

/// Asserts `item` (of a `data` array of a stored-generations answer) carries a URL of a stored
/// image of `bytes` and returns its hash.
fn assert_stored_url(item: &Value, bytes: &[u8]) -> String {
    let hash = sha256_hex(bytes);
    assert_eq!(
        item["url"],
        format!("{PUBLIC_URL}/images/{hash}.png"),
        "data item: {item}"
    );
    hash
}

// ---------------------------------------------------------------------------------------------
// 1. /prompt with hosting: 302 to the hosted copy, one upload per image

async fn hosting_redirects_and_uploads_once(kind: HostingKind) {
    let credential = format!("cred-{kind:?}-1f9a").to_lowercase();
    let (hosting, mock, gw, _id, key) =
        start_hosting(kind, &credential, &credential, "host", "").await;

    // A miss: generated, uploaded, then a 302 to the hosted copy.
    let description = format!("a red fox for {kind:?}");
    let resp = prompt_bearer(&gw, &description, &key).await;
    let location = assert_redirect(&resp, "MISS", "first request");
    let uploads = hosting.uploads();
    assert_eq!(uploads.len(), 1, "one upload for the miss");
    let upload = &uploads[0];
    assert_eq!(location, upload.url, "Location is the hosted URL");
    assert!(
        location.starts_with(&hosting.url()),
        "{location} is not on the host {}",
        hosting.url()
    );
    assert_eq!(
        upload.field,
        kind.file_field(),
        "multipart field of the file"
    );
    assert_eq!(
        upload.auth.as_deref(),
        Some(credential.as_str()),
        "credential"
    );
    let expected = expected_prompt_png(&description);
    assert!(
        upload.bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "a PNG was uploaded"
    );
    assert_eq!(upload.bytes, expected, "the generated image was uploaded");
    assert!(png_text(&upload.bytes)
        .unwrap()
        .contains(&format!("prompt={description}\n")));
    let (status, hosted) = fetch(&location).await;
    assert_eq!(status, 200, "the Location serves the image");
    assert_eq!(hosted, upload.bytes);
    assert_eq!(mock.image_generation_count(), 1);

    // A hit, with the key in the query this time: same Location, no new upload.
    let resp = prompt_query_key(&gw, &description, &key).await;
    let again = assert_redirect(&resp, "HIT", "second request");
    assert_eq!(again, location);
    assert_eq!(hosting.upload_count(), 1, "a hit does not upload again");
    assert_eq!(hosting.upload_attempts(), 1, "a hit does not try to upload");
    assert_eq!(mock.image_generation_count(), 1);

    // Ten concurrent requests for a new image: one generation, one upload, one Location. The
    // backend is slowed down so that they all arrive while the image is being made.
    mock.set_image_options(ImageOptions {
        delay: Duration::from_millis(300),
        ..ImageOptions::default()
    });
    let description = format!("ten foxes for {kind:?}");
    let requests = (0..10).map(|_| {
        let url = gw.url(&prompt_path(&description, ""));
        let key = key.clone();
        async move { client().get(url).bearer_auth(key).send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut locations = Vec::new();
    for (i, resp) in responses.iter().enumerate() {
        assert_eq!(
            resp.status(),
            StatusCode::FOUND,
            "concurrent request {i}: {:?}",
            resp.headers()
        );
        locations.push(header(resp, "location"));
    }
    assert_eq!(
        mock.image_generation_count(),
        2,
        "one generation for ten requests"
    );
    assert_eq!(hosting.upload_count(), 2, "one upload for ten requests");
    assert_eq!(
        hosting.upload_attempts(),
        2,
        "one upload attempt for ten requests"
    );
    let second = hosting.uploads()[1].clone();
    assert!(
        locations.iter().all(|l| *l == second.url),
        "every request went to the one hosted copy {}: {locations:?}",
        second.url
    );
    assert_eq!(second.bytes, expected_prompt_png(&description));
    assert_ne!(second.url, location);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smms_hosting_redirects_and_uploads_each_image_once() {
    hosting_redirects_and_uploads_once(HostingKind::Smms).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picgo_hosting_redirects_and_uploads_each_image_once() {
    hosting_redirects_and_uploads_once(HostingKind::Picgo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_imgbed_hosting_redirects_and_uploads_each_image_once() {
    hosting_redirects_and_uploads_once(HostingKind::CloudflareImgbed).await;
}

/// A request that finds the image in the cache while the miss that made it is still uploading
/// it must not upload it a second time ("each image is uploaded once"): it waits for that upload
/// and goes to the same hosted copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_during_the_first_upload_does_not_upload_again() {
    let (hosting, mock, gw, _id, key) = start_hosting(
        HostingKind::Picgo,
        DEFAULT_CREDENTIAL,
        DEFAULT_CREDENTIAL,
        "racer",
        "",
    )
    .await;
    hosting.set_delay(Duration::from_millis(1500));
    let description = "a slow upload";
    let first = {
        let url = gw.url(&prompt_path(description, ""));
        let key = key.clone();
        tokio::spawn(async move { client().get(url).bearer_auth(key).send().await.unwrap() })
    };
    // The image is generated and stored before it is uploaded: once the upload has reached the
    // host, a second request finds the image in the cache.
    assert!(
        hosting.wait_for_requests(1, WAIT).await,
        "the miss never uploaded"
    );
    assert_eq!(mock.image_generation_count(), 1);
    let second = prompt_bearer(&gw, description, &key).await;
    let first = first.await.unwrap();
    let first_location = assert_redirect(&first, "MISS", "the miss");
    let second_location = header(&second, "location");
    assert_eq!(
        second.status(),
        StatusCode::FOUND,
        "the request during the upload: {:?}",
        second.headers()
    );
    assert_eq!(
        (hosting.upload_attempts(), hosting.upload_count()),
        (1, 1),
        "the image was uploaded {} times (hosted at {:?})",
        hosting.upload_count(),
        hosting
            .uploads()
            .iter()
            .map(|u| u.url.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(second_location, first_location);
    assert_eq!(mock.image_generation_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 2. A failed upload: the image itself, and a later request tries again

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_falls_back_to_the_bytes_and_a_later_request_uploads() {
    // SM.MS refuses a wrong token with HTTP 200 and `"success": false`.
    let (hosting, mock, gw, _id, key) = start_hosting(
        HostingKind::Smms,
        DEFAULT_CREDENTIAL,
        "a-stale-token",
        "fallback",
        "",
    )
    .await;
    let description = "a lighthouse in fog";
    let bytes = assert_image(
        prompt_bearer(&gw, description, &key).await,
        "MISS",
        "upload refused",
    )
    .await;
    assert_eq!(bytes, expected_prompt_png(description));
    assert_eq!(
        hosting.upload_attempts(),
        1,
        "the miss tries to upload once before it answers"
    );
    assert_eq!(hosting.upload_count(), 0);

    // The host now accepts the gateway's token: the next request (a hit) uploads and redirects.
    hosting.set_credential("a-stale-token");
    let resp = prompt_query_key(&gw, description, &key).await;
    let location = assert_redirect(&resp, "HIT", "after the fix");
    let uploads = hosting.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(location, uploads[0].url);
    assert_eq!(uploads[0].auth.as_deref(), Some("a-stale-token"));
    assert_eq!(uploads[0].bytes, bytes);
    assert_eq!(fetch(&location).await, (200, bytes));

    // And from then on, no more uploads.
    let resp = prompt_bearer(&gw, description, &key).await;
    assert_eq!(assert_redirect(&resp, "HIT", "third request"), location);
    assert_eq!(
        (hosting.upload_attempts(), hosting.upload_count()),
        (2, 1),
        "one attempt per request until one succeeds"
    );
    assert_eq!(mock.image_generation_count(), 1, "generated once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_falls_back_to_the_bytes_and_a_later_request_uploads() {
    let (hosting, mock, gw, _id, key) = start_hosting(
        HostingKind::CloudflareImgbed,
        DEFAULT_CREDENTIAL,
        DEFAULT_CREDENTIAL,
        "outage",
        "",
    )
    .await;
    hosting.set_failing(Some(503));
    let description = "a harbour at night";
    let bytes = assert_image(
        prompt_bearer(&gw, description, &key).await,
        "MISS",
        "host answering 503",
    )
    .await;
    assert_eq!(bytes, expected_prompt_png(description));
    // A hit while the host still fails: the bytes again, and another attempt.
    let again = assert_image(
        prompt_bearer(&gw, description, &key).await,
        "HIT",
        "host still answering 503",
    )
    .await;
    assert_eq!(again, bytes);
    assert_eq!(
        (hosting.upload_attempts(), hosting.upload_count()),
        (2, 0),
        "one upload attempt per request (a miss, then a hit)"
    );

    hosting.set_failing(None);
    let resp = prompt_bearer(&gw, description, &key).await;
    let location = assert_redirect(&resp, "HIT", "host back");
    assert_eq!(hosting.upload_count(), 1);
    assert_eq!(location, hosting.uploads()[0].url);
    assert_eq!(fetch(&location).await, (200, bytes));
    assert_eq!(mock.image_generation_count(), 1, "generated once");
}

// ---------------------------------------------------------------------------------------------
// 3. store_generations: JSON generations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_generations_answer_urls_served_without_a_key() {
    let (_mock, gw) = start(&storing(), "").await;
    let (id, key) = new_user(&gw, "painter").await;

    // Default response format: the url replaces b64_json; the rest of the answer stays.
    let (status, reply) = post_json(
        &gw,
        &key,
        "/v1/images/generations",
        &generation("a stored lighthouse", 11),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let data = reply["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{reply}");
    let bytes = drawn("a stored lighthouse", 11);
    let hash = assert_stored_url(&data[0], &bytes);
    assert!(
        data[0].get("b64_json").is_none(),
        "b64_json was not asked for: {reply}"
    );
    assert!(reply["created"].is_u64(), "{reply}");
    assert!(reply["usage"]["input_tokens"].is_u64(), "{reply}");
    assert_eq!(reply["output_format"], "png", "{reply}");
    // Right after the answer (served from memory until written), without any key.
    assert_eq!(stored_image(&gw, &hash).await, bytes);

    // `response_format: b64_json`: both the image and its URL.
    let mut request = generation("a stored lighthouse at dawn", 12);
    request["response_format"] = json!("b64_json");
    let (status, reply) = post_json(&gw, &key, "/v1/images/generations", &request).await;
    assert_eq!(status, 200, "{reply}");
    let item = &reply["data"][0];
    let b64 = item["b64_json"]
        .as_str()
        .unwrap_or_else(|| panic!("b64_json was asked for: {reply}"));
    let second = b64_decode(b64);
    assert_eq!(second, drawn("a stored lighthouse at dawn", 12));
    let second_hash = assert_stored_url(item, &second);
    assert_ne!(second_hash, hash);
    assert_eq!(stored_image(&gw, &second_hash).await, second);

    // Unknown hashes and wrong extensions are 404s.
    let missing = sha256_hex(b"never stored");
    for path in [
        format!("/images/{missing}.png"),
        format!("/images/{hash}.jpg"),
    ] {
        let resp = client().get(gw.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // Still metered: two requests, two images, the upstream's tokens.
    let metered = eventually(WAIT, || async {
        let body = gw
            .admin_expect(200, "GET", &format!("/admin/usage?key={id}&by=day"), None)
            .await;
        let rows = body["data"].as_array().cloned().unwrap_or_default();
        let sum = |f: &str| rows.iter().map(|r| r[f].as_u64().unwrap_or(0)).sum::<u64>();
        sum("requests") == 2
            && sum("images") == 2
            && sum("prompt_tokens") > 0
            && sum("completion_tokens") == 2 * 272
    })
    .await;
    let usage = gw
        .admin_expect(200, "GET", &format!("/admin/usage?key={id}&by=day"), None)
        .await;
    assert!(metered, "usage of the two generations: {usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_generations_survive_a_restart() {
    let (_mock, mut gw) = start(&storing(), "").await;
    let (_id, key) = new_user(&gw, "keeper").await;
    let (status, reply) = post_json(
        &gw,
        &key,
        "/v1/images/generations",
        &generation("a lasting mountain", 31),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let bytes = drawn("a lasting mountain", 31);
    let hash = assert_stored_url(&reply["data"][0], &bytes);

    // The write-behind puts it on disk within a second or so: the file, then its index entry.
    let file = gw.dir.join("data/images").join(&hash[..2]).join(&hash);
    assert!(
        wait_until(WAIT, || file.is_file()).await,
        "{} never written",
        file.display()
    );
    assert!(
        eventually(WAIT, || lists(&gw, &key, &hash)).await,
        "the stored image was never listed"
    );
    // Its index entry is flushed once the write that stored it returns; a later image stored
    // by a later write-behind round proves that round is over (stop() is a SIGKILL).
    let (status, reply) = post_json(
        &gw,
        &key,
        "/v1/images/generations",
        &generation("a later mountain", 32),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let later = assert_stored_url(&reply["data"][0], &drawn("a later mountain", 32));
    assert!(
        eventually(WAIT, || lists(&gw, &key, &later)).await,
        "the later image was never listed"
    );

    assert_eq!(revalidate(&gw, &hash).await, StatusCode::NOT_MODIFIED);

    gw.stop();
    gw.spawn().await;
    assert_eq!(stored_image(&gw, &hash).await, bytes);
    assert_eq!(revalidate(&gw, &hash).await, StatusCode::NOT_MODIFIED);
    assert!(lists(&gw, &key, &hash).await, "listed after the restart");
}

// ---------------------------------------------------------------------------------------------
// 4. store_generations: multipart edits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_edits_answer_urls() {
    let (mock, gw) = start(&storing(), "").await;
    let (_id, key) = new_user(&gw, "editor").await;

    let (status, reply) = post_edit(&gw, &key, "add a red hat", 21, None).await;
    assert_eq!(status, 200, "{reply}");
    let item = &reply["data"][0];
    let bytes = drawn("add a red hat", 21);
    let hash = assert_stored_url(item, &bytes);
    assert!(item.get("b64_json").is_none(), "{reply}");
    // The mock saw the multipart body as sent.
    assert_eq!(reply["received"]["files"]["image"]["filename"], "input.png");
    assert_eq!(reply["received"]["fields"]["seed"], "21");
    assert_eq!(
        reply["usage"]["input_tokens_details"]["image_tokens"], 65,
        "{reply}"
    );
    assert_eq!(mock.generated_images().last(), Some(&bytes));
    assert_eq!(stored_image(&gw, &hash).await, bytes);

    let (status, reply) = post_edit(&gw, &key, "add a blue hat", 22, Some("b64_json")).await;
    assert_eq!(status, 200, "{reply}");
    let item = &reply["data"][0];
    let bytes = drawn("add a blue hat", 22);
    let hash = assert_stored_url(item, &bytes);
    assert_eq!(
        b64_decode(item["b64_json"].as_str().unwrap_or_default()),
        bytes,
        "b64_json kept when asked for: {reply}"
    );
    assert_eq!(stored_image(&gw, &hash).await, bytes);
}

// ---------------------------------------------------------------------------------------------
// 5. /account/images

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_images_lists_only_the_callers_images() {
    let (_mock, gw) = start(&storing(), "").await;
    let (alice_id, alice) = new_user(&gw, "alice").await;
    let (_bob_id, bob) = new_user(&gw, "bob").await;

    let (status, reply) = post_json(
        &gw,
        &alice,
        "/v1/images/generations",
        &generation("alice's garden", 41),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let garden = drawn("alice's garden", 41);
    let garden_hash = assert_stored_url(&reply["data"][0], &garden);
    let (status, reply) = post_edit(&gw, &alice, "alice's garden in snow", 42, None).await;
    assert_eq!(status, 200, "{reply}");
    let snow = drawn("alice's garden in snow", 42);
    let snow_hash = assert_stored_url(&reply["data"][0], &snow);

    // Listed once written (the write-behind runs every second).
    let listed = eventually(WAIT, || async {
        account_images(&gw, &alice).await.len() >= 2
    })
    .await;
    let images = account_images(&gw, &alice).await;
    assert!(listed, "alice's images: {images:?}");
    assert_eq!(images.len(), 2, "{images:?}");
    let mut hashes: Vec<&str> = images.iter().map(|i| i["hash"].as_str().unwrap()).collect();
    hashes.sort();
    let mut expected = vec![garden_hash.as_str(), snow_hash.as_str()];
    expected.sort();
    assert_eq!(hashes, expected);
    for image in &images {
        let hash = image["hash"].as_str().unwrap();
        let size = if hash == garden_hash {
            garden.len()
        } else {
            snow.len()
        };
        assert_eq!(image["url"], format!("{PUBLIC_URL}/images/{hash}.png"));
        assert_eq!(image["content_type"], "image/png");
        assert_eq!(image["size"], size as u64);
        assert_eq!(image["key_id"], alice_id.as_str());
        let created = image["created_at"].as_str().unwrap_or_default();
        assert!(
            created.len() >= 20 && created.ends_with('Z'),
            "created_at: {image}"
        );
        assert!(
            image.as_object().unwrap().contains_key("revised_prompt"),
            "{image}"
        );
    }
    let created: Vec<&str> = images
        .iter()
        .map(|i| i["created_at"].as_str().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );

    // Another key of alice's sees them too; bob sees none (yet may fetch the public URLs).
    let (_, alice2) = gw.create_key("alice", json!({"label": "second"})).await;
    assert_eq!(account_images(&gw, &alice2).await.len(), 2);
    assert_eq!(account_images(&gw, &bob).await, Vec::<Value>::new());
    assert_eq!(stored_image(&gw, &garden_hash).await, garden);

    // Without a key: 401.
    let resp = client()
        .get(gw.url("/account/images"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------------
// 6. Secrets stay out of the output

async fn secrets_stay_out_of_the_logs(kind: HostingKind) {
    let secret = format!("hosting-secret-{kind:?}-Q7vX2mK9");
    let (hosting, _mock, gw, _id, key) = start_hosting(
        kind,
        DEFAULT_CREDENTIAL,
        &secret,
        "quiet",
        "access_log: true\n",
    )
    .await;

    // A failed upload (the host refuses the credential) is logged; then the host accepts it.
    let description = format!("a secret garden {kind:?}");
    assert_image(
        prompt_query_key(&gw, &description, &key).await,
        "MISS",
        "refused credential",
    )
    .await;
    hosting.set_credential(&secret);
    let resp = prompt_query_key(&gw, &description, &key).await;
    assert_redirect(&resp, "HIT", "accepted credential");
    let resp = prompt_query_key(&gw, &format!("{description} again"), &key).await;
    assert_redirect(&resp, "MISS", "a new image");
    assert_eq!(hosting.upload_count(), 2);
    // A wrong key in the query is refused, and not logged either.
    let bogus = format!("sk-tg-{}", "Zz9".repeat(13) + "Q");
    let resp = prompt_query_key(&gw, &description, &bogus).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // The access log has the requests (so there is output to look at).
    let logged = wait_until(WAIT, || gw.stdout().matches("/prompt/").count() >= 4).await;
    let (stdout, stderr) = (gw.stdout(), gw.stderr());
    assert!(logged, "access log lines for /prompt; stdout:\n{stdout}");
    assert!(
        stderr.to_lowercase().contains("upload"),
        "the refused upload is logged; stderr:\n{stderr}"
    );
    for (name, output) in [("stdout", &stdout), ("stderr", &stderr)] {
        for (what, value) in [
            ("the hosting credential", secret.as_str()),
            ("the ?key= value", key.as_str()),
            ("a refused ?key= value", bogus.as_str()),
        ] {
            assert!(
                !output.contains(value),
                "{what} appears in the gateway's {name}:\n{output}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smms_credential_and_query_keys_stay_out_of_the_logs() {
    secrets_stay_out_of_the_logs(HostingKind::Smms).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picgo_credential_and_query_keys_stay_out_of_the_logs() {
    secrets_stay_out_of_the_logs(HostingKind::Picgo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imgbed_auth_code_and_query_keys_stay_out_of_the_logs() {
    secrets_stay_out_of_the_logs(HostingKind::CloudflareImgbed).await;
}
