//! Image hosting providers (SPEC §2 `images.hosting`, §3.4): with hosting configured, a
//! `/prompt` image is uploaded once and requests are answered with a 302 to its hosted URL.
//!
//! Every provider speaks its public upload API; the shapes below were checked against the
//! providers' documentation and source:
//!
//! - **SM.MS v2** (`https://sm.ms/api/v2/upload`, doc.sm.ms): multipart field `smfile`, header
//!   `Authorization: <token>` (the raw token, not `Bearer`). Success is
//!   `{"success":true,"code":"success","data":{"url":…}}`; uploading bytes that are already there
//!   answers `{"success":false,"code":"image_repeated","message":…,"images":"<url>"}`, which is
//!   the URL we want.
//! - **PicGo** (picgo.net runs Chevereto; its API v1 at `/api/1/upload`, v4-docs.chevereto.com):
//!   multipart field `source`, header `X-API-Key`. Success is
//!   `{"status_code":200,"image":{"url":…},"status_txt":"OK"}` (`image.url` is the direct file;
//!   `url_viewer` would be an HTML page); errors are
//!   `{"status_code":4xx,"error":{"message":…,"code":…},"status_txt":…}`.
//! - **CloudFlare-ImgBed** (self-hosted, MarSeventh/CloudFlare-ImgBed, `functions/upload`):
//!   multipart field `file`, upload code as the `authCode` query parameter, or an API token as
//!   `Authorization: Bearer`. Success is `[{"src":"/file/<id>"}]`, relative to the instance's
//!   origin unless `returnFormat=full` was asked for; errors are plain text such as
//!   `Error: …` (401 `Unauthorized` for a wrong code).
//!
//! Whatever a provider answers, the gateway only redirects to an absolute http(s) URL made of
//! printable ASCII: a provider must not be able to send clients to `javascript:` or inject
//! header lines. Errors never contain the key, the upload code, or the upload URL with its query.

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::Value;
use std::time::Duration;

use crate::config::{HostingProvider, HostingSection};
use crate::gateway::upstream::Resolver;
use crate::outbound::{HttpClient, Limits, Response, Target};

/// SM.MS's public v2 upload endpoint (SPEC §3.4: the default for `smms`).
const SMMS_DEFAULT_URL: &str = "https://sm.ms/api/v2/upload";
/// picgo.net's Chevereto API v1 upload endpoint.
const PICGO_DEFAULT_URL: &str = "https://www.picgo.net/api/1/upload";

/// Provider messages are untrusted text that ends up in logs and error bodies: keep them short.
const MAX_MESSAGE_CHARS: usize = 200;
/// Longer "URLs" are not something we want to put in a `Location` header.
const MAX_URL_LEN: usize = 2048;

/// One image to upload.
pub struct Upload<'a> {
    pub bytes: &'a [u8],
    pub content_type: &'a str,
    /// The name the provider sees, e.g. `<hash>.png`.
    pub filename: &'a str,
}

/// Why an upload failed. The text never contains the key, the upload code or a URL carrying them.
#[derive(Debug)]
pub struct HostingError(pub String);

impl std::fmt::Display for HostingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostingError {}

#[async_trait]
pub trait ImageHost: Send + Sync {
    /// The YAML spelling of the provider (`smms`, `picgo`, `cloudflare_imgbed`).
    fn provider(&self) -> &'static str;
    /// Uploads the image; returns its public URL (absolute http(s) URL).
    async fn upload(
        &self,
        client: &HttpClient,
        resolver: &Resolver,
        image: &Upload<'_>,
    ) -> Result<String, HostingError>;
}

