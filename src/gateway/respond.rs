//! Everything the gateway answers itself: OpenAI-shaped errors (SPEC §4), local JSON
//! responses, CORS preflights, and the headers every response carries (SPEC §3.7).

use bytes::Bytes;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, VARY};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;

use super::header_edit::edit_response;
use crate::config::CorsSection;
use crate::limits::headers::{format_reset, insert_rate_limit_headers, refusal_headers};
use crate::limits::{LimitName, Refusal, Standing};

/// Headers a browser client may read from our responses.
const EXPOSED_HEADERS: &str = "x-tollgate-request-id, x-request-id, x-ratelimit-limit-requests, \
x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, \
x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, retry-after, retry-after-ms, \
x-should-retry, idempotent-replayed";

/// An error the gateway itself answers, in the shape OpenAI clients parse.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            headers: Vec::new(),
        }
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", "invalid_request", message)
    }

    pub fn invalid_api_key() -> Self {
        Self::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect or missing API key. Pass a Tollgate key as `Authorization: Bearer sk-tg-…`.",
        )
    }

    pub fn key_expired() -> Self {
        Self::new(
            401,
            "invalid_request_error",
            "key_expired",
            "This API key has expired.",
        )
    }

    pub fn key_disabled() -> Self {
        Self::new(
            403,
            "permission_error",
            "key_disabled",
            "This API key is disabled.",
        )
    }

    pub fn model_not_allowed(model: &str) -> Self {
        Self::new(
            403,
            "permission_error",
            "model_not_allowed",
            format!("This API key may not use the model `{model}`."),
        )
        .with_param("model")
    }

    pub fn host_not_allowed(host: &str) -> Self {
        Self::new(
            403,
            "permission_error",
            "host_not_allowed",
            format!("X-Host-Final `{host}` is not an allowed host."),
        )
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("No route for {path}."),
        )
    }

    pub fn request_too_large(limit: u64) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("The request body exceeds the limit of {limit} bytes."),
        )
    }

    pub fn upstream_key_required() -> Self {
        Self::new(
            400,
            "invalid_request_error",
            "upstream_key_required",
            "This gateway requires your own provider key in `X-Upstream-Key`.",
        )
    }

    pub fn upstream_unavailable(upstream: &str) -> Self {
        Self::new(
            502,
            "upstream_error",
            "upstream_unavailable",
            format!("No backend of upstream `{upstream}` could be reached."),
        )
    }

    pub fn upstream_timeout(upstream: &str) -> Self {
        Self::new(
            504,
            "upstream_error",
            "upstream_timeout",
            format!("Upstream `{upstream}` did not answer in time."),
        )
    }

    /// A 429 for a limit: window limits say when to retry, daily budgets that retrying today
    /// is pointless (SPEC §3.6, §4).
    pub fn rate_limited(refusal: &Refusal) -> Self {
        let what = |limit: LimitName| limit.as_str().replace('_', " ");
        let mut err = match refusal {
            Refusal::Budget { limit, max, .. } => Self::new(
                429,
                "insufficient_quota",
                "insufficient_quota",
                format!(
                    "You exceeded your daily budget of {max} {}; it renews at 00:00 UTC.",
                    what(*limit).trim_end_matches(" per day")
                ),
            ),
            Refusal::Window {
                limit,
                max,
                retry_after,
                ..
            } => Self::new(
                429,
                if limit.is_tokens() {
                    "tokens"
                } else {
                    "requests"
                },
                "rate_limit_exceeded",
                format!(
                    "Rate limit reached for {}: limit {max}. Please try again in {}.",
                    what(*limit),
                    format_reset(*retry_after)
                ),
            ),
            Refusal::Concurrency { max, .. } => Self::new(
                429,
                "requests",
                "rate_limit_exceeded",
                format!("Too many requests in flight: limit {max}. Please try again in 1s."),
            ),
        };
        err.headers.extend(refusal_headers(refusal));
        err
    }

    pub fn invalid_idempotency_key() -> Self {
        Self::new(
            400,
            "invalid_request_error",
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
        )
    }

    pub fn idempotency_in_progress() -> Self {
        Self::new(
            409,
            "invalid_request_error",
            "idempotency_request_in_progress",
            "A request with this Idempotency-Key is still in progress; retry once it completes.",
        )
        .with_header("retry-after", "1")
    }

    pub fn idempotency_key_reused() -> Self {
        Self::new(
            422,
            "invalid_request_error",
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request body.",
        )
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "server_error", "service_unavailable", message)
    }

    pub fn internal() -> Self {
        Self::new(
            500,
            "server_error",
            "internal_error",
            "The gateway failed to handle this request.",
        )
    }

    pub fn body(&self) -> Vec<u8> {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
            .to_string()
            .into_bytes()
    }
}

/// CORS and security headers, decided once from the configuration.
pub struct HeaderPolicy {
    /// `None`: every origin (`*`). `Some(list)`: only these, echoed back.
    allowed_origins: Option<Vec<String>>,
    max_age_s: u64,
    /// What every response gets whatever the request, built once: names and values are
    /// static bytes, so adding them copies and validates nothing per request.
    fixed: Vec<(HeaderName, HeaderValue)>,
    /// Added to responses over TLS only (HSTS), when security headers are on.
    over_tls: Option<(HeaderName, HeaderValue)>,
}

