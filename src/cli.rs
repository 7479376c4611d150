//! Command line of the `tollgate` binary (SPEC section 1).
//!
//! This module holds the clap definitions, the small pure helpers the admin client needs
//! (durations, RFC 3339 timestamps, `${VAR}` interpolation, listen address → URL) and
//! [`run_admin`], which resolves the admin API's URL and token and hands over to
//! [`crate::admin::client`].

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Config file read by `tollgate admin` when neither `-c` nor a URL and token are given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tollgate/tollgate.yaml";
/// Environment variable holding the admin API's base URL.
pub const ENV_ADMIN_URL: &str = "TOLLGATE_ADMIN_URL";
/// Environment variable holding the admin token.
pub const ENV_ADMIN_TOKEN: &str = "TOLLGATE_ADMIN_TOKEN";

/// Reads a config file and returns its `(admin.listen, admin.token)`, or an error message
/// (unreadable file, no `admin` section, …). Same as `dyn Fn(&Path) -> Result<(String, String), String>`.
pub type ConfigReader<'a> = dyn Fn(&Path) -> Result<(String, String), String> + 'a;

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: the admin API answered with an error, or could not be reached.
pub const EXIT_ERROR: i32 = 1;
/// Exit status: usage error (bad flags, no URL or token, unreadable config).
pub const EXIT_USAGE: i32 = 2;

// `about` comes from the package description in Cargo.toml.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file.
        #[arg(short = 'c', long = "conf", value_name = "FILE")]
        config: PathBuf,
        /// Run in the background.
        #[arg(short = 'd', long)]
        daemon: bool,
        /// Take the listening sockets over from a running instance (zero-downtime upgrade).
        #[arg(short = 'u', long)]
        upgrade: bool,
    },
    /// Validate a configuration file.
    Check {
        /// Configuration file.
        #[arg(short = 'c', long = "conf", value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the version.
    Version,
    /// Manage users, keys, hosts, usage and images through the admin API.
    Admin(AdminArgs),
}

/// `tollgate admin [-c FILE] [--url URL] [--token T] [--json] RESOURCE VERB …`
///
/// The global flags may also be given after the resource and verb.
#[derive(Args)]
pub struct AdminArgs {
    /// Configuration file to take the admin URL and token from
    /// [default: /etc/tollgate/tollgate.yaml when it exists].
    #[arg(
        short = 'c',
        long = "conf",
        value_name = "FILE",
        global = true,
        help_heading = "Admin options"
    )]
    pub config: Option<PathBuf>,
    /// Base URL of the admin API, e.g. http://127.0.0.1:8081.
    #[arg(
        long,
        value_name = "URL",
        env = ENV_ADMIN_URL,
        global = true,
        help_heading = "Admin options"
    )]
    pub url: Option<String>,
    /// Admin token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = ENV_ADMIN_TOKEN,
        hide_env_values = true,
        global = true,
        help_heading = "Admin options"
    )]
    pub token: Option<String>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true, help_heading = "Admin options")]
    pub json: bool,
    #[command(subcommand)]
    pub resource: AdminResource,
}

