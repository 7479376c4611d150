//! User and key management shared by the admin API, the `/account` routes and sign-in.
//! Every change is written to sled, flushed, and only then made visible by dropping the
//! affected keys from the hot-key cache — so a revoked key stops working with the reply.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::auth::{generate_id, generate_secret, hash_secret, hex, KeyDirectory};
use crate::config::LimitValues;
use crate::store::{KeyRecord, Store, StoreError, StoreSlot, UserRecord};
use crate::time::now_unix;

/// Why an account operation did not happen.
#[derive(Debug)]
pub enum AccountError {
    NotFound(&'static str),
    Conflict(String),
    Invalid(String),
    Storage(String),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        AccountError::Storage(e.0)
    }
}

/// What a new key may carry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub label: Option<String>,
    pub expires_at: Option<String>,
    pub expires_in_s: Option<u64>,
    pub models: Option<Vec<String>>,
    pub limits: Option<LimitValues>,
}

/// A partial update of a key; absent fields stay as they are, `null` clears.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub disabled: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    pub label: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    pub limits: Option<Option<LimitValues>>,
}

fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn parse_expiry(
    at: Option<&str>,
    in_s: Option<u64>,
    now: i64,
) -> Result<Option<i64>, AccountError> {
    match (at, in_s) {
        (Some(_), Some(_)) => Err(AccountError::Invalid(
            "give expires_at or expires_in_s, not both".into(),
        )),
        (Some(at), None) => crate::time::parse_rfc3339(at).map(Some).ok_or_else(|| {
            AccountError::Invalid(format!("expires_at `{at}` is not an RFC 3339 timestamp"))
        }),
        (None, Some(secs)) => Ok(Some(now.saturating_add(secs.min(i64::MAX as u64) as i64))),
        (None, None) => Ok(None),
    }
}

fn check_models(models: &Option<Vec<String>>) -> Result<(), AccountError> {
    if let Some(list) = models {
        if list.iter().any(|m| m.trim().is_empty()) {
            return Err(AccountError::Invalid("models: empty model id".into()));
        }
    }
    Ok(())
}

/// A key as created: its record and the secret, shown this once.
pub struct IssuedKey {
    pub record: KeyRecord,
    pub secret: String,
}

pub struct Accounts {
    store: Arc<StoreSlot>,
    keys: Arc<KeyDirectory>,
    key_prefix: String,
    /// Users' limits as the request path needs them; `None` inside = no limits set (or no
    /// such user). Dropped on every change to the user; the epoch keeps a lookup that raced
    /// with a change from caching what it read.
    user_limits: RwLock<HashMap<String, Option<LimitValues>>>,
    user_epoch: AtomicU64,
}

impl Accounts {
    pub fn new(store: Arc<StoreSlot>, keys: Arc<KeyDirectory>, key_prefix: String) -> Self {
        Accounts {
            store,
            keys,
            key_prefix,
            user_limits: RwLock::new(HashMap::new()),
            user_epoch: AtomicU64::new(0),
        }
    }

    /// A user's own limits, from memory once warm.
    pub async fn user_limits(&self, name: &str) -> Result<Option<LimitValues>, AccountError> {
        if let Some(cached) = self
            .user_limits
            .read()
            .ok()
            .and_then(|m| m.get(name).cloned())
        {
            return Ok(cached);
        }
        let epoch = self.user_epoch.load(Ordering::Acquire);
        let owned = name.to_string();
        let limits = self
            .store
            .read(move |store| Ok::<_, AccountError>(store.user(&owned)?.and_then(|u| u.limits)))
            .await?;
        if let Ok(mut map) = self.user_limits.write() {
            if self.user_epoch.load(Ordering::Acquire) == epoch {
                map.insert(name.to_string(), limits.clone());
            }
        }
        Ok(limits)
    }

    fn forget_user(&self, name: &str) {
        self.user_epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = self.user_limits.write() {
            map.remove(name);
        }
    }

