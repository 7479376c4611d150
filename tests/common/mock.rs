//! A mock OpenAI-compatible upstream shared by Tollgate's tests, the demo
//! (`examples/mock_upstream.rs`) and benchmarks.
//!
//! It is a real HTTP/1.1 server (hyper) on a real socket, so the gateway talks
//! to it exactly as it would talk to api.openai.com. It records every request
//! it received completely, answers with OpenAI-shaped JSON / SSE, and can be
//! told to misbehave, either globally ([`MockUpstream::set_mode`]) or for a
//! single request through `x-mock-*` request headers:
//!
//! | header                       | effect                                                       |
//! |------------------------------|--------------------------------------------------------------|
//! | `x-mock-chunks: N`           | number of content pieces ("tok0 ", "tok1 ", ...), default 3 |
//! | `x-mock-delay-ms: D`         | SSE: delay between events (default 10); non-stream: delay before answering (default 0) |
//! | `x-mock-status: CODE`        | answer CODE with an OpenAI-style error body                  |
//! | `x-mock-first-byte-delay-ms` | wait this long before sending the response head              |
//!
//! Image endpoints (`POST …/v1/images/generations` and `…/v1/images/edits`):
//!
//! | situation                                          | answer                                              |
//! |----------------------------------------------------|-----------------------------------------------------|
//! | no image options set, request without `seed`       | legacy: every item is [`PNG_1X1`] (`b64_json`, or `url` = `{base}/files/img.png` when `response_format` is `url`) |
//! | request carries a `seed` field (any value)          | generated PNGs (below); `url` items when `response_format` is `url`, else `b64_json` |
//! | image options set ([`MockUpstream::set_image_options`]) | generated PNGs, after `delay` (and while `hold_while_body_contains` matches), in the shape `reply` picks (request's `response_format` ignored) |
//!
//! A generated PNG ([`generated_png`]) is [`PNG_1X1`] with a `tEXt` chunk
//! (keyword `Comment`, see [`png_text`]) inserted before `IEND` that holds
//! `prompt=…\nmodel=…\nsize=…\nseed=…\nn=…` (model and size defaulted as the
//! reply reports them, `seed=none` when absent, `n` the index within the
//! reply); with `size_bytes` set it is padded to exactly that many bytes (a
//! zero-filled private chunk `tgPd`, or trailing spaces in the text when fewer
//! than 12 bytes are missing; never shrunk). Same parameters, same bytes.
//! Every generated PNG is kept ([`MockUpstream::generated_images`]) and served
//! by `GET {base}/files/gen/{id}.png` (`image/png`), which is where `url`
//! items point. [`Mode`] applies to image calls (and to those file fetches)
//! as to everything else.
//!
//! The file is self-contained (no `crate::` paths) because it is compiled into
//! several crates: integration tests (`mod mock;` in tests/common/mod.rs, or
//! `#[path]`) and the example binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinHandle, JoinSet};

/// A valid 1x1 RGBA PNG (generated with zlib, CRCs checked), served by the
/// image endpoints so clients that decode the image do not choke.
pub const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x10, 0x68, 0xf8, 0xf0,
    0x1f, 0x00, 0x04, 0xa4, 0x02, 0x80, 0x29, 0x45, 0x68, 0xd2, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Size of the fake audio returned by `/v1/audio/speech`.
pub const SPEECH_BYTES: usize = 64 * 1024;

/// Models listed by `GET /v1/models`: (id, created).
const MODELS: &[(&str, u64)] = &[
    ("gpt-4o-mini", 1_721_172_741),
    ("gpt-4o", 1_715_367_049),
    ("gpt-image-1", 1_745_517_030),
];

const DEFAULT_CHAT_MODEL: &str = "gpt-4o-mini";
const DEFAULT_COMPLETION_MODEL: &str = "gpt-3.5-turbo-instruct";
const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";
const DEFAULT_IMAGE_MODEL: &str = "gpt-image-1";
/// Non-streaming answer when the request did not ask for a piece count.
const DEFAULT_TEXT: &str = "Hello from mock";
const DEFAULT_PIECES: usize = 3;
const DEFAULT_SSE_DELAY: Duration = Duration::from_millis(10);
const EMBEDDING_DIMS: usize = 8;

/// How the mock answers subsequent requests (the mode is read when a request
/// head arrives).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// OpenAI-shaped answers, steerable per request with `x-mock-*` headers.
    #[default]
    Normal,
    /// Answer every request with this status and body (`application/json`).
    Status(u16, String),
    /// Read the request, then never answer; the socket stays open until the
    /// client goes away or the mock is dropped.
    Hang,
    /// Read the request, then close the socket without answering.
    DropConnection,
    /// Streaming requests send this many SSE events, then the connection is
    /// aborted mid-body (no terminating chunk). Non-streaming requests are
    /// answered normally.
    StreamThenDrop { events_before_drop: usize },
}

/// Shape of the answers of image endpoints while image options are set.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ImageReply {
    /// `data: [{"b64_json": …}]`.
    #[default]
    B64,
    /// `data: [{"url": "{base}/files/gen/{id}.png"}]`; the mock serves it.
    Url,
    /// `data: [{"url": <this exact string>}]` (the image is still generated
    /// and kept).
    UrlOverride(String),
    /// 200 with a JSON body that has no `data`: `{"created": …}`.
    Malformed,
    /// 200 `text/plain` that is not JSON.
    NotJson,
}

/// Global image knobs: the gateway calls the image API itself, so per-request
/// `x-mock-*` headers cannot steer it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ImageOptions {
    /// Pad every generated PNG to exactly this many bytes (see
    /// [`generated_png`]).
    pub size_bytes: Option<usize>,
    /// Wait this long before answering an image request (on top of
    /// `x-mock-delay-ms`).
    pub delay: Duration,
    pub reply: ImageReply,
    /// Hold every generation whose request body contains this text (its prompt, say) until
    /// the options are set again without it: a test decides when such an image is done.
    pub hold_while_body_contains: Option<String>,
}

