//! Whole files: the shipped examples, the SPEC example, and `Config::load`.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::*;
use crate::config::Byok;

#[test]
fn example_file_parses() {
    let text = include_str!("../../../conf/tollgate.yaml");
    let env = [
        ("TOLLGATE_ADMIN_TOKEN", "0123456789abcdef0123"),
        ("OPENAI_API_KEY", "sk-test"),
    ];
    let c = match parse_env(text, &env) {
        Ok(c) => c,
        Err(e) => panic!("conf/tollgate.yaml: {e:#?}"),
    };
    assert_eq!(c.storage.path, PathBuf::from("/var/lib/tollgate"));
    assert_eq!(c.server.pid_file, "/run/tollgate/tollgate.pid");
    assert_eq!(c.listen[0].addr, "0.0.0.0:8080");
    assert_eq!(c.admin.as_ref().unwrap().listen, "127.0.0.1:8081");
    assert_eq!(c.upstreams["openai"].keys, vec!["sk-test"]);
    assert!(
        c.hosts["api.groq.com"].keys.is_empty(),
        "GROQ_API_KEY unset: no key"
    );
    assert_eq!(c.auth.byok, Byok::Off);
    // Without the environment it names what is missing.
    let e: Vec<String> = parse_env(text, &[])
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_has(&e, "admin.token", "TOLLGATE_ADMIN_TOKEN");
    assert_has(&e, "upstreams.openai.keys[0]", "OPENAI_API_KEY");
    assert_eq!(e.len(), 2, "{e:#?}");
}

#[test]
fn minimal_test_file_parses() {
    let c = parse_env(include_str!("../../../conf/test-minimal.yaml"), &[]).unwrap();
    assert_eq!(c.server.grace_period_seconds, 0);
    assert!(c.upstreams["openai"].keys.is_empty());
}

/// The example of SPEC section 2, verbatim except the TLS file names (which must exist).
#[test]
fn spec_example_parses() {
    let (cert, key) = (temp_file(), temp_file());
    let text = SPEC_EXAMPLE
        .replace("/etc/tollgate/cert.pem", &cert)
        .replace("/etc/tollgate/key.pem", &key);
    let env = [
        ("TOLLGATE_ADMIN_TOKEN", "0123456789abcdef"),
        ("OPENAI_API_KEY", "sk-openai"),
        ("GROQ_API_KEY", "gsk-groq"),
        ("TOLLGATE_STATE_SECRET", "0123456789abcdef0123456789abcdef"),
        ("GITHUB_CLIENT_SECRET", "gh-secret"),
    ];
    let c = match parse_env(&text, &env) {
        Ok(c) => c,
        Err(e) => panic!("{e:#?}"),
    };
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.upstreams["openai"].keys, vec!["sk-openai"]);
    assert_eq!(c.hosts["api.groq.com"].keys, vec!["gsk-groq"]);
    assert_eq!(c.routes[0].prefix, "/v1/images");
    assert_eq!(c.oauth.as_ref().unwrap().providers.len(), 2);
    assert_eq!(
        c.summary(),
        "ok: 2 listeners, 2 upstreams (3 backends), 2 routes, 2 hosts, admin on 127.0.0.1:8081, \
             metrics on 127.0.0.1:9090, images via images, sign-in with github+google"
    );
    // The SPEC writes `keys: [${OPENAI_API_KEY}]` unquoted, which plain YAML cannot parse.
    assert!(serde_yaml::from_str::<Value>(&text).is_err());
}

const SPEC_EXAMPLE: &str = r#"
server:                      # handed to Pingora's ServerConf
  threads: 2
  pid_file: /run/tollgate/tollgate.pid
  upgrade_sock: /run/tollgate/upgrade.sock
  grace_period_seconds: 30
  graceful_shutdown_timeout_seconds: 10
listen:                      # public gateway listeners
  - addr: 0.0.0.0:8080
  - addr: 0.0.0.0:8443
    tls: { cert: /etc/tollgate/cert.pem, key: /etc/tollgate/key.pem }
