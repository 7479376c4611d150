//! The admin HTTP API (SPEC §5) on `admin.listen`: users, keys and `X-Host-Final` hosts.
//! Every request needs `Authorization: Bearer <admin token>`, compared in constant time.
//! Every write is flushed to disk before the reply.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::{AccountError, IssuedKey, KeyPatch, NewKey};
use crate::app::App;
use crate::auth::{bearer_token, constant_time_eq};
use crate::config::LimitValues;
use crate::gateway::route::{normalize_host, HostTable};
use crate::store::{HostRecord, KeyRecord, UserRecord};
use crate::time::rfc3339;
use crate::usage::report::{self, Filter, Period};

const MAX_BODY: usize = 1024 * 1024;

pub struct AdminApp {
    pub app: Arc<App>,
    pub token: String,
}

struct Reply(u16, Option<Value>);

fn error(status: u16, kind: &str, code: &str, message: impl Into<String>) -> Reply {
    Reply(
        status,
        Some(
            json!({"error": {"message": message.into(), "type": kind, "param": null, "code": code}}),
        ),
    )
}

fn not_found(what: &str) -> Reply {
    error(
        404,
        "invalid_request_error",
        "not_found",
        format!("{what} not found"),
    )
}

fn api_error(e: &crate::gateway::respond::ApiError) -> Reply {
    error(e.status, e.kind, e.code, e.message.clone())
}

fn bad_request(message: impl Into<String>) -> Reply {
    error(400, "invalid_request_error", "invalid_request", message)
}

impl From<AccountError> for Reply {
    fn from(e: AccountError) -> Reply {
        match e {
            AccountError::NotFound(what) => not_found(what),
            AccountError::Conflict(m) => error(409, "invalid_request_error", "conflict", m),
            AccountError::Invalid(m) => bad_request(m),
            AccountError::Storage(m) => {
                log::error!("admin: storage failure: {m}");
                error(
                    503,
                    "server_error",
                    "storage_unavailable",
                    "storage is unavailable",
                )
            }
        }
    }
}

pub fn key_view(key: &KeyRecord) -> Value {
    json!({
        "id": key.id,
        "user": key.user,
        "label": key.label,
        "created_at": rfc3339(key.created_at),
        "expires_at": key.expires_at.map(rfc3339),
        "disabled": key.disabled,
        "models": key.models,
        "limits": key.limits,
        "source": key.source,
        "previous_key_valid_until": key.prev_valid_until.filter(|_| key.prev_hash.is_some()).map(rfc3339),
    })
}

fn issued_view(issued: &IssuedKey) -> Value {
    let mut view = key_view(&issued.record);
    view["key"] = Value::String(issued.secret.clone());
    view
}

fn user_view(user: &UserRecord, key_ids: &[String]) -> Value {
    json!({
        "name": user.name,
        "email": user.email,
        "created_at": rfc3339(user.created_at),
        "limits": user.limits,
        "keys": key_ids,
    })
}