/// What a generated PNG is derived from (see [`generated_png`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageParams {
    pub prompt: String,
    /// As the reply reports it (`gpt-image-1` when the request had none).
    pub model: String,
    /// As the reply reports it (`1024x1024` when the request had none).
    pub size: String,
    /// `None` when the request had no integer `seed`.
    pub seed: Option<i64>,
    /// Index of the image within the reply (0 for `n: 1`).
    pub index: u32,
}

impl ImageParams {
    /// Parameters of the first (or only) image of a reply.
    pub fn new(prompt: &str, model: &str, size: &str, seed: Option<i64>) -> ImageParams {
        ImageParams {
            prompt: prompt.to_string(),
            model: model.to_string(),
            size: size.to_string(),
            seed,
            index: 0,
        }
    }
}

/// A request the mock received completely (head and whole body).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as received, e.g. `/v1/models?limit=2`.
    pub path: String,
    /// Header names are lowercase; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// State shared by the handle, the accept loop and every connection.
struct Shared {
    base_url: String,
    mode: Mutex<Mode>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Off for benchmarks, where keeping every request would grow without bound.
    recording: AtomicBool,
    cancelled_streams: AtomicUsize,
    open_connections: AtomicUsize,
    next_id: AtomicU64,
    /// `Some` once [`MockUpstream::set_image_options`] was called.
    image_options: Mutex<Option<ImageOptions>>,
    /// Every generated PNG; `/files/gen/{i + 1}.png` serves element `i`.
    generated: Mutex<Vec<Bytes>>,
    /// Woken on every counter change so `wait_for_*` need no polling sleeps.
    changed: Notify,
}

impl Shared {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// A running mock server. Dropping it stops the server and aborts every
/// connection it still has open.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    /// Serve on 127.0.0.1 with an ephemeral port, in a background task of the
    /// current tokio runtime.
    pub async fn start() -> MockUpstream {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(addr)
            .await
            .expect("mock upstream: cannot bind 127.0.0.1:0")
    }

    /// Serve on `addr` (port 0 picks a free port).
    pub async fn start_on(addr: SocketAddr) -> io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            mode: Mutex::new(Mode::Normal),
            requests: Mutex::new(Vec::new()),
            recording: AtomicBool::new(true),
            cancelled_streams: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            image_options: Mutex::new(None),
            generated: Mutex::new(Vec::new()),
            changed: Notify::new(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(MockUpstream { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Requests received completely so far, in the order they completed.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Wait until at least `n` requests were recorded; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.request_count() >= n).await
    }

    /// Whether requests are kept for [`MockUpstream::requests`] (on by default).
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// SSE streams whose client went away before the mock finished sending.
    pub fn cancelled_streams(&self) -> usize {
        self.shared.cancelled_streams.load(Ordering::SeqCst)
    }

    pub async fn wait_for_cancelled_streams(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.cancelled_streams() >= n)
            .await
    }

    /// TCP connections currently open (accepted and not yet closed).
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::SeqCst)
    }

    /// Wait until exactly `n` connections are open; false on timeout. Handy
    /// to know the mock has seen a client hang up.
    pub async fn wait_for_open_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.open_connections() == n)
            .await
    }

    /// From now on, image endpoints answer generated PNGs as `options` say
    /// (see the module documentation).
    pub fn set_image_options(&self, options: ImageOptions) {
        *self.shared.image_options.lock().unwrap() = Some(options);
        // Held generations look at the options again.
        self.shared.changed.notify_waiters();
    }

    /// Back to the default image behaviour (as if options were never set).
    pub fn clear_image_options(&self) {
        *self.shared.image_options.lock().unwrap() = None;
    }

    pub fn image_options(&self) -> Option<ImageOptions> {
        self.shared.image_options.lock().unwrap().clone()
    }

    /// `POST …/v1/images/generations` requests received completely so far,
    /// whatever the mock answered (also in `Mode::Status`, `Hang`, ...).
    pub fn image_generation_count(&self) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "POST" && is_generations_path(&r.path))
            .count()
    }

    /// Wait until at least `n` image generation requests were received; false
    /// on timeout.
    pub async fn wait_for_image_generations(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.image_generation_count() >= n)
            .await
    }

    /// Every PNG the mock generated (not the legacy [`PNG_1X1`] answers), in
    /// order; element `i` is served at `{base}/files/gen/{i + 1}.png`.
    pub fn generated_images(&self) -> Vec<Vec<u8>> {
        self.shared
            .generated
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.to_vec())
            .collect()
    }

    async fn wait_until(&self, timeout: Duration, cond: impl Fn() -> bool) -> bool {
        wait_until(&self.shared.changed, timeout, cond).await
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connections, so aborting it also
        // aborts (and closes) every open connection.
        self.task.abort();
    }
}

/// Decrements `open_connections` however the connection task ends
/// (normally, by error, or aborted).
struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.bump(&shared.open_connections);
        ConnectionGuard(shared)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(_) => {
                        // e.g. EMFILE: back off briefly instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // SSE events are small; don't let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                let guard = ConnectionGuard::new(shared.clone());
                let shared = shared.clone();
                connections.spawn(async move {
                    let _guard = guard;
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    // HTTP/1.1 only, keep-alive on (hyper's default). Errors just
                    // mean the connection ended; nothing to report.
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reap finished connection tasks so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

type MockBody = BoxBody<Bytes, io::Error>;
type HandlerResult = Result<Response<MockBody>, io::Error>;

/// Per-request knobs read from `x-mock-*` headers.
struct Knobs {
    chunks: Option<usize>,
    delay_ms: Option<u64>,
    status: Option<String>,
    first_byte_delay: Duration,
}

impl Knobs {
    fn from_headers(headers: &HeaderMap) -> Knobs {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        };
        let number = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
        Knobs {
            chunks: number("x-mock-chunks").map(|n| n as usize),
            delay_ms: number("x-mock-delay-ms"),
            status: get("x-mock-status"),
            first_byte_delay: Duration::from_millis(
                number("x-mock-first-byte-delay-ms").unwrap_or(0),
            ),
        }
    }

    fn pieces(&self) -> usize {
        self.chunks.unwrap_or(DEFAULT_PIECES)
    }

    fn sse_delay(&self) -> Duration {
        self.delay_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_SSE_DELAY)
    }

    fn plain_delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.unwrap_or(0))
    }

    /// Non-streaming text: "Hello from mock" unless the test asked for a
    /// specific number of pieces, then the same pieces a stream would carry.
    fn full_text(&self) -> (String, usize) {
        match self.chunks {
            None => (DEFAULT_TEXT.to_string(), DEFAULT_PIECES),
            Some(n) => (pieces(n).concat(), n),
        }
    }
}

