//! The floor for `make bench`: a bare Pingora HTTP proxy that forwards every request unchanged
//! to one plain-HTTP upstream. No authentication, limits, metering, metrics or logging, so the
//! difference between it and Tollgate is what Tollgate's own work costs. It uses the same
//! allocator as Tollgate (mimalloc) for the same reason.
//!
//! Usage: `bare_proxy --listen ADDR --upstream HOST:PORT [--threads N]` (1 thread by default,
//! as the benchmark pins the gateway to one core).

use std::net::SocketAddr;
use std::process::ExitCode;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

const USAGE: &str = "usage: bare_proxy --listen ADDR --upstream HOST:PORT [--threads N]";

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
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

struct Args {
    listen: String,
    upstream: SocketAddr,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let (mut listen, mut upstream, mut threads) = (None, None, 1usize);
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
            "--threads" => {
                let v = value()?;
                threads = v.parse().map_err(|_| format!("bad --threads {v:?}"))?;
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        upstream: upstream.ok_or("--upstream is required")?,
        threads: threads.max(1),
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
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Passthrough {
            upstream: args.upstream,
        },
    );
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    server.run_forever()
}
