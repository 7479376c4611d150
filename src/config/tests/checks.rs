//! Semantic checks, section by section.

use super::*;
use crate::config::features::parse_size;
use crate::config::{HostingProvider, LimitValues, OauthKind};

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
