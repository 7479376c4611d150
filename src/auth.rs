//! Gateway keys: their format, their hashing, and the hot-key cache that lets a warm key be
//! checked without touching sled.
//!
//! Keys are `{prefix}` + 40 characters of [A-Za-z0-9] drawn from the thread-local CSPRNG
//! (ChaCha seeded from the OS). Only the SHA-256 of a key is ever stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use crate::store::{KeyRecord, StoreSlot};

pub const SECRET_LEN: usize = 40;

/// A new gateway key.
pub fn generate_secret(prefix: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + SECRET_LEN);
    key.push_str(prefix);
    Alphanumeric.append_string(&mut rand::rng(), &mut key, SECRET_LEN);
    key
}

/// A record id such as `key_3fZ…`: random, so ids reveal nothing about order or count.
pub fn generate_id(prefix: &str) -> String {
    let mut id = String::from(prefix);
    Alphanumeric.append_string(&mut rand::rng(), &mut id, 16);
    id
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The two lower-case hex digits of a byte.
fn hex_digits(byte: u8) -> [u8; 2] {
    [
        HEX_DIGITS[usize::from(byte >> 4)],
        HEX_DIGITS[usize::from(byte & 15)],
    ]
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for digit in bytes.iter().flat_map(|b| hex_digits(*b)) {
        out.push(char::from(digit));
    }
    out
}

/// `hex` of a key hash, on the stack: every request's key check compares it with the stored
/// hash, and building a `String` for that was an allocation and 64 pushes a request.
pub fn hex_of_hash(hash: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(hash) {
        pair.copy_from_slice(&hex_digits(*b));
    }
    out
}

/// Compares two secrets in time independent of where they differ (and of their lengths, by
/// comparing digests).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (da, db) = (hash_secret(a), hash_secret(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer_token(header: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No key, an unknown key, a revoked key or a rotated key past its grace.
    Invalid,
    Disabled,
    Expired,
    /// The store could not be read; the request cannot be judged.
    Unavailable,
}

/// Hot-key cache over the store. Entries are dropped on every admin change to their key, and
/// an epoch counter keeps a lookup that raced with such a change from caching what it read.
pub struct KeyDirectory {
    store: Arc<StoreSlot>,
    by_hash: RwLock<HashMap<[u8; 32], Arc<KeyRecord>>>,
    epoch: AtomicU64,
}

impl KeyDirectory {
    pub fn new(store: Arc<StoreSlot>) -> Self {
        KeyDirectory {
            store,
            by_hash: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }

    /// The key record a secret opens, if it opens one that is currently usable.
    pub async fn authenticate(&self, secret: &str, now: i64) -> Result<Arc<KeyRecord>, AuthError> {
        let hash = hash_secret(secret);
        let cached = self
            .by_hash
            .read()
            .ok()
            .and_then(|map| map.get(&hash).cloned());
        let record = match cached {
            Some(record) => record,
            None => self.load(hash).await?,
        };
        check_usable(&record, &hex_of_hash(&hash), now)?;
        Ok(record)
    }

    async fn load(&self, hash: [u8; 32]) -> Result<Arc<KeyRecord>, AuthError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let hex_hash = hex(&hash);
        let found = self
            .store
            .read(move |store| store.key_by_hash(&hex_hash))
            .await
            .map_err(|e| {
                log::error!("key lookup failed: {e}");
                AuthError::Unavailable
            })?;
        let record = Arc::new(found.ok_or(AuthError::Invalid)?);
        if let Ok(mut map) = self.by_hash.write() {
            if self.epoch.load(Ordering::Acquire) == epoch {
                map.insert(hash, record.clone());
            }
        }
        Ok(record)
    }

    /// Forgets every cached hash of this key, so the next request reads the store again.
    pub fn invalidate(&self, key: &KeyRecord) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = self.by_hash.write() {
            map.retain(|_, cached| cached.id != key.id);
        }
    }

    pub fn cached_keys(&self) -> usize {
        self.by_hash.read().map(|m| m.len()).unwrap_or(0)
    }
}

/// Whether a key found under `hash_hex` may be used at `now`.
/// `hash_hex` is the lower-case hex of the presented secret's hash, as the record stores it.
pub fn check_usable(key: &KeyRecord, hash_hex: &[u8], now: i64) -> Result<(), AuthError> {
    if key.hash.as_bytes() != hash_hex {
        let in_grace = key.prev_hash.as_deref().map(str::as_bytes) == Some(hash_hex)
            && key.prev_valid_until.is_some_and(|until| now < until);
        if !in_grace {
            return Err(AuthError::Invalid);
        }
    }
    if key.disabled {
        return Err(AuthError::Disabled);
    }
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(AuthError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_contract_format() {
        let a = generate_secret("sk-tg-");
        let b = generate_secret("sk-tg-");
        assert_ne!(a, b);
        let body = a.strip_prefix("sk-tg-").unwrap();
        assert_eq!(body.len(), 40);
        assert!(body.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
    }

    #[test]
    fn a_hash_in_hex_on_the_stack_is_the_stored_form() {
        let hash = hash_secret("sk-tg-abc");
        assert_eq!(hex_of_hash(&hash).as_slice(), hex(&hash).as_bytes());
        assert_eq!(
            hex(&[0x00, 0x9f, 0xa0, 0xff]),
            "009fa0ff",
            "lower case, two digits a byte"
        );
    }

    #[test]
    fn usability_rules() {
        let key = KeyRecord {
            hash: "new".into(),
            prev_hash: Some("old".into()),
            prev_valid_until: Some(100),
            ..KeyRecord::default()
        };
        assert_eq!(check_usable(&key, b"new", 500), Ok(()));
        assert_eq!(check_usable(&key, b"old", 99), Ok(()));
        assert_eq!(check_usable(&key, b"old", 100), Err(AuthError::Invalid));
        assert_eq!(check_usable(&key, b"other", 0), Err(AuthError::Invalid));
        let disabled = KeyRecord {
            disabled: true,
            ..key.clone()
        };
        assert_eq!(check_usable(&disabled, b"new", 0), Err(AuthError::Disabled));
        let expired = KeyRecord {
            expires_at: Some(50),
            ..key
        };
        assert_eq!(check_usable(&expired, b"new", 49), Ok(()));
        assert_eq!(check_usable(&expired, b"new", 50), Err(AuthError::Expired));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
