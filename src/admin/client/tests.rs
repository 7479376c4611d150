use super::commands::now_unix;
use super::*;
use crate::cli::{run_admin_with, AdminArgs, Cli, Command};
use clap::Parser;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::thread;

const TOKEN: &str = "admin-token-0123456789";

#[derive(Debug)]
struct Recorded {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Recorded {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap().to_string();
    let target = parts.next().unwrap().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    assert!(
        !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding")),
        "chunked bodies are not expected"
    );
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    Recorded {
        method,
        target,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// A one-shot admin server answering each connection with the next canned reply.
fn fake_server(replies: Vec<(u16, String)>) -> (String, thread::JoinHandle<Vec<Recorded>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let mut seen = Vec::new();
        for (status, body) in replies {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            seen.push(read_request(&mut s));
            let resp = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).unwrap();
        }
        seen
    });
    (url, handle)
}

fn admin_args(url: &str, args: &[&str]) -> AdminArgs {
    let mut v = vec!["tollgate", "admin", "--url", url, "--token", TOKEN];
    v.extend_from_slice(args);
    match Cli::try_parse_from(v).unwrap().command {
        Command::Admin(a) => a,
        c => panic!("{c:?}"),
    }
}

fn no_config(_: &Path) -> Result<(String, String), String> {
    panic!("the config file must not be read")
}

fn run_args(a: &AdminArgs) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_admin_with(a, &no_config, &mut out, &mut err);
    let (out, err) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    );
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "token leaked");
    (code, out, err)
}

/// Runs `tollgate admin ARGS` against a server giving one reply; returns what it saw.
fn exchange(args: &[&str], status: u16, body: &str) -> (i32, String, String, Recorded) {
    let (url, server) = fake_server(vec![(status, body.to_string())]);
    let (code, out, err) = run_args(&admin_args(&url, args));
    let mut seen = server.join().unwrap();
    assert_eq!(seen.len(), 1);
    let req = seen.remove(0);
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    if req.method != "GET" && req.method != "DELETE" {
        assert_eq!(req.header("content-type"), Some("application/json"));
        let n = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .count();
        assert_eq!(n, 1, "{:?}", req.headers);
    }
    (code, out, err, req)
}

const USER: &str = r#"{"name":"alice","email":"a@x.org","created_at":"2026-11-22T13:00:00Z","limits":{"requests_per_day":200},"keys":["k1","k2"]}"#;

#[test]
fn users_add() {
    let reply = format!(
        r#"{{"user":{USER},"key":{{"id":"k1","user":"alice","key":"sk-tg-SECRET","label":null}}}}"#
    );
    let (code, out, err, req) = exchange(
        &["users", "add", "alice", "--email", "a@x.org"],
        201,
        &reply,
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/admin/users")
    );
    assert_eq!(req.json(), json!({"name": "alice", "email": "a@x.org"}));
    assert_eq!(
        out,
        "user alice created\nkey id: k1\nkey: sk-tg-SECRET\n(store it now: it is not shown again)\n"
    );

    let (code, _, _, req) = exchange(&["users", "add", "bob", "--rpd", "5"], 201, &reply);
    assert_eq!(code, 0);
    assert_eq!(
        req.json(),
        json!({"name": "bob", "limits": {"requests_per_day": 5}})
    );

    // --json prints the reply verbatim (key order kept), key included.
    let (code, out, _, _) = exchange(&["--json", "users", "add", "alice"], 201, &reply);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("{\n  \"user\": {\n    \"name\": \"alice\",\n    \"email\""),
        "{out}"
    );
    assert!(out.contains("\"key\": \"sk-tg-SECRET\""));
    let reparsed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reparsed, serde_json::from_str::<Value>(&reply).unwrap());
}

