//! A mock OAuth 2.0 + OpenID Connect provider for the sign-in tests (SPEC
//! section 3.8): a real HTTP/1.1 server (hyper) on 127.0.0.1 that speaks both
//! GitHub's (Enterprise) shape and a generic OIDC provider's shape, records
//! every request and auto-approves every authorization as the current
//! identity ([`MockOauth::set_identity`]).
//!
//! The only client is [`CLIENT_ID`] / [`CLIENT_SECRET`].
//!
//! GitHub shape (`base_url` = [`MockOauth::url`], `api_url` = `{url}/api/v3`):
//!
//! | request | answer |
//! |---------|--------|
//! | `GET /login/oauth/authorize?client_id&redirect_uri&state&scope&code_challenge&code_challenge_method=S256` | 302 to `redirect_uri` with `code=…&state=…` appended; unknown client, missing `redirect_uri`, or a `code_challenge_method` other than `S256` → 400 `text/plain` |
//! | `POST /login/oauth/access_token` (form, JSON or query parameters) | code grant (`grant_type` absent or `authorization_code`): `{"access_token":"gho_…","token_type":"bearer","scope":"read:user,user:email"}`; device grant: see below. Always HTTP 200; errors as `{"error","error_description","error_uri"}`. JSON when `Accept` has `application/json`, else `application/x-www-form-urlencoded` |
//! | `POST /login/device/code` (client_id, scope) | `{"device_code","user_code":"ABCD-1234","verification_uri":"{url}/login/device","expires_in":900,"interval":5}` (JSON or form as above); unknown client → 400 `incorrect_client_credentials` |
//! | `GET /api/v3/user` (`Authorization: Bearer <t>` or `token <t>`) | `{"id","login","name","email":<primary or null>,"type":"User"}` |
//! | `GET /api/v3/user/emails` | `[{"email","verified","primary","visibility":null}]` |
//!
//! Code-grant errors (HTTP 200): bad client (body `client_id`/`client_secret`
//! or HTTP Basic) → `incorrect_client_credentials`; unknown, used or OIDC code,
//! missing or wrong `code_verifier` → `bad_verification_code`; `redirect_uri`
//! different from the one given at authorize → `redirect_uri_mismatch` (as
//! GitHub). Unknown `grant_type` → `unsupported_grant_type`. A code is used up
//! only by a successful exchange. A code authorized with a `code_challenge`
//! needs a `code_verifier` of 43–128 unreserved characters whose
//! base64url-no-pad SHA-256 equals it; one authorized without a challenge
//! ignores the verifier.
//!
//! API errors: bad, missing or non-GitHub token → 401 `{"message":"Bad credentials"}`.
//!
//! OIDC shape (issuer = [`MockOauth::issuer`] = `{url}/oidc`):
//!
//! | request | answer |
//! |---------|--------|
//! | `GET /oidc/.well-known/openid-configuration` | discovery document (endpoints below, plus `jwks_uri` = `{issuer}/jwks`) |
//! | `GET /oidc/authorize` | as GitHub's, and also needs `response_type=code` and `openid` in `scope` (else 400 text); `nonce` goes into the id_token |
//! | `POST /oidc/token` (form only; client by body fields or HTTP Basic) | `{"access_token","token_type":"Bearer","expires_in":3600,"scope","id_token"}`; errors HTTP 400 `{"error","error_description"}`: `invalid_request` (body not form-urlencoded, missing code), `invalid_client`, `invalid_grant` (code unknown/used/GitHub's, verifier, redirect_uri), `unsupported_grant_type` |
//! | `POST /oidc/device/code` (client_id, scope) | `{"device_code","user_code","verification_uri":"{issuer}/device","verification_uri_complete":"{issuer}/device?user_code=…","expires_in":600,"interval":5}`; unknown client → 400 `invalid_client` |
//! | `GET`/`POST /oidc/userinfo` (Bearer) | `{"sub","name","email":<primary or null>,"email_verified":<its flag>,"preferred_username":<login>}`; otherwise 401 `{"error":"invalid_token"}` with `WWW-Authenticate` |
//! | `GET /oidc/jwks` | `{"keys":[]}` (the id_token is not really signed: nothing should verify it) |
//!
//! Device grant (`grant_type=urn:ietf:params:oauth:grant-type:device_code`,
//! `device_code`, `client_id`; a `client_secret` if sent must be right): the
//! answer follows [`MockOauth::set_device_state`] (default `Pending`) for every
//! known, not yet redeemed device code of that shape:
//!
//! | state | GitHub (HTTP 200) | OIDC |
//! |-------|-------------------|------|
//! | Pending | `{"error":"authorization_pending"}` | 400 same |
//! | SlowDown | `{"error":"slow_down","interval":10}` | 400 `{"error":"slow_down"}` |
//! | Expired | `{"error":"expired_token"}` | 400 same |
//! | Denied | `{"error":"access_denied"}` | 400 same |
//! | Approved | a token as for the code grant, for the identity current at that poll; the device code is then used up | 200 token |
//!
//! Unknown or used-up device codes: GitHub `{"error":"incorrect_device_code"}`,
//! OIDC 400 `invalid_grant`. Wrong client: `incorrect_client_credentials` /
//! 400 `invalid_client`. (GitHub also adds `error_description` and `error_uri`.)
//!
//! Tokens are bound to the shape that issued them (a GitHub token does not
//! work at the OIDC userinfo endpoint and vice versa) and to the identity at
//! authorize (code grant) or approval (device grant) time. Any other path
//! answers 404 `{"message":"Not Found"}`.
//!
//! Compiled in tests/common/mod.rs next to `mock` (and with `#[path]` next to
//! it in tests/mock_upstream.rs); it uses `super::mock` for the request record.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response};
use rand::distr::Alphanumeric;
use rand::Rng as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::mock::RecordedRequest;

pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "test-secret";
/// The `user_code` every device authorization answers.
pub const USER_CODE: &str = "ABCD-1234";
/// The `scope` GitHub tokens report.
pub const GITHUB_SCOPE: &str = "read:user,user:email";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[derive(Clone, Debug)]
pub struct MockEmail {
    pub email: String,
    pub verified: bool,
    pub primary: bool,
}

#[derive(Clone, Debug)]
pub struct MockIdentity {
    /// GitHub numeric id.
    pub id: u64,
    pub login: String,
    /// OIDC subject.
    pub sub: String,
    pub name: String,
    pub emails: Vec<MockEmail>,
}

impl Default for MockIdentity {
    /// id 4242, login `octo`, sub `sub-4242`, name `Octo Cat`, one verified
    /// primary e-mail `octo@example.com`.
    fn default() -> Self {
        MockIdentity {
            id: 4242,
            login: "octo".into(),
            sub: "sub-4242".into(),
            name: "Octo Cat".into(),
            emails: vec![MockEmail {
                email: "octo@example.com".into(),
                verified: true,
                primary: true,
            }],
        }
    }
}

impl MockIdentity {
    fn primary(&self) -> Option<&MockEmail> {
        self.emails.iter().find(|e| e.primary)
    }
}

/// What device-code token polls answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceState {
    Pending,
    SlowDown,
    Expired,
    Denied,
    Approved,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    Github,
    Oidc,
}

struct CodeGrant {
    flavor: Flavor,
    redirect_uri: String,
    code_challenge: Option<String>,
    nonce: Option<String>,
    identity: MockIdentity,
    used: bool,
}

struct DeviceGrant {
    flavor: Flavor,
    used: bool,
}

struct Shared {
    base_url: String,
    identity: Mutex<MockIdentity>,
    device_state: Mutex<DeviceState>,
    requests: Mutex<Vec<RecordedRequest>>,
    codes: Mutex<HashMap<String, CodeGrant>>,
    devices: Mutex<HashMap<String, DeviceGrant>>,
    /// access token -> (shape, identity).
    tokens: Mutex<HashMap<String, (Flavor, MockIdentity)>>,
    issued_codes: AtomicUsize,
    changed: Notify,
}

