//! Sign-in end to end (SPEC §3.8, issue 6) against a local OAuth 2.0 / OIDC provider
//! (`tests/common/oauth.rs`): the GitHub and OIDC web flows with signed, single-use state and
//! PKCE; the three answer forms; the device flow's answers; users, `new_user_limits` and
//! `max_keys_per_user`; `allowed_emails`; and no secret in the logs.

mod common;

use serde_json::{json, Value};

use common::assert::{assert_error, header_str};
use common::mock::MockUpstream;
use common::oauth::{DeviceState, MockEmail, MockIdentity, MockOauth, CLIENT_ID, CLIENT_SECRET};
use common::{GatewayConfig, TestGateway};

const CALLBACK_BASE: &str = "http://gateway.test";
const STATE_SECRET: &str = "state-secret-state-secret-state-secret";

async fn setup(extra: &str) -> (MockUpstream, MockOauth, TestGateway) {
    let upstream = MockUpstream::start().await;
    let provider = MockOauth::start().await;
    let yaml = format!(
        "oauth:\n  redirect_base: {CALLBACK_BASE}\n  state_secret: {STATE_SECRET}\n  providers:\n    github: {{ type: github, client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET}, base_url: \"{}\", api_url: \"{}\" }}\n    corp: {{ type: oidc, issuer: \"{}\", client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET} }}\n  allowed_redirects: [\"http://127.0.0.1:*/*\"]\n  new_user_limits: {{ requests_per_day: 7 }}\n  max_keys_per_user: 2\n{extra}",
        provider.url(),
        provider.api_url(),
        provider.issuer(),
    );
    let gw = TestGateway::start(GatewayConfig::new(&upstream.url()).extra(&yaml)).await;
    (upstream, provider, gw)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(resp: &reqwest::Response) -> String {
    header_str(resp.headers(), "location")
        .unwrap_or_default()
        .to_string()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1.split('#').next()?;
    common::oauth::parse_form(query).remove(name)
}

/// Login at the gateway, approval at the provider: the callback path and query the browser
/// would be sent to.
async fn authorize(gw: &TestGateway, provider: &str, redirect_uri: Option<&str>) -> String {
    let client = no_redirects();
    let mut login = gw.url(&format!("/auth/{provider}/login"));
    if let Some(r) = redirect_uri {
        login.push_str(&format!("?redirect_uri={}", urlencode(r)));
    }
    let resp = client.get(login).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let at_provider = location(&resp);
    assert_eq!(
        query_param(&at_provider, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&at_provider, "code_challenge").is_some_and(|c| c.len() == 43));
    assert_eq!(
        query_param(&at_provider, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    let approved = client.get(&at_provider).send().await.unwrap();
    assert_eq!(approved.status(), 302, "{:?}", approved.text().await);
    let back = location(&approved);
    let path = back
        .strip_prefix(CALLBACK_BASE)
        .unwrap_or_else(|| panic!("callback goes to redirect_base: {back}"));
    assert!(
        path.starts_with(&format!("/auth/{provider}/callback?")),
        "{path}"
    );
    path.to_string()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn callback_json(gw: &TestGateway, path: &str) -> (u16, Value) {
    let resp = no_redirects()
        .get(gw.url(path))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn account(gw: &TestGateway, key: &str) -> (u16, Value) {
    let resp = gw.get("/account", key).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn github_web_flow_with_pkce_issues_a_working_key_once() {
    let (_up, provider, gw) = setup("").await;
    let path = authorize(&gw, "github", None).await;
    let (status, body) = callback_json(&gw, &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "github:4242");
    let key = body["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-tg-") && key.len() == 46);
    let (status, me) = account(&gw, &key).await;
    assert_eq!(status, 200);
    assert_eq!(me["user"], "github:4242");
    assert_eq!(me["key_id"], body["key_id"]);
    assert_eq!(me["label"], "github");

    // The code went to the token endpoint with the PKCE verifier and the client secret.
    let token = provider.token_requests().pop().unwrap();
    let form = common::oauth::parse_form(&String::from_utf8_lossy(&token.body));
    assert!(form.get("code_verifier").is_some_and(|v| v.len() >= 43));
    assert_eq!(
        form.get("client_secret").map(String::as_str),
        Some(CLIENT_SECRET)
    );

    // The state is good once.
    let (status, replay) = callback_json(&gw, &path).await;
    assert_eq!(status, 400);
    assert_error(&replay, "invalid_request_error", "invalid_state");

    // A forged or tampered state, or none.
    let fresh = authorize(&gw, "github", None).await;
    let state = query_param(&fresh, "state").unwrap();
    let code = query_param(&fresh, "code").unwrap();
    let (body_b64, mac) = state.split_once('.').unwrap();
    let mut flipped = body_b64.as_bytes().to_vec();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{}.{mac}", String::from_utf8(flipped).unwrap());
    for bad in [tampered.as_str(), "forged.state", ""] {
        let (status, body) = callback_json(
            &gw,
            &format!("/auth/github/callback?code={code}&state={}", urlencode(bad)),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert_error(&body, "invalid_request_error", "invalid_state");
    }
    // A state made for one provider is not taken by another.
    let (status, _) = callback_json(
        &gw,
        &format!(
            "/auth/corp/callback?code={code}&state={}",
            urlencode(&state)
        ),
    )
    .await;
    assert_eq!(status, 400);
    // The untouched one still works.
    let (status, _) = callback_json(&gw, &fresh).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_key_comes_back_as_a_page_or_in_a_redirect_fragment() {
    let (_up, _provider, gw) = setup("").await;
    // HTML, shown once.
    let path = authorize(&gw, "github", None).await;
    let page = no_redirects().get(gw.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(header_str(page.headers(), "content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    assert_eq!(
        header_str(page.headers(), "cache-control"),
        Some("no-store")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("sk-tg-"), "{html}");

    // A redirect to an allowed URI, with the key in the fragment.
    let back = "http://127.0.0.1:8765/done";
    let path = authorize(&gw, "github", Some(back)).await;
    let resp = no_redirects().get(gw.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let to = location(&resp);
    let (base, fragment) = to.split_once('#').unwrap();
    assert_eq!(base, back);
    let fields = common::oauth::parse_form(fragment);
    let key = fields.get("key").unwrap();
    assert_eq!(account(&gw, key).await.0, 200);
    assert_eq!(fields.get("user").map(String::as_str), Some("github:4242"));

    // Any other redirect is refused at login.
    for bad in [
        "https://evil.example/steal",
        "http://127.0.0.1.evil.example:80/x",
    ] {
        let resp = no_redirects()
            .get(gw.url(&format!(
                "/auth/github/login?redirect_uri={}",
                urlencode(bad)
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    let unknown = no_redirects()
        .get(gw.url("/auth/nope/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn oidc_flow_uses_discovery_and_sign_ins_past_the_limit_revoke_the_oldest_key() {
    let (_up, _provider, gw) = setup("").await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        let path = authorize(&gw, "corp", None).await;
        let (status, body) = callback_json(&gw, &path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user"], "corp:sub-4242");
        keys.push(body["key"].as_str().unwrap().to_string());
    }
    // max_keys_per_user: 2 — the first sign-in key is gone, the last two work.
    assert_eq!(account(&gw, &keys[0]).await.0, 401);
    assert_eq!(account(&gw, &keys[1]).await.0, 200);
    let (_, me) = account(&gw, &keys[2]).await;
    assert_eq!(me["user"], "corp:sub-4242");
    // The user was created with new_user_limits.
    let (status, user) = gw.admin("GET", "/admin/users/corp:sub-4242", None).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["limits"]["requests_per_day"], 7, "{user}");
    assert_eq!(user["email"], "octo@example.com");
}

#[tokio::test]
async fn only_verified_allowed_emails_may_sign_in() {
    let (_up, provider, gw) = setup("  allowed_emails: [\"*@allowed.org\"]\n").await;
    let path = authorize(&gw, "github", None).await;
    let (status, body) = callback_json(&gw, &path).await;
    assert_eq!(status, 403);
    assert_error(&body, "permission_error", "email_not_allowed");

    let identity = |verified| MockIdentity {
        emails: vec![
            MockEmail {
                email: "octo@example.com".into(),
                verified: true,
                primary: true,
            },
            MockEmail {
                email: "Octo@Allowed.org".into(),
                verified,
                primary: false,
            },
        ],
        ..MockIdentity::default()
    };
    provider.set_identity(identity(false));
    let path = authorize(&gw, "github", None).await;
    assert_eq!(callback_json(&gw, &path).await.0, 403, "unverified");
    provider.set_identity(identity(true));
    let path = authorize(&gw, "github", None).await;
    let (status, body) = callback_json(&gw, &path).await;
    assert_eq!(status, 200, "{body}");
    let (status, user) = gw.admin("GET", "/admin/users/github:4242", None).await;
    assert_eq!(status, 200);
    assert_eq!(user["email"], "Octo@Allowed.org");
}

#[tokio::test]
async fn device_flow_maps_every_provider_answer() {
    let (_up, provider, gw) = setup("").await;
    for name in ["github", "corp"] {
        let resp = gw
            .http
            .post(gw.url("/auth/device/code"))
            .json(&json!({"provider": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let started: Value = resp.json().await.unwrap();
        for field in [
            "device_code",
            "user_code",
            "verification_uri",
            "verification_uri_complete",
        ] {
            assert!(started[field].is_string(), "{name}: {field} in {started}");
        }
        assert!(started["expires_in"].is_i64() && started["interval"].is_i64());
        let code = started["device_code"].as_str().unwrap().to_string();
        let poll = || async {
            let resp = gw
                .http
                .post(gw.url("/auth/device/token"))
                .json(&json!({"device_code": code}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        };
        for (state, status, code_name) in [
            (DeviceState::Pending, 400, "authorization_pending"),
            (DeviceState::SlowDown, 400, "slow_down"),
            (DeviceState::Denied, 401, "access_denied"),
            (DeviceState::Expired, 400, "expired_token"),
        ] {
            provider.set_device_state(state);
            let (got, body) = poll().await;
            assert_eq!(got, status, "{name} {state:?}: {body}");
            assert_eq!(body["error"]["code"], code_name, "{name} {state:?}");
        }
        provider.set_device_state(DeviceState::Approved);
        let (got, body) = poll().await;
        assert_eq!(got, 200, "{name}: {body}");
        let key = body["key"].as_str().unwrap();
        assert_eq!(account(&gw, key).await.0, 200);
    }
    // A device code the gateway did not sign.
    let resp = gw
        .http
        .post(gw.url("/auth/device/token"))
        .json(&json!({"device_code": "made.up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn secrets_codes_and_tokens_never_reach_the_logs() {
    let (_up, provider, gw) = setup("").await;
    let path = authorize(&gw, "github", None).await;
    let code = query_param(&path, "code").unwrap();
    let (_, body) = callback_json(&gw, &path).await;
    let key = body["key"].as_str().unwrap().to_string();
    // A failing exchange is logged too: the replayed code is refused by the provider.
    let again = authorize(&gw, "github", None).await;
    let state = query_param(&again, "state").unwrap();
    let (status, _) = callback_json(
        &gw,
        &format!(
            "/auth/github/callback?code={code}&state={}",
            urlencode(&state)
        ),
    )
    .await;
    assert_eq!(status, 502);
    let logs = format!("{}{}", gw.stdout(), gw.stderr());
    assert!(
        logs.contains("refused the code"),
        "the failure is logged: {logs}"
    );
    for secret in [CLIENT_SECRET, code.as_str(), key.as_str(), STATE_SECRET] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    for request in provider.token_requests() {
        let text = String::from_utf8_lossy(&request.body).to_string();
        if let Some(token) = text.split("access_token=").nth(1) {
            assert!(!logs.contains(token));
        }
    }
}
