//! The gateway's own routes on the public listeners: `/status`, `/account…` and a locally
//! answered `GET /v1/models`.

use serde_json::{json, Value};

use crate::accounts::AccountError;
use crate::app::App;
use crate::limits::{Limits, Subject};
use crate::store::KeyRecord;
use crate::time::rfc3339;
use crate::usage::report::{self, Filter, Period};

use super::respond::ApiError;

/// `GET /status`: health without secrets or backend addresses.
pub fn status(app: &App) -> Value {
    let upstreams: serde_json::Map<String, Value> = app
        .router
        .pools()
        .map(|pool| {
            (
                pool.name.clone(),
                json!({"backends": pool.backends.len(), "healthy": pool.healthy_backends()}),
            )
        })
        .collect();
    json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": app.started.elapsed().as_secs(),
        "upstreams": upstreams,
    })
}

/// `GET /account`: the calling key, its limits (the config defaults overridden by its own)
/// and what remains of each limit that applies to it or its user.
pub async fn account(app: &App, key: &KeyRecord) -> Result<Value, ApiError> {
    let user_limits = app.accounts.user_limits(&key.user).await.map_err(|e| {
        log::error!("reading the limits of user {} failed: {e:?}", key.user);
        ApiError::service_unavailable("Limits storage is unavailable.")
    })?;
    let key_limits = Limits::for_key(&app.config.limits, key.limits.as_ref());
    let subject = Subject {
        key_id: &key.id,
        user: &key.user,
        key_limits,
        user_limits: Limits::for_user(user_limits.as_ref()),
    };
    let mut remaining = serde_json::Map::new();
    for (_, standing) in app.limiter.standings(&subject, crate::time::now_unix_ms()) {
        let name = standing.limit.as_str();
        let tighter = remaining
            .get(name)
            .and_then(Value::as_u64)
            .is_none_or(|r| standing.remaining < r);
        if tighter {
            remaining.insert(name.to_string(), standing.remaining.into());
        }
    }
    let limits: serde_json::Map<String, Value> = key_limits
        .named()
        .into_iter()
        .map(|(name, value)| (name.as_str().to_string(), value.into()))
        .collect();
    Ok(json!({
        "key_id": key.id,
        "user": key.user,
        "label": key.label,
        "created_at": rfc3339(key.created_at),
        "expires_at": key.expires_at.map(rfc3339),
        "models": key.models,
        "limits": limits,
        "user_limits": user_limits,
        "remaining": remaining,
    }))
}

/// `GET /account/usage?days=N` (1 to 366, default 30): the user's usage by UTC day.
pub async fn account_usage(
    app: &App,
    key: &KeyRecord,
    query: Option<&str>,
) -> Result<Value, ApiError> {
    let days = query
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("days=")))
        .map(|d| d.parse::<i64>().ok().filter(|d| (1..=366).contains(d)))
        .unwrap_or(Some(30))
        .ok_or_else(|| {
            ApiError::invalid_request("days must be an integer from 1 to 366").with_param("days")
        })?;
    let now = crate::time::now_unix();
    let today = now - now.rem_euclid(86_400);
    let filter = Filter {
        from: today - (days - 1) * 86_400,
        to: now + 3_600,
        user: Some(&key.user),
        key_id: None,
    };
    let rows = report::rows(&app.store, &app.usage, &filter, Period::Day)
        .await
        .map_err(|e| {
            log::error!("reading usage failed: {e}");
            ApiError::service_unavailable("Usage storage is unavailable.")
        })?;
    Ok(report::account_json(&rows))
}

/// `POST /account/rotate-key`: the old secret stops working at once.
pub async fn rotate_own_key(app: &App, key: &KeyRecord) -> Result<Value, ApiError> {
    match app.accounts.rotate_key(&key.id, 0).await {
        Ok(issued) => Ok(json!({"key_id": issued.record.id, "key": issued.secret})),
        Err(AccountError::NotFound(_)) => Err(ApiError::invalid_api_key()),
        Err(e) => {
            log::error!("rotating key {} failed: {e:?}", key.id);
            Err(ApiError::service_unavailable(
                "The key could not be rotated; try again.",
            ))
        }
    }
}

/// `GET /v1/models` and `GET /v1/models/{id}` from the `models` list, filtered by the key's
/// allow-list. `None` when the list is not configured (the request is proxied then).
pub fn models(app: &App, key: &KeyRecord, path: &str) -> Option<Result<Value, ApiError>> {
    let configured = app.config.models.as_ref()?;
    let visible = configured.iter().filter(|m| {
        key.models
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&m.id))
    });
    let object = |id: &str, owned_by: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": owned_by});
    let path = path.trim_end_matches('/');
    if path == "/v1/models" {
        let data: Vec<Value> = visible.map(|m| object(&m.id, &m.owned_by)).collect();
        return Some(Ok(json!({"object": "list", "data": data})));
    }
    let id = path.strip_prefix("/v1/models/")?;
    let found = visible
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| object(&m.id, &m.owned_by));
    Some(found.ok_or_else(|| {
        ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("The model `{id}` does not exist or you do not have access to it."),
        )
        .with_param("model")
    }))
}
