//! Mock image hosting services for the `/prompt` image feature: a real
//! HTTP/1.1 server (hyper) on 127.0.0.1 that speaks the public upload API of
//! one provider, records every upload and serves the uploaded bytes at the
//! URLs it answered (so a client following the gateway's 302 gets the image).
//!
//! | kind               | upload                                   | credential (default `test-credential`)                           | file field |
//! |--------------------|------------------------------------------|------------------------------------------------------------------|------------|
//! | `Smms`             | `POST …/api/v2/upload`                   | `Authorization: <token>` (raw, no `Bearer`)                      | `smfile`   |
//! | `Picgo`            | `POST …/api/1/upload`                    | `X-API-Key: <key>` (or a `key` query parameter or form field)    | `source`   |
//! | `CloudflareImgbed` | `POST …/upload?authCode=<code>`          | `authCode` query parameter (or `authCode` header, or `Authorization: [Bearer ]<token>`) | `file` |
//!
//! Answers (`{base}` is [`MockHosting::url`], `{n}` the upload's number from 1,
//! `{ext}` the extension of the uploaded file name, else of its content type,
//! else `png`):
//!
//! * SM.MS, always HTTP 200 like the real service:
//!   - success: `{"success":true,"code":"success","message":"Upload success.","data":{"file_id":0,"width":W,"height":H,"filename":…,"storename":"mock{n}.{ext}","size":N,"path":"/mock/mock{n}.{ext}","hash":"del{n}","url":"{base}/i/mock{n}.{ext}","delete":"{base}/delete/del{n}","page":"{base}/page/mock{n}"},"RequestId":"MOCKREQ…"}`
//!     (W×H read from a PNG's IHDR, else 0×0);
//!   - wrong or missing token: `{"success":false,"code":"unauthorized","message":"Unauthorized.","data":"","RequestId":…}`;
//!   - bytes already uploaded: `{"success":false,"code":"image_repeated","message":"Image upload repeated limit, this image exists at: {url}","images":"{url}","RequestId":…}`;
//!   - no `smfile` part: `{"success":false,"code":"exception","message":"No files were uploaded.","data":"","RequestId":…}`.
//! * PicGo (Chevereto API v1, as picgo.net):
//!   - success, HTTP 200: `{"status_code":200,"success":{"message":"image uploaded","code":200},"image":{"name":"mock{n}","extension":"{ext}","size":N,"width":W,"height":H,"filename":"mock{n}.{ext}","mime":…,"id_encoded":"mock{n}","original_filename":…,"url":"{base}/images/mock{n}.{ext}","url_viewer":"{base}/image/mock{n}","display_url":"{base}/images/mock{n}.md.{ext}","image":{"filename","name","mime","extension","url","size"},"delete_url":"{base}/delete/mock{n}"},"status_txt":"OK"}`
//!     (`display_url` serves the same bytes);
//!   - wrong or missing key, HTTP 400: `{"status_code":400,"error":{"message":"Invalid API v1 key.","code":100,"context":"Exception"},"status_txt":"Bad Request"}`;
//!   - no `source` part, HTTP 400: same shape, `"Empty upload source."`, code 130.
//! * CloudFlare-ImgBed (MarSeventh/CloudFlare-ImgBed):
//!   - success, HTTP 200: `[{"src":"/file/mock{n}.{ext}"}]` (relative to the host; with
//!     `returnFormat=full` in the query: `{base}/file/mock{n}.{ext}`);
//!   - wrong or missing code: HTTP 401, `text/plain` body `Unauthorized` (what the real
//!     service sends);
//!   - no `file` part: HTTP 400, `text/plain` `Error: No file provided`.
//!
//! [`MockHosting::set_failing`] makes uploads answer a given status instead
//! (SM.MS: `{"success":false,"code":"mock_failure",…}`; PicGo: the error
//! shape; ImgBed: `text/plain`); [`MockHosting::set_delay`] delays upload
//! answers. Files already hosted keep being served either way. `GET`/`HEAD`
//! of any other path answer 404. Every request is recorded
//! ([`MockHosting::requests`]); only successful uploads are in
//! [`MockHosting::uploads`].
//!
//! Compiled in tests/common/mod.rs next to `mock` (and with `#[path]` next to
//! it in tests/mock_upstream.rs); it uses `super::mock` for the multipart
//! parser and the request record.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::mock::{multipart_boundary, parse_multipart, RecordedRequest};

