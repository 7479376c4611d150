//! Upstream pools: backends chosen round-robin, provider keys in round-robin, passive failure
//! tracking (a backend that keeps failing is skipped for a while), an optional active health
//! check, and the `HttpPeer` for one attempt.
//!
//! Host names are resolved asynchronously and cached briefly, never with the blocking
//! resolver on a request thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use pingora::protocols::tls::CaType;
use pingora::tls::CertificateDer;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;
use rustls_pki_types::pem::PemObject;

use super::rewrite::{bearer, Credential};
use crate::config::{parse_backend_url, BackendUrl, HealthCheck};

/// Consecutive failures after which a backend is skipped…
const FAILURES_BEFORE_SKIP: u32 = 3;
/// …for this long, unless nothing else is left to try.
const SKIP_FOR: Duration = Duration::from_secs(10);
const DNS_TTL: Duration = Duration::from_secs(30);

pub struct Backend {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Prefix put before the request path, with a trailing `/v1` removed (SPEC §2).
    pub base_path: String,
    /// The `Host` header for this backend.
    pub authority: String,
    /// `authority` as a header value, made once; none if it cannot be one (a request to this
    /// backend then fails cleanly rather than sending a broken head).
    pub host_header: Option<HeaderValue>,
    consecutive_failures: AtomicU32,
    skip_until_ms: AtomicU64,
    /// Last verdict of the active health check (true when there is none).
    healthy: AtomicBool,
}

impl Backend {
    pub fn new(url: BackendUrl) -> Backend {
        let default_port = if url.tls { 443 } else { 80 };
        let authority = if url.port == default_port {
            url.host.clone()
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let base_path = url
            .base_path
            .strip_suffix("/v1")
            .unwrap_or(&url.base_path)
            .trim_end_matches('/')
            .to_string();
        Backend {
            tls: url.tls,
            host: url.host,
            port: url.port,
            base_path,
            host_header: HeaderValue::from_str(&authority).ok(),
            authority,
            consecutive_failures: AtomicU32::new(0),
            skip_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
    }

    /// The upstream path and query for a request path and query.
    pub fn upstream_path(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_path, path_and_query)
    }

    fn available(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.skip_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    pub fn is_healthy(&self) -> bool {
        self.available(monotonic_ms())
    }
}

/// Milliseconds on a process-local monotonic clock.
fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

pub struct Pool {
    pub name: String,
    pub backends: Vec<Backend>,
    keys: Vec<String>,
    /// Each key's `Authorization` value, made when the pool is built rather than per request.
    bearers: Vec<HeaderValue>,
    next_backend: AtomicUsize,
    next_key: AtomicUsize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    ca: Option<Arc<CaType>>,
}

pub struct PoolSpec<'a> {
    pub name: &'a str,
    pub backends: &'a [String],
    pub keys: &'a [String],
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub health_check: Option<HealthCheck>,
    pub ca_file: Option<&'a str>,
}

impl Pool {
    pub fn new(spec: PoolSpec<'_>) -> Result<Pool, String> {
        let backends = spec
            .backends
            .iter()
            .map(|b| parse_backend_url(b).map(Backend::new))
            .collect::<Result<Vec<_>, _>>()?;
        if backends.is_empty() {
            return Err(format!("upstream {} has no backend", spec.name));
        }
        let ca = spec.ca_file.map(load_ca).transpose()?;
        let keys: Vec<String> = spec
            .keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        // The key itself is never part of the message: it is a secret.
        let bearers = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                bearer(key).map_err(|_| {
                    format!(
                        "provider key {} has characters an HTTP header cannot carry",
                        i + 1
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pool {
            name: spec.name.to_string(),
            backends,
            keys,
            bearers,
            next_backend: AtomicUsize::new(0),
            next_key: AtomicUsize::new(0),
            connect_timeout: Duration::from_millis(spec.connect_timeout_ms.max(1)),
            read_timeout: Duration::from_millis(spec.read_timeout_ms.max(1)),
            health_check: spec.health_check,
            ca,
        })
    }

    fn next_key_index(&self) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        Some(self.next_key.fetch_add(1, Ordering::Relaxed) % self.keys.len())
    }

    /// The next provider key in round-robin, if the pool has any (the tests follow the rotation
    /// with it; requests take [`Pool::next_authorization`]).
    #[cfg(test)]
    pub fn next_key(&self) -> Option<&str> {
        self.next_key_index().map(|i| self.keys[i].as_str())
    }

    /// The next provider key's prepared `Authorization` value (sensitive), in the same rotation
    /// as `next_key`; for every request the gateway sends with a pool key.
    pub fn next_authorization(&self) -> Option<&HeaderValue> {
        self.next_key_index().map(|i| &self.bearers[i])
    }

    /// [`Pool::next_authorization`] as the proxy's upstream credential.
    pub fn next_credential(&self) -> Credential<'_> {
        self.next_authorization()
            .map_or(Credential::None, Credential::Prepared)
    }

