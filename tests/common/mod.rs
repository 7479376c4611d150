//! Shared fixtures for the end-to-end tests: a running `tollgate` binary on free loopback
//! ports with its own data directory, pointed at a mock OpenAI upstream.
#![allow(dead_code)]

pub mod assert;
pub mod hosting;
pub mod mock;
pub mod oauth;
pub mod python;
pub mod serve;

use std::future::Future;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use mock::MockUpstream;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A port nobody listens on right now and that this test process has not handed out before.
///
/// The ports are counted out of a range the kernel never picks for `bind(0)` or outgoing
/// connections (outside `ip_local_port_range`). Asking the kernel for one instead lets it give
/// the same port to the next `bind(0)`, a mock's or another test's, before our gateway binds
/// it. Pingora then keeps retrying that listener for 30 s while serving on the others, so a
/// test whose admin port was taken quietly talked to another test's gateway.
pub fn free_port() -> u16 {
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = unassigned_port_range();
    let span = u32::from(high - low);
    // Test binaries run one after another; starting each at its own offset keeps a port a
    // previous binary's gateway may still be closing out of the way.
    let start = std::process::id() % span;
    loop {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free port left in {low}..{high}");
        let port = low + ((start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Ports below (or else above) the kernel's ephemeral range.
fn unassigned_port_range() -> (u16, u16) {
    const LOWEST: u16 = 10_000;
    const ENOUGH: u16 = 2_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut bounds = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32_768, 60_999));
    if ephemeral.0 >= LOWEST + ENOUGH {
        (LOWEST, ephemeral.0)
    } else if ephemeral.1 <= u16::MAX - ENOUGH {
        (ephemeral.1 + 1, u16::MAX)
    } else {
        panic!("the ephemeral port range {ephemeral:?} leaves no ports for the tests")
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-e2e-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `check` until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Polls an async condition until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that opens a new connection for every request. Tests of a feature whose refusals
/// go through Pingora's `fail_to_proxy` use it, so they do not depend on how the gateway treats
/// the client connection after such an error (`error_responses_leave_the_connection_usable` in
/// tests/proxy.rs tests that on its own).
pub fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The configuration of a test gateway; `{…}` placeholders are filled by `start`.
pub struct GatewayConfig {
    /// The `upstreams:` section (and `routes:` if wanted), verbatim YAML.
    pub upstreams: String,
    /// More top-level sections, verbatim YAML.
    pub extra: String,
    pub with_admin: bool,
    /// `server.grace_period_seconds`: how long a stopping or upgraded process keeps serving
    /// what it has in flight. 0 (the default) for quick stops.
    pub grace_period_s: u64,
}

impl GatewayConfig {
    /// One upstream `openai` at `upstream_url` with one provider key.
    pub fn new(upstream_url: &str) -> Self {
        GatewayConfig {
            upstreams: format!(
                "upstreams:\n  openai:\n    backends: [\"{upstream_url}\"]\n    keys: [sk-upstream-test]\n    connect_timeout_ms: 1000\n    read_timeout_ms: 5000\n"
            ),
            extra: String::new(),
            with_admin: true,
            grace_period_s: 0,
        }
    }

    pub fn upstreams(mut self, yaml: &str) -> Self {
        self.upstreams = yaml.to_string();
        self
    }

    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        if !yaml.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }
}

pub struct TestGateway {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub metrics_port: u16,
    pub http: reqwest::Client,
}

impl TestGateway {
    pub async fn start(config: GatewayConfig) -> TestGateway {
        let dir = temp_dir("gw");
        let (port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
        let admin = if config.with_admin {
            format!("admin:\n  listen: 127.0.0.1:{admin_port}\n  token: {ADMIN_TOKEN}\n")
        } else {
            String::new()
        };
        let yaml = format!(
            "server:\n  threads: 2\n  pid_file: {d}/tollgate.pid\n  upgrade_sock: {d}/upgrade.sock\n  grace_period_seconds: {grace}\n  graceful_shutdown_timeout_seconds: 1\nlisten:\n  - addr: 127.0.0.1:{port}\n{admin}metrics:\n  listen: 127.0.0.1:{metrics_port}\nstorage:\n  path: {d}/data\n  cache_mb: 8\n{ups}{extra}",
            d = dir.display(),
            grace = config.grace_period_s,
            ups = config.upstreams,
            extra = config.extra,
        );
        let config_path = dir.join("tollgate.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let mut gw = TestGateway {
            child: None,
            dir,
            config_path,
            port,
            admin_port,
            metrics_port,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        gw.spawn().await;
        gw
    }

    /// Starts the binary and waits until it serves (and, with an admin API, until its
    /// storage is open).
    pub async fn spawn(&mut self) {
        let stdout = std::fs::File::create(self.dir.join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(self.dir.join("stderr.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "-c"])
            .arg(&self.config_path)
            .env("RUST_LOG", "warn,tollgate=info")
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn tollgate");
        self.child = Some(child);
        let ready = self.wait_ready(Duration::from_secs(30)).await;
        assert!(ready, "gateway did not start; stderr:\n{}", self.stderr());
    }

    async fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("gateway exited early: {status}");
                    return false;
                }
            }
            let status_ok = self
                .http
                .get(self.url("/status"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            let store_ok = self.admin_port == 0
                || self
                    .http
                    .get(self.admin_url("/admin/users"))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
            if status_ok && store_ok {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Restarts the gateway with one more listener, on TLS with `cert`/`key`; returns its port.
    pub async fn add_tls_listener(&mut self, cert: &str, key: &str) -> u16 {
        self.stop();
        let tls_port = free_port();
        let yaml = std::fs::read_to_string(&self.config_path).unwrap();
        let plain = format!("listen:\n  - addr: 127.0.0.1:{}\n", self.port);
        assert!(yaml.contains(&plain), "unexpected harness config:\n{yaml}");
        let yaml = yaml.replace(
            &plain,
            &format!("{plain}  - addr: 127.0.0.1:{tls_port}\n    tls: {{ cert: '{cert}', key: '{key}' }}\n"),
        );
        std::fs::write(&self.config_path, yaml).unwrap();
        self.spawn().await;
        tls_port
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Stops the process (SIGKILL: tests that need a graceful stop send their own signal).
    /// A zero-downtime upgrade as systemd's `ExecReload` does it: a new process started with
    /// `-u` waits on the upgrade socket, the running one gets SIGQUIT, hands over its listening
    /// sockets and drains. Returns the old process (still draining) to wait for.
    pub async fn upgrade(&mut self) -> Child {
        let n = std::fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0);
        let stdout = std::fs::File::create(self.dir.join(format!("stdout.{n}.log"))).unwrap();
        let stderr = std::fs::File::create(self.dir.join(format!("stderr.{n}.log"))).unwrap();
        let new = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "-u", "-c"])
            .arg(&self.config_path)
            .env("RUST_LOG", "warn,tollgate=info")
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn tollgate -u");
        let sock = self.dir.join("upgrade.sock");
        let listening = wait_until(Duration::from_secs(30), || {
            std::fs::read_to_string("/proc/net/unix")
                .is_ok_and(|t| t.contains(&*sock.to_string_lossy()))
        })
        .await;
        assert!(listening, "the new process did not open the upgrade socket");
        let old = self.child.replace(new).expect("a running gateway");
        let status = Command::new("kill")
            .args(["-QUIT", &old.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        old
    }

    /// Waits until the process exits on its own; its exit code, or None on timeout or signal.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return status.code();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// An admin API call; returns status and JSON body (Null when empty).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Creates a user and returns its first key (secret).
    pub async fn create_user(&self, name: &str) -> String {
        let (status, body) = self
            .admin("POST", "/admin/users", Some(json!({"name": name})))
            .await;
        assert_eq!(status, 201, "{body}");
        body["key"]["key"].as_str().unwrap().to_string()
    }

    /// Creates a key for an existing user with extra fields; returns (id, secret).
    pub async fn create_key(&self, user: &str, spec: Value) -> (String, String) {
        let (status, body) = self
            .admin("POST", &format!("/admin/users/{user}/keys"), Some(spec))
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().to_string(),
            body["key"].as_str().unwrap().to_string(),
        )
    }

    /// An admin API call that must answer `status`; returns the JSON body.
    pub async fn admin_expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (got, reply) = self.admin(method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {reply}");
        reply
    }

    /// `GET /admin/keys/{id}`.
    pub async fn get_key(&self, id: &str) -> (u16, Value) {
        self.admin("GET", &format!("/admin/keys/{id}"), None).await
    }

    /// `PATCH /admin/keys/{id}` with `patch`.
    pub async fn patch_key(&self, id: &str, patch: Value) -> (u16, Value) {
        self.admin("PATCH", &format!("/admin/keys/{id}"), Some(patch))
            .await
    }

    /// `POST /admin/keys/{id}/rotate` with `body`.
    pub async fn rotate_key(&self, id: &str, body: Value) -> (u16, Value) {
        self.admin("POST", &format!("/admin/keys/{id}/rotate"), Some(body))
            .await
    }

    /// `DELETE /admin/keys/{id}`.
    pub async fn delete_key(&self, id: &str) -> (u16, Value) {
        self.admin("DELETE", &format!("/admin/keys/{id}"), None)
            .await
    }

    /// A chat completion for `model` on the public API with `key`: status and body (JSON when
    /// it parses, else a JSON string).
    pub async fn chat_reply(&self, key: &str, model: &str) -> (u16, Value) {
        let resp = self
            .post("/v1/chat/completions", key)
            .json(&chat_body(model))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn post(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(key)
    }

    pub fn get(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(key)
    }

    /// `POST /v1/chat/completions` of `chat_body("gpt-4o-mini")` with `key`, ready to send.
    pub fn chat_request(&self, key: &str) -> reqwest::RequestBuilder {
        self.post("/v1/chat/completions", key)
            .json(&chat_body("gpt-4o-mini"))
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A mock upstream and a gateway in front of it (with admin API); `extra` is more top-level
/// config YAML (none when empty).
pub async fn start_with_mock(extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await;
    let mut config = GatewayConfig::new(&mock.url());
    if !extra.is_empty() {
        config = config.extra(extra);
    }
    let gw = TestGateway::start(config).await;
    (mock, gw)
}

/// [`start_with_mock`], plus a user called `user`; returns its first key (secret) too.
pub async fn start_with_user(extra: &str, user: &str) -> (MockUpstream, TestGateway, String) {
    let (mock, gw) = start_with_mock(extra).await;
    let key = gw.create_user(user).await;
    (mock, gw, key)
}

/// A raw HTTP/1.1 exchange, for what reqwest would not send (bad framing, early hang-up).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    use std::io::Write;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// A self-signed certificate for 127.0.0.1 and localhost, made with the `openssl` command;
/// `None` when it is not installed.
pub fn self_signed_cert(dir: &std::path::Path) -> Option<(String, String)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Err(e) => {
            eprintln!("cannot run openssl ({e})");
            None
        }
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some((cert.display().to_string(), key.display().to_string()))
        }
    }
}

/// A test CA and a certificate it signed for localhost and 127.0.0.1, made with the `openssl`
/// command: `(ca.pem, cert.pem, key.pem)`. (rustls refuses a self-signed CA certificate used
/// as the server's own, so a trusted upstream needs the real shape: a CA and a leaf.)
pub fn ca_signed_cert(dir: &Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let steps: [Vec<String>; 3] = [
        [
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["-days", "2", "-subj", "/CN=tollgate-test-ca"].map(String::from))
        .chain([
            "-keyout".into(),
            path("ca.key"),
            "-out".into(),
            path("ca.pem"),
        ])
        .collect(),
        [
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["-subj", "/CN=localhost"].map(String::from))
        .chain([
            "-keyout".into(),
            path("key.pem"),
            "-out".into(),
            path("leaf.csr"),
        ])
        .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial"]
            .iter()
            .map(|s| s.to_string())
            .chain(["-in".into(), path("leaf.csr"), "-CA".into(), path("ca.pem")])
            .chain([
                "-CAkey".into(),
                path("ca.key"),
                "-out".into(),
                path("cert.pem"),
            ])
            .chain(["-extfile".into(), ext.display().to_string()])
            .collect(),
    ];
    for args in steps {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .expect("the `openssl` command is needed for TLS tests (make deps installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

/// Creates user `name` on `gw`; returns its first key as (id, secret).
pub async fn new_user(gw: &TestGateway, name: &str) -> (String, String) {
    let body = gw
        .admin_expect(201, "POST", "/admin/users", Some(json!({"name": name})))
        .await;
    let id = body["key"]["id"].as_str().unwrap_or_default().to_string();
    let secret = body["key"]["key"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty() && !secret.is_empty(), "{body}");
    (id, secret)
}

/// Whether process `pid` has exited (gone, or a zombie waiting to be reaped).
pub fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Sends SIGTERM to the gateway and waits up to `limit` until the process has exited (a zombie
/// until `stop` reaps it).
pub async fn terminate_gracefully(gw: &mut TestGateway, limit: Duration) {
    let pid = gw.pid();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
    let exited = wait_until(limit, || has_exited(pid)).await;
    assert!(exited, "the gateway did not exit after SIGTERM");
    gw.stop();
}

/// The prefixes after which the mock's answers carry timestamps and per-request ids.
pub const MOCK_VOLATILE: &[&str] = &[
    "\"created\":",
    "\"created_at\":",
    "chatcmpl-mock",
    "cmpl-mock",
    "resp_mock",
    "msg_mock",
];

/// Replaces the digits that follow each of `volatile` (timestamps and per-request ids that
/// legitimately differ between two otherwise identical mock answers) with `N`, leaving every
/// other byte as it was.
pub fn mask_digits_after(text: &str, volatile: &[&str]) -> String {
    let mut out = text.to_string();
    for prefix in volatile {
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(prefix) {
            let after = at + prefix.len();
            result.push_str(&rest[..after]);
            let digits = rest[after..].bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                result.push('N');
            }
            rest = &rest[after + digits..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}
