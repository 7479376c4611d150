//! End-to-end tests of the `tollgate` command line (SPEC §1): `version`, `check`, `serve` on a bad
//! config, and the `admin` client against a running gateway.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, start_with_mock, temp_dir, TestGateway, ADMIN_TOKEN};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// helpers

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// Variables that would change what the CLI does; removed unless a test sets them.
const AMBIENT: &[&str] = &["TOLLGATE_ADMIN_URL", "TOLLGATE_ADMIN_TOKEN"];

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the binary with `args`; `env` is applied after the ambient admin variables and
/// everything in `remove` are removed.
fn run(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for name in AMBIENT.iter().chain(remove) {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tollgate");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `run` off the async threads; asserts the admin token never reaches the output.
async fn cli(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> Out {
    let shown = args.join(" ");
    let owned = |items: &[&str]| -> Vec<String> { items.iter().map(|s| s.to_string()).collect() };
    let (args, remove) = (owned(args), owned(remove));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
        run(&args, &env, &remove)
    })
    .await
    .unwrap();
    assert!(
        !out.all().contains(ADMIN_TOKEN),
        "`tollgate {shown}` printed the admin token:\n{}",
        out.all()
    );
    out
}

/// `tollgate check -c PATH`, with `env` set and the variables in `remove` unset.
fn check(path: &Path, env: &[(&str, &str)], remove: &[&str]) -> Out {
    run(&["check", "-c", path.to_str().unwrap()], env, remove)
}

/// Writes `yaml` to `dir/name` and runs `check` on it with the variables in `unset` unset;
/// returns the file's path and the outcome.
fn write_and_check(dir: &Path, name: &str, yaml: &str, unset: &[&str]) -> (PathBuf, Out) {
    let path = write(dir, name, yaml);
    let out = check(&path, &[], unset);
    (path, out)
}

/// The URL of the gateway's admin API.
fn admin_url(gw: &TestGateway) -> String {
    format!("http://127.0.0.1:{}", gw.admin_port)
}

/// `tollgate admin --url URL --token TOKEN ARGS`.
async fn admin_at(url: &str, token: &str, args: &[&str]) -> Out {
    let mut full = vec!["admin", "--url", url, "--token", token];
    full.extend_from_slice(args);
    cli(&full, &[], &[]).await
}

/// `tollgate admin --url … --token … ARGS` against `gw`.
async fn admin(gw: &TestGateway, args: &[&str]) -> Out {
    admin_at(&admin_url(gw), ADMIN_TOKEN, args).await
}

/// `admin` and expects exit 0.
async fn admin_ok(gw: &TestGateway, args: &[&str]) -> Out {
    let out = admin(gw, args).await;
    assert_eq!(out.code, 0, "tollgate admin {args:?} failed: {out:?}");
    out
}

/// The first `sk-tg-` key (prefix and 40 alphanumerics) in `text`.
fn find_key(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(i) = rest.find("sk-tg-") {
        let tail = &rest[i + 6..];
        let n = tail.bytes().take_while(u8::is_ascii_alphanumeric).count();
        if n == 40 {
            return Some(format!("sk-tg-{}", &tail[..40]));
        }
        rest = tail;
    }
    None
}

fn all_keys(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(k) = find_key(rest) {
        let at = rest.find(&k).unwrap() + k.len();
        out.push(k);
        rest = &rest[at..];
    }
    out
}

/// Public API status of a chat completion with `key`, and the error code if any.
async fn chat(gw: &TestGateway, key: &str) -> (u16, String) {
    let (status, body) = gw.chat_reply(key, "gpt-4o-mini").await;
    let code = body["error"]["code"].as_str().unwrap_or_default();
    (status, code.to_string())
}

fn json_of(out: &Out) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}", out.stdout))
}

fn items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        _ => v["data"].as_array().cloned().unwrap_or_default(),
    }
}

