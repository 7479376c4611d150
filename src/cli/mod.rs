//! Command line of the `tollgate` binary (SPEC section 1).
//!
//! This module holds the clap definitions, the small pure helpers the admin client needs
//! (durations, RFC 3339 timestamps, `${VAR}` interpolation, listen address → URL) and
//! [`run_admin`], which resolves the admin API's URL and token and hands over to
//! [`crate::admin::client`].
//!
//! The helpers live in `parse` (durations, expiry) and `target` (URL and token resolution,
//! `${VAR}` interpolation); they are re-exported here.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

mod parse;
mod target;
#[cfg(test)]
mod tests;

pub use parse::{parse_duration, parse_expiry};
pub use target::{interpolate_with, listen_to_url, normalize_url, resolve_target, AdminTarget};

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
    /// Set a user's limits (across all its keys) to exactly the ones given.
    Limits {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Remove all of the user's own limits.
        #[arg(long, conflicts_with_all = ["rpm", "rph", "rpd", "tpm", "tpd", "images_per_day", "max_concurrent"])]
        clear: bool,
    },
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
    /// Set a key's own limits to exactly the ones given (the config defaults fill the rest).
    Limits {
        id: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Remove all of the key's own limits.
        #[arg(long, conflicts_with_all = ["rpm", "rph", "rpd", "tpm", "tpd", "images_per_day", "max_concurrent"])]
        clear: bool,
    },
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
