//! The rest of the public API: `summary`, `ConfigError`'s `Display`, `LimitValues`, redacted `Debug`.

use super::*;
use crate::config::{LimitValues, LimitsSection};

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
