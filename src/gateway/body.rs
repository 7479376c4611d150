//! The request body the gateway holds back until it is complete: the model allow-list, the
//! `include_usage` injection and the response format `store_generations` must keep.
//!
//! A small body of declared length is read whole during admission (`read_early`), so the
//! upstream request gets an exact `Content-Length` instead of chunked framing: one write less
//! per request, and a refused model is answered before any upstream connection is made. Other
//! bodies are held chunk by chunk in `request_body_filter` (`filter_chunk`) and finished by the
//! same `prepare`.

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::app::App;

use super::ctx::RequestCtx;
use super::model_gate::{self, Verdict};
use super::respond::ApiError;
use super::{images, metering};

/// Bodies up to this size are read during admission. Pingora keeps what it read for sending
/// (its retry buffer) up to 64 KiB; larger bodies would be lost, so they stream as before.
pub const EARLY_LIMIT: u64 = 64 * 1024;

/// Reads the whole body now and prepares what goes upstream (`ctx.prepared_body`). Pingora
/// sends the body it buffered through `request_body_filter`, which swaps in the prepared one.
pub async fn read_early(session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ApiError> {
    session.enable_retry_buffering();
    let full = super::admission::read_small_body(session).await?;
    if session.get_retry_buffer().is_none() {
        // Not kept whole after all (it cannot be re-sent): refuse rather than lose it.
        return Err(ApiError::invalid_request(
            "The request body could not be read.",
        ));
    }
    let prepared = prepare(session.req_header(), ctx, full)?;
    ctx.prepared_body = Some(prepared);
    Ok(())
}

/// `request_body_filter`'s work on one chunk: the body's size cap, its hash for an
/// Idempotency-Key, and what goes upstream: the prepared body in place of the bytes Pingora
/// kept (read early), or nothing until the last chunk of a held body, then the prepared whole.
pub fn filter_chunk(
    app: &App,
    req: &RequestHeader,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
) -> Result<(), ApiError> {
    if let Some(chunk) = body.as_ref() {
        ctx.body_bytes += chunk.len() as u64;
        if ctx.body_bytes > ctx.max_body_bytes {
            return Err(ApiError::request_too_large(ctx.max_body_bytes));
        }
    }
    if let Some(recording) = ctx.recording.as_mut() {
        if let Some(chunk) = body.as_ref() {
            recording.hash_request_chunk(chunk);
        }
        if end_of_stream {
            let hash = recording.finish_request();
            app.idempotency
                .body_hashed(&recording.scope, recording.claim, hash);
        }
    }
    if let Some(prepared) = &ctx.prepared_body {
        // Read during admission; Pingora sends the bytes it kept, this replaces them.
        *body = Some(if end_of_stream {
            prepared.clone()
        } else {
            Bytes::new()
        });
        return Ok(());
    }
    let Some(held) = ctx.held_body.as_mut() else {
        return Ok(());
    };
    if let Some(chunk) = body.take() {
        held.extend_from_slice(&chunk);
    }
    if !end_of_stream {
        // An empty chunk tells Pingora "nothing yet" without ending the upstream body.
        *body = Some(Bytes::new());
        return Ok(());
    }
    let full = ctx.held_body.take().unwrap_or_default();
    *body = Some(prepare(req, ctx, full)?);
    Ok(())
}

/// Checks the complete body against the key's models, notes its model and response format,
/// and returns what goes upstream (with `include_usage` when the gateway adds it).
pub fn prepare(
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    full: Vec<u8>,
) -> Result<Bytes, ApiError> {
    if let Some(gate) = &ctx.model_gate {
        match gate.verdict(&full) {
            Verdict::Allowed => {}
            Verdict::ModelNotAllowed(model) => return Err(ApiError::model_not_allowed(&model)),
            Verdict::Malformed(why) => return Err(ApiError::invalid_request(why)),
        }
    }
    ctx.model = model_gate::json_model(&full).ok().flatten();
    if let Some(keeper) = ctx.keeper.as_mut() {
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        keeper.keep_b64 = images::wants_b64(&full, content_type);
    }
    Ok(Bytes::from(metering::prepare_request_body(ctx, full)))
}
