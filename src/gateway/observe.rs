//! The `logging` phase: metrics and the access-log line, once per request.

use std::time::{Duration, Instant};

use pingora::proxy::Session;
use serde_json::json;

use crate::app::App;
use crate::store::UsageRow;

use super::ctx::RequestCtx;

/// The status the client saw; 0 when no response was written (the client left first).
fn final_status(session: &Session, ctx: &RequestCtx) -> u16 {
    session
        .response_written()
        .map(|r| r.status.as_u16())
        .filter(|s| *s >= 200)
        .or(ctx.local_status)
        .unwrap_or(0)
}

pub fn finish(app: &App, session: &Session, ctx: &mut RequestCtx, error: Option<&pingora::Error>) {
    let now = Instant::now();
    let status = final_status(session, ctx);
    let total = now.duration_since(ctx.started);
    let upstream = ctx.upstream_sent.map(|sent| {
        ctx.upstream_done
            .unwrap_or(now)
            .saturating_duration_since(sent)
    });

    let m = &app.metrics;
    // `StatusCode` keeps the text of every code: no formatting per request.
    let code = http::StatusCode::from_u16(status);
    let owned;
    let status_label = match &code {
        Ok(code) => code.as_str(),
        Err(_) => {
            owned = status.to_string();
            owned.as_str()
        }
    };
    m.requests_total
        .with_label_values(&[ctx.route, status_label])
        .inc();
    m.request_duration
        .with_label_values(&[ctx.route])
        .observe(total.as_secs_f64());
    if let Some(upstream) = upstream {
        m.upstream_duration
            .with_label_values(&[ctx.upstream_name()])
            .observe(upstream.as_secs_f64());
    }

    debit_usage(app, ctx, status);
    settle_idempotency(app, ctx, error.is_none());
    if app.access_log.enabled() {
        write_access_log(app, session, ctx, status, total, upstream, error);
    }

    // Observed last, on a second reading of the clock: the debit, the idempotency record and the
    // log line are the gateway's own work on this request too, though the client has its
    // response by now.
    let own = own_time(ctx.started.elapsed(), upstream, ctx.inside_upstream.spent());
    m.overhead.observe(own.as_secs_f64());
}

fn write_access_log(
    app: &App,
    session: &Session,
    ctx: &RequestCtx,
    status: u16,
    total: Duration,
    upstream: Option<Duration>,
    error: Option<&pingora::Error>,
) {
    let req = session.req_header();
    // The query may carry a key (`/prompt/…?key=`): log the path only.
    let line = json!({
        "ts": crate::time::rfc3339(crate::time::now_unix()),
        "request_id": ctx.request_id,
        "method": req.method.as_str(),
        "path": req.uri.path(),
        "status": status,
        "duration_ms": (total.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "upstream": ctx.pool.as_ref().map(|p| p.name.as_str()),
        "upstream_status": ctx.upstream_status,
        "upstream_ms": upstream.map(|d| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0),
        "key_id": ctx.key.as_ref().map(|k| k.id.as_str()),
        "user": ctx.key.as_ref().map(|k| k.user.as_str()),
        "bytes_in": ctx.body_bytes,
        "bytes_out": ctx.response_bytes,
        "client": session.client_addr().map(|a| a.to_string()),
        "error": error.map(|e| e.etype().as_str()),
    });
    app.access_log.write(line.to_string());
}

/// The gateway's own work while the upstream's interval is open (from sending the request to
/// the upstream's last byte): the request body's phase, the response head's phases, and the
/// body phases of every chunk but the last. That interval is taken off the request's time as
/// the upstream's, so `own_time` gives this work back to the gateway.
#[derive(Default)]
pub struct InsideUpstream {
    began: Option<Instant>,
    spent: Duration,
}

impl InsideUpstream {
    /// The gateway starts work inside the upstream's interval.
    pub fn begin(&mut self) {
        self.began = Some(Instant::now());
    }

    /// That work is done; without a `begin` before it, nothing is added.
    pub fn end(&mut self) {
        if let Some(began) = self.began.take() {
            self.spent += began.elapsed();
        }
    }

    pub fn spent(&self) -> Duration {
        self.spent
    }
}

/// The gateway's own share of a request: its whole time less the upstream's, with the time
/// the gateway worked inside the upstream's interval given back.
pub fn own_time(
    total: Duration,
    upstream: Option<Duration>,
    inside_upstream: Duration,
) -> Duration {
    match upstream {
        Some(upstream) => total.saturating_sub(upstream) + inside_upstream.min(upstream),
        None => total,
    }
}

/// What an admitted request used: its request, error, tokens and images, into the limiter's
/// token windows and day budgets, the usage batch, and the token metrics.
fn debit_usage(app: &App, ctx: &mut RequestCtx, status: u16) {
    if !ctx.ticket.as_ref().is_some_and(|t| t.counted()) {
        return;
    }
    let metered = crate::gateway::metering::finish(app, ctx);
    let Some(ticket) = ctx.ticket.as_ref() else {
        return;
    };
    let now_ms = crate::time::now_unix_ms();
    app.limiter.consume(
        ticket.key_id(),
        ticket.user(),
        metered.prompt_tokens + metered.completion_tokens,
        metered.images,
        now_ms,
    );
    let row = UsageRow {
        user: ticket.user().to_string(),
        requests: 1,
        errors: u64::from(status >= 500),
        prompt_tokens: metered.prompt_tokens,
        completion_tokens: metered.completion_tokens,
        images: metered.images + ctx.images_made,
    };
    app.usage.add((now_ms / 1000) as i64, ticket.key_id(), row);
}

/// The claimant of an Idempotency-Key is done: keep its response for replay if it is complete
/// and storable, else free the scope so a retry goes upstream again (SPEC §3.5).
fn settle_idempotency(app: &App, ctx: &mut RequestCtx, no_error: bool) {
    let Some(recording) = ctx.recording.take() else {
        return;
    };
    let (scope, claim) = (recording.scope, recording.claim);
    let complete = no_error && ctx.upstream_done.is_some();
    let expires_at = crate::time::now_unix().saturating_add(app.idempotency.ttl_s() as i64);
    let label = match recording.into_record(complete, expires_at) {
        Some(record) => {
            app.idempotency.complete(scope, claim, record);
            "stored"
        }
        None => {
            app.idempotency.release(&scope, claim);
            "skipped"
        }
    };
    app.metrics.idempotency.with_label_values(&[label]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_inside_the_upstreams_interval_counts_as_the_gateways_own_time() {
        let ms = Duration::from_millis;
        assert_eq!(own_time(ms(10), Some(ms(8)), ms(1)), ms(3));
        assert_eq!(own_time(ms(10), Some(ms(8)), Duration::ZERO), ms(2));
        // Nothing went upstream: all of it is the gateway's.
        assert_eq!(own_time(ms(10), None, Duration::ZERO), ms(10));
        // Never more than the whole.
        assert_eq!(own_time(ms(10), Some(ms(8)), ms(9)), ms(10));
    }

    #[test]
    fn inside_upstream_adds_up_its_begin_end_pairs_only() {
        let outer = Instant::now();
        let mut inside = InsideUpstream::default();
        inside.end();
        assert_eq!(inside.spent(), Duration::ZERO);
        inside.begin();
        inside.end();
        let once = inside.spent();
        // An end with no begin before it (a phase that ran after the upstream finished).
        inside.end();
        assert_eq!(inside.spent(), once);
        inside.begin();
        inside.end();
        assert!(inside.spent() >= once);
        assert!(inside.spent() <= outer.elapsed());
    }
}
