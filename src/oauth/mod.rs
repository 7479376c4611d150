//! Sign-in with GitHub or any OpenID Connect provider (SPEC §3.8), issuing Tollgate keys.
//!
//! Web flow: the `state` is signed (HMAC with `oauth.state_secret`), expires after ten
//! minutes, names the provider and the client's `redirect_uri`, and carries a nonce that is
//! good once: the nonce's PKCE verifier is kept in memory until the callback. Device flow: the
//! `device_code` given to the client is the provider's, wrapped in a signed envelope that names
//! the provider. Users are `{provider}:{subject}`; each sign-in issues a new key.

pub mod provider;
pub mod token;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::accounts::{AccountError, NewKey};
use crate::app::App;
use crate::config::{OauthProvider, OauthSection};
use crate::outbound::{HttpClient, Target};
use provider::{Endpoints, Grant, Identity, ProviderClient, DEVICE_GRANT};

const STATE_TTL_S: i64 = 600;
/// A discovered OIDC configuration is used this long before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, PartialEq, Eq)]
pub enum SigninError {
    UnknownProvider,
    InvalidState,
    /// 400 with this message and parameter.
    InvalidRequest(String, &'static str),
    EmailNotAllowed,
    /// The device flow's not-yet-or-never answers: the OAuth error code.
    Device(&'static str),
    /// The provider failed or refused (details are logged, without secrets).
    Provider,
    Storage,
}

/// A key issued by a sign-in.
#[derive(Debug)]
pub struct Issued {
    pub user: String,
    pub key_id: String,
    pub key: String,
}

impl Issued {
    pub fn json(&self) -> Value {
        json!({"user": self.user, "key_id": self.key_id, "key": self.key})
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    /// Provider name.
    p: String,
    /// Nonce: single use, and the key of the PKCE verifier.
    n: String,
    /// Where the key goes after the callback (already checked against `allowed_redirects`).
    r: Option<String>,
    /// Expiry, unix seconds.
    e: i64,
}

#[derive(Serialize, Deserialize)]
struct DeviceTicket {
    p: String,
    /// The provider's device code.
    d: String,
    e: i64,
}

pub struct Signin {
    section: OauthSection,
    client: HttpClient,
    /// Nonce -> (PKCE verifier, expiry) of logins under way.
    pending: Mutex<HashMap<String, (String, i64)>>,
    discovered: Mutex<HashMap<String, (Endpoints, Instant)>>,
}

impl Signin {
    pub fn new(section: OauthSection) -> Signin {
        Signin {
            section,
            client: HttpClient::default(),
            pending: Mutex::default(),
            discovered: Mutex::default(),
        }
    }

    fn provider(&self, name: &str) -> Result<&OauthProvider, SigninError> {
        self.section
            .providers
            .get(name)
            .ok_or(SigninError::UnknownProvider)
    }

    async fn endpoints(
        &self,
        app: &App,
        name: &str,
        p: &OauthProvider,
    ) -> Result<Endpoints, SigninError> {
        if let Some((e, at)) = self
            .discovered
            .lock()
            .ok()
            .and_then(|d| d.get(name).cloned())
        {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(e);
            }
        }
        let found = self.calls(app).endpoints(p).await.map_err(|e| {
            log::warn!("sign-in provider {name}: {e}");
            SigninError::Provider
        })?;
        if let Ok(mut d) = self.discovered.lock() {
            d.insert(name.to_string(), (found.clone(), Instant::now()));
        }
        Ok(found)
    }

    fn calls<'a>(&'a self, app: &'a App) -> ProviderClient<'a> {
        ProviderClient {
            client: &self.client,
            resolver: &app.resolver,
        }
    }

    fn callback_url(&self, name: &str) -> String {
        format!("{}/auth/{name}/callback", self.section.redirect_base)
    }

    /// `GET /auth/{provider}/login`: the provider's authorization URL to redirect to.
    pub async fn login_url(
        &self,
        app: &App,
        name: &str,
        redirect_uri: Option<&str>,
    ) -> Result<String, SigninError> {
        let p = self.provider(name)?;
        if let Some(uri) = redirect_uri {
            if !redirect_allowed(&self.section.allowed_redirects, uri) {
                return Err(SigninError::InvalidRequest(
                    "redirect_uri is not in oauth.allowed_redirects".into(),
                    "redirect_uri",
                ));
            }
        }
        let endpoints = self.endpoints(app, name, p).await?;
        let now = crate::time::now_unix();
        let nonce = Alphanumeric.sample_string(&mut rand::rng(), 32);
        let verifier = Alphanumeric.sample_string(&mut rand::rng(), 64);
        let challenge = token::pkce_challenge(&verifier);
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|_, (_, expires)| *expires > now);
            pending.insert(nonce.clone(), (verifier, now + STATE_TTL_S));
        }
        let state = token::sign(
            &self.section.state_secret,
            &State {
                p: name.to_string(),
                n: nonce,
                r: redirect_uri.map(str::to_owned),
                e: now + STATE_TTL_S,
            },
        );
        let scopes = provider::scopes(p);
        let callback = self.callback_url(name);
        let mut query = vec![
            ("client_id", p.client_id.as_str()),
            ("redirect_uri", callback.as_str()),
            ("scope", scopes.as_str()),
            ("state", state.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if p.kind == crate::config::OauthKind::Oidc {
            query.push(("response_type", "code"));
        }
        let sep = if endpoints.authorize.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{sep}{}",
            endpoints.authorize,
            provider::form(&query)
        ))
    }

