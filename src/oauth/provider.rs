//! What the gateway asks of a sign-in provider: where its endpoints are, a code or a device
//! code exchanged for an access token, and the identity behind a token. GitHub (and GitHub
//! Enterprise through `base_url`/`api_url`) speaks its own dialect; any other provider is
//! OpenID Connect, found by discovery. Errors never carry codes, tokens or secrets.

use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::config::{OauthKind, OauthProvider};
use crate::gateway::upstream::Resolver;
use crate::outbound::{HttpClient, Limits, Response};

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A provider's endpoints.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub authorize: String,
    pub token: String,
    pub device: Option<String>,
    /// OIDC userinfo; GitHub's API base.
    pub identity: String,
}

/// Who signed in.
#[derive(Debug, Clone)]
pub struct Identity {
    /// GitHub's numeric user id, or the OIDC `sub`.
    pub subject: String,
    /// Verified addresses only; the primary one first.
    pub verified_emails: Vec<String>,
}

/// What a token request came to.
pub enum Grant {
    Token(String),
    /// The provider's OAuth error code (`authorization_pending`, `access_denied`, …).
    Refused(String),
}

fn limits() -> Limits {
    Limits {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        total_timeout: Duration::from_secs(15),
        max_response_bytes: 1024 * 1024,
        ca: None,
    }
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A JSON body, or a form-encoded one (GitHub answers forms unless asked for JSON).
fn parse_body(resp: &Response) -> Option<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(&resp.body) {
        return Some(v);
    }
    let text = std::str::from_utf8(&resp.body).ok()?;
    let map: serde_json::Map<String, Value> = crate::form::query_pairs(text)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

pub struct ProviderClient<'a> {
    pub client: &'a HttpClient,
    pub resolver: &'a Resolver,
}

