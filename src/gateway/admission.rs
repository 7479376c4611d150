//! `request_filter`'s work: decide, before anything goes upstream, whether the gateway
//! answers the request itself, refuses it, or lets it through to a pool.

use http::header::{
    AsHeaderName, HeaderName, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, TRANSFER_ENCODING,
};
use http::Method;
use pingora::proxy::Session;
use serde_json::Value;

use crate::app::App;
use crate::auth::{bearer_token, AuthError};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::Byok;
use crate::idempotency::recording::Recording;
use crate::idempotency::{self, Decision, Record, Verdict};
use crate::limits::headers::rate_limit_headers;
use crate::limits::{Limits, Subject};
use crate::store::KeyRecord;

use super::ctx::RequestCtx;
use super::metering;
use super::model_gate::{BodyKind, ModelGate};
use super::respond::{ApiError, LocalResponse};
use super::route::normalize_host;

pub enum Admission {
    /// Proxy it: `ctx.pool` is set.
    Proxy,
    /// The gateway answers with this JSON.
    Json(u16, Value),
    /// A CORS preflight.
    Preflight,
    /// A stored response for the same Idempotency-Key and body.
    Replay(Arc<Record>),
    /// Any other response the gateway makes itself (images, redirects).
    Response(Box<LocalResponse>),
    /// This process has handed its store to a new process: relay the request there.
    Relay,
}

// Request headers admission reads on every request, prepared: a lookup by `&str` parses the
// name each time.
const X_HOST_FINAL: HeaderName = HeaderName::from_static("x-host-final");
const X_UPSTREAM_KEY: HeaderName = HeaderName::from_static("x-upstream-key");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

fn header(session: &Session, name: impl AsHeaderName) -> Option<&str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

pub async fn admit(
    app: &Arc<App>,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Admission, ApiError> {
    let method = session.req_header().method.clone();
    let path = session.req_header().uri.path().to_string();

    if app.store.is_released() {
        return Ok(Admission::Relay);
    }
    if method == Method::OPTIONS {
        return Ok(Admission::Preflight);
    }
    if path == "/status" && method == Method::GET {
        return Ok(Admission::Json(200, super::local::status(app)));
    }
    let readable = method == Method::GET || method == Method::HEAD;
    if readable && path.starts_with("/images/") {
        return Box::pin(super::images::stored(app, session))
            .await
            .map(|r| Admission::Response(Box::new(r)));
    }
    if method == Method::POST && path == "/cache/delete" {
        return Box::pin(cache_delete(app, session)).await;
    }
    if path.starts_with("/auth/") {
        if let Some(answer) = Box::pin(super::signin::answer(app, session)).await {
            return answer.map(|r| Admission::Response(Box::new(r)));
        }
    }

    let is_prompt = path.starts_with("/prompt/");
    let secret = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()))
        .map(str::to_owned)
        .or_else(|| is_prompt.then(|| query_key(session)).flatten())
        .ok_or_else(ApiError::invalid_api_key)?;
    let secret = secret.as_str();
    let key = app
        .keys
        .authenticate(secret, crate::time::now_unix())
        .await
        .map_err(|e| match e {
            AuthError::Invalid => ApiError::invalid_api_key(),
            AuthError::Disabled => ApiError::key_disabled(),
            AuthError::Expired => ApiError::key_expired(),
            AuthError::Unavailable => ApiError::service_unavailable("Key storage is unavailable."),
        })?;
    ctx.key = Some(key.clone());

    if path == "/account" || path.starts_with("/account/") {
        return Box::pin(account(app, session, &key, &method, &path)).await;
    }
    if is_prompt {
        return Box::pin(prompt(app, session, ctx, &key, &path, readable)).await;
    }
    if method == Method::GET && (path == "/v1/models" || path.starts_with("/v1/models/")) {
        if let Some(answer) = super::local::models(app, &key, &path) {
            return answer.map(|v| Admission::Json(200, v));
        }
    }

    let max_body = app.config.limits.max_body_bytes;
    ctx.max_body_bytes = max_body;
    let declared = header(session, CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(ApiError::request_too_large(max_body));
    }

    ctx.pool = Some(match header(session, X_HOST_FINAL) {
        Some(value) => {
            let host =
                normalize_host(value).ok_or_else(|| ApiError::host_not_allowed(value.trim()))?;
            app.hosts
                .get(&host)
                .ok_or_else(|| ApiError::host_not_allowed(&host))?
        }
        None => app
            .router
            .route(&path)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&path))?,
    });

    let byok = header(session, X_UPSTREAM_KEY)
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match (app.config.auth.byok, byok) {
        (Byok::Required, None) => return Err(ApiError::upstream_key_required()),
        (Byok::Optional | Byok::Required, Some(k)) => ctx.byok_key = Some(k.to_string()),
        _ => {}
    }

    admit_to_limits(app, ctx, &key, &path, false).await?;
    let idempotent = session.req_header().headers.contains_key(IDEMPOTENCY_KEY);
    if idempotent {
        if let Some(replay) = Box::pin(idempotency_gate(app, session, ctx, &key)).await? {
            return Ok(replay);
        }
    }

    let has_body = declared.is_some_and(|l| l > 0) || header(session, TRANSFER_ENCODING).is_some();
    let kind = header(session, CONTENT_TYPE).and_then(BodyKind::from_content_type);
    ctx.may_inject_usage = has_body
        && method == Method::POST
        && metering::takes_include_usage(&path)
        && matches!(kind, Some(BodyKind::Json));
    ctx.keeper = super::images::keeper(app, session, &key, has_body, ctx.tls);
    if let (Some(allowed), true, Some(kind)) = (key.models.clone(), has_body, kind) {
        ctx.model_gate = Some(ModelGate::new(allowed, kind));
    }
    if ctx.model_gate.is_some() || ctx.may_inject_usage || ctx.keeper.is_some() {
        // A client that waits for `100 Continue` gets it from the upstream: its body streams.
        let early = declared.is_some_and(|len| len <= super::body::EARLY_LIMIT)
            && header(session, EXPECT).is_none();
        if early {
            Box::pin(super::body::read_early(session, ctx)).await?;
        } else {
            ctx.held_body = Some(Vec::new());
        }
    }
    Ok(Admission::Proxy)
}

