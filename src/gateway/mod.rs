//! The gateway: Pingora's `ProxyHttp` phases, each handing its work to one module.

pub mod access_log;
pub mod admission;
pub mod body;
pub mod ctx;
pub mod header_edit;
pub mod images;
pub mod local;
pub mod metering;
pub mod model_gate;
pub mod observe;
pub mod relay;
pub mod respond;
pub mod rewrite;
pub mod route;
pub mod signin;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};

use crate::app::App;
use crate::metrics::GaugeGuard;
use ctx::RequestCtx;
use respond::{ApiError, LocalResponse};
use rewrite::{BodyFraming, Credential, UpstreamHead};

pub struct Gateway {
    pub app: Arc<App>,
}

/// How long a request relayed during an upgrade waits for the new process to announce itself.
const RELAY_WAIT: Duration = Duration::from_secs(10);

/// Marks an error as one the gateway chose (its answer is in `ctx.error`). A request refused
/// for what its body broke does not count against the limits (SPEC §3.6).
fn refuse(ctx: &mut RequestCtx, err: ApiError) -> Box<Error> {
    let status = err.status;
    if status < 500 {
        if let Some(ticket) = ctx.ticket.as_mut() {
            ticket.uncount(crate::time::now_unix_ms());
        }
    }
    ctx.error = Some(err);
    Error::new(ErrorType::HTTPStatus(status))
}

/// The client-facing error for a failed upstream attempt.
fn classify_failure(e: &Error, upstream: &str) -> Option<ApiError> {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            Some(ApiError::upstream_timeout(upstream))
        }
        _ if *e.esource() == ErrorSource::Downstream => None,
        ErrorType::HTTPStatus(code) if *code < 500 => Some(ApiError::new(
            *code,
            "invalid_request_error",
            "invalid_request",
            "Bad request.",
        )),
        _ if *e.esource() == ErrorSource::Upstream => {
            Some(ApiError::upstream_unavailable(upstream))
        }
        _ => Some(ApiError::internal()),
    }
}

