//! Headers on every gateway response (SPEC §3.7: request id, CORS, security headers, HSTS on
//! TLS listeners), the access log (§2 `access_log`, §3.4 keys never in logs) and the
//! Prometheus metrics (§6).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::mock::{MockUpstream, Mode};
use common::{start_with_user, GatewayConfig, TestGateway};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];
const HSTS: &str = "max-age=31536000; includeSubDomains";

async fn setup(extra: &str) -> (MockUpstream, TestGateway, String) {
    start_with_user(extra, "headers").await
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

fn header_values(resp: &reqwest::Response, name: &str) -> Vec<String> {
    resp.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn chat_body() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
}

/// `POST url` of `chat_body()`, with `key` or with no key at all.
fn chat_at(client: &reqwest::Client, url: &str, key: Option<&str>) -> reqwest::RequestBuilder {
    let req = client.post(url);
    match key {
        Some(key) => req.bearer_auth(key),
        None => req,
    }
    .json(&chat_body())
}

/// `POST /v1/chat/completions` of `chat_body()` to the gateway, with `key` or with no key.
fn chat(gw: &TestGateway, key: Option<&str>) -> reqwest::RequestBuilder {
    chat_at(&gw.http, &gw.url("/v1/chat/completions"), key)
}

/// A CORS preflight for `method` on `path` from `origin`.
fn preflight(gw: &TestGateway, path: &str, origin: &str, method: &str) -> reqwest::RequestBuilder {
    gw.http
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
}

/// Sends `req` and asserts the answer's status.
async fn send_expect(req: reqwest::RequestBuilder, status: u16) -> reqwest::Response {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), status);
    resp
}

/// A proxied 200, a local 401 and the local `/status`, each with `Origin: origin`.
async fn three_kinds(
    gw: &TestGateway,
    key: &str,
    origin: &str,
) -> Vec<(&'static str, reqwest::Response)> {
    let proxied = send_expect(chat(gw, Some(key)).header("origin", origin), 200).await;
    let unauthorized = send_expect(chat(gw, None).header("origin", origin), 401).await;
    let status = gw.http.get(gw.url("/status")).header("origin", origin);
    let status = send_expect(status, 200).await;
    vec![
        ("proxied", proxied),
        ("401", unauthorized),
        ("/status", status),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_needs_no_key_and_never_goes_upstream() {
    let (mock, gw, key) = setup("").await;
    let resp = preflight(
        &gw,
        "/v1/chat/completions",
        "https://somewhere.example",
        "POST",
    )
    .header(
        "access-control-request-headers",
        "authorization, content-type, x-custom-thing",
    );
    let resp = send_expect(resp, 204).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    let methods = header_values(&resp, "access-control-allow-methods");
    assert!(methods.contains(&"post".to_string()), "{methods:?}");
    let allowed = header_values(&resp, "access-control-allow-headers");
    for wanted in ["authorization", "content-type", "x-custom-thing"] {
        assert!(
            allowed.contains(&wanted.to_string()),
            "{wanted} not in {allowed:?}"
        );
    }
    let max_age: u64 = header(&resp, "access-control-max-age")
        .expect("access-control-max-age")
        .parse()
        .unwrap();
    assert!(max_age > 0);
    assert!(header(&resp, "x-tollgate-request-id").is_some());
    assert!(resp.bytes().await.unwrap().is_empty());

    // The next request reaches the upstream and is the only one it ever saw.
    send_expect(chat(&gw, Some(&key)), 200).await;
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.requests()[0].method, "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allow_list_echoes_listed_origins_only() {
    let (_mock, gw, key) = setup("cors: { allow_origins: [\"https://app.example\"] }").await;

    for (kind, resp) in three_kinds(&gw, &key, "https://app.example").await {
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some("https://app.example"),
            "{kind}"
        );
        let vary = header_values(&resp, "vary");
        assert!(
            vary.contains(&"origin".to_string()),
            "{kind}: vary {vary:?}"
        );
        let exposed = header_values(&resp, "access-control-expose-headers");
        for wanted in [
            "x-tollgate-request-id",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
            "retry-after",
            "idempotent-replayed",
        ] {
            assert!(
                exposed.contains(&wanted.to_string()),
                "{kind}: {wanted} not exposed: {exposed:?}"
            );
        }
    }

    for (kind, resp) in three_kinds(&gw, &key, "https://evil.example").await {
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            None,
            "{kind}: an unlisted origin must get no Access-Control-Allow-Origin"
        );
    }

    // A preflight from a listed origin is allowed, from another one not.
    let preflight_from = |origin| preflight(&gw, "/v1/chat/completions", origin, "POST").send();
    let resp = preflight_from("https://app.example").await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let resp = preflight_from("https://evil.example").await.unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
}

