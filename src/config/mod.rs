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
//!   plain YAML would refuse (see `interpolate::shield`). A default containing `,` `]` `}` `#` or quotes
//!   needs quoting.
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

mod backend_url;
mod features;
mod interpolate;
mod redact;
mod schema;
mod sections;
mod walk;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_yaml::Value;

pub use backend_url::{parse_backend_url, BackendUrl};
pub use sections::{
    AdminSection, AuthSection, Byok, CorsSection, HealthCheck, HostSection, HostingProvider,
    HostingSection, IdempotencySection, ImagesSection, LimitValues, LimitsSection, Listener,
    MetricsSection, ModelEntry, OauthKind, OauthProvider, OauthSection, Route, ServerSection,
    StorageSection, TlsFiles, UpstreamSection,
};

use interpolate::{shield, unshield, SHIELD_CLOSE, SHIELD_OPEN};
use walk::Cx;

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
        let root = Config::parse_uninterpolated(yaml).map_err(|e| vec![e])?;
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

    /// The YAML document as written (merge keys applied, `${…}` left as text): for callers that
    /// need a few raw values, like the admin CLI reading `admin.listen` and `admin.token`.
    pub fn parse_uninterpolated(yaml: &str) -> Result<Value, ConfigError> {
        let shielded = shield(yaml);
        let mut root: Value = serde_yaml::from_str(shielded.as_deref().unwrap_or(yaml))
            .map_err(|e| yaml_error(&e))?;
        if shielded.is_some() {
            unshield(&mut root);
        }
        root.apply_merge().map_err(|e| yaml_error(&e))?;
        Ok(root)
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