    /// `GET /auth/{provider}/callback`: the key, and where to send it (if the login said).
    pub async fn callback(
        &self,
        app: &App,
        name: &str,
        code: Option<&str>,
        state: Option<&str>,
    ) -> Result<(Issued, Option<String>), SigninError> {
        let p = self.provider(name)?;
        let now = crate::time::now_unix();
        let state = check_state(&self.section.state_secret, name, state, now)?;
        // Single use: the verifier leaves the map with the first callback that names it.
        let verifier = self
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.remove(&state.n))
            .filter(|(_, expires)| *expires >= now)
            .map(|(v, _)| v)
            .ok_or(SigninError::InvalidState)?;
        let code = code.filter(|c| !c.is_empty()).ok_or_else(|| {
            SigninError::InvalidRequest("the callback has no code".into(), "code")
        })?;
        let endpoints = self.endpoints(app, name, p).await?;
        let callback = self.callback_url(name);
        let grant = self
            .calls(app)
            .token(
                p,
                &endpoints,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", &callback),
                    ("code_verifier", &verifier),
                ],
            )
            .await;
        let access = match grant {
            Ok(Grant::Token(t)) => t,
            Ok(Grant::Refused(error)) => {
                log::warn!("sign-in provider {name} refused the code: {error}");
                return Err(SigninError::Provider);
            }
            Err(e) => {
                log::warn!("sign-in provider {name}: {e}");
                return Err(SigninError::Provider);
            }
        };
        let identity = self.identity(app, name, p, &endpoints, &access).await?;
        let issued = self.sign_in(app, name, identity).await?;
        Ok((issued, state.r))
    }

    async fn identity(
        &self,
        app: &App,
        name: &str,
        p: &OauthProvider,
        endpoints: &Endpoints,
        access: &str,
    ) -> Result<Identity, SigninError> {
        self.calls(app)
            .identity(p, endpoints, access)
            .await
            .map_err(|e| {
                log::warn!("sign-in provider {name}: {e}");
                SigninError::Provider
            })
    }

    /// `POST /auth/device/code {"provider"}`.
    pub async fn device_code(&self, app: &App, name: &str) -> Result<Value, SigninError> {
        let p = self.provider(name)?;
        let endpoints = self.endpoints(app, name, p).await?;
        let answer = self
            .calls(app)
            .device_code(p, &endpoints)
            .await
            .map_err(|e| {
                log::warn!("sign-in provider {name}: {e}");
                SigninError::Provider
            })?;
        let expires_in = answer["expires_in"].as_i64().unwrap_or(900);
        let device_code = token::sign(
            &self.section.state_secret,
            &DeviceTicket {
                p: name.to_string(),
                d: answer["device_code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e: crate::time::now_unix() + expires_in,
            },
        );
        let verification_uri = answer["verification_uri"].clone();
        Ok(json!({
            "device_code": device_code,
            "user_code": answer["user_code"],
            "verification_uri": verification_uri,
            "verification_uri_complete": answer
                .get("verification_uri_complete")
                .cloned()
                .unwrap_or(verification_uri),
            "expires_in": expires_in,
            "interval": answer["interval"].as_i64().unwrap_or(5),
        }))
    }

    /// `POST /auth/device/token {"device_code"}`.
    pub async fn device_token(&self, app: &App, device_code: &str) -> Result<Issued, SigninError> {
        let ticket: DeviceTicket = token::verify(&self.section.state_secret, device_code)
            .ok_or(SigninError::Device("expired_token"))?;
        if ticket.e < crate::time::now_unix() {
            return Err(SigninError::Device("expired_token"));
        }
        let p = self.provider(&ticket.p)?;
        let endpoints = self.endpoints(app, &ticket.p, p).await?;
        let grant = self
            .calls(app)
            .token(
                p,
                &endpoints,
                &[("grant_type", DEVICE_GRANT), ("device_code", &ticket.d)],
            )
            .await
            .map_err(|e| {
                log::warn!("sign-in provider {}: {e}", ticket.p);
                SigninError::Provider
            })?;
        let access = match grant {
            Grant::Token(t) => t,
            Grant::Refused(error) => {
                return Err(SigninError::Device(match error.as_str() {
                    "authorization_pending" => "authorization_pending",
                    "slow_down" => "slow_down",
                    "access_denied" => "access_denied",
                    _ => "expired_token",
                }))
            }
        };
        let identity = self
            .identity(app, &ticket.p, p, &endpoints, &access)
            .await?;
        self.sign_in(app, &ticket.p, identity).await
    }

    /// Checks the identity against `allowed_emails`, finds or creates its user, issues a key
    /// and revokes the oldest sign-in keys past `max_keys_per_user`.
    async fn sign_in(
        &self,
        app: &App,
        name: &str,
        identity: Identity,
    ) -> Result<Issued, SigninError> {
        let email = if self.section.allowed_emails.is_empty() {
            identity.verified_emails.first().cloned()
        } else {
            Some(
                identity
                    .verified_emails
                    .iter()
                    .find(|e| email_allowed(&self.section.allowed_emails, e))
                    .cloned()
                    .ok_or(SigninError::EmailNotAllowed)?,
            )
        };
        let user = format!("{name}:{}", identity.subject);
        let source = format!("sign-in:{name}");
        let spec = || NewKey {
            label: Some(name.to_string()),
            ..NewKey::default()
        };
        let storage = |e: AccountError| {
            log::error!("sign-in of {user_name}: {e:?}", user_name = user);
            SigninError::Storage
        };
        let created = app
            .accounts
            .create_user_with_key(
                user.clone(),
                email,
                self.section.new_user_limits.clone(),
                spec(),
                &source,
            )
            .await;
        let issued = match created {
            Ok((_, issued)) => issued,
            // Signed in before (or at the same moment): a new key for the existing user.
            Err(AccountError::Conflict(_)) => app
                .accounts
                .create_key(&user, spec(), &source)
                .await
                .map_err(storage)?,
            Err(e) => return Err(storage(e)),
        };
        let mut signins: Vec<_> = app
            .accounts
            .keys(Some(user.clone()))
            .await
            .map_err(storage)?
            .into_iter()
            .filter(|k| k.source.starts_with("sign-in:") && k.id != issued.record.id)
            .collect();
        signins.sort_by_key(|k| (k.created_at, k.created_ms));
        let keep = (self.section.max_keys_per_user as usize).saturating_sub(1);
        let excess = signins.len().saturating_sub(keep);
        for old in signins.into_iter().take(excess) {
            if let Err(e) = app.accounts.revoke_key(&old.id).await {
                log::error!("revoking sign-in key {} failed: {e:?}", old.id);
            }
        }
        Ok(Issued {
            user,
            key_id: issued.record.id,
            key: issued.secret,
        })
    }
}

