//! The floor for `make bench`: a bare Pingora HTTP proxy that forwards every request unchanged
//! to one plain-HTTP upstream. No authentication, limits, metering, metrics or logging, so the
//! difference between it and Tollgate is what Tollgate's own work costs. It uses the same
//! allocator as Tollgate (mimalloc) for the same reason.
//!
//! Usage: `bare_proxy --listen ADDR --upstream HOST:PORT [--threads N] [--span]` (1 thread by
//! default, as the benchmark pins the gateway to one core).
//!
//! With `--span` it also times each request over the same span as Tollgate's
//! `tollgate_overhead_seconds` (from the parsed request head to the logged end, less the time from
//! sending upstream to the upstream's last byte, with the phases that run inside that given back)
//! and answers `GET /bare-proxy/span` itself with `COUNT SUM_NANOSECONDS`. The benchmark subtracts that from Tollgate's metric to compare it with
//! the latency difference it sees; it runs a second instance for it, so the floor stays bare.
//!
//! With `--contract` it also writes the headers the contract puts on every proxied exchange,
//! with fixed values and through Tollgate's own code (`edit_request`, `HeaderPolicy::decorate`):
//! upstream, the provider's `Authorization` in place of the caller's and `x-tollgate-request-id`;
//! downstream, the request id, CORS and security headers (SPEC §3.7) and the six rate-limit
//! headers (§3.6). Nothing is checked, counted or metered, so it shows what those headers alone
//! cost a Pingora proxy (`CONTRACT=1 make bench`, `BARE_ARGS=--contract benches/callgrind.sh`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderValue;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use tollgate::gateway::header_edit::edit_request;
use tollgate::gateway::observe::{own_time, InsideUpstream};
use tollgate::gateway::respond::{HeaderPolicy, TOLLGATE_REQUEST_ID};
use tollgate::limits::{LimitName, Standing};

const USAGE: &str =
    "usage: bare_proxy --listen ADDR --upstream HOST:PORT [--threads N] [--span | --contract]";
const SPAN_PATH: &str = "/bare-proxy/span";

/// The same allocator as Tollgate, so that the floor differs from it only by Tollgate's work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Passthrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(plain_peer(self.upstream))
    }
}

fn plain_peer(upstream: SocketAddr) -> Box<HttpPeer> {
    Box::new(HttpPeer::new(upstream, false, String::new()))
}

/// The same passthrough, timing each request over the span of `tollgate_overhead_seconds`.
struct Timed {
    upstream: SocketAddr,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

struct Span {
    started: Instant,
    upstream_sent: Option<Instant>,
    upstream_done: Option<Instant>,
    inside_upstream: InsideUpstream,
}

#[async_trait]
impl ProxyHttp for Timed {
    type CTX = Span;

    /// Started when Pingora makes the context, right after the request head is read, as
    /// Tollgate's `RequestCtx` is.
    fn new_ctx(&self) -> Span {
        Span {
            started: Instant::now(),
            upstream_sent: None,
            upstream_done: None,
            inside_upstream: InsideUpstream::default(),
        }
    }

    async fn request_filter(&self, session: &mut Session, _span: &mut Span) -> Result<bool> {
        if session.req_header().uri.path() != SPAN_PATH {
            return Ok(false);
        }
        let body = format!(
            "{} {}",
            self.count.load(Ordering::Relaxed),
            self.sum_nanos.load(Ordering::Relaxed)
        );
        let mut head = pingora::http::ResponseHeader::build(200, Some(1))?;
        head.insert_header("content-length", body.len())?;
        session.write_response_header(Box::new(head), false).await?;
        session.write_response_body(Some(body.into()), true).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _span: &mut Span,
    ) -> Result<Box<HttpPeer>> {
        Ok(plain_peer(self.upstream))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        _request: &mut pingora::http::RequestHeader,
        span: &mut Span,
    ) -> Result<()> {
        span.upstream_sent = Some(Instant::now());
        Ok(())
    }

    /// The request body's phase, timed as Tollgate times its own: it runs once the request head
    /// has gone upstream, inside the upstream's interval, and counts as the proxy's time.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        span: &mut Span,
    ) -> Result<()> {
        span.inside_upstream.begin();
        span.inside_upstream.end();
        Ok(())
    }