impl ProviderClient<'_> {
    async fn post_form(&self, url: &str, pairs: &[(&str, &str)]) -> Result<Value, String> {
        let body = Bytes::from(form(pairs));
        let resp = self
            .client
            .send(
                self.resolver,
                "POST",
                url,
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("accept", "application/json"),
                ],
                body,
                &limits(),
            )
            .await
            .map_err(|e| format!("provider unreachable: {e}"))?;
        // OAuth errors come as 400/401 with a JSON `error` (OIDC) or as 200 (GitHub).
        parse_body(&resp)
            .filter(|_| resp.status < 500)
            .ok_or_else(|| format!("provider answered {}", resp.status))
    }

    async fn get_json(&self, url: &str, token: &str) -> Result<Value, String> {
        let auth = format!("Bearer {token}");
        let resp = self
            .client
            .send(
                self.resolver,
                "GET",
                url,
                &[("authorization", &auth), ("accept", "application/json")],
                Bytes::new(),
                &limits(),
            )
            .await
            .map_err(|e| format!("provider unreachable: {e}"))?;
        if !(200..300).contains(&resp.status) {
            return Err(format!("identity request answered {}", resp.status));
        }
        serde_json::from_slice(&resp.body).map_err(|_| "identity is not JSON".to_string())
    }

    /// The endpoints: GitHub's fixed paths, or OIDC discovery.
    pub async fn endpoints(&self, p: &OauthProvider) -> Result<Endpoints, String> {
        match p.kind {
            OauthKind::Github => {
                let base = p
                    .base_url
                    .as_deref()
                    .unwrap_or("https://github.com")
                    .trim_end_matches('/');
                let api = p
                    .api_url
                    .as_deref()
                    .unwrap_or("https://api.github.com")
                    .trim_end_matches('/');
                Ok(Endpoints {
                    authorize: format!("{base}/login/oauth/authorize"),
                    token: format!("{base}/login/oauth/access_token"),
                    device: Some(format!("{base}/login/device/code")),
                    identity: api.to_string(),
                })
            }
            OauthKind::Oidc => {
                let issuer = p.issuer.as_deref().unwrap_or("").trim_end_matches('/');
                let url = format!("{issuer}/.well-known/openid-configuration");
                let resp = self
                    .client
                    .send(self.resolver, "GET", &url, &[], Bytes::new(), &limits())
                    .await
                    .map_err(|e| format!("discovery failed: {e}"))?;
                let doc: Value = serde_json::from_slice(&resp.body)
                    .ok()
                    .filter(|_| resp.status == 200)
                    .ok_or_else(|| format!("discovery answered {}", resp.status))?;
                let field = |name: &str| doc[name].as_str().map(str::to_owned);
                Ok(Endpoints {
                    authorize: field("authorization_endpoint")
                        .ok_or("discovery has no authorization_endpoint")?,
                    token: field("token_endpoint").ok_or("discovery has no token_endpoint")?,
                    device: field("device_authorization_endpoint"),
                    identity: field("userinfo_endpoint")
                        .ok_or("discovery has no userinfo_endpoint")?,
                })
            }
        }
    }

    /// Exchanges a token request's parameters for an access token.
    pub async fn token(
        &self,
        p: &OauthProvider,
        endpoints: &Endpoints,
        params: &[(&str, &str)],
    ) -> Result<Grant, String> {
        let mut pairs = vec![
            ("client_id", p.client_id.as_str()),
            ("client_secret", p.client_secret.as_str()),
        ];
        pairs.extend_from_slice(params);
        let body = self.post_form(&endpoints.token, &pairs).await?;
        if let Some(token) = body["access_token"].as_str() {
            return Ok(Grant::Token(token.to_string()));
        }
        match body["error"].as_str() {
            Some(error) => Ok(Grant::Refused(error.to_string())),
            None => Err("token response has neither access_token nor error".into()),
        }
    }

    /// Starts a device authorization: the provider's answer as it is.
    pub async fn device_code(
        &self,
        p: &OauthProvider,
        endpoints: &Endpoints,
    ) -> Result<Value, String> {
        let url = endpoints
            .device
            .as_deref()
            .ok_or("the provider has no device authorization endpoint")?;
        let scopes = scopes(p);
        let body = self
            .post_form(url, &[("client_id", &p.client_id), ("scope", &scopes)])
            .await?;
        if body["device_code"].is_string() && body["user_code"].is_string() {
            Ok(body)
        } else {
            Err("device authorization refused".into())
        }
    }

    pub async fn identity(
        &self,
        p: &OauthProvider,
        endpoints: &Endpoints,
        token: &str,
    ) -> Result<Identity, String> {
        match p.kind {
            OauthKind::Github => {
                let user = self
                    .get_json(&format!("{}/user", endpoints.identity), token)
                    .await?;
                let subject = user["id"]
                    .as_u64()
                    .map(|id| id.to_string())
                    .ok_or("GitHub user without id")?;
                let emails = self
                    .get_json(&format!("{}/user/emails", endpoints.identity), token)
                    .await?;
                let mut verified: Vec<(bool, String)> = emails
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter(|e| e["verified"].as_bool() == Some(true))
                            .filter_map(|e| {
                                let primary = e["primary"].as_bool() == Some(true);
                                e["email"].as_str().map(|a| (!primary, a.to_string()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                verified.sort();
                Ok(Identity {
                    subject,
                    verified_emails: verified.into_iter().map(|(_, e)| e).collect(),
                })
            }
            OauthKind::Oidc => {
                let info = self.get_json(&endpoints.identity, token).await?;
                let subject = info["sub"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .ok_or("userinfo without sub")?
                    .to_string();
                let verified = info["email_verified"].as_bool() == Some(true)
                    || info["email_verified"].as_str() == Some("true");
                let verified_emails = match info["email"].as_str() {
                    Some(email) if verified => vec![email.to_string()],
                    _ => Vec::new(),
                };
                Ok(Identity {
                    subject,
                    verified_emails,
                })
            }
        }
    }
}

/// The scopes asked for: configured, or the provider's identity + e-mail scopes.
pub fn scopes(p: &OauthProvider) -> String {
    match (&p.scopes, p.kind) {
        (Some(list), _) => list.join(" "),
        (None, OauthKind::Github) => "read:user user:email".into(),
        (None, OauthKind::Oidc) => "openid email profile".into(),
    }
}