// Hand-written so that the token never reaches a log or a panic message.
impl fmt::Debug for AdminArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminArgs")
            .field("config", &self.config)
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("json", &self.json)
            .field("resource", &self.resource)
            .finish()
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminResource {
    /// Users and their first keys.
    Users {
        #[command(subcommand)]
        verb: UsersVerb,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        verb: KeysVerb,
    },
    /// Hosts allowed in X-Host-Final.
    Hosts {
        #[command(subcommand)]
        verb: HostsVerb,
    },
    /// Usage per key and period.
    Usage(UsageArgs),
    /// The image cache.
    Images {
        #[command(subcommand)]
        verb: ImagesVerb,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersVerb {
    /// Create a user and its first key (the key is printed once).
    Add {
        name: String,
        /// Contact e-mail address.
        #[arg(long, value_name = "E")]
        email: Option<String>,
        /// Limits for the user as a whole (across all its keys).
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List users.
    #[command(visible_alias = "ls")]
    List,
    /// Show one user.
    Show { name: String },
    /// Delete a user; all its keys stop working at once.
    #[command(visible_alias = "remove")]
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysVerb {
    /// Create a key for a user (the key is printed once).
    Create(KeyCreateArgs),
    /// List keys.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Show one key record.
    Show { id: String },
    /// Revoke a key at once.
    Revoke { id: String },
    /// Replace a key's secret; the old one works for the grace period.
    Rotate {
        id: String,
        /// How long the old secret keeps working, e.g. 1h [default: 0].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<u64>,
    },
    /// Disable a key.
    Disable { id: String },
    /// Enable a disabled key.
    Enable { id: String },
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// Owner of the key.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Free-text label, e.g. the machine the key is for.
    #[arg(long, value_name = "L")]
    pub label: Option<String>,
    /// Lifetime (30d, 12h, 1h30m) or an RFC 3339 timestamp / date [default: never].
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry)]
    pub expires: Option<Expiry>,
    /// Models the key may use, comma-separated [default: all].
    #[arg(long, value_name = "a,b", value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Limit flags; each maps to the field of a `limits` object named in its doc.
#[derive(Debug, Default, Clone, PartialEq, Eq, Args)]
pub struct LimitArgs {
    /// Requests per minute (limits.requests_per_minute).
    #[arg(long, value_name = "N")]
    pub rpm: Option<u64>,
    /// Requests per hour (limits.requests_per_hour).
    #[arg(long, value_name = "N")]
    pub rph: Option<u64>,
    /// Requests per UTC day (limits.requests_per_day).
    #[arg(long, value_name = "N")]
    pub rpd: Option<u64>,
    /// Tokens per minute (limits.tokens_per_minute).
    #[arg(long, value_name = "N")]
    pub tpm: Option<u64>,
    /// Tokens per UTC day (limits.tokens_per_day).
    #[arg(long, value_name = "N")]
    pub tpd: Option<u64>,
    /// Generated images per UTC day (limits.images_per_day).
    #[arg(long, value_name = "N")]
    pub images_per_day: Option<u64>,
    /// Requests in flight at once (limits.max_concurrent).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u64>,
}

impl LimitArgs {
    /// The given limits as `(field name, value)` pairs, in the config's order.
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        [
            ("requests_per_minute", self.rpm),
            ("requests_per_hour", self.rph),
            ("requests_per_day", self.rpd),
            ("tokens_per_minute", self.tpm),
            ("tokens_per_day", self.tpd),
            ("images_per_day", self.images_per_day),
            ("max_concurrent", self.max_concurrent),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    /// A `limits` JSON object, or `None` when no limit flag was given.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        let fields = self.fields();
        if fields.is_empty() {
            return None;
        }
        let map: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
            .collect();
        Some(serde_json::Value::Object(map))
    }
}

/// When a new key expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// After this many seconds (`expires_in_s`).
    In(u64),
    /// At this RFC 3339 timestamp or date (`expires_at`), passed on as given.
    At(String),
}

#[derive(Debug, Subcommand)]
pub enum HostsVerb {
    /// Add or replace a host.
    Set {
        host: String,
        /// Upstream key for the host (repeatable); none means no key is injected.
        #[arg(long = "key", value_name = "K")]
        keys: Vec<String>,
        /// Origin URL [default: https://HOST].
        #[arg(long, value_name = "URL")]
        origin: Option<String>,
    },
    /// List hosts (keys masked).
    #[command(visible_alias = "ls")]
    List,
    /// Remove a host.
    #[command(visible_alias = "remove")]
    Rm { host: String },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Key id.
    #[arg(long = "key", value_name = "ID")]
    pub key: Option<String>,
    /// Only usage since this long ago, e.g. 7d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<u64>,
    /// Group by hour or by day.
    #[arg(long, value_enum)]
    pub by: Option<UsageBy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsageBy {
    Hour,
    Day,
}

impl UsageBy {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageBy::Hour => "hour",
            UsageBy::Day => "day",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ImagesVerb {
    /// Delete a cached image, by hash or by the prompt that made it.
    Purge(PurgeArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["hash", "prompt"])))]
pub struct PurgeArgs {
    /// Cache hash (SHA-256 hex).
    pub hash: Option<String>,
    /// The image's description, as in /prompt/{description}.
    #[arg(long, value_name = "P", conflicts_with = "hash")]
    pub prompt: Option<String>,
    #[arg(long, value_name = "W", requires = "prompt", conflicts_with = "hash")]
    pub width: Option<u32>,
    #[arg(long, value_name = "H", requires = "prompt", conflicts_with = "hash")]
    pub height: Option<u32>,
    #[arg(long, value_name = "M", requires = "prompt", conflicts_with = "hash")]
    pub model: Option<String>,
    #[arg(long, value_name = "S", requires = "prompt", conflicts_with = "hash")]
    pub seed: Option<i64>,
}

/// Parses `30d`, `12h`, `90m`, `45s`, `2w`, `1h30m` or a bare number of seconds into seconds.
///
/// Units (w, d, h, m, s) must appear at most once each, largest first.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".to_string());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map_err(|_| format!("duration `{s}` is too large"));
    }
    let bad = || format!("invalid duration `{s}` (expected e.g. 30d, 12h, 90m, 45s, 1h30m)");
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_rank = usize::MAX;
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let (rank, unit) = match c {
            'w' => (4, 604_800u64),
            'd' => (3, 86_400),
            'h' => (2, 3_600),
            'm' => (1, 60),
            's' => (0, 1),
            _ => return Err(bad()),
        };
        if number.is_empty() || rank >= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration `{s}` is too large"))?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Parses `--expires`: a duration (see [`parse_duration`]) or an RFC 3339 timestamp / `YYYY-MM-DD` date.
pub fn parse_expiry(s: &str) -> Result<Expiry, String> {
    if let Ok(secs) = parse_duration(s) {
        return Ok(Expiry::In(secs));
    }
    let t = s.trim();
    if crate::time::parse_rfc3339(t).is_some() {
        return Ok(Expiry::At(t.to_string()));
    }
    Err(format!(
        "invalid expiry `{s}` (expected a duration such as 30d or 12h, or a date such as 2026-12-31)"
    ))
}

/// Replaces `${VAR}` and `${VAR:-default}` in `s` using `lookup` (the default applies when VAR
/// is unset or empty). An unset `${VAR}` without default is an error naming VAR.
pub fn interpolate_with(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
        let expr = &after[..end];
        let (name, default) = match expr.find(":-") {
            Some(i) => (&expr[..i], Some(&expr[i + 2..])),
            None => (expr, None),
        };
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(format!("invalid variable reference `${{{expr}}}`"));
        }
        let value = match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => d.to_string(),
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Turns an `admin.listen` address into a base URL: `127.0.0.1:8081` → `http://127.0.0.1:8081`;
/// wildcard addresses (`0.0.0.0`, `[::]`, empty host) become the loopback address.
/// A value that already has a scheme is kept (minus a trailing `/`).
pub fn listen_to_url(listen: &str) -> String {
    let l = listen.trim();
    if l.contains("://") {
        return l.trim_end_matches('/').to_string();
    }
    let (host, port) = match l.rfind(':') {
        Some(i) if !l[i + 1..].is_empty() && l[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&l[..i], Some(&l[i + 1..]))
        }
        _ => (l, None),
    };
    let host = match host {
        "" | "0.0.0.0" | "*" => "127.0.0.1",
        "[::]" | "::" => "[::1]",
        h => h,
    };
    match port {
        Some(p) => format!("http://{host}:{p}"),
        None => format!("http://{host}"),
    }
}