/// Everything the route handlers need about one request.
struct Ctx {
    shared: Arc<Shared>,
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    knobs: Knobs,
    /// `Some(n)` in `Mode::StreamThenDrop`.
    drop_after: Option<usize>,
}

/// A sleep that costs nothing when there is nothing to wait for: a zero tokio sleep still
/// goes through the timer wheel (millisecond ticks), which would blur latency benchmarks.
async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> HandlerResult {
    let mode = shared.mode.lock().unwrap().clone();
    let (parts, body) = req.into_parts();

    // Read and record the body in its own task: if the client closes right
    // after sending a complete request, hyper drops this handler future, but
    // the request did arrive complete and must still be recorded. An
    // incomplete body makes `collect` fail, so it is never recorded.
    if !shared.recording.load(Ordering::Relaxed) {
        let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
        return answer(shared, parts, body, mode).await;
    }
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
        body: Vec::new(),
    };
    let recorder = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
            let mut record = record;
            record.body = body.to_vec();
            shared.requests.lock().unwrap().push(record);
            shared.changed.notify_waiters();
            Ok::<Bytes, io::Error>(body)
        })
    };
    let body = recorder.await.map_err(io::Error::other)??;
    answer(shared, parts, body, mode).await
}

async fn answer(
    shared: Arc<Shared>,
    parts: hyper::http::request::Parts,
    body: Bytes,
    mode: Mode,
) -> HandlerResult {
    let knobs = Knobs::from_headers(&parts.headers);
    let drop_after = match mode {
        Mode::Normal => None,
        Mode::StreamThenDrop { events_before_drop } => Some(events_before_drop),
        Mode::Status(code, text) => {
            pause(knobs.first_byte_delay).await;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(with_request_id(
                &shared,
                response(status, "application/json", text),
            ));
        }
        Mode::Hang => std::future::pending().await,
        // Returning an error makes hyper close the socket without writing a
        // response.
        Mode::DropConnection => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock: DropConnection",
            ))
        }
    };

    pause(knobs.first_byte_delay).await;
    let ctx = Ctx {
        shared: shared.clone(),
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        knobs,
        drop_after,
    };
    let resp = route(&ctx).await;
    Ok(with_request_id(&shared, resp))
}

fn with_request_id(shared: &Shared, mut resp: Response<MockBody>) -> Response<MockBody> {
    let id = format!("req_mock_{}", shared.id());
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", value);
    }
    resp
}

async fn route(ctx: &Ctx) -> Response<MockBody> {
    if let Some(code) = &ctx.knobs.status {
        return match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) if !status.is_informational() => status_error(status),
            _ => error_response(
                StatusCode::BAD_REQUEST,
                &format!("mock: invalid x-mock-status value {code:?}"),
                "invalid_request_error",
                None,
            ),
        };
    }

    let path = ctx.path.as_str();
    let is = |suffix: &str| path.ends_with(suffix);
    let post = ctx.method == Method::POST;
    let get = ctx.method == Method::GET;

    // Non-streaming answers treat x-mock-delay-ms as a delay before the
    // answer; streams use it between events instead (see `is_sse` below).
    let delayed = |resp: Response<MockBody>| async {
        pause(ctx.knobs.plain_delay()).await;
        resp
    };

    if is("/echo") {
        return delayed(echo(ctx)).await;
    }
    if get && is("/files/img.png") {
        return response(StatusCode::OK, "image/png", Bytes::from_static(PNG_1X1));
    }
    if get {
        if let Some(resp) = generated_file(ctx) {
            return resp;
        }
    }
    if get && is("/v1/models") {
        return delayed(json_response(StatusCode::OK, &models_list())).await;
    }
    if get {
        if let Some(idx) = path.rfind("/v1/models/") {
            let id = &path[idx + "/v1/models/".len()..];
            return delayed(model_by_id(id)).await;
        }
    }
    if post && is("/v1/audio/speech") {
        return speech(ctx);
    }
    if post && (is("/v1/images/edits") || is("/v1/images/generations")) {
        let options = ctx.shared.image_options.lock().unwrap().clone();
        if let Some(options) = options {
            tokio::time::sleep(options.delay).await;
        }
        let held = |shared: &Shared| {
            let options = shared.image_options.lock().unwrap();
            let marker = options
                .as_ref()
                .and_then(|o| o.hold_while_body_contains.as_ref());
            marker.is_some_and(|m| {
                !m.is_empty() && ctx.body.windows(m.len()).any(|w| w == m.as_bytes())
            })
        };
        // Ten minutes is a safety net only: the gateway gives up long before.
        wait_until(&ctx.shared.changed, Duration::from_secs(600), || {
            !held(&ctx.shared)
        })
        .await;
    }
    if post && (is("/v1/images/edits") || is("/v1/audio/transcriptions")) {
        return delayed(multipart_endpoint(ctx)).await;
    }

    let json_route: Option<fn(&Ctx, &Value) -> Response<MockBody>> = if !post {
        None
    } else if is("/v1/chat/completions") {
        Some(chat_completions)
    } else if is("/v1/completions") {
        Some(completions)
    } else if is("/v1/embeddings") {
        Some(embeddings)
    } else if is("/v1/responses") {
        Some(responses)
    } else if is("/v1/images/generations") {
        Some(images_generations)
    } else {
        None
    };
    let Some(handler) = json_route else {
        return unknown_url(ctx);
    };
    let request = match serde_json::from_slice::<Value>(&ctx.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return invalid_json(),
    };
    let resp = handler(ctx, &request);
    if is_sse(&resp) {
        resp
    } else {
        delayed(resp).await
    }
}

fn is_sse(resp: &Response<MockBody>) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

// ---------------------------------------------------------------------------
// Response helpers

fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<MockBody> {
    let body = Full::new(body.into())
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Response<MockBody> {
    response(status, "application/json", value.to_string())
}

fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response<MockBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// The error body OpenAI sends for a given status (as far as a gateway cares).
fn status_error(status: StatusCode) -> Response<MockBody> {
    let (message, kind, code) = match status.as_u16() {
        400 => ("mock: bad request", "invalid_request_error", None),
        401 => (
            "Incorrect API key provided (mock).",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => (
            "mock: forbidden",
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
        ),
        404 => (
            "mock: not found",
            "invalid_request_error",
            Some("model_not_found"),
        ),
        429 => (
            "Rate limit reached (mock). Please try again later.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500..=599 => (
            "The server had an error while processing your request. Sorry about that! (mock)",
            "server_error",
            None,
        ),
        _ => ("mock: forced status", "invalid_request_error", None),
    };
    error_response(status, message, kind, code)
}

/// OpenAI's answer to a body that is not a JSON object.
fn invalid_json() -> Response<MockBody> {
    error_response(
        StatusCode::BAD_REQUEST,
        "We could not parse the JSON body of your request. (HINT: This likely means you \
         aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
         but what was sent was not valid JSON.)",
        "invalid_request_error",
        None,
    )
}

fn unknown_url(ctx: &Ctx) -> Response<MockBody> {
    let message = format!(
        "Invalid URL ({} {})",
        ctx.method,
        match &ctx.query {
            Some(q) => format!("{}?{q}", ctx.path),
            None => ctx.path.clone(),
        }
    );
    error_response(
        StatusCode::NOT_FOUND,
        &message,
        "invalid_request_error",
        Some("unknown_url"),
    )
}

/// A response whose body is fed by a task, one HTTP chunk per element of
/// `events`. See [`produce`] for pacing, cancellation and aborts.
fn streaming_response(ctx: &Ctx, content_type: &str, plan: StreamPlan) -> Response<MockBody> {
    // Capacity 1: the producer can never run more than one event ahead of what
    // hyper has taken, so "client went away" is noticed promptly.
    let (tx, rx) = mpsc::channel(1);
    let progress = Arc::new(BodyProgress::default());
    tokio::spawn(produce(ctx.shared.clone(), tx, progress.clone(), plan));
    let body = ChannelBody { rx, progress }.boxed();
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("static content type"),
    );
    resp
}

type FrameResult = Result<Frame<Bytes>, io::Error>;

struct StreamPlan {
    events: Vec<Bytes>,
    delay: Duration,
    /// Abort the connection after this many events (`Mode::StreamThenDrop`).
    drop_after: Option<usize>,
    /// Count it in `cancelled_streams` if the client leaves early.
    sse: bool,
}

/// How far hyper has consumed a [`ChannelBody`]. Needed for aborts: hyper
/// drops data it has buffered but not flushed when the body errors, so the
/// producer waits until hyper has taken every event and then found the
/// channel empty (after which it flushes) before injecting the error.
#[derive(Default)]
struct BodyProgress {
    taken: AtomicUsize,
    /// `taken + 1` as of the last time hyper polled and found the channel
    /// empty; 0 while that never happened.
    idle_after: AtomicUsize,
    notify: Notify,
}

struct ChannelBody {
    rx: mpsc::Receiver<FrameResult>,
    progress: Arc<BodyProgress>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let polled = self.rx.poll_recv(cx);
        let progress = &self.progress;
        match &polled {
            Poll::Ready(Some(_)) => {
                progress.taken.fetch_add(1, Ordering::SeqCst);
            }
            Poll::Pending => {
                let taken = progress.taken.load(Ordering::SeqCst);
                progress.idle_after.store(taken + 1, Ordering::SeqCst);
                progress.notify.notify_waiters();
            }
            Poll::Ready(None) => {}
        }
        polled
    }
}

async fn produce(
    shared: Arc<Shared>,
    tx: mpsc::Sender<FrameResult>,
    progress: Arc<BodyProgress>,
    plan: StreamPlan,
) {
    let total = plan.events.len();
    let cancelled = || {
        if plan.sse {
            shared.bump(&shared.cancelled_streams);
        }
    };
    for (i, event) in plan.events.iter().enumerate() {
        if i > 0 && !plan.delay.is_zero() {
            // Wait, but notice at once if hyper drops the body (client gone).
            tokio::select! {
                _ = tokio::time::sleep(plan.delay) => {}
                _ = tx.closed() => return cancelled(),
            }
        }
        if plan.drop_after == Some(i) {
            return abort_stream(&tx, &progress, i).await;
        }
        if tx.send(Ok(Frame::data(event.clone()))).await.is_err() {
            return cancelled();
        }
    }
    if plan.drop_after.is_some() {
        // Asked to drop after at least as many events as the stream has:
        // still end by aborting rather than cleanly.
        return abort_stream(&tx, &progress, total).await;
    }
    // Dropping `tx` ends the body: hyper writes the terminating chunk.
}

async fn abort_stream(tx: &mpsc::Sender<FrameResult>, progress: &BodyProgress, sent: usize) {
    loop {
        let notified = progress.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Hyper has taken all `sent` events and then found the channel empty,
        // so it flushed them (for `sent == 0`: flushed the response head).
        if progress.idle_after.load(Ordering::SeqCst) > sent {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = tx.closed() => return,
        }
    }
    // A body error makes hyper close the connection without the final chunk.
    let err = io::Error::new(io::ErrorKind::ConnectionAborted, "mock: StreamThenDrop");
    let _ = tx.send(Err(err)).await;
}

fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn sse_named(event: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {value}\n\n"))
}

fn sse_response(ctx: &Ctx, events: Vec<Bytes>) -> Response<MockBody> {
    let plan = StreamPlan {
        events,
        delay: ctx.knobs.sse_delay(),
        drop_after: ctx.drop_after,
        sse: true,
    };
    streaming_response(ctx, "text/event-stream; charset=utf-8", plan)
}

// ---------------------------------------------------------------------------
// Shared computations

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pieces(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

/// Deterministic token estimate: bytes / 4 rounded up, at least 1.
fn estimate_tokens(text_bytes: usize) -> u64 {
    (text_bytes.div_ceil(4)).max(1) as u64
}

/// Bytes of text in a message `content` (a string or an array of parts).
fn content_len(content: &Value) -> usize {
    match content {
        Value::String(s) => s.len(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.len(),
                _ => p.get("text").and_then(Value::as_str).map_or(0, str::len),
            })
            .sum(),
        _ => 0,
    }
}