fn assert_security_headers(kind: &str, resp: &reqwest::Response) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(header(resp, name), Some(*value), "{kind}: {name}");
    }
    let policy = header(resp, "permissions-policy")
        .unwrap_or_else(|| panic!("{kind}: no permissions-policy"))
        .replace(' ', "");
    for feature in ["camera", "microphone", "geolocation", "payment", "usb"] {
        assert!(
            policy.contains(&format!("{feature}=()")),
            "{kind}: {feature} not off in {policy:?}"
        );
    }
}

/// Asserts the `Strict-Transport-Security` header of `resp` is `expected`.
fn assert_hsts(resp: &reqwest::Response, expected: Option<&str>, what: &str) {
    assert_eq!(
        header(resp, "strict-transport-security"),
        expected,
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_by_default_and_no_hsts_on_plain_http() {
    let (_mock, gw, key) = setup("").await;
    for (kind, resp) in three_kinds(&gw, &key, "https://app.example").await {
        assert_security_headers(kind, &resp);
        assert_hsts(&resp, None, &format!("{kind}: HSTS on a plain listener"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_false_sends_none_of_them() {
    let (_mock, gw, key) = setup("security_headers: false").await;
    for (kind, resp) in three_kinds(&gw, &key, "https://app.example").await {
        for name in SECURITY_HEADERS
            .iter()
            .map(|(n, _)| *n)
            .chain(["permissions-policy", "strict-transport-security"])
        {
            assert_eq!(header(&resp, name), None, "{kind}: {name}");
        }
        // Request id and CORS stay.
        assert!(header(&resp, "x-tollgate-request-id").is_some(), "{kind}");
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some("*"),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_only_on_tls_listeners() {
    let (_mock, mut gw, key) = setup("").await;
    let Some((cert, tls_key)) = common::self_signed_cert(&gw.dir) else {
        eprintln!(
            "SKIPPED hsts_only_on_tls_listeners: the `openssl` command is not installed, so no \
             certificate for a TLS listener could be made"
        );
        return;
    };

    // The harness writes plain listeners only: add a TLS listener to its config and restart.
    gw.stop();
    let tls_port = common::free_port();
    let yaml = std::fs::read_to_string(&gw.config_path).unwrap();
    let plain = format!("listen:\n  - addr: 127.0.0.1:{}\n", gw.port);
    assert!(yaml.contains(&plain), "unexpected harness config:\n{yaml}");
    let yaml = yaml.replace(
        &plain,
        &format!(
            "{plain}  - addr: 127.0.0.1:{tls_port}\n    tls: {{ cert: '{cert}', key: '{tls_key}' }}\n"
        ),
    );
    std::fs::write(&gw.config_path, yaml).unwrap();
    gw.spawn().await;

    let tls = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let tls_url = |path: &str| format!("https://127.0.0.1:{tls_port}{path}");
    let mut last_error = String::new();
    let mut status_resp = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while status_resp.is_none() && tokio::time::Instant::now() < deadline {
        match tls.get(tls_url("/status")).send().await {
            Ok(resp) => status_resp = Some(resp),
            Err(e) => {
                last_error = format!("{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let status_resp = status_resp.unwrap_or_else(|| {
        panic!(
            "TLS listener never answered: {last_error}\nstderr:\n{}",
            gw.stderr()
        )
    });
    assert_eq!(status_resp.status(), 200);

    let chat_url = tls_url("/v1/chat/completions");
    let proxied = send_expect(chat_at(&tls, &chat_url, Some(&key)), 200).await;
    let unauthorized = send_expect(chat_at(&tls, &chat_url, None), 401).await;
    for (kind, resp) in [
        ("TLS /status", &status_resp),
        ("TLS proxied", &proxied),
        ("TLS 401", &unauthorized),
    ] {
        assert_hsts(resp, Some(HSTS), kind);
        assert_security_headers(kind, resp);
    }

    // The plain listener of the same gateway: no HSTS.
    for (kind, resp) in three_kinds(&gw, &key, "https://app.example").await {
        assert_hsts(&resp, None, &format!("plain {kind}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_on_every_response_and_sent_upstream() {
    let (mock, gw, key) = setup("").await;
    let mut seen = HashSet::new();

    for i in 0..5 {
        let resp = send_expect(chat(&gw, Some(&key)), 200).await;
        let id = header(&resp, "x-tollgate-request-id")
            .expect("x-tollgate-request-id")
            .to_string();
        assert!(!id.is_empty());
        let recorded = &mock.requests()[i];
        assert_eq!(
            recorded.header("x-tollgate-request-id"),
            Some(id.as_str()),
            "the upstream must get the same request id"
        );
        assert!(seen.insert(id), "request id repeated");
    }

    for _ in 0..3 {
        let local = [
            (401, gw.http.get(gw.url("/v1/models")).send().await.unwrap()),
            (404, gw.get("/no/such/route", &key).send().await.unwrap()),
            (200, gw.http.get(gw.url("/status")).send().await.unwrap()),
            (
                204,
                preflight(&gw, "/v1/models", "https://app.example", "GET")
                    .send()
                    .await
                    .unwrap(),
            ),
        ];
        for (status, resp) in local {
            assert_eq!(resp.status().as_u16(), status);
            let id = header(&resp, "x-tollgate-request-id")
                .unwrap_or_else(|| panic!("{status}: no x-tollgate-request-id"))
                .to_string();
            assert_eq!(
                header(&resp, "x-request-id"),
                Some(id.as_str()),
                "{status}: a gateway-made response carries x-request-id = x-tollgate-request-id"
            );
            assert!(seen.insert(id), "request id repeated");
        }
    }
    assert_eq!(seen.len(), 17);
    assert_eq!(mock.request_count(), 5);
}

/// The access-log lines on stdout, each parsed as JSON.
fn access_log(gw: &TestGateway) -> Vec<Value> {
    gw.stdout()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request_and_no_secrets() {
    let (_mock, gw, key) = setup("").await;
    let query_secret = "sk-tg-QuerySecretQuerySecretQuerySecret0123";
    let bad_key = "sk-tg-WrongKeyWrongKeyWrongKeyWrongKey01234";
    let chat_path = format!("/v1/chat/completions?key={query_secret}");
    let models_path = format!("/v1/models?key={query_secret}&x=1");

    let requests = vec![
        (
            "POST",
            "/v1/chat/completions",
            200u16,
            gw.post("/v1/chat/completions", &key).json(&chat_body()),
        ),
        (
            "POST",
            "/v1/chat/completions",
            200,
            gw.post(&chat_path, &key).json(&chat_body()),
        ),
        ("GET", "/v1/models", 200, gw.get(&models_path, &key)),
        (
            "POST",
            "/v1/chat/completions",
            401,
            gw.post(&chat_path, bad_key).json(&chat_body()),
        ),
        ("GET", "/v1/models", 401, gw.http.get(gw.url("/v1/models"))),
        ("GET", "/status", 200, gw.http.get(gw.url("/status"))),
    ];
    let mut expected = Vec::new();
    for (method, path, status, req) in requests {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let id = header(&resp, "x-tollgate-request-id").unwrap().to_string();
        resp.bytes().await.unwrap();
        expected.push((id, method, path, status));
    }

    let logged = common::wait_until(WAIT, || {
        let lines = gw.stdout();
        expected.iter().all(|(id, ..)| lines.contains(id.as_str()))
    })
    .await;
    assert!(logged, "access-log lines missing; stdout:\n{}", gw.stdout());

    let lines = access_log(&gw);
    for (id, method, path, status) in &expected {
        let mine: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == *id).collect();
        assert_eq!(mine.len(), 1, "one line for {id}: {mine:?}");
        let line = mine[0];
        assert_eq!(line["method"], *method, "{line}");
        assert_eq!(line["path"], *path, "{line}");
        assert_eq!(line["status"], *status, "{line}");
    }

    let (stdout, stderr) = (gw.stdout(), gw.stderr());
    for secret in [key.as_str(), query_secret, bad_key] {
        assert!(!stdout.contains(secret), "a key reached stdout:\n{stdout}");
        assert!(!stderr.contains(secret), "a key reached stderr:\n{stderr}");
    }
}

/// One sample of Prometheus text: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let mut end = inner.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' | ' ' => {}
                    '=' => {
                        let mut value = String::new();
                        chars.next(); // opening quote
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => {
                                    if let Some((_, e)) = chars.next() {
                                        value.push(if e == 'n' { '\n' } else { e });
                                    }
                                }
                                '"' => break,
                                c => value.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            rest = &inner[end..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad metrics line: {line}"));
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// Sum of the samples called `name` whose labels include all of `labels`; None if none.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Fetches the metrics until `done` holds for them (or `WAIT` passes); returns the last text.
async fn metrics_when(gw: &TestGateway, done: impl Fn(&[Sample]) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = gw.metrics().await;
        if done(&parse_metrics(&text)) || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_traffic_without_unbounded_labels() {
    let mock = MockUpstream::start().await;
    // A second pool whose only backend refuses connections.
    let dead_port = common::free_port();
    let upstreams = format!(
        "upstreams:\n  openai:\n    backends: [\"{}\"]\n    keys: [sk-upstream-test]\n    connect_timeout_ms: 1000\n    read_timeout_ms: 5000\n  dead:\n    backends: [\"http://127.0.0.1:{dead_port}\"]\n    keys: []\n    connect_timeout_ms: 1000\nroutes:\n  - {{ prefix: /v1/embeddings, upstream: dead }}\n  - {{ prefix: /v1, upstream: openai }}\n",
        mock.url()
    );
    let gw = TestGateway::start(GatewayConfig::new(&mock.url()).upstreams(&upstreams)).await;
    let user = "metrics-user-zq";
    let created = gw
        .admin_expect(201, "POST", "/admin/users", Some(json!({"name": user})))
        .await;
    let key = created["key"]["key"].as_str().unwrap().to_string();
    let key_id = created["key"]["id"].as_str().unwrap().to_string();

    let chat_labels = |status| [("route", "/v1/chat/completions"), ("status", status)];
    for _ in 0..3 {
        let resp = send_expect(chat(&gw, Some(&key)), 200).await;
        resp.bytes().await.unwrap();
    }
    // A stream on another route, and a refused request.
    let stream = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "stream": true});
    let resp = send_expect(gw.post("/v1/completions", &key).json(&stream), 200).await;
    resp.bytes().await.unwrap();
    send_expect(chat(&gw, None), 401).await;

    let text = metrics_when(&gw, |s| {
        metric(s, "tollgate_requests_total", &chat_labels("200")) == Some(3.0)
            && metric(s, "tollgate_requests_total", &chat_labels("401")) == Some(1.0)
            && metric(s, "tollgate_active_requests", &[]) == Some(0.0)
    })
    .await;
    let s = parse_metrics(&text);
    let completions_200 = [("route", "/v1/completions"), ("status", "200")];
    let openai = [("upstream", "openai")];
    // Exact values.
    for (name, labels, value) in [
        ("tollgate_requests_total", &chat_labels("200")[..], 3.0),
        ("tollgate_requests_total", &chat_labels("401"), 1.0),
        ("tollgate_requests_total", &completions_200, 1.0),
        ("tollgate_active_requests", &[], 0.0),
        ("tollgate_active_streams", &[], 0.0),
    ] {
        assert_eq!(
            metric(&s, name, labels),
            Some(value),
            "{name} {labels:?}\n{text}"
        );
    }
    // At least this much.
    let chat_inf = [("route", "/v1/chat/completions"), ("le", "+Inf")];
    for (name, labels, least) in [
        (
            "tollgate_request_duration_seconds_bucket",
            &chat_inf[..],
            3.0,
        ),
        ("tollgate_upstream_duration_seconds_count", &openai, 4.0),
        ("tollgate_overhead_seconds_count", &[], 4.0),
    ] {
        let value = metric(&s, name, labels);
        assert!(
            value.is_some_and(|n| n >= least),
            "{name} {labels:?}\n{text}"
        );
    }
    // Present.
    for (name, labels) in [
        ("tollgate_upstream_duration_seconds_bucket", &openai[..]),
        ("tollgate_overhead_seconds_bucket", &[]),
    ] {
        assert!(
            metric(&s, name, labels).is_some(),
            "{name} {labels:?}\n{text}"
        );
    }
    assert_eq!(
        metric(&s, "tollgate_upstream_errors_total", &[]).unwrap_or(0.0),
        0.0,
        "no upstream failure yet:\n{text}"
    );

    // A backend that refuses the connection.
    let embeddings = json!({"model": "text-embedding-3-small", "input": "hi"});
    let resp = send_expect(gw.post("/v1/embeddings", &key).json(&embeddings), 502).await;
    resp.bytes().await.unwrap();
    // A backend that takes the request and closes the connection without an answer.
    mock.set_mode(Mode::DropConnection);
    let resp = send_expect(chat(&gw, Some(&key)), 502).await;
    resp.bytes().await.unwrap();
    mock.set_mode(Mode::Normal);

    let text = metrics_when(&gw, |s| {
        metric(s, "tollgate_requests_total", &chat_labels("502")) == Some(1.0)
            && metric(s, "tollgate_active_requests", &[]) == Some(0.0)
    })
    .await;
    let s = parse_metrics(&text);
    assert_eq!(
        metric(&s, "tollgate_requests_total", &chat_labels("502")),
        Some(1.0),
        "{text}"
    );

    // No label value carries a key, a key id or a user name.
    for sample in &s {
        for (label, value) in &sample.labels {
            for secret in [key.as_str(), key_id.as_str(), user, "sk-tg-"] {
                assert!(
                    !value.contains(secret),
                    "{}{{{label}=\"{value}\"}} carries {secret:?}",
                    sample.name
                );
            }
        }
    }

    let dead = metric(
        &s,
        "tollgate_upstream_errors_total",
        &[("upstream", "dead")],
    );
    assert!(
        dead.is_some_and(|n| n >= 1.0),
        "a refused connection must count in tollgate_upstream_errors_total:\n{text}"
    );
    let openai_errors = metric(&s, "tollgate_upstream_errors_total", &openai);
    assert!(
        openai_errors.is_some_and(|n| n >= 1.0),
        "an upstream that dropped the connection without answering (502 to the client) must \
         count in tollgate_upstream_errors_total{{upstream=\"openai\"}}:\n{text}"
    );
}

/// `tollgate_overhead_seconds` is the gateway's own time: an upstream that takes half a second
/// to answer shows in the request's and the upstream's durations, and is left out of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overhead_leaves_out_the_upstreams_time() {
    let (_mock, gw, key) = setup("").await;
    let chat_route = [("route", "/v1/chat/completions")];
    let openai = [("upstream", "openai")];
    let sums = |s: &[Sample]| {
        let sum = |name, labels| metric(s, name, labels).unwrap_or(0.0);
        [
            sum("tollgate_overhead_seconds_count", &[][..]),
            sum("tollgate_overhead_seconds_sum", &[]),
            sum("tollgate_request_duration_seconds_sum", &chat_route),
            sum("tollgate_upstream_duration_seconds_sum", &openai),
        ]
    };
    // The start-up's readiness checks are requests too: only this one's share counts.
    let before = sums(&parse_metrics(&gw.metrics().await));

    let resp = send_expect(chat(&gw, Some(&key)).header("x-mock-delay-ms", "500"), 200).await;
    resp.bytes().await.unwrap();
    // Observed at the end of the logging phase, after the response has gone out.
    let text = metrics_when(&gw, |s| sums(s)[0] == before[0] + 1.0).await;
    let after = sums(&parse_metrics(&text));
    let [count, overhead, total, upstream] = [0, 1, 2, 3].map(|i| after[i] - before[i]);

    assert_eq!(count, 1.0, "one request observed:\n{text}");
    assert!(upstream >= 0.5, "the upstream's delay: {upstream}\n{text}");
    assert!(total >= upstream, "{total} < {upstream}\n{text}");
    // Below the upstream's time, which it would include if that were not taken off.
    assert!(
        overhead > 0.0 && overhead < upstream,
        "overhead {overhead} against the upstream's {upstream}\n{text}"
    );
}