fn failure_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            "timeout"
        }
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectProxyFailure
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert => "connect",
        _ => "read",
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: Pingora keeps the context by value inside each request's future, in more than one
    /// place of its layout, and moves that whole future onto the heap for every request. With
    /// the context inline, that was about 3.7 KiB more to copy per request and to hold per open
    /// stream than with a pointer (callgrind: the copy in `process_new` was 17.2 KiB a request
    /// against the bare proxy's 13.4 KiB).
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx::new())
    }

    /// None. Pingora's default is a response-compression module switched off (level 0), which
    /// still builds a context and runs in every phase of every request; the gateway passes
    /// bodies through as the upstream sent them and never compresses them itself.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// Request id, TLS flag and the active-request gauge (the start instant is the context's).
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        ctx.request_id = ctx::new_request_id();
        ctx.active = Some(GaugeGuard::new(&self.app.metrics.active_requests));
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.route = route::route_label(session.req_header().uri.path());
        Ok(())
    }

    /// Preflight, local routes, key check and routing (see `admission`). `Ok(true)` when the
    /// gateway answered itself.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let mut admission = admission::admit(&self.app, session, ctx).await;
        if relay::store_went_away(&self.app, &admission, ctx.body_consumed) {
            // The store was handed to a new process while this request was being admitted.
            ctx.ticket = None;
            admission = Ok(admission::Admission::Relay);
        }
        let answered = match admission {
            Ok(admission::Admission::Proxy) => None,
            // Answering locally is the rare case: boxed, so every request's future stays small.
            other => Box::pin(admission::answer(&self.app, session, ctx, other)).await?,
        };
        ctx.local_status = answered;
        Ok(answered.is_some())
    }

    /// The next backend of the request's pool that this request has not tried yet.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        if ctx.relay {
            return match self.app.relay.successor(RELAY_WAIT).await {
                Some(peer) => Ok(Box::new(peer)),
                None => Err(refuse(
                    ctx,
                    ApiError::service_unavailable("The gateway is restarting; retry."),
                )),
            };
        }
        let Some(pool) = ctx.pool.clone() else {
            return Err(refuse(ctx, ApiError::internal()));
        };
        while let Some(index) = pool.pick(ctx.tried) {
            ctx.tried |= 1 << index;
            match pool.peer(index, &self.app.resolver).await {
                Ok(peer) => {
                    ctx.backend = Some(index);
                    return Ok(Box::new(peer));
                }
                Err(e) => {
                    log::warn!(
                        "{}: cannot resolve backend {index} of {}: {e}",
                        ctx.request_id,
                        pool.name
                    );
                    pool.record_failure(index);
                    self.app
                        .metrics
                        .upstream_errors
                        .with_label_values(&[&pool.name, "dns"])
                        .inc();
                }
            }
        }
        Err(refuse(ctx, ApiError::upstream_unavailable(&pool.name)))
    }

    /// Nothing was sent yet: mark the backend and move on to the next one, if any is left.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(index)) = (&ctx.pool, ctx.backend) {
            pool.record_failure(index);
            self.app
                .metrics
                .upstream_errors
                .with_label_values(&[&pool.name, failure_kind(&e)])
                .inc();
            let untried = pool.backends.len().min(64) > ctx.tried.count_ones() as usize;
            e.set_retry(untried);
        }
        e
    }

    /// Credentials, `Host`, path and hop-by-hop headers (see `rewrite`).
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if ctx.relay {
            // The new process checks and rewrites it.
            return Ok(());
        }
        let (Some(pool), Some(index)) = (ctx.pool.clone(), ctx.backend) else {
            return Err(refuse(ctx, ApiError::internal()));
        };
        let framing = match &ctx.prepared_body {
            Some(prepared) => BodyFraming::Length(prepared.len()),
            None if ctx.may_inject_usage => BodyFraming::Chunked,
            None => BodyFraming::AsSent,
        };
        let head = UpstreamHead {
            backend: &pool.backends[index],
            credential: match ctx.byok_key.as_deref() {
                Some(key) => Credential::Own(key),
                None => pool.next_credential(),
            },
            request_id: &ctx.request_id,
            uncompressed: ctx.ticket.is_some(),
            framing,
        };
        rewrite::rewrite_upstream_request(req, &head)?;
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    /// The body size cap; the model allow-list and the `include_usage` injection, which hold
    /// the body back until it is complete.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Pingora runs this after the request head has gone upstream.
        ctx.inside_upstream.begin();
        let result = body::filter_chunk(&self.app, session.req_header(), body, end_of_stream, ctx);
        ctx.inside_upstream.end();
        result.map_err(|e| refuse(ctx, e))
    }

    /// A response arrived: the backend is alive; streams are counted.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.inside_upstream.begin();
        ctx.upstream_status = Some(resp.status.as_u16());
        if let (Some(pool), Some(index)) = (&ctx.pool, ctx.backend) {
            pool.record_success(index);
            if resp.status.is_server_error() {
                self.app
                    .metrics
                    .upstream_errors
                    .with_label_values(&[&pool.name, "status"])
                    .inc();
            }
        }
        metering::start(ctx, resp);
        images::start_rewrite(ctx, resp);
        if let Some(recording) = ctx.recording.as_mut() {
            recording.response_head(resp);
        }
        let is_stream = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if is_stream {
            ctx.stream = Some(GaugeGuard::new(&self.app.metrics.active_streams));
        }
        Ok(())
    }

    /// Request id, CORS and security headers on proxied responses.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // A relayed response was decorated by the new process already.
        if !ctx.relay {
            let origin = session
                .req_header()
                .headers
                .get(http::header::ORIGIN)
                .and_then(|v| v.to_str().ok());
            let standings = ctx.ticket.as_ref().map_or(&[][..], |t| &t.standings[..]);
            self.app
                .headers
                .decorate(resp, &ctx.request_id, origin, ctx.tls, standings);
        }
        ctx.inside_upstream.end();
        Ok(())
    }

    /// Marks when the upstream finished sending.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            ctx.upstream_done = Some(Instant::now());
        }
        Ok(None)
    }

    /// Meters usage (removing the usage chunk the gateway asked for) and counts what reaches
    /// the client. Synchronous: no I/O here.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        // Every chunk but the upstream's last is handled inside the upstream's interval.
        if ctx.upstream_done.is_none() {
            ctx.inside_upstream.begin();
        }
        metering::feed(ctx, body, end_of_stream);
        if let (Some(rewrite), Some(images)) = (ctx.image_rewrite.as_mut(), &self.app.images) {
            rewrite.feed(images, body, end_of_stream);
        }
        if let (Some(recording), Some(chunk)) = (ctx.recording.as_mut(), body.as_ref()) {
            recording.response_chunk(chunk, self.app.idempotency.max_response_bytes());
        }
        if let Some(chunk) = body {
            ctx.response_bytes += chunk.len() as u64;
        }
        ctx.inside_upstream.end();
        Ok(None)
    }

    /// Metrics and the access-log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        observe::finish(&self.app, session, ctx, e);
        ctx.stream = None;
    }

    /// A failure after the connection was made: counted, and (as Pingora does by default)
    /// retried only for idempotent methods whose body can be replayed.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        if *e.esource() == ErrorSource::Upstream {
            self.app
                .metrics
                .upstream_errors
                .with_label_values(&[ctx.upstream_name(), failure_kind(&e)])
                .inc();
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// Refusals the gateway chose and clients hanging up are answered or logged elsewhere;
    /// Pingora's error log is kept for real failures.
    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, e: &Error) -> bool {
        ctx.refused_on_purpose || *e.esource() == ErrorSource::Downstream
    }

    /// The OpenAI-shaped answer for whatever failed, unless the response was already started
    /// or the client is gone.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let chosen = ctx.error.take();
        ctx.refused_on_purpose = chosen.is_some();
        let err = chosen.or_else(|| classify_failure(e, ctx.upstream_name()));
        // An interim `100 Continue` from the upstream does not stop us from answering.
        let final_written = session
            .response_written()
            .is_some_and(|r| !r.status.is_informational());
        let Some(err) = err.filter(|_| !final_written) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if err.status >= 500 {
            log::warn!("{}: {} ({e})", ctx.request_id, err.code);
        }
        // Pingora does not reuse a client connection after a failure past peer selection, so say
        // so: a pooled client must not send its next request on a connection about to close.
        session.set_keepalive(None);
        let sent = match LocalResponse::error(&err) {
            Ok(resp) => {
                ctx.response_bytes = resp.body.len() as u64;
                resp.send(session, &self.app.headers, &ctx.request_id, ctx.tls)
                    .await
            }
            Err(build) => Err(build),
        };
        let error_code = match sent {
            Ok(status) => status,
            Err(write) => {
                log::debug!("{}: error response not delivered: {write}", ctx.request_id);
                0
            }
        };
        ctx.local_status = Some(error_code);
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }
}