    /// The response head's phases, timed as Tollgate times its own (they fall inside the
    /// upstream's interval and count as the proxy's time).
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _response: &mut pingora::http::ResponseHeader,
        span: &mut Span,
    ) -> Result<()> {
        span.inside_upstream.begin();
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        _response: &mut pingora::http::ResponseHeader,
        span: &mut Span,
    ) -> Result<()> {
        span.inside_upstream.end();
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        span: &mut Span,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            span.upstream_done = Some(Instant::now());
        }
        Ok(None)
    }

    /// Every chunk but the upstream's last, timed as Tollgate times its own.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        span: &mut Span,
    ) -> Result<Option<Duration>> {
        if span.upstream_done.is_none() {
            span.inside_upstream.begin();
        }
        span.inside_upstream.end();
        Ok(None)
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, span: &mut Span) {
        let Some(sent) = span.upstream_sent else {
            return;
        };
        let now = Instant::now();
        let upstream = span
            .upstream_done
            .unwrap_or(now)
            .saturating_duration_since(sent);
        let own = own_time(
            now.duration_since(span.started),
            Some(upstream),
            span.inside_upstream.spent(),
        );
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(own.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// The same passthrough, writing the contract's headers with fixed values.
struct Contract {
    upstream: SocketAddr,
    policy: HeaderPolicy,
    authorization: HeaderValue,
    request_id: HeaderValue,
    /// What a key under generous limits is told: the request trio and the token trio.
    standings: [Standing; 2],
}

/// A request id of the length Tollgate's have.
const REQUEST_ID: &str = "req_0123456789abcdefghijklmn";

impl Contract {
    fn new(upstream: SocketAddr) -> Self {
        let standing = |limit, max: u64| Standing {
            limit,
            max,
            remaining: max - 1,
            reset: Duration::from_millis(59_340),
        };
        Contract {
            upstream,
            policy: HeaderPolicy::new(None, true),
            authorization: HeaderValue::from_static("Bearer sk-bench-provider-key"),
            request_id: HeaderValue::from_static(REQUEST_ID),
            standings: [
                standing(LimitName::RequestsPerMinute, 100_000_000),
                standing(LimitName::TokensPerMinute, 1_000_000_000),
            ],
        }
    }
}

#[async_trait]
impl ProxyHttp for Contract {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(plain_peer(self.upstream))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut pingora::http::RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        edit_request(request, |parts| {
            parts
                .headers
                .insert(http::header::AUTHORIZATION, self.authorization.clone());
            parts
                .headers
                .insert(TOLLGATE_REQUEST_ID, self.request_id.clone());
            Ok(())
        })
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut pingora::http::ResponseHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        self.policy
            .decorate(response, REQUEST_ID, None, false, &self.standings);
        Ok(())
    }
}

struct Args {
    listen: String,
    upstream: SocketAddr,
    threads: usize,
    span: bool,
    contract: bool,
}

fn parse_args() -> Result<Args, String> {
    let (mut listen, mut upstream, mut threads) = (None, None, 1usize);
    let (mut span, mut contract) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(value()?),
            "--upstream" => {
                let v = value()?;
                upstream = Some(
                    v.parse()
                        .map_err(|e| format!("bad --upstream {v:?}: {e}"))?,
                );
            }
            "--span" => span = true,
            "--contract" => contract = true,
            "--threads" => {
                let v = value()?;
                threads = v.parse().map_err(|_| format!("bad --threads {v:?}"))?;
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    if span && contract {
        return Err("--span and --contract are separate modes".into());
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        upstream: upstream.ok_or("--upstream is required")?,
        threads: threads.max(1),
        span,
        contract,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bare_proxy: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let conf = ServerConf {
        threads: args.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    if args.span {
        let timed = Timed {
            upstream: args.upstream,
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        };
        add_proxy(&mut server, &args.listen, timed);
    } else if args.contract {
        add_proxy(&mut server, &args.listen, Contract::new(args.upstream));
    } else {
        let bare = Passthrough {
            upstream: args.upstream,
        };
        add_proxy(&mut server, &args.listen, bare);
    }
    server.run_forever()
}

fn add_proxy<P>(server: &mut Server, listen: &str, app: P)
where
    P: ProxyHttp + Send + Sync + 'static,
    P::CTX: Send + Sync,
{
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, app);
    proxy.add_tcp(listen);
    server.add_service(proxy);
}