/// The host a validated `images.hosting` section describes.
pub fn host_for(section: &HostingSection) -> Box<dyn ImageHost> {
    let key = section.key.clone().filter(|k| !k.is_empty());
    match section.provider {
        HostingProvider::Smms => Box::new(KeyedHost {
            provider: HostingProvider::Smms,
            url: section
                .url
                .clone()
                .unwrap_or_else(|| SMMS_DEFAULT_URL.to_string()),
            key,
            // SM.MS takes the raw token, not `Bearer …`.
            key_header: "authorization",
            file_field: "smfile",
            parse: parse_smms,
        }),
        HostingProvider::Picgo => Box::new(KeyedHost {
            provider: HostingProvider::Picgo,
            url: section
                .url
                .clone()
                .unwrap_or_else(|| PICGO_DEFAULT_URL.to_string()),
            key,
            key_header: "x-api-key",
            file_field: "source",
            parse: parse_picgo,
        }),
        HostingProvider::CloudflareImgbed => {
            // Validation requires `url` for this provider; without it every upload fails with
            // "invalid URL" rather than the gateway refusing to start here.
            let url = section.url.clone().unwrap_or_default();
            let auth_code = section.auth_code.clone().filter(|c| !c.is_empty());
            Box::new(Imgbed {
                request_url: imgbed_upload_url(&url, auth_code.as_deref()),
                url,
                auth_code,
                key,
            })
        }
    }
}

/// Bounds of every provider call: uploads are small and a slow host must not hold a request
/// for long; the reply is a small JSON document.
fn limits() -> Limits {
    Limits {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(30),
        total_timeout: Duration::from_secs(60),
        max_response_bytes: 1024 * 1024,
        ca: None,
    }
}

/// SM.MS and PicGo: the same exchange, with the key in a header and the file in a field.
struct KeyedHost {
    provider: HostingProvider,
    url: String,
    key: Option<String>,
    key_header: &'static str,
    file_field: &'static str,
    parse: fn(u16, &[u8]) -> Result<String, HostingError>,
}

struct Imgbed {
    /// As configured, without the upload code: the base relative `src`s resolve against.
    url: String,
    /// `url` with `authCode=…`: the one we call. Never in an error.
    request_url: String,
    auth_code: Option<String>,
    /// An ImgBed API token (with `upload` permission), sent as `Authorization: Bearer`.
    key: Option<String>,
}

#[async_trait]
impl ImageHost for KeyedHost {
    fn provider(&self) -> &'static str {
        self.provider.as_str()
    }

    async fn upload(
        &self,
        client: &HttpClient,
        resolver: &Resolver,
        image: &Upload<'_>,
    ) -> Result<String, HostingError> {
        let secrets = [self.key.as_deref()];
        let auth: Vec<(&str, &str)> = self
            .key
            .as_deref()
            .map(|k| (self.key_header, k))
            .into_iter()
            .collect();
        let reply = post_multipart(
            client,
            resolver,
            self.provider(),
            &self.url,
            &auth,
            self.file_field,
            image,
            &secrets,
        )
        .await?;
        (self.parse)(reply.status, &reply.body).map_err(|e| redact(e, &secrets))
    }
}

#[async_trait]
impl ImageHost for Imgbed {
    fn provider(&self) -> &'static str {
        HostingProvider::CloudflareImgbed.as_str()
    }

    async fn upload(
        &self,
        client: &HttpClient,
        resolver: &Resolver,
        image: &Upload<'_>,
    ) -> Result<String, HostingError> {
        let encoded_code = self.auth_code.as_deref().map(percent_encode);
        let secrets = [
            self.key.as_deref(),
            self.auth_code.as_deref(),
            encoded_code.as_deref(),
        ];
        let bearer = self.key.as_deref().map(|k| format!("Bearer {k}"));
        let auth: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("authorization", b))
            .into_iter()
            .collect();
        let reply = post_multipart(
            client,
            resolver,
            "cloudflare_imgbed",
            &self.request_url,
            &auth,
            "file",
            image,
            &secrets,
        )
        .await?;
        parse_imgbed(reply.status, &reply.body, &self.url).map_err(|e| redact(e, &secrets))
    }
}