/// A running mock provider; dropping it stops the server and closes its
/// connections.
pub struct MockOauth {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockOauth {
    /// Serves on 127.0.0.1 with an ephemeral port, as [`MockIdentity::default`].
    pub async fn start() -> MockOauth {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("mock oauth: cannot bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            identity: Mutex::new(MockIdentity::default()),
            device_state: Mutex::new(DeviceState::Pending),
            requests: Mutex::new(Vec::new()),
            codes: Mutex::new(HashMap::new()),
            devices: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            issued_codes: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        let task = tokio::spawn(super::serve::accept_loop(listener, shared.clone(), handle));
        MockOauth { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: GitHub Enterprise `base_url`.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// `url()/api/v3`: GitHub Enterprise `api_url`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v3", self.shared.base_url)
    }

    /// `url()/oidc`.
    pub fn issuer(&self) -> String {
        format!("{}/oidc", self.shared.base_url)
    }

    /// Who the next authorizations (and device approvals) are for.
    pub fn set_identity(&self, identity: MockIdentity) {
        *self.shared.identity.lock().unwrap() = identity;
    }

    pub fn identity(&self) -> MockIdentity {
        self.shared.identity.lock().unwrap().clone()
    }

    /// What the next device-code token polls answer (until changed again).
    pub fn set_device_state(&self, state: DeviceState) {
        *self.shared.device_state.lock().unwrap() = state;
    }

    /// Every request received, in order, bodies included.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// POSTs to either token endpoint (`/login/oauth/access_token`, `/oidc/token`).
    pub fn token_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "POST" && is_token_path(&r.path))
            .cloned()
            .collect()
    }

    /// Authorization codes handed out (both shapes).
    pub fn issued_codes(&self) -> usize {
        self.shared.issued_codes.load(Ordering::SeqCst)
    }

    /// Access tokens handed out (both shapes, both grants).
    pub fn issued_tokens(&self) -> usize {
        self.shared.tokens.lock().unwrap().len()
    }

    /// Waits until at least `n` requests were received; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.shared.requests.lock().unwrap().len() >= n)
            .await
    }

    /// Waits until at least `n` token requests were received; false on timeout.
    pub async fn wait_for_token_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.token_requests().len() >= n)
            .await
    }

    async fn wait_until(&self, timeout: Duration, cond: impl Fn() -> bool) -> bool {
        super::serve::wait_until(&self.shared.changed, timeout, cond).await
    }
}

