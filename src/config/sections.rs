//! The typed sections of [`Config`](super::Config), their defaults, and small accessors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::features::parse_size;

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
    /// Each parses with [`parse_backend_url`](super::parse_backend_url); at least one.
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
    /// Where requests for this host go; default `https://HOST[:PORT]`. Parses with
    /// [`parse_backend_url`](super::parse_backend_url).
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

    pub(super) fn slot(&mut self, name: &str) -> Option<&mut Option<u64>> {
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