/// POSTs `image` as the only part of a multipart form.
#[allow(clippy::too_many_arguments)]
async fn post_multipart(
    client: &HttpClient,
    resolver: &Resolver,
    provider: &str,
    url: &str,
    auth: &[(&str, &str)],
    field: &str,
    image: &Upload<'_>,
    secrets: &[Option<&str>],
) -> Result<Response, HostingError> {
    let (content_type, body) =
        multipart_body(field, image.filename, image.content_type, image.bytes);
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", content_type.as_str()),
        ("accept", "application/json"),
    ];
    headers.extend_from_slice(auth);
    client
        .send(resolver, "POST", url, &headers, body, &limits())
        .await
        // `OutboundError` never carries the URL; the redaction is for a secret that some
        // lower layer might still have echoed (a header value, say).
        .map_err(|e| {
            redact(
                HostingError(format!("{provider}: upload failed: {e}")),
                secrets,
            )
        })
}

/// Replaces every configured secret in an error's text.
fn redact(e: HostingError, secrets: &[Option<&str>]) -> HostingError {
    let mut text = e.0;
    for secret in secrets.iter().flatten().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    HostingError(text)
}

// ---------------------------------------------------------------------------------------------
// Request building

/// A `multipart/form-data` body holding one file part: returns the `Content-Type` header value
/// (with the boundary) and the body.
pub(crate) fn multipart_body(
    field: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> (String, Bytes) {
    multipart_body_with(
        || {
            let mut b = String::from("tollgate-");
            Alphanumeric.append_string(&mut rand::rng(), &mut b, 32);
            b
        },
        field,
        filename,
        content_type,
        bytes,
    )
}

/// [`multipart_body`] with the boundary source given, so a collision can be tested.
fn multipart_body_with(
    mut next_boundary: impl FnMut() -> String,
    field: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> (String, Bytes) {
    // The names go inside a quoted header parameter: quotes, backslashes and line breaks would
    // end it or start a new header line.
    let field = header_param(field);
    let filename = header_param(filename);
    let content_type = if !content_type.is_empty()
        && content_type
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
    {
        content_type
    } else {
        "application/octet-stream"
    };
    let head_text = format!("{field}{filename}{content_type}");
    // A boundary that occurs inside the part would end it early. With 32 random alphanumerics
    // this practically never loops more than once.
    let boundary = loop {
        let candidate = next_boundary();
        if !candidate.is_empty()
            && !contains(bytes, candidate.as_bytes())
            && !head_text.contains(&candidate)
        {
            break candidate;
        }
    };
    let head = format!(
        "--{boundary}\r\n\
         Content-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
         Content-Type: {content_type}\r\n\
         \r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let mut body = BytesMut::with_capacity(head.len() + bytes.len() + tail.len());
    body.put_slice(head.as_bytes());
    body.put_slice(bytes);
    body.put_slice(tail.as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.freeze(),
    )
}

fn header_param(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The ImgBed URL to call: the configured endpoint with `authCode` added when one is set.
fn imgbed_upload_url(url: &str, auth_code: Option<&str>) -> String {
    match auth_code.filter(|c| !c.is_empty()) {
        None => url.to_string(),
        Some(code) => {
            let sep = if url.ends_with(['?', '&']) {
                ""
            } else if url.contains('?') {
                "&"
            } else {
                "?"
            };
            format!("{url}{sep}authCode={}", percent_encode(code))
        }
    }
}

/// Percent-encodes a query value: everything but `A-Z a-z 0-9 - . _ ~`.
fn percent_encode(s: &str) -> String {
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, UNRESERVED).to_string()
}

// ---------------------------------------------------------------------------------------------
// Reply parsing: pure, so each provider's answers are tested without a server.

fn parse_smms(status: u16, body: &[u8]) -> Result<String, HostingError> {
    const P: &str = "smms";
    let json = serde_json::from_slice::<Value>(body).ok();
    if !(200..300).contains(&status) {
        return Err(http_error(P, status, json.as_ref().and_then(smms_message)));
    }
    let json = json.ok_or_else(|| not_json(P))?;
    if json.get("success").and_then(Value::as_bool) == Some(true) {
        return public_url(P, json.pointer("/data/url").and_then(Value::as_str));
    }
    // The same bytes were uploaded before: SM.MS refuses the copy and names the original.
    if json.get("code").and_then(Value::as_str) == Some("image_repeated") {
        return public_url(P, json.get("images").and_then(Value::as_str));
    }
    Err(refused(P, smms_message(&json)))
}

fn smms_message(json: &Value) -> Option<String> {
    let code = json.get("code").and_then(Value::as_str);
    let message = json.get("message").and_then(Value::as_str);
    join(code, message)
}

fn parse_picgo(status: u16, body: &[u8]) -> Result<String, HostingError> {
    const P: &str = "picgo";
    let json = serde_json::from_slice::<Value>(body).ok();
    if !(200..300).contains(&status) {
        return Err(http_error(P, status, json.as_ref().and_then(picgo_message)));
    }
    let json = json.ok_or_else(|| not_json(P))?;
    // Chevereto repeats the HTTP status in the body; trust whichever says "error".
    let body_status = json.get("status_code").and_then(Value::as_u64);
    let failed = json.get("error").is_some_and(|e| !e.is_null())
        || body_status.is_some_and(|s| !(200..300).contains(&s));
    if failed {
        return Err(refused(P, picgo_message(&json)));
    }
    public_url(P, json.pointer("/image/url").and_then(Value::as_str))
}

fn picgo_message(json: &Value) -> Option<String> {
    let error = json.get("error");
    let code = error.and_then(|e| e.get("code")).map(|c| match c {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .or_else(|| json.get("status_txt").and_then(Value::as_str));
    join(code.as_deref(), message)
}

/// `upload_url` is the configured endpoint (no upload code): relative `src`s resolve against it.
fn parse_imgbed(status: u16, body: &[u8], upload_url: &str) -> Result<String, HostingError> {
    const P: &str = "cloudflare_imgbed";
    let json = serde_json::from_slice::<Value>(body).ok();
    if !(200..300).contains(&status) {
        // ImgBed reports errors as plain text (`Error: …`, `Unauthorized`).
        let message = match &json {
            Some(json) => imgbed_json_message(json),
            None => std::str::from_utf8(body).ok().map(str::to_string),
        };
        return Err(http_error(P, status, message));
    }
    let json = json.ok_or_else(|| not_json(P))?;
    // An empty `src` would resolve to the upload endpoint's directory: not an image.
    let src = json
        .pointer("/0/src")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(src) = src else {
        return Err(HostingError(format!("{P}: the reply has no image URL")));
    };
    resolve_src(P, upload_url, src)
}

fn imgbed_json_message(json: &Value) -> Option<String> {
    ["message", "error", "msg"]
        .iter()
        .find_map(|k| json.get(k).and_then(Value::as_str))
        .map(str::to_string)
}

/// Resolves an ImgBed `src` (RFC 3986 style) against the upload URL, then checks it like any
/// other URL a provider gives us.
fn resolve_src(provider: &str, upload_url: &str, src: &str) -> Result<String, HostingError> {
    if has_scheme(src) {
        return public_url(provider, Some(src));
    }
    let base = Target::parse(upload_url)
        .map_err(|e| HostingError(format!("{provider}: upload URL: {e}")))?;
    let resolved = if src.starts_with("//") {
        // Network-path reference: only the scheme comes from the base.
        let scheme = if base.tls { "https:" } else { "http:" };
        format!("{scheme}{src}")
    } else if src.starts_with('/') {
        format!("{}{src}", base.origin())
    } else {
        // Relative path: next to the upload endpoint (`/upload` → `/`).
        let path = base.path_and_query.split('?').next().unwrap_or("/");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{}{dir}{src}", base.origin())
    };
    public_url(provider, Some(&resolved))
}

/// `scheme:` at the start, as RFC 3986 defines a scheme.
fn has_scheme(s: &str) -> bool {
    match s.find(':') {
        Some(i) if i > 0 => {
            let scheme = &s[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        _ => false,
    }
}

/// The URL a client will be redirected to: absolute http(s), no user info, printable ASCII only
/// (no spaces or line breaks for a `Location` header), of reasonable length.
fn public_url(provider: &str, url: Option<&str>) -> Result<String, HostingError> {
    let url = url
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| HostingError(format!("{provider}: the reply has no image URL")))?;
    let usable = url.len() <= MAX_URL_LEN
        && url.bytes().all(|b| b.is_ascii_graphic())
        && Target::parse(url).is_ok();
    if usable {
        Ok(url.to_string())
    } else {
        Err(HostingError(format!(
            "{provider}: the reply's image URL is not an absolute http(s) URL"
        )))
    }
}

fn http_error(provider: &str, status: u16, message: Option<String>) -> HostingError {
    match message.map(|m| clean(&m)).filter(|m| !m.is_empty()) {
        Some(m) => HostingError(format!("{provider}: HTTP {status}: {m}")),
        None => HostingError(format!("{provider}: HTTP {status}")),
    }
}

fn refused(provider: &str, message: Option<String>) -> HostingError {
    match message.map(|m| clean(&m)).filter(|m| !m.is_empty()) {
        Some(m) => HostingError(format!("{provider}: upload refused: {m}")),
        None => HostingError(format!("{provider}: upload refused")),
    }
}

fn not_json(provider: &str) -> HostingError {
    HostingError(format!("{provider}: the reply is not JSON"))
}

fn join(code: Option<&str>, message: Option<&str>) -> Option<String> {
    match (code, message) {
        (Some(c), Some(m)) => Some(format!("{c}: {m}")),
        (Some(s), None) | (None, Some(s)) => Some(s.to_string()),
        (None, None) => None,
    }
}

/// Untrusted text made safe for one log line: control characters become spaces, and it is cut
/// to [`MAX_MESSAGE_CHARS`].
fn clean(s: &str) -> String {
    let mut out: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if s.trim().chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(r: Result<String, HostingError>) -> String {
        match r {
            Ok(u) => u,
            Err(e) => panic!("expected a URL, got error: {e}"),
        }
    }

    fn err(r: Result<String, HostingError>) -> String {
        match r {
            Ok(u) => panic!("expected an error, got {u}"),
            Err(e) => e.0,
        }
    }

    // ---- multipart

    #[test]
    fn multipart_body_has_one_file_part() {
        let data = b"\x89PNG\r\n\x00data";
        let (ct, body) = multipart_body("smfile", "abc.png", "image/png", data);
        let boundary = ct
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap()
            .to_string();
        assert!(boundary.len() >= 32);
        let mut expected = format!(
            "--{boundary}\r\n\
             Content-Disposition: form-data; name=\"smfile\"; filename=\"abc.png\"\r\n\
             Content-Type: image/png\r\n\
             \r\n"
        )
        .into_bytes();
        expected.extend_from_slice(data);
        expected.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        assert_eq!(body.to_vec(), expected);
    }

    #[test]
    fn multipart_boundaries_are_random() {
        let (a, _) = multipart_body("f", "x", "image/png", b"");
        let (b, _) = multipart_body("f", "x", "image/png", b"");
        assert_ne!(a, b);
    }

    #[test]
    fn multipart_boundary_never_occurs_in_the_content() {
        let mut candidates = vec!["second", "first"];
        let (ct, body) = multipart_body_with(
            || candidates.pop().unwrap().to_string(),
            "file",
            "a.png",
            "image/png",
            b"data with first inside",
        );
        assert_eq!(ct, "multipart/form-data; boundary=second");
        assert!(body.starts_with(b"--second\r\n"));
        assert!(body.ends_with(b"data with first inside\r\n--second--\r\n"));
    }

    #[test]
    fn multipart_quotes_and_line_breaks_cannot_escape_the_header() {
        let (_, body) = multipart_body_with(
            || "B".to_string(),
            "fi\"eld",
            "a\"b\r\nX-Evil: 1.png",
            "image/png\r\nX-Evil: 1",
            b"x",
        );
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("name=\"fi_eld\"; filename=\"a_b__X-Evil: 1.png\"\r\n"));
        assert!(text.contains("Content-Type: application/octet-stream\r\n"));
        assert!(!text.contains("\r\nX-Evil"));
    }

    // ---- SM.MS

    #[test]
    fn smms_success() {
        let body = br#"{"success":true,"code":"success","message":"Upload success.",
            "data":{"file_id":0,"width":1024,"height":1024,"filename":"a.png",
            "url":"https://s2.loli.net/2024/01/01/abc.png","delete":"https://sm.ms/delete/x"},
            "RequestId":"R"}"#;
        assert_eq!(
            ok(parse_smms(200, body)),
            "https://s2.loli.net/2024/01/01/abc.png"
        );
    }

    #[test]
    fn smms_repeated_image_is_a_success() {
        let body = br#"{"success":false,"code":"image_repeated",
            "message":"Image upload repeated limit, this image exists at: https://s2.loli.net/x.png",
            "images":"https://s2.loli.net/x.png","RequestId":"R"}"#;
        assert_eq!(ok(parse_smms(200, body)), "https://s2.loli.net/x.png");
    }

    #[test]
    fn smms_provider_error() {
        let body = br#"{"success":false,"code":"unauthorized","message":"Get user info failed.","RequestId":"R"}"#;
        assert_eq!(
            err(parse_smms(200, body)),
            "smms: upload refused: unauthorized: Get user info failed."
        );
    }

    #[test]
    fn smms_non_2xx() {
        let body = br#"{"success":false,"code":"flood","message":"slow down"}"#;
        assert_eq!(
            err(parse_smms(429, body)),
            "smms: HTTP 429: flood: slow down"
        );
        assert_eq!(
            err(parse_smms(502, b"<html>bad gateway</html>")),
            "smms: HTTP 502"
        );
        // Even a success-shaped body does not make a non-2xx status a success.
        let body = br#"{"success":true,"data":{"url":"https://s2.loli.net/a.png"}}"#;
        assert_eq!(err(parse_smms(500, body)), "smms: HTTP 500");
    }

    #[test]
    fn smms_non_json() {
        assert_eq!(
            err(parse_smms(200, b"<html>ok</html>")),
            "smms: the reply is not JSON"
        );
    }

    #[test]
    fn smms_missing_url() {
        let body = br#"{"success":true,"code":"success","data":{}}"#;
        assert_eq!(
            err(parse_smms(200, body)),
            "smms: the reply has no image URL"
        );
        let body = br#"{"success":false,"code":"image_repeated"}"#;
        assert_eq!(
            err(parse_smms(200, body)),
            "smms: the reply has no image URL"
        );
    }

    #[test]
    fn smms_non_http_url() {
        for url in [
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "/relative.png",
            "https://user:pw@evil.example/a.png",
            "https://a.example/a b.png",
            "https://a.example/a.png\r\nSet-Cookie: x=1",
        ] {
            let body = serde_json::json!({"success": true, "data": {"url": url}}).to_string();
            assert_eq!(
                err(parse_smms(200, body.as_bytes())),
                "smms: the reply's image URL is not an absolute http(s) URL",
                "{url:?} accepted"
            );
        }
    }

    #[test]
    fn provider_messages_are_cut_and_single_line() {
        let long = "x".repeat(500);
        let body =
            serde_json::json!({"success": false, "code": "e", "message": format!("a\nb{long}")});
        let e = err(parse_smms(200, body.to_string().as_bytes()));
        assert!(!e.contains('\n'));
        let message = e.strip_prefix("smms: upload refused: ").unwrap();
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(message.starts_with("e: a b"));
        assert!(message.ends_with('…'));
    }

    // ---- PicGo (Chevereto)

    #[test]
    fn picgo_success() {
        let body = br#"{"status_code":200,"success":{"message":"image uploaded","code":200},
            "image":{"name":"abc","extension":"png","url":"https://i.picgo.net/2024/01/01/abc.png",
            "url_viewer":"https://www.picgo.net/image/abc","display_url":"https://i.picgo.net/abc.md.png"},
            "status_txt":"OK"}"#;
        assert_eq!(
            ok(parse_picgo(200, body)),
            "https://i.picgo.net/2024/01/01/abc.png"
        );
    }

    #[test]
    fn picgo_provider_error() {
        let body = br#"{"status_code":400,"error":{"message":"Duplicated upload","code":101},"status_txt":"Bad Request"}"#;
        // Chevereto normally sends the same status in HTTP; an error body under 200 is still one.
        assert_eq!(
            err(parse_picgo(200, body)),
            "picgo: upload refused: 101: Duplicated upload"
        );
        assert_eq!(
            err(parse_picgo(400, body)),
            "picgo: HTTP 400: 101: Duplicated upload"
        );
    }

    #[test]
    fn picgo_non_2xx() {
        let body = br#"{"status_code":403,"status_txt":"Forbidden"}"#;
        assert_eq!(err(parse_picgo(403, body)), "picgo: HTTP 403: Forbidden");
        assert_eq!(err(parse_picgo(503, b"")), "picgo: HTTP 503");
    }

    #[test]
    fn picgo_non_json() {
        assert_eq!(
            err(parse_picgo(200, b"https://i.picgo.net/a.png")),
            "picgo: the reply is not JSON"
        );
    }

    #[test]
    fn picgo_missing_url() {
        let body = br#"{"status_code":200,"image":{"url_viewer":"https://www.picgo.net/image/abc"},"status_txt":"OK"}"#;
        assert_eq!(
            err(parse_picgo(200, body)),
            "picgo: the reply has no image URL"
        );
    }

    #[test]
    fn picgo_non_http_url() {
        let body =
            br#"{"status_code":200,"image":{"url":"javascript:alert(1)"},"status_txt":"OK"}"#;
        assert_eq!(
            err(parse_picgo(200, body)),
            "picgo: the reply's image URL is not an absolute http(s) URL"
        );
    }

    // ---- CloudFlare-ImgBed

    const IMGBED: &str = "https://img.example.com/upload";

    #[test]
    fn imgbed_upload_url_adds_the_auth_code() {
        assert_eq!(imgbed_upload_url(IMGBED, None), IMGBED);
        assert_eq!(imgbed_upload_url(IMGBED, Some("")), IMGBED);
        assert_eq!(
            imgbed_upload_url(IMGBED, Some("s3cret")),
            "https://img.example.com/upload?authCode=s3cret"
        );
        assert_eq!(
            imgbed_upload_url(
                "https://img.example.com/upload?uploadChannel=cfr2",
                Some("a b&c=d/é")
            ),
            "https://img.example.com/upload?uploadChannel=cfr2&authCode=a%20b%26c%3Dd%2F%C3%A9"
        );
        assert_eq!(
            imgbed_upload_url("http://img.example.com:8080/upload?", Some("x")),
            "http://img.example.com:8080/upload?authCode=x"
        );
    }

    #[test]
    fn imgbed_success_resolves_relative_src() {
        let body = br#"[{"src":"/file/abc123_image.png"}]"#;
        assert_eq!(
            ok(parse_imgbed(200, body, IMGBED)),
            "https://img.example.com/file/abc123_image.png"
        );
        assert_eq!(
            ok(parse_imgbed(200, body, "http://10.0.0.9:8080/upload")),
            "http://10.0.0.9:8080/file/abc123_image.png"
        );
        let body = br#"[{"src":"file/abc.png"}]"#;
        assert_eq!(
            ok(parse_imgbed(
                200,
                body,
                "https://img.example.com/api/upload"
            )),
            "https://img.example.com/api/file/abc.png"
        );
        assert_eq!(
            ok(parse_imgbed(200, body, "https://img.example.com")),
            "https://img.example.com/file/abc.png"
        );
        let body = br#"[{"src":"//cdn.example.com/file/abc.png"}]"#;
        assert_eq!(
            ok(parse_imgbed(200, body, IMGBED)),
            "https://cdn.example.com/file/abc.png"
        );
    }

    #[test]
    fn imgbed_success_keeps_absolute_src() {
        let body = br#"[{"src":"https://cdn.example.com/file/abc.png"}]"#;
        assert_eq!(
            ok(parse_imgbed(200, body, IMGBED)),
            "https://cdn.example.com/file/abc.png"
        );
    }

    #[test]
    fn imgbed_provider_error() {
        assert_eq!(
            err(parse_imgbed(401, b"Unauthorized", IMGBED)),
            "cloudflare_imgbed: HTTP 401: Unauthorized"
        );
        assert_eq!(
            err(parse_imgbed(
                500,
                b"Error: Failed to write to database",
                IMGBED
            )),
            "cloudflare_imgbed: HTTP 500: Error: Failed to write to database"
        );
        assert_eq!(
            err(parse_imgbed(400, br#"{"message":"bad file"}"#, IMGBED)),
            "cloudflare_imgbed: HTTP 400: bad file"
        );
    }

    #[test]
    fn imgbed_non_json() {
        assert_eq!(
            err(parse_imgbed(200, b"/file/abc.png", IMGBED)),
            "cloudflare_imgbed: the reply is not JSON"
        );
    }

    #[test]
    fn imgbed_missing_url() {
        for body in [
            &b"[]"[..],
            br#"[{}]"#,
            br#"{"src":"/file/a.png"}"#,
            br#"[{"src":""}]"#,
        ] {
            assert_eq!(
                err(parse_imgbed(200, body, IMGBED)),
                "cloudflare_imgbed: the reply has no image URL"
            );
        }
    }

    #[test]
    fn imgbed_non_http_url() {
        for src in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,x",
            "ftp://img.example.com/a.png",
            "/file/a b.png",
            "/file/a.png\r\nX: y",
        ] {
            let body = serde_json::json!([{ "src": src }]).to_string();
            assert_eq!(
                err(parse_imgbed(200, body.as_bytes(), IMGBED)),
                "cloudflare_imgbed: the reply's image URL is not an absolute http(s) URL",
                "{src:?} accepted"
            );
        }
    }

    // ---- secrets

    #[test]
    fn errors_never_carry_secrets() {
        let e = HostingError("picgo: HTTP 401: key k-123 is invalid, code%20x".to_string());
        let e = redact(e, &[Some("k-123"), None, Some(""), Some("code%20x")]);
        assert_eq!(e.0, "picgo: HTTP 401: key *** is invalid, ***");
    }

    #[test]
    fn hosts_for_each_provider() {
        let mut section = HostingSection {
            provider: HostingProvider::Smms,
            key: Some("k".into()),
            ..HostingSection::default()
        };
        assert_eq!(host_for(&section).provider(), "smms");
        section.provider = HostingProvider::Picgo;
        assert_eq!(host_for(&section).provider(), "picgo");
        section.provider = HostingProvider::CloudflareImgbed;
        section.url = Some(IMGBED.into());
        assert_eq!(host_for(&section).provider(), "cloudflare_imgbed");
    }
}