/// A header prepared from static text.
fn fixed(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

pub const TOLLGATE_REQUEST_ID: HeaderName = HeaderName::from_static("x-tollgate-request-id");

impl HeaderPolicy {
    pub fn new(cors: Option<&CorsSection>, security_headers: bool) -> Self {
        let allowed_origins = cors
            .filter(|c| !c.allow_origins.iter().any(|o| o == "*"))
            .map(|c| c.allow_origins.clone());
        let mut always = Vec::new();
        if allowed_origins.is_none() {
            always.push(fixed("access-control-allow-origin", "*"));
        }
        always.push(fixed("access-control-expose-headers", EXPOSED_HEADERS));
        if security_headers {
            always.extend([
                fixed("x-content-type-options", "nosniff"),
                fixed("x-frame-options", "DENY"),
                fixed("referrer-policy", "strict-origin-when-cross-origin"),
                fixed(
                    "content-security-policy",
                    "default-src 'none'; frame-ancestors 'none'",
                ),
                fixed(
                    "permissions-policy",
                    "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
                ),
            ]);
        }
        HeaderPolicy {
            allowed_origins,
            max_age_s: cors.map_or(86400, |c| c.max_age_s),
            fixed: always,
            over_tls: security_headers.then(|| {
                fixed(
                    "strict-transport-security",
                    "max-age=31536000; includeSubDomains",
                )
            }),
        }
    }

    /// Adds request id, CORS, security and rate-limit headers. `origin` is the request's
    /// `Origin`; `standings` are the request's limits (none for the gateway's own errors,
    /// which carry theirs already).
    pub fn decorate(
        &self,
        resp: &mut ResponseHeader,
        request_id: &str,
        origin: Option<&str>,
        tls: bool,
        standings: &[Standing],
    ) {
        edit_response(resp, |headers| {
            // The fixed ones, and at most ten more: request id, origin, `Vary`, HSTS and six
            // rate-limit headers. One growth of the map instead of several.
            headers.reserve(self.fixed.len() + 10);
            if let Ok(id) = HeaderValue::from_str(request_id) {
                headers.insert(TOLLGATE_REQUEST_ID, id);
            }
            if let Some(list) = &self.allowed_origins {
                headers.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
                let allowed = origin
                    .filter(|o| list.iter().any(|a| a == o))
                    .and_then(|o| HeaderValue::from_str(o).ok());
                if let Some(origin) = allowed {
                    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    headers.append(VARY, HeaderValue::from_static("Origin"));
                }
            }
            for (name, value) in &self.fixed {
                headers.insert(name.clone(), value.clone());
            }
            if let Some((name, value)) = self.over_tls.as_ref().filter(|_| tls) {
                headers.insert(name.clone(), value.clone());
            }
            insert_rate_limit_headers(standings, headers);
        });
    }

    /// The preflight answer: 204 with what the browser asked to be allowed.
    pub fn preflight(&self, requested_headers: Option<&str>) -> Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(204, Some(6))?;
        resp.insert_header(
            "access-control-allow-methods",
            "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        )?;
        resp.insert_header(
            "access-control-allow-headers",
            requested_headers.unwrap_or(
                "authorization, content-type, idempotency-key, x-host-final, x-upstream-key, openai-organization, openai-project",
            ),
        )?;
        resp.insert_header("access-control-max-age", self.max_age_s.to_string())?;
        resp.insert_header("content-length", "0")?;
        Ok(resp)
    }
}

/// A response the gateway makes itself: its headers and body, before decoration.
pub struct LocalResponse {
    pub header: ResponseHeader,
    pub body: Bytes,
}

impl LocalResponse {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Result<Self> {
        let body = body.into();
        let mut header = ResponseHeader::build(status, Some(8))?;
        header.insert_header("content-type", content_type)?;
        header.insert_header("content-length", body.len().to_string())?;
        header.insert_header("cache-control", "no-store")?;
        Ok(LocalResponse { header, body })
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Result<Self> {
        Self::new(status, "application/json", value.to_string())
    }

    pub fn error(err: &ApiError) -> Result<Self> {
        let mut resp = Self::new(err.status, "application/json", err.body())?;
        for (name, value) in &err.headers {
            resp.header.insert_header(*name, value.as_str())?;
        }
        Ok(resp)
    }

    /// Writes the response, with `x-request-id` since the gateway made it (a replayed upstream
    /// response keeps its own).
    pub async fn send(
        mut self,
        session: &mut Session,
        policy: &HeaderPolicy,
        request_id: &str,
        tls: bool,
    ) -> Result<u16> {
        let origin = session
            .req_header()
            .headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        policy.decorate(&mut self.header, request_id, origin.as_deref(), tls, &[]);
        if self.header.headers.get("x-request-id").is_none() {
            self.header.insert_header("x-request-id", request_id)?;
        }
        let status = self.header.status.as_u16();
        let head_only = session.req_header().method == http::Method::HEAD || self.body.is_empty();
        session
            .write_response_header(Box::new(self.header), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(status)
    }
}

impl LocalResponse {
    /// A stored response, replayed (SPEC §3.5): its status, headers and body as recorded, the
    /// length recomputed, and `Idempotent-Replayed: true`.
    pub fn replay(record: &crate::idempotency::Record) -> Result<Self> {
        let mut header = ResponseHeader::build(record.status, Some(record.headers.len() + 8))?;
        for (name, value) in &record.headers {
            header.append_header(name.clone(), value.as_str())?;
        }
        header.insert_header("content-length", record.body.len().to_string())?;
        header.insert_header("idempotent-replayed", "true")?;
        Ok(LocalResponse {
            header,
            body: record.body.clone(),
        })
    }
}