/// `/account…`: the calling key's own answers. Rare next to proxying, so boxed by the caller
/// to keep every request's future small.
async fn account(
    app: &App,
    session: &Session,
    key: &KeyRecord,
    method: &Method,
    path: &str,
) -> Result<Admission, ApiError> {
    match (method, path) {
        (&Method::GET, "/account") => {
            Ok(Admission::Json(200, super::local::account(app, key).await?))
        }
        (&Method::GET, "/account/usage") => {
            let query = session.req_header().uri.query().map(str::to_owned);
            Ok(Admission::Json(
                200,
                super::local::account_usage(app, key, query.as_deref()).await?,
            ))
        }
        (&Method::POST, "/account/rotate-key") => Ok(Admission::Json(
            200,
            super::local::rotate_own_key(app, key).await?,
        )),
        (&Method::GET, "/account/images") => {
            let query = session.req_header().uri.query().map(str::to_owned);
            Ok(Admission::Json(
                200,
                super::images::account_images(app, key, query.as_deref()).await?,
            ))
        }
        _ => Err(ApiError::not_found(path)),
    }
}

/// `GET /prompt/…`: limits (a miss reserves its image), then the image. Boxed by the caller.
async fn prompt(
    app: &Arc<App>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    key: &KeyRecord,
    path: &str,
    readable: bool,
) -> Result<Admission, ApiError> {
    if !readable {
        return Err(ApiError::not_found(path));
    }
    let params = super::images::prompt_params(app, session)?;
    let miss = super::images::is_miss(app, &params);
    admit_to_limits(app, ctx, key, path, miss).await?;
    super::images::prompt(app, session, ctx, params)
        .await
        .map(|r| Admission::Response(Box::new(r)))
}

/// Checks the key's and its user's limits and counts the request (SPEC §3.6); a request that
/// will make an image (a `/prompt` miss) also reserves it against `images_per_day`.
async fn admit_to_limits(
    app: &App,
    ctx: &mut RequestCtx,
    key: &KeyRecord,
    path: &str,
    makes_image: bool,
) -> Result<(), ApiError> {
    let user_limits = app.accounts.user_limits(&key.user).await.map_err(|e| {
        log::error!(
            "{}: reading the limits of user {} failed: {e:?}",
            ctx.request_id,
            key.user
        );
        ApiError::service_unavailable("Limits storage is unavailable.")
    })?;
    let subject = Subject {
        key_id: &key.id,
        user: &key.user,
        key_limits: Limits::for_key(&app.config.limits, key.limits.as_ref()),
        user_limits: Limits::for_user(user_limits.as_ref()),
    };
    let now_ms = crate::time::now_unix_ms();
    let admitted = if makes_image {
        app.limiter.admit_reserving_image(&subject, now_ms)
    } else {
        app.limiter
            .admit(&subject, now_ms, path.starts_with("/v1/images/"))
    };
    match admitted {
        Ok(ticket) => {
            ctx.ticket = Some(ticket);
            Ok(())
        }
        Err(refusal) => {
            app.metrics
                .rate_limited
                .with_label_values(&[refusal.limit().as_str()])
                .inc();
            let standings: Vec<_> = app
                .limiter
                .standings(&subject, now_ms)
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            let mut err = ApiError::rate_limited(&refusal);
            err.headers.extend(rate_limit_headers(&standings));
            Err(err)
        }
    }
}