/// The credential a fresh [`MockHosting`] accepts.
pub const DEFAULT_CREDENTIAL: &str = "test-credential";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostingKind {
    /// SM.MS API v2.
    Smms,
    /// picgo.net (Chevereto API v1).
    Picgo,
    /// A self-hosted MarSeventh/CloudFlare-ImgBed.
    CloudflareImgbed,
}

impl HostingKind {
    /// Path of the upload endpoint.
    pub fn upload_path(self) -> &'static str {
        match self {
            HostingKind::Smms => "/api/v2/upload",
            HostingKind::Picgo => "/api/1/upload",
            HostingKind::CloudflareImgbed => "/upload",
        }
    }

    /// Multipart field that carries the file.
    pub fn file_field(self) -> &'static str {
        match self {
            HostingKind::Smms => "smfile",
            HostingKind::Picgo => "source",
            HostingKind::CloudflareImgbed => "file",
        }
    }
}

/// A successful upload.
#[derive(Clone, Debug)]
pub struct Upload {
    /// Name of the multipart field the file came in.
    pub field: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
    /// The credential as sent (header, query parameter or form field value).
    pub auth: Option<String>,
    /// Absolute URL where the mock now serves the bytes.
    pub url: String,
}

struct Shared {
    kind: HostingKind,
    base_url: String,
    credential: Mutex<String>,
    failing: Mutex<Option<u16>>,
    delay: Mutex<Duration>,
    requests: Mutex<Vec<RecordedRequest>>,
    uploads: Mutex<Vec<Upload>>,
    /// Path -> (bytes, content type).
    files: Mutex<HashMap<String, (Bytes, String)>>,
    next_id: AtomicU64,
    /// Held across SM.MS's "already uploaded?" check and the store, so two
    /// concurrent identical uploads cannot both succeed.
    smms_dedup: Mutex<()>,
    changed: Notify,
}

/// A running mock hosting service; dropping it stops the server and closes
/// its connections.
pub struct MockHosting {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockHosting {
    /// Serve `kind`'s API on 127.0.0.1 with an ephemeral port.
    pub async fn start(kind: HostingKind) -> MockHosting {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("mock hosting: cannot bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            kind,
            base_url: format!("http://{addr}"),
            credential: Mutex::new(DEFAULT_CREDENTIAL.to_string()),
            failing: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
            requests: Mutex::new(Vec::new()),
            uploads: Mutex::new(Vec::new()),
            files: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            smms_dedup: Mutex::new(()),
            changed: Notify::new(),
        });
        let task = tokio::spawn(super::serve::accept_loop(listener, shared.clone(), handle));
        MockHosting { addr, shared, task }
    }

    pub fn kind(&self) -> HostingKind {
        self.shared.kind
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The full upload endpoint (for `images.hosting.url`), without query.
    pub fn upload_url(&self) -> String {
        format!("{}{}", self.shared.base_url, self.shared.kind.upload_path())
    }

    /// The token / API key / auth code uploads must carry from now on.
    pub fn set_credential(&self, credential: &str) {
        *self.shared.credential.lock().unwrap() = credential.to_string();
    }

    pub fn credential(&self) -> String {
        self.shared.credential.lock().unwrap().clone()
    }

    /// `Some(status)`: answer uploads with that status (see the module
    /// documentation for the bodies); `None`: back to normal.
    pub fn set_failing(&self, status: Option<u16>) {
        *self.shared.failing.lock().unwrap() = status;
    }

    /// Wait this long before answering each upload.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Successful uploads, in order.
    pub fn uploads(&self) -> Vec<Upload> {
        self.shared.uploads.lock().unwrap().clone()
    }

    pub fn upload_count(&self) -> usize {
        self.shared.uploads.lock().unwrap().len()
    }

    /// Every request received (uploads, refused ones and file fetches), in
    /// the order they were read.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Upload attempts received (`POST` to the upload path), successful or not.
    pub fn upload_attempts(&self) -> usize {
        let path = self.shared.kind.upload_path();
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| {
                r.method == "POST" && r.path.split('?').next().unwrap_or("").ends_with(path)
            })
            .count()
    }

