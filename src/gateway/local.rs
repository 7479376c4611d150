//! The gateway's own routes on the public listeners: `/status`, `/account…` and a locally
//! answered `GET /v1/models`.

use serde_json::{json, Value};

use crate::accounts::AccountError;
use crate::app::App;
use crate::config::LimitValues;
use crate::store::KeyRecord;
use crate::time::rfc3339;

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

/// A key's limits: the config defaults, overridden field by field by the key's own.
pub fn effective_limits(app: &App, key: &KeyRecord) -> LimitValues {
    let d = &app.config.limits;
    let own = key.limits.clone().unwrap_or_default();
    LimitValues {
        requests_per_minute: own.requests_per_minute.or(Some(d.requests_per_minute)),
        requests_per_hour: own.requests_per_hour.or(Some(d.requests_per_hour)),
        requests_per_day: own.requests_per_day.or(Some(d.requests_per_day)),
        tokens_per_minute: own.tokens_per_minute.or(Some(d.tokens_per_minute)),
        tokens_per_day: own.tokens_per_day.or(Some(d.tokens_per_day)),
        images_per_day: own.images_per_day.or(Some(d.images_per_day)),
        max_concurrent: own.max_concurrent.or(Some(d.max_concurrent)),
    }
}

/// `GET /account`.
pub fn account(app: &App, key: &KeyRecord) -> Value {
    json!({
        "key_id": key.id,
        "user": key.user,
        "label": key.label,
        "created_at": rfc3339(key.created_at),
        "expires_at": key.expires_at.map(rfc3339),
        "models": key.models,
        "limits": effective_limits(app, key),
        // Filled in by the limits feature; until then nothing is tracked.
        "remaining": {},
    })
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
