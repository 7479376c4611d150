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
    let broken = |_: &Path| -> Result<(String, String), String> { Err("no admin section".into()) };
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