    async fn with_store<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, AccountError> {
        self.store.write(op).await
    }

    fn new_key_record(
        &self,
        user: &str,
        spec: NewKey,
        source: &str,
        now: i64,
    ) -> Result<IssuedKey, AccountError> {
        check_models(&spec.models)?;
        let secret = generate_secret(&self.key_prefix);
        let record = KeyRecord {
            id: generate_id("key_"),
            user: user.to_string(),
            label: spec.label,
            created_at: now,
            expires_at: parse_expiry(spec.expires_at.as_deref(), spec.expires_in_s, now)?,
            disabled: false,
            models: spec.models,
            limits: spec.limits,
            hash: hex(&hash_secret(&secret)),
            prev_hash: None,
            prev_valid_until: None,
            source: source.to_string(),
            created_ms: crate::time::now_unix_ms(),
        };
        Ok(IssuedKey { record, secret })
    }

    pub async fn create_user(
        &self,
        name: String,
        email: Option<String>,
        limits: Option<LimitValues>,
        source: &str,
    ) -> Result<(UserRecord, IssuedKey), AccountError> {
        self.create_user_with_key(name, email, limits, NewKey::default(), source)
            .await
    }

    /// A new user and its first key, described by `key`.
    pub async fn create_user_with_key(
        &self,
        name: String,
        email: Option<String>,
        limits: Option<LimitValues>,
        key: NewKey,
        source: &str,
    ) -> Result<(UserRecord, IssuedKey), AccountError> {
        if name.is_empty() || name.len() > 200 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(AccountError::Invalid(
                "name must be 1-200 characters, without '/' or control characters".into(),
            ));
        }
        let now = now_unix();
        let user = UserRecord {
            name: name.clone(),
            email,
            created_at: now,
            limits,
        };
        let issued = self.new_key_record(&name, key, source, now)?;
        let (user_out, record) = (user.clone(), issued.record.clone());
        self.with_store(move |store| {
            if !store.insert_user(&user)? {
                return Err(AccountError::Conflict(format!(
                    "user `{}` exists",
                    user.name
                )));
            }
            store.put_key(&record, None)?;
            Ok(())
        })
        .await?;
        self.forget_user(&user_out.name);
        Ok((user_out, issued))
    }

    pub async fn user(&self, name: &str) -> Result<(UserRecord, Vec<KeyRecord>), AccountError> {
        let name = name.to_string();
        self.with_store(move |store| {
            let user = store.user(&name)?.ok_or(AccountError::NotFound("user"))?;
            let keys = store.keys_of(Some(&name))?;
            Ok((user, keys))
        })
        .await
    }

    pub async fn users(&self) -> Result<Vec<(UserRecord, Vec<String>)>, AccountError> {
        self.with_store(|store| {
            let keys = store.keys_of(None)?;
            let mut users = store.users()?;
            users.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(users
                .into_iter()
                .map(|u| {
                    let ids = keys
                        .iter()
                        .filter(|k| k.user == u.name)
                        .map(|k| k.id.clone())
                        .collect();
                    (u, ids)
                })
                .collect())
        })
        .await
    }

    pub async fn set_user_limits(
        &self,
        name: &str,
        limits: Option<LimitValues>,
    ) -> Result<UserRecord, AccountError> {
        let owned = name.to_string();
        let user = self
            .with_store(move |store| {
                let mut user = store.user(&owned)?.ok_or(AccountError::NotFound("user"))?;
                user.limits = limits;
                store.put_user(&user)?;
                Ok(user)
            })
            .await?;
        self.forget_user(name);
        Ok(user)
    }

    pub async fn remove_user(&self, name: &str) -> Result<(), AccountError> {
        let owned = name.to_string();
        let removed = self
            .with_store(move |store| {
                store
                    .remove_user(&owned)?
                    .ok_or(AccountError::NotFound("user"))
            })
            .await?;
        for key in &removed {
            self.keys.invalidate(key);
        }
        self.forget_user(name);
        Ok(())
    }

    pub async fn create_key(
        &self,
        user: &str,
        spec: NewKey,
        source: &str,
    ) -> Result<IssuedKey, AccountError> {
        let issued = self.new_key_record(user, spec, source, now_unix())?;
        let record = issued.record.clone();
        self.with_store(move |store| {
            if store.user(&record.user)?.is_none() {
                return Err(AccountError::NotFound("user"));
            }
            store.put_key(&record, None)?;
            Ok(())
        })
        .await?;
        Ok(issued)
    }

    pub async fn key(&self, id: &str) -> Result<KeyRecord, AccountError> {
        let id = id.to_string();
        self.with_store(move |store| store.key(&id)?.ok_or(AccountError::NotFound("key")))
            .await
    }

    pub async fn keys(&self, user: Option<String>) -> Result<Vec<KeyRecord>, AccountError> {
        self.with_store(move |store| Ok(store.keys_of(user.as_deref())?))
            .await
    }

    pub async fn patch_key(&self, id: &str, patch: KeyPatch) -> Result<KeyRecord, AccountError> {
        let id = id.to_string();
        let now = now_unix();
        if let Some(models) = &patch.models {
            check_models(models)?;
        }
        let expires_at = match &patch.expires_at {
            Some(at) => Some(parse_expiry(at.as_deref(), None, now)?),
            None => None,
        };
        let updated = self
            .with_store(move |store| {
                let mut key = store.key(&id)?.ok_or(AccountError::NotFound("key"))?;
                let old = key.clone();
                if let Some(disabled) = patch.disabled {
                    key.disabled = disabled;
                }
                if let Some(label) = patch.label {
                    key.label = label;
                }
                if let Some(expires_at) = expires_at {
                    key.expires_at = expires_at;
                }
                if let Some(models) = patch.models {
                    key.models = models;
                }
                if let Some(limits) = patch.limits {
                    key.limits = limits;
                }
                store.put_key(&key, Some(&old))?;
                Ok(key)
            })
            .await?;
        self.keys.invalidate(&updated);
        Ok(updated)
    }

    pub async fn revoke_key(&self, id: &str) -> Result<(), AccountError> {
        let id = id.to_string();
        let removed = self
            .with_store(move |store| store.remove_key(&id)?.ok_or(AccountError::NotFound("key")))
            .await?;
        self.keys.invalidate(&removed);
        Ok(())
    }

    /// A new secret for the same key id; the old secret keeps working `grace_s` more seconds.
    pub async fn rotate_key(&self, id: &str, grace_s: u64) -> Result<IssuedKey, AccountError> {
        let id = id.to_string();
        let secret = generate_secret(&self.key_prefix);
        let new_hash = hex(&hash_secret(&secret));
        let now = now_unix();
        let record = self
            .with_store(move |store| {
                let mut key = store.key(&id)?.ok_or(AccountError::NotFound("key"))?;
                let old = key.clone();
                if grace_s > 0 {
                    key.prev_hash = Some(std::mem::replace(&mut key.hash, new_hash));
                    key.prev_valid_until =
                        Some(now.saturating_add(grace_s.min(i64::MAX as u64) as i64));
                } else {
                    key.hash = new_hash;
                    key.prev_hash = None;
                    key.prev_valid_until = None;
                }
                store.put_key(&key, Some(&old))?;
                Ok(key)
            })
            .await?;
        self.keys.invalidate(&record);
        Ok(IssuedKey { record, secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        assert_eq!(parse_expiry(None, Some(60), 100).unwrap(), Some(160));
        assert_eq!(
            parse_expiry(Some("1970-01-01T00:01:00Z"), None, 0).unwrap(),
            Some(60)
        );
        assert_eq!(parse_expiry(None, None, 0).unwrap(), None);
        assert!(parse_expiry(Some("soon"), None, 0).is_err());
        assert!(parse_expiry(Some("1970-01-01"), Some(1), 0).is_err());
    }
}
