//! The state one gateway process shares between its services: configuration, store, key
//! cache, routing, metrics. Everything hangs off one `Arc<App>`; there are no globals, so two
//! gateways can live in one process.

use std::sync::Arc;
use std::time::Instant;

use crate::accounts::Accounts;
use crate::auth::KeyDirectory;
use crate::config::Config;
use crate::gateway::access_log::AccessLog;
use crate::gateway::respond::HeaderPolicy;
use crate::gateway::route::{HostTable, Router};
use crate::gateway::upstream::Resolver;
use crate::idempotency::Idempotency;
use crate::images::Images;
use crate::limits::Limiter;
use crate::metrics::Metrics;
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
    pub headers: HeaderPolicy,
    pub access_log: AccessLog,
    pub started: Instant,
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
            hosts: HostTable::new(&config.hosts)?,
            headers: HeaderPolicy::new(config.cors.as_ref(), config.security_headers),
            access_log: AccessLog::new(config.access_log),
            resolver: Resolver::default(),
            limiter: Arc::new(Limiter::default()),
            usage: UsageRecorder::default(),
            idempotency: Idempotency::new(config.idempotency.clone()),
            started: Instant::now(),
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
    /// can add to them any more.
    pub fn write_behind(&self) {
        let Some(store) = self.store.get() else {
            return;
        };
        if let Err(e) = self.usage.write_to(store) {
            log::error!("writing usage failed (kept for the next attempt): {e}");
        }
        if let Err(e) = self.idempotency.write_to(store) {
            log::error!("storing idempotent responses failed (kept for the next attempt): {e}");
        }
        if let Some(images) = &self.images {
            images.write_pending(&self.metrics);
            images.flush_accesses();
        }
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
