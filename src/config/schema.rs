//! Reading the root mapping and the sections that say where Tollgate listens and where requests go:
//! `server`, `listen`, `admin`, `metrics`, `storage`, `upstreams`, `routes` and `hosts`, with the
//! listener collision check.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

use super::backend_url::split_host_port;
use super::walk::{index, kind, Cx, Obj};
use super::{
    AdminSection, Config, HealthCheck, HostSection, Listener, MetricsSection, Route, ServerSection,
    StorageSection, TlsFiles, UpstreamSection,
};

impl<'e> Cx<'e> {
    pub(super) fn config(&mut self, root: &Value) -> Config {
        let empty = Mapping::new();
        let map = match root {
            Value::Mapping(m) => m,
            Value::Null => &empty,
            other => {
                self.err(
                    "(root)",
                    format!("expected a mapping of sections, found {}", kind(other)),
                );
                return Config::default();
            }
        };
        let mut o = Obj {
            map,
            path: String::new(),
            known: Vec::new(),
        };
        let mut c = Config::default();
        if let Some((v, p)) = o.take("server") {
            c.server = self.server(v, &p);
        }
        if let Some((v, p)) = o.require(self, "listen") {
            c.listen = self.listeners(v, &p);
        }
        c.admin = o.take("admin").and_then(|(v, p)| self.admin(v, &p));
        c.metrics = o.take("metrics").and_then(|(v, p)| self.metrics(v, &p));
        if let Some((v, p)) = o.require(self, "storage") {
            c.storage = self.storage(v, &p);
        }
        if let Some((v, p)) = o.require(self, "upstreams") {
            c.upstreams = self.upstreams(v, &p);
        }
        let routes = o.take("routes");
        if let Some((v, p)) = routes {
            c.routes = self.routes(v, &p, &c.upstreams);
        }
        if c.routes.is_empty() && c.upstreams.len() > 1 {
            self.err(
                "routes",
                "required when there are several upstreams (which one gets what?)",
            );
        }
        if let Some((v, p)) = o.take("hosts") {
            c.hosts = self.hosts(v, &p);
        }
        if let Some((v, p)) = o.take("auth") {
            c.auth = self.auth(v, &p);
        }
        if let Some((v, p)) = o.take("limits") {
            c.limits = self.limits(v, &p);
        }
        if let Some((v, p)) = o.take("idempotency") {
            c.idempotency = self.idempotency(v, &p);
        }
        c.images = o
            .take("images")
            .and_then(|(v, p)| self.images(v, &p, &c.upstreams));
        c.models = o.take("models").and_then(|(v, p)| self.models(v, &p));
        c.oauth = o.take("oauth").and_then(|(v, p)| self.oauth(v, &p));
        c.cors = o.take("cors").and_then(|(v, p)| self.cors(v, &p));
        c.security_headers = o.bool_or(self, "security_headers", true);
        c.access_log = o.bool_or(self, "access_log", true);
        o.finish(self);
        self.check_collisions();
        c
    }

    /// Two listeners on one port collide when their IPs are equal or one is the wildcard of the same
    /// family (binding would fail with "address in use"). Port 0 never collides: the kernel picks.
    fn check_collisions(&mut self) {
        let binds = std::mem::take(&mut self.binds);
        for (i, (path, a)) in binds.iter().enumerate() {
            let clash = binds[..i].iter().find(|(_, b)| {
                a.port() != 0
                    && a.port() == b.port()
                    && a.is_ipv4() == b.is_ipv4()
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
            });
            if let Some((other, b)) = clash {
                self.err(path, format!("{a} collides with {other} ({b})"));
            }
        }
    }

    fn server(&mut self, v: &Value, path: &str) -> ServerSection {
        let d = ServerSection::default();
        let Some(mut o) = self.object(v, path) else {
            return d;
        };
        let threads = o.positive_or(self, "threads", d.threads as u64);
        let s = ServerSection {
            threads: usize::try_from(threads).unwrap_or(usize::MAX),
            pid_file: o.nonempty_or(self, "pid_file", &d.pid_file),
            upgrade_sock: o.nonempty_or(self, "upgrade_sock", &d.upgrade_sock),
            grace_period_seconds: o.u64_or(self, "grace_period_seconds", d.grace_period_seconds),
            graceful_shutdown_timeout_seconds: o.u64_or(
                self,
                "graceful_shutdown_timeout_seconds",
                d.graceful_shutdown_timeout_seconds,
            ),
        };
        o.finish(self);
        s
    }