/// Bytes of text in `messages` (chat) or `input` (responses): a string, or
/// an array of items with a `content`.
fn messages_len(messages: &Value) -> usize {
    match messages {
        Value::String(s) => s.len(),
        Value::Array(items) => items
            .iter()
            .map(|m| match m.get("content") {
                Some(c) => content_len(c),
                None => content_len(&Value::Array(vec![m.clone()])),
            })
            .sum(),
        _ => 0,
    }
}

fn model_of<'a>(request: &'a Value, default: &'a str) -> &'a str {
    request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(default)
}

fn wants_stream(request: &Value) -> bool {
    request.get("stream").and_then(Value::as_bool) == Some(true)
}

fn wants_usage_chunk(request: &Value) -> bool {
    request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
}

/// CRC-32 (IEEE 802.3, as PNG and zlib use it) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, bytes) ^ 0xFFFF_FFFF
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Raw CRC register update (no pre/post inversion).
fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        crc = CRC_TABLE[((crc ^ *b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
/// Keyword of the `tEXt` chunk of generated PNGs.
const PNG_TEXT_KEYWORD: &str = "Comment";
/// Private ancillary chunk that pads generated PNGs to a requested size.
const PNG_PAD_CHUNK: &[u8; 4] = b"tgPd";

fn push_png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32_update(crc32_update(0xFFFF_FFFF, kind), data) ^ 0xFFFF_FFFF;
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Percent-escapes bytes outside printable ASCII (and `%`), so the text is
/// valid Latin-1 and its `\n`-separated fields stay unambiguous.
fn png_text_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The PNG the image endpoints generate for `params`: [`PNG_1X1`] with a
/// `tEXt` chunk (keyword `Comment`) before `IEND` holding
/// `prompt=…\nmodel=…\nsize=…\nseed=…\nn=…` (values percent-escaped outside
/// printable ASCII; `seed=none` without a seed). With `size_bytes` larger than
/// that, it is padded to exactly `size_bytes`: by a zero-filled `tgPd` chunk,
/// or, when fewer than 12 bytes are missing, by trailing spaces in the text.
/// A `size_bytes` smaller than the unpadded PNG is ignored.
pub fn generated_png(params: &ImageParams, size_bytes: Option<usize>) -> Vec<u8> {
    let mut text = format!(
        "prompt={}\nmodel={}\nsize={}\nseed={}\nn={}",
        png_text_escape(&params.prompt),
        png_text_escape(&params.model),
        png_text_escape(&params.size),
        params.seed.map_or("none".to_string(), |s| s.to_string()),
        params.index,
    );
    let chunk_overhead = 12;
    let unpadded = PNG_1X1.len() + chunk_overhead + PNG_TEXT_KEYWORD.len() + 1 + text.len();
    let mut padding = None;
    if let Some(target) = size_bytes {
        let missing = target.saturating_sub(unpadded);
        if missing >= chunk_overhead {
            padding = Some(missing - chunk_overhead);
        } else {
            text.push_str(&" ".repeat(missing));
        }
    }
    let iend_at = PNG_1X1.len() - chunk_overhead;
    let mut out = Vec::with_capacity(size_bytes.unwrap_or(0).max(unpadded));
    out.extend_from_slice(&PNG_1X1[..iend_at]);
    let mut data = Vec::with_capacity(PNG_TEXT_KEYWORD.len() + 1 + text.len());
    data.extend_from_slice(PNG_TEXT_KEYWORD.as_bytes());
    data.push(0);
    data.extend_from_slice(text.as_bytes());
    push_png_chunk(&mut out, b"tEXt", &data);
    if let Some(zeros) = padding {
        push_png_chunk(&mut out, PNG_PAD_CHUNK, &vec![0u8; zeros]);
    }
    out.extend_from_slice(&PNG_1X1[iend_at..]);
    out
}

/// One chunk of a PNG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PngChunk {
    /// The four-letter chunk type, e.g. `IHDR`.
    pub kind: String,
    pub data: Vec<u8>,
}

/// Splits a PNG into its chunks, checking the signature, every chunk's
/// length and CRC-32, that `IHDR` comes first and that `IEND` is last with
/// nothing after it.
pub fn png_chunks(png: &[u8]) -> Result<Vec<PngChunk>, String> {
    let mut rest = png.strip_prefix(PNG_SIGNATURE).ok_or("no PNG signature")?;
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 12 {
            return Err(format!("truncated chunk header at chunk {}", chunks.len()));
        }
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let end = 8usize
            .checked_add(len)
            .filter(|e| e + 4 <= rest.len())
            .ok_or_else(|| format!("chunk {} overruns the file", chunks.len()))?;
        let kind = &rest[4..8];
        let data = &rest[8..end];
        let stored = u32::from_be_bytes(rest[end..end + 4].try_into().unwrap());
        let computed = crc32_update(crc32_update(0xFFFF_FFFF, kind), data) ^ 0xFFFF_FFFF;
        let kind = String::from_utf8_lossy(kind).into_owned();
        if stored != computed {
            return Err(format!(
                "bad CRC in {kind} chunk: stored {stored:08x}, computed {computed:08x}"
            ));
        }
        if chunks.is_empty() && kind != "IHDR" {
            return Err(format!("first chunk is {kind}, not IHDR"));
        }
        rest = &rest[end + 4..];
        let is_end = kind == "IEND";
        chunks.push(PngChunk {
            kind,
            data: data.to_vec(),
        });
        if is_end {
            if !rest.is_empty() {
                return Err(format!("{} bytes after IEND", rest.len()));
            }
            return Ok(chunks);
        }
    }
    Err("no IEND chunk".into())
}

/// The text of a generated PNG's `tEXt` `Comment` chunk (trailing padding
/// spaces removed); `None` if the bytes are not a valid PNG or have none.
pub fn png_text(png: &[u8]) -> Option<String> {
    let prefix = format!("{PNG_TEXT_KEYWORD}\0");
    png_chunks(png).ok()?.into_iter().find_map(|c| {
        let text = c
            .data
            .strip_prefix(prefix.as_bytes())
            .filter(|_| c.kind == "tEXt")?;
        Some(
            String::from_utf8_lossy(text)
                .trim_end_matches(' ')
                .to_string(),
        )
    })
}

/// Sum of bytes mod 2^32: cheap, dependency-free, good enough to prove bytes
/// arrived intact.
pub fn checksum(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |acc, b| acc.wrapping_add(*b as u32))
}

