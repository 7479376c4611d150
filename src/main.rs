//! `tollgate`: command-line dispatch only. The gateway lives in the library.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use tollgate::cli::{Cli, Command};
use tollgate::config::Config;

/// glibc's malloc was the largest single cost per proxied request (about a seventh of the
/// gateway's CPU time under load, much of it in `malloc_consolidate`); mimalloc's per-thread
/// free lists make the many small, short-lived allocations of a request cheap. It is built
/// without transparent huge pages (`no_thp`): with them, on the usual `madvise` THP setting,
/// the gateway's RSS was four times glibc's (254 MiB against 59 MiB after the same load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        if errors.is_empty() {
            eprintln!("{}: invalid configuration", path.display());
        }
        ExitCode::from(1)
    })
}

/// What the admin CLI needs from a config file: `admin.listen` and `admin.token`, raw (the
/// CLI interpolates them), so that variables the rest of the file needs may stay unset.
fn admin_endpoint(path: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc =
        Config::parse_uninterpolated(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let field = |name: &str| {
        doc.get("admin")
            .and_then(|a| a.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("{}: admin.{name} is not set", path.display()))
    };
    Ok((field("listen")?, field("token")?))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("tollgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => match load_config(&config) {
            Err(code) => code,
            Ok(config) => match tollgate::app::App::new(config.clone()) {
                Ok(_) => {
                    println!("{}", config.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            },
        },
        Command::Serve {
            config,
            daemon,
            upgrade,
        } => {
            env_logger::Builder::from_env(
                env_logger::Env::default().default_filter_or("warn,tollgate=info"),
            )
            .init();
            let config = match load_config(&config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match tollgate::build_server(config, daemon, upgrade) {
                Ok((server, app)) => {
                    server.run(pingora::server::RunArgs::default());
                    // Every service has stopped: no request can add usage any more.
                    app.write_behind();
                    app.relay.remove_own();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Admin(args) => {
            let code = tollgate::cli::run_admin(args, &admin_endpoint);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}
