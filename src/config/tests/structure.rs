//! Structure: unknown keys, wrong types, required sections, YAML syntax, defaults.

use super::*;
use crate::config::{Byok, LimitsSection};

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