#[test]
fn users_list_show_rm() {
    let list = format!(
        r#"{{"data":[{USER},{{"name":"github:123","email":null,"created_at":"2026-11-23T00:00:00Z","limits":null,"keys":[]}}]}}"#
    );
    let (code, out, _, req) = exchange(&["users", "list"], 200, &list);
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("GET", "/admin/users")
    );
    assert_eq!(req.body, "");
    assert_eq!(
        out,
        "NAME        EMAIL    KEYS  CREATED\n\
         alice       a@x.org     2  2026-11-22T13:00:00Z\n\
         github:123  -           0  2026-11-23T00:00:00Z\n"
    );

    let (code, out, _, req) = exchange(&["users", "show", "github:123"], 200, USER);
    assert_eq!(code, 0);
    assert_eq!(req.target, "/admin/users/github%3A123");
    assert_eq!(
        out,
        "name:     alice\nemail:    a@x.org\ncreated:  2026-11-22T13:00:00Z\n\
         limits:   requests_per_day=200\nkeys:     k1,k2\n"
    );

    let (code, out, _, req) = exchange(&["users", "rm", "a/b c"], 204, "");
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("DELETE", "/admin/users/a%2Fb%20c")
    );
    assert_eq!(out, "user a/b c removed\n");

    let (code, out, err, _) = exchange(&["--json", "users", "rm", "bob"], 204, "");
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}

#[test]
fn keys_create() {
    let reply = r#"{"id":"k9","user":"alice","label":"ci","created_at":"2026-11-22T13:00:00Z","expires_at":null,"disabled":false,"models":["a","b"],"limits":{},"source":"admin","key":"sk-tg-NEW"}"#;
    let (code, out, err, req) = exchange(
        &[
            "keys",
            "create",
            "--user",
            "github:1",
            "--label",
            "ci",
            "--expires",
            "30d",
            "--models",
            "a, b",
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
        ],
        201,
        reply,
    );
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/admin/users/github%3A1/keys");
    assert_eq!(
        req.json(),
        json!({
            "label": "ci",
            "expires_in_s": 2_592_000,
            "models": ["a", "b"],
            "limits": {
                "requests_per_minute": 1, "requests_per_hour": 2, "requests_per_day": 3,
                "tokens_per_minute": 4, "tokens_per_day": 5, "images_per_day": 6,
                "max_concurrent": 7
            }
        })
    );
    assert_eq!(
        out,
        "key k9 created for user alice\nkey: sk-tg-NEW\n(store it now: it is not shown again)\n"
    );

    let (code, _, _, req) = exchange(
        &["keys", "create", "--user", "bob", "--expires", "2027-01-01"],
        201,
        reply,
    );
    assert_eq!(code, 0);
    assert_eq!(req.json(), json!({"expires_at": "2027-01-01"}));
}

#[test]
fn keys_list_and_show() {
    let list = r#"{"data":[
            {"id":"k1","user":"alice","label":"laptop","created_at":"2026-01-01T00:00:00Z","expires_at":null,"disabled":false,"models":null,"limits":{},"source":"admin"},
            {"id":"k2","user":"alice","label":null,"created_at":"2026-01-01T00:00:00Z","expires_at":"2001-01-01T00:00:00Z","disabled":false,"models":[],"limits":{},"source":"admin"},
            {"id":"k3","user":"bob","label":"x","created_at":"2026-01-01T00:00:00Z","expires_at":"2999-01-01T00:00:00Z","disabled":true,"models":["gpt-4o","o3"],"limits":{},"source":"oauth"}
        ]}"#;
    let (code, out, _, req) = exchange(&["keys", "list", "--user", "a b&c"], 200, list);
    assert_eq!(code, 0);
    assert_eq!(req.target, "/admin/keys?user=a%20b%26c");
    assert_eq!(
        out,
        "ID  USER   LABEL   STATUS    EXPIRES               MODELS\n\
         k1  alice  laptop  active    never                 all\n\
         k2  alice  -       expired   2001-01-01T00:00:00Z  all\n\
         k3  bob    x       disabled  2999-01-01T00:00:00Z  gpt-4o,o3\n"
    );
    let (_, _, _, req) = exchange(&["keys", "list"], 200, r#"{"data":[]}"#);
    assert_eq!(req.target, "/admin/keys");

    let key = r#"{"id":"k1","user":"alice","label":"laptop","created_at":"2026-01-01T00:00:00Z","expires_at":null,"disabled":false,"models":["m"],"limits":{"requests_per_minute":10,"tokens_per_day":null},"source":"admin"}"#;
    let (code, out, _, req) = exchange(&["keys", "show", "k1"], 200, key);
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("GET", "/admin/keys/k1")
    );
    assert_eq!(
        out,
        "id:       k1\nuser:     alice\nlabel:    laptop\nstatus:   active\n\
         created:  2026-01-01T00:00:00Z\nexpires:  never\nmodels:   m\n\
         limits:   requests_per_minute=10\nsource:   admin\n"
    );
    let rotated = key.replace(
        r#""source":"admin""#,
        r#""source":"admin","previous_key_valid_until":"2026-01-02T00:00:00Z""#,
    );
    let (_, out, _, _) = exchange(&["keys", "show", "k1"], 200, &rotated);
    assert!(
        out.ends_with("old secret valid until:  2026-01-02T00:00:00Z\n"),
        "{out}"
    );
}

