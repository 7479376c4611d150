//! Per-request state carried through the Pingora phases.

use std::sync::Arc;
use std::time::Instant;

use rand::distr::{Alphanumeric, SampleString};

use crate::idempotency::recording::Recording;
use crate::images::generations::{Keeper, Rewrite};
use crate::limits::Ticket;
use crate::metrics::GaugeGuard;
use crate::store::KeyRecord;
use crate::usage::parse::UsageMeter;

use super::model_gate::ModelGate;
use super::observe::InsideUpstream;
use super::respond::ApiError;
use super::upstream::Pool;

pub struct RequestCtx {
    pub request_id: String,
    /// When the context was made: Pingora makes it as soon as the request head is read, before
    /// any phase runs, so this is where `tollgate_overhead_seconds` starts.
    pub started: Instant,
    /// Bounded route name for metrics.
    pub route: &'static str,
    pub tls: bool,
    pub key: Option<Arc<KeyRecord>>,
    /// Where the request goes: a configured pool or an `X-Host-Final` host.
    pub pool: Option<Arc<Pool>>,
    /// The caller's own provider key (BYOK); never logged.
    pub byok_key: Option<String>,
    /// Backends already tried for this request, a bit each.
    pub tried: u64,
    pub backend: Option<usize>,
    pub model_gate: Option<ModelGate>,
    /// The request body held back until complete (for the model gate or the usage injection).
    pub held_body: Option<Vec<u8>>,
    /// The complete body for upstream, when admission read it (see `body::read_early`).
    pub prepared_body: Option<bytes::Bytes>,
    /// A streaming chat/completions request whose body may get `include_usage` added.
    pub may_inject_usage: bool,
    /// The gateway added `include_usage`: the usage-only chunk is the gateway's, not the client's.
    pub injected_usage: bool,
    /// The `model` of the request body, when the gateway read it.
    pub model: Option<String>,
    pub meter: Option<UsageMeter>,
    /// The metered response is a stream (estimated from its content when usage is missing).
    pub metered_stream: bool,
    pub max_body_bytes: u64,
    pub body_bytes: u64,
    pub upstream_sent: Option<Instant>,
    pub upstream_done: Option<Instant>,
    /// The gateway's work while the upstream's interval is open (counted in the overhead).
    pub inside_upstream: InsideUpstream,
    pub upstream_status: Option<u16>,
    pub response_bytes: u64,
    /// The error to answer when a phase fails on purpose (413 mid-body, model refused).
    pub error: Option<ApiError>,
    /// Set once `error` was answered: the failure was a refusal, not a fault.
    pub refused_on_purpose: bool,
    /// Status of a response the gateway made itself.
    pub local_status: Option<u16>,
    /// The limiter's admission; dropping it ends the request's share of `max_concurrent`.
    pub ticket: Option<Ticket>,
    /// The Idempotency-Key scope this request claimed, and what it records.
    pub recording: Option<Recording>,
    pub active: Option<GaugeGuard>,
    pub stream: Option<GaugeGuard>,
    /// Images a `/prompt` miss made (already counted by the limiter at admission).
    pub images_made: u64,
    /// `store_generations` applies: whose images these are and where they will be served.
    pub keeper: Option<Keeper>,
    /// The response body being rewritten to point at stored images.
    pub image_rewrite: Option<Rewrite>,
    /// Relayed to the new process of an upgrade (see `relay`).
    pub relay: bool,
    /// `request_filter` read the request body itself (it cannot be proxied or relayed).
    pub body_consumed: bool,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            request_id: String::new(),
            started: Instant::now(),
            route: "other",
            tls: false,
            key: None,
            pool: None,
            byok_key: None,
            tried: 0,
            backend: None,
            model_gate: None,
            held_body: None,
            prepared_body: None,
            may_inject_usage: false,
            injected_usage: false,
            model: None,
            meter: None,
            metered_stream: false,
            max_body_bytes: u64::MAX,
            body_bytes: 0,
            upstream_sent: None,
            upstream_done: None,
            inside_upstream: InsideUpstream::default(),
            upstream_status: None,
            response_bytes: 0,
            error: None,
            refused_on_purpose: false,
            local_status: None,
            ticket: None,
            recording: None,
            active: None,
            stream: None,
            images_made: 0,
            keeper: None,
            image_rewrite: None,
            relay: false,
            body_consumed: false,
        }
    }

    pub fn upstream_name(&self) -> &str {
        self.pool.as_ref().map_or("", |p| p.name.as_str())
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// `req_` and 24 random characters: unique enough to grep logs across machines.
pub fn new_request_id() -> String {
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    Alphanumeric.append_string(&mut rand::rng(), &mut id, 24);
    id
}
