//! Fills a Tollgate store directory with many gateway keys before the gateway starts, for
//! benchmarks that need a realistic key population (the benchmark scripts under `benches/`).
//!
//! Usage: `seed_keys --store DIR --keys N --print M [--user-prefix P] [--keys-per-user K]`
//!
//! `DIR` is the configuration's `storage.path`; the store is opened exactly as the gateway opens
//! it (`Store::open(storage.path, …)`, so sled lives in `DIR/db`). It writes `N` keys for
//! `ceil(N / K)` users named `P000000`, `P000001`, … (`P` defaults to `bench-`, `K` to 1),
//! flushes, and prints the secrets of the first `M` keys on stdout, one per line and nothing
//! else; progress and timing go to stderr.
//!
//! The records are the ones the admin API's `POST /admin/users` writes: a user without email
//! or limits, and keys with the default prefix `sk-tg-`, a random `key_…` id, source `admin`,
//! no expiry, no model list and no limits of their own. They are written to sled directly,
//! not through the admin API, because the admin API flushes sled before every reply, which
//! makes a hundred thousand keys take minutes instead of seconds; and sled's lock is
//! exclusive, so this runs while no gateway holds the directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tollgate::auth::{generate_id, generate_secret, hash_secret, hex};
use tollgate::store::{KeyRecord, Store, UserRecord};

const USAGE: &str = "usage: seed_keys --store DIR --keys N --print M [--user-prefix P] \
                     [--keys-per-user K]";

/// The default `auth.key_prefix`.
const KEY_PREFIX: &str = "sk-tg-";

/// The gateway's default `storage.cache_mb`.
const CACHE_MB: u64 = 64;

struct Args {
    store: PathBuf,
    keys: usize,
    print: usize,
    user_prefix: String,
    keys_per_user: usize,
}

fn parse_args() -> Result<Args, String> {
    let (mut store, mut keys, mut print) = (None, None, None);
    let mut user_prefix = String::from("bench-");
    let mut keys_per_user = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value)),
            _ => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = match inline {
            Some(value) => value.to_string(),
            None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        let number = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{name} needs a number, not {v:?}"))
        };
        match name.as_str() {
            "--store" => store = Some(PathBuf::from(value)),
            "--keys" => keys = Some(number(&value)?),
            "--print" => print = Some(number(&value)?),
            "--user-prefix" => user_prefix = value,
            "--keys-per-user" => keys_per_user = number(&value)?,
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let args = Args {
        store: store.ok_or("--store is required")?,
        keys: keys.ok_or("--keys is required")?,
        print: print.ok_or("--print is required")?,
        user_prefix,
        keys_per_user,
    };
    if args.print > args.keys {
        return Err(format!(
            "--print {} is more than the {} keys written",
            args.print, args.keys
        ));
    }
    if args.keys_per_user == 0 {
        return Err("--keys-per-user must be at least 1".into());
    }
    // The admin API's rule for user names (the number adds at most 20 characters).
    if args.user_prefix.len() > 180 || args.user_prefix.chars().any(|c| c.is_control() || c == '/')
    {
        return Err(
            "--user-prefix: at most 180 characters, without '/' or control characters".into(),
        );
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("seed_keys: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed_keys: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let shown = &args.store.display();
    // As the gateway does before it opens the store.
    std::fs::create_dir_all(&args.store).map_err(|e| format!("{shown}: {e}"))?;
    let store = Store::open(&args.store, CACHE_MB, Duration::ZERO)
        .map_err(|e| format!("cannot open the store at {shown} (is a gateway using it?): {e}"))?;

    let started = Instant::now();
    let users = args.keys.div_ceil(args.keys_per_user);
    let width = users.saturating_sub(1).to_string().len().max(6);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(users.max(1));
    let users_per_thread = users.div_ceil(threads).max(1);
    let now = tollgate::time::now_unix();

    // Each thread writes whole users with their keys and returns the secrets of its keys that
    // are among the first `print`; thread order is key order, so they join up in order.
    let printed: Vec<Vec<String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let store = &store;
                let first = t * users_per_thread;
                let end = users.min(first + users_per_thread);
                s.spawn(move || -> Result<Vec<String>, String> {
                    let (mut secrets, mut done) = (Vec::new(), 0usize);
                    for u in first..end {
                        let name = format!("{}{u:0width$}", args.user_prefix);
                        let user = UserRecord {
                            name: name.clone(),
                            email: None,
                            created_at: now,
                            limits: None,
                        };
                        if !store.insert_user(&user).map_err(|e| e.to_string())? {
                            return Err(format!(
                                "user `{name}` already exists in {shown}; seed an empty \
                                 directory or choose another --user-prefix"
                            ));
                        }
                        let keys =
                            u * args.keys_per_user..args.keys.min((u + 1) * args.keys_per_user);
                        for k in keys {
                            let secret = generate_secret(KEY_PREFIX);
                            let record = KeyRecord {
                                id: generate_id("key_"),
                                user: name.clone(),
                                created_at: now,
                                hash: hex(&hash_secret(&secret)),
                                source: "admin".into(),
                                created_ms: tollgate::time::now_unix_ms(),
                                ..KeyRecord::default()
                            };
                            store.put_key(&record, None).map_err(|e| e.to_string())?;
                            if k < args.print {
                                secrets.push(secret);
                            }
                            done += 1;
                            if t == 0 && done % 10_000 == 0 {
                                eprintln!(
                                    "seed_keys: about {} of {} keys written ({:.1} s)",
                                    done * threads,
                                    args.keys,
                                    started.elapsed().as_secs_f64()
                                );
                            }
                        }
                    }
                    Ok(secrets)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a writer thread panicked".into()))
            })
            .collect::<Result<_, _>>()
    })?;
    let written = started.elapsed();
    store
        .flush()
        .map_err(|e| format!("cannot flush the store at {shown}: {e}"))?;
    drop(store);
    eprintln!(
        "seed_keys: {} keys for {users} users written to {shown} with {threads} threads in \
         {:.1} s, flushed and closed in {:.1} s",
        args.keys,
        written.as_secs_f64(),
        (started.elapsed() - written).as_secs_f64()
    );

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for secret in printed.iter().flatten() {
        writeln!(out, "{secret}").map_err(|e| format!("cannot write the keys: {e}"))?;
    }
    out.flush()
        .map_err(|e| format!("cannot write the keys: {e}"))
}
