//! The configuration file: YAML → typed [`Config`], `${VAR}` interpolation, and validation that names the
//! YAML path of every problem (SPEC section 2).
//!
//! # Why a hand-written walker
//! `tollgate check` must list *every* problem at once, each at its own path (`upstreams.openai.bakends`,
//! `listen[1].tls.cert`). `#[derive(Deserialize)]` stops at the first error and loses most paths, so the file
//! is parsed into a [`serde_yaml::Value`] tree and walked by small schema-aware functions that push each
//! problem into a list and carry on. [`Config::parse`] succeeds only when that list stays empty, and it
//! refuses everything `serve` would refuse (missing TLS files included), so a green `check` means a start.
//!
//! # Interpolation
//! `${VAR}` and `${VAR:-default}` are replaced *after* YAML parsing and only inside string values, so comments
//! are never touched and no value can change the structure or the type of anything (a numeric field stays
//! a YAML integer: `threads: ${N}` is refused as a string). Mapping keys are not interpolated.
//! - `${VAR}`: the variable's value (an empty value stays empty); unset is an error naming VAR and the path.
//! - `${VAR:-default}`: like the shell, the default is used when VAR is unset *or empty*; the default may be
//!   empty (`${VAR:-}`) and cannot contain `}`.
//! - `$${` is an escape for a literal `${`. A `$` not followed by `{` is kept as it is.
//! - The substituted value is never scanned again.
//! - In `keys` lists (upstreams and hosts) an item that interpolates to the empty string is dropped, so
//!   `keys: [${OPENAI_API_KEY:-}]` means "no key" when the variable is unset. A literal `""` is an error.
//! - `${…}` may stand unquoted inside flow lists and mappings (`keys: [${KEY}]`, as the SPEC writes it), which
//!   plain YAML would refuse (see `shield` below). A default containing `,` `]` `}` `#` or quotes needs quoting.
//!
//! # Paths
//! Mapping keys are joined with `.`, sequence items get `[i]`: `routes[0].upstream`. A key that contains `.`,
//! `[`, `]`, `"`, whitespace, or is empty is quoted: `hosts."api.groq.com".keys[0]`.
//!
//! # Other choices
//! - `null` for an optional section or field is the same as leaving it out (`models: null`, `ca_file: null`).
//! - Numbers must be YAML integers; negative numbers, fractions and strings are refused. Strings must be YAML
//!   strings: an unquoted number where text is expected (a numeric secret, say) is refused rather than
//!   silently converted, because YAML would already have dropped leading zeros.
//! - YAML anchors, aliases and `<<` merge keys work; a file must hold exactly one document.
//! - Relative file paths (TLS files, `ca_file`, `storage.path`) are relative to the working directory.
//! - Listen addresses must be literal `IP:PORT` (`0.0.0.0:8080`, `[::]:8080`); host names are refused so that
//!   nothing is resolved at start.
//! - Error messages never contain secret values, and neither does any `Debug` output of these types.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

// ---------------------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------------------

/// The whole configuration file, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSection,
    /// Public gateway listeners; at least one.
    pub listen: Vec<Listener>,
    /// Absent = no admin API.
    pub admin: Option<AdminSection>,
    /// Absent = no metrics endpoint.
    pub metrics: Option<MetricsSection>,
    pub storage: StorageSection,
    /// Named backend pools; at least one.
    pub upstreams: BTreeMap<String, UpstreamSection>,
    /// First matching prefix wins. May be empty only when there is exactly one upstream (which then gets
    /// every request).
    pub routes: Vec<Route>,
    /// `X-Host-Final` allow-list; keys are lowercased `host[:port]`.
    pub hosts: BTreeMap<String, HostSection>,
    pub auth: AuthSection,
    pub limits: LimitsSection,
    pub idempotency: IdempotencySection,
    pub images: Option<ImagesSection>,
    /// When set, `GET /v1/models` is answered locally from this list.
    pub models: Option<Vec<ModelEntry>>,
    pub oauth: Option<OauthSection>,
    /// Absent = allow every origin.
    pub cors: Option<CorsSection>,
    pub security_headers: bool,
    /// One JSON line per request on stdout.
    pub access_log: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerSection::default(),
            listen: Vec::new(),
            admin: None,
            metrics: None,
            storage: StorageSection::default(),
            upstreams: BTreeMap::new(),
            routes: Vec::new(),
            hosts: BTreeMap::new(),
            auth: AuthSection::default(),
            limits: LimitsSection::default(),
            idempotency: IdempotencySection::default(),
            images: None,
            models: None,
            oauth: None,
            cors: None,
            security_headers: true,
            access_log: true,
        }
    }
}

/// Handed to Pingora's `ServerConf`.
#[derive(Debug, Clone)]
pub struct ServerSection {
    /// Worker threads per service; at least 1.
    pub threads: usize,
    pub pid_file: String,
    /// Unix socket over which `serve -u` takes the listening sockets from the running instance.
    pub upgrade_sock: String,
    /// Seconds the old process keeps serving after an upgrade or SIGTERM before it stops accepting.
    pub grace_period_seconds: u64,
    /// Seconds in-flight requests get to finish once the grace period is over.
    pub graceful_shutdown_timeout_seconds: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            threads: 2,
            pid_file: "/tmp/tollgate.pid".to_string(),
            upgrade_sock: "/tmp/tollgate_upgrade.sock".to_string(),
            grace_period_seconds: 30,
            graceful_shutdown_timeout_seconds: 10,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Listener {
    /// Literal `IP:PORT`.
    pub addr: String,
    pub tls: Option<TlsFiles>,
}

/// PEM files; both were checked to exist.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
}

#[derive(Clone, Default)]
pub struct AdminSection {
    pub listen: String,
    /// Bearer token for the admin API; at least 16 characters.
    pub token: String,
}

#[derive(Debug, Clone, Default)]
pub struct MetricsSection {
    pub listen: String,
}

#[derive(Debug, Clone)]
pub struct StorageSection {
    /// Directory of the sled database and image files. Required (the default is empty).
    pub path: PathBuf,
    /// sled page cache, MiB.
    pub cache_mb: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            path: PathBuf::new(),
            cache_mb: 64,
        }
    }
}

#[derive(Clone)]
pub struct UpstreamSection {
    /// Each parses with [`parse_backend_url`]; at least one.
    pub backends: Vec<String>,
    /// Injected as `Authorization: Bearer`, round-robin; may be empty (then nothing is injected).
    pub keys: Vec<String>,
    pub connect_timeout_ms: u64,
    /// Longest silence between two upstream bytes.
    pub read_timeout_ms: u64,
    pub health_check: Option<HealthCheck>,
    /// PEM bundle trusted besides the system roots; checked to exist.
    pub ca_file: Option<String>,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            backends: Vec::new(),
            keys: Vec::new(),
            connect_timeout_ms: 5000,
            read_timeout_ms: 600_000,
            health_check: None,
            ca_file: None,
        }
    }
}

/// Active health check: `GET {backend}{path}` every `interval_s` seconds.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// Starts with `/`.
    pub path: String,
    pub interval_s: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/v1/models".to_string(),
            interval_s: 15,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Route {
    /// Starts with `/`.
    pub prefix: String,
    /// Names an entry of `upstreams`.
    pub upstream: String,
}

#[derive(Clone, Default)]
pub struct HostSection {
    /// Where requests for this host go; default `https://HOST[:PORT]`. Parses with [`parse_backend_url`].
    pub origin: Option<String>,
    pub keys: Vec<String>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuthSection {
    /// Prefix of the keys Tollgate issues: 1..=32 characters of `[A-Za-z0-9_-]`.
    pub key_prefix: String,
    pub byok: Byok,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            key_prefix: "sk-tg-".to_string(),
            byok: Byok::Off,
        }
    }
}

/// Bring-your-own-key: what `X-Upstream-Key` does (SPEC 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Byok {
    /// Ignored and stripped.
    #[default]
    Off,
    /// Used when present.
    Optional,
    /// Missing = 400 `upstream_key_required`.
    Required,
}

/// Defaults for every key. 0 = unlimited for the seven window/budget fields.
#[derive(Debug, Clone)]
pub struct LimitsSection {
    pub requests_per_minute: u64,
    pub requests_per_hour: u64,
    pub requests_per_day: u64,
    pub tokens_per_minute: u64,
    pub tokens_per_day: u64,
    pub images_per_day: u64,
    pub max_concurrent: u64,
    /// Request body cap in bytes; must be > 0 (there is no "unlimited" here).
    pub max_body_bytes: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            requests_per_minute: 0,
            requests_per_hour: 0,
            requests_per_day: 0,
            tokens_per_minute: 0,
            tokens_per_day: 0,
            images_per_day: 0,
            max_concurrent: 0,
            max_body_bytes: 33_554_432,
        }
    }
}

impl LimitsSection {
    /// The seven window/budget fields, each `Some` (a 0 stays `Some(0)`, meaning unlimited), ready to be the
    /// fallback under per-key and per-user [`LimitValues`].
    pub fn values(&self) -> LimitValues {
        LimitValues {
            requests_per_minute: Some(self.requests_per_minute),
            requests_per_hour: Some(self.requests_per_hour),
            requests_per_day: Some(self.requests_per_day),
            tokens_per_minute: Some(self.tokens_per_minute),
            tokens_per_day: Some(self.tokens_per_day),
            images_per_day: Some(self.images_per_day),
            max_concurrent: Some(self.max_concurrent),
        }
    }
}

/// Limits that may each be set or not: per key, per user, `oauth.new_user_limits`, and the admin API's
/// `limits` objects (same field names as the config's `limits` section). `None` = not set here (fall back);
/// `Some(0)` = unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
}

impl LimitValues {
    /// Field names, in the order the config and the admin API use them.
    pub const FIELDS: [&'static str; 7] = [
        "requests_per_minute",
        "requests_per_hour",
        "requests_per_day",
        "tokens_per_minute",
        "tokens_per_day",
        "images_per_day",
        "max_concurrent",
    ];