/// Normalises a `--url` / `TOLLGATE_ADMIN_URL` value: adds `http://` when there is no scheme
/// and drops trailing slashes.
pub fn normalize_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    if u.contains("://") {
        u.to_string()
    } else {
        format!("http://{u}")
    }
}

/// Where the admin client should go.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTarget {
    /// Base URL without trailing slash, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    pub token: String,
}

impl fmt::Debug for AdminTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminTarget")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Resolves URL and token: flag / environment (already merged by clap) first, then the config
/// file (`config`, else `default_config` when given). `from_config` returns the file's
/// `(admin.listen, admin.token)`; `${VAR}` references in them are expanded with `lookup`.
pub fn resolve_target(
    url: Option<&str>,
    token: Option<&str>,
    config: Option<&Path>,
    default_config: Option<&Path>,
    from_config: &ConfigReader<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<AdminTarget, String> {
    let url = url.map(str::trim).filter(|s| !s.is_empty());
    let token = token.filter(|s| !s.trim().is_empty());
    if let (Some(u), Some(t)) = (url, token) {
        return Ok(AdminTarget {
            url: normalize_url(u),
            token: t.to_string(),
        });
    }
    let Some(path) = config.or(default_config) else {
        let missing = if url.is_none() { "URL" } else { "token" };
        return Err(format!(
            "no admin {missing}: pass --url and --token, set {ENV_ADMIN_URL} and {ENV_ADMIN_TOKEN}, \
             or point -c at a config file with an admin section"
        ));
    };
    let shown = path.display();
    let (listen, cfg_token) =
        from_config(path).map_err(|e| format!("cannot read admin settings from {shown}: {e}"))?;
    let final_url = match url {
        Some(u) => normalize_url(u),
        None => {
            let listen = interpolate_with(&listen, lookup)
                .map_err(|e| format!("{shown}: admin.listen: {e}"))?;
            if listen.trim().is_empty() {
                return Err(format!(
                    "{shown} has no admin.listen; pass --url or set {ENV_ADMIN_URL}"
                ));
            }
            listen_to_url(&listen)
        }
    };
    let final_token = match token {
        Some(t) => t.to_string(),
        None => {
            let t = interpolate_with(&cfg_token, lookup)
                .map_err(|e| format!("{shown}: admin.token: {e}"))?;
            if t.trim().is_empty() {
                return Err(format!(
                    "{shown} has no admin.token; pass --token or set {ENV_ADMIN_TOKEN}"
                ));
            }
            t
        }
    };
    Ok(AdminTarget {
        url: final_url,
        token: final_token,
    })
}

/// Runs `tollgate admin …` with stdout/stderr; returns the process exit status (0, 1 or 2).
///
/// `from_config` reads a config file and returns its `(admin.listen, admin.token)` (or an error
/// message, e.g. when the file has no `admin` section). It is only called when URL or token is
/// not given by flag or environment.
pub fn run_admin(args: AdminArgs, from_config: &ConfigReader<'_>) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let code = run_admin_with(&args, from_config, &mut out, &mut err);
    let _ = out.flush();
    code
}

/// [`run_admin`] writing to the given streams.
pub fn run_admin_with(
    args: &AdminArgs,
    from_config: &ConfigReader<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let default_path = Path::new(DEFAULT_CONFIG_PATH);
    let default_config = if args.config.is_none() && default_path.is_file() {
        Some(default_path)
    } else {
        None
    };
    let target = match resolve_target(
        args.url.as_deref(),
        args.token.as_deref(),
        args.config.as_deref(),
        default_config,
        from_config,
        &|name| std::env::var(name).ok(),
    ) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_USAGE;
        }
    };
    let client = match crate::admin::client::AdminClient::new(&target.url, &target.token) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_USAGE;
        }
    };
    crate::admin::client::execute(&client, &args.resource, args.json, out, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tollgate").chain(args.iter().copied()))
    }

    fn admin(args: &[&str]) -> AdminArgs {
        let mut v = vec!["admin", "--url", "http://x:1", "--token", "t"];
        v.extend_from_slice(args);
        match parse(&v) {
            Ok(Cli {
                command: Command::Admin(a),
            }) => a,
            other => panic!("unexpected parse result for {args:?}: {other:?}"),
        }
    }

    fn parse_err(args: &[&str]) -> clap::error::ErrorKind {
        let mut v = vec!["admin"];
        v.extend_from_slice(args);
        match parse(&v) {
            Ok(c) => panic!("expected an error for {args:?}, got {c:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{args:?}");
                e.kind()
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("90m"), Ok(5_400));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("1h30m"), Ok(5_400));
        assert_eq!(parse_duration("1d2h3m4s"), Ok(86_400 + 7_200 + 180 + 4));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        assert_eq!(parse_duration("3600"), Ok(3_600));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration(" 7d "), Ok(604_800));
        for bad in [
            "", " ", "d", "h1", "1x", "1.5h", "-1h", "1h1h", "30m1h", "1h 30m", "1H", "5m3",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("99999999999999999999").is_err());
        assert!(parse_duration("99999999999999w").is_err());
    }

    #[test]
    fn expiry() {
        assert_eq!(parse_expiry("30d"), Ok(Expiry::In(2_592_000)));
        assert_eq!(
            parse_expiry("2026-12-31"),
            Ok(Expiry::At("2026-12-31".into()))
        );
        assert_eq!(
            parse_expiry("2026-12-31T10:00:00Z"),
            Ok(Expiry::At("2026-12-31T10:00:00Z".into()))
        );
        assert!(parse_expiry("tomorrow").is_err());
        assert!(parse_expiry("2026-02-30").is_err());
    }

    #[test]
    fn interpolation() {
        let env = |name: &str| match name {
            "TOKEN" => Some("s3cret-token-value".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            interpolate_with("${TOKEN}", &env),
            Ok("s3cret-token-value".into())
        );
        assert_eq!(
            interpolate_with("a-${TOKEN}-b", &env),
            Ok("a-s3cret-token-value-b".into())
        );
        assert_eq!(interpolate_with("${PORT:-8081}", &env), Ok("8081".into()));
        assert_eq!(interpolate_with("${EMPTY:-x}", &env), Ok("x".into()));
        assert_eq!(interpolate_with("${EMPTY}", &env), Ok(String::new()));
        assert_eq!(
            interpolate_with("127.0.0.1:${PORT:-}", &env),
            Ok("127.0.0.1:".into())
        );
        assert_eq!(interpolate_with("plain", &env), Ok("plain".into()));
        let e = interpolate_with("${NOPE}", &env).unwrap_err();
        assert!(e.contains("NOPE"), "{e}");
        assert!(interpolate_with("${TOKEN", &env).is_err());
        assert!(interpolate_with("${}", &env).is_err());
        assert!(interpolate_with("${A-B}", &env).is_err());
    }

    #[test]
    fn listen_urls() {
        assert_eq!(listen_to_url("127.0.0.1:8081"), "http://127.0.0.1:8081");
        assert_eq!(listen_to_url("0.0.0.0:8081"), "http://127.0.0.1:8081");
        assert_eq!(listen_to_url("[::]:8081"), "http://[::1]:8081");
        assert_eq!(listen_to_url("[::1]:8081"), "http://[::1]:8081");
        assert_eq!(listen_to_url(":8081"), "http://127.0.0.1:8081");
        assert_eq!(listen_to_url("localhost:9"), "http://localhost:9");
        assert_eq!(
            listen_to_url("http://10.0.0.1:8081/"),
            "http://10.0.0.1:8081"
        );
        assert_eq!(normalize_url("127.0.0.1:8081/"), "http://127.0.0.1:8081");
        assert_eq!(normalize_url("http://h:1/base/"), "http://h:1/base");
    }

    #[test]
    fn target_precedence() {
        let no_env = |_: &str| None;
        let cfg = |_: &Path| Ok(("0.0.0.0:9001".to_string(), "${TOK:-cfgtoken}".to_string()));
        let failing = |_: &Path| -> Result<(String, String), String> {
            panic!("config must not be read when flags are given")
        };
        let p = Path::new("/x.yaml");

        // Flags (or env, merged by clap) win and the config is not read.
        let t = resolve_target(Some("h:1"), Some("tok"), Some(p), None, &failing, &no_env).unwrap();
        assert_eq!(t.url, "http://h:1");
        assert_eq!(t.token, "tok");

        // Both from config, with interpolation.
        let t = resolve_target(None, None, Some(p), None, &cfg, &no_env).unwrap();
        assert_eq!(t.url, "http://127.0.0.1:9001");
        assert_eq!(t.token, "cfgtoken");
        let env = |n: &str| (n == "TOK").then(|| "from-env".to_string());
        let t = resolve_target(None, None, Some(p), None, &cfg, &env).unwrap();
        assert_eq!(t.token, "from-env");

        // Mixed: flag URL, config token; default config path used when no -c.
        let t = resolve_target(Some("http://a:2"), None, None, Some(p), &cfg, &no_env).unwrap();
        assert_eq!(t.url, "http://a:2");
        assert_eq!(t.token, "cfgtoken");
        let t = resolve_target(None, Some("tok"), None, Some(p), &cfg, &no_env).unwrap();
        assert_eq!(t.url, "http://127.0.0.1:9001");
        assert_eq!(t.token, "tok");

        // Nothing anywhere.
        let e = resolve_target(None, Some("tok"), None, None, &cfg, &no_env).unwrap_err();
        assert!(e.contains("no admin URL"), "{e}");
        let e = resolve_target(Some("h:1"), Some("  "), None, None, &cfg, &no_env).unwrap_err();
        assert!(e.contains("no admin token"), "{e}");

        // Config problems are reported with the file name, never with a token.
        let broken =
            |_: &Path| -> Result<(String, String), String> { Err("no admin section".into()) };
        let e = resolve_target(None, None, Some(p), None, &broken, &no_env).unwrap_err();
        assert!(
            e.contains("/x.yaml") && e.contains("no admin section"),
            "{e}"
        );
        let unset = |_: &Path| Ok(("127.0.0.1:1".to_string(), "${UNSET_TOKEN}".to_string()));
        let e = resolve_target(None, None, Some(p), None, &unset, &no_env).unwrap_err();
        assert!(
            e.contains("admin.token") && e.contains("UNSET_TOKEN"),
            "{e}"
        );
        let empty = |_: &Path| Ok((String::new(), "tok".to_string()));
        let e = resolve_target(None, None, Some(p), None, &empty, &no_env).unwrap_err();
        assert!(e.contains("admin.listen"), "{e}");
    }

    #[test]
    fn top_level_commands() {
        match parse(&["serve", "-c", "/etc/t.yaml", "-d", "-u"])
            .unwrap()
            .command
        {
            Command::Serve {
                config,
                daemon,
                upgrade,
            } => {
                assert_eq!(config, PathBuf::from("/etc/t.yaml"));
                assert!(daemon && upgrade);
            }
            c => panic!("{c:?}"),
        }
        match parse(&["serve", "--conf", "t.yaml"]).unwrap().command {
            Command::Serve {
                daemon, upgrade, ..
            } => assert!(!daemon && !upgrade),
            c => panic!("{c:?}"),
        }
        match parse(&["check", "--conf", "t.yaml"]).unwrap().command {
            Command::Check { config } => assert_eq!(config, PathBuf::from("t.yaml")),
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            parse(&["version"]).unwrap().command,
            Command::Version
        ));
        assert_eq!(parse(&["serve"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["check"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&[]).unwrap_err().exit_code(), 2);
        assert_eq!(
            parse(&["--version"]).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayVersion
        );
    }

    #[test]
    fn admin_global_flags() {
        let a = match parse(&[
            "admin",
            "-c",
            "/c.yaml",
            "--url",
            "http://u:1",
            "--token",
            "tk",
            "--json",
            "users",
            "list",
        ])
        .unwrap()
        .command
        {
            Command::Admin(a) => a,
            c => panic!("{c:?}"),
        };
        assert_eq!(a.config, Some(PathBuf::from("/c.yaml")));
        assert_eq!(a.url.as_deref(), Some("http://u:1"));
        assert_eq!(a.token.as_deref(), Some("tk"));
        assert!(a.json);
        assert!(matches!(
            a.resource,
            AdminResource::Users {
                verb: UsersVerb::List
            }
        ));
        // Global flags are also accepted after the verb.
        let a = match parse(&["admin", "users", "list", "--json", "--url", "h:2"])
            .unwrap()
            .command
        {
            Command::Admin(a) => a,
            c => panic!("{c:?}"),
        };
        assert!(a.json);
        assert_eq!(a.url.as_deref(), Some("h:2"));
        // The Debug output never shows the token.
        let dbg = format!("{:?}", admin(&["users", "list"]));
        assert!(!dbg.contains("\"t\""), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    #[test]
    fn admin_users() {
        match admin(&["users", "add", "alice", "--email", "a@x.org"]).resource {
            AdminResource::Users {
                verb:
                    UsersVerb::Add {
                        name,
                        email,
                        limits,
                    },
            } => {
                assert_eq!(name, "alice");
                assert_eq!(email.as_deref(), Some("a@x.org"));
                assert_eq!(limits, LimitArgs::default());
            }
            r => panic!("{r:?}"),
        }
        match admin(&["users", "add", "github:123", "--rpd", "200"]).resource {
            AdminResource::Users {
                verb: UsersVerb::Add { name, limits, .. },
            } => {
                assert_eq!(name, "github:123");
                assert_eq!(limits.rpd, Some(200));
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            admin(&["users", "ls"]).resource,
            AdminResource::Users {
                verb: UsersVerb::List
            }
        ));
        match admin(&["users", "show", "bob"]).resource {
            AdminResource::Users {
                verb: UsersVerb::Show { name },
            } => assert_eq!(name, "bob"),
            r => panic!("{r:?}"),
        }
        match admin(&["users", "rm", "bob"]).resource {
            AdminResource::Users {
                verb: UsersVerb::Rm { name },
            } => assert_eq!(name, "bob"),
            r => panic!("{r:?}"),
        }
        parse_err(&["users", "add"]);
        parse_err(&["users", "show"]);
        parse_err(&["users", "frob", "x"]);
        parse_err(&["users"]);
    }

    #[test]
    fn admin_keys() {
        match admin(&[
            "keys",
            "create",
            "--user",
            "alice",
            "--label",
            "laptop",
            "--expires",
            "30d",
            "--models",
            "gpt-4o,gpt-4o-mini",
            "--rpm",
            "1",
            "--rph",
            "2",
            "--rpd",
            "3",
            "--tpm",
            "4",
            "--tpd",
            "5",
            "--images-per-day",
            "6",
            "--max-concurrent",
            "7",
        ])
        .resource
        {
            AdminResource::Keys {
                verb: KeysVerb::Create(k),
            } => {
                assert_eq!(k.user, "alice");
                assert_eq!(k.label.as_deref(), Some("laptop"));
                assert_eq!(k.expires, Some(Expiry::In(2_592_000)));
                assert_eq!(
                    k.models,
                    Some(vec!["gpt-4o".to_string(), "gpt-4o-mini".to_string()])
                );
                assert_eq!(
                    k.limits.fields(),
                    vec![
                        ("requests_per_minute", 1),
                        ("requests_per_hour", 2),
                        ("requests_per_day", 3),
                        ("tokens_per_minute", 4),
                        ("tokens_per_day", 5),
                        ("images_per_day", 6),
                        ("max_concurrent", 7),
                    ]
                );
            }
            r => panic!("{r:?}"),
        }
        match admin(&["keys", "create", "--user", "bob"]).resource {
            AdminResource::Keys {
                verb: KeysVerb::Create(k),
            } => {
                assert_eq!(k.user, "bob");
                assert!(k.label.is_none() && k.expires.is_none() && k.models.is_none());
                assert!(k.limits.to_json().is_none());
            }
            r => panic!("{r:?}"),
        }
        match admin(&["keys", "list", "--user", "bob"]).resource {
            AdminResource::Keys {
                verb: KeysVerb::List { user },
            } => assert_eq!(user.as_deref(), Some("bob")),
            r => panic!("{r:?}"),
        }
        match admin(&["keys", "list"]).resource {
            AdminResource::Keys {
                verb: KeysVerb::List { user },
            } => assert!(user.is_none()),
            r => panic!("{r:?}"),
        }
        match admin(&["keys", "show", "k1"]).resource {
            AdminResource::Keys {
                verb: KeysVerb::Show { id },
            } => assert_eq!(id, "k1"),
            r => panic!("{r:?}"),
        }
        match admin(&["keys", "revoke", "k1"]).resource {
            AdminResource::Keys {
                verb: KeysVerb::Revoke { id },
            } => assert_eq!(id, "k1"),
            r => panic!("{r:?}"),
        }
        match admin(&["keys", "rotate", "k1", "--grace", "1h"]).resource {
            AdminResource::Keys {
                verb: KeysVerb::Rotate { id, grace },
            } => {
                assert_eq!(id, "k1");
                assert_eq!(grace, Some(3600));
            }
            r => panic!("{r:?}"),
        }
        match admin(&["keys", "rotate", "k1"]).resource {
            AdminResource::Keys {
                verb: KeysVerb::Rotate { grace, .. },
            } => assert_eq!(grace, None),
            r => panic!("{r:?}"),
        }
        match admin(&["keys", "disable", "k1"]).resource {
            AdminResource::Keys {
                verb: KeysVerb::Disable { id },
            } => assert_eq!(id, "k1"),
            r => panic!("{r:?}"),
        }
        match admin(&["keys", "enable", "k1"]).resource {
            AdminResource::Keys {
                verb: KeysVerb::Enable { id },
            } => assert_eq!(id, "k1"),
            r => panic!("{r:?}"),
        }
        parse_err(&["keys", "create"]);
        parse_err(&["keys", "create", "--user", "a", "--expires", "soon"]);
        parse_err(&["keys", "create", "--user", "a", "--rpm", "-1"]);
        parse_err(&["keys", "create", "--user", "a", "--rpm", "many"]);
        parse_err(&["keys", "rotate", "k1", "--grace", "1y"]);
        parse_err(&["keys", "show"]);
    }

    #[test]
    fn admin_hosts() {
        match admin(&[
            "hosts",
            "set",
            "api.groq.com",
            "--key",
            "k1",
            "--key",
            "k2",
            "--origin",
            "https://api.groq.com",
        ])
        .resource
        {
            AdminResource::Hosts {
                verb: HostsVerb::Set { host, keys, origin },
            } => {
                assert_eq!(host, "api.groq.com");
                assert_eq!(keys, vec!["k1".to_string(), "k2".to_string()]);
                assert_eq!(origin.as_deref(), Some("https://api.groq.com"));
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            admin(&["hosts", "list"]).resource,
            AdminResource::Hosts {
                verb: HostsVerb::List
            }
        ));
        match admin(&["hosts", "rm", "vllm.internal:8000"]).resource {
            AdminResource::Hosts {
                verb: HostsVerb::Rm { host },
            } => assert_eq!(host, "vllm.internal:8000"),
            r => panic!("{r:?}"),
        }
        parse_err(&["hosts", "set"]);
        parse_err(&["hosts", "rm"]);
    }

    #[test]
    fn admin_usage() {
        match admin(&[
            "usage", "--user", "alice", "--key", "k1", "--since", "7d", "--by", "hour",
        ])
        .resource
        {
            AdminResource::Usage(u) => {
                assert_eq!(u.user.as_deref(), Some("alice"));
                assert_eq!(u.key.as_deref(), Some("k1"));
                assert_eq!(u.since, Some(604_800));
                assert_eq!(u.by, Some(UsageBy::Hour));
            }
            r => panic!("{r:?}"),
        }
        match admin(&["usage"]).resource {
            AdminResource::Usage(u) => {
                assert!(u.user.is_none() && u.key.is_none() && u.since.is_none() && u.by.is_none())
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(
            parse_err(&["usage", "--by", "week"]),
            clap::error::ErrorKind::InvalidValue
        );
        parse_err(&["usage", "--since", "yesterday"]);
    }

    #[test]
    fn admin_images() {
        match admin(&["images", "purge", "abc123"]).resource {
            AdminResource::Images {
                verb: ImagesVerb::Purge(p),
            } => {
                assert_eq!(p.hash.as_deref(), Some("abc123"));
                assert!(p.prompt.is_none());
            }
            r => panic!("{r:?}"),
        }
        match admin(&[
            "images",
            "purge",
            "--prompt",
            "a red fox",
            "--width",
            "512",
            "--height",
            "256",
            "--model",
            "flux",
            "--seed",
            "7",
        ])
        .resource
        {
            AdminResource::Images {
                verb: ImagesVerb::Purge(p),
            } => {
                assert!(p.hash.is_none());
                assert_eq!(p.prompt.as_deref(), Some("a red fox"));
                assert_eq!((p.width, p.height), (Some(512), Some(256)));
                assert_eq!(p.model.as_deref(), Some("flux"));
                assert_eq!(p.seed, Some(7));
            }
            r => panic!("{r:?}"),
        }
        parse_err(&["images", "purge"]);
        parse_err(&["images", "purge", "abc", "--prompt", "x"]);
        parse_err(&["images", "purge", "abc", "--width", "5"]);
    }
}