#[test]
fn keys_revoke_rotate_disable_enable() {
    let (code, out, _, req) = exchange(&["keys", "revoke", "k1"], 204, "");
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("DELETE", "/admin/keys/k1")
    );
    assert_eq!(out, "key k1 revoked\n");

    let (code, out, _, req) = exchange(
        &["keys", "rotate", "k1", "--grace", "1h30m"],
        200,
        r#"{"id":"k1","key":"sk-tg-ROT"}"#,
    );
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/admin/keys/k1/rotate")
    );
    assert_eq!(req.json(), json!({"grace_s": 5400}));
    assert_eq!(
        out,
        "key k1 rotated\nkey: sk-tg-ROT\n(store it now: it is not shown again)\n\
         the old secret keeps working for 1h30m\n"
    );
    let (_, out, _, req) = exchange(
        &["keys", "rotate", "k1"],
        200,
        r#"{"id":"k1","key":"sk-tg-ROT"}"#,
    );
    assert_eq!(req.json(), json!({"grace_s": 0}));
    assert!(out.ends_with("the old secret no longer works\n"));

    let rec = r#"{"id":"k1","disabled":true}"#;
    let (code, out, _, req) = exchange(&["keys", "disable", "k1"], 200, rec);
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("PATCH", "/admin/keys/k1")
    );
    assert_eq!(req.json(), json!({"disabled": true}));
    assert_eq!(out, "key k1 disabled\n");
    let (_, out, _, req) = exchange(&["keys", "enable", "k1"], 200, rec);
    assert_eq!(req.json(), json!({"disabled": false}));
    assert_eq!(out, "key k1 enabled\n");
}

#[test]
fn hosts() {
    let (code, out, _, req) = exchange(
        &[
            "hosts",
            "set",
            "vllm.internal:8000",
            "--key",
            "k1",
            "--key",
            "k2",
            "--origin",
            "http://10.0.0.7:8000",
        ],
        200,
        r#"{"host":"vllm.internal:8000","origin":"http://10.0.0.7:8000","keys":["k1…","k2…"],"source":"admin"}"#,
    );
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("PUT", "/admin/hosts/vllm.internal%3A8000")
    );
    assert_eq!(
        req.json(),
        json!({"keys": ["k1", "k2"], "origin": "http://10.0.0.7:8000"})
    );
    assert_eq!(
        out,
        "host vllm.internal:8000 set (origin http://10.0.0.7:8000, 2 keys)\n"
    );

    let (_, out, _, req) = exchange(
        &["hosts", "set", "api.groq.com", "--key", "gsk"],
        200,
        r#"{"host":"api.groq.com","origin":null,"keys":["gsk…"],"source":"admin"}"#,
    );
    assert_eq!(req.json(), json!({"keys": ["gsk"]}));
    assert_eq!(
        out,
        "host api.groq.com set (origin https://api.groq.com, 1 key)\n"
    );

    let (code, out, _, req) = exchange(
        &["hosts", "list"],
        200,
        r#"{"data":[{"host":"api.groq.com","origin":"https://api.groq.com","keys":["gsk_…1234"],"source":"config"},{"host":"h","origin":null,"keys":[],"source":"admin"}]}"#,
    );
    assert_eq!(code, 0);
    assert_eq!(req.target, "/admin/hosts");
    assert_eq!(
        out,
        "HOST          ORIGIN                KEYS       SOURCE\n\
         api.groq.com  https://api.groq.com  gsk_…1234  config\n\
         h             https://h             -          admin\n"
    );

    let (code, out, _, req) = exchange(&["hosts", "rm", "api.groq.com"], 204, "");
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("DELETE", "/admin/hosts/api.groq.com")
    );
    assert_eq!(out, "host api.groq.com removed\n");
}