    /// Field-by-field override: each field of `self` that is set wins, the others come from `fallback`
    /// (`key_limits.or(&config.limits.values())`).
    pub fn or(&self, fallback: &LimitValues) -> LimitValues {
        LimitValues {
            requests_per_minute: self.requests_per_minute.or(fallback.requests_per_minute),
            requests_per_hour: self.requests_per_hour.or(fallback.requests_per_hour),
            requests_per_day: self.requests_per_day.or(fallback.requests_per_day),
            tokens_per_minute: self.tokens_per_minute.or(fallback.tokens_per_minute),
            tokens_per_day: self.tokens_per_day.or(fallback.tokens_per_day),
            images_per_day: self.images_per_day.or(fallback.images_per_day),
            max_concurrent: self.max_concurrent.or(fallback.max_concurrent),
        }
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<u64>> {
        Some(match name {
            "requests_per_minute" => &mut self.requests_per_minute,
            "requests_per_hour" => &mut self.requests_per_hour,
            "requests_per_day" => &mut self.requests_per_day,
            "tokens_per_minute" => &mut self.tokens_per_minute,
            "tokens_per_day" => &mut self.tokens_per_day,
            "images_per_day" => &mut self.images_per_day,
            "max_concurrent" => &mut self.max_concurrent,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct IdempotencySection {
    /// How long a completed response is replayable, seconds; > 0.
    pub ttl_s: u64,
    /// An in-flight record older than this is dropped, seconds; > 0.
    pub inflight_timeout_s: u64,
    /// Larger responses are not stored (0 = none are).
    pub max_response_bytes: u64,
}

impl Default for IdempotencySection {
    fn default() -> Self {
        IdempotencySection {
            ttl_s: 86_400,
            inflight_timeout_s: 600,
            max_response_bytes: 16_777_216,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImagesSection {
    /// Names an entry of `upstreams`.
    pub upstream: String,
    pub default_model: String,
    /// `WxH`, each 64..=4096; see [`ImagesSection::default_dimensions`].
    pub default_size: String,
    pub max_cache_bytes: u64,
    /// Store b64 images of `/v1/images/*` responses and return URLs instead.
    pub store_generations: bool,
    /// Base of returned image URLs, without a trailing slash.
    pub public_url: Option<String>,
    pub hosting: Option<HostingSection>,
}

impl Default for ImagesSection {
    fn default() -> Self {
        ImagesSection {
            upstream: String::new(),
            default_model: "gpt-image-1".to_string(),
            default_size: "1024x1024".to_string(),
            max_cache_bytes: 10_737_418_240,
            store_generations: false,
            public_url: None,
            hosting: None,
        }
    }
}

impl ImagesSection {
    /// `default_size` as (width, height). Validation guarantees it parses; (1024, 1024) otherwise.
    pub fn default_dimensions(&self) -> (u32, u32) {
        parse_size(&self.default_size).unwrap_or((1024, 1024))
    }
}

/// Where `/prompt` images are uploaded so that requests can be answered with a 302 there.
#[derive(Clone, Default)]
pub struct HostingSection {
    pub provider: HostingProvider,
    /// API token; required for `smms`.
    pub key: Option<String>,
    /// Full upload endpoint; required for `cloudflare_imgbed` (it is self-hosted).
    pub url: Option<String>,
    pub auth_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostingProvider {
    #[default]
    Smms,
    Picgo,
    CloudflareImgbed,
}

impl HostingProvider {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HostingProvider::Smms => "smms",
            HostingProvider::Picgo => "picgo",
            HostingProvider::CloudflareImgbed => "cloudflare_imgbed",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ModelEntry {
    pub id: String,
    /// Default `tollgate`.
    pub owned_by: String,
}

#[derive(Clone)]
pub struct OauthSection {
    /// Public base URL without a trailing slash; callbacks go to `{redirect_base}/auth/{name}/callback`.
    pub redirect_base: String,
    /// HMAC key of the `state` parameter; at least 32 characters.
    pub state_secret: String,
    /// By the name used in `/auth/{name}/…` and in user names `{name}:{subject}`.
    pub providers: BTreeMap<String, OauthProvider>,
    /// Patterns like `*@example.com`; empty = every verified address.
    pub allowed_emails: Vec<String>,
    /// Patterns like `http://127.0.0.1:*/*` where a login may send the key back.
    pub allowed_redirects: Vec<String>,
    pub new_user_limits: Option<LimitValues>,
    /// Sign-in keys beyond this revoke the oldest; at least 1.
    pub max_keys_per_user: u32,
}

impl Default for OauthSection {
    fn default() -> Self {
        OauthSection {
            redirect_base: String::new(),
            state_secret: String::new(),
            providers: BTreeMap::new(),
            allowed_emails: Vec::new(),
            allowed_redirects: Vec::new(),
            new_user_limits: None,
            max_keys_per_user: 5,
        }
    }
}

#[derive(Clone, Default)]
pub struct OauthProvider {
    /// YAML field `type`.
    pub kind: OauthKind,
    pub client_id: String,
    pub client_secret: String,
    /// Required for `oidc`: discovery at `{issuer}/.well-known/openid-configuration`.
    pub issuer: Option<String>,
    /// GitHub Enterprise: web base (default `https://github.com`).
    pub base_url: Option<String>,
    /// GitHub Enterprise: API base (default `https://api.github.com`).
    pub api_url: Option<String>,
    /// Default: the provider's usual identity + e-mail scopes.
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OauthKind {
    #[default]
    Github,
    Oidc,
}

#[derive(Debug, Clone)]
pub struct CorsSection {
    /// `*` or origins `scheme://host[:port]`.
    pub allow_origins: Vec<String>,
    /// `Access-Control-Max-Age` of preflight answers, seconds.
    pub max_age_s: u64,
}

impl Default for CorsSection {
    fn default() -> Self {
        CorsSection {
            allow_origins: vec!["*".to_string()],
            max_age_s: 86_400,
        }
    }
}

/// A backend or origin URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    pub tls: bool,
    /// Lowercased; an IPv6 address keeps its brackets (`[::1]`) so `format!("{host}:{port}")` and the
    /// `Host` header work unchanged.
    pub host: String,
    /// Given, or 80/443 from the scheme.
    pub port: u16,
    /// `""` or `/…` without a trailing slash. Kept as written: `/v1` handling is the gateway's.
    pub base_path: String,
}

impl BackendUrl {
    /// `host:port`, for connecting.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `host` or `host:port` when the port is not the scheme's default: the `Host` header value.
    pub fn authority(&self) -> String {
        if self.port == if self.tls { 443 } else { 80 } {
            self.host.clone()
        } else {
            self.addr()
        }
    }
}

/// One problem in the configuration, at its YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------------------
// Debug without secrets
// ---------------------------------------------------------------------------------------------------------

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Stands in for a list of secrets: only how many there are.
struct RedactedList(usize);

impl fmt::Debug for RedactedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} redacted]", self.0)
    }
}

fn redact_opt(secret: &Option<String>) -> Option<Redacted> {
    secret.as_ref().map(|_| Redacted)
}

impl fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSection")
            .field("listen", &self.listen)
            .field("token", &Redacted)
            .finish()
    }
}

impl fmt::Debug for UpstreamSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSection")
            .field("backends", &self.backends)
            .field("keys", &RedactedList(self.keys.len()))
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("read_timeout_ms", &self.read_timeout_ms)
            .field("health_check", &self.health_check)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl fmt::Debug for HostSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSection")
            .field("origin", &self.origin)
            .field("keys", &RedactedList(self.keys.len()))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl fmt::Debug for HostingSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostingSection")
            .field("provider", &self.provider)
            .field("key", &redact_opt(&self.key))
            .field("url", &self.url)
            .field("auth_code", &redact_opt(&self.auth_code))
            .finish()
    }
}

impl fmt::Debug for OauthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OauthSection")
            .field("redirect_base", &self.redirect_base)
            .field("state_secret", &Redacted)
            .field("providers", &self.providers)
            .field("allowed_emails", &self.allowed_emails)
            .field("allowed_redirects", &self.allowed_redirects)
            .field("new_user_limits", &self.new_user_limits)
            .field("max_keys_per_user", &self.max_keys_per_user)
            .finish()
    }
}

impl fmt::Debug for OauthProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OauthProvider")
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("client_secret", &Redacted)
            .field("issuer", &self.issuer)
            .field("base_url", &self.base_url)
            .field("api_url", &self.api_url)
            .field("scopes", &self.scopes)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------------------

impl Config {
    /// Reads and parses `path`, interpolating from the process environment.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                path: path.display().to_string(),
                message: format!("cannot read the file: {e}"),
            }]
        })?;
        Config::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses YAML text; `env` answers `${VAR}` look-ups. Returns every problem found, in walking order.
    pub fn parse(
        yaml: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let shielded = shield(yaml);
        let mut root: Value = serde_yaml::from_str(shielded.as_deref().unwrap_or(yaml))
            .map_err(|e| vec![yaml_error(&e)])?;
        if shielded.is_some() {
            unshield(&mut root);
        }
        root.apply_merge().map_err(|e| vec![yaml_error(&e)])?;
        let mut cx = Cx {
            env,
            errors: Vec::new(),
            binds: Vec::new(),
        };
        let config = cx.config(&root);
        if cx.errors.is_empty() {
            Ok(config)
        } else {
            Err(cx.errors)
        }
    }

    /// One line for `tollgate check`.
    pub fn summary(&self) -> String {
        let backends: usize = self.upstreams.values().map(|u| u.backends.len()).sum();
        let mut s = format!(
            "ok: {}, {} ({}), {}, {}",
            plural(self.listen.len(), "listener"),
            plural(self.upstreams.len(), "upstream"),
            plural(backends, "backend"),
            plural(self.routes.len(), "route"),
            plural(self.hosts.len(), "host"),
        );
        match &self.admin {
            Some(a) => s.push_str(&format!(", admin on {}", a.listen)),
            None => s.push_str(", no admin API"),
        }
        if let Some(m) = &self.metrics {
            s.push_str(&format!(", metrics on {}", m.listen));
        }
        if let Some(i) = &self.images {
            s.push_str(&format!(", images via {}", i.upstream));
        }
        if let Some(o) = &self.oauth {
            let names: Vec<&str> = o.providers.keys().map(String::as_str).collect();
            s.push_str(&format!(", sign-in with {}", names.join("+")));
        }
        s
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn yaml_error(e: &serde_yaml::Error) -> ConfigError {
    let path = match e.location() {
        Some(l) => format!("line {}, column {}", l.line(), l.column()),
        None => "(document)".to_string(),
    };
    let message = format!("invalid YAML: {e}")
        .replace(SHIELD_OPEN, "{")
        .replace(SHIELD_CLOSE, "}");
    ConfigError { path, message }
}

/// Stand-ins for the braces of `${…}` while the YAML parser runs (Unicode private-use characters).
const SHIELD_OPEN: char = '\u{E000}';
const SHIELD_CLOSE: char = '\u{E001}';

/// `keys: [${OPENAI_API_KEY}]`, as the SPEC writes it, is not valid YAML: inside a flow collection `{` and
/// `}` are indicators, so the parser stops at the `{`. Before parsing, the braces of each `${…}` become
/// private-use characters that YAML treats as plain text (one character each, so error columns stay right);
/// [`unshield`] turns them back in every string afterwards. This only turns would-be syntax errors into the
/// obvious reading: wherever `${…}` was already valid (block values, quoted strings, comments) the parsed
/// text is the same. Interpolation itself still happens after parsing. `None` = nothing to do, or the text
/// already holds a stand-in character (then it is parsed unchanged).
fn shield(yaml: &str) -> Option<String> {
    if !yaml.contains("${") || yaml.contains([SHIELD_OPEN, SHIELD_CLOSE]) {
        return None;
    }
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        // Only a well-formed reference on one line is shielded; anything else is left for the YAML parser
        // (and then the interpolation) to judge as written.
        match after.find('}').filter(|&end| is_reference(&after[..end])) {
            Some(end) => {
                out.push_str(&rest[..=i]);
                out.push(SHIELD_OPEN);
                out.push_str(&after[..end]);
                out.push(SHIELD_CLOSE);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[..i + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// `[A-Za-z_][A-Za-z0-9_]*`, as in the shell.
fn is_var_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `NAME` or `NAME:-default`, with a default free of quotes and line breaks.
fn is_reference(inner: &str) -> bool {
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, d),
        None => (inner, ""),
    };
    is_var_name(name) && !default.contains(['\'', '"', '\n', '\r'])
}

fn unshield(v: &mut Value) {
    match v {
        Value::String(s) if s.contains([SHIELD_OPEN, SHIELD_CLOSE]) => {
            *s = s.replace(SHIELD_OPEN, "{").replace(SHIELD_CLOSE, "}");
        }
        Value::Sequence(items) => items.iter_mut().for_each(unshield),
        Value::Mapping(map) => {
            for (mut k, mut val) in std::mem::take(map) {
                unshield(&mut k);
                unshield(&mut val);
                map.insert(k, val);
            }
        }
        Value::Tagged(t) => unshield(&mut t.value),
        _ => {}
    }
}

/// Takes a backend or origin URL apart: `http(s)://host[:port][/base-path]`, nothing else.
pub fn parse_backend_url(s: &str) -> Result<BackendUrl, String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a URL must not contain whitespace".to_string());
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("`{s}` is not a URL like https://api.openai.com"));
    };
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("unsupported scheme `{other}`: use http or https")),
    };
    if rest.contains(['?', '#']) {
        return Err("a backend URL must not have a query or fragment".to_string());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(
            "a backend URL must not contain user info; put credentials in `keys`".to_string(),
        );
    }
    let (host, port) = split_host_port(authority)?;
    Ok(BackendUrl {
        tls,
        host,
        port: port.unwrap_or(if tls { 443 } else { 80 }),
        base_path: path.trim_end_matches('/').to_string(),
    })
}

