//! The HTTP side of sign-in (SPEC §3.8): `/auth/{provider}/login`, `/auth/{provider}/callback`,
//! `/auth/device/code` and `/auth/device/token`, answered without a gateway key.

use bytes::Bytes;
use http::Method;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::Value;

use crate::app::App;
use crate::form::query_pairs;
use crate::oauth::{provider::form, Issued, SigninError};

use super::respond::{ApiError, LocalResponse};

fn api_error(e: SigninError) -> ApiError {
    match e {
        SigninError::UnknownProvider => ApiError::not_found("/auth (no such sign-in provider)"),
        SigninError::InvalidState => ApiError::new(
            400,
            "invalid_request_error",
            "invalid_state",
            "The sign-in state is invalid, expired or already used. Start the sign-in again.",
        )
        .with_param("state"),
        SigninError::InvalidRequest(message, param) => {
            ApiError::invalid_request(message).with_param(param)
        }
        SigninError::EmailNotAllowed => ApiError::new(
            403,
            "permission_error",
            "email_not_allowed",
            "No verified e-mail address of this account may sign in here.",
        ),
        SigninError::Device(code) => ApiError::new(
            if code == "access_denied" { 401 } else { 400 },
            "invalid_request_error",
            code,
            match code {
                "authorization_pending" => "The user has not approved the sign-in yet; poll again.",
                "slow_down" => "Polling too fast; wait longer between polls.",
                "access_denied" => "The user denied the sign-in.",
                _ => "The device code has expired; start again.",
            },
        ),
        SigninError::Provider => ApiError::new(
            502,
            "upstream_error",
            "upstream_unavailable",
            "The sign-in provider failed or refused the request.",
        ),
        SigninError::Storage => ApiError::service_unavailable("Key storage is unavailable."),
    }
}

/// Answers an `/auth/…` request, or `None` when the path is not a sign-in route.
pub async fn answer(app: &App, session: &mut Session) -> Option<Result<LocalResponse, ApiError>> {
    if !session.req_header().uri.path().starts_with("/auth/") {
        return None;
    }
    let path = session.req_header().uri.path().to_string();
    let rest = path.strip_prefix("/auth/")?;
    let Some(signin) = app.signin.as_ref() else {
        return Some(Err(ApiError::not_found(&path)));
    };
    let method = session.req_header().method.clone();
    let query = query_pairs(session.req_header().uri.query().unwrap_or(""));
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let result = match (method, rest.split_once('/')) {
        (Method::GET, Some((name, "login"))) => signin
            .login_url(app, name, param("redirect_uri").as_deref())
            .await
            .map_err(api_error)
            .and_then(|url| redirect(&url)),
        (Method::GET, Some((name, "callback"))) => {
            let accepts_json = session
                .req_header()
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/json"));
            match signin
                .callback(
                    app,
                    name,
                    param("code").as_deref(),
                    param("state").as_deref(),
                )
                .await
            {
                Ok((issued, Some(back))) => redirect(&with_fragment(&back, &issued)),
                Ok((issued, None)) if accepts_json => json(200, &issued.json()),
                Ok((issued, None)) => page(&issued),
                Err(e) => Err(api_error(e)),
            }
        }
        (Method::POST, Some(("device", "code"))) => match read_json(session).await {
            Ok(body) => match body["provider"].as_str() {
                Some(name) => signin
                    .device_code(app, name)
                    .await
                    .map_err(api_error)
                    .and_then(|v| json(200, &v)),
                None => {
                    Err(ApiError::invalid_request("`provider` is required.").with_param("provider"))
                }
            },
            Err(e) => Err(e),
        },
        (Method::POST, Some(("device", "token"))) => match read_json(session).await {
            Ok(body) => match body["device_code"].as_str() {
                Some(code) => signin
                    .device_token(app, code)
                    .await
                    .map_err(api_error)
                    .and_then(|issued| json(200, &issued.json())),
                None => Err(ApiError::invalid_request("`device_code` is required.")
                    .with_param("device_code")),
            },
            Err(e) => Err(e),
        },
        _ => Err(ApiError::not_found(&path)),
    };
    Some(result)
}

fn internal(e: Box<pingora::Error>) -> ApiError {
    log::error!("building a sign-in response: {e}");
    ApiError::internal()
}

fn json(status: u16, value: &Value) -> Result<LocalResponse, ApiError> {
    LocalResponse::json(status, value).map_err(internal)
}

fn redirect(location: &str) -> Result<LocalResponse, ApiError> {
    let build = || -> pingora::Result<LocalResponse> {
        let mut header = ResponseHeader::build(302, Some(4))?;
        header.insert_header("location", location)?;
        header.insert_header("content-length", "0")?;
        header.insert_header("cache-control", "no-store")?;
        header.insert_header("referrer-policy", "no-referrer")?;
        Ok(LocalResponse {
            header,
            body: Bytes::new(),
        })
    };
    build().map_err(internal)
}

/// The key goes in the fragment: browsers never send it to a server.
fn with_fragment(back: &str, issued: &Issued) -> String {
    let base = back.split('#').next().unwrap_or(back);
    let fragment = form(&[
        ("key", &issued.key),
        ("key_id", &issued.key_id),
        ("user", &issued.user),
    ]);
    format!("{base}#{fragment}")
}

/// The key, shown once.
fn page(issued: &Issued) -> Result<LocalResponse, ApiError> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Your Tollgate key</title></head>\
<body><h1>Signed in as {user}</h1><p>Your API key (shown only this once; store it now):</p>\
<pre>{key}</pre><p>Key id: {id}</p></body></html>",
        user = escape(&issued.user),
        key = escape(&issued.key),
        id = escape(&issued.key_id),
    );
    let mut response =
        LocalResponse::new(200, "text/html; charset=utf-8", html).map_err(internal)?;
    response
        .header
        .insert_header("referrer-policy", "no-referrer")
        .map_err(internal)?;
    Ok(response)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn read_json(session: &mut Session) -> Result<Value, ApiError> {
    let body = super::admission::read_small_body(session).await?;
    serde_json::from_slice(&body)
        .map_err(|_| ApiError::invalid_request("The body must be a JSON object."))
}