/// The bytes `/v1/audio/speech` returns for `input`: 64 KiB from an LCG
/// seeded with the input's byte length.
pub fn speech_bytes(input: &str) -> Vec<u8> {
    let mut state = input.len() as u64;
    (0..SPEECH_BYTES)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

/// Standard base64 with padding (for `b64_json` and base64 embeddings).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Endpoints

fn chat_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn chat_completions(ctx: &Ctx, request: &Value) -> Response<MockBody> {
    let id = format!("chatcmpl-mock{}", ctx.shared.id());
    let model = model_of(request, DEFAULT_CHAT_MODEL);
    let created = now_secs();
    let prompt_tokens = estimate_tokens(messages_len(&request["messages"]));

    if !wants_stream(request) {
        let (text, n) = ctx.knobs.full_text();
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": chat_usage(prompt_tokens, n as u64),
                "system_fingerprint": "fp_mock"
            }),
        );
    }

    let include_usage = wants_usage_chunk(request);
    let n = ctx.knobs.pieces();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        // OpenAI puts `"usage": null` on every chunk but the last when
        // include_usage is on.
        if include_usage {
            c["usage"] = Value::Null;
        }
        sse_data(&c)
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    events.extend(
        pieces(n)
            .into_iter()
            .map(|p| chunk(json!({"content": p}), Value::Null)),
    );
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        events.push(sse_data(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": chat_usage(prompt_tokens, n as u64)
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(ctx, events)
}

fn completions(ctx: &Ctx, request: &Value) -> Response<MockBody> {
    let id = format!("cmpl-mock{}", ctx.shared.id());
    let model = model_of(request, DEFAULT_COMPLETION_MODEL);
    let created = now_secs();
    let prompt_len = match &request["prompt"] {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(|p| p.as_str().map_or(0, str::len)).sum(),
        _ => 0,
    };
    let prompt_tokens = estimate_tokens(prompt_len);
    let usage = |completion: u64| {
        json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion
        })
    };

    if !wants_stream(request) {
        let (text, n) = ctx.knobs.full_text();
        return json_response(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
                "usage": usage(n as u64)
            }),
        );
    }

    let include_usage = wants_usage_chunk(request);
    let n = ctx.knobs.pieces();
    let chunk = |text: &str, finish: Value| {
        let mut c = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        sse_data(&c)
    };
    let mut events: Vec<Bytes> = pieces(n).iter().map(|p| chunk(p, Value::Null)).collect();
    events.push(chunk("", json!("stop")));
    if include_usage {
        events.push(sse_data(&json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage(n as u64)
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse_response(ctx, events)
}

fn embeddings(_ctx: &Ctx, request: &Value) -> Response<MockBody> {
    let model = model_of(request, DEFAULT_EMBEDDING_MODEL);
    let dims = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(EMBEDDING_DIMS, |d| d.clamp(1, 4096) as usize);
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");

    // `input` is a string, an array of strings, an array of token ids, or an
    // array of token-id arrays. Each embedded item is (seed, token count).
    let item = |v: &Value| -> (u32, u64) {
        match v {
            Value::String(s) => (checksum(s.as_bytes()), estimate_tokens(s.len())),
            Value::Array(tokens) => (tokens.len() as u32, tokens.len() as u64),
            other => (checksum(other.to_string().as_bytes()), 1),
        }
    };
    let items: Vec<(u32, u64)> = match &request["input"] {
        Value::Array(a) if a.iter().all(Value::is_number) => vec![item(&request["input"])],
        Value::Array(a) => a.iter().map(item).collect(),
        other => vec![item(other)],
    };
    let prompt_tokens: u64 = items.iter().map(|(_, t)| t).sum::<u64>().max(1);
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(index, (seed, _))| {
            let mut state = *seed as u64 + 1;
            let vector: Vec<f32> = (0..dims)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect();
            let embedding = if base64 {
                let raw: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64_encode(&raw))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        }),
    )
}

fn responses(ctx: &Ctx, request: &Value) -> Response<MockBody> {
    let id = format!("resp_mock{}", ctx.shared.id());
    let msg_id = format!("msg_mock{}", ctx.shared.id());
    let model = model_of(request, DEFAULT_CHAT_MODEL);
    let created = now_secs();
    let instructions_len = request
        .get("instructions")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    let input_tokens = estimate_tokens(messages_len(&request["input"]) + instructions_len);

    let message = |text: &str, status: &str| {
        json!({
            "type": "message",
            "id": msg_id,
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]
        })
    };
    let response_object = |status: &str, output: Vec<Value>, output_tokens: Option<u64>| {
        json!({
            "id": id,
            "object": "response",
            "created_at": created,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": request.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": request.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "model": model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": request.get("previous_response_id").cloned().unwrap_or(Value::Null),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "metadata": {},
            "usage": output_tokens.map(|out| json!({
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": out,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + out
            }))
        })
    };

    if !wants_stream(request) {
        let (text, n) = ctx.knobs.full_text();
        let body = response_object(
            "completed",
            vec![message(&text, "completed")],
            Some(n as u64),
        );
        return json_response(StatusCode::OK, &body);
    }

    // The event sequence OpenAI sends for a single text output.
    let n = ctx.knobs.pieces();
    let text = pieces(n).concat();
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut push = |kind: &str, mut fields: Value| {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(seq);
        seq += 1;
        events.push(sse_named(kind, &fields));
    };
    let in_progress = response_object("in_progress", vec![], None);
    push("response.created", json!({"response": in_progress}));
    push("response.in_progress", json!({"response": in_progress}));
    let mut empty_item = message("", "in_progress");
    empty_item["content"] = json!([]);
    push(
        "response.output_item.added",
        json!({"output_index": 0, "item": empty_item}),
    );
    let part = |t: &str| json!({"type": "output_text", "text": t, "annotations": []});
    let at = json!({"item_id": msg_id, "output_index": 0, "content_index": 0});
    let with = |extra: Value| {
        let mut v = at.clone();
        for (k, val) in extra.as_object().into_iter().flatten() {
            v[k] = val.clone();
        }
        v
    };
    push(
        "response.content_part.added",
        with(json!({"part": part("")})),
    );
    for p in pieces(n) {
        push(
            "response.output_text.delta",
            with(json!({"delta": p, "logprobs": []})),
        );
    }
    push(
        "response.output_text.done",
        with(json!({"text": text, "logprobs": []})),
    );
    push(
        "response.content_part.done",
        with(json!({"part": part(&text)})),
    );
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": message(&text, "completed")}),
    );
    let done = response_object(
        "completed",
        vec![message(&text, "completed")],
        Some(n as u64),
    );
    push("response.completed", json!({"response": done}));
    sse_response(ctx, events)
}