    /// Wait until at least `n` uploads succeeded; false on timeout.
    pub async fn wait_for_uploads(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.upload_count() >= n).await
    }

    /// Wait until at least `n` requests were received; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.shared.requests.lock().unwrap().len() >= n)
            .await
    }

    async fn wait_until(&self, timeout: Duration, cond: impl Fn() -> bool) -> bool {
        super::serve::wait_until(&self.shared.changed, timeout, cond).await
    }
}

impl Drop for MockHosting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type HostingBody = super::serve::MockBody;

use super::serve::response;

fn json_response(status: u16, value: &Value) -> Response<HostingBody> {
    response(status, "application/json", value.to_string())
}

/// A request as the handlers need it.
struct Received {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn query(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<HostingBody>, io::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let record = RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_string(), value)
            })
            .collect(),
        body: body.to_vec(),
    };
    shared.requests.lock().unwrap().push(record);
    shared.changed.notify_waiters();

    let received = Received {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(parse_query).unwrap_or_default(),
        headers: parts.headers,
        body,
    };

    if received.method == Method::GET || received.method == Method::HEAD {
        let file = shared.files.lock().unwrap().get(&received.path).cloned();
        return Ok(match file {
            Some((bytes, content_type)) => response(200, &content_type, bytes),
            None => response(404, "text/plain", "404 Not Found"),
        });
    }
    if received.method != Method::POST || !received.path.ends_with(shared.kind.upload_path()) {
        return Ok(response(404, "text/plain", "404 Not Found"));
    }

    let delay = *shared.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let failing = *shared.failing.lock().unwrap();
    if let Some(status) = failing {
        return Ok(failure(&shared, status));
    }
    Ok(match shared.kind {
        HostingKind::Smms => smms_upload(&shared, &received),
        HostingKind::Picgo => picgo_upload(&shared, &received),
        HostingKind::CloudflareImgbed => imgbed_upload(&shared, &received),
    })
}

fn failure(shared: &Shared, status: u16) -> Response<HostingBody> {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    match shared.kind {
        HostingKind::Smms => json_response(
            status,
            &json!({
                "success": false,
                "code": "mock_failure",
                "message": format!("Mock failure (HTTP {status})."),
                "data": "",
                "RequestId": request_id(shared),
            }),
        ),
        HostingKind::Picgo => json_response(
            status,
            &json!({
                "status_code": status,
                "error": {"message": "Mock failure.", "code": status, "context": "Exception"},
                "status_txt": reason,
            }),
        ),
        HostingKind::CloudflareImgbed => response(
            status,
            "text/plain;charset=UTF-8",
            format!("Error: mock failure (HTTP {status})"),
        ),
    }
}

fn request_id(shared: &Shared) -> String {
    format!(
        "MOCKREQ{:06}",
        shared.next_id.fetch_add(1, Ordering::Relaxed)
    )
}