admin:                       # admin API; absent = no admin API
  listen: 127.0.0.1:8081
  token: ${TOLLGATE_ADMIN_TOKEN}     # at least 16 characters
metrics:
  listen: 127.0.0.1:9090     # GET /metrics (Prometheus text format)
storage:
  path: /var/lib/tollgate    # sled database and image files live below it
  cache_mb: 64               # sled page cache
upstreams:                   # named pools
  openai:
    backends: [https://api.openai.com]   # scheme://host[:port][/base-path]
    keys: [${OPENAI_API_KEY}]            # injected as Authorization: Bearer, round-robin; may be empty
    connect_timeout_ms: 5000
    read_timeout_ms: 600000              # longest silence between two upstream bytes
    health_check: { path: /v1/models, interval_s: 15 }   # optional active check
    ca_file: null                        # optional PEM bundle trusted besides the system roots
  images:
    backends: [http://10.0.0.5:8000, https://img.example.com/v1]
    keys: [sk-backend]
routes:                      # first matching prefix wins; required when there are several upstreams
  - { prefix: /v1/images, upstream: images }
  - { prefix: /v1, upstream: openai }
hosts:                       # X-Host-Final allow-list; the admin API can add more at run time
  api.groq.com: { keys: [${GROQ_API_KEY}] }     # origin defaults to https://HOST
  vllm.internal: { origin: http://10.0.0.7:8000, keys: [] }   # optional origin and ca_file
auth:
  key_prefix: sk-tg-
  byok: off                  # off | optional | required
limits:                      # defaults for every key; 0 or absent = unlimited
  requests_per_minute: 600
  requests_per_hour: 0
  requests_per_day: 0
  tokens_per_minute: 0
  tokens_per_day: 0
  images_per_day: 0
  max_concurrent: 0
  max_body_bytes: 33554432   # default 32 MiB
idempotency:
  ttl_s: 86400
  inflight_timeout_s: 600
  max_response_bytes: 16777216
images:
  upstream: images
  default_model: gpt-image-1
  default_size: 1024x1024
  max_cache_bytes: 10737418240
  store_generations: false   # store b64 images of /v1/images/* responses and return URLs instead
  public_url: https://gw.example.com   # base of returned image URLs
  hosting: null              # or { provider: smms | picgo | cloudflare_imgbed, key: …, url: …, auth_code: … }
models: null                 # optional list of {id, owned_by}; when set, GET /v1/models is answered locally
oauth:                       # optional sign-in that issues keys (section 3.8)
  redirect_base: https://gw.example.com   # public base URL; callbacks go to {redirect_base}/auth/{name}/callback
  state_secret: ${TOLLGATE_STATE_SECRET}  # HMAC key for the state parameter, at least 32 characters
  providers:
    github: { type: github, client_id: Iv1.abc, client_secret: ${GITHUB_CLIENT_SECRET} }   # base_url/api_url for GitHub Enterprise
    google: { type: oidc, issuer: https://accounts.google.com, client_id: …, client_secret: … }
  allowed_emails: ["*@example.com"]       # optional; verified e-mail addresses only
  allowed_redirects: ["http://127.0.0.1:*/*", "https://app.example.com/*"]   # where login may send keys back
  new_user_limits: { requests_per_day: 200 }
  max_keys_per_user: 5                    # sign-in keys beyond this revoke the oldest
cors:                        # absent = allow every origin
  allow_origins: ["*"]
  max_age_s: 86400
security_headers: true
access_log: true             # one JSON line per request on stdout
"#;

#[test]
fn load_reads_a_file_and_reports_a_missing_one() {
    let e = Config::load(Path::new("/nonexistent/tollgate.yaml")).unwrap_err();
    assert_eq!(e[0].path, "/nonexistent/tollgate.yaml");
    assert!(e[0].to_string().contains("cannot read"));
    let p = std::env::temp_dir().join(format!("tollgate-cfg-load-{}.yaml", std::process::id()));
    std::fs::write(&p, BASE).unwrap();
    assert_eq!(Config::load(&p).unwrap().listen[0].addr, "127.0.0.1:8080");
    let _ = std::fs::remove_file(&p);
}
