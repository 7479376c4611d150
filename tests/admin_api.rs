//! End-to-end tests of the admin HTTP API (SPEC §5): authentication, users, keys, hosts,
//! durability of writes and percent-encoded user names. Each test runs the real binary.

mod common;

use common::assert::{assert_error_shape, assert_refused, assert_works, is_gateway_key};
use common::{chat_body, start_with_mock, TestGateway, ADMIN_TOKEN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// helpers

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

/// Sends `text` (not valid JSON) as the body of an admin call with the right token; asserts a
/// 400 with a JSON error in the SPEC §4 shape.
async fn assert_bad_json_refused(gw: &TestGateway, method: &str, path: &str, text: &str) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, reply) = admin_raw(gw, method, path, Some(&auth), Some(text)).await;
    assert_eq!(status, 400, "{method} {path}: {reply}");
    assert_error_shape(&serde_json::from_str(&reply).expect("400 body is JSON"));
}

/// An admin call that must fail with `status` and a SPEC §4 error body; returns its `code`.
async fn admin_error(
    gw: &TestGateway,
    status: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> String {
    assert_error_shape(&gw.admin_expect(status, method, path, body).await)
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

/// The item of a list reply whose `field` is `value`, if listed.
fn find_item(list: &Value, field: &str, value: &str) -> Option<Value> {
    items(list).into_iter().find(|item| item[field] == value)
}

/// The item of a list reply whose `field` is `value`; fails the test when it is not listed.
fn listed(list: &Value, field: &str, value: &str) -> Value {
    find_item(list, field, value).unwrap_or_else(|| panic!("{value} not listed: {list}"))
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

/// `check_auth`, and asserts the call with the right token answered `status`; returns the reply.
async fn check_auth_expect(
    gw: &TestGateway,
    status: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (s, b) = check_auth(gw, method, path, body).await;
    assert_eq!(s, status, "{b}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_requires_the_admin_token() {
    let (_mock, gw) = start_with_mock("").await;

    check_auth_expect(&gw, 200, "GET", "/admin/users", None).await;
    // A refused POST created nothing: the right one is 201, not 409.
    let user = Some(json!({"name": "auth-u"}));
    let b = check_auth_expect(&gw, 201, "POST", "/admin/users", user).await;
    let first = b["key"]["id"].as_str().unwrap().to_string();
    check_auth_expect(&gw, 200, "GET", "/admin/users/auth-u", None).await;
    let b = check_auth_expect(
        &gw,
        201,
        "POST",
        "/admin/users/auth-u/keys",
        Some(json!({})),
    )
    .await;
    let second = b["id"].as_str().unwrap().to_string();
    check_auth_expect(&gw, 200, "GET", "/admin/keys", None).await;
    let b = check_auth_expect(&gw, 200, "GET", "/admin/keys?user=auth-u", None).await;
    assert_eq!(items(&b).len(), 2, "{b}");
    let key_path = format!("/admin/keys/{first}");
    check_auth_expect(&gw, 200, "GET", &key_path, None).await;
    let patch = Some(json!({"label": "patched"}));
    let b = check_auth_expect(&gw, 200, "PATCH", &key_path, patch).await;
    assert_eq!(b["label"], "patched");
    let rotate = format!("{key_path}/rotate");
    let b = check_auth_expect(&gw, 200, "POST", &rotate, Some(json!({}))).await;
    let rotated = b["key"].as_str().unwrap().to_string();
    assert_works(&gw, &rotated).await;
    // Refused DELETEs removed nothing: the right one is 204, not 404.
    let second_path = format!("/admin/keys/{second}");
    check_auth_expect(&gw, 204, "DELETE", &second_path, None).await;
    check_auth_expect(&gw, 200, "GET", "/admin/hosts", None).await;
    let host = Some(json!({"keys": [], "origin": "http://127.0.0.1:1"}));
    check_auth_expect(&gw, 200, "PUT", "/admin/hosts/auth.example", host).await;
    check_auth_expect(&gw, 204, "DELETE", "/admin/hosts/auth.example", None).await;
    // Usage and image routes: refused without the token; whatever they answer with it, not 401.
    let image = format!("/admin/images/{}", "0".repeat(64));
    let purge = json!({"description": "nothing cached"});
    for (method, path, body) in [
        ("GET", "/admin/usage", None),
        ("DELETE", image.as_str(), None),
        ("POST", "/admin/images/purge", Some(purge)),
    ] {
        let (s, b) = check_auth(&gw, method, path, body).await;
        assert_ne!(s, 401, "{b}");
    }
    check_auth_expect(&gw, 204, "DELETE", "/admin/users/auth-u", None).await;
    assert_refused(&gw, &rotated, 401, "invalid_api_key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_create_list_show_delete() {
    let (_mock, gw) = start_with_mock("").await;
    let alice = json!({"name": "alice", "email": "alice@example.com"});
    let body = gw
        .admin_expect(201, "POST", "/admin/users", Some(alice))
        .await;
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
    let again = Some(json!({"name": "alice"}));
    admin_error(&gw, 409, "POST", "/admin/users", again).await;

    // A second key, so deletion has more than one key to revoke.
    let (second_id, second) = gw.create_key("alice", json!({"label": "second"})).await;
    gw.create_user("bob").await;

    let body = gw.admin_expect(200, "GET", "/admin/users", None).await;
    let alice = listed(&body, "name", "alice");
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
    assert!(find_item(&body, "name", "bob").is_some(), "{body}");
    assert_eq!(alice["email"], "alice@example.com");
    assert_timestamp(&alice["created_at"], "listed created_at");
    let text = body.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&second),
        "secret listed"
    );

    let body = gw
        .admin_expect(200, "GET", "/admin/users/alice", None)
        .await;
    assert_eq!(body["name"], "alice");
    assert_eq!(body["email"], "alice@example.com");
    assert_eq!(body["keys"].as_array().map(Vec::len), Some(2), "{body}");
    assert!(!body.to_string().contains(&secret));

    // Delete: 204, and every key of the user stops working with the reply.
    let body = gw
        .admin_expect(204, "DELETE", "/admin/users/alice", None)
        .await;
    assert_eq!(body, Value::Null, "204 with a body");
    assert_refused(&gw, &secret, 401, "invalid_api_key").await;
    assert_refused(&gw, &second, 401, "invalid_api_key").await;

    let code = admin_error(&gw, 404, "GET", "/admin/users/alice", None).await;
    assert_eq!(code, "not_found");
    admin_error(&gw, 404, "DELETE", "/admin/users/alice", None).await;
    let (status, body) = gw.get_key(&second_id).await;
    assert_eq!(status, 404, "key of a deleted user: {body}");
    let (_, body) = gw.admin("GET", "/admin/users", None).await;
    assert!(find_item(&body, "name", "alice").is_none(), "{body}");
    // The name is free again.
    gw.create_user("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_with_limits_and_bad_bodies() {
    let (_mock, gw) = start_with_mock("").await;
    let lim = json!({"name": "lim", "limits": {"requests_per_day": 100}});
    let body = gw
        .admin_expect(201, "POST", "/admin/users", Some(lim))
        .await;
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
    assert_bad_json_refused(&gw, "POST", "/admin/users", "{\"name\": \"x\"").await;
    let (_, body) = gw.admin("GET", "/admin/users/x", None).await;
    assert_error_shape(&body);
}

// ---------------------------------------------------------------------------------------------
// 3. keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_show_patch_rotate_delete() {
    let (_mock, gw) = start_with_mock("").await;
    let first = gw.create_user("carol").await;

    let spec = json!({
        "label": "ci",
        "expires_in_s": 3600,
        "models": ["gpt-4o-mini"],
        "limits": {"requests_per_minute": 5}
    });
    let created = gw
        .admin_expect(201, "POST", "/admin/users/carol/keys", Some(spec))
        .await;
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
    let (status, body) = gw.chat_reply(&secret, "gpt-4o").await;
    assert_eq!(status, 403, "model outside the key's list: {body}");
    assert_eq!(assert_error_shape(&body), "model_not_allowed");

    // Records never carry the secret nor its hash.
    let secret_hash = sha256_hex(&secret);
    let first_hash = sha256_hex(&first);
    let (status, shown) = gw.get_key(&id).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["label"], "ci");
    assert_eq!(shown["user"], "carol");
    assert_eq!(shown["models"], json!(["gpt-4o-mini"]));
    assert_eq!(shown["limits"]["requests_per_minute"], 5);
    assert_eq!(shown["expires_at"], created["expires_at"]);
    assert_eq!(shown["disabled"], false);
    assert_timestamp(&shown["created_at"], "created_at");
    let listed = gw
        .admin_expect(200, "GET", "/admin/keys?user=carol", None)
        .await;
    assert_eq!(items(&listed).len(), 2, "{listed}");
    assert!(find_item(&listed, "id", &id).is_some());
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
    let (status, body) = gw.patch_key(&id, json!({"disabled": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled"], true);
    assert_eq!(body["label"], "ci", "absent fields stay: {body}");
    assert_refused(&gw, &secret, 403, "key_disabled").await;

    // PATCH: everything at once.
    let everything = json!({
        "disabled": false,
        "label": "renamed",
        "expires_at": "2099-01-02T03:04:05Z",
        "models": ["gpt-4o", "gpt-4o-mini"],
        "limits": {"requests_per_minute": 7}
    });
    let (status, body) = gw.patch_key(&id, everything).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled"], false);
    assert_eq!(body["label"], "renamed");
    assert_eq!(body["expires_at"], "2099-01-02T03:04:05Z");
    assert_eq!(body["models"], json!(["gpt-4o", "gpt-4o-mini"]));
    assert_eq!(body["limits"]["requests_per_minute"], 7, "{body}");
    assert_works(&gw, &secret).await;
    let (_, shown) = gw.get_key(&id).await;
    assert_eq!(shown["label"], "renamed");
    assert_eq!(shown["limits"]["requests_per_minute"], 7);

    // PATCH: null clears.
    let (status, body) = gw.patch_key(&id, json!({"label": null})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["label"].is_null(), "label not cleared: {body}");
    assert_eq!(body["models"], json!(["gpt-4o", "gpt-4o-mini"]), "{body}");
    let clear = json!({"models": null, "expires_at": null, "limits": null});
    let (status, body) = gw.patch_key(&id, clear).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_at"].is_null(), "{body}");
    assert!(body["limits"]["requests_per_minute"].is_null(), "{body}");
    assert!(
        body["models"].is_null() || body["models"] == json!([]),
        "{body}"
    );

    // PATCH: an expiry in the past.
    let past = json!({"expires_at": "2001-01-01T00:00:00Z"});
    let (status, body) = gw.patch_key(&id, past).await;
    assert_eq!(status, 200, "{body}");
    assert_refused(&gw, &secret, 401, "key_expired").await;
    let (status, _) = gw.patch_key(&id, json!({"expires_at": null})).await;
    assert_eq!(status, 200);
    assert_works(&gw, &secret).await;

    // Rotate without grace: same id, new secret, the old one dead at once.
    let (status, body) = gw.rotate_key(&id, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    let rotated = body["key"].as_str().expect("key").to_string();
    assert!(is_gateway_key(&rotated));
    assert_ne!(rotated, secret);
    assert_refused(&gw, &secret, 401, "invalid_api_key").await;
    assert_works(&gw, &rotated).await;

    // Rotate with grace: both work.
    let (status, body) = gw.rotate_key(&id, json!({"grace_s": 3600})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    let third = body["key"].as_str().unwrap().to_string();
    assert_works(&gw, &rotated).await;
    assert_works(&gw, &third).await;
    let (_, shown) = gw.get_key(&id).await;
    for needle in [&rotated, &third, &sha256_hex(&rotated), &sha256_hex(&third)] {
        assert!(!shown.to_string().contains(needle.as_str()), "{shown}");
    }

    // Delete: 204, revoked at once (both secrets), then 404.
    let (status, body) = gw.delete_key(&id).await;
    assert_eq!(status, 204, "{body}");
    assert_refused(&gw, &third, 401, "invalid_api_key").await;
    assert_refused(&gw, &rotated, 401, "invalid_api_key").await;
    let (status, body) = gw.get_key(&id).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(assert_error_shape(&body), "not_found");
    for (what, (status, body)) in [
        ("DELETE", gw.delete_key(&id).await),
        ("rotate", gw.rotate_key(&id, json!({})).await),
        ("PATCH", gw.patch_key(&id, json!({"disabled": true})).await),
    ] {
        assert_eq!(status, 404, "{what}: {body}");
    }
    // The user's other key is untouched.
    assert_works(&gw, &first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_bad_requests() {
    let (_mock, gw) = start_with_mock("").await;
    gw.create_user("dave").await;
    let (id, _) = gw.create_key("dave", json!({})).await;
    let key_path = format!("/admin/keys/{id}");
    let rotate_path = format!("/admin/keys/{id}/rotate");

    // Missing user.
    let label = Some(json!({"label": "x"}));
    let code = admin_error(&gw, 404, "POST", "/admin/users/nobody/keys", label).await;
    assert_eq!(code, "not_found");
    let (_, body) = gw.admin("GET", "/admin/users/nobody", None).await;
    assert_eq!(
        assert_error_shape(&body),
        "not_found",
        "no user was created"
    );

    // Unknown fields.
    let cases = [
        ("POST", "/admin/users/dave/keys", json!({"labl": "x"})),
        (
            "POST",
            "/admin/users/dave/keys",
            json!({"limits": {"rpm": 5}}),
        ),
        ("PATCH", key_path.as_str(), json!({"disable": true})),
        (
            "PATCH",
            key_path.as_str(),
            json!({"limits": {"requests_per_minute": 1, "bogus": 2}}),
        ),
        ("POST", rotate_path.as_str(), json!({"grace": 5})),
        (
            "PUT",
            "/admin/hosts/x.example",
            json!({"keys": [], "orign": "http://127.0.0.1:1"}),
        ),
    ];
    for (method, path, body) in cases {
        let (status, reply) = gw.admin(method, path, Some(body.clone())).await;
        assert_eq!(status, 400, "{method} {path} {body} answered {reply}");
        assert_error_shape(&reply);
    }

    // Invalid JSON.
    for (method, path) in [
        ("POST", "/admin/users/dave/keys"),
        ("PATCH", key_path.as_str()),
        ("POST", rotate_path.as_str()),
        ("PUT", "/admin/hosts/x.example"),
    ] {
        assert_bad_json_refused(&gw, method, path, "{not json").await;
    }
    // Wrong types.
    let (status, body) = gw.patch_key(&id, json!({"disabled": "yes"})).await;
    assert_eq!(status, 400, "{body}");
    let tomorrow = Some(json!({"expires_at": "tomorrow"}));
    gw.admin_expect(400, "POST", "/admin/users/dave/keys", tomorrow)
        .await;

    // Nothing of that changed the key or added keys.
    let (_, shown) = gw.get_key(&id).await;
    assert_eq!(shown["disabled"], false, "{shown}");
    let (_, listed) = gw.admin("GET", "/admin/keys?user=dave", None).await;
    assert_eq!(items(&listed).len(), 2, "{listed}");
    let (_, hosts) = gw.admin("GET", "/admin/hosts", None).await;
    assert!(!hosts.to_string().contains("x.example"), "{hosts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_model_allow_list_and_expiry_form() {
    let (_mock, gw) = start_with_mock("").await;
    gw.create_user("erin").await;
    let (id, key) = gw
        .create_key(
            "erin",
            json!({"models": ["gpt-4o-mini"], "expires_at": "2099-12-31T23:59:59Z"}),
        )
        .await;
    assert_works(&gw, &key).await;
    let (status, body) = gw.chat_reply(&key, "gpt-4o").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(assert_error_shape(&body), "model_not_allowed");
    let (_, shown) = gw.get_key(&id).await;
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

/// A chat completion with `key` whose `X-Host-Final` is `host`.
async fn chat_via_host(gw: &TestGateway, key: &str, host: &str) -> reqwest::Response {
    gw.post("/v1/chat/completions", key)
        .header("x-host-final", host)
        .json(&chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_put_list_delete() {
    let extra = format!(
        "hosts:\n  cfg.example: {{ origin: \"http://127.0.0.1:1\", keys: [{CONFIG_HOST_KEY}] }}\n"
    );
    let (mock, gw) = start_with_mock(&extra).await;
    let key = gw.create_user("hal").await;

    let host = json!({"keys": [ADMIN_HOST_KEY, ADMIN_HOST_KEY2], "origin": mock.url()});
    let body = gw
        .admin_expect(200, "PUT", "/admin/hosts/dyn.example", Some(host))
        .await;
    assert!(!body.to_string().contains(ADMIN_HOST_KEY), "{body}");
    assert!(!body.to_string().contains(ADMIN_HOST_KEY2), "{body}");

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, text) = admin_raw(&gw, "GET", "/admin/hosts", Some(&auth), None).await;
    assert_eq!(status, 200, "{text}");
    for secret in [ADMIN_HOST_KEY, ADMIN_HOST_KEY2, CONFIG_HOST_KEY] {
        assert!(!text.contains(secret), "full host key listed: {text}");
    }
    let list: Value = serde_json::from_str(&text).unwrap();
    let dynamic = listed(&list, "host", "dyn.example");
    assert_eq!(dynamic["source"], "admin", "{text}");
    assert_eq!(dynamic["origin"], mock.url().as_str(), "{text}");
    assert_eq!(dynamic["keys"].as_array().map(Vec::len), Some(2), "{text}");
    let configured = listed(&list, "host", "cfg.example");
    assert_eq!(configured["source"], "config", "{text}");

    // The host is live for X-Host-Final, with its own key upstream.
    let resp = chat_via_host(&gw, &key, "dyn.example").await;
    assert_eq!(resp.status(), 200);
    let seen = mock.last_request().expect("mock saw the request");
    let auth = seen.header("authorization").unwrap_or_default().to_string();
    assert!(
        auth == format!("Bearer {ADMIN_HOST_KEY}") || auth == format!("Bearer {ADMIN_HOST_KEY2}"),
        "upstream Authorization: {auth}"
    );

    // Replace: PUT again is 200 and the new value is listed.
    let host = json!({"keys": [], "origin": "http://127.0.0.1:1"});
    gw.admin_expect(200, "PUT", "/admin/hosts/dyn.example", Some(host))
        .await;
    let (_, list) = gw.admin("GET", "/admin/hosts", None).await;
    let dynamic = listed(&list, "host", "dyn.example");
    assert_eq!(dynamic["origin"], "http://127.0.0.1:1", "{list}");

    // Config hosts cannot be replaced or deleted.
    let host = json!({"keys": ["k"], "origin": "http://127.0.0.1:2"});
    admin_error(&gw, 409, "PUT", "/admin/hosts/cfg.example", Some(host)).await;
    admin_error(&gw, 409, "DELETE", "/admin/hosts/cfg.example", None).await;
    let (_, list) = gw.admin("GET", "/admin/hosts", None).await;
    let configured = listed(&list, "host", "cfg.example");
    assert_eq!(configured["origin"], "http://127.0.0.1:1", "{list}");

    // Bad host names.
    for bad in [
        "evil.example%2Fpath",
        "user%40evil.example",
        "user@evil.example",
    ] {
        let host = json!({"keys": [], "origin": "http://127.0.0.1:1"});
        let path = format!("/admin/hosts/{bad}");
        admin_error(&gw, 400, "PUT", &path, Some(host)).await;
    }

    // A key no HTTP header can carry is refused up front (it could never be sent upstream),
    // without being echoed, and nothing is stored.
    let secret = "sk-admin-host-key\nsecond-line";
    let host = json!({"keys": [secret], "origin": "http://127.0.0.1:1"});
    let body = gw
        .admin_expect(400, "PUT", "/admin/hosts/newline.example", Some(host))
        .await;
    assert_error_shape(&body);
    assert!(
        body.to_string().contains("provider key 1 has characters"),
        "{body}"
    );
    assert!(!body.to_string().contains("sk-admin-host-key"), "{body}");
    let (_, list) = gw.admin("GET", "/admin/hosts", None).await;
    assert!(
        find_item(&list, "host", "newline.example").is_none(),
        "{list}"
    );

    // Delete: 204, then 404, and X-Host-Final refuses it again.
    gw.admin_expect(204, "DELETE", "/admin/hosts/dyn.example", None)
        .await;
    admin_error(&gw, 404, "DELETE", "/admin/hosts/dyn.example", None).await;
    let (_, list) = gw.admin("GET", "/admin/hosts", None).await;
    assert!(find_item(&list, "host", "dyn.example").is_none(), "{list}");
    let resp = chat_via_host(&gw, &key, "dyn.example").await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(assert_error_shape(&body), "host_not_allowed");
}

// ---------------------------------------------------------------------------------------------
// 5. durability

/// SIGKILL, then start the same gateway (config and data directory) again.
async fn kill_9_and_restart(gw: &mut TestGateway) {
    gw.stop();
    gw.spawn().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_kill_9() {
    let (_mock, mut gw) = start_with_mock("").await;
    // Each write is followed at once by SIGKILL: it must have been flushed before the reply.
    let durable = json!({"name": "durable", "email": "d@example.com"});
    let body = gw
        .admin_expect(201, "POST", "/admin/users", Some(durable))
        .await;
    let first_id = body["key"]["id"].as_str().unwrap().to_string();
    let first = body["key"]["key"].as_str().unwrap().to_string();
    kill_9_and_restart(&mut gw).await;

    let (status, body) = gw.admin("GET", "/admin/users/durable", None).await;
    assert_eq!(status, 200, "user lost after kill -9: {body}");
    assert_eq!(body["email"], "d@example.com");
    assert_eq!(body["keys"], json!([first_id]), "{body}");
    let (status, body) = gw.get_key(&first_id).await;
    assert_eq!(status, 200, "key lost after kill -9: {body}");
    assert_works(&gw, &first).await;

    // More writes, each followed by kill -9.
    let (second_id, second) = gw.create_key("durable", json!({"label": "two"})).await;
    kill_9_and_restart(&mut gw).await;
    assert_works(&gw, &second).await;

    let (status, _) = gw.patch_key(&second_id, json!({"disabled": true})).await;
    assert_eq!(status, 200);
    kill_9_and_restart(&mut gw).await;
    assert_refused(&gw, &second, 403, "key_disabled").await;

    let (status, body) = gw.rotate_key(&first_id, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let rotated = body["key"].as_str().unwrap().to_string();
    kill_9_and_restart(&mut gw).await;
    assert_refused(&gw, &first, 401, "invalid_api_key").await;
    assert_works(&gw, &rotated).await;

    let host = json!({"keys": [], "origin": "http://127.0.0.1:1"});
    gw.admin_expect(200, "PUT", "/admin/hosts/durable.example", Some(host))
        .await;
    let (status, _) = gw.delete_key(&second_id).await;
    assert_eq!(status, 204);
    kill_9_and_restart(&mut gw).await;
    let (_, hosts) = gw.admin("GET", "/admin/hosts", None).await;
    assert!(
        find_item(&hosts, "host", "durable.example").is_some(),
        "host lost after kill -9: {hosts}"
    );
    let (status, _) = gw.get_key(&second_id).await;
    assert_eq!(status, 404, "revoked key came back after kill -9");

    gw.admin_expect(204, "DELETE", "/admin/users/durable", None)
        .await;
    kill_9_and_restart(&mut gw).await;
    let (status, _) = gw.admin("GET", "/admin/users/durable", None).await;
    assert_eq!(status, 404, "deleted user came back after kill -9");
    assert_refused(&gw, &rotated, 401, "invalid_api_key").await;
}

// ---------------------------------------------------------------------------------------------
// 6. user names with ':'

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_with_colons() {
    let (_mock, gw) = start_with_mock("").await;
    let name = Some(json!({"name": "github:123"}));
    let body = gw.admin_expect(201, "POST", "/admin/users", name).await;
    assert_eq!(body["user"]["name"], "github:123");
    let first = body["key"]["key"].as_str().unwrap().to_string();

    let (status, body) = gw.admin("GET", "/admin/users/github%3A123", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "github:123");
    let (status, body) = gw.admin("GET", "/admin/users/github%3a123", None).await;
    assert_eq!(status, 200, "lowercase percent-escape: {body}");

    let label = Some(json!({"label": "second"}));
    let body = gw
        .admin_expect(201, "POST", "/admin/users/github%3A123/keys", label)
        .await;
    assert_eq!(body["user"], "github:123");
    let second = body["key"].as_str().unwrap().to_string();
    assert_works(&gw, &second).await;

    let body = gw
        .admin_expect(200, "GET", "/admin/keys?user=github%3A123", None)
        .await;
    assert_eq!(items(&body).len(), 2, "{body}");
    assert!(items(&body).iter().all(|k| k["user"] == "github:123"));

    // A different user whose name only differs after the colon stays separate.
    gw.create_user("github:1234").await;
    let (_, body) = gw.admin("GET", "/admin/keys?user=github%3A123", None).await;
    assert_eq!(items(&body).len(), 2, "{body}");

    gw.admin_expect(204, "DELETE", "/admin/users/github%3A123", None)
        .await;
    assert_refused(&gw, &first, 401, "invalid_api_key").await;
    assert_refused(&gw, &second, 401, "invalid_api_key").await;
    let (status, _) = gw.admin("GET", "/admin/users/github%3A123", None).await;
    assert_eq!(status, 404);
    let (status, _) = gw.admin("GET", "/admin/users/github%3A1234", None).await;
    assert_eq!(status, 200);
}