    /// The next backend to try, skipping the ones in `tried` (a bit per backend). Backends
    /// that are healthy come first; when none is, an untried one is still returned, since
    /// trying beats refusing outright.
    pub fn pick(&self, tried: u64) -> Option<usize> {
        let n = self.backends.len().min(64);
        let start = self.next_backend.fetch_add(1, Ordering::Relaxed);
        let now = monotonic_ms();
        let untried = (0..n)
            .map(|i| (start + i) % n)
            .filter(|i| tried & (1 << i) == 0);
        let mut fallback = None;
        for i in untried {
            if self.backends[i].available(now) {
                return Some(i);
            }
            fallback.get_or_insert(i);
        }
        fallback
    }

    pub fn healthy_backends(&self) -> usize {
        self.backends.iter().filter(|b| b.is_healthy()).count()
    }

    pub fn record_failure(&self, index: usize) {
        if let Some(b) = self.backends.get(index) {
            let failures = b.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if failures >= FAILURES_BEFORE_SKIP {
                b.skip_until_ms.store(
                    monotonic_ms() + SKIP_FOR.as_millis() as u64,
                    Ordering::Relaxed,
                );
            }
        }
    }

    pub fn record_success(&self, index: usize) {
        if let Some(b) = self.backends.get(index) {
            if b.consecutive_failures.load(Ordering::Relaxed) != 0 {
                b.consecutive_failures.store(0, Ordering::Relaxed);
                b.skip_until_ms.store(0, Ordering::Relaxed);
            }
        }
    }

    pub fn set_health(&self, index: usize, healthy: bool) {
        if let Some(b) = self.backends.get(index) {
            b.healthy.store(healthy, Ordering::Relaxed);
        }
    }

    /// The roots this pool trusts, when its `ca_file` replaces the defaults.
    pub fn ca(&self) -> Option<Arc<CaType>> {
        self.ca.clone()
    }

    /// The peer for one attempt on backend `index`.
    pub async fn peer(&self, index: usize, resolver: &Resolver) -> std::io::Result<HttpPeer> {
        let backend = &self.backends[index];
        let addr = resolver.resolve(&backend.host, backend.port).await?;
        Ok(timed_peer(
            addr,
            backend.tls,
            &backend.host,
            self.connect_timeout,
            self.read_timeout,
            self.ca.clone(),
        ))
    }
}

/// A peer as every outgoing connection of the gateway is made: `connect` bounds the TCP and
/// TLS handshake, `read` the longest silence in either direction, and `ca` (when set) replaces
/// the default roots.
pub fn timed_peer(
    addr: SocketAddr,
    tls: bool,
    host: &str,
    connect: Duration,
    read: Duration,
    ca: Option<Arc<CaType>>,
) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, tls, host.to_string());
    peer.options.connection_timeout = Some(connect);
    peer.options.total_connection_timeout = Some(connect);
    peer.options.read_timeout = Some(read);
    peer.options.write_timeout = Some(read);
    peer.options.ca = ca;
    peer
}

/// A CA bundle trusted besides the system roots: Pingora takes a per-peer CA list in place of
/// its defaults, so the list is the system roots plus the file's certificates.
fn load_ca(path: &str) -> Result<Arc<CaType>, String> {
    let mut certs: Vec<WrappedX509> = Vec::new();
    // An unreadable system store still leaves the file's certificates to trust.
    let native = pingora::tls::load_native_certs().unwrap_or_default();
    for cert in native {
        certs.push(WrappedX509::new(
            cert.to_vec(),
            pingora::utils::tls::parse_x509,
        ));
    }
    let from_file = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if from_file.is_empty() {
        return Err(format!("{path}: no certificate found"));
    }
    for cert in from_file {
        certs.push(WrappedX509::new(
            cert.to_vec(),
            pingora::utils::tls::parse_x509,
        ));
    }
    Ok(Arc::from(certs.into_boxed_slice()))
}

