//! The state one gateway process shares between its services: configuration, store, key
//! cache, routing, metrics. Everything hangs off one `Arc<App>`; there are no globals, so two
//! gateways can live in one process.

use std::sync::Arc;
use std::time::Instant;

use crate::accounts::Accounts;
use crate::auth::KeyDirectory;
use crate::config::Config;
use crate::gateway::access_log::AccessLog;
use crate::gateway::relay::Relay;
use crate::gateway::respond::HeaderPolicy;
use crate::gateway::route::{HostTable, Router};
use crate::gateway::upstream::Resolver;
use crate::idempotency::Idempotency;
use crate::images::Images;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::oauth::Signin;
use crate::store::spool::{self, RecordSink, SpoolWriter};
use crate::store::StoreSlot;
use crate::usage::UsageRecorder;

pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<StoreSlot>,
    pub keys: Arc<KeyDirectory>,
    pub accounts: Accounts,
    pub router: Router,
    pub hosts: HostTable,
    pub resolver: Resolver,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<Limiter>,
    pub usage: UsageRecorder,
    pub idempotency: Idempotency,
    /// Present when the configuration has an `images` section.
    pub images: Option<Images>,
    /// Present when the configuration has an `oauth` section.
    pub signin: Option<Signin>,
    pub headers: HeaderPolicy,
    pub access_log: AccessLog,
    pub started: Instant,
    /// Where records go once sled has been handed to a new process.
    spool: SpoolWriter,
    /// Where requests go once sled has been handed to a new process.
    pub relay: Relay,
}

impl App {
    pub fn new(config: Config) -> Result<Arc<App>, String> {
        let store = Arc::new(StoreSlot::default());
        let keys = Arc::new(KeyDirectory::new(store.clone()));
        let accounts = Accounts::new(store.clone(), keys.clone(), config.auth.key_prefix.clone());
        let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
        let router = Router::new(&config)?;
        let images = match &config.images {
            Some(section) => {
                let pool = router.pool(&section.upstream).ok_or_else(|| {
                    format!("images.upstream: no upstream `{}`", section.upstream)
                })?;
                Some(Images::new(section.clone(), pool.clone()))
            }
            None => None,
        };
        Ok(Arc::new(App {
            router,
            images,
            signin: config.oauth.clone().map(Signin::new),
            hosts: HostTable::new(&config.hosts)?,
            headers: HeaderPolicy::new(config.cors.as_ref(), config.security_headers),
            access_log: AccessLog::new(config.access_log),
            resolver: Resolver::default(),
            limiter: Arc::new(Limiter::default()),
            usage: UsageRecorder::default(),
            idempotency: Idempotency::new(config.idempotency.clone()),
            started: Instant::now(),
            spool: SpoolWriter::new(spool::dir(&config.storage.path)),
            relay: Relay::new(&config.server.upgrade_sock),
            config: Arc::new(config),
            store,
            keys,
            accounts,
            metrics,
        }))
    }
}

impl App {
    /// Writes the usage and idempotent responses not written yet, and flushes sled. Called by
    /// the write-behind service, and once more after the server has stopped, when no request
    /// can add to them any more. Once sled has been handed to a new process, they go to the
    /// spool instead, for that process to pick up.
    pub fn write_behind(&self) {
        if let Some(store) = self.store.get() {
            self.write_records(&*store);
            if let Some(images) = &self.images {
                images.write_pending(&self.metrics);
                images.flush_accesses();
            }
            self.import_spool(&store);
        } else if self.store.is_released() {
            self.write_records(&self.spool);
        }
    }

    fn write_records(&self, sink: &impl RecordSink) {
        if let Err(e) = self.usage.write_to(sink) {
            log::error!("writing usage failed (kept for the next attempt): {e}");
        }
        if let Err(e) = self.idempotency.write_to(sink) {
            log::error!("storing idempotent responses failed (kept for the next attempt): {e}");
        }
    }

    /// Usage and responses a previous process wrote to the spool while it drained after handing
    /// sled over; today's usage also counts towards the day budgets.
    pub fn import_spool(&self, store: &crate::store::Store) {
        match spool::import(store, &spool::dir(&self.config.storage.path)) {
            Ok(rows) => {
                let now = crate::time::now_unix();
                let today = now - now.rem_euclid(86_400);
                let now_ms = crate::time::now_unix_ms();
                for (_, key_id, row) in rows.iter().filter(|(hour, _, _)| *hour >= today) {
                    self.limiter.seed_day(
                        key_id,
                        &row.user,
                        row.requests,
                        row.tokens(),
                        row.images,
                        now_ms,
                    );
                }
            }
            Err(e) => log::error!("importing the spool failed (tried again later): {e}"),
        }
    }

    /// The upgrade handoff (the old process's side): everything pending is written to sled,
    /// then sled is closed so its lock passes to the new process, which is waiting to open it.
    /// Requests still draining here write to the spool from now on. Blocking.
    pub fn hand_off_store(&self) {
        self.write_behind();
        let images = self.images.as_ref().and_then(|i| i.release_cache());
        let store = self.store.release();
        // Operations already running hold their own references; let them finish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let busy = || {
            images.as_ref().is_some_and(|i| Arc::strong_count(i) > 1)
                || store.as_ref().is_some_and(|s| Arc::strong_count(s) > 1)
        };
        while busy() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if busy() {
            log::warn!("storage still in use at the handoff; the new process keeps retrying");
        }
        drop(images);
        if let Some(store) = store {
            if let Err(e) = store.flush() {
                log::error!("final flush before the handoff failed: {e}");
            }
            drop(store);
        }
        // What drained before this point is in sled; the rest goes to the spool.
        self.write_behind();
        log::info!("storage handed over to the new process");
    }

    /// Day counts for the limiter from today's stored usage, so daily budgets survive a
    /// restart.
    pub fn seed_day_budgets(&self, store: &crate::store::Store) -> crate::store::StoreResult<()> {
        let now = crate::time::now_unix();
        let today = now - now.rem_euclid(86_400);
        let now_ms = crate::time::now_unix_ms();
        for (_, key_id, row) in store.usage_between(today, today + 86_400)? {
            self.limiter.seed_day(
                &key_id,
                &row.user,
                row.requests,
                row.tokens(),
                row.images,
                now_ms,
            );
        }
        Ok(())
    }
}
