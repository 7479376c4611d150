//! End-to-end tests of the admin HTTP API (SPEC §5): authentication, users, keys, hosts,
//! durability of writes and percent-encoded user names. Each test runs the real binary.

mod common;

use common::mock::MockUpstream;
use common::{chat_body, GatewayConfig, TestGateway, ADMIN_TOKEN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// helpers

/// A mock upstream and a gateway in front of it (with admin API), plus optional config YAML.
async fn start(extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await;
    let mut config = GatewayConfig::new(&mock.url());
    if !extra.is_empty() {
        config = config.extra(extra);
    }
    let gw = TestGateway::start(config).await;
    (mock, gw)
}

/// An admin call with an arbitrary `Authorization` header (or none); returns status and raw text.
async fn admin_raw(
    gw: &TestGateway,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = gw.http.request(method, gw.admin_url(path));
    if let Some(auth) = authorization {
        req = req.header("authorization", auth);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Asserts `body` is an error in the SPEC §4 shape and returns its `code`.
fn assert_error_shape(body: &Value) -> String {
    let err = &body["error"];
    assert!(err.is_object(), "not an error object: {body}");
    assert!(err["message"].is_string(), "error.message: {body}");
    assert!(err["type"].is_string(), "error.type: {body}");
    assert!(
        err.as_object().unwrap().contains_key("param"),
        "error.param: {body}"
    );
    assert!(
        err.as_object().unwrap().contains_key("code"),
        "error.code: {body}"
    );
    err["code"].as_str().unwrap_or_default().to_string()
}

/// `sk-tg-` followed by exactly 40 characters of [A-Za-z0-9].
fn is_gateway_key(key: &str) -> bool {
    key.strip_prefix("sk-tg-")
        .is_some_and(|rest| rest.len() == 40 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') {
        return false;
    }
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let fixed = digits.iter().all(|&i| b[i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':';
    let tail = &s[19..s.len() - 1];
    let frac_ok = tail.is_empty()
        || tail
            .strip_prefix('.')
            .is_some_and(|f| !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()));
    fixed && frac_ok
}

fn assert_timestamp(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert!(is_rfc3339_utc(s), "{what} is not RFC 3339 UTC: {s}");
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The list of a list reply: `{"data":[…]}` (or a bare array).
fn items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        _ => v["data"]
            .as_array()
            .unwrap_or_else(|| panic!("not a list reply: {v}"))
            .clone(),
    }
}

/// A chat completion on the public API with `key`: status and JSON body.
async fn chat(gw: &TestGateway, key: &str, model: &str) -> (u16, Value) {
    let resp = gw
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

/// Asserts the public API refuses `key` with `status` and error `code`.
async fn assert_refused(gw: &TestGateway, key: &str, status: u16, code: &str) {
    let (got, body) = chat(gw, key, "gpt-4o-mini").await;
    assert_eq!(got, status, "public API with this key: {body}");
    assert_eq!(assert_error_shape(&body), code, "{body}");
}

async fn assert_works(gw: &TestGateway, key: &str) {
    let (status, body) = chat(gw, key, "gpt-4o-mini").await;
    assert_eq!(status, 200, "public API with this key: {body}");
}

// ---------------------------------------------------------------------------------------------
// 1. authentication

/// Sends the call with every kind of bad credential (each must be 401 and change nothing), then
/// with the right token; returns that reply.
async fn check_auth(
    gw: &TestGateway,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut last_changed = ADMIN_TOKEN.to_string();
    let last = last_changed.pop().unwrap();
    last_changed.push(if last == 'x' { 'y' } else { 'x' });
    let bad: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong-token".into()),
        Some("Bearer ".into()),
        Some(format!("Bearer {last_changed}")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Basic {ADMIN_TOKEN}")),
    ];
    let text = body.as_ref().map(Value::to_string);
    for auth in &bad {
        let (status, reply) = admin_raw(gw, method, path, auth.as_deref(), text.as_deref()).await;
        assert_eq!(
            status, 401,
            "{method} {path} with Authorization {auth:?} answered {status}: {reply}"
        );
        let reply: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|_| panic!("401 of {method} {path} is not JSON: {reply}"));
        assert_error_shape(&reply);
        assert!(
            !reply.to_string().contains(ADMIN_TOKEN),
            "401 echoes the token"
        );
    }
    gw.admin(method, path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_requires_the_admin_token() {
    let (_mock, gw) = start("").await;

    let (s, b) = check_auth(&gw, "GET", "/admin/users", None).await;
    assert_eq!(s, 200, "{b}");
    // A refused POST created nothing: the right one is 201, not 409.
    let (s, b) = check_auth(&gw, "POST", "/admin/users", Some(json!({"name": "auth-u"}))).await;
    assert_eq!(s, 201, "{b}");
    let first = b["key"]["id"].as_str().unwrap().to_string();
    let (s, b) = check_auth(&gw, "GET", "/admin/users/auth-u", None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = check_auth(&gw, "POST", "/admin/users/auth-u/keys", Some(json!({}))).await;
    assert_eq!(s, 201, "{b}");
    let second = b["id"].as_str().unwrap().to_string();
    let (s, b) = check_auth(&gw, "GET", "/admin/keys", None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = check_auth(&gw, "GET", "/admin/keys?user=auth-u", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(items(&b).len(), 2, "{b}");
    let (s, b) = check_auth(&gw, "GET", &format!("/admin/keys/{first}"), None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = check_auth(
        &gw,
        "PATCH",
        &format!("/admin/keys/{first}"),
        Some(json!({"label": "patched"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["label"], "patched");
    let (s, b) = check_auth(
        &gw,
        "POST",
        &format!("/admin/keys/{first}/rotate"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let rotated = b["key"].as_str().unwrap().to_string();
    assert_works(&gw, &rotated).await;
    // Refused DELETEs removed nothing: the right one is 204, not 404.
    let (s, b) = check_auth(&gw, "DELETE", &format!("/admin/keys/{second}"), None).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = check_auth(&gw, "GET", "/admin/hosts", None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = check_auth(
        &gw,
        "PUT",
        "/admin/hosts/auth.example",
        Some(json!({"keys": [], "origin": "http://127.0.0.1:1"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = check_auth(&gw, "DELETE", "/admin/hosts/auth.example", None).await;
    assert_eq!(s, 204, "{b}");
    // Usage and image routes: refused without the token; whatever they answer with it, not 401.
    let (s, b) = check_auth(&gw, "GET", "/admin/usage", None).await;
    assert_ne!(s, 401, "{b}");
    let hash = "0".repeat(64);
    let (s, b) = check_auth(&gw, "DELETE", &format!("/admin/images/{hash}"), None).await;
    assert_ne!(s, 401, "{b}");
    let (s, b) = check_auth(
        &gw,
        "POST",
        "/admin/images/purge",
        Some(json!({"description": "nothing cached"})),
    )
    .await;
    assert_ne!(s, 401, "{b}");
    let (s, b) = check_auth(&gw, "DELETE", "/admin/users/auth-u", None).await;
    assert_eq!(s, 204, "{b}");
    assert_refused(&gw, &rotated, 401, "invalid_api_key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_create_list_show_delete() {
    let (_mock, gw) = start("").await;
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"name": "alice", "email": "alice@example.com"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let user = &body["user"];
    assert_eq!(user["name"], "alice", "{body}");
    assert_eq!(user["email"], "alice@example.com", "{body}");
    assert_timestamp(&user["created_at"], "user.created_at");
    assert!(
        user.as_object().unwrap().contains_key("limits"),
        "user.limits missing: {body}"
    );
    let key = &body["key"];
    let key_id = key["id"].as_str().expect("key.id").to_string();
    let secret = key["key"].as_str().expect("key.key").to_string();
    assert!(is_gateway_key(&secret), "key format: {secret}");
    assert_eq!(user["keys"], json!([key_id]), "{body}");
    assert_timestamp(&key["created_at"], "key.created_at");
    assert_works(&gw, &secret).await;

    // Duplicate name.
    let (status, body) = gw
        .admin("POST", "/admin/users", Some(json!({"name": "alice"})))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_error_shape(&body);

    // A second key, so deletion has more than one key to revoke.
    let (second_id, second) = gw.create_key("alice", json!({"label": "second"})).await;
    gw.create_user("bob").await;

    let (status, body) = gw.admin("GET", "/admin/users", None).await;
    assert_eq!(status, 200, "{body}");
    let list = items(&body);
    let alice = list
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap_or_else(|| panic!("alice not listed: {body}"));
    let mut ids: Vec<String> = alice["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut expected = vec![key_id.clone(), second_id.clone()];
    expected.sort();
    assert_eq!(ids, expected, "{body}");
    assert!(list.iter().any(|u| u["name"] == "bob"), "{body}");
    assert_eq!(alice["email"], "alice@example.com");
    assert_timestamp(&alice["created_at"], "listed created_at");
    let text = body.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&second),
        "secret listed"
    );

    let (status, body) = gw.admin("GET", "/admin/users/alice", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "alice");
    assert_eq!(body["email"], "alice@example.com");
    assert_eq!(body["keys"].as_array().map(Vec::len), Some(2), "{body}");
    assert!(!body.to_string().contains(&secret));

    // Delete: 204, and every key of the user stops working with the reply.
    let (status, body) = gw.admin("DELETE", "/admin/users/alice", None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(body, Value::Null, "204 with a body");
    assert_refused(&gw, &secret, 401, "invalid_api_key").await;
    assert_refused(&gw, &second, 401, "invalid_api_key").await;

    let (status, body) = gw.admin("GET", "/admin/users/alice", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(assert_error_shape(&body), "not_found");
    let (status, body) = gw.admin("DELETE", "/admin/users/alice", None).await;
    assert_eq!(status, 404, "{body}");
    assert_error_shape(&body);
    let (status, body) = gw
        .admin("GET", &format!("/admin/keys/{second_id}"), None)
        .await;
    assert_eq!(status, 404, "key of a deleted user: {body}");
    let (_, body) = gw.admin("GET", "/admin/users", None).await;
    assert!(!items(&body).iter().any(|u| u["name"] == "alice"), "{body}");
    // The name is free again.
    gw.create_user("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_with_limits_and_bad_bodies() {
    let (_mock, gw) = start("").await;
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"name": "lim", "limits": {"requests_per_day": 100}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["limits"]["requests_per_day"], 100, "{body}");

    for bad in [
        json!({"name": "x", "emial": "typo@example.com"}),
        json!({"email": "no-name@example.com"}),
        json!({"name": "x", "limits": {"requests_per_minuet": 1}}),
    ] {
        let (status, body) = gw.admin("POST", "/admin/users", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} answered {body}");
        assert_error_shape(&body);
    }
    let (status, text) = admin_raw(
        &gw,
        "POST",
        "/admin/users",
        Some(&format!("Bearer {ADMIN_TOKEN}")),
        Some("{\"name\": \"x\""),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_error_shape(&serde_json::from_str(&text).expect("400 body is JSON"));
    let (_, body) = gw.admin("GET", "/admin/users/x", None).await;
    assert_error_shape(&body);
}

// ---------------------------------------------------------------------------------------------
// 3. keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_show_patch_rotate_delete() {
    let (_mock, gw) = start("").await;
    let first = gw.create_user("carol").await;

    let (status, created) = gw
        .admin(
            "POST",
            "/admin/users/carol/keys",
            Some(json!({
                "label": "ci",
                "expires_in_s": 3600,
                "models": ["gpt-4o-mini"],
                "limits": {"requests_per_minute": 5}
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let secret = created["key"].as_str().expect("key").to_string();
    assert!(is_gateway_key(&secret), "key format: {secret}");
    assert_ne!(secret, first);
    assert_eq!(created["label"], "ci");
    assert_eq!(created["user"], "carol");
    assert_eq!(created["models"], json!(["gpt-4o-mini"]));
    assert_eq!(created["limits"]["requests_per_minute"], 5, "{created}");
    assert_timestamp(&created["created_at"], "created_at");
    assert_timestamp(&created["expires_at"], "expires_at");
    assert_works(&gw, &secret).await;
    let (status, body) = chat(&gw, &secret, "gpt-4o").await;
    assert_eq!(status, 403, "model outside the key's list: {body}");
    assert_eq!(assert_error_shape(&body), "model_not_allowed");

    // Records never carry the secret nor its hash.
    let secret_hash = sha256_hex(&secret);
    let first_hash = sha256_hex(&first);
    let (status, shown) = gw.admin("GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["label"], "ci");
    assert_eq!(shown["user"], "carol");
    assert_eq!(shown["models"], json!(["gpt-4o-mini"]));
    assert_eq!(shown["limits"]["requests_per_minute"], 5);
    assert_eq!(shown["expires_at"], created["expires_at"]);
    assert_eq!(shown["disabled"], false);
    assert_timestamp(&shown["created_at"], "created_at");
    let (status, listed) = gw.admin("GET", "/admin/keys?user=carol", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(items(&listed).len(), 2, "{listed}");
    assert!(items(&listed).iter().any(|k| k["id"] == id.as_str()));
    let (_, all) = gw.admin("GET", "/admin/keys", None).await;
    let (_, user) = gw.admin("GET", "/admin/users/carol", None).await;
    for text in [
        shown.to_string(),
        listed.to_string(),
        all.to_string(),
        user.to_string(),
    ] {
        for needle in [&secret, &secret_hash, &first, &first_hash] {
            assert!(
                !text.contains(needle.as_str()),
                "record leaks a secret/hash: {text}"
            );
        }
        assert!(!text.contains(&secret_hash.to_uppercase()));
    }

    // PATCH: disable.
    let (status, body) = gw
        .admin(
            "PATCH",
            &format!("/admin/keys/{id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled"], true);
    assert_eq!(body["label"], "ci", "absent fields stay: {body}");
    assert_refused(&gw, &secret, 403, "key_disabled").await;

    // PATCH: everything at once.
    let (status, body) = gw
        .admin(
            "PATCH",
            &format!("/admin/keys/{id}"),
            Some(json!({
                "disabled": false,
                "label": "renamed",
                "expires_at": "2099-01-02T03:04:05Z",
                "models": ["gpt-4o", "gpt-4o-mini"],
                "limits": {"requests_per_minute": 7}
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled"], false);
    assert_eq!(body["label"], "renamed");
    assert_eq!(body["expires_at"], "2099-01-02T03:04:05Z");
    assert_eq!(body["models"], json!(["gpt-4o", "gpt-4o-mini"]));
    assert_eq!(body["limits"]["requests_per_minute"], 7, "{body}");
    assert_works(&gw, &secret).await;
    let (_, shown) = gw.admin("GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(shown["label"], "renamed");
    assert_eq!(shown["limits"]["requests_per_minute"], 7);

    // PATCH: null clears.
    let (status, body) = gw
        .admin(
            "PATCH",
            &format!("/admin/keys/{id}"),
            Some(json!({"label": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["label"].is_null(), "label not cleared: {body}");
    assert_eq!(body["models"], json!(["gpt-4o", "gpt-4o-mini"]), "{body}");
    let (status, body) = gw
        .admin(
            "PATCH",
            &format!("/admin/keys/{id}"),
            Some(json!({"models": null, "expires_at": null, "limits": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_at"].is_null(), "{body}");
    assert!(body["limits"]["requests_per_minute"].is_null(), "{body}");
    assert!(
        body["models"].is_null() || body["models"] == json!([]),
        "{body}"
    );

    // PATCH: an expiry in the past.
    let (status, body) = gw
        .admin(
            "PATCH",
            &format!("/admin/keys/{id}"),
            Some(json!({"expires_at": "2001-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_refused(&gw, &secret, 401, "key_expired").await;
    let (status, _) = gw
        .admin(
            "PATCH",
            &format!("/admin/keys/{id}"),
            Some(json!({"expires_at": null})),
        )
        .await;
    assert_eq!(status, 200);
    assert_works(&gw, &secret).await;

    // Rotate without grace: same id, new secret, the old one dead at once.
    let (status, body) = gw
        .admin("POST", &format!("/admin/keys/{id}/rotate"), Some(json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    let rotated = body["key"].as_str().expect("key").to_string();
    assert!(is_gateway_key(&rotated));
    assert_ne!(rotated, secret);
    assert_refused(&gw, &secret, 401, "invalid_api_key").await;
    assert_works(&gw, &rotated).await;

    // Rotate with grace: both work.
    let (status, body) = gw
        .admin(
            "POST",
            &format!("/admin/keys/{id}/rotate"),
            Some(json!({"grace_s": 3600})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    let third = body["key"].as_str().unwrap().to_string();
    assert_works(&gw, &rotated).await;
    assert_works(&gw, &third).await;
    let (_, shown) = gw.admin("GET", &format!("/admin/keys/{id}"), None).await;
    for needle in [&rotated, &third, &sha256_hex(&rotated), &sha256_hex(&third)] {
        assert!(!shown.to_string().contains(needle.as_str()), "{shown}");
    }

    // Delete: 204, revoked at once (both secrets), then 404.
    let (status, body) = gw.admin("DELETE", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(status, 204, "{body}");
    assert_refused(&gw, &third, 401, "invalid_api_key").await;
    assert_refused(&gw, &rotated, 401, "invalid_api_key").await;
    let (status, body) = gw.admin("GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(assert_error_shape(&body), "not_found");
    let (status, body) = gw.admin("DELETE", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = gw
        .admin("POST", &format!("/admin/keys/{id}/rotate"), Some(json!({})))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = gw
        .admin(
            "PATCH",
            &format!("/admin/keys/{id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    // The user's other key is untouched.
    assert_works(&gw, &first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_bad_requests() {
    let (_mock, gw) = start("").await;
    gw.create_user("dave").await;
    let (id, _) = gw.create_key("dave", json!({})).await;

    // Missing user.
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/users/nobody/keys",
            Some(json!({"label": "x"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(assert_error_shape(&body), "not_found");
    let (_, body) = gw.admin("GET", "/admin/users/nobody", None).await;
    assert_eq!(
        assert_error_shape(&body),
        "not_found",
        "no user was created"
    );

    // Unknown fields.
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/admin/users/dave/keys".into(),
            json!({"labl": "x"}),
        ),
        (
            "POST",
            "/admin/users/dave/keys".into(),
            json!({"limits": {"rpm": 5}}),
        ),
        (
            "PATCH",
            format!("/admin/keys/{id}"),
            json!({"disable": true}),
        ),
        (
            "PATCH",
            format!("/admin/keys/{id}"),
            json!({"limits": {"requests_per_minute": 1, "bogus": 2}}),
        ),
        (
            "POST",
            format!("/admin/keys/{id}/rotate"),
            json!({"grace": 5}),
        ),
        (
            "PUT",
            "/admin/hosts/x.example".into(),
            json!({"keys": [], "orign": "http://127.0.0.1:1"}),
        ),
    ];
    for (method, path, body) in cases {
        let (status, reply) = gw.admin(method, &path, Some(body.clone())).await;
        assert_eq!(status, 400, "{method} {path} {body} answered {reply}");
        assert_error_shape(&reply);
    }

    // Invalid JSON.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for (method, path) in [
        ("POST", "/admin/users/dave/keys".to_string()),
        ("PATCH", format!("/admin/keys/{id}")),
        ("POST", format!("/admin/keys/{id}/rotate")),
        ("PUT", "/admin/hosts/x.example".to_string()),
    ] {
        let (status, text) = admin_raw(&gw, method, &path, Some(&auth), Some("{not json")).await;
        assert_eq!(status, 400, "{method} {path}: {text}");
        assert_error_shape(&serde_json::from_str(&text).expect("400 body is JSON"));
    }
    // Wrong types.
    let (status, body) = gw
        .admin(
            "PATCH",
            &format!("/admin/keys/{id}"),
            Some(json!({"disabled": "yes"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/users/dave/keys",
            Some(json!({"expires_at": "tomorrow"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Nothing of that changed the key or added keys.
    let (_, shown) = gw.admin("GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(shown["disabled"], false, "{shown}");
    let (_, listed) = gw.admin("GET", "/admin/keys?user=dave", None).await;
    assert_eq!(items(&listed).len(), 2, "{listed}");
    let (_, hosts) = gw.admin("GET", "/admin/hosts", None).await;
    assert!(!hosts.to_string().contains("x.example"), "{hosts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_model_allow_list_and_expiry_form() {
    let (_mock, gw) = start("").await;
    gw.create_user("erin").await;
    let (id, key) = gw
        .create_key(
            "erin",
            json!({"models": ["gpt-4o-mini"], "expires_at": "2099-12-31T23:59:59Z"}),
        )
        .await;
    assert_works(&gw, &key).await;
    let (status, body) = chat(&gw, &key, "gpt-4o").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(assert_error_shape(&body), "model_not_allowed");
    let (_, shown) = gw.admin("GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(shown["expires_at"], "2099-12-31T23:59:59Z", "{shown}");
    // An already-expired key can be created, and does not work.
    let (_, expired) = gw
        .create_key("erin", json!({"expires_at": "2000-01-01T00:00:00Z"}))
        .await;
    assert_refused(&gw, &expired, 401, "key_expired").await;
}

// ---------------------------------------------------------------------------------------------
// 4. hosts

const CONFIG_HOST_KEY: &str = "sk-config-host-secret-0123456789";
const ADMIN_HOST_KEY: &str = "sk-admin-host-secret-abcdefghij";
const ADMIN_HOST_KEY2: &str = "sk-admin-host-second-klmnopqrst";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_put_list_delete() {
    let mock = MockUpstream::start().await;
    let extra = format!(
        "hosts:\n  cfg.example: {{ origin: \"http://127.0.0.1:1\", keys: [{CONFIG_HOST_KEY}] }}\n"
    );
    let gw = TestGateway::start(GatewayConfig::new(&mock.url()).extra(&extra)).await;
    let key = gw.create_user("hal").await;

    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/hosts/dyn.example",
            Some(json!({"keys": [ADMIN_HOST_KEY, ADMIN_HOST_KEY2], "origin": mock.url()})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains(ADMIN_HOST_KEY), "{body}");
    assert!(!body.to_string().contains(ADMIN_HOST_KEY2), "{body}");

    let (status, text) = admin_raw(
        &gw,
        "GET",
        "/admin/hosts",
        Some(&format!("Bearer {ADMIN_TOKEN}")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    for secret in [ADMIN_HOST_KEY, ADMIN_HOST_KEY2, CONFIG_HOST_KEY] {
        assert!(!text.contains(secret), "full host key listed: {text}");
    }
    let list = items(&serde_json::from_str(&text).unwrap());
    let dynamic = list
        .iter()
        .find(|h| h["host"] == "dyn.example")
        .unwrap_or_else(|| panic!("dyn.example not listed: {text}"));
    assert_eq!(dynamic["source"], "admin", "{text}");
    assert_eq!(dynamic["origin"], mock.url().as_str(), "{text}");
    assert_eq!(dynamic["keys"].as_array().map(Vec::len), Some(2), "{text}");
    let configured = list
        .iter()
        .find(|h| h["host"] == "cfg.example")
        .unwrap_or_else(|| panic!("cfg.example not listed: {text}"));
    assert_eq!(configured["source"], "config", "{text}");

    // The host is live for X-Host-Final, with its own key upstream.
    let resp = gw
        .post("/v1/chat/completions", &key)
        .header("x-host-final", "dyn.example")
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.last_request().expect("mock saw the request");
    let auth = seen.header("authorization").unwrap_or_default().to_string();
    assert!(
        auth == format!("Bearer {ADMIN_HOST_KEY}") || auth == format!("Bearer {ADMIN_HOST_KEY2}"),
        "upstream Authorization: {auth}"
    );

    // Replace: PUT again is 200 and the new value is listed.
    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/hosts/dyn.example",
            Some(json!({"keys": [], "origin": "http://127.0.0.1:1"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, listed) = gw.admin("GET", "/admin/hosts", None).await;
    let dynamic = items(&listed)
        .into_iter()
        .find(|h| h["host"] == "dyn.example")
        .unwrap();
    assert_eq!(dynamic["origin"], "http://127.0.0.1:1", "{listed}");

    // Config hosts cannot be replaced or deleted.
    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/hosts/cfg.example",
            Some(json!({"keys": ["k"], "origin": "http://127.0.0.1:2"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_error_shape(&body);
    let (status, body) = gw.admin("DELETE", "/admin/hosts/cfg.example", None).await;
    assert_eq!(status, 409, "{body}");
    assert_error_shape(&body);
    let (_, listed) = gw.admin("GET", "/admin/hosts", None).await;
    let configured = items(&listed)
        .into_iter()
        .find(|h| h["host"] == "cfg.example")
        .expect("config host still listed");
    assert_eq!(configured["origin"], "http://127.0.0.1:1", "{listed}");

    // Bad host names.
    for bad in [
        "evil.example%2Fpath",
        "user%40evil.example",
        "user@evil.example",
    ] {
        let (status, body) = gw
            .admin(
                "PUT",
                &format!("/admin/hosts/{bad}"),
                Some(json!({"keys": [], "origin": "http://127.0.0.1:1"})),
            )
            .await;
        assert_eq!(status, 400, "PUT /admin/hosts/{bad}: {body}");
        assert_error_shape(&body);
    }

    // Delete: 204, then 404, and X-Host-Final refuses it again.
    let (status, body) = gw.admin("DELETE", "/admin/hosts/dyn.example", None).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = gw.admin("DELETE", "/admin/hosts/dyn.example", None).await;
    assert_eq!(status, 404, "{body}");
    assert_error_shape(&body);
    let (_, listed) = gw.admin("GET", "/admin/hosts", None).await;
    assert!(
        !items(&listed).iter().any(|h| h["host"] == "dyn.example"),
        "{listed}"
    );
    let resp = gw
        .post("/v1/chat/completions", &key)
        .header("x-host-final", "dyn.example")
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(assert_error_shape(&body), "host_not_allowed");
}

// ---------------------------------------------------------------------------------------------
// 5. durability

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_kill_9() {
    let (_mock, mut gw) = start("").await;
    // Each write is followed at once by SIGKILL: it must have been flushed before the reply.
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/users",
            Some(json!({"name": "durable", "email": "d@example.com"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let first_id = body["key"]["id"].as_str().unwrap().to_string();
    let first = body["key"]["key"].as_str().unwrap().to_string();
    gw.stop();
    gw.spawn().await;

    let (status, body) = gw.admin("GET", "/admin/users/durable", None).await;
    assert_eq!(status, 200, "user lost after kill -9: {body}");
    assert_eq!(body["email"], "d@example.com");
    assert_eq!(body["keys"], json!([first_id]), "{body}");
    let (status, body) = gw
        .admin("GET", &format!("/admin/keys/{first_id}"), None)
        .await;
    assert_eq!(status, 200, "key lost after kill -9: {body}");
    assert_works(&gw, &first).await;

    // More writes, each followed by kill -9.
    let (second_id, second) = gw.create_key("durable", json!({"label": "two"})).await;
    gw.stop();
    gw.spawn().await;
    assert_works(&gw, &second).await;

    let (status, _) = gw
        .admin(
            "PATCH",
            &format!("/admin/keys/{second_id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    gw.stop();
    gw.spawn().await;
    assert_refused(&gw, &second, 403, "key_disabled").await;

    let (status, body) = gw
        .admin(
            "POST",
            &format!("/admin/keys/{first_id}/rotate"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rotated = body["key"].as_str().unwrap().to_string();
    gw.stop();
    gw.spawn().await;
    assert_refused(&gw, &first, 401, "invalid_api_key").await;
    assert_works(&gw, &rotated).await;

    let (status, _) = gw
        .admin(
            "PUT",
            "/admin/hosts/durable.example",
            Some(json!({"keys": [], "origin": "http://127.0.0.1:1"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = gw
        .admin("DELETE", &format!("/admin/keys/{second_id}"), None)
        .await;
    assert_eq!(status, 204);
    gw.stop();
    gw.spawn().await;
    let (_, hosts) = gw.admin("GET", "/admin/hosts", None).await;
    assert!(
        items(&hosts).iter().any(|h| h["host"] == "durable.example"),
        "host lost after kill -9: {hosts}"
    );
    let (status, _) = gw
        .admin("GET", &format!("/admin/keys/{second_id}"), None)
        .await;
    assert_eq!(status, 404, "revoked key came back after kill -9");

    let (status, _) = gw.admin("DELETE", "/admin/users/durable", None).await;
    assert_eq!(status, 204);
    gw.stop();
    gw.spawn().await;
    let (status, _) = gw.admin("GET", "/admin/users/durable", None).await;
    assert_eq!(status, 404, "deleted user came back after kill -9");
    assert_refused(&gw, &rotated, 401, "invalid_api_key").await;
}

// ---------------------------------------------------------------------------------------------
// 6. user names with ':'

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_with_colons() {
    let (_mock, gw) = start("").await;
    let (status, body) = gw
        .admin("POST", "/admin/users", Some(json!({"name": "github:123"})))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["name"], "github:123");
    let first = body["key"]["key"].as_str().unwrap().to_string();

    let (status, body) = gw.admin("GET", "/admin/users/github%3A123", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "github:123");
    let (status, body) = gw.admin("GET", "/admin/users/github%3a123", None).await;
    assert_eq!(status, 200, "lowercase percent-escape: {body}");

    let (status, body) = gw
        .admin(
            "POST",
            "/admin/users/github%3A123/keys",
            Some(json!({"label": "second"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"], "github:123");
    let second = body["key"].as_str().unwrap().to_string();
    assert_works(&gw, &second).await;

    let (status, body) = gw.admin("GET", "/admin/keys?user=github%3A123", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(items(&body).len(), 2, "{body}");
    assert!(items(&body).iter().all(|k| k["user"] == "github:123"));

    // A different user whose name only differs after the colon stays separate.
    gw.create_user("github:1234").await;
    let (_, body) = gw.admin("GET", "/admin/keys?user=github%3A123", None).await;
    assert_eq!(items(&body).len(), 2, "{body}");

    let (status, body) = gw.admin("DELETE", "/admin/users/github%3A123", None).await;
    assert_eq!(status, 204, "{body}");
    assert_refused(&gw, &first, 401, "invalid_api_key").await;
    assert_refused(&gw, &second, 401, "invalid_api_key").await;
    let (status, _) = gw.admin("GET", "/admin/users/github%3A123", None).await;
    assert_eq!(status, 404);
    let (status, _) = gw.admin("GET", "/admin/users/github%3A1234", None).await;
    assert_eq!(status, 200);
}
