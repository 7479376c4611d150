//! Tollgate: an edge gateway for OpenAI-compatible APIs, built on Pingora.
//!
//! `build_server` turns a validated configuration into a Pingora `Server` with its services:
//! the public proxy listeners, the admin API, the metrics endpoint, and background services
//! for storage and health checks. `main.rs` only parses the command line and calls it.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod accounts;
pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod form;
pub mod gateway;
pub mod health;
pub mod idempotency;
pub mod images;
pub mod limits;
pub mod metrics;
pub mod oauth;
pub mod outbound;
pub mod store;
pub mod time;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use app::App;
use config::Config;
use store::Store;

/// How long a starting process waits for sled's lock (held by the process it replaces).
const STORE_OPEN_WAIT: Duration = Duration::from_secs(60);

/// Opens sled once Pingora has forked (sled's lock and flusher thread do not survive a fork),
/// publishes it, and flushes it on shutdown.
struct StoreService {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for StoreService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Before waiting for sled: during an upgrade the previous process relays the requests
        // it can no longer serve here as soon as it has closed sled.
        if let Err(e) = self.app.relay.announce() {
            log::error!("cannot announce the relay socket: {e}");
        }
        let storage = self.app.config.storage.clone();
        let opened = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&storage.path)
                .map_err(|e| store::StoreError(format!("{}: {e}", storage.path.display())))?;
            Store::open(&storage.path, storage.cache_mb, STORE_OPEN_WAIT)
        })
        .await;
        let store = match opened {
            Ok(Ok(store)) => Arc::new(store),
            Ok(Err(e)) => {
                log::error!("cannot open storage: {e}");
                std::process::exit(1);
            }
            Err(e) => {
                log::error!("cannot open storage: {e}");
                std::process::exit(1);
            }
        };
        if let Err(e) = self.app.seed_day_budgets(&store) {
            log::error!("cannot read today's usage; daily budgets start from zero: {e}");
        }
        match store.hosts() {
            Ok(hosts) => {
                for host in hosts {
                    let name = host.host.clone();
                    if let Err(e) = self.app.hosts.set_added(host) {
                        log::error!("stored host {name} is invalid and ignored: {e}");
                    }
                }
            }
            Err(e) => log::error!("cannot read stored hosts: {e}"),
        }
        if self.app.images.is_some() {
            let (app, db) = (self.app.clone(), store.clone());
            let opened = tokio::task::spawn_blocking(move || {
                let path = &app.config.storage.path;
                app.images.as_ref().map(|i| i.open(db.db(), path))
            })
            .await;
            match opened {
                Ok(Some(Ok(()))) | Ok(None) => {}
                Ok(Some(Err(e))) => log::error!("cannot open the image cache: {e}"),
                Err(e) => log::error!("cannot open the image cache: {e}"),
            }
        }
        self.app.import_spool(&store);
        self.app.store.set(store);
        log::info!("storage open at {}", self.app.config.storage.path.display());
        // No reference is kept here: the upgrade handoff must be able to close sled.
        let _ = shutdown.changed().await;
        if let Some(store) = self.app.store.get() {
            if let Err(e) = tokio::task::spawn_blocking(move || store.flush()).await {
                log::error!("final storage flush failed: {e}");
            }
        }
    }
}

/// The old process's side of a zero-downtime upgrade: when Pingora starts handing the listening
/// sockets to the new process, sled goes too (see `App::hand_off_store`). A service rather than
/// a thread, so that it exists in the daemon after Pingora's fork.
struct UpgradeHandoff {
    app: Arc<App>,
    phases: std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
}

#[async_trait]
impl BackgroundService for UpgradeHandoff {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        loop {
            match phases.recv().await {
                Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                    let app = self.app.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || app.hand_off_store()).await
                    {
                        log::error!("storage handoff failed: {e}");
                    }
                }
                Ok(ExecutionPhase::Terminated)
                | Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => {}
            }
        }
    }
}

/// The buffers Pingora puts under each client connection.
/// - Writes: one TCP segment (1,460 bytes) by default. The gateway's own headers (CORS,
///   security, rate limits: about 900 bytes) push a typical JSON answer past it, so the head
///   and the body went out in two writes; 4 KiB keeps them in one.
/// - Reads: a 64 KiB buffer per connection by default. The HTTP layer reads into buffers of
///   its own, so the gateway reads straight from the socket and keeps no such buffer for each
///   open (often idle, or streaming) connection.
fn downstream_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0).write(4096)
}