/// A callback's `state`: signed with `secret`, unaltered, for provider `name`, not expired.
fn check_state(
    secret: &str,
    name: &str,
    state: Option<&str>,
    now: i64,
) -> Result<State, SigninError> {
    state
        .and_then(|s| token::verify::<State>(secret, s))
        .filter(|s| s.p == name && s.e >= now)
        .ok_or(SigninError::InvalidState)
}

/// `*` matches any run of characters; in the `scheme://authority` part it stops at `/`, `@`,
/// `?` and `#`, so `http://127.0.0.1:*/*` cannot be stretched to another host.
pub fn redirect_allowed(patterns: &[String], uri: &str) -> bool {
    if Target::parse(uri).is_err() {
        return false;
    }
    let (origin, rest) = split_origin(uri);
    patterns.iter().any(|pattern| {
        let (p_origin, p_rest) = split_origin(pattern);
        glob(p_origin, origin, &['/', '@', '?', '#']) && glob(p_rest, rest, &[])
    })
}

/// `scheme://authority` and the rest.
fn split_origin(s: &str) -> (&str, &str) {
    let start = s.find("://").map_or(0, |i| i + 3);
    let end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    s.split_at(end)
}

/// `*@example.com`, or an exact address; case-insensitive.
pub fn email_allowed(patterns: &[String], email: &str) -> bool {
    let email = email.to_ascii_lowercase();
    patterns
        .iter()
        .any(|p| glob(&p.to_ascii_lowercase(), &email, &['@']))
}