#[test]
fn usage() {
    let reply = r#"{"data":[
            {"period":"2026-11-22","user":"alice","key_id":"k1","requests":10,"prompt_tokens":1000,"completion_tokens":20,"images":0,"errors":1},
            {"period":"2026-11-23","user":"alice","key_id":"k1","requests":5,"prompt_tokens":5,"completion_tokens":7,"images":2,"errors":0}
        ]}"#;
    let before = now_unix();
    let (code, out, err, req) = exchange(
        &[
            "usage", "--user", "github:1", "--key", "k1", "--since", "7d", "--by", "day",
        ],
        200,
        reply,
    );
    let after = now_unix();
    assert_eq!((code, err.as_str()), (0, ""));
    let (path, query) = req.target.split_once('?').unwrap();
    assert_eq!(path, "/admin/usage");
    let q: Vec<(&str, &str)> = query
        .split('&')
        .map(|p| p.split_once('=').unwrap())
        .collect();
    assert_eq!(q[0], ("user", "github%3A1"));
    assert_eq!(q[1], ("key", "k1"));
    assert_eq!(q[2].0, "from");
    assert_eq!(q[3], ("by", "day"));
    let from = crate::time::parse_rfc3339(&q[2].1.replace("%3A", ":")).unwrap();
    assert!(
        from >= before - 604_800 && from <= after - 604_800,
        "{from}"
    );
    assert_eq!(
        out,
        "PERIOD      USER   KEY  REQUESTS  PROMPT  COMPLETION  IMAGES  ERRORS\n\
         2026-11-22  alice  k1         10    1000          20       0       1\n\
         2026-11-23  alice  k1          5       5           7       2       0\n\
         total                         15    1005          27       2       1\n"
    );

    let (_, out, _, req) = exchange(&["usage"], 200, r#"{"data":[]}"#);
    assert_eq!(req.target, "/admin/usage");
    assert_eq!(
        out,
        "PERIOD  USER  KEY  REQUESTS  PROMPT  COMPLETION  IMAGES  ERRORS\n"
    );
}

#[test]
fn images_purge() {
    let (code, out, _, req) = exchange(&["images", "purge", "ab12"], 204, "");
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("DELETE", "/admin/images/ab12")
    );
    assert_eq!(out, "image ab12 deleted\n");

    let (code, out, _, req) = exchange(
        &[
            "images",
            "purge",
            "--prompt",
            "a red fox",
            "--width",
            "512",
            "--height",
            "256",
            "--model",
            "m",
            "--seed",
            "7",
        ],
        200,
        r#"{"deleted":"ffee"}"#,
    );
    assert_eq!(code, 0);
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/admin/images/purge")
    );
    assert_eq!(
        req.json(),
        json!({"description": "a red fox", "width": 512, "height": 256, "model": "m", "seed": 7})
    );
    assert_eq!(out, "image ffee deleted\n");

    let (_, _, _, req) = exchange(
        &["images", "purge", "--prompt", "x"],
        200,
        r#"{"deleted":"h"}"#,
    );
    assert_eq!(req.json(), json!({"description": "x"}));
}

#[test]
fn error_replies() {
    let body = r#"{"error":{"message":"user not found","type":"invalid_request_error","param":null,"code":"not_found"}}"#;
    let (code, out, err, _) = exchange(&["users", "show", "nobody"], 404, body);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "error: user not found (not_found)\n")
    );
    let (code, out, err, _) = exchange(&["--json", "users", "add", "alice"], 409, body);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err, "error: user not found (not_found)\n");

    let (code, _, err, _) = exchange(
        &["users", "list"],
        401,
        r#"{"error":{"message":"invalid admin token","code":null}}"#,
    );
    assert_eq!(
        (code, err.as_str()),
        (1, "error: invalid admin token (HTTP 401)\n")
    );
    let (code, _, err, _) = exchange(&["users", "list"], 502, "Bad Gateway");
    assert_eq!((code, err.as_str()), (1, "error: HTTP 502: Bad Gateway\n"));

    // A 2xx that is not JSON where JSON is needed.
    let (code, out, err, _) = exchange(&["users", "list"], 200, "<html>");
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with("error: bad reply from admin API at http://127.0.0.1:"),
        "{err}"
    );
}

