//! The records kept in sled. Secrets of gateway keys are never stored: only their SHA-256.

use serde::{Deserialize, Serialize};

use crate::config::LimitValues;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    pub created_at: i64,
    #[serde(default)]
    pub limits: Option<LimitValues>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub user: String,
    #[serde(default)]
    pub label: Option<String>,
    pub created_at: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub limits: Option<LimitValues>,
    /// Hex SHA-256 of the current secret.
    pub hash: String,
    /// Hex SHA-256 of the secret before the last rotation, valid until `prev_valid_until`.
    #[serde(default)]
    pub prev_hash: Option<String>,
    #[serde(default)]
    pub prev_valid_until: Option<i64>,
    /// Who issued it: `admin`, `self` (rotated by its owner) or `sign-in:{provider}`.
    #[serde(default)]
    pub source: String,
    /// Issue time in milliseconds, to order keys issued within one second (sign-in keys past
    /// `max_keys_per_user` go oldest first). Absent in records from before it existed.
    #[serde(default)]
    pub created_ms: u64,
}

impl KeyRecord {
    /// Every hash that currently opens this key.
    pub fn hashes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.hash.as_str()).chain(self.prev_hash.as_deref())
    }
}

/// Hashes are not secrets, but there is no reason to print them either.
impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("label", &self.label)
            .field("disabled", &self.disabled)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An `X-Host-Final` destination added through the admin API. Its keys are upstream
/// provider keys, which the gateway must be able to send, so they are kept as given.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct HostRecord {
    pub host: String,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
}

impl std::fmt::Debug for HostRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRecord")
            .field("host", &self.host)
            .field("origin", &self.origin)
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .finish()
    }
}

/// Usage of one key in one hour (SPEC §3.6), as kept in sled and as added up in memory
/// before a write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub user: String,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub images: u64,
}

impl UsageRow {
    pub fn add(&mut self, other: &UsageRow) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.images += other.images;
    }

    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}