/// Asynchronous name resolution with a short cache, shared by every pool.
#[derive(Default)]
pub struct Resolver {
    cache: RwLock<HashMap<(String, u16), (SocketAddr, Instant)>>,
}

impl Resolver {
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_string(), port);
        if let Some((addr, at)) = self.cache.read().ok().and_then(|c| c.get(&key).copied()) {
            if at.elapsed() < DNS_TTL {
                return Ok(addr);
            }
        }
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(key, (addr, Instant::now()));
        }
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(backends: &[&str]) -> Pool {
        let backends: Vec<String> = backends.iter().map(|s| s.to_string()).collect();
        Pool::new(PoolSpec {
            name: "p",
            backends: &backends,
            keys: &["k1".into(), "".into(), "k2".into()],
            connect_timeout_ms: 100,
            read_timeout_ms: 100,
            health_check: None,
            ca_file: None,
        })
        .unwrap()
    }

    #[test]
    fn base_path_rule() {
        let p = pool(&[
            "https://h/v1",
            "https://h",
            "http://h:8080/openai/v1",
            "http://h/x/",
        ]);
        let paths: Vec<String> = p
            .backends
            .iter()
            .map(|b| b.upstream_path("/v1/chat/completions"))
            .collect();
        assert_eq!(
            paths,
            [
                "/v1/chat/completions",
                "/v1/chat/completions",
                "/openai/v1/chat/completions",
                "/x/v1/chat/completions"
            ]
        );
        assert_eq!(p.backends[0].authority, "h");
        assert_eq!(p.backends[2].authority, "h:8080");
    }

    #[test]
    fn prepared_credentials_follow_the_key_rotation() {
        let p = pool(&["http://a"]);
        let mut seen = Vec::new();
        for _ in 0..2 {
            match p.next_credential() {
                Credential::Prepared(v) => {
                    assert!(v.is_sensitive());
                    seen.push(v.to_str().unwrap().to_string());
                }
                _ => panic!("a pool with keys gave no prepared credential"),
            }
            seen.push(p.next_key().unwrap().to_string());
        }
        assert_eq!(seen, ["Bearer k1", "k2", "Bearer k1", "k2"]);
    }

    #[test]
    fn a_provider_key_that_cannot_be_a_header_is_refused_without_showing_it() {
        let backends = ["http://a".to_string()];
        let err = Pool::new(PoolSpec {
            name: "p",
            backends: &backends,
            keys: &["sk-good".into(), "sk-secret\r\nx".into()],
            connect_timeout_ms: 100,
            read_timeout_ms: 100,
            health_check: None,
            ca_file: None,
        })
        .err()
        .unwrap();
        assert!(err.contains("provider key 2"), "{err}");
        assert!(!err.contains("sk-secret"), "{err}");
        let empty = Pool::new(PoolSpec {
            name: "p",
            backends: &backends,
            keys: &[],
            connect_timeout_ms: 100,
            read_timeout_ms: 100,
            health_check: None,
            ca_file: None,
        })
        .unwrap();
        assert!(matches!(empty.next_credential(), Credential::None));
    }

    #[test]
    fn round_robin_over_backends_and_keys_skipping_tried_and_failing() {
        let p = pool(&["http://a", "http://b", "http://c"]);
        let picks: Vec<usize> = (0..3).map(|_| p.pick(0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2]);
        assert_eq!(
            (p.next_key(), p.next_key(), p.next_key()),
            (Some("k1"), Some("k2"), Some("k1"))
        );
        assert_eq!(p.pick(0b011), Some(2));
        assert_eq!(p.pick(0b111), None);
        for _ in 0..FAILURES_BEFORE_SKIP {
            p.record_failure(1);
        }
        for _ in 0..6 {
            assert_ne!(p.pick(0), Some(1));
        }
        assert_eq!(
            p.pick(0b101),
            Some(1),
            "a skipped backend is still tried when it is the last"
        );
        p.record_success(1);
        assert!(p.backends[1].is_healthy());
    }
}