/// Glob with `*` only; a `*` never matches a character in `stops`.
fn glob(pattern: &str, text: &str, stops: &[char]) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            let mut cut = 0;
            loop {
                if glob(tail, &rest[cut..], stops) {
                    return true;
                }
                let Some(c) = rest[cut..].chars().next() else {
                    return false;
                };
                if stops.contains(&c) {
                    return false;
                }
                cut += c.len_utf8();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn redirects_match_their_patterns_only() {
        let p = list(&["http://127.0.0.1:*/*", "https://app.example.com/*"]);
        for ok in [
            "http://127.0.0.1:8765/done",
            "http://127.0.0.1:1/",
            "https://app.example.com/keys?x=1",
        ] {
            assert!(redirect_allowed(&p, ok), "{ok}");
        }
        for bad in [
            "http://127.0.0.1.evil.com:80/x",
            "http://127.0.0.1:80@evil.com/x",
            "https://app.example.com.evil.com/",
            "https://evil.com/https://app.example.com/",
            "javascript:alert(1)",
            "http://localhost:8000/",
            "http://127.0.0.1:8765",
        ] {
            assert!(!redirect_allowed(&p, bad), "{bad}");
        }
    }

    #[test]
    fn states_are_checked_for_signature_provider_and_expiry() {
        let secret = "k".repeat(32);
        let state = token::sign(
            &secret,
            &State {
                p: "github".into(),
                n: "nonce".into(),
                r: None,
                e: 1_000,
            },
        );
        assert!(check_state(&secret, "github", Some(&state), 1_000).is_ok());
        for (name, now) in [("github", 1_001), ("corp", 999)] {
            assert_eq!(
                check_state(&secret, name, Some(&state), now).err(),
                Some(SigninError::InvalidState)
            );
        }
        assert!(check_state(&"x".repeat(32), "github", Some(&state), 0).is_err());
        assert!(check_state(&secret, "github", None, 0).is_err());
    }

    #[test]
    fn emails_match_their_patterns_only() {
        let p = list(&["*@example.com", "boss@other.org"]);
        assert!(email_allowed(&p, "Alice@Example.com"));
        assert!(email_allowed(&p, "boss@other.org"));
        assert!(!email_allowed(&p, "alice@example.com.evil"));
        assert!(!email_allowed(&p, "a@b@example.com"));
        assert!(!email_allowed(&p, "eve@other.org"));
    }
}