/// The file part of an upload.
struct FilePart {
    field: String,
    filename: Option<String>,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

/// The uploaded file and the text fields of a multipart body.
struct Form {
    file: Option<FilePart>,
    fields: Vec<(String, String)>,
}

fn parse_form(received: &Received, file_field: &str) -> Form {
    let content_type = received.header("content-type").unwrap_or_default();
    let parts = multipart_boundary(&content_type)
        .and_then(|b| parse_multipart(&received.body, &b).ok())
        .unwrap_or_default();
    let mut form = Form {
        file: None,
        fields: Vec::new(),
    };
    for part in parts {
        if part.name == file_field && form.file.is_none() {
            form.file = Some(FilePart {
                field: part.name.clone(),
                filename: part.filename.clone(),
                content_type: part.content_type.clone(),
                bytes: part.data.to_vec(),
            });
        } else if part.filename.is_none() {
            let value = String::from_utf8_lossy(part.data).into_owned();
            form.fields.push((part.name.clone(), value));
        }
    }
    form
}

/// Extension for the stored file: from the file name, else the content type,
/// else `png`.
fn extension(filename: Option<&str>, content_type: Option<&str>) -> String {
    let clean = |e: &str| {
        let e = e.to_ascii_lowercase();
        (!e.is_empty() && e.len() <= 5 && e.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(e)
    };
    filename
        .and_then(|f| f.rsplit_once('.'))
        .and_then(|(_, e)| clean(e))
        .or_else(|| {
            content_type
                .and_then(|c| c.split(';').next())
                .and_then(|m| m.trim().strip_prefix("image/"))
                .and_then(clean)
        })
        .unwrap_or_else(|| "png".to_string())
}

fn mime_of(ext: &str) -> &'static str {
    match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => "application/octet-stream",
    }
}

/// Width and height from a PNG's IHDR; (0, 0) for anything else.
fn dimensions(bytes: &[u8]) -> (u32, u32) {
    if bytes.len() >= 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR" {
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        (be(16), be(20))
    } else {
        (0, 0)
    }
}

/// A stored upload: its number, extension and where it is served.
struct Stored {
    n: usize,
    ext: String,
    mime: &'static str,
}

/// Stores the file at `paths(n, ext)` (the first path is the upload's URL)
/// and records the upload.
fn store(
    shared: &Shared,
    file: FilePart,
    auth: Option<String>,
    paths: impl Fn(usize, &str) -> Vec<String>,
) -> Stored {
    let FilePart {
        field,
        filename,
        content_type,
        bytes,
    } = file;
    let ext = extension(filename.as_deref(), content_type.as_deref());
    let mime = mime_of(&ext);
    let mut uploads = shared.uploads.lock().unwrap();
    let n = uploads.len() + 1;
    let paths = paths(n, &ext);
    let data = Bytes::from(bytes.clone());
    {
        let mut files = shared.files.lock().unwrap();
        for path in &paths {
            files.insert(path.clone(), (data.clone(), mime.to_string()));
        }
    }
    uploads.push(Upload {
        field,
        filename,
        content_type,
        bytes,
        auth,
        url: format!("{}{}", shared.base_url, paths[0]),
    });
    drop(uploads);
    shared.changed.notify_waiters();
    Stored { n, ext, mime }
}

fn smms_upload(shared: &Shared, received: &Received) -> Response<HostingBody> {
    let auth = received.header("authorization");
    let refuse = |code: &str, message: &str| {
        json_response(
            200,
            &json!({
                "success": false,
                "code": code,
                "message": message,
                "data": "",
                "RequestId": request_id(shared),
            }),
        )
    };
    if auth.as_deref() != Some(shared.credential.lock().unwrap().as_str()) {
        return refuse("unauthorized", "Unauthorized.");
    }
    let Some(file) = parse_form(received, "smfile").file else {
        return refuse("exception", "No files were uploaded.");
    };
    let _dedup = shared.smms_dedup.lock().unwrap();
    let existing = shared
        .uploads
        .lock()
        .unwrap()
        .iter()
        .find(|u| u.bytes == file.bytes)
        .map(|u| u.url.clone());
    if let Some(url) = existing {
        return json_response(
            200,
            &json!({
                "success": false,
                "code": "image_repeated",
                "message": format!("Image upload repeated limit, this image exists at: {url}"),
                "images": url,
                "RequestId": request_id(shared),
            }),
        );
    }
    let filename = file
        .filename
        .clone()
        .unwrap_or_else(|| "image.png".to_string());
    let (width, height) = dimensions(&file.bytes);
    let size = file.bytes.len();
    let stored = store(shared, file, auth, |n, ext| {
        vec![format!("/i/mock{n}.{ext}")]
    });
    let (n, ext, base) = (stored.n, stored.ext, &shared.base_url);
    json_response(
        200,
        &json!({
            "success": true,
            "code": "success",
            "message": "Upload success.",
            "data": {
                "file_id": 0,
                "width": width,
                "height": height,
                "filename": filename,
                "storename": format!("mock{n}.{ext}"),
                "size": size,
                "path": format!("/mock/mock{n}.{ext}"),
                "hash": format!("del{n}"),
                "url": format!("{base}/i/mock{n}.{ext}"),
                "delete": format!("{base}/delete/del{n}"),
                "page": format!("{base}/page/mock{n}"),
            },
            "RequestId": request_id(shared),
        }),
    )
}