/// On a cold start, refuses to run when an address cannot be listened on (another process
/// holds it, or the port needs a privilege). Pingora would retry a taken address for 30 s and
/// then give up on that one listener while the rest of the gateway went on: a gateway without
/// its admin API or metrics that systemd still counts as running. An upgrade takes the sockets
/// over from the old process instead, so it is not checked.
fn refuse_taken_addresses(config: &Config) -> Result<(), String> {
    let public = config
        .listen
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listen[{i}].addr"), l.addr.as_str()));
    let admin = config
        .admin
        .iter()
        .map(|a| ("admin.listen".to_string(), a.listen.as_str()));
    let metrics = config
        .metrics
        .iter()
        .map(|m| ("metrics.listen".to_string(), m.listen.as_str()));
    for (path, addr) in public.chain(admin).chain(metrics) {
        // The probe is dropped at once; like Pingora's listeners it sets SO_REUSEADDR, so a
        // previous process's connections in TIME_WAIT do not count as taken.
        if let Err(e) = std::net::TcpListener::bind(addr) {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => "another process is listening on it".to_string(),
                _ => e.to_string(),
            };
            return Err(format!("{path}: cannot listen on {addr}: {why}"));
        }
    }
    Ok(())
}

fn server_conf(config: &Config, daemon: bool) -> ServerConf {
    ServerConf {
        threads: config.server.threads.max(1),
        pid_file: config.server.pid_file.clone(),
        upgrade_sock: config.server.upgrade_sock.clone(),
        grace_period_seconds: Some(config.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout_seconds),
        daemon,
        // Daemonizing changes to this directory (`/` by default): stay where we were started so
        // relative paths in the configuration mean the same with and without `-d`.
        working_directory: std::env::current_dir().ok(),
        ..ServerConf::default()
    }
}

/// Writes pending usage and idempotent responses every second (SPEC §3.6: a crash loses at
/// most the last second), and sweeps expired idempotency records every minute.
struct WriteBehind {
    app: Arc<App>,
}

const SWEEP_EVERY_TICKS: u64 = 60;

#[async_trait]
impl BackgroundService for WriteBehind {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(usage::WRITE_EVERY);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            ticks += 1;
            let app = self.app.clone();
            let sweep = ticks % SWEEP_EVERY_TICKS == 0;
            let done = tokio::task::spawn_blocking(move || {
                app.write_behind();
                if let (true, Some(store)) = (sweep, app.store.get()) {
                    match app.idempotency.sweep(&store, time::now_unix_ms()) {
                        Ok(0) => {}
                        Ok(n) => log::info!("removed {n} expired idempotency records"),
                        Err(e) => log::error!("idempotency sweep failed: {e}"),
                    }
                }
            })
            .await;
            if let Err(e) = done {
                log::error!("write-behind failed: {e}");
            }
        }
    }
}

/// The whole gateway as a Pingora server. After `Server::run` returns, call
/// [`App::write_behind`] so what requests that drained during shutdown recorded is kept.
pub fn build_server(
    config: Config,
    daemon: bool,
    upgrade: bool,
) -> Result<(Server, Arc<App>), String> {
    let opt = Opt {
        upgrade,
        daemon,
        ..Opt::default()
    };
    if !upgrade {
        refuse_taken_addresses(&config)?;
    }
    let conf = server_conf(&config, daemon);
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let app = App::new(config)?;

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway::Gateway { app: app.clone() },
        "tollgate",
    );
    for (i, listener) in app.config.listen.iter().enumerate() {
        match &listener.tls {
            None => proxy.add_listener(
                ListenerConfig::tcp(listener.addr.as_str()).l4_buffer(downstream_buffers()),
            ),
            Some(tls) => proxy.add_listener(
                ListenerConfig::tcp(listener.addr.as_str())
                    .tls(
                        TlsSettings::intermediate(&tls.cert, &tls.key)
                            .map_err(|e| format!("listen[{i}].tls: {e}"))?,
                    )
                    .l4_buffer(downstream_buffers()),
            ),
        }
    }
    // The relay socket: requests the previous process relays during an upgrade come in here.
    proxy.add_uds(
        &app.relay.own_path().to_string_lossy(),
        Some(std::os::unix::fs::PermissionsExt::from_mode(0o600)),
    );
    server.add_service(proxy);

    if let Some(admin) = &app.config.admin {
        let mut service = Service::new(
            "admin".to_string(),
            admin::server::AdminApp {
                app: app.clone(),
                token: admin.token.clone(),
            },
        );
        service.add_tcp(&admin.listen);
        server.add_service(service);
    }
    if let Some(metrics) = &app.config.metrics {
        let mut service = Service::new(
            "metrics".to_string(),
            metrics::MetricsApp(app.metrics.clone()),
        );
        service.add_tcp(&metrics.listen);
        server.add_service(service);
    }
    server.add_service(background_service(
        "storage",
        StoreService { app: app.clone() },
    ));
    server.add_service(background_service(
        "write-behind",
        WriteBehind { app: app.clone() },
    ));
    let phases = server.watch_execution_phase();
    server.add_service(background_service(
        "upgrade handoff",
        UpgradeHandoff {
            app: app.clone(),
            phases: std::sync::Mutex::new(Some(phases)),
        },
    ));
    server.add_service(background_service(
        "health checks",
        health::HealthChecks { app: app.clone() },
    ));
    Ok((server, app))
}