/// The item of the `--json` list in `out` whose `field` is `value`.
fn json_item(out: &Out, field: &str, value: &str) -> Value {
    items(&json_of(out))
        .into_iter()
        .find(|item| item[field] == value)
        .unwrap_or_else(|| panic!("no {field} {value}: {}", out.stdout))
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SS[.f]Z`.
fn unix_of(ts: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| -> i64 { ts[r].parse().unwrap() };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    assert!(ts.ends_with('Z'), "not UTC: {ts}");
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A valid config for `check`; `{dir}` is the storage directory.
fn valid_yaml(dir: &Path) -> String {
    format!(
        "listen:\n  - addr: 127.0.0.1:18080\nadmin:\n  listen: 127.0.0.1:18081\n  token: 0123456789abcdef-admin\nstorage:\n  path: {}/data\nupstreams:\n  openai:\n    backends: [http://127.0.0.1:9]\n    keys: [sk-upstream]\n",
        dir.display()
    )
}

/// Asserts a line of `stderr` starts with `path` followed by `:` (and, if given, contains `also`).
fn assert_problem(stderr: &str, path: &str, also: Option<&str>) {
    let found = stderr.lines().any(|line| {
        line.trim_start()
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with(':'))
            && also.is_none_or(|a| line.contains(a))
    });
    assert!(
        found,
        "no problem reported at `{path}`{}:\n{stderr}",
        also.map(|a| format!(" mentioning `{a}`"))
            .unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// 1. version

#[test]
fn version_prints_the_version() {
    let out = run(&["version"], &[], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "version output: {out:?}"
    );
}

#[test]
fn unknown_command_is_a_usage_error() {
    let out = run(&["frobnicate"], &[], &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(!out.stderr.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. check and serve

#[test]
fn check_accepts_a_valid_config() {
    let dir = temp_dir("cli-check-ok");
    let (_, out) = write_and_check(&dir, "ok.yaml", &valid_yaml(&dir), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "summary is not one line: {out:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_reports_every_problem_with_its_path() {
    let dir = temp_dir("cli-check-bad");
    let yaml = format!(
        "listen:\n  - addr: 127.0.0.1:18080\nadmin:\n  listen: 127.0.0.1:18081\n  token: short-token\nstorage:\n  path: {}/data\nupstreams:\n  openai:\n    backends: [\"ftp://api.example.com\"]\n    bakends: [http://127.0.0.1:9]\n    keys: []\nroutes:\n  - {{ prefix: /v1, upstream: missing }}\n",
        dir.display()
    );
    let (_, out) = write_and_check(&dir, "bad.yaml", &yaml, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_problem(&out.stderr, "upstreams.openai.bakends", None);
    assert_problem(&out.stderr, "upstreams.openai.backends[0]", None);
    assert_problem(&out.stderr, "routes[0].upstream", Some("missing"));
    assert_problem(&out.stderr, "admin.token", None);
    assert!(
        !out.stderr.contains("short-token"),
        "the token is echoed: {}",
        out.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_refuses_a_bad_config_with_the_same_messages() {
    let dir = temp_dir("cli-serve-bad");
    let yaml = format!(
        "listen:\n  - addr: 127.0.0.1:{}\nadmin:\n  listen: 127.0.0.1:{}\n  token: short-token\nstorage:\n  path: {}/data\nupstreams:\n  openai:\n    backends: [\"ftp://api.example.com\"]\n    bakends: [http://127.0.0.1:9]\nroutes:\n  - {{ prefix: /v1, upstream: missing }}\n",
        free_port(),
        free_port(),
        dir.display()
    );
    let (path, check) = write_and_check(&dir, "bad.yaml", &yaml, &[]);
    assert_eq!(check.code, 1, "{check:?}");

    let out = serve_expecting_exit(&path);
    assert_ne!(out.code, 0, "serve: {}", out.stderr);
    let stderr = out.stderr;
    for line in check.stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            stderr.contains(line),
            "serve did not report `{line}`:\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `serve -c path` for a config it must refuse: waits for it to exit.
fn serve_expecting_exit(path: &Path) -> Out {
    let mut child = Command::new(BIN)
        .args(["serve", "-c", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A safety net only: a serve that accepted the config would run forever.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve kept running; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn serve_refuses_an_address_another_process_listens_on() {
    // Pingora alone would retry a taken address for 30 s and then run on without that
    // listener; a cold start must stop with the address's path instead.
    for taken in ["listen[1].addr", "admin.listen", "metrics.listen"] {
        let dir = temp_dir("cli-serve-taken");
        let holder = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
        let held = holder.local_addr().unwrap().to_string();
        let addr = |path: &str| {
            if path == taken {
                held.clone()
            } else {
                format!("127.0.0.1:{}", free_port())
            }
        };
        let yaml = format!(
            "server:\n  pid_file: {d}/tollgate.pid\n  upgrade_sock: {d}/upgrade.sock\nlisten:\n  - addr: {}\n  - addr: {}\nadmin:\n  listen: {}\n  token: {ADMIN_TOKEN}\nmetrics:\n  listen: {}\nstorage:\n  path: {d}/data\nupstreams:\n  openai:\n    backends: [http://127.0.0.1:9]\n    keys: [sk-upstream]\n",
            addr("listen[0].addr"),
            addr("listen[1].addr"),
            addr("admin.listen"),
            addr("metrics.listen"),
            d = dir.display()
        );
        let path = write(&dir, "taken.yaml", &yaml);
        let out = serve_expecting_exit(&path);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr.contains(&format!(
                "{taken}: cannot listen on {held}: another process is listening on it"
            )),
            "{taken}: {}",
            out.stderr
        );
        assert!(
            !dir.join("data").exists(),
            "{taken}: storage was opened before the refusal"
        );
        drop(holder);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn check_names_an_unset_variable_and_its_path() {
    let dir = temp_dir("cli-check-env");
    let yaml = valid_yaml(&dir).replace("sk-upstream", "${TOLLGATE_TEST_UNSET_VAR_A}")
        + "hosts:\n  api.groq.com: { keys: [\"${TOLLGATE_TEST_UNSET_VAR_B}\"] }\n";
    let unset = ["TOLLGATE_TEST_UNSET_VAR_A", "TOLLGATE_TEST_UNSET_VAR_B"];
    let (path, out) = write_and_check(&dir, "env.yaml", &yaml, &unset);
    assert_eq!(out.code, 1, "{out:?}");
    assert_problem(
        &out.stderr,
        "upstreams.openai.keys[0]",
        Some("TOLLGATE_TEST_UNSET_VAR_A"),
    );
    // A host name has dots: its path segment may be quoted.
    let b = Some("TOLLGATE_TEST_UNSET_VAR_B");
    let quoted = "hosts.\"api.groq.com\".keys[0]";
    if !out.stderr.contains(quoted) {
        assert_problem(&out.stderr, "hosts.api.groq.com.keys[0]", b);
    } else {
        assert_problem(&out.stderr, quoted, b);
    }

    // Set, both pass.
    let out = check(
        &path,
        &[
            ("TOLLGATE_TEST_UNSET_VAR_A", "sk-a"),
            ("TOLLGATE_TEST_UNSET_VAR_B", "sk-b"),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_applies_variable_defaults() {
    let dir = temp_dir("cli-check-default");
    let yaml = valid_yaml(&dir)
        .replace("sk-upstream", "${TOLLGATE_TEST_UNSET_VAR_C:-sk-default}")
        .replace(
            "0123456789abcdef-admin",
            "${TOLLGATE_TEST_UNSET_VAR_D:-0123456789abcdef-from-default}",
        );
    let unset = ["TOLLGATE_TEST_UNSET_VAR_C", "TOLLGATE_TEST_UNSET_VAR_D"];
    let (_, out) = write_and_check(&dir, "default.yaml", &yaml, &unset);
    assert_eq!(out.code, 0, "{out:?}");

    // The default is what gets validated: a short default token is refused as too short.
    let yaml = valid_yaml(&dir).replace(
        "0123456789abcdef-admin",
        "${TOLLGATE_TEST_UNSET_VAR_D:-tiny}",
    );
    let (path, out) = write_and_check(&dir, "short-default.yaml", &yaml, &unset);
    assert_eq!(out.code, 1, "{out:?}");
    assert_problem(&out.stderr, "admin.token", None);
    assert!(
        !out.stderr.contains("TOLLGATE_TEST_UNSET_VAR_D"),
        "a variable with a default was reported unset: {}",
        out.stderr
    );
    // An environment value wins over the default.
    let out = check(
        &path,
        &[("TOLLGATE_TEST_UNSET_VAR_D", "0123456789abcdef-from-env")],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_accepts_the_annotated_example() {
    let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/tollgate.yaml"));
    let out = check(
        example,
        &[
            ("TOLLGATE_ADMIN_TOKEN", "example-admin-token-0123456789"),
            ("OPENAI_API_KEY", "sk-example-openai"),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{out:?}"
    );
    // Without the variables, both are named.
    let out = check(example, &[], &["TOLLGATE_ADMIN_TOKEN", "OPENAI_API_KEY"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_problem(&out.stderr, "admin.token", Some("TOLLGATE_ADMIN_TOKEN"));
    assert_problem(
        &out.stderr,
        "upstreams.openai.keys[0]",
        Some("OPENAI_API_KEY"),
    );
}

#[test]
fn check_refuses_a_missing_tls_certificate() {
    let dir = temp_dir("cli-check-tls");
    let yaml = valid_yaml(&dir).replace(
        "listen:\n  - addr: 127.0.0.1:18080\n",
        &format!(
            "listen:\n  - addr: 127.0.0.1:18080\n  - addr: 127.0.0.1:18443\n    tls: {{ cert: {d}/missing-cert.pem, key: {d}/missing-key.pem }}\n",
            d = dir.display()
        ),
    );
    let (_, out) = write_and_check(&dir, "tls.yaml", &yaml, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_problem(&out.stderr, "listen[1].tls.cert", None);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_refuses_unreadable_and_malformed_files() {
    let dir = temp_dir("cli-check-files");
    let missing = dir.join("nope.yaml");
    let out = check(&missing, &[], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nope.yaml"), "{out:?}");
    let (_, out) = write_and_check(&dir, "broken.yaml", "listen: [\n  - addr: {\n", &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.trim().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// 3. the admin client

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_users_from_url_config_and_env() {
    let (_mock, gw) = start_with_mock("").await;

    let out = admin_ok(&gw, &["users", "add", "alice", "--email", "a@x"]).await;
    let key = find_key(&out.stdout).unwrap_or_else(|| panic!("no key printed: {out:?}"));
    assert_eq!(chat(&gw, &key).await, (200, String::new()));

    // -c instead of --url/--token.
    let config = gw.config_path.to_str().unwrap();
    let out = cli(&["admin", "-c", config, "users", "list"], &[], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("alice"), "{out:?}");
    assert!(out.stdout.contains("a@x"), "{out:?}");
    assert!(find_key(&out.stdout).is_none(), "list shows a key: {out:?}");

    // The environment.
    let url = admin_url(&gw);
    let env = [
        ("TOLLGATE_ADMIN_URL", url.as_str()),
        ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let out = cli(&["admin", "users", "show", "alice"], &env, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("alice") && out.stdout.contains("a@x"),
        "{out:?}"
    );

    // --json is valid JSON and carries the user with its key id.
    let out = admin_ok(&gw, &["--json", "users", "list"]).await;
    let alice = json_item(&out, "name", "alice");
    assert_eq!(alice["keys"].as_array().map(Vec::len), Some(1));
    let out = admin_ok(&gw, &["--json", "users", "show", "alice"]).await;
    assert_eq!(json_of(&out)["email"], "a@x");
    // Global flags after the verb.
    let out = admin_ok(&gw, &["users", "list", "--json"]).await;
    json_of(&out);

    // Error replies: exit 1 with the message.
    let out = admin(&gw, &["users", "show", "nobody"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.all().contains("not found"), "{out:?}");
    let out = admin(&gw, &["users", "add", "alice"]).await;
    assert_eq!(out.code, 1, "duplicate user: {out:?}");
    assert!(!out.all().trim().is_empty());

    // users rm: the key stops working.
    let out = admin_ok(&gw, &["users", "rm", "alice"]).await;
    assert!(out.stdout.contains("alice"), "{out:?}");
    assert_eq!(chat(&gw, &key).await, (401, "invalid_api_key".into()));
    let out = admin(&gw, &["users", "show", "alice"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let out = admin(&gw, &["users", "rm", "alice"]).await;
    assert_eq!(out.code, 1, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_lifecycle() {
    let (_mock, gw) = start_with_mock("").await;
    let out = admin_ok(&gw, &["users", "add", "alice"]).await;
    let first = find_key(&out.stdout).expect("first key");

    let out = admin_ok(
        &gw,
        &[
            "keys",
            "create",
            "--user",
            "alice",
            "--label",
            "ci",
            "--expires",
            "30d",
            "--models",
            "gpt-4o-mini",
            "--rpm",
            "10",
        ],
    )
    .await;
    let key = find_key(&out.stdout).unwrap_or_else(|| panic!("no key printed: {out:?}"));
    assert_ne!(key, first);
    assert_eq!(chat(&gw, &key).await, (200, String::new()));

    // Find its id through the JSON listing.
    let out = admin_ok(&gw, &["--json", "keys", "list", "--user", "alice"]).await;
    let listed = items(&json_of(&out));
    assert_eq!(listed.len(), 2, "{}", out.stdout);
    let record = listed
        .iter()
        .find(|k| k["label"] == "ci")
        .unwrap_or_else(|| panic!("no key labelled ci: {}", out.stdout))
        .clone();
    let id = record["id"].as_str().unwrap().to_string();
    assert_eq!(record["models"], serde_json::json!(["gpt-4o-mini"]));
    assert_eq!(record["limits"]["requests_per_minute"], 10, "{record}");
    let created = unix_of(record["created_at"].as_str().unwrap());
    let expires = unix_of(record["expires_at"].as_str().expect("expires_at"));
    assert!(
        (expires - created - 30 * 86_400).abs() <= 5,
        "--expires 30d gave {record}"
    );
    assert!(all_keys(&out.stdout).is_empty(), "listing shows keys");

    // Human listing and show.
    let out = admin_ok(&gw, &["keys", "list", "--user", "alice"]).await;
    assert!(
        out.stdout.contains(&id) && out.stdout.contains("ci"),
        "{out:?}"
    );
    assert!(all_keys(&out.stdout).is_empty(), "{out:?}");
    let out = admin_ok(&gw, &["keys", "list"]).await;
    assert!(out.stdout.contains(&id), "{out:?}");
    let out = admin_ok(&gw, &["keys", "show", &id]).await;
    assert!(out.stdout.contains(&id), "{out:?}");
    assert!(out.stdout.contains("ci"), "{out:?}");
    assert!(out.stdout.contains("gpt-4o-mini"), "{out:?}");
    assert!(all_keys(&out.stdout).is_empty(), "{out:?}");
    let out = admin(&gw, &["keys", "show", "key_doesnotexist"]).await;
    assert_eq!(out.code, 1, "{out:?}");

    // Disable / enable.
    admin_ok(&gw, &["keys", "disable", &id]).await;
    assert_eq!(chat(&gw, &key).await, (403, "key_disabled".into()));
    let out = admin_ok(&gw, &["--json", "keys", "show", &id]).await;
    assert_eq!(json_of(&out)["disabled"], true);
    admin_ok(&gw, &["keys", "enable", &id]).await;
    assert_eq!(chat(&gw, &key).await, (200, String::new()));

    // Rotate with grace: both secrets work.
    let out = admin_ok(&gw, &["keys", "rotate", &id, "--grace", "1h"]).await;
    let rotated = find_key(&out.stdout).unwrap_or_else(|| panic!("no new key: {out:?}"));
    assert_ne!(rotated, key);
    assert_eq!(chat(&gw, &key).await, (200, String::new()), "old secret");
    assert_eq!(
        chat(&gw, &rotated).await,
        (200, String::new()),
        "new secret"
    );
    let out = admin_ok(&gw, &["--json", "keys", "show", &id]).await;
    assert_eq!(json_of(&out)["id"], id.as_str(), "rotation keeps the id");

    // Revoke: both secrets dead at once.
    admin_ok(&gw, &["keys", "revoke", &id]).await;
    assert_eq!(chat(&gw, &rotated).await, (401, "invalid_api_key".into()));
    assert_eq!(chat(&gw, &key).await, (401, "invalid_api_key".into()));
    let out = admin(&gw, &["keys", "revoke", &id]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(chat(&gw, &first).await, (200, String::new()));

    // Rotate without grace: the old secret dies at once.
    let out = admin_ok(&gw, &["--json", "keys", "list", "--user", "alice"]).await;
    let first_id = items(&json_of(&out))[0]["id"].as_str().unwrap().to_string();
    let out = admin_ok(&gw, &["keys", "rotate", &first_id]).await;
    let new_first = find_key(&out.stdout).expect("rotated key");
    assert_eq!(chat(&gw, &first).await, (401, "invalid_api_key".into()));
    assert_eq!(chat(&gw, &new_first).await, (200, String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_hosts() {
    let (_mock, gw) = start_with_mock("").await;
    const SECRET: &str = "sk-cli-host-secret-0123456789abcdef";
    let out = admin_ok(
        &gw,
        &[
            "hosts",
            "set",
            "h.example",
            "--key",
            "k1",
            "--key",
            SECRET,
            "--origin",
            "http://127.0.0.1:1",
        ],
    )
    .await;
    assert!(!out.all().contains(SECRET), "{out:?}");

    let out = admin_ok(&gw, &["hosts", "list"]).await;
    assert!(out.stdout.contains("h.example"), "{out:?}");
    assert!(out.stdout.contains("http://127.0.0.1:1"), "{out:?}");
    assert!(!out.stdout.contains(SECRET), "full key listed: {out:?}");
    let out = admin_ok(&gw, &["--json", "hosts", "list"]).await;
    let host = json_item(&out, "host", "h.example");
    assert_eq!(host["source"], "admin");
    assert!(
        !out.stdout.contains(SECRET),
        "full key listed: {}",
        out.stdout
    );

    let out = admin(&gw, &["hosts", "set", "bad/host", "--key", "k"]).await;
    assert_eq!(out.code, 1, "{out:?}");

    admin_ok(&gw, &["hosts", "rm", "h.example"]).await;
    let out = admin_ok(&gw, &["hosts", "list"]).await;
    assert!(!out.stdout.contains("h.example"), "{out:?}");
    let out = admin(&gw, &["hosts", "rm", "h.example"]).await;
    assert_eq!(out.code, 1, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_exit_codes_and_token_secrecy() {
    let (_mock, gw) = start_with_mock("").await;
    let url = admin_url(&gw);

    // Usage errors: 2.
    for args in [
        vec!["keys", "create"],
        vec!["keys", "create", "--label", "x"],
        vec!["users", "frobnicate"],
        vec!["frobnicate", "list"],
        vec!["users", "add"],
        vec!["keys", "rotate", "key_x", "--grace", "soon"],
    ] {
        let out = admin(&gw, &args).await;
        assert_eq!(out.code, 2, "tollgate admin {args:?}: {out:?}");
        assert!(!out.stderr.trim().is_empty(), "{args:?}: no message");
    }
    // No URL/token at all (and no config): usage error.
    let out = cli(&["admin", "users", "list"], &[], &[]).await;
    if !Path::new("/etc/tollgate/tollgate.yaml").exists() {
        assert_eq!(out.code, 2, "{out:?}");
    }

    // Wrong token: 1, with a message that does not carry the token.
    const WRONG: &str = "wrong-admin-token-987654321";
    let out = admin_at(&url, WRONG, &["users", "list"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.trim().is_empty(), "no message: {out:?}");
    assert!(!out.all().contains(WRONG), "token printed: {out:?}");
    let env = [
        ("TOLLGATE_ADMIN_URL", url.as_str()),
        ("TOLLGATE_ADMIN_TOKEN", WRONG),
    ];
    let out = cli(&["admin", "users", "list"], &env, &[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.all().contains(WRONG), "token printed: {out:?}");

    // Unreachable admin API: 1.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = admin_at(&dead, ADMIN_TOKEN, &["users", "list"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.trim().is_empty(), "no message: {out:?}");

    // Help mentions the resources and never the token from the environment.
    let env = [("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let out = cli(&["admin", "--help"], &env, &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("users") && out.stdout.contains("keys"));
}

// ---------------------------------------------------------------------------------------------
// 4. a config whose other variables are unset

/// A copy of the harness config whose upstream key is `replacement`.
fn config_copy(gw: &TestGateway, name: &str, replacement: &str) -> (String, String) {
    let original = std::fs::read_to_string(&gw.config_path).unwrap();
    assert!(original.contains("sk-upstream-test"));
    let text = original.replace("sk-upstream-test", replacement);
    let path = write(&gw.dir, name, &text);
    (path.to_str().unwrap().to_string(), text)
}

async fn admin_with_config(config: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut full = vec!["admin", "-c", config];
    full.extend_from_slice(args);
    cli(&full, env, &["OPENAI_API_KEY"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_with_config_referencing_an_unset_variable() {
    let (_mock, gw) = start_with_mock("").await;
    gw.create_user("zoe").await;
    let (copy, text) = config_copy(&gw, "quoted.yaml", "\"${OPENAI_API_KEY}\"");

    // The copy really depends on the variable...
    let out = cli(&["check", "-c", &copy], &[], &["OPENAI_API_KEY"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("OPENAI_API_KEY"), "{out:?}");

    // ...and the admin client does not need it.
    let out = admin_with_config(&copy, &["users", "list"], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("zoe"), "{out:?}");

    // The admin token itself may come from a variable.
    let token_copy = write(
        &gw.dir,
        "token-copy.yaml",
        &text.replace(ADMIN_TOKEN, "${TOLLGATE_TEST_CLI_TOKEN}"),
    );
    let out = admin_with_config(
        token_copy.to_str().unwrap(),
        &["--json", "users", "show", "zoe"],
        &[("TOLLGATE_TEST_CLI_TOKEN", ADMIN_TOKEN)],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json_of(&out)["name"], "zoe");
}

/// Same, with the reference unquoted in a flow list, as SPEC §2 and conf/tollgate.yaml write it
/// (`keys: [${OPENAI_API_KEY}]`): `serve` and `check` accept that form, so the CLI must too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_with_config_referencing_an_unset_variable_in_a_flow_list() {
    let (_mock, gw) = start_with_mock("").await;
    gw.create_user("zoe").await;
    let (copy, _) = config_copy(&gw, "flow.yaml", "${OPENAI_API_KEY}");
    let out = cli(
        &["check", "-c", &copy],
        &[("OPENAI_API_KEY", "sk-set")],
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "check accepts the SPEC form: {out:?}");

    let out = admin_with_config(&copy, &["users", "list"], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("zoe"), "{out:?}");
}
