//! Where a request goes: the first route whose prefix matches its path, or the allowed host
//! its `X-Host-Final` names (SPEC §3.2). Also the bounded `route` label used by metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use crate::config::{Config, HostSection};
use crate::store::HostRecord;

use super::upstream::{Pool, PoolSpec};

const HOST_CONNECT_TIMEOUT_MS: u64 = 5_000;
const HOST_READ_TIMEOUT_MS: u64 = 600_000;

pub struct Router {
    routes: Vec<(String, Arc<Pool>)>,
    pools: BTreeMap<String, Arc<Pool>>,
}

impl Router {
    pub fn new(config: &Config) -> Result<Router, String> {
        let mut pools = BTreeMap::new();
        for (name, section) in &config.upstreams {
            let pool = Pool::new(PoolSpec {
                name,
                backends: &section.backends,
                keys: &section.keys,
                connect_timeout_ms: section.connect_timeout_ms,
                read_timeout_ms: section.read_timeout_ms,
                health_check: section.health_check.clone(),
                ca_file: section.ca_file.as_deref(),
            })
            .map_err(|e| format!("upstreams.{name}: {e}"))?;
            pools.insert(name.clone(), Arc::new(pool));
        }
        let mut routes = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            let pool = pools
                .get(&route.upstream)
                .ok_or_else(|| format!("routes[{i}].upstream: no upstream `{}`", route.upstream))?;
            routes.push((route.prefix.clone(), pool.clone()));
        }
        // With a single upstream and no routes, the OpenAI API surface goes to it.
        if routes.is_empty() && pools.len() == 1 {
            if let Some(pool) = pools.values().next() {
                routes.push(("/v1".to_string(), pool.clone()));
            }
        }
        Ok(Router { routes, pools })
    }

    /// The pool for a path: the first route whose prefix matches it on a segment boundary.
    pub fn route(&self, path: &str) -> Option<&Arc<Pool>> {
        self.routes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, pool)| pool)
    }

    /// The pool of `upstreams.{name}`.
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?']),
        None => false,
    }
}

/// The `X-Host-Final` allow-list: hosts from the configuration, and those added at run time
/// through the admin API (which cannot override a configured one).
pub struct HostTable {
    configured: HashMap<String, Arc<Pool>>,
    added: RwLock<HashMap<String, (HostRecord, Arc<Pool>)>>,
}

/// What `GET /admin/hosts` shows of a host: never its keys in full.
pub struct HostView {
    pub host: String,
    pub origin: String,
    pub masked_keys: Vec<String>,
    pub source: &'static str,
}

fn host_pool(
    host: &str,
    origin: Option<&str>,
    keys: &[String],
    ca_file: Option<&str>,
) -> Result<Pool, String> {
    let origin = origin
        .map(str::to_string)
        .unwrap_or_else(|| format!("https://{host}"));
    Pool::new(PoolSpec {
        name: host,
        backends: &[origin],
        keys,
        connect_timeout_ms: HOST_CONNECT_TIMEOUT_MS,
        read_timeout_ms: HOST_READ_TIMEOUT_MS,
        health_check: None,
        ca_file,
    })
}

/// `sk-…wxyz`: enough to recognise a key, not to use it.
pub fn mask_key(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if key.chars().count() <= 8 {
        "…".to_string()
    } else {
        format!("{}…{tail}", key.chars().take(3).collect::<String>())
    }
}

/// Lower-cases a `HOST[:PORT]`, refusing anything else (paths, users, spaces).
pub fn normalize_host(value: &str) -> Option<String> {
    let host = value.trim().to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']'));
    valid.then_some(host)
}

impl HostTable {
    pub fn new(hosts: &BTreeMap<String, HostSection>) -> Result<HostTable, String> {
        let mut configured = HashMap::new();
        for (name, section) in hosts {
            let host =
                normalize_host(name).ok_or_else(|| format!("hosts.{name}: not a host name"))?;
            let pool = host_pool(
                &host,
                section.origin.as_deref(),
                &section.keys,
                section.ca_file.as_deref(),
            )
            .map_err(|e| format!("hosts.{name}: {e}"))?;
            configured.insert(host, Arc::new(pool));
        }
        Ok(HostTable {
            configured,
            added: RwLock::new(HashMap::new()),
        })
    }

    pub fn get(&self, host: &str) -> Option<Arc<Pool>> {
        if let Some(pool) = self.configured.get(host) {
            return Some(pool.clone());
        }
        self.added
            .read()
            .ok()
            .and_then(|added| added.get(host).map(|(_, pool)| pool.clone()))
    }

