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
use crate::metrics::Metrics;
use crate::store::StoreSlot;

pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<StoreSlot>,
    pub keys: Arc<KeyDirectory>,
    pub accounts: Accounts,
    pub router: Router,
    pub hosts: HostTable,
    pub resolver: Resolver,
    pub metrics: Arc<Metrics>,
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
        Ok(Arc::new(App {
            router: Router::new(&config)?,
            hosts: HostTable::new(&config.hosts)?,
            headers: HeaderPolicy::new(config.cors.as_ref(), config.security_headers),
            access_log: AccessLog::new(config.access_log),
            resolver: Resolver::default(),
            started: Instant::now(),
            config: Arc::new(config),
            store,
            keys,
            accounts,
            metrics,
        }))
    }
}