impl Drop for MockOauth {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_token_path(path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or("");
    path == "/login/oauth/access_token" || path == "/oidc/token"
}

type OauthBody = super::serve::MockBody;

/// Provider answers are never cached.
fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<OauthBody> {
    let mut resp = super::serve::response(status, content_type, body);
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

fn json_response(status: u16, value: &Value) -> Response<OauthBody> {
    response(status, "application/json; charset=utf-8", value.to_string())
}

fn text_response(status: u16, text: &str) -> Response<OauthBody> {
    response(status, "text/plain; charset=utf-8", text.to_string())
}

/// GitHub's token-endpoint answers: JSON when asked for, else form-encoded.
fn github_answer(want_json: bool, value: &Value) -> Response<OauthBody> {
    if want_json {
        return json_response(200, value);
    }
    let mut pairs: Vec<(String, String)> = value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    response(
        200,
        "application/x-www-form-urlencoded; charset=utf-8",
        form_encode(&pairs),
    )
}

fn github_error(want_json: bool, error: &str, description: &str) -> Response<OauthBody> {
    github_answer(
        want_json,
        &json!({
            "error": error,
            "error_description": description,
            "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors",
        }),
    )
}

fn oidc_error(status: u16, error: &str, description: &str) -> Response<OauthBody> {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// A request as the handlers need it.
struct Received {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn wants_json(&self) -> bool {
        self.header("accept")
            .is_some_and(|a| a.to_ascii_lowercase().contains("application/json"))
    }

    fn is_form(&self) -> bool {
        self.header("content-type").is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
    }

    fn is_json(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().contains("json"))
            || self.body.first() == Some(&b'{')
    }

    /// Body parameters: a JSON object's fields (as strings) or form fields.
    fn body_params(&self) -> HashMap<String, String> {
        if self.is_json() {
            let value: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
            value
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            (k.clone(), v)
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            parse_form(&String::from_utf8_lossy(&self.body))
        }
    }

    /// `(client_id, client_secret)` from HTTP Basic, else from `params`.
    fn client_credentials(
        &self,
        params: &HashMap<String, String>,
    ) -> (Option<String>, Option<String>) {
        if let Some(auth) = self.header("authorization") {
            if let Some((scheme, rest)) = auth.trim().split_once(' ') {
                if scheme.eq_ignore_ascii_case("basic") {
                    let decoded = STANDARD
                        .decode(rest.trim())
                        .ok()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let (id, secret) = decoded.split_once(':').unwrap_or((&decoded, ""));
                    return (Some(percent_decode(id)), Some(percent_decode(secret)));
                }
            }
        }
        (
            params.get("client_id").cloned(),
            params.get("client_secret").cloned(),
        )
    }

    /// The access token of `Authorization: Bearer <t>` or `token <t>`.
    fn access_token(&self) -> Option<String> {
        let auth = self.header("authorization")?;
        let (scheme, token) = auth.trim().split_once(' ')?;
        let ok = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
        (ok && !token.trim().is_empty()).then(|| token.trim().to_string())
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<OauthBody>, io::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let record = RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_string(), value)
            })
            .collect(),
        body: body.to_vec(),
    };
    shared.requests.lock().unwrap().push(record);
    shared.changed.notify_waiters();

    let received = Received {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(parse_form).unwrap_or_default(),
        headers: parts.headers,
        body,
    };
    let r = &received;
    Ok(match (r.method.clone(), r.path.as_str()) {
        (Method::GET, "/login/oauth/authorize") => authorize(&shared, r, Flavor::Github),
        (Method::POST, "/login/oauth/access_token") => github_token(&shared, r),
        (Method::POST, "/login/device/code") => device_code(&shared, r, Flavor::Github),
        (Method::GET, "/login/device") | (Method::GET, "/oidc/device") => response(
            200,
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><title>Device activation</title><p>Enter the code {USER_CODE}.</p>"
            ),
        ),
        (Method::GET, "/api/v3/user") => github_user(&shared, r, false),
        (Method::GET, "/api/v3/user/emails") => github_user(&shared, r, true),
        (Method::GET, "/oidc/.well-known/openid-configuration") => discovery(&shared),
        (Method::GET, "/oidc/authorize") => authorize(&shared, r, Flavor::Oidc),
        (Method::POST, "/oidc/token") => oidc_token(&shared, r),
        (Method::POST, "/oidc/device/code") => device_code(&shared, r, Flavor::Oidc),
        (Method::GET, "/oidc/userinfo") | (Method::POST, "/oidc/userinfo") => userinfo(&shared, r),
        (Method::GET, "/oidc/jwks") => json_response(200, &json!({"keys": []})),
        _ => json_response(404, &json!({"message": "Not Found"})),
    })
}

fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn authorize(shared: &Shared, r: &Received, flavor: Flavor) -> Response<OauthBody> {
    let q = &r.query;
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return text_response(400, "unknown client_id");
    }
    let Some(redirect_uri) = q.get("redirect_uri").filter(|u| !u.is_empty()) else {
        return text_response(400, "missing redirect_uri");
    };
    if flavor == Flavor::Oidc {
        if q.get("response_type").map(String::as_str) != Some("code") {
            return text_response(400, "response_type must be code");
        }
        let scope = q.get("scope").cloned().unwrap_or_default();
        if !scope.split([' ', ',']).any(|s| s == "openid") {
            return text_response(400, "scope must contain openid");
        }
    }
    let code_challenge = q.get("code_challenge").filter(|c| !c.is_empty()).cloned();
    if code_challenge.is_some()
        && q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return text_response(400, "code_challenge_method must be S256");
    }
    let code = random_string(20);
    let grant = CodeGrant {
        flavor,
        redirect_uri: redirect_uri.clone(),
        code_challenge,
        nonce: q.get("nonce").cloned(),
        identity: shared.identity.lock().unwrap().clone(),
        used: false,
    };
    shared.codes.lock().unwrap().insert(code.clone(), grant);
    shared.issued_codes.fetch_add(1, Ordering::SeqCst);
    shared.changed.notify_waiters();

    let mut pairs = vec![("code".to_string(), code)];
    if let Some(state) = q.get("state") {
        pairs.push(("state".to_string(), state.clone()));
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{sep}{}", form_encode(&pairs));
    let mut resp = response(302, "text/html; charset=utf-8", "");
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(LOCATION, v);
            resp
        }
        Err(_) => text_response(400, "bad redirect_uri"),
    }
}