/// Percent-decodes one path segment (`github%3A123` → `github:123`).
fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| decode_segment(&v.replace('+', " ")).unwrap_or_default())
    })
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Reply> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    email: Option<String>,
    limits: Option<LimitValues>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    limits: Option<LimitValues>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotate {
    grace_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostPut {
    #[serde(default)]
    keys: Vec<String>,
    origin: Option<String>,
    ca_file: Option<String>,
}

impl AdminApp {
    async fn route(
        &self,
        method: &Method,
        segments: &[String],
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, Reply> {
        let accounts = &self.app.accounts;
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        Ok(match (method, segs.as_slice()) {
            (&Method::POST, ["admin", "users"]) => {
                let new: NewUser = parse(body)?;
                let (user, issued) = accounts
                    .create_user(new.name, new.email, new.limits, "admin")
                    .await?;
                Reply(
                    201,
                    Some(
                        json!({"user": user_view(&user, std::slice::from_ref(&issued.record.id)), "key": issued_view(&issued)}),
                    ),
                )
            }
            (&Method::GET, ["admin", "users"]) => {
                let users = accounts.users().await?;
                let data: Vec<Value> = users.iter().map(|(u, ids)| user_view(u, ids)).collect();
                Reply(200, Some(json!({"data": data})))
            }
            (&Method::GET, ["admin", "users", name]) => {
                let (user, keys) = accounts.user(name).await?;
                let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
                Reply(200, Some(user_view(&user, &ids)))
            }
            (&Method::PATCH, ["admin", "users", name]) => {
                let patch: UserPatch = parse(body)?;
                let user = accounts.set_user_limits(name, patch.limits).await?;
                let (_, keys) = accounts.user(name).await?;
                let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
                Reply(200, Some(user_view(&user, &ids)))
            }
            (&Method::DELETE, ["admin", "users", name]) => {
                accounts.remove_user(name).await?;
                Reply(204, None)
            }
            (&Method::POST, ["admin", "users", name, "keys"]) => {
                let spec: NewKey = parse(body)?;
                let issued = accounts.create_key(name, spec, "admin").await?;
                Reply(201, Some(issued_view(&issued)))
            }
            (&Method::GET, ["admin", "keys"]) => {
                let keys = accounts.keys(query_param(query, "user")).await?;
                Reply(
                    200,
                    Some(json!({"data": keys.iter().map(key_view).collect::<Vec<_>>()})),
                )
            }
            (&Method::GET, ["admin", "keys", id]) => {
                Reply(200, Some(key_view(&accounts.key(id).await?)))
            }
            (&Method::PATCH, ["admin", "keys", id]) => {
                let patch: KeyPatch = parse(body)?;
                Reply(200, Some(key_view(&accounts.patch_key(id, patch).await?)))
            }
            (&Method::DELETE, ["admin", "keys", id]) => {
                accounts.revoke_key(id).await?;
                Reply(204, None)
            }
            (&Method::POST, ["admin", "keys", id, "rotate"]) => {
                let rotate: Rotate = parse(body)?;
                let issued = accounts.rotate_key(id, rotate.grace_s.unwrap_or(0)).await?;
                Reply(
                    200,
                    Some(json!({"id": issued.record.id, "key": issued.secret})),
                )
            }
            (&Method::GET, ["admin", "usage"]) => self.usage(query).await?,
            (&Method::GET, ["admin", "hosts"]) => {
                Reply(200, Some(json!({"data": self.host_views()})))
            }
            (&Method::PUT, ["admin", "hosts", host]) => self.put_host(host, parse(body)?).await?,
            (&Method::DELETE, ["admin", "hosts", host]) => self.remove_host(host).await?,
            (&Method::DELETE, ["admin", "images", hash]) => self.delete_image(hash).await?,
            (&Method::POST, ["admin", "images", "purge"])
            | (&Method::POST, ["cache", "delete"]) => {
                match crate::gateway::images::purge(&self.app, body).await {
                    Ok(Some(hash)) => Reply(200, Some(json!({ "deleted": hash }))),
                    Ok(None) => not_found("cached image"),
                    Err(e) => api_error(&e),
                }
            }
            _ => not_found("route"),
        })
    }

    /// `GET /admin/usage?user=&key=&from=&to=&by=hour|day`: by day over the last 7 days
    /// unless told otherwise.
    async fn usage(&self, query: Option<&str>) -> Result<Reply, Reply> {
        let time = |name: &str| -> Result<Option<i64>, Reply> {
            query_param(query, name)
                .map(|v| {
                    crate::time::parse_rfc3339(&v).ok_or_else(|| {
                        bad_request(format!(
                            "{name}: `{v}` is not an RFC 3339 timestamp or date"
                        ))
                    })
                })
                .transpose()
        };
        let period = match query_param(query, "by").as_deref() {
            None | Some("day") => Period::Day,
            Some("hour") => Period::Hour,
            Some(other) => return Err(bad_request(format!("by: `{other}` is not hour or day"))),
        };
        let now = crate::time::now_unix();
        let today = now - now.rem_euclid(86_400);
        let (user, key_id) = (query_param(query, "user"), query_param(query, "key"));
        let filter = Filter {
            from: time("from")?.unwrap_or(today - 6 * 86_400),
            to: time("to")?.unwrap_or(now + 3_600),
            user: user.as_deref(),
            key_id: key_id.as_deref(),
        };
        let rows = report::rows(&self.app.store, &self.app.usage, &filter, period)
            .await
            .map_err(|e| Reply::from(AccountError::from(e)))?;
        Ok(Reply(200, Some(report::admin_json(&rows, period))))
    }

    /// The normalised name of a host the API may change: not one from the config file.
    fn editable_host(&self, host: &str) -> Result<String, Reply> {
        let host = normalize_host(host).ok_or_else(|| bad_request("not a HOST[:PORT]"))?;
        if self.app.hosts.is_configured(&host) {
            return Err(error(
                409,
                "invalid_request_error",
                "conflict",
                "this host is defined in the configuration file",
            ));
        }
        Ok(host)
    }

    fn host_views(&self) -> Vec<Value> {
        self.app
            .hosts
            .list(&self.app.config.hosts)
            .into_iter()
            .map(|h| json!({"host": h.host, "origin": h.origin, "keys": h.masked_keys, "source": h.source}))
            .collect()
    }

    /// Validated, stored and flushed, and only then live.
    async fn put_host(&self, host: &str, put: HostPut) -> Result<Reply, Reply> {
        let host = self.editable_host(host)?;
        let record = HostRecord {
            host: host.clone(),
            origin: put.origin,
            keys: put.keys,
            ca_file: put.ca_file,
        };
        HostTable::check(&record).map_err(bad_request)?;
        let stored = record.clone();
        self.with_store(move |store| store.put_host(&stored))
            .await?;
        self.app.hosts.set_added(record).map_err(bad_request)?;
        let view = self
            .host_views()
            .into_iter()
            .find(|h| h["host"] == host.as_str());
        Ok(Reply(200, view))
    }

    async fn remove_host(&self, host: &str) -> Result<Reply, Reply> {
        let host = self.editable_host(host)?;
        let stored = host.clone();
        let existed = self
            .with_store(move |store| store.remove_host(&stored))
            .await?;
        let was_live = self.app.hosts.remove_added(&host);
        if existed || was_live {
            Ok(Reply(204, None))
        } else {
            Err(not_found("host"))
        }
    }

    async fn with_store<T: Send + 'static>(
        &self,
        op: impl FnOnce(&crate::store::Store) -> crate::store::StoreResult<T> + Send + 'static,
    ) -> Result<T, Reply> {
        self.app
            .store
            .write(op)
            .await
            .map_err(|e| Reply::from(AccountError::from(e)))
    }

    /// `DELETE /admin/images/{hash}`.
    async fn delete_image(&self, hash: &str) -> Result<Reply, Reply> {
        let Some(images) = self.app.images.as_ref() else {
            return Err(not_found("image"));
        };
        if !crate::images::params::valid_hash(hash) {
            return Err(not_found("image"));
        }
        match images.delete(&self.app, hash).await {
            Ok(true) => Ok(Reply(204, None)),
            Ok(false) => Err(not_found("image")),
            Err(e) => Err(Reply::from(AccountError::from(e))),
        }
    }

    /// The admin token as `Authorization: Bearer`, or as `X-Admin-Token` on `/cache/delete`
    /// (the route of the image proxy Tollgate replaces).
    fn authorized(&self, session: &ServerSession) -> bool {
        let headers = &session.req_header().headers;
        let token = if session.req_header().uri.path() == "/cache/delete" {
            headers
                .get("x-admin-token")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        } else {
            None
        };
        token
            .or_else(|| {
                headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| bearer_token(v.as_bytes()))
            })
            .is_some_and(|token| constant_time_eq(token, &self.token))
    }
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(error(
                        413,
                        "invalid_request_error",
                        "request_too_large",
                        "body too large",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(bad_request(format!("cannot read body: {e}"))),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let reply = if !self.authorized(session) {
            error(
                401,
                "invalid_request_error",
                "invalid_admin_token",
                "missing or wrong admin token",
            )
        } else {
            let method = session.req_header().method.clone();
            let uri = session.req_header().uri.clone();
            let segments: Option<Vec<String>> = uri
                .path()
                .split('/')
                .filter(|s| !s.is_empty())
                .map(decode_segment)
                .collect();
            match (segments, read_body(session).await) {
                (None, _) => bad_request("malformed path"),
                (_, Err(reply)) => reply,
                (Some(segments), Ok(body)) => {
                    match self.route(&method, &segments, uri.query(), &body).await {
                        Ok(reply) | Err(reply) => reply,
                    }
                }
            }
        };
        let Reply(status, body) = reply;
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut builder = Response::builder()
            .status(status)
            .header("content-length", body.len());
        if status != 204 {
            builder = builder.header("content-type", "application/json");
        }
        builder.body(body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_decoding() {
        assert_eq!(
            decode_segment("github%3A123").as_deref(),
            Some("github:123")
        );
        assert_eq!(decode_segment("bad%zz"), None);
        assert_eq!(
            query_param(Some("a=1&user=bob%20x"), "user").as_deref(),
            Some("bob x")
        );
        assert_eq!(query_param(Some("a=1"), "user"), None);
    }
}