fn model_object(id: &str, created: u64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "mock"})
}

fn models_list() -> Value {
    let data: Vec<Value> = MODELS.iter().map(|(id, c)| model_object(id, *c)).collect();
    json!({"object": "list", "data": data})
}

fn model_by_id(id: &str) -> Response<MockBody> {
    match MODELS.iter().find(|(m, _)| *m == id) {
        Some((m, created)) => json_response(StatusCode::OK, &model_object(m, *created)),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {
                "message": format!("The model '{id}' does not exist"),
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found"
            }}),
        ),
    }
}

/// What an image request asked for (generations: JSON body; edits:
/// multipart fields).
struct ImageRequest<'a> {
    prompt: &'a str,
    n: u64,
    size: Option<&'a str>,
    model: Option<&'a str>,
    /// Whether the request had a `seed` field at all.
    has_seed: bool,
    seed: Option<i64>,
    response_format: Option<&'a str>,
    /// Input images (edits), which count as input tokens like gpt-image-1
    /// does.
    image_inputs: u64,
}

fn is_generations_path(path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or("");
    path.ends_with("/v1/images/generations")
}

/// `GET …/files/gen/{id}.png`: a generated image; `None` for other paths.
fn generated_file(ctx: &Ctx) -> Option<Response<MockBody>> {
    let at = ctx.path.rfind("/files/gen/")?;
    let name = &ctx.path[at + "/files/gen/".len()..];
    let id: usize = name.strip_suffix(".png")?.parse().ok()?;
    let image = id
        .checked_sub(1)
        .and_then(|i| ctx.shared.generated.lock().unwrap().get(i).cloned());
    Some(match image {
        Some(bytes) => response(StatusCode::OK, "image/png", bytes),
        None => unknown_url(ctx),
    })
}

/// Shared by generations and edits: the reply body, or (for
/// [`ImageReply::Malformed`] and [`ImageReply::NotJson`]) the whole answer.
fn images_body(ctx: &Ctx, req: ImageRequest) -> Result<Value, Box<Response<MockBody>>> {
    let n = req.n.clamp(1, 10);
    let size = req.size.unwrap_or("1024x1024");
    let options = ctx.shared.image_options.lock().unwrap().clone();
    let data: Vec<Value> = if options.is_none() && !req.has_seed {
        let item = if req.response_format == Some("url") {
            json!({"url": format!("{}/files/img.png", ctx.shared.base_url)})
        } else {
            json!({"b64_json": base64_encode(PNG_1X1)})
        };
        vec![item; n as usize]
    } else {
        let (size_bytes, reply) = match options {
            Some(o) => (o.size_bytes, o.reply),
            None if req.response_format == Some("url") => (None, ImageReply::Url),
            None => (None, ImageReply::B64),
        };
        match reply {
            ImageReply::Malformed => {
                return Err(Box::new(json_response(
                    StatusCode::OK,
                    &json!({"created": now_secs()}),
                )))
            }
            ImageReply::NotJson => {
                return Err(Box::new(response(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "mock: this image reply is not JSON",
                )))
            }
            _ => {}
        }
        (0..n as u32)
            .map(|index| {
                let params = ImageParams {
                    prompt: req.prompt.to_string(),
                    model: req.model.unwrap_or(DEFAULT_IMAGE_MODEL).to_string(),
                    size: size.to_string(),
                    seed: req.seed,
                    index,
                };
                let png = Bytes::from(generated_png(&params, size_bytes));
                let id = {
                    let mut generated = ctx.shared.generated.lock().unwrap();
                    generated.push(png.clone());
                    generated.len()
                };
                match &reply {
                    ImageReply::Url => json!({
                        "url": format!("{}/files/gen/{id}.png", ctx.shared.base_url)
                    }),
                    ImageReply::UrlOverride(url) => json!({"url": url}),
                    _ => json!({"b64_json": base64_encode(&png)}),
                }
            })
            .collect()
    };
    let text_tokens = estimate_tokens(req.prompt.len());
    let image_tokens = req.image_inputs * 65;
    let input_tokens = text_tokens + image_tokens;
    let output_tokens = 272 * n;
    Ok(json!({
        "created": now_secs(),
        "data": data,
        "background": "opaque",
        "output_format": "png",
        "quality": "low",
        "size": size,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens
        }
    }))
}

fn images_generations(ctx: &Ctx, request: &Value) -> Response<MockBody> {
    let body = images_body(
        ctx,
        ImageRequest {
            prompt: request.get("prompt").and_then(Value::as_str).unwrap_or(""),
            n: request.get("n").and_then(Value::as_u64).unwrap_or(1),
            size: request.get("size").and_then(Value::as_str),
            model: request.get("model").and_then(Value::as_str),
            has_seed: request.get("seed").is_some(),
            seed: request.get("seed").and_then(Value::as_i64),
            response_format: request.get("response_format").and_then(Value::as_str),
            image_inputs: 0,
        },
    );
    match body {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(resp) => *resp,
    }
}