/// Why a code exchange failed.
enum CodeError {
    Client,
    Code,
    Redirect,
    Request(&'static str),
}

fn pkce_ok(challenge: &Option<String>, verifier: Option<&String>) -> bool {
    let Some(challenge) = challenge else {
        return true;
    };
    let Some(verifier) = verifier else {
        return false;
    };
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == *challenge
}

fn client_ok(id: &Option<String>, secret: &Option<String>) -> bool {
    id.as_deref() == Some(CLIENT_ID) && secret.as_deref() == Some(CLIENT_SECRET)
}

/// The code grant's checks; on success the code is used up and a token issued.
fn exchange_code(
    shared: &Shared,
    r: &Received,
    params: &HashMap<String, String>,
    flavor: Flavor,
) -> Result<(String, CodeGrantInfo), CodeError> {
    let (id, secret) = r.client_credentials(params);
    if !client_ok(&id, &secret) {
        return Err(CodeError::Client);
    }
    let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
        return Err(CodeError::Request("missing code"));
    };
    let mut codes = shared.codes.lock().unwrap();
    let Some(grant) = codes.get_mut(code) else {
        return Err(CodeError::Code);
    };
    if grant.used || grant.flavor != flavor {
        return Err(CodeError::Code);
    }
    if params.get("redirect_uri") != Some(&grant.redirect_uri) {
        return Err(CodeError::Redirect);
    }
    if !pkce_ok(&grant.code_challenge, params.get("code_verifier")) {
        return Err(CodeError::Code);
    }
    grant.used = true;
    let info = CodeGrantInfo {
        identity: grant.identity.clone(),
        nonce: grant.nonce.clone(),
    };
    drop(codes);
    let token = issue_token(shared, flavor, &info.identity);
    Ok((token, info))
}

struct CodeGrantInfo {
    identity: MockIdentity,
    nonce: Option<String>,
}

fn issue_token(shared: &Shared, flavor: Flavor, identity: &MockIdentity) -> String {
    let token = match flavor {
        Flavor::Github => format!("gho_{}", random_string(36)),
        Flavor::Oidc => format!("oidc_at_{}", random_string(32)),
    };
    shared
        .tokens
        .lock()
        .unwrap()
        .insert(token.clone(), (flavor, identity.clone()));
    shared.changed.notify_waiters();
    token
}

fn github_token_body(token: &str) -> Value {
    json!({"access_token": token, "token_type": "bearer", "scope": GITHUB_SCOPE})
}

fn github_token(shared: &Shared, r: &Received) -> Response<OauthBody> {
    let want_json = r.wants_json();
    // GitHub also takes the parameters in the query string.
    let mut params = r.query.clone();
    params.extend(r.body_params());
    match params.get("grant_type").map(String::as_str) {
        None | Some("authorization_code") => {}
        Some(DEVICE_GRANT) => return device_poll(shared, r, &params, Flavor::Github),
        Some(_) => {
            return github_error(
                want_json,
                "unsupported_grant_type",
                "The grant type is not supported.",
            )
        }
    }
    match exchange_code(shared, r, &params, Flavor::Github) {
        Ok((token, _)) => github_answer(want_json, &github_token_body(&token)),
        Err(CodeError::Client) => github_error(
            want_json,
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        ),
        Err(CodeError::Redirect) => github_error(
            want_json,
            "redirect_uri_mismatch",
            "The redirect_uri MUST match the registered callback URL for this application.",
        ),
        Err(CodeError::Code) | Err(CodeError::Request(_)) => github_error(
            want_json,
            "bad_verification_code",
            "The code passed is incorrect or expired.",
        ),
    }
}

