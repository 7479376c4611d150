//! Token metering of proxied responses, between the phases and the incremental parser in
//! `usage::parse`: which responses are parsed, the `include_usage` injection on the request
//! side, and the numbers a finished request is debited with.

use bytes::Bytes;
use pingora::http::ResponseHeader;

use crate::app::App;
use crate::usage::parse::{final_usage, inject_include_usage, ResponseKind, Usage, UsageMeter};

use super::ctx::RequestCtx;

/// Streaming endpoints whose usage comes only when asked for with `stream_options`.
pub fn takes_include_usage(path: &str) -> bool {
    matches!(path, "/v1/chat/completions" | "/v1/completions")
}

/// The request body the upstream gets: with `include_usage` added when the client streams
/// without asking for usage. Sets `ctx.injected_usage` when it changed the body.
pub fn prepare_request_body(ctx: &mut RequestCtx, body: Vec<u8>) -> Vec<u8> {
    if !ctx.may_inject_usage {
        return body;
    }
    match inject_include_usage(&body) {
        Some(changed) => {
            ctx.injected_usage = true;
            changed
        }
        None => body,
    }
}

/// Decides from the upstream's response headers whether and how its body is metered.
pub fn start(ctx: &mut RequestCtx, resp: &ResponseHeader) {
    // Upstream errors pass through unchanged and are not charged.
    if ctx.ticket.is_none() || !resp.status.is_success() {
        return;
    }
    let content_type = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let kind = if content_type.starts_with("text/event-stream") {
        ResponseKind::Sse
    } else if content_type.starts_with("application/json") {
        ResponseKind::Json
    } else {
        return;
    };
    ctx.metered_stream = matches!(kind, ResponseKind::Sse);
    let strip = ctx.injected_usage && ctx.metered_stream;
    ctx.meter = Some(UsageMeter::new(kind, strip));
}

/// Feeds one chunk of the response to the meter, replacing it with what the client gets.
/// Synchronous and bounded: called from `response_body_filter`.
pub fn feed(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end_of_stream: bool) {
    let Some(meter) = ctx.meter.as_mut() else {
        return;
    };
    let mut out = match body.take() {
        Some(chunk) => meter.feed(&chunk),
        None => Bytes::new(),
    };
    if end_of_stream {
        let rest = meter.finish();
        if !rest.is_empty() {
            let mut joined = Vec::with_capacity(out.len() + rest.len());
            joined.extend_from_slice(&out);
            joined.extend_from_slice(&rest);
            out = Bytes::from(joined);
        }
    }
    *body = Some(out);
}

/// What a finished request is debited with.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub images: u64,
}

/// The usage of a finished (or cut short) request, counted into `tollgate_tokens_total`.
pub fn finish(app: &App, ctx: &mut RequestCtx) -> Metered {
    let Some(meter) = ctx.meter.as_mut() else {
        return Metered::default();
    };
    // A stream cut short may end in a line without its newline: meter it too (the bytes are
    // for nobody now).
    let _ = meter.finish();
    let meter = &*meter;
    // Only streams are estimated when no usage came (SPEC §3.6); a JSON answer without
    // `usage` (moderations, files, models) used no tokens.
    let usage = match meter.reported() {
        None if !ctx.metered_stream => Usage::default(),
        _ => final_usage(meter, ctx.body_bytes).0,
    };
    let model = ctx.model.as_deref().or(meter.model());
    let label = model_label(app, model);
    let tokens = &app.metrics.tokens;
    tokens
        .with_label_values(&["prompt", label])
        .inc_by(usage.prompt_tokens);
    tokens
        .with_label_values(&["completion", label])
        .inc_by(usage.completion_tokens);
    Metered {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        images: usage.images.max(meter.images()),
    }
}

/// A bounded model label: an id from the `models` list, else `other`.
fn model_label<'a>(app: &'a App, model: Option<&str>) -> &'a str {
    let known = app.config.models.as_ref().and_then(|models| {
        let model = model?;
        models.iter().find(|m| m.id == model).map(|m| m.id.as_str())
    });
    known.unwrap_or("other")
}