/// Idempotency-Key (SPEC §3.5): claims the scope for this request, or — when a live record
/// holds it — reads this request's body (it will not go upstream) and replays, or refuses with
/// 409 or 422.
async fn idempotency_gate(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    key: &KeyRecord,
) -> Result<Option<Admission>, ApiError> {
    let req = session.req_header();
    let Some(value) = req.headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    if !idempotency::applies_to(&req.method) {
        return Ok(None);
    }
    if !idempotency::valid_key(value.as_bytes()) {
        return Err(ApiError::invalid_idempotency_key());
    }
    let path_and_query = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let scope = idempotency::scope(
        &key.id,
        req.method.as_str(),
        path_and_query,
        value.as_bytes(),
    );
    let unavailable = |e| {
        log::error!("{}: idempotency storage: {e}", ctx.request_id);
        ApiError::service_unavailable("Idempotency storage is unavailable.")
    };
    let decision = app
        .idempotency
        .begin(&app.store, scope, crate::time::now_unix_ms())
        .await
        .map_err(unavailable)?;
    let existing = match decision {
        Decision::Proceed(claim) => {
            ctx.recording = Some(Recording::new(scope, claim));
            return Ok(None);
        }
        Decision::Judge(existing) => existing,
    };
    ctx.body_consumed = true;
    let body_hash = read_body_hash(session, app.config.limits.max_body_bytes).await?;
    let outcome = app.idempotency.judge(&scope, existing, body_hash).await;
    let (label, result) = match outcome {
        Verdict::Replay(record) => ("replayed", Ok(Some(Admission::Replay(record)))),
        Verdict::InProgress => ("conflict", Err(ApiError::idempotency_in_progress())),
        Verdict::Mismatch => ("mismatch", Err(ApiError::idempotency_key_reused())),
    };
    app.metrics.idempotency.with_label_values(&[label]).inc();
    result
}

/// The SHA-256 of the whole request body, read here because the request is answered here.
async fn read_body_hash(session: &mut Session, max_bytes: u64) -> Result<[u8; 32], ApiError> {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                total += chunk.len() as u64;
                if total > max_bytes {
                    return Err(ApiError::request_too_large(max_bytes));
                }
                hasher.update(&chunk);
            }
            Ok(None) => return Ok(hasher.finalize().into()),
            Err(_) => {
                return Err(ApiError::invalid_request(
                    "The request body could not be read.",
                ))
            }
        }
    }
}

/// The key of a `/prompt` request given as `?key=` (never logged: the access log has no query).
fn query_key(session: &Session) -> Option<String> {
    let query = session.req_header().uri.query()?;
    crate::form::query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// `POST /cache/delete` on the public listeners, authorized by `X-Admin-Token`, as the image
/// proxy it replaces had it: the same as `POST /admin/images/purge`.
async fn cache_delete(app: &App, session: &mut Session) -> Result<Admission, ApiError> {
    let token = header(session, "x-admin-token").unwrap_or("");
    let authorized = app
        .config
        .admin
        .as_ref()
        .is_some_and(|admin| crate::auth::constant_time_eq(token, &admin.token));
    if !authorized {
        return Err(ApiError::new(
            401,
            "invalid_request_error",
            "invalid_admin_token",
            "Missing or wrong X-Admin-Token.",
        ));
    }
    let body = read_small_body(session).await?;
    match super::images::purge(app, &body).await? {
        Some(hash) => Ok(Admission::Json(200, serde_json::json!({ "deleted": hash }))),
        None => Err(ApiError::not_found("/cache/delete (no such cached image)")),
    }
}

/// A small JSON body read in `request_filter`, for requests the gateway answers itself.
pub(super) async fn read_small_body(session: &mut Session) -> Result<Vec<u8>, ApiError> {
    const LIMIT: usize = 64 * 1024;
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > LIMIT {
                    return Err(ApiError::request_too_large(LIMIT as u64));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(ApiError::invalid_request(
                    "The request body could not be read.",
                ))
            }
        }
    }
}

/// Sends what `admit` decided the gateway answers itself; returns the status sent.
pub async fn answer(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    admission: Result<Admission, ApiError>,
) -> pingora::Result<Option<u16>> {
    let response = match admission {
        Ok(Admission::Proxy) => return Ok(None),
        Ok(Admission::Relay) => {
            ctx.relay = true;
            return Ok(None);
        }
        Ok(Admission::Json(status, value)) => LocalResponse::json(status, &value)?,
        Ok(Admission::Preflight) => {
            let requested = header(session, "access-control-request-headers").map(str::to_owned);
            let header = app.headers.preflight(requested.as_deref())?;
            LocalResponse {
                header,
                body: bytes::Bytes::new(),
            }
        }
        Ok(Admission::Response(response)) => *response,
        Ok(Admission::Replay(record)) => {
            let mut response = LocalResponse::replay(&record)?;
            if let Some(ticket) = &ctx.ticket {
                for (name, value) in rate_limit_headers(&ticket.standings) {
                    response.header.insert_header(name, value)?;
                }
            }
            response
        }
        Err(err) => {
            // Refused requests do not count against the limits (SPEC §3.6).
            if err.status < 500 {
                if let Some(ticket) = ctx.ticket.as_mut() {
                    ticket.uncount(crate::time::now_unix_ms());
                }
            }
            LocalResponse::error(&err)?
        }
    };
    ctx.response_bytes = response.body.len() as u64;
    let status = response
        .send(session, &app.headers, &ctx.request_id, ctx.tls)
        .await?;
    Ok(Some(status))
}