fn id_token(shared: &Shared, identity: &MockIdentity, nonce: Option<&String>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "mock"});
    let mut claims = json!({
        "iss": format!("{}/oidc", shared.base_url),
        "sub": identity.sub,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 3600,
        "name": identity.name,
    });
    if let Some(email) = identity.primary() {
        claims["email"] = json!(email.email);
        claims["email_verified"] = json!(email.verified);
    }
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode("mock-signature-not-verifiable"),
    )
}

fn oidc_token_body(
    shared: &Shared,
    token: &str,
    identity: &MockIdentity,
    nonce: Option<&String>,
) -> Value {
    json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "openid email profile",
        "id_token": id_token(shared, identity, nonce),
    })
}

fn oidc_token(shared: &Shared, r: &Received) -> Response<OauthBody> {
    if !r.is_form() {
        return oidc_error(
            400,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let params = r.body_params();
    match params.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {}
        Some(DEVICE_GRANT) => return device_poll(shared, r, &params, Flavor::Oidc),
        Some(_) => return oidc_error(400, "unsupported_grant_type", "unsupported grant_type"),
        None => return oidc_error(400, "invalid_request", "missing grant_type"),
    }
    match exchange_code(shared, r, &params, Flavor::Oidc) {
        Ok((token, info)) => json_response(
            200,
            &oidc_token_body(shared, &token, &info.identity, info.nonce.as_ref()),
        ),
        Err(CodeError::Client) => oidc_error(400, "invalid_client", "client authentication failed"),
        Err(CodeError::Redirect) => oidc_error(400, "invalid_grant", "redirect_uri mismatch"),
        Err(CodeError::Code) => oidc_error(
            400,
            "invalid_grant",
            "the code is invalid, used or does not match the code_verifier",
        ),
        Err(CodeError::Request(why)) => oidc_error(400, "invalid_request", why),
    }
}

fn device_code(shared: &Shared, r: &Received, flavor: Flavor) -> Response<OauthBody> {
    let mut params = r.query.clone();
    params.extend(r.body_params());
    let (id, secret) = r.client_credentials(&params);
    let secret_ok = secret.as_deref().is_none_or(|s| s == CLIENT_SECRET);
    if id.as_deref() != Some(CLIENT_ID) || !secret_ok {
        return match flavor {
            Flavor::Github => json_response(
                400,
                &json!({"error": "incorrect_client_credentials", "error_description": "The client_id is not valid."}),
            ),
            Flavor::Oidc => oidc_error(400, "invalid_client", "unknown client"),
        };
    }
    let device = random_string(40);
    shared.devices.lock().unwrap().insert(
        device.clone(),
        DeviceGrant {
            flavor,
            used: false,
        },
    );
    shared.changed.notify_waiters();
    match flavor {
        Flavor::Github => github_answer(
            r.wants_json(),
            &json!({
                "device_code": device,
                "user_code": USER_CODE,
                "verification_uri": format!("{}/login/device", shared.base_url),
                "expires_in": 900,
                "interval": 5,
            }),
        ),
        Flavor::Oidc => {
            let issuer = format!("{}/oidc", shared.base_url);
            json_response(
                200,
                &json!({
                    "device_code": device,
                    "user_code": USER_CODE,
                    "verification_uri": format!("{issuer}/device"),
                    "verification_uri_complete": format!("{issuer}/device?user_code={USER_CODE}"),
                    "expires_in": 600,
                    "interval": 5,
                }),
            )
        }
    }
}

fn device_poll(
    shared: &Shared,
    r: &Received,
    params: &HashMap<String, String>,
    flavor: Flavor,
) -> Response<OauthBody> {
    let want_json = r.wants_json();
    let error = |code: &str, description: &str| match flavor {
        Flavor::Github => github_error(want_json, code, description),
        Flavor::Oidc => oidc_error(400, code, description),
    };
    let (id, secret) = r.client_credentials(params);
    let secret_ok = secret.as_deref().is_none_or(|s| s == CLIENT_SECRET);
    if id.as_deref() != Some(CLIENT_ID) || !secret_ok {
        return match flavor {
            Flavor::Github => error(
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
            ),
            Flavor::Oidc => error("invalid_client", "client authentication failed"),
        };
    }
    let device = params.get("device_code").cloned().unwrap_or_default();
    let mut devices = shared.devices.lock().unwrap();
    let known = devices
        .get(&device)
        .is_some_and(|d| d.flavor == flavor && !d.used);
    if !known {
        return match flavor {
            Flavor::Github => error(
                "incorrect_device_code",
                "The device_code provided is not valid.",
            ),
            Flavor::Oidc => error("invalid_grant", "unknown device_code"),
        };
    }
    let state = *shared.device_state.lock().unwrap();
    match state {
        DeviceState::Pending => error(
            "authorization_pending",
            "The authorization request is still pending.",
        ),
        DeviceState::SlowDown => match flavor {
            Flavor::Github => github_answer(
                want_json,
                &json!({
                    "error": "slow_down",
                    "error_description": "Too many requests have been made in the same timeframe.",
                    "error_uri": "https://docs.github.com/developers/apps/authorizing-oauth-apps#error-codes-for-the-device-flow",
                    "interval": 10,
                }),
            ),
            Flavor::Oidc => error("slow_down", "poll less often"),
        },
        DeviceState::Expired => error("expired_token", "The device_code has expired."),
        DeviceState::Denied => error("access_denied", "The authorization request was denied."),
        DeviceState::Approved => {
            if let Some(d) = devices.get_mut(&device) {
                d.used = true;
            }
            drop(devices);
            let identity = shared.identity.lock().unwrap().clone();
            let token = issue_token(shared, flavor, &identity);
            match flavor {
                Flavor::Github => github_answer(want_json, &github_token_body(&token)),
                Flavor::Oidc => {
                    json_response(200, &oidc_token_body(shared, &token, &identity, None))
                }
            }
        }
    }
}

fn token_identity(shared: &Shared, r: &Received, flavor: Flavor) -> Option<MockIdentity> {
    let token = r.access_token()?;
    let tokens = shared.tokens.lock().unwrap();
    let (f, identity) = tokens.get(&token)?;
    (*f == flavor).then(|| identity.clone())
}

fn github_user(shared: &Shared, r: &Received, emails: bool) -> Response<OauthBody> {
    let Some(identity) = token_identity(shared, r, Flavor::Github) else {
        return json_response(
            401,
            &json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
        );
    };
    if emails {
        let list: Vec<Value> = identity
            .emails
            .iter()
            .map(|e| json!({"email": e.email, "verified": e.verified, "primary": e.primary, "visibility": null}))
            .collect();
        return json_response(200, &Value::Array(list));
    }
    json_response(
        200,
        &json!({
            "id": identity.id,
            "login": identity.login,
            "name": identity.name,
            "email": identity.primary().map(|e| e.email.clone()),
            "type": "User",
        }),
    )
}

fn discovery(shared: &Shared) -> Response<OauthBody> {
    let issuer = format!("{}/oidc", shared.base_url);
    json_response(
        200,
        &json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "userinfo_endpoint": format!("{issuer}/userinfo"),
            "device_authorization_endpoint": format!("{issuer}/device/code"),
            "jwks_uri": format!("{issuer}/jwks"),
            "code_challenge_methods_supported": ["S256"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "grant_types_supported": ["authorization_code", DEVICE_GRANT],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        }),
    )
}

fn userinfo(shared: &Shared, r: &Received) -> Response<OauthBody> {
    let Some(identity) = token_identity(shared, r, Flavor::Oidc) else {
        let mut resp = oidc_error(401, "invalid_token", "the access token is invalid");
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return resp;
    };
    let primary = identity.primary();
    json_response(
        200,
        &json!({
            "sub": identity.sub,
            "name": identity.name,
            "preferred_username": identity.login,
            "email": primary.map(|e| e.email.clone()),
            "email_verified": primary.map(|e| e.verified).unwrap_or(false),
        }),
    )
}

/// `a=1&b=x%20y+z` -> map, percent- and `+`-decoded (a repeated name keeps its
/// first value).
pub fn parse_form(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k))
            .or_insert_with(|| percent_decode(v));
    }
    out
}

/// `application/x-www-form-urlencoded` serialization of `pairs`.
pub fn form_encode(pairs: &[(String, String)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