/// `host[:port]` → (lowercased host, port). IPv6 needs brackets and keeps them.
fn split_host_port(a: &str) -> Result<(String, Option<u16>), String> {
    if a.is_empty() {
        return Err("the host is missing".to_string());
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err("unclosed `[` in an IPv6 address".to_string());
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{ip}` is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("unexpected `{after}` after the IPv6 address")),
            },
        };
        (format!("[{}]", ip.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err("an IPv6 address needs brackets, like [::1]:8080".to_string());
        }
        check_hostname(host)?;
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && !p.starts_with('+') => Some(n),
            _ => return Err(format!("`{p}` is not a port (1-65535)")),
        },
    };
    Ok((host, port))
}

/// A DNS name or IPv4 address: labels of `[A-Za-z0-9_-]`, 1..=63 long, 253 in all.
fn check_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("the host is missing".to_string());
    }
    let ok = h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{h}` is not a valid host name"))
    }
}

/// `WxH` with both sides 64..=4096.
fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    let side = |v: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|n| (64..=4096).contains(n) && !v.starts_with('+'))
    };
    Some((side(w)?, side(h)?))
}

// ---------------------------------------------------------------------------------------------------------
// Interpolation
// ---------------------------------------------------------------------------------------------------------

/// Replaces `${VAR}` / `${VAR:-default}` and unescapes `$${`. Returns every problem in the string.
fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut errors = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                errors.push("unclosed `${` (write `$${` for a literal `${`)".to_string());
                return Err(errors);
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                errors.push(format!(
                    "`${{{inner}}}` is not `${{VAR}}` or `${{VAR:-default}}` (write `$${{` for a literal `${{`)"
                ));
            } else {
                match (env(name), default) {
                    (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => errors.push(format!("environment variable {name} is not set")),
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------------------
// The walker
// ---------------------------------------------------------------------------------------------------------

fn join(path: &str, key: &str) -> String {
    let needs_quotes = key.is_empty()
        || key
            .chars()
            .any(|c| matches!(c, '.' | '[' | ']' | '"') || c.is_whitespace());
    let key = if needs_quotes {
        format!("\"{key}\"")
    } else {
        key.to_string()
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// How a value looks, for "expected X, found Y".
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(_) => "a boolean".to_string(),
        Value::Number(n) if n.is_f64() => "a number with a fraction".to_string(),
        Value::Number(_) => "a number (quote it to make it a string)".to_string(),
        Value::String(_) => "a string".to_string(),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Walking state: the environment and everything found wrong so far.
struct Cx<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    /// Every listening address with its path, for the collision check at the end.
    binds: Vec<(String, SocketAddr)>,
}

/// A mapping being read: remembers which keys the schema knows, so leftovers are reported as unknown.
struct Obj<'v> {
    map: &'v Mapping,
    path: String,
    known: Vec<&'static str>,
}

impl<'v> Obj<'v> {
    fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`; absent and `null` are both `None`.
    fn take(&mut self, key: &'static str) -> Option<(&'v Value, String)> {
        self.known.push(key);
        self.map
            .get(key)
            .filter(|v| !v.is_null())
            .map(|v| (v, join(&self.path, key)))
    }

    fn require(&mut self, cx: &mut Cx, key: &'static str) -> Option<(&'v Value, String)> {
        let found = self.take(key);
        if found.is_none() {
            cx.err(&self.at(key), "required field is missing");
        }
        found
    }

    fn string(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        let (v, p) = self.take(key)?;
        cx.string(v, &p)
    }

    fn req_string(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        let (v, p) = self.require(cx, key)?;
        cx.string(v, &p)
    }

    fn string_or(&mut self, cx: &mut Cx, key: &'static str, default: &str) -> String {
        self.string(cx, key).unwrap_or_else(|| default.to_string())
    }

    /// A string that must not be empty once interpolated.
    fn nonempty_or(&mut self, cx: &mut Cx, key: &'static str, default: &str) -> String {
        let s = self.string_or(cx, key, default);
        if s.is_empty() {
            cx.err(&self.at(key), "must not be empty");
        }
        s
    }

    fn u64(&mut self, cx: &mut Cx, key: &'static str) -> Option<u64> {
        let (v, p) = self.take(key)?;
        cx.u64(v, &p)
    }

    fn u64_or(&mut self, cx: &mut Cx, key: &'static str, default: u64) -> u64 {
        self.u64(cx, key).unwrap_or(default)
    }

    /// A count or duration for which 0 makes no sense.
    fn positive_or(&mut self, cx: &mut Cx, key: &'static str, default: u64) -> u64 {
        let n = self.u64_or(cx, key, default);
        if n == 0 {
            cx.err(&self.at(key), "must be greater than 0");
        }
        n
    }

    fn bool_or(&mut self, cx: &mut Cx, key: &'static str, default: bool) -> bool {
        match self.take(key) {
            Some((Value::Bool(b), _)) => *b,
            Some((v, p)) => {
                cx.err(&p, format!("expected true or false, found {}", kind(v)));
                default
            }
            None => default,
        }
    }

    fn string_list(&mut self, cx: &mut Cx, key: &'static str) -> Option<Vec<String>> {
        let (v, p) = self.take(key)?;
        cx.string_list(v, &p)
    }

    /// A file path that must exist when given.
    fn file(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        let f = self.string(cx, key)?;
        cx.check_file(&self.at(key), &f);
        Some(f)
    }

    /// A required file path that must exist.
    fn req_file(&mut self, cx: &mut Cx, key: &'static str) -> Option<String> {
        let (v, p) = self.require(cx, key)?;
        let f = cx.string(v, &p)?;
        cx.check_file(&p, &f);
        Some(f)
    }

    /// Reports the keys nobody asked for, with a suggestion when one is close to a known key.
    fn finish(self, cx: &mut Cx) {
        for k in self.map.keys() {
            match k.as_str() {
                Some(name) if self.known.contains(&name) => {}
                Some(name) => {
                    // A near miss (`bakends`) or a truncation (`grace` for `grace_period_seconds`).
                    let close = |known: &&&str| {
                        edit_distance(known, name) <= 2
                            || (name.len() >= 4 && known.starts_with(name))
                    };
                    let hint = self
                        .known
                        .iter()
                        .filter(close)
                        .min_by_key(|known| edit_distance(known, name))
                        .map(|known| format!(" (did you mean `{known}`?)"))
                        .unwrap_or_default();
                    cx.err(&join(&self.path, name), format!("unknown key{hint}"));
                }
                None => cx.err(&self.path_or_root(), format!("unknown key {}", kind(k))),
            }
        }
    }

    fn path_or_root(&self) -> String {
        if self.path.is_empty() {
            "(root)".to_string()
        } else {
            self.path.clone()
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl<'e> Cx<'e> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn object<'v>(&mut self, v: &'v Value, path: &str) -> Option<Obj<'v>> {
        match v {
            Value::Mapping(map) => Some(Obj {
                map,
                path: path.to_string(),
                known: Vec::new(),
            }),
            other => {
                self.err(path, format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }

    /// A mapping whose keys are names chosen by the user (upstreams, hosts, providers).
    fn named<'v>(&mut self, v: &'v Value, path: &str) -> Vec<(&'v str, &'v Value, String)> {
        let Value::Mapping(map) = v else {
            self.err(path, format!("expected a mapping, found {}", kind(v)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, val) in map {
            match k.as_str() {
                Some(name) => out.push((name, val, join(path, name))),
                None => self.err(path, format!("names must be strings, found {}", kind(k))),
            }
        }
        out
    }

    fn list<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v [Value]> {
        match v {
            Value::Sequence(items) => Some(items),
            other => {
                self.err(path, format!("expected a list, found {}", kind(other)));
                None
            }
        }
    }

    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => match interpolate(s, self.env) {
                Ok(s) => Some(s),
                Err(messages) => {
                    for m in messages {
                        self.err(path, m);
                    }
                    None
                }
            },
            other => {
                self.err(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    fn u64(&mut self, v: &Value, path: &str) -> Option<u64> {
        let message = match v {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => return Some(u),
                (None, Some(_)) => "must not be negative".to_string(),
                (None, None) => format!("expected an integer, found {n}"),
            },
            other => format!("expected an integer, found {}", kind(other)),
        };
        self.err(path, message);
        None
    }

    fn string_list(&mut self, v: &Value, path: &str) -> Option<Vec<String>> {
        let items = self.list(v, path)?;
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(item, &index(path, i)))
                .collect(),
        )
    }

    /// Secret keys: an item that interpolates to `""` is dropped (`[${KEY:-}]` = no key); a literal `""` or
    /// a key with whitespace (which would break the `Authorization` header) is an error. Values never
    /// appear in messages.
    fn key_list(&mut self, v: &Value, path: &str) -> Vec<String> {
        let Some(items) = self.list(v, path) else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            let Some(key) = self.string(item, &p) else {
                continue;
            };
            let interpolated = item.as_str().is_some_and(|raw| raw.contains('$'));
            if key.is_empty() {
                if !interpolated {
                    self.err(&p, "a key must not be empty");
                }
            } else if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.err(
                    &p,
                    "a key must not contain whitespace or control characters",
                );
            } else {
                keys.push(key);
            }
        }
        keys
    }

    fn check_file(&mut self, path: &str, file: &str) {
        if file.is_empty() {
            self.err(path, "must not be empty");
        } else if !Path::new(file).is_file() {
            self.err(path, format!("file not found: {file}"));
        }
    }

    /// A listening address: literal `IP:PORT`, remembered for the collision check.
    fn bind_addr(&mut self, path: &str, addr: &str) {
        match addr.parse::<SocketAddr>() {
            Ok(sa) => self.binds.push((path.to_string(), sa)),
            Err(_) => self.err(
                path,
                format!("`{addr}` is not IP:PORT, like 0.0.0.0:8080 or [::]:8080"),
            ),
        }
    }

    fn url(&mut self, path: &str, url: &str) {
        if let Err(e) = parse_backend_url(url) {
            self.err(path, e);
        }
    }

    // ----- sections -----

    fn config(&mut self, root: &Value) -> Config {
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

    fn auth(&mut self, v: &Value, path: &str) -> AuthSection {
        let d = AuthSection::default();
        let Some(mut o) = self.object(v, path) else {
            return d;
        };
        let key_prefix = o.string_or(self, "key_prefix", &d.key_prefix);
        if key_prefix.is_empty()
            || key_prefix.len() > 32
            || !key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.err(
                &o.at("key_prefix"),
                "must be 1 to 32 characters of letters, digits, `-` and `_`",
            );
        }
        let byok = match o.take("byok") {
            None | Some((Value::Bool(false), _)) => Byok::Off,
            Some((bv, bp)) => match self.string(bv, &bp).as_deref() {
                Some("off") => Byok::Off,
                Some("optional") => Byok::Optional,
                Some("required") => Byok::Required,
                Some(other) => {
                    self.err(
                        &bp,
                        format!("expected off, optional or required, found `{other}`"),
                    );
                    Byok::Off
                }
                None => Byok::Off,
            },
        };
        o.finish(self);
        AuthSection { key_prefix, byok }
    }

    fn limits(&mut self, v: &Value, path: &str) -> LimitsSection {
        let d = LimitsSection::default();
        let Some(mut o) = self.object(v, path) else {
            return d;
        };
        let l = LimitsSection {
            requests_per_minute: o.u64_or(self, "requests_per_minute", d.requests_per_minute),
            requests_per_hour: o.u64_or(self, "requests_per_hour", d.requests_per_hour),
            requests_per_day: o.u64_or(self, "requests_per_day", d.requests_per_day),
            tokens_per_minute: o.u64_or(self, "tokens_per_minute", d.tokens_per_minute),
            tokens_per_day: o.u64_or(self, "tokens_per_day", d.tokens_per_day),
            images_per_day: o.u64_or(self, "images_per_day", d.images_per_day),
            max_concurrent: o.u64_or(self, "max_concurrent", d.max_concurrent),
            max_body_bytes: o.positive_or(self, "max_body_bytes", d.max_body_bytes),
        };
        o.finish(self);
        l
    }

    /// The seven optional limits, as in `oauth.new_user_limits`.
    fn limit_values(&mut self, v: &Value, path: &str) -> Option<LimitValues> {
        let mut o = self.object(v, path)?;
        let mut values = LimitValues::default();
        for field in LimitValues::FIELDS {
            let n = o.u64(self, field);
            if let Some(slot) = values.slot(field) {
                *slot = n;
            }
        }
        o.finish(self);
        Some(values)
    }

    fn idempotency(&mut self, v: &Value, path: &str) -> IdempotencySection {
        let d = IdempotencySection::default();
        let Some(mut o) = self.object(v, path) else {
            return d;
        };
        let s = IdempotencySection {
            ttl_s: o.positive_or(self, "ttl_s", d.ttl_s),
            inflight_timeout_s: o.positive_or(self, "inflight_timeout_s", d.inflight_timeout_s),
            max_response_bytes: o.u64_or(self, "max_response_bytes", d.max_response_bytes),
        };
        o.finish(self);
        s
    }

    fn images(
        &mut self,
        v: &Value,
        path: &str,
        upstreams: &BTreeMap<String, UpstreamSection>,
    ) -> Option<ImagesSection> {
        let d = ImagesSection::default();
        let mut o = self.object(v, path)?;
        let upstream = o.req_string(self, "upstream");
        if let Some(u) = upstream.as_ref().filter(|u| !upstreams.contains_key(*u)) {
            self.err(&o.at("upstream"), format!("no upstream named `{u}`"));
        }
        let upstream = upstream.unwrap_or_default();
        let default_model = o.nonempty_or(self, "default_model", &d.default_model);
        let default_size = o.string_or(self, "default_size", &d.default_size);
        if parse_size(&default_size).is_none() {
            self.err(
                &o.at("default_size"),
                format!("`{default_size}` is not WxH with both sides 64 to 4096"),
            );
        }
        let max_cache_bytes = o.u64_or(self, "max_cache_bytes", d.max_cache_bytes);
        let store_generations = o.bool_or(self, "store_generations", false);
        let public_url = o.string(self, "public_url").map(|u| {
            self.url(&o.at("public_url"), &u);
            u.trim_end_matches('/').to_string()
        });
        let hosting = o.take("hosting").and_then(|(hv, hp)| self.hosting(hv, &hp));
        o.finish(self);
        Some(ImagesSection {
            upstream,
            default_model,
            default_size,
            max_cache_bytes,
            store_generations,
            public_url,
            hosting,
        })
    }

    fn hosting(&mut self, v: &Value, path: &str) -> Option<HostingSection> {
        let mut o = self.object(v, path)?;
        let provider = match o.req_string(self, "provider").as_deref() {
            Some("smms") => Some(HostingProvider::Smms),
            Some("picgo") => Some(HostingProvider::Picgo),
            Some("cloudflare_imgbed") => Some(HostingProvider::CloudflareImgbed),
            Some(other) => {
                self.err(
                    &o.at("provider"),
                    format!("expected smms, picgo or cloudflare_imgbed, found `{other}`"),
                );
                None
            }
            None => None,
        };
        let key = o.string(self, "key");
        let url = o.string(self, "url");
        if let Some(u) = &url {
            self.url(&o.at("url"), u);
        }
        let auth_code = o.string(self, "auth_code");
        match provider {
            Some(HostingProvider::Smms) if key.as_deref().unwrap_or("").is_empty() => {
                self.err(&o.at("key"), "required for smms (the SM.MS API token)");
            }
            Some(HostingProvider::CloudflareImgbed) if url.is_none() => {
                self.err(
                    &o.at("url"),
                    "required for cloudflare_imgbed (its upload endpoint)",
                );
            }
            _ => {}
        }
        o.finish(self);
        Some(HostingSection {
            provider: provider.unwrap_or_default(),
            key,
            url,
            auth_code,
        })
    }

    fn models(&mut self, v: &Value, path: &str) -> Option<Vec<ModelEntry>> {
        let items = self.list(v, path)?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            let Some(mut o) = self.object(item, &p) else {
                continue;
            };
            let id = o.req_string(self, "id");
            match &id {
                Some(id) if id.is_empty() => self.err(&o.at("id"), "must not be empty"),
                Some(id) if !seen.insert(id.clone()) => {
                    self.err(&o.at("id"), format!("`{id}` is listed twice"));
                }
                _ => {}
            }
            let id = id.unwrap_or_default();
            let owned_by = o.string_or(self, "owned_by", "tollgate");
            o.finish(self);
            out.push(ModelEntry { id, owned_by });
        }
        Some(out)
    }

    fn oauth(&mut self, v: &Value, path: &str) -> Option<OauthSection> {
        let d = OauthSection::default();
        let mut o = self.object(v, path)?;
        let redirect_base = o.req_string(self, "redirect_base");
        if let Some(u) = &redirect_base {
            self.url(&o.at("redirect_base"), u);
        }
        let redirect_base = redirect_base.unwrap_or_default();
        let state_secret = o.req_string(self, "state_secret");
        let n = state_secret.as_ref().map_or(32, |s| s.chars().count());
        if n < 32 {
            self.err(
                &o.at("state_secret"),
                format!("must be at least 32 characters (it has {n})"),
            );
        }
        let state_secret = state_secret.unwrap_or_default();
        let mut providers = BTreeMap::new();
        if let Some((pv, pp)) = o.require(self, "providers") {
            let entries = self.named(pv, &pp);
            if entries.is_empty() && pv.is_mapping() {
                self.err(&pp, "at least one provider is required");
            }
            for (name, val, p) in entries {
                // The name is a path segment (/auth/{name}/login); `device` is taken by the device flow.
                if name.is_empty()
                    || !name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    })
                {
                    self.err(
                        &p,
                        "a provider name is lowercase letters, digits, `_` and `-`",
                    );
                } else if name == "device" {
                    self.err(
                        &p,
                        "`device` is reserved for /auth/device/…; pick another name",
                    );
                }
                if let Some(provider) = self.oauth_provider(val, &p) {
                    providers.insert(name.to_string(), provider);
                }
            }
        }
        let allowed_emails = o.string_list(self, "allowed_emails").unwrap_or_default();
        for (i, e) in allowed_emails.iter().enumerate() {
            if e != "*" && !e.contains('@') {
                self.err(
                    &index(&o.at("allowed_emails"), i),
                    format!("`{e}` is not `*` or an address pattern like *@example.com"),
                );
            }
        }
        let allowed_redirects = o.string_list(self, "allowed_redirects").unwrap_or_default();
        for (i, r) in allowed_redirects.iter().enumerate() {
            if !r.contains("://") {
                self.err(
                    &index(&o.at("allowed_redirects"), i),
                    format!("`{r}` is not a URL pattern like https://app.example.com/*"),
                );
            }
        }
        let new_user_limits = o
            .take("new_user_limits")
            .and_then(|(lv, lp)| self.limit_values(lv, &lp));
        let keys = o.positive_or(self, "max_keys_per_user", u64::from(d.max_keys_per_user));
        let max_keys_per_user = u32::try_from(keys).unwrap_or_else(|_| {
            self.err(&o.at("max_keys_per_user"), "is too large");
            d.max_keys_per_user
        });
        o.finish(self);
        Some(OauthSection {
            redirect_base: redirect_base.trim_end_matches('/').to_string(),
            state_secret,
            providers,
            allowed_emails,
            allowed_redirects,
            new_user_limits,
            max_keys_per_user,
        })
    }

    fn oauth_provider(&mut self, v: &Value, path: &str) -> Option<OauthProvider> {
        let mut o = self.object(v, path)?;
        let kind = match o.req_string(self, "type").as_deref() {
            Some("github") => Some(OauthKind::Github),
            Some("oidc") => Some(OauthKind::Oidc),
            Some(other) => {
                self.err(
                    &o.at("type"),
                    format!("expected github or oidc, found `{other}`"),
                );
                None
            }
            None => None,
        };
        let client_id = o.req_string(self, "client_id").unwrap_or_default();
        let client_secret = o.req_string(self, "client_secret").unwrap_or_default();
        let mut url = |o: &mut Obj, key: &'static str| {
            let u = o.string(self, key)?;
            self.url(&o.at(key), &u);
            Some(u)
        };
        let issuer = url(&mut o, "issuer");
        let base_url = url(&mut o, "base_url");
        let api_url = url(&mut o, "api_url");
        if kind == Some(OauthKind::Oidc) && issuer.is_none() {
            self.err(
                &o.at("issuer"),
                "required for type oidc (discovery starts there)",
            );
        }
        let scopes = o.string_list(self, "scopes");
        o.finish(self);
        Some(OauthProvider {
            kind: kind.unwrap_or_default(),
            client_id,
            client_secret,
            issuer,
            base_url,
            api_url,
            scopes,
        })
    }

    fn cors(&mut self, v: &Value, path: &str) -> Option<CorsSection> {
        let d = CorsSection::default();
        let mut o = self.object(v, path)?;
        let allow_origins = o
            .string_list(self, "allow_origins")
            .unwrap_or(d.allow_origins);
        for (i, origin) in allow_origins.iter().enumerate() {
            if let Err(e) = check_origin(origin) {
                self.err(&index(&o.at("allow_origins"), i), e);
            }
        }
        let max_age_s = o.u64_or(self, "max_age_s", d.max_age_s);
        o.finish(self);
        Some(CorsSection {
            allow_origins,
            max_age_s,
        })
    }
}

/// `*` or `scheme://host[:port]`, as browsers send in `Origin` (no path, not even `/`).
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let usage =
        "expected `*` or an origin like https://app.example.com (scheme://host[:port], no path)";
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(format!("`{origin}`: {usage}"));
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || authority.contains(['/', '?', '#', '@']) {
        return Err(format!("`{origin}`: {usage}"));
    }
    split_host_port(authority)
        .map(|_| ())
        .map_err(|e| format!("`{origin}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const BASE: &str = "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/tollgate-cfg-test}
upstreams: {openai: {backends: [https://api.openai.com]}}
";

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn parse_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        Config::parse(yaml, &env_of(vars))
    }

    fn ok(yaml: &str) -> Config {
        match parse_env(yaml, &[]) {
            Ok(c) => c,
            Err(e) => panic!("expected success, got {e:#?}"),
        }
    }

    fn errs(yaml: &str) -> Vec<String> {
        match parse_env(yaml, &[]) {
            Ok(_) => panic!("expected errors for:\n{yaml}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    /// BASE plus `extra` top-level sections.
    fn with(extra: &str) -> String {
        format!("{BASE}{extra}")
    }

    #[track_caller]
    fn assert_has(errors: &[String], path: &str, needle: &str) {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
            "no error at `{path}` containing `{needle}` in {errors:#?}"
        );
    }

    /// A file that exists, for TLS and CA paths.
    fn temp_file() -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tollgate-cfg-{}-{}.pem",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, "pem").unwrap();
        p.display().to_string()
    }

    // ----- interpolation -----

    #[test]
    fn interpolates_with_and_without_default() {
        let env = env_of(&[("A", "alpha"), ("EMPTY", "")]);
        assert_eq!(interpolate("x-${A}-y", &env).unwrap(), "x-alpha-y");
        assert_eq!(
            interpolate("${MISSING:-fallback}", &env).unwrap(),
            "fallback"
        );
        assert_eq!(interpolate("${A:-fallback}", &env).unwrap(), "alpha");
        assert_eq!(
            interpolate("${EMPTY:-fallback}", &env).unwrap(),
            "fallback",
            "shell :- semantics"
        );
        assert_eq!(interpolate("${EMPTY}", &env).unwrap(), "");
        assert_eq!(interpolate("${MISSING:-}", &env).unwrap(), "");
        assert_eq!(
            interpolate("$${A} costs $5", &env).unwrap(),
            "${A} costs $5",
            "escape and lone $"
        );
        assert_eq!(interpolate("${A}${A}", &env).unwrap(), "alphaalpha");
        let env2 = env_of(&[("B", "${A}")]);
        assert_eq!(
            interpolate("${B}", &env2).unwrap(),
            "${A}",
            "values are not re-scanned"
        );
        assert!(interpolate("${A", &env).is_err());
        assert!(interpolate("${1A}", &env).is_err());
        assert!(interpolate("${}", &env).is_err());
        assert_eq!(
            interpolate("${X} ${Y}", &env).unwrap_err().len(),
            2,
            "every unset variable is reported"
        );
    }

    #[test]
    fn interpolation_in_config_values_and_lists() {
        let yaml = "
listen: [{addr: '${ADDR:-127.0.0.1:8080}'}]
storage: {path: ${STATE_DIR}/db}
upstreams: {openai: {backends: [https://api.openai.com], keys: [${K1}, ${K2:-}, '${K3:-}', literal]}}
admin: {listen: 127.0.0.1:8081, token: ${TOKEN}}
";
        let c = parse_env(
            yaml,
            &[
                ("STATE_DIR", "/srv"),
                ("K1", "sk-one"),
                ("TOKEN", "0123456789abcdef"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen[0].addr, "127.0.0.1:8080");
        assert_eq!(c.storage.path, PathBuf::from("/srv/db"));
        assert_eq!(
            c.upstreams["openai"].keys,
            vec!["sk-one", "literal"],
            "empty interpolations are dropped"
        );
        assert_eq!(c.admin.unwrap().token, "0123456789abcdef");
    }

    #[test]
    fn unset_variable_names_var_and_path() {
        let e = errs(&with(
            "admin: {listen: 127.0.0.1:8081, token: ${TOLLGATE_ADMIN_TOKEN}}",
        ));
        assert_has(&e, "admin.token", "TOLLGATE_ADMIN_TOKEN");
        let e = errs(
            "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/x}
upstreams: {openai: {backends: [https://api.openai.com], keys: [${OPENAI_API_KEY}]}}
",
        );
        assert_has(
            &e,
            "upstreams.openai.keys[0]",
            "environment variable OPENAI_API_KEY is not set",
        );
    }

    #[test]
    fn comments_keys_and_numbers_are_not_interpolated() {
        let c = ok(&with(
            "# ${UNSET_IN_COMMENT}\nserver: {threads: 3}  # ${ALSO_UNSET}\n",
        ));
        assert_eq!(c.server.threads, 3);
        let e = errs(&with("server: {threads: '${THREADS:-4}'}"));
        assert_has(&e, "server.threads", "expected an integer, found a string");
    }

    #[test]
    fn literal_empty_key_is_an_error() {
        let e = errs(
            "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/x}
upstreams: {openai: {backends: [https://api.openai.com], keys: ['', 'a b']}}
",
        );
        assert_has(&e, "upstreams.openai.keys[0]", "must not be empty");
        assert_has(&e, "upstreams.openai.keys[1]", "whitespace");
    }

    #[test]
    fn shield_keeps_quoted_text_and_reports_unclosed() {
        let c = ok(&with("models: [{id: \"a${X:-b}c}\"}, {id: 'x}y'}]"));
        let ids: Vec<_> = c.models.unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, vec!["abc}", "x}y"]);
        let e = errs(&with("models: [{id: '${X'}]"));
        assert_has(&e, "models[0].id", "unclosed");
        // An escaped `$${` in a flow list is fine too.
        let c = ok(&with("models: [{id: $${literal}}]"));
        assert_eq!(c.models.unwrap()[0].id, "${literal}");
    }

    // ----- structure -----

    #[test]
    fn unknown_key_is_reported_at_its_path() {
        let e = errs(
            "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/x}
upstreams: {openai: {bakends: [https://api.openai.com]}}
lisen: []
",
        );
        assert_has(
            &e,
            "upstreams.openai.bakends",
            "unknown key (did you mean `backends`?)",
        );
        assert_has(&e, "upstreams.openai.backends", "required field is missing");
        assert_has(&e, "lisen", "did you mean `listen`?");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = errs(
            "
server: {threads: 0, pid_file: 7}
listen: [{addr: nowhere}, {addr: '0.0.0.0:8080', tls: {cert: /nonexistent/c.pem}}]
admin: {listen: 127.0.0.1:8081, token: short}
storage: {cache_mb: -1}
upstreams:
  openai: {backends: ['ftp://x'], connect_timeout_ms: 0}
  images: {backends: []}
routes: [{prefix: v1, upstream: nope}]
limits: {requests_per_minute: '600', tokens_per_day: 1.5}
",
        );
        for (path, needle) in [
            ("server.threads", "greater than 0"),
            ("server.pid_file", "expected a string, found a number"),
            ("listen[0].addr", "not IP:PORT"),
            ("listen[1].tls.cert", "file not found"),
            ("listen[1].tls.key", "required field is missing"),
            ("admin.token", "at least 16 characters (it has 5)"),
            ("storage.path", "required field is missing"),
            ("storage.cache_mb", "must not be negative"),
            ("upstreams.openai.backends[0]", "unsupported scheme `ftp`"),
            ("upstreams.openai.connect_timeout_ms", "greater than 0"),
            ("upstreams.images.backends", "at least one backend"),
            ("routes[0].prefix", "must start with `/`"),
            ("routes[0].upstream", "no upstream named `nope`"),
            (
                "limits.requests_per_minute",
                "expected an integer, found a string",
            ),
            ("limits.tokens_per_day", "expected an integer"),
        ] {
            assert_has(&e, path, needle);
        }
        assert!(e.len() >= 15, "{e:#?}");
    }

    #[test]
    fn empty_strings_are_checked_not_skipped() {
        let e = errs("
listen: [{addr: ''}]
storage: {path: /tmp/x}
upstreams: {a: {backends: [http://a], health_check: {path: ''}}}
routes: [{prefix: '', upstream: ''}]
images: {upstream: ''}
oauth: {redirect_base: '', state_secret: '', providers: {gh: {type: github, client_id: c, client_secret: s}}}
");
        assert_has(&e, "listen[0].addr", "not IP:PORT");
        assert_has(&e, "upstreams.a.health_check.path", "must start with `/`");
        assert_has(&e, "routes[0].prefix", "must start with `/`");
        assert_has(&e, "routes[0].upstream", "no upstream named ``");
        assert_has(&e, "images.upstream", "no upstream named ``");
        assert_has(&e, "oauth.redirect_base", "not a URL");
        assert_has(&e, "oauth.state_secret", "it has 0");
        // A failed interpolation is reported once, not again as "too short".
        let e = errs(&with(
            "oauth: {redirect_base: 'https://g.example', state_secret: '${NOPE}', providers: {gh: {type: github, client_id: c, client_secret: s}}}",
        ));
        assert_eq!(
            e,
            vec!["oauth.state_secret: environment variable NOPE is not set"]
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let e = errs(
            "
listen: {addr: 127.0.0.1:8080}
storage: /tmp/x
upstreams: {openai: {backends: https://api.openai.com}}
security_headers: 'yes'
models: {id: x}
",
        );
        assert_has(&e, "listen", "expected a list, found a mapping");
        assert_has(&e, "storage", "expected a mapping, found a string");
        assert_has(
            &e,
            "upstreams.openai.backends",
            "expected a list, found a string",
        );
        assert_has(&e, "security_headers", "expected true or false");
        assert_has(&e, "models", "expected a list");
    }

    #[test]
    fn required_sections_and_empty_document() {
        let e = errs("");
        assert_has(&e, "listen", "required");
        assert_has(&e, "storage", "required");
        assert_has(&e, "upstreams", "required");
        let e = errs("- a\n- b\n");
        assert_has(&e, "(root)", "expected a mapping");
        let e = errs("listen: []\nstorage: {path: ''}\nupstreams: {}\n");
        assert_has(&e, "listen", "at least one listener");
        assert_has(&e, "storage.path", "must not be empty");
        assert_has(&e, "upstreams", "at least one upstream");
    }

    #[test]
    fn yaml_syntax_error_has_a_location() {
        let e = errs("listen: [\nstorage: {");
        assert!(e[0].starts_with("line "), "{e:?}");
        let e = errs("a: 1\na: 2\n");
        assert!(e[0].contains("duplicate"), "{e:?}");
    }

    #[test]
    fn null_is_the_same_as_absent() {
        let c = ok(&with(
            "server: null\nadmin: null\nmetrics: null\nimages: null\nmodels: null\noauth: null\ncors: null\n\
             auth: {byok: null}\nhosts: {a.example: null}\n",
        ));
        assert_eq!(c.server.threads, 2);
        assert!(c.admin.is_none() && c.images.is_none() && c.models.is_none() && c.oauth.is_none());
        assert_eq!(c.hosts["a.example"].keys.len(), 0);
        let c = ok("
listen: [{addr: 127.0.0.1:8080, tls: null}]
storage: {path: /tmp/x, cache_mb: null}
upstreams: {openai: {backends: [https://api.openai.com], ca_file: null, health_check: null, keys: null}}
");
        assert_eq!(c.storage.cache_mb, 64);
        assert!(c.upstreams["openai"].ca_file.is_none());
    }

    #[test]
    fn defaults() {
        let c = ok(BASE);
        assert_eq!(c.server.threads, 2);
        assert_eq!(c.server.pid_file, "/tmp/tollgate.pid");
        assert_eq!(c.server.upgrade_sock, "/tmp/tollgate_upgrade.sock");
        assert_eq!(
            (
                c.server.grace_period_seconds,
                c.server.graceful_shutdown_timeout_seconds
            ),
            (30, 10)
        );
        assert_eq!(c.storage.cache_mb, 64);
        let u = &c.upstreams["openai"];
        assert_eq!((u.connect_timeout_ms, u.read_timeout_ms), (5000, 600_000));
        assert!(u.keys.is_empty() && u.health_check.is_none());
        assert!(c.routes.is_empty(), "one upstream needs no routes");
        assert_eq!(c.auth.key_prefix, "sk-tg-");
        assert_eq!(c.auth.byok, Byok::Off);
        assert_eq!(c.limits.max_body_bytes, 33_554_432);
        assert_eq!(c.limits.values(), LimitsSection::default().values());
        assert_eq!(c.idempotency.ttl_s, 86_400);
        assert_eq!(c.idempotency.inflight_timeout_s, 600);
        assert_eq!(c.idempotency.max_response_bytes, 16_777_216);
        assert!(c.security_headers && c.access_log);
        assert!(c.cors.is_none() && c.admin.is_none() && c.metrics.is_none());

        let c = ok(&with(
            "images: {upstream: openai}\ncors: {}\noauth: {redirect_base: 'https://gw.example.com/', \
             state_secret: 0123456789abcdef0123456789abcdef, providers: {gh: {type: github, client_id: a, client_secret: b}}}\n\
             models: [{id: m}]\n",
        ));
        let i = c.images.unwrap();
        assert_eq!(
            (i.default_model.as_str(), i.default_size.as_str()),
            ("gpt-image-1", "1024x1024")
        );
        assert_eq!(i.default_dimensions(), (1024, 1024));
        assert_eq!(i.max_cache_bytes, 10_737_418_240);
        assert!(!i.store_generations && i.public_url.is_none() && i.hosting.is_none());
        let cors = c.cors.unwrap();
        assert_eq!(
            (cors.allow_origins, cors.max_age_s),
            (vec!["*".to_string()], 86_400)
        );
        let o = c.oauth.unwrap();
        assert_eq!(o.max_keys_per_user, 5);
        assert_eq!(
            o.redirect_base, "https://gw.example.com",
            "trailing slash trimmed"
        );
        assert_eq!(c.models.unwrap()[0].owned_by, "tollgate");
    }

    #[test]
    fn byok_values() {
        for (text, want) in [
            ("off", Byok::Off),
            ("false", Byok::Off),
            ("optional", Byok::Optional),
            ("required", Byok::Required),
        ] {
            assert_eq!(
                ok(&with(&format!("auth: {{byok: {text}}}"))).auth.byok,
                want,
                "{text}"
            );
        }
        assert_has(
            &errs(&with("auth: {byok: sometimes}")),
            "auth.byok",
            "expected off, optional or required",
        );
        assert_has(
            &errs(&with("auth: {byok: true}")),
            "auth.byok",
            "expected a string",
        );
        assert_has(
            &errs(&with("auth: {key_prefix: 'sk tg'}")),
            "auth.key_prefix",
            "1 to 32",
        );
    }

    #[test]
    fn merge_keys_and_anchors_work() {
        let c = ok("
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/x}
upstreams:
  a: &common {backends: [http://a], connect_timeout_ms: 1234}
  b: {<<: *common, backends: [http://b]}
routes: [{prefix: /a, upstream: a}, {prefix: /b, upstream: b}]
");
        assert_eq!(c.upstreams["b"].connect_timeout_ms, 1234);
        assert_eq!(c.upstreams["b"].backends, vec!["http://b"]);
    }

    // ----- semantic checks -----

    #[test]
    fn listen_addresses() {
        let c = ok("
listen: [{addr: '0.0.0.0:8080'}, {addr: '[::]:8080'}, {addr: '127.0.0.1:0'}, {addr: '127.0.0.2:0'}]
storage: {path: /tmp/x}
upstreams: {openai: {backends: [https://api.openai.com]}}
admin: {listen: '127.0.0.1:0', token: 0123456789abcdef}
");
        assert_eq!(c.listen.len(), 4);
        let e = errs("
listen: [{addr: 'localhost:8080'}, {addr: '0.0.0.0:8080'}, {addr: '127.0.0.1:8080'}, {addr: '0.0.0.0:8080'}, {addr: '1.2.3.4'}]
storage: {path: /tmp/x}
upstreams: {openai: {backends: [https://api.openai.com]}}
admin: {listen: '127.0.0.1:9090', token: 0123456789abcdef}
metrics: {listen: '127.0.0.1:9090'}
");
        assert_has(&e, "listen[0].addr", "not IP:PORT");
        assert_has(&e, "listen[2].addr", "collides with listen[1].addr");
        assert_has(&e, "listen[3].addr", "collides with listen[1].addr");
        assert_has(&e, "listen[4].addr", "not IP:PORT");
        assert_has(&e, "metrics.listen", "collides with admin.listen");
        let e = errs(&with(
            "admin: {listen: '127.0.0.1:8080', token: 0123456789abcdef}",
        ));
        assert_has(&e, "admin.listen", "collides with listen[0].addr");
    }

    #[test]
    fn tls_files_must_exist() {
        let (cert, key) = (temp_file(), temp_file());
        let c = ok(&format!(
            "listen: [{{addr: '0.0.0.0:8443', tls: {{cert: '{cert}', key: '{key}'}}}}]\nstorage: {{path: /tmp/x}}\n\
             upstreams: {{openai: {{backends: [https://api.openai.com]}}}}\n"
        ));
        assert_eq!(c.listen[0].tls.as_ref().unwrap().cert, cert);
        let e = errs(&format!(
            "listen: [{{addr: '0.0.0.0:8443', tls: {{cert: '{cert}', key: /nonexistent/key.pem, extra: 1}}}}]\n\
             storage: {{path: /tmp/x}}\nupstreams: {{openai: {{backends: [https://api.openai.com]}}}}\n"
        ));
        assert_has(
            &e,
            "listen[0].tls.key",
            "file not found: /nonexistent/key.pem",
        );
        assert_has(&e, "listen[0].tls.extra", "unknown key");
        assert_eq!(e.len(), 2, "{e:#?}");
    }

    #[test]
    fn ca_files_must_exist() {
        let ca = temp_file();
        let ok_yaml = format!(
            "listen: [{{addr: 127.0.0.1:8080}}]\nstorage: {{path: /tmp/x}}\n\
             upstreams: {{openai: {{backends: [https://api.openai.com], ca_file: '{ca}'}}}}\nhosts: {{h.example: {{ca_file: '{ca}'}}}}\n"
        );
        assert_eq!(
            ok(&ok_yaml).upstreams["openai"].ca_file.as_deref(),
            Some(ca.as_str())
        );
        let e = errs(
            "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/x}
upstreams: {openai: {backends: [https://api.openai.com], ca_file: /nonexistent/ca.pem}}
hosts: {h.example: {ca_file: /nonexistent/ca2.pem}}
",
        );
        assert_has(&e, "upstreams.openai.ca_file", "file not found");
        assert_has(&e, "hosts.\"h.example\".ca_file", "file not found");
    }

    #[test]
    fn admin_token_length() {
        assert_has(
            &errs(&with(
                "admin: {listen: 127.0.0.1:8081, token: fifteen-chars-x}",
            )),
            "admin.token",
            "it has 15",
        );
        assert_has(
            &errs(&with("admin: {listen: 127.0.0.1:8081}")),
            "admin.token",
            "required",
        );
        ok(&with(
            "admin: {listen: 127.0.0.1:8081, token: sixteen-chars-xx}",
        ));
    }

    #[test]
    fn token_errors_do_not_echo_the_token() {
        let e = errs(&with("admin: {listen: 127.0.0.1:8081, token: hunter2}"));
        assert!(e.iter().all(|m| !m.contains("hunter2")), "{e:?}");
    }

    #[test]
    fn upstream_checks() {
        let e = errs(
            "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/x}
upstreams:
  'bad name': {backends: ['https://h/v1?x=1', 'https://', 'http://h:99999', 'api.openai.com']}
  b:
    backends: [http://b]
    read_timeout_ms: 0
    health_check: {path: v1/models, interval_s: 0}
routes: [{prefix: /, upstream: b}]
",
        );
        assert_has(&e, "upstreams.\"bad name\"", "upstream name");
        assert_has(
            &e,
            "upstreams.\"bad name\".backends[0]",
            "query or fragment",
        );
        assert_has(&e, "upstreams.\"bad name\".backends[1]", "host is missing");
        assert_has(&e, "upstreams.\"bad name\".backends[2]", "not a port");
        assert_has(&e, "upstreams.\"bad name\".backends[3]", "not a URL");
        assert_has(&e, "upstreams.b.read_timeout_ms", "greater than 0");
        assert_has(&e, "upstreams.b.health_check.path", "must start with `/`");
        assert_has(&e, "upstreams.b.health_check.interval_s", "greater than 0");
    }

    #[test]
    fn route_checks() {
        let two = "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/x}
upstreams: {a: {backends: [http://a]}, b: {backends: [http://b]}}
";
        assert_has(
            &errs(two),
            "routes",
            "required when there are several upstreams",
        );
        assert_has(
            &errs(&format!("{two}routes: []")),
            "routes",
            "required when there are several upstreams",
        );
        let e = errs(&format!(
            "{two}routes: [{{prefix: /v1, upstream: a}}, {{prefix: /v1/images, upstream: b}}, {{prefix: /v1, upstream: b}}, {{prefix: /v10, upstream: b}}]"
        ));
        assert_has(
            &e,
            "routes[1].prefix",
            "never matches: routes[0] (`/v1`) comes first",
        );
        assert_has(&e, "routes[2].prefix", "never matches");
        assert!(
            !e.iter().any(|m| m.starts_with("routes[3]")),
            "/v10 is not under /v1: {e:?}"
        );
        let c = ok(&format!(
            "{two}routes: [{{prefix: /v1/images, upstream: b}}, {{prefix: /v1, upstream: a}}]"
        ));
        assert_eq!(c.routes[0].upstream, "b");
    }

    #[test]
    fn host_checks() {
        let c = ok(&with(
            "hosts: {API.Groq.com: {keys: [k]}, 'vllm.internal:8000': {origin: 'http://10.0.0.7:8000/'}, '[::1]:9000': {}}",
        ));
        assert!(c.hosts.contains_key("api.groq.com"), "lowercased");
        assert!(c.hosts.contains_key("vllm.internal:8000"));
        assert!(c.hosts.contains_key("[::1]:9000"));
        let e = errs(&with(
            "hosts: {'bad host': {}, 'h.example:0': {}, 'o.example': {origin: 'ftp://x'}, 'a.example': {}, 'A.example': {}, 'k.example': {keys: k}}",
        ));
        assert_has(&e, "hosts.\"bad host\"", "not a host[:port]");
        assert_has(&e, "hosts.\"h.example:0\"", "not a port");
        assert_has(&e, "hosts.\"o.example\".origin", "unsupported scheme");
        assert_has(&e, "hosts.\"A.example\"", "listed twice");
        assert_has(&e, "hosts.\"k.example\".keys", "expected a list");
    }

    #[test]
    fn limits_and_idempotency_checks() {
        let c = ok(&with(
            "limits: {requests_per_minute: 600, tokens_per_day: 0, max_body_bytes: 1024}",
        ));
        assert_eq!(c.limits.values().requests_per_minute, Some(600));
        assert_eq!(
            c.limits.values().tokens_per_day,
            Some(0),
            "0 is kept: unlimited"
        );
        let e = errs(&with(
            "limits: {max_body_bytes: 0, requests_per_day: -5, rpm: 1}\nidempotency: {ttl_s: 0, inflight_timeout_s: 0}",
        ));
        assert_has(&e, "limits.max_body_bytes", "greater than 0");
        assert_has(&e, "limits.requests_per_day", "must not be negative");
        assert_has(&e, "limits.rpm", "unknown key");
        assert_has(&e, "idempotency.ttl_s", "greater than 0");
        assert_has(&e, "idempotency.inflight_timeout_s", "greater than 0");
    }

    #[test]
    fn image_checks() {
        let c = ok(&with(
            "images: {upstream: openai, default_size: 512x768, public_url: 'https://gw.example.com/', hosting: {provider: smms, key: tok}}",
        ));
        let i = c.images.unwrap();
        assert_eq!(i.default_dimensions(), (512, 768));
        assert_eq!(i.public_url.as_deref(), Some("https://gw.example.com"));
        assert_eq!(i.hosting.unwrap().provider, HostingProvider::Smms);
        let e = errs(&with(
            "images: {upstream: nope, default_size: 32x5000, public_url: gw.example.com, hosting: {provider: imgur}}",
        ));
        assert_has(&e, "images.upstream", "no upstream named `nope`");
        assert_has(&e, "images.default_size", "64 to 4096");
        assert_has(&e, "images.public_url", "not a URL");
        assert_has(
            &e,
            "images.hosting.provider",
            "expected smms, picgo or cloudflare_imgbed",
        );
        assert_has(
            &errs(&with(
                "images: {upstream: openai, hosting: {provider: smms}}",
            )),
            "images.hosting.key",
            "required for smms",
        );
        assert_has(
            &errs(&with(
                "images: {upstream: openai, hosting: {provider: cloudflare_imgbed}}",
            )),
            "images.hosting.url",
            "required for cloudflare_imgbed",
        );
        assert_has(
            &errs(&with("images: {default_size: 1024x1024}")),
            "images.upstream",
            "required",
        );
        for bad in [
            "1024",
            "1024x",
            "x1024",
            "63x64",
            "64x4097",
            "+64x64",
            "1024X1024",
        ] {
            assert!(parse_size(bad).is_none(), "{bad}");
        }
        assert_eq!(parse_size("64x4096"), Some((64, 4096)));
    }

    #[test]
    fn model_checks() {
        let e = errs(&with("models: [{id: a}, {id: a}, {owned_by: x}, {id: ''}]"));
        assert_has(&e, "models[1].id", "listed twice");
        assert_has(&e, "models[2].id", "required");
        assert_has(&e, "models[3].id", "must not be empty");
        let c = ok(&with("models: []"));
        assert_eq!(
            c.models.map(|m| m.len()),
            Some(0),
            "an empty list answers locally with no models"
        );
    }

    #[test]
    fn oauth_checks() {
        let good = "oauth:
  redirect_base: https://gw.example.com
  state_secret: 0123456789abcdef0123456789abcdef
  providers:
    github: {type: github, client_id: Iv1.abc, client_secret: s1, base_url: 'https://ghe.example.com', api_url: 'https://ghe.example.com/api/v3'}
    google: {type: oidc, issuer: 'https://accounts.google.com', client_id: c, client_secret: s2, scopes: [openid, email]}
  allowed_emails: ['*@example.com', 'bob@example.org']
  allowed_redirects: ['http://127.0.0.1:*/*']
  new_user_limits: {requests_per_day: 200}
  max_keys_per_user: 3
";
        let o = ok(&with(good)).oauth.unwrap();
        assert_eq!(o.providers["google"].kind, OauthKind::Oidc);
        assert_eq!(o.providers["github"].kind, OauthKind::Github);
        assert_eq!(
            o.new_user_limits,
            Some(LimitValues {
                requests_per_day: Some(200),
                ..LimitValues::default()
            })
        );
        assert_eq!(o.max_keys_per_user, 3);

        let e = errs(&with(
            "oauth:
  redirect_base: gw.example.com
  state_secret: too-short
  providers:
    google: {type: oidc, client_id: c, client_secret: s}
    device: {type: github, client_id: c, client_secret: s}
    Bad: {type: saml, client_id: c}
  allowed_emails: [bob]
  allowed_redirects: [/callback]
  new_user_limits: {requests_per_day: -1, rpd: 1}
  max_keys_per_user: 0
",
        ));
        assert_has(&e, "oauth.redirect_base", "not a URL");
        assert_has(
            &e,
            "oauth.state_secret",
            "at least 32 characters (it has 9)",
        );
        assert_has(
            &e,
            "oauth.providers.google.issuer",
            "required for type oidc",
        );
        assert_has(&e, "oauth.providers.device", "reserved");
        assert_has(&e, "oauth.providers.Bad", "lowercase");
        assert_has(&e, "oauth.providers.Bad.type", "expected github or oidc");
        assert_has(&e, "oauth.providers.Bad.client_secret", "required");
        assert_has(
            &e,
            "oauth.allowed_emails[0]",
            "not `*` or an address pattern",
        );
        assert_has(&e, "oauth.allowed_redirects[0]", "not a URL pattern");
        assert_has(&e, "oauth.new_user_limits.requests_per_day", "negative");
        assert_has(&e, "oauth.new_user_limits.rpd", "unknown key");
        assert_has(&e, "oauth.max_keys_per_user", "greater than 0");
        assert_has(
            &errs(&with(
                "oauth: {redirect_base: 'https://g.example', state_secret: 0123456789abcdef0123456789abcdef, providers: {}}",
            )),
            "oauth.providers",
            "at least one provider",
        );
    }

    #[test]
    fn cors_checks() {
        let c = ok(&with(
            "cors: {allow_origins: ['https://a.example', 'http://localhost:3000', 'chrome-extension://abc', '*'], max_age_s: 60}",
        ));
        assert_eq!(c.cors.unwrap().allow_origins.len(), 4);
        let e = errs(&with(
            "cors: {allow_origins: ['https://a.example/', 'a.example', 'https://', 'https://a.example/path']}",
        ));
        for i in 0..4 {
            assert_has(&e, &format!("cors.allow_origins[{i}]"), "");
        }
    }

    #[test]
    fn server_checks() {
        let e = errs(&with(
            "server: {threads: 0, pid_file: '', upgrade_sock: '', grace: 1}",
        ));
        assert_has(&e, "server.threads", "greater than 0");
        assert_has(&e, "server.pid_file", "must not be empty");
        assert_has(&e, "server.upgrade_sock", "must not be empty");
        assert_has(&e, "server.grace", "did you mean `grace_period_seconds`?");
        let c = ok(&with("server: {threads: 8, grace_period_seconds: 0}"));
        assert_eq!((c.server.threads, c.server.grace_period_seconds), (8, 0));
    }

    // ----- URLs -----

    #[test]
    fn backend_urls() {
        let u = |s: &str| parse_backend_url(s).unwrap();
        assert_eq!(
            u("https://api.openai.com"),
            BackendUrl {
                tls: true,
                host: "api.openai.com".into(),
                port: 443,
                base_path: "".into()
            }
        );
        assert_eq!(
            u("http://10.0.0.5:8000"),
            BackendUrl {
                tls: false,
                host: "10.0.0.5".into(),
                port: 8000,
                base_path: "".into()
            }
        );
        assert_eq!(
            u("https://img.example.com/v1").base_path,
            "/v1",
            "/v1 is the gateway's business"
        );
        assert_eq!(
            u("https://h/openai/v1/").base_path,
            "/openai/v1",
            "trailing slash dropped"
        );
        assert_eq!(u("https://h/").base_path, "");
        assert_eq!(u("HTTPS://API.Example.COM:8443").host, "api.example.com");
        assert_eq!(u("HTTPS://API.Example.COM:8443").port, 8443);
        assert_eq!(u("http://h").port, 80);
        let v6 = u("http://[::1]:8000/x");
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.addr()),
            ("[::1]", 8000, "[::1]:8000".to_string())
        );
        assert_eq!(u("https://h").authority(), "h");
        assert_eq!(u("https://h:8443").authority(), "h:8443");
        for bad in [
            "api.openai.com",
            "ftp://h",
            "https://",
            "https://:443",
            "https://h:0",
            "https://h:65536",
            "https://h:abc",
            "https://h?x=1",
            "https://h/p#frag",
            "https://user:pw@h",
            "https://h h",
            "http://::1:80",
            "http://[::1",
            "http://[zz]:80",
            "https://a..b",
        ] {
            assert!(parse_backend_url(bad).is_err(), "{bad} should be refused");
        }
    }

    // ----- whole files -----

    #[test]
    fn example_file_parses() {
        let text = include_str!("../conf/tollgate.yaml");
        let env = [
            ("TOLLGATE_ADMIN_TOKEN", "0123456789abcdef0123"),
            ("OPENAI_API_KEY", "sk-test"),
        ];
        let c = match parse_env(text, &env) {
            Ok(c) => c,
            Err(e) => panic!("conf/tollgate.yaml: {e:#?}"),
        };
        assert_eq!(c.storage.path, PathBuf::from("/var/lib/tollgate"));
        assert_eq!(c.server.pid_file, "/run/tollgate/tollgate.pid");
        assert_eq!(c.listen[0].addr, "0.0.0.0:8080");
        assert_eq!(c.admin.as_ref().unwrap().listen, "127.0.0.1:8081");
        assert_eq!(c.upstreams["openai"].keys, vec!["sk-test"]);
        assert!(
            c.hosts["api.groq.com"].keys.is_empty(),
            "GROQ_API_KEY unset: no key"
        );
        assert_eq!(c.auth.byok, Byok::Off);
        // Without the environment it names what is missing.
        let e: Vec<String> = parse_env(text, &[])
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_has(&e, "admin.token", "TOLLGATE_ADMIN_TOKEN");
        assert_has(&e, "upstreams.openai.keys[0]", "OPENAI_API_KEY");
        assert_eq!(e.len(), 2, "{e:#?}");
    }

    #[test]
    fn minimal_test_file_parses() {
        let c = parse_env(include_str!("../conf/test-minimal.yaml"), &[]).unwrap();
        assert_eq!(c.server.grace_period_seconds, 0);
        assert!(c.upstreams["openai"].keys.is_empty());
    }

    /// The example of SPEC section 2, verbatim except the TLS file names (which must exist).
    #[test]
    fn spec_example_parses() {
        let (cert, key) = (temp_file(), temp_file());
        let text = SPEC_EXAMPLE
            .replace("/etc/tollgate/cert.pem", &cert)
            .replace("/etc/tollgate/key.pem", &key);
        let env = [
            ("TOLLGATE_ADMIN_TOKEN", "0123456789abcdef"),
            ("OPENAI_API_KEY", "sk-openai"),
            ("GROQ_API_KEY", "gsk-groq"),
            ("TOLLGATE_STATE_SECRET", "0123456789abcdef0123456789abcdef"),
            ("GITHUB_CLIENT_SECRET", "gh-secret"),
        ];
        let c = match parse_env(&text, &env) {
            Ok(c) => c,
            Err(e) => panic!("{e:#?}"),
        };
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.upstreams["openai"].keys, vec!["sk-openai"]);
        assert_eq!(c.hosts["api.groq.com"].keys, vec!["gsk-groq"]);
        assert_eq!(c.routes[0].prefix, "/v1/images");
        assert_eq!(c.oauth.as_ref().unwrap().providers.len(), 2);
        assert_eq!(
            c.summary(),
            "ok: 2 listeners, 2 upstreams (3 backends), 2 routes, 2 hosts, admin on 127.0.0.1:8081, \
             metrics on 127.0.0.1:9090, images via images, sign-in with github+google"
        );
        // The SPEC writes `keys: [${OPENAI_API_KEY}]` unquoted, which plain YAML cannot parse.
        assert!(serde_yaml::from_str::<Value>(&text).is_err());
    }

    const SPEC_EXAMPLE: &str = r#"
server:                      # handed to Pingora's ServerConf
  threads: 2
  pid_file: /run/tollgate/tollgate.pid
  upgrade_sock: /run/tollgate/upgrade.sock
  grace_period_seconds: 30
  graceful_shutdown_timeout_seconds: 10
listen:                      # public gateway listeners
  - addr: 0.0.0.0:8080
  - addr: 0.0.0.0:8443
    tls: { cert: /etc/tollgate/cert.pem, key: /etc/tollgate/key.pem }
admin:                       # admin API; absent = no admin API
  listen: 127.0.0.1:8081
  token: ${TOLLGATE_ADMIN_TOKEN}     # at least 16 characters
metrics:
  listen: 127.0.0.1:9090     # GET /metrics (Prometheus text format)
storage:
  path: /var/lib/tollgate    # sled database and image files live below it
  cache_mb: 64               # sled page cache
upstreams:                   # named pools
  openai:
    backends: [https://api.openai.com]   # scheme://host[:port][/base-path]
    keys: [${OPENAI_API_KEY}]            # injected as Authorization: Bearer, round-robin; may be empty
    connect_timeout_ms: 5000
    read_timeout_ms: 600000              # longest silence between two upstream bytes
    health_check: { path: /v1/models, interval_s: 15 }   # optional active check
    ca_file: null                        # optional PEM bundle trusted besides the system roots
  images:
    backends: [http://10.0.0.5:8000, https://img.example.com/v1]
    keys: [sk-backend]
routes:                      # first matching prefix wins; required when there are several upstreams
  - { prefix: /v1/images, upstream: images }
  - { prefix: /v1, upstream: openai }
hosts:                       # X-Host-Final allow-list; the admin API can add more at run time
  api.groq.com: { keys: [${GROQ_API_KEY}] }     # origin defaults to https://HOST
  vllm.internal: { origin: http://10.0.0.7:8000, keys: [] }   # optional origin and ca_file
auth:
  key_prefix: sk-tg-
  byok: off                  # off | optional | required
limits:                      # defaults for every key; 0 or absent = unlimited
  requests_per_minute: 600
  requests_per_hour: 0
  requests_per_day: 0
  tokens_per_minute: 0
  tokens_per_day: 0
  images_per_day: 0
  max_concurrent: 0
  max_body_bytes: 33554432   # default 32 MiB
idempotency:
  ttl_s: 86400
  inflight_timeout_s: 600
  max_response_bytes: 16777216
images:
  upstream: images
  default_model: gpt-image-1
  default_size: 1024x1024
  max_cache_bytes: 10737418240
  store_generations: false   # store b64 images of /v1/images/* responses and return URLs instead
  public_url: https://gw.example.com   # base of returned image URLs
  hosting: null              # or { provider: smms | picgo | cloudflare_imgbed, key: …, url: …, auth_code: … }
models: null                 # optional list of {id, owned_by}; when set, GET /v1/models is answered locally
oauth:                       # optional sign-in that issues keys (section 3.8)
  redirect_base: https://gw.example.com   # public base URL; callbacks go to {redirect_base}/auth/{name}/callback
  state_secret: ${TOLLGATE_STATE_SECRET}  # HMAC key for the state parameter, at least 32 characters
  providers:
    github: { type: github, client_id: Iv1.abc, client_secret: ${GITHUB_CLIENT_SECRET} }   # base_url/api_url for GitHub Enterprise
    google: { type: oidc, issuer: https://accounts.google.com, client_id: …, client_secret: … }
  allowed_emails: ["*@example.com"]       # optional; verified e-mail addresses only
  allowed_redirects: ["http://127.0.0.1:*/*", "https://app.example.com/*"]   # where login may send keys back
  new_user_limits: { requests_per_day: 200 }
  max_keys_per_user: 5                    # sign-in keys beyond this revoke the oldest
cors:                        # absent = allow every origin
  allow_origins: ["*"]
  max_age_s: 86400
security_headers: true
access_log: true             # one JSON line per request on stdout
"#;

    #[test]
    fn load_reads_a_file_and_reports_a_missing_one() {
        let e = Config::load(Path::new("/nonexistent/tollgate.yaml")).unwrap_err();
        assert_eq!(e[0].path, "/nonexistent/tollgate.yaml");
        assert!(e[0].to_string().contains("cannot read"));
        let p = std::env::temp_dir().join(format!("tollgate-cfg-load-{}.yaml", std::process::id()));
        std::fs::write(&p, BASE).unwrap();
        assert_eq!(Config::load(&p).unwrap().listen[0].addr, "127.0.0.1:8080");
        let _ = std::fs::remove_file(&p);
    }

    // ----- other API -----

    #[test]
    fn summary_line() {
        let c = ok(BASE);
        assert_eq!(
            c.summary(),
            "ok: 1 listener, 1 upstream (1 backend), 0 routes, 0 hosts, no admin API"
        );
    }

    #[test]
    fn error_display_is_path_colon_message() {
        let e = ConfigError {
            path: "routes[0].upstream".into(),
            message: "no upstream named `x`".into(),
        };
        assert_eq!(e.to_string(), "routes[0].upstream: no upstream named `x`");
    }

    #[test]
    fn limit_values_serde_and_merge() {
        let v: LimitValues =
            serde_json::from_str(r#"{"requests_per_minute":10,"max_concurrent":0}"#).unwrap();
        assert_eq!(v.requests_per_minute, Some(10));
        assert_eq!(v.max_concurrent, Some(0));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"requests_per_minute":10,"max_concurrent":0}"#
        );
        assert!(
            serde_json::from_str::<LimitValues>(r#"{"rpm":1}"#).is_err(),
            "unknown fields refused"
        );
        assert!(serde_json::from_str::<LimitValues>(r#"{"requests_per_day":-1}"#).is_err());
        assert_eq!(
            serde_json::to_string(&LimitValues::default()).unwrap(),
            "{}"
        );
        let defaults = LimitsSection {
            requests_per_minute: 600,
            tokens_per_day: 5,
            ..LimitsSection::default()
        }
        .values();
        let merged = v.or(&defaults);
        assert_eq!(
            merged.requests_per_minute,
            Some(10),
            "the key's own value wins"
        );
        assert_eq!(merged.tokens_per_day, Some(5), "unset fields fall back");
        assert_eq!(merged.max_concurrent, Some(0));
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let yaml = "
listen: [{addr: 127.0.0.1:8080}]
admin: {listen: 127.0.0.1:8081, token: SECRET-admin-token-0001}
storage: {path: /tmp/x}
upstreams: {openai: {backends: [https://api.openai.com], keys: [SECRET-upstream-1, SECRET-upstream-2]}}
hosts: {h.example: {keys: [SECRET-host-key]}}
images: {upstream: openai, hosting: {provider: cloudflare_imgbed, url: 'https://img.example/upload', key: SECRET-hosting-key, auth_code: SECRET-auth-code}}
oauth:
  redirect_base: https://gw.example.com
  state_secret: SECRET-state-0123456789abcdef0123456789
  providers: {gh: {type: github, client_id: visible-client-id, client_secret: SECRET-client}}
";
        let c = ok(yaml);
        let dbg = format!("{c:?} {c:#?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
        assert!(
            dbg.contains("[redacted]") && dbg.contains("[2 redacted]"),
            "{dbg}"
        );
        assert!(dbg.contains("visible-client-id") && dbg.contains("https://api.openai.com"));
        // Errors about secrets do not echo them either.
        let e = errs(&yaml.replace("SECRET-admin-token-0001", "SECRET-short"));
        assert!(e.iter().all(|m| !m.contains("SECRET")), "{e:?}");
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("backends", "bakends"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("listen", "listen"), 0);
    }
}