    pub fn is_configured(&self, host: &str) -> bool {
        self.configured.contains_key(host)
    }

    /// Whether a run-time host record would be accepted (its origin and CA file are usable).
    pub fn check(record: &HostRecord) -> Result<(), String> {
        host_pool(
            &record.host,
            record.origin.as_deref(),
            &record.keys,
            record.ca_file.as_deref(),
        )
        .map(|_| ())
    }

    /// Adds or replaces a run-time host. The record is validated by building its pool.
    pub fn set_added(&self, record: HostRecord) -> Result<(), String> {
        let pool = host_pool(
            &record.host,
            record.origin.as_deref(),
            &record.keys,
            record.ca_file.as_deref(),
        )?;
        if let Ok(mut added) = self.added.write() {
            added.insert(record.host.clone(), (record, Arc::new(pool)));
        }
        Ok(())
    }

    pub fn remove_added(&self, host: &str) -> bool {
        self.added
            .write()
            .map(|mut added| added.remove(host).is_some())
            .unwrap_or(false)
    }

    pub fn list(&self, config_hosts: &BTreeMap<String, HostSection>) -> Vec<HostView> {
        let mut out: Vec<HostView> = config_hosts
            .iter()
            .map(|(name, section)| HostView {
                host: name.to_ascii_lowercase(),
                origin: section
                    .origin
                    .clone()
                    .unwrap_or_else(|| format!("https://{name}")),
                masked_keys: section.keys.iter().map(|k| mask_key(k)).collect(),
                source: "config",
            })
            .collect();
        if let Ok(added) = self.added.read() {
            for (host, (record, _)) in added.iter() {
                out.push(HostView {
                    host: host.clone(),
                    origin: record
                        .origin
                        .clone()
                        .unwrap_or_else(|| format!("https://{host}")),
                    masked_keys: record.keys.iter().map(|k| mask_key(k)).collect(),
                    source: "admin",
                });
            }
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }
}

/// A bounded name for a request path, for metric labels: known OpenAI endpoints by name,
/// everything else folded.
pub fn route_label(path: &str) -> &'static str {
    const EXACT: &[&str] = &[
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/images/variations",
        "/v1/audio/speech",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/moderations",
        "/v1/models",
        "/v1/files",
        "/v1/batches",
        "/v1/uploads",
        "/v1/fine_tuning/jobs",
        "/status",
        "/account",
        "/account/usage",
        "/account/rotate-key",
        "/account/images",
    ];
    const PREFIXES: &[&str] = &[
        "/v1/models/",
        "/v1/files/",
        "/v1/batches/",
        "/v1/responses/",
        "/v1/uploads/",
        "/v1/fine_tuning/",
        "/v1/vector_stores",
        "/v1/assistants",
        "/v1/threads",
        "/v1/realtime",
        "/prompt/",
        "/images/",
        "/auth/",
    ];
    let path = path.split('?').next().unwrap_or(path);
    if let Some(exact) = EXACT.iter().find(|e| **e == path) {
        return exact;
    }
    if let Some(prefix) = PREFIXES.iter().find(|p| path.starts_with(**p)) {
        return prefix;
    }
    if path.starts_with("/v1/") {
        "/v1/other"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/v1", "/v1/chat/completions"));
        assert!(prefix_matches("/v1", "/v1"));
        assert!(prefix_matches("/v1", "/v1?x=1"));
        assert!(!prefix_matches("/v1", "/v10/x"));
        assert!(prefix_matches("/v1/", "/v1/x"));
        assert!(prefix_matches("/v1/images", "/v1/images/generations"));
        assert!(!prefix_matches("/v1/images", "/v1/imagesx"));
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            route_label("/v1/chat/completions?x=1"),
            "/v1/chat/completions"
        );
        assert_eq!(route_label("/v1/models/gpt-4o"), "/v1/models/");
        assert_eq!(route_label("/v1/whatever/123"), "/v1/other");
        assert_eq!(route_label("/etc/passwd"), "other");
    }

    #[test]
    fn host_names_and_masks() {
        assert_eq!(
            normalize_host(" API.Groq.com "),
            Some("api.groq.com".into())
        );
        assert_eq!(normalize_host("a.b:8443"), Some("a.b:8443".into()));
        assert_eq!(normalize_host("evil.com/path"), None);
        assert_eq!(normalize_host("user@evil.com"), None);
        assert_eq!(mask_key("sk-abcdefghijklmnop"), "sk-…mnop");
        assert_eq!(mask_key("short"), "…");
    }
}