fn multipart_endpoint(ctx: &Ctx) -> Response<MockBody> {
    let content_type = ctx
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parsed = multipart_boundary(content_type)
        .ok_or_else(|| "expected multipart/form-data with a boundary".to_string())
        .and_then(|b| parse_multipart(&ctx.body, &b));
    let parts = match parsed {
        Ok(parts) => parts,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("mock: could not parse multipart body: {e}"),
                "invalid_request_error",
                None,
            )
        }
    };

    let mut fields = Map::new();
    let mut files = Map::new();
    let mut listed = Vec::new();
    for part in &parts {
        let described = json!({
            "name": part.name,
            "filename": part.filename,
            "content_type": part.content_type,
            "bytes": part.data.len(),
            "checksum": checksum(part.data),
        });
        match &part.filename {
            Some(filename) => {
                files.insert(
                    part.name.clone(),
                    json!({
                        "filename": filename,
                        "content_type": part.content_type,
                        "bytes": part.data.len(),
                        "checksum": checksum(part.data),
                    }),
                );
            }
            None => {
                let value = String::from_utf8_lossy(part.data).into_owned();
                fields.insert(part.name.clone(), json!(value));
            }
        }
        listed.push(described);
    }
    let field = |name: &str| fields.get(name).and_then(Value::as_str);
    let received = json!({"fields": fields, "files": files, "parts": listed});

    let mut body = if ctx.path.ends_with("/v1/images/edits") {
        let image_inputs = parts
            .iter()
            .filter(|p| p.filename.is_some() && p.name.starts_with("image"))
            .count() as u64;
        let request = ImageRequest {
            prompt: field("prompt").unwrap_or(""),
            n: field("n").and_then(|n| n.trim().parse().ok()).unwrap_or(1),
            size: field("size"),
            model: field("model"),
            has_seed: field("seed").is_some(),
            seed: field("seed").and_then(|s| s.trim().parse().ok()),
            response_format: field("response_format"),
            image_inputs,
        };
        match images_body(ctx, request) {
            Ok(body) => body,
            Err(resp) => return *resp,
        }
    } else {
        let audio_bytes: usize = parts
            .iter()
            .filter(|p| p.filename.is_some())
            .map(|p| p.data.len())
            .sum();
        let audio_tokens = (audio_bytes as u64).div_ceil(1024).max(1);
        json!({
            "text": "mock transcription",
            "usage": {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": 3,
                "total_tokens": audio_tokens + 3
            }
        })
    };
    body["received"] = received;
    json_response(StatusCode::OK, &body)
}

fn speech(ctx: &Ctx) -> Response<MockBody> {
    let request: Value = serde_json::from_slice(&ctx.body).unwrap_or(Value::Null);
    let input = request.get("input").and_then(Value::as_str).unwrap_or("");
    let audio = Bytes::from(speech_bytes(input));
    // OpenAI streams speech with chunked encoding; do the same, 16 KiB at a
    // time, paced by x-mock-delay-ms (default: no delay).
    let events = (0..audio.len())
        .step_by(16 * 1024)
        .map(|start| audio.slice(start..(start + 16 * 1024).min(audio.len())))
        .collect();
    let plan = StreamPlan {
        events,
        delay: ctx.knobs.plain_delay(),
        drop_after: None,
        sse: false,
    };
    streaming_response(ctx, "audio/mpeg", plan)
}

fn echo(ctx: &Ctx) -> Response<MockBody> {
    // Repeated headers are joined with ", " (as HTTP allows).
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &ctx.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "method": ctx.method.as_str(),
            "path": ctx.path,
            "query": ctx.query,
            "headers": headers,
            "body_len": ctx.body.len(),
            "body_checksum": checksum(&ctx.body),
        }),
    )
}

// ---------------------------------------------------------------------------
// multipart/form-data (RFC 7578), just enough for the OpenAI upload endpoints.

/// One part of a `multipart/form-data` body.
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: &'a [u8],
}

/// `boundary` parameter of a `multipart/form-data` content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    header_params(params)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v)
        .filter(|b| !b.is_empty())
}

/// `; key=value; key="quoted; value"` -> pairs. Quoted values may contain
/// `;` and backslash escapes.
fn header_params(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = params.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ';' || c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ';')).collect();
        if key.trim().is_empty() {
            if chars.peek().is_none() {
                return out;
            }
            chars.next();
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                value = std::iter::from_fn(|| chars.next_if(|c| *c != ';')).collect();
                value = value.trim().to_string();
            }
        }
        out.push((key.trim().to_string(), value));
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The parts of a `multipart/form-data` body delimited by `boundary`.
pub fn parse_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delimiter = format!("--{boundary}");
    // Every delimiter after the first is preceded by CRLF, which belongs to
    // the delimiter, not to the previous part's data.
    let next_delimiter = format!("\r\n--{boundary}");
    let mut pos =
        find(body, delimiter.as_bytes(), 0).ok_or("opening boundary not found")? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(parts); // close delimiter
        }
        // Optional linear whitespace after the boundary, then CRLF.
        let skip = rest
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        if !rest[skip..].starts_with(b"\r\n") {
            return Err("boundary not followed by CRLF".into());
        }
        pos += skip + 2;
        let headers_end = find(body, b"\r\n\r\n", pos).ok_or("part headers not terminated")?;
        let headers = std::str::from_utf8(&body[pos..headers_end])
            .map_err(|_| "part headers are not UTF-8")?;
        let data_start = headers_end + 4;
        let data_end = find(body, next_delimiter.as_bytes(), data_start)
            .ok_or("closing boundary not found")?;

        let mut name = None;
        let mut filename = None;
        let mut content_type = None;
        for line in headers.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                let (_, params) = value.split_once(';').unwrap_or((value, ""));
                for (k, v) in header_params(params) {
                    if k.eq_ignore_ascii_case("name") {
                        name = Some(v);
                    } else if k.eq_ignore_ascii_case("filename") {
                        filename = Some(v);
                    }
                }
            } else if key.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(value.trim().to_string());
            }
        }
        parts.push(Part {
            name: name.ok_or("part without a name")?,
            filename,
            content_type,
            data: &body[data_start..data_end],
        });
        pos = data_end + next_delimiter.len();
    }
}

/// Waits until `cond` holds, woken by `changed` (so no polling sleeps); false on timeout. The
/// other test mocks use it too (through `serve`).
pub async fn wait_until(changed: &Notify, timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Register interest before checking, so a change that lands between the check and
        // the await still wakes us.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if cond() {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return cond();
        }
    }
}