fn picgo_upload(shared: &Shared, received: &Received) -> Response<HostingBody> {
    let form = parse_form(received, "source");
    let auth = received
        .header("x-api-key")
        .or_else(|| received.query("key"))
        .or_else(|| {
            form.fields
                .iter()
                .find(|(k, _)| k == "key")
                .map(|(_, v)| v.clone())
        });
    let refuse = |message: &str, code: u32| {
        json_response(
            400,
            &json!({
                "status_code": 400,
                "error": {"message": message, "code": code, "context": "Exception"},
                "status_txt": "Bad Request",
            }),
        )
    };
    if auth.as_deref() != Some(shared.credential.lock().unwrap().as_str()) {
        return refuse("Invalid API v1 key.", 100);
    }
    let Some(file) = form.file else {
        return refuse("Empty upload source.", 130);
    };
    let original = file
        .filename
        .clone()
        .unwrap_or_else(|| "image.png".to_string());
    let (width, height) = dimensions(&file.bytes);
    let size = file.bytes.len();
    let stored = store(shared, file, auth, |n, ext| {
        vec![
            format!("/images/mock{n}.{ext}"),
            format!("/images/mock{n}.md.{ext}"),
        ]
    });
    let (n, ext, mime, base) = (stored.n, stored.ext, stored.mime, &shared.base_url);
    let url = format!("{base}/images/mock{n}.{ext}");
    json_response(
        200,
        &json!({
            "status_code": 200,
            "success": {"message": "image uploaded", "code": 200},
            "image": {
                "name": format!("mock{n}"),
                "extension": ext,
                "size": size,
                "width": width,
                "height": height,
                "filename": format!("mock{n}.{ext}"),
                "mime": mime,
                "id_encoded": format!("mock{n}"),
                "original_filename": original,
                "url": url,
                "url_viewer": format!("{base}/image/mock{n}"),
                "display_url": format!("{base}/images/mock{n}.md.{ext}"),
                "image": {
                    "filename": format!("mock{n}.{ext}"),
                    "name": format!("mock{n}"),
                    "mime": mime,
                    "extension": ext,
                    "url": url,
                    "size": size,
                },
                "delete_url": format!("{base}/delete/mock{n}"),
            },
            "status_txt": "OK",
        }),
    )
}

fn imgbed_upload(shared: &Shared, received: &Received) -> Response<HostingBody> {
    let bearer = received
        .header("authorization")
        .map(|a| a.strip_prefix("Bearer ").unwrap_or(&a).to_string());
    let auth = received
        .query("authCode")
        .or_else(|| received.header("authcode"))
        .or(bearer);
    if auth.as_deref() != Some(shared.credential.lock().unwrap().as_str()) {
        return response(401, "text/plain;charset=UTF-8", "Unauthorized");
    }
    let Some(file) = parse_form(received, "file").file else {
        return response(400, "text/plain;charset=UTF-8", "Error: No file provided");
    };
    let stored = store(shared, file, auth, |n, ext| {
        vec![format!("/file/mock{n}.{ext}")]
    });
    let path = format!("/file/mock{}.{}", stored.n, stored.ext);
    let src = if received.query("returnFormat").as_deref() == Some("full") {
        format!("{}{path}", shared.base_url)
    } else {
        path
    };
    json_response(200, &json!([{"src": src}]))
}

/// `a=1&b=x%20y` -> pairs, percent- and `+`-decoded.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