#[test]
fn unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (code, out, err) = run_args(&admin_args(&url, &["users", "list"]));
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with(&format!("error: cannot reach admin API at {url}: ")),
        "{err}"
    );
}

#[test]
fn usage_errors() {
    // No URL or token from flags, env or config.
    let mut a = admin_args("http://x:1", &["users", "list"]);
    a.url = None;
    a.token = None;
    a.config = None;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_admin_with(
        &a,
        &|_| Err("no admin section".to_string()),
        &mut out,
        &mut err,
    );
    assert_eq!(code, 2);
    assert!(String::from_utf8(err).unwrap().starts_with("error: "));

    // Empty path segment.
    let (code, _, err) = run_args(&admin_args("http://127.0.0.1:9", &["users", "show", ""]));
    assert_eq!((code, err.as_str()), (2, "error: empty user name\n"));
    // Bad URL and token.
    let (code, _, err) = run_args(&admin_args("ftp://h", &["users", "list"]));
    assert_eq!(code, 2, "{err}");
    assert!(AdminClient::new("http://h:1", "with space").is_err());
    assert!(AdminClient::new("http://h:1", "").is_err());
    let c = AdminClient::new("http://h:1/", TOKEN).unwrap();
    assert_eq!(c.base_url(), "http://h:1");
    assert!(!format!("{c:?}").contains(TOKEN));
}

#[test]
fn url_and_token_from_config() {
    let (url, server) = fake_server(vec![(200, r#"{"data":[]}"#.to_string())]);
    let listen = url.trim_start_matches("http://").to_string();
    let mut a = admin_args("http://x:1", &["--json", "users", "list"]);
    a.url = None;
    a.token = None;
    a.config = Some("/some/tollgate.yaml".into());
    let seen_path = std::cell::RefCell::new(None);
    let from_config = |p: &Path| {
        *seen_path.borrow_mut() = Some(p.to_path_buf());
        Ok((
            listen.clone(),
            "${TOLLGATE_TEST_SURELY_UNSET_VAR:-cfg-token-123456}".to_string(),
        ))
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_admin_with(&a, &from_config, &mut out, &mut err);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8(out).unwrap(), "{\n  \"data\": []\n}\n");
    assert_eq!(
        seen_path.borrow().as_deref(),
        Some(Path::new("/some/tollgate.yaml"))
    );
    let seen = server.join().unwrap();
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer cfg-token-123456")
    );
}

#[test]
fn pretty_printing() {
    assert_eq!(pretty_json("{}").unwrap(), "{}");
    assert_eq!(pretty_json(" [ ] ").unwrap(), "[]");
    assert_eq!(
        pretty_json(r#"{"z":1,"a":[1,{"b":"x,y:{}[]\"\\"}],"e":{ },"n":null}"#).unwrap(),
        "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    {\n      \"b\": \"x,y:{}[]\\\"\\\\\"\n    }\n  ],\n  \"e\": {},\n  \"n\": null\n}"
    );
    assert_eq!(pretty_json("\"é\"").unwrap(), "\"é\"");
    assert_eq!(pretty_json("1.50e3").unwrap(), "1.50e3");
    assert!(pretty_json("{").is_none());
    assert!(pretty_json("").is_none());
}

#[test]
fn encoding_and_formatting() {
    assert_eq!(encode_segment("github:123"), "github%3A123");
    assert_eq!(encode_segment("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
    assert_eq!(encode_segment("é"), "%C3%A9");
    assert_eq!(encode_segment("Az09-._~"), "Az09-._~");
    assert_eq!(query_string(&[("a", None), ("b", None)]), "");
    assert_eq!(
        query_string(&[
            ("a", Some("1 2".into())),
            ("b", None),
            ("c", Some("x".into()))
        ]),
        "?a=1%202&c=x"
    );
    assert_eq!(format_duration(0), "0s");
    assert_eq!(format_duration(3600), "1h");
    assert_eq!(format_duration(5400), "1h30m");
    assert_eq!(format_duration(90_061), "1d1h1m1s");
}
