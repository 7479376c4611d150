//! Prometheus metrics from a registry the gateway owns (so two gateways in one process never
//! share counters), served by a small Pingora app on `metrics.listen`.
//!
//! No label carries a key, a user or anything else unbounded: `route` comes from a fixed list
//! (see [`crate::gateway::route::route_label`]), `status` is an HTTP status code and `upstream`
//! a pool name from the configuration.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Latency buckets from 50 µs (gateway overhead) up to 10 min (long generations).
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub overhead: Histogram,
    pub upstream_errors: IntCounterVec,
    pub active_requests: IntGauge,
    pub active_streams: IntGauge,
    pub tokens: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub idempotency: IntCounterVec,
    pub image_cache: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(SECONDS_BUCKETS.to_vec())
        };
        let metrics = Metrics {
            requests_total: IntCounterVec::new(
                Opts::new(
                    "tollgate_requests_total",
                    "Requests answered, by route and status",
                ),
                &["route", "status"],
            )?,
            request_duration: HistogramVec::new(
                histogram(
                    "tollgate_request_duration_seconds",
                    "Time from the request's arrival to the end of its response",
                ),
                &["route"],
            )?,
            upstream_duration: HistogramVec::new(
                histogram(
                    "tollgate_upstream_duration_seconds",
                    "Time from sending the request upstream to the end of the upstream response",
                ),
                &["upstream"],
            )?,
            overhead: Histogram::with_opts(histogram(
                "tollgate_overhead_seconds",
                "Time spent in the gateway itself: the request's duration less its upstream time",
            ))?,
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "tollgate_upstream_errors_total",
                    "Failed upstream attempts, by pool and kind (connect, timeout, read, status)",
                ),
                &["upstream", "kind"],
            )?,
            active_requests: IntGauge::new("tollgate_active_requests", "Requests in flight")?,
            active_streams: IntGauge::new(
                "tollgate_active_streams",
                "Server-sent event streams in flight",
            )?,
            tokens: IntCounterVec::new(
                Opts::new(
                    "tollgate_tokens_total",
                    "Tokens metered, by kind (prompt, completion) and model (ids in `models`, else other)",
                ),
                &["kind", "model"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new("tollgate_rate_limited_total", "Requests refused by a limit, by limit"),
                &["limit"],
            )?,
            idempotency: IntCounterVec::new(
                Opts::new(
                    "tollgate_idempotency_total",
                    "Idempotency-Key outcomes: stored, replayed, conflict (409), mismatch (422), skipped (not stored)",
                ),
                &["result"],
            )?,
            image_cache: IntCounterVec::new(
                Opts::new(
                    "tollgate_image_cache_total",
                    "/prompt image cache: hit, miss (generated), coalesced (joined a generation under way), evicted",
                ),
                &["result"],
            )?,
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 11] = [
            Box::new(metrics.requests_total.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.upstream_duration.clone()),
            Box::new(metrics.overhead.clone()),
            Box::new(metrics.upstream_errors.clone()),
            Box::new(metrics.active_requests.clone()),
            Box::new(metrics.active_streams.clone()),
            Box::new(metrics.tokens.clone()),
            Box::new(metrics.rate_limited.clone()),
            Box::new(metrics.idempotency.clone()),
            Box::new(metrics.image_cache.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector)?;
        }
        Ok(metrics)
    }

    /// The registry, for features that register their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("encoding metrics failed: {e}");
        }
        out
    }
}

/// Increments a gauge now and decrements it when dropped, so every exit path is counted.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics` (any path, like Prometheus exporters usually do).
pub struct MetricsApp(pub std::sync::Arc<Metrics>);

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, _session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = self.0.render();
        Response::builder()
            .status(200)
            .header("content-type", TextEncoder::new().format_type())
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_of_the_contract_is_registered() {
        let m = Metrics::new().unwrap();
        m.requests_total.with_label_values(&["r", "200"]).inc();
        m.request_duration.with_label_values(&["r"]).observe(0.1);
        m.upstream_duration.with_label_values(&["u"]).observe(0.1);
        m.overhead.observe(0.001);
        m.upstream_errors.with_label_values(&["u", "connect"]).inc();
        m.tokens.with_label_values(&["prompt", "other"]).inc();
        m.rate_limited
            .with_label_values(&["requests_per_minute"])
            .inc();
        m.idempotency.with_label_values(&["stored"]).inc();
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "tollgate_requests_total",
            "tollgate_request_duration_seconds",
            "tollgate_upstream_duration_seconds",
            "tollgate_overhead_seconds",
            "tollgate_tokens_total",
            "tollgate_rate_limited_total",
            "tollgate_idempotency_total",
            "tollgate_upstream_errors_total",
            "tollgate_active_requests",
            "tollgate_active_streams",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