    fn listeners(&mut self, v: &Value, path: &str) -> Vec<Listener> {
        let Some(items) = self.list(v, path) else {
            return Vec::new();
        };
        if items.is_empty() {
            self.err(path, "at least one listener is required");
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            let Some(mut o) = self.object(item, &p) else {
                continue;
            };
            let addr = o.req_string(self, "addr");
            if let Some(a) = &addr {
                self.bind_addr(&o.at("addr"), a);
            }
            let tls = o.take("tls").and_then(|(v, p)| {
                let mut t = self.object(v, &p)?;
                let files = TlsFiles {
                    cert: t.req_file(self, "cert").unwrap_or_default(),
                    key: t.req_file(self, "key").unwrap_or_default(),
                };
                t.finish(self);
                Some(files)
            });
            o.finish(self);
            out.push(Listener {
                addr: addr.unwrap_or_default(),
                tls,
            });
        }
        out
    }

    fn admin(&mut self, v: &Value, path: &str) -> Option<AdminSection> {
        let mut o = self.object(v, path)?;
        let listen = o.req_string(self, "listen");
        if let Some(l) = &listen {
            self.bind_addr(&o.at("listen"), l);
        }
        let listen = listen.unwrap_or_default();
        let token = o.req_string(self, "token");
        if let Some(t) = &token {
            let n = t.chars().count();
            if n < 16 {
                self.err(
                    &o.at("token"),
                    format!("must be at least 16 characters (it has {n})"),
                );
            } else if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.err(
                    &o.at("token"),
                    "must not contain whitespace or control characters",
                );
            }
        }
        o.finish(self);
        Some(AdminSection {
            listen,
            token: token.unwrap_or_default(),
        })
    }

    fn metrics(&mut self, v: &Value, path: &str) -> Option<MetricsSection> {
        let mut o = self.object(v, path)?;
        let listen = o.req_string(self, "listen");
        if let Some(l) = &listen {
            self.bind_addr(&o.at("listen"), l);
        }
        let listen = listen.unwrap_or_default();
        o.finish(self);
        Some(MetricsSection { listen })
    }

    fn storage(&mut self, v: &Value, path: &str) -> StorageSection {
        let d = StorageSection::default();
        let Some(mut o) = self.object(v, path) else {
            return d;
        };
        let p = o.req_string(self, "path");
        if p.as_deref() == Some("") {
            self.err(&o.at("path"), "must not be empty");
        }
        let s = StorageSection {
            path: PathBuf::from(p.unwrap_or_default()),
            cache_mb: o.u64_or(self, "cache_mb", d.cache_mb),
        };
        o.finish(self);
        s
    }

    fn upstreams(&mut self, v: &Value, path: &str) -> BTreeMap<String, UpstreamSection> {
        let mut out = BTreeMap::new();
        let entries = self.named(v, path);
        if entries.is_empty() && v.is_mapping() {
            self.err(path, "at least one upstream is required");
        }
        for (name, val, p) in entries {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                self.err(&p, "an upstream name is letters, digits, `_`, `-` and `.`");
            }
            // Inserted even when broken, so routes naming it do not report a second, misleading error.
            out.insert(name.to_string(), self.upstream(val, &p));
        }
        out
    }

    fn upstream(&mut self, v: &Value, path: &str) -> UpstreamSection {
        let d = UpstreamSection::default();
        let Some(mut o) = self.object(v, path) else {
            return d;
        };
        let mut backends = Vec::new();
        if let Some((bv, bp)) = o.require(self, "backends") {
            if let Some(list) = self.string_list(bv, &bp) {
                if list.is_empty() && bv.as_sequence().is_some_and(|s| s.is_empty()) {
                    self.err(&bp, "at least one backend is required");
                }
                for (i, b) in list.iter().enumerate() {
                    self.url(&index(&bp, i), b);
                }
                backends = list;
            }
        }
        let keys = o
            .take("keys")
            .map(|(kv, kp)| self.key_list(kv, &kp))
            .unwrap_or_default();
        let connect_timeout_ms = o.positive_or(self, "connect_timeout_ms", d.connect_timeout_ms);
        let read_timeout_ms = o.positive_or(self, "read_timeout_ms", d.read_timeout_ms);
        let health_check = o.take("health_check").and_then(|(hv, hp)| {
            let mut h = self.object(hv, &hp)?;
            let path = h.req_string(self, "path");
            if path.as_ref().is_some_and(|p| !p.starts_with('/')) {
                self.err(&h.at("path"), "must start with `/`");
            }
            let hc = HealthCheck {
                path: path.unwrap_or_default(),
                interval_s: h.positive_or(self, "interval_s", 15),
            };
            h.finish(self);
            Some(hc)
        });
        let ca_file = o.file(self, "ca_file");
        o.finish(self);
        UpstreamSection {
            backends,
            keys,
            connect_timeout_ms,
            read_timeout_ms,
            health_check,
            ca_file,
        }
    }

    fn routes(
        &mut self,
        v: &Value,
        path: &str,
        upstreams: &BTreeMap<String, UpstreamSection>,
    ) -> Vec<Route> {
        let Some(items) = self.list(v, path) else {
            return Vec::new();
        };
        let mut out: Vec<Route> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            let Some(mut o) = self.object(item, &p) else {
                continue;
            };
            let prefix = o.req_string(self, "prefix");
            if prefix.as_ref().is_some_and(|p| !p.starts_with('/')) {
                self.err(&o.at("prefix"), "must start with `/`");
            }
            let prefix = prefix.unwrap_or_default();
            let upstream = o.req_string(self, "upstream");
            if let Some(u) = upstream.as_ref().filter(|u| !upstreams.contains_key(*u)) {
                self.err(&o.at("upstream"), format!("no upstream named `{u}`"));
            }
            let upstream = upstream.unwrap_or_default();
            // An earlier prefix that covers this one whole path segments at a time leaves it unreachable,
            // whether matching is by string or by segment: almost always an ordering mistake.
            if let Some(j) = out.iter().position(|r| {
                !r.prefix.is_empty()
                    && prefix.starts_with(&r.prefix)
                    && (prefix.len() == r.prefix.len()
                        || r.prefix.ends_with('/')
                        || prefix[r.prefix.len()..].starts_with('/'))
            }) {
                self.err(
                    &o.at("prefix"),
                    format!(
                        "never matches: {}[{j}] (`{}`) comes first",
                        path, out[j].prefix
                    ),
                );
            }
            o.finish(self);
            out.push(Route { prefix, upstream });
        }
        out
    }

    fn hosts(&mut self, v: &Value, path: &str) -> BTreeMap<String, HostSection> {
        let mut out = BTreeMap::new();
        for (name, val, p) in self.named(v, path) {
            let host = match split_host_port(name) {
                Ok((h, port)) => port.map_or(h.clone(), |n| format!("{h}:{n}")),
                Err(e) => {
                    self.err(&p, format!("not a host[:port]: {e}"));
                    continue;
                }
            };
            let section = if val.is_null() {
                HostSection::default()
            } else {
                let Some(mut o) = self.object(val, &p) else {
                    continue;
                };
                let origin = o.string(self, "origin");
                if let Some(u) = &origin {
                    self.url(&o.at("origin"), u);
                }
                let keys = o
                    .take("keys")
                    .map(|(kv, kp)| self.key_list(kv, &kp))
                    .unwrap_or_default();
                let ca_file = o.file(self, "ca_file");
                o.finish(self);
                HostSection {
                    origin,
                    keys,
                    ca_file,
                }
            };
            if out.insert(host.clone(), section).is_some() {
                self.err(&p, format!("`{host}` is listed twice"));
            }
        }
        out
    }
}
