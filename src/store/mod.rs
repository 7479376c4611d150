//! sled repositories. One `Store` per process, opened after Pingora has forked (sled holds an
//! exclusive lock and a flusher thread, neither of which survives a fork) and reached through
//! a [`StoreSlot`] that request handlers can wait on during the first moments of start-up.
//!
//! Records are JSON in their trees: easy to inspect with a debugger and to evolve with serde
//! defaults. Every write that the admin API acknowledges is flushed before the reply.

mod records;
pub mod spool;

pub use records::{HostRecord, KeyRecord, UsageRow, UserRecord};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError(format!("storage: {e}"))
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(format!("corrupt record: {e}"))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

pub struct Store {
    db: sled::Db,
    users: sled::Tree,
    keys: sled::Tree,
    /// SHA-256 of a key secret -> key id. A rotated key keeps a second entry during its grace.
    key_hashes: sled::Tree,
    hosts: sled::Tree,
    /// Usage per key and hour: key = hour start (unix seconds, big-endian) ++ key id, so a
    /// time range is one ordered scan.
    usage: sled::Tree,
    /// Completed idempotent responses: key = scope hash; value = expiry (unix seconds,
    /// big-endian, so the sweep reads it without decoding) ++ the encoded record.
    idempotency: sled::Tree,
}

fn usage_key(hour: i64, key_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key_id.len());
    k.extend_from_slice(&(hour.max(0) as u64).to_be_bytes());
    k.extend_from_slice(key_id.as_bytes());
    k
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    Ok(serde_json::from_slice(bytes)?)
}

impl Store {
    /// Opens (or creates) the database below `dir`. While another process still holds sled's
    /// lock (the old process of a zero-downtime upgrade), the open is retried for `wait`.
    pub fn open(dir: &Path, cache_mb: u64, wait: Duration) -> StoreResult<Store> {
        let deadline = std::time::Instant::now() + wait;
        let db = loop {
            let attempt = sled::Config::new()
                .path(dir.join("db"))
                .cache_capacity(cache_mb.saturating_mul(1024 * 1024))
                .flush_every_ms(Some(500))
                .open();
            match attempt {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if std::time::Instant::now() < deadline => {
                    log::info!("storage busy ({e}), retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Store {
            users: db.open_tree("users")?,
            keys: db.open_tree("keys")?,
            key_hashes: db.open_tree("key_hashes")?,
            hosts: db.open_tree("hosts")?,
            usage: db.open_tree("usage")?,
            idempotency: db.open_tree("idempotency")?,
            db,
        })
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    // ---- users ----

    pub fn user(&self, name: &str) -> StoreResult<Option<UserRecord>> {
        self.users.get(name)?.map(|v| decode(&v)).transpose()
    }

    pub fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.users.iter().values().map(|v| decode(&v?)).collect()
    }

    /// Inserts a user unless the name is taken; returns false when it is.
    pub fn insert_user(&self, user: &UserRecord) -> StoreResult<bool> {
        let created = self
            .users
            .compare_and_swap(
                user.name.as_bytes(),
                None as Option<&[u8]>,
                Some(encode(user)?),
            )?
            .is_ok();
        Ok(created)
    }

    pub fn put_user(&self, user: &UserRecord) -> StoreResult<()> {
        self.users.insert(user.name.as_bytes(), encode(user)?)?;
        Ok(())
    }

    /// Removes the user and every key of theirs; returns the removed keys.
    pub fn remove_user(&self, name: &str) -> StoreResult<Option<Vec<KeyRecord>>> {
        if self.users.remove(name)?.is_none() {
            return Ok(None);
        }
        let keys = self.keys_of(Some(name))?;
        for key in &keys {
            self.remove_key(&key.id)?;
        }
        Ok(Some(keys))
    }

    // ---- keys ----

    pub fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        self.keys.get(id)?.map(|v| decode(&v)).transpose()
    }

    pub fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        match self.key_hashes.get(hash)? {
            Some(id) => self.key(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    pub fn keys_of(&self, user: Option<&str>) -> StoreResult<Vec<KeyRecord>> {
        let mut out = Vec::new();
        for value in self.keys.iter().values() {
            let key: KeyRecord = decode(&value?)?;
            if user.is_none_or(|u| key.user == u) {
                out.push(key);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Writes a key record and makes its hash index match it: the current hash, and the
    /// previous one while a rotation grace lasts.
    pub fn put_key(&self, key: &KeyRecord, old: Option<&KeyRecord>) -> StoreResult<()> {
        if let Some(old) = old {
            for hash in old.hashes() {
                if !key.hashes().any(|h| h == hash) {
                    self.key_hashes.remove(hash)?;
                }
            }
        }
        for hash in key.hashes() {
            self.key_hashes.insert(hash, key.id.as_bytes())?;
        }
        self.keys.insert(key.id.as_bytes(), encode(key)?)?;
        Ok(())
    }

    pub fn remove_key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let Some(old) = self.keys.remove(id)? else {
            return Ok(None);
        };
        let key: KeyRecord = decode(&old)?;
        for hash in key.hashes() {
            self.key_hashes.remove(hash)?;
        }
        Ok(Some(key))
    }

    // ---- usage ----

    /// Adds one key-hour of usage to what is stored.
    pub fn add_usage(&self, hour: i64, key_id: &str, delta: &UsageRow) -> StoreResult<()> {
        let key = usage_key(hour, key_id);
        let mut failed = None;
        self.usage.update_and_fetch(&key, |old| {
            let mut row: UsageRow = match old.map(decode).transpose() {
                Ok(row) => row.unwrap_or_default(),
                Err(e) => {
                    failed = Some(e);
                    return old.map(|o| o.to_vec());
                }
            };
            row.user.clone_from(&delta.user);
            row.add(delta);
            encode(&row).ok()
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// Every stored key-hour with `from_hour <= hour < to_hour`, in time order.
    pub fn usage_between(
        &self,
        from_hour: i64,
        to_hour: i64,
    ) -> StoreResult<Vec<(i64, String, UsageRow)>> {
        let (from, to) = (usage_key(from_hour, ""), usage_key(to_hour, ""));
        let mut out = Vec::new();
        for entry in self.usage.range(from..to) {
            let (k, v) = entry?;
            let mut hour = [0u8; 8];
            hour.copy_from_slice(&k[..8]);
            let key_id = String::from_utf8_lossy(&k[8..]).into_owned();
            out.push((u64::from_be_bytes(hour) as i64, key_id, decode(&v)?));
        }
        Ok(out)
    }

    // ---- idempotency ----

    /// A stored response and its expiry, if there is one.
    pub fn idempotent_response(&self, scope: &[u8; 32]) -> StoreResult<Option<(i64, Vec<u8>)>> {
        Ok(self.idempotency.get(scope)?.and_then(|v| {
            let expires = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            Some((expires, v[8..].to_vec()))
        }))
    }

    pub fn put_idempotent_response(
        &self,
        scope: &[u8; 32],
        expires_at: i64,
        record: &[u8],
    ) -> StoreResult<()> {
        let mut value = Vec::with_capacity(8 + record.len());
        value.extend_from_slice(&expires_at.to_be_bytes());
        value.extend_from_slice(record);
        self.idempotency.insert(scope, value)?;
        Ok(())
    }

    /// Removes the responses expired at `now`; returns how many.
    pub fn sweep_idempotent_responses(&self, now: i64) -> StoreResult<usize> {
        let mut removed = 0;
        for entry in self.idempotency.iter() {
            let (k, v) = entry?;
            let expired = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .is_none_or(|b: [u8; 8]| i64::from_be_bytes(b) <= now);
            if expired {
                self.idempotency.remove(k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn idempotent_responses(&self) -> usize {
        self.idempotency.len()
    }

    // ---- hosts ----

    pub fn hosts(&self) -> StoreResult<Vec<HostRecord>> {
        self.hosts.iter().values().map(|v| decode(&v?)).collect()
    }

    pub fn put_host(&self, host: &HostRecord) -> StoreResult<()> {
        self.hosts.insert(host.host.as_bytes(), encode(host)?)?;
        Ok(())
    }

    pub fn remove_host(&self, host: &str) -> StoreResult<bool> {
        Ok(self.hosts.remove(host)?.is_some())
    }
}

/// How long a request waits for sled to open at start-up before it is refused.
pub const STORE_WAIT: Duration = Duration::from_secs(10);

/// The process's store once it is open. Request paths take it lock-free in effect (a read lock
/// and an `Arc` clone); the few requests that arrive before sled is open wait for it a bounded
/// time. During a zero-downtime upgrade the store is released for good, so that sled's lock can
/// pass to the new process (see `App::hand_off_store`); after that nothing waits for it.
pub struct StoreSlot {
    store: std::sync::RwLock<Option<Arc<Store>>>,
    released: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
    /// Permits for reads on blocking threads (see `CONCURRENT_READS`).
    reads: tokio::sync::Semaphore,
}

/// How many store reads run on blocking threads at once. Without a bound, a burst of cache
/// misses (a thousand keys seen for the first time within a second) starts a blocking thread
/// per concurrent miss: tokio keeps each for ten seconds, and each holds allocator caches of
/// its own. Under `make bench` that was about 90 threads and a fifth of the gateway's RSS.
/// Four threads keep up with misses arriving far faster than sled's ~15 µs a read.
const CONCURRENT_READS: usize = 4;

impl Default for StoreSlot {
    fn default() -> Self {
        StoreSlot {
            store: std::sync::RwLock::new(None),
            released: std::sync::atomic::AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            reads: tokio::sync::Semaphore::new(CONCURRENT_READS),
        }
    }
}

impl StoreSlot {
    pub fn get(&self) -> Option<Arc<Store>> {
        self.store.read().ok().and_then(|s| s.clone())
    }

    pub fn set(&self, store: Arc<Store>) {
        if self.is_released() {
            return;
        }
        if let Ok(mut slot) = self.store.write() {
            *slot = Some(store);
        }
        self.changed.notify_waiters();
    }

    /// Takes the store out for good: later calls find no store and do not wait for one.
    pub fn release(&self) -> Option<Arc<Store>> {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let store = self.store.write().ok().and_then(|mut s| s.take());
        self.changed.notify_waiters();
        store
    }

    pub fn is_released(&self) -> bool {
        self.released.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs `op` on a blocking thread once sled is open, then flushes: what it wrote is durable
    /// when this returns. Request paths never call this; admin and account writes do.
    pub async fn write<T, E>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.run(op, true).await
    }

    /// Runs a read on a blocking thread once sled is open, at most `CONCURRENT_READS` at once.
    pub async fn read<T, E>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        // The semaphore is never closed, so acquiring fails only in theory.
        let _permit = self
            .reads
            .acquire()
            .await
            .map_err(|_| StoreError("storage reads are closed".into()))?;
        self.run(op, false).await
    }

    async fn run<T, E>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
        flush: bool,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self
            .wait(STORE_WAIT)
            .await
            .ok_or_else(|| StoreError("storage is not open".into()))?;
        tokio::task::spawn_blocking(move || {
            let out = op(&store)?;
            if flush {
                store.flush()?;
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError(format!("storage task failed: {e}")))?
    }

    /// The store, waiting up to `limit` for it to open (not at all once it was released).
    pub async fn wait(&self, limit: Duration) -> Option<Arc<Store>> {
        if let Some(store) = self.get() {
            return Some(store);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if let Some(store) = self.get() {
                return Some(store);
            }
            if self.is_released() || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.get();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-store-test-{}-{}",
            std::process::id(),
            crate::time::now_unix_ms()
        ));
        let store = Store::open(&dir, 8, Duration::from_secs(1)).unwrap();
        (store, dir)
    }

    fn key(id: &str, user: &str, hash: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            user: user.into(),
            hash: hash.into(),
            ..KeyRecord::default()
        }
    }

    #[test]
    fn rotation_grace_keeps_both_hashes_until_rewritten() {
        let (store, dir) = temp_store();
        let k = key("key_a", "alice", "h1");
        store.put_key(&k, None).unwrap();
        let mut rotated = k.clone();
        rotated.prev_hash = Some("h1".into());
        rotated.prev_valid_until = Some(10);
        rotated.hash = "h2".into();
        store.put_key(&rotated, Some(&k)).unwrap();
        assert_eq!(store.key_by_hash("h1").unwrap().unwrap().id, "key_a");
        assert_eq!(store.key_by_hash("h2").unwrap().unwrap().id, "key_a");
        let mut settled = rotated.clone();
        settled.prev_hash = None;
        store.put_key(&settled, Some(&rotated)).unwrap();
        assert!(store.key_by_hash("h1").unwrap().is_none());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn usage_adds_up_per_key_and_hour_and_scans_by_time() {
        let (store, dir) = temp_store();
        let row = |user: &str, requests| UsageRow {
            user: user.into(),
            requests,
            prompt_tokens: 10 * requests,
            ..UsageRow::default()
        };
        store.add_usage(7200, "key_a", &row("alice", 1)).unwrap();
        store.add_usage(7200, "key_a", &row("alice", 2)).unwrap();
        store.add_usage(3600, "key_b", &row("bob", 5)).unwrap();
        store.add_usage(10800, "key_a", &row("alice", 1)).unwrap();
        let rows = store.usage_between(3600, 10800).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].0, rows[0].1.as_str(), rows[0].2.requests),
            (3600, "key_b", 5)
        );
        assert_eq!(
            (rows[1].0, rows[1].1.as_str(), rows[1].2.requests),
            (7200, "key_a", 3)
        );
        assert_eq!(rows[1].2.prompt_tokens, 30);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn removing_a_user_removes_their_keys() {
        let (store, dir) = temp_store();
        let user = UserRecord {
            name: "alice".into(),
            ..UserRecord::default()
        };
        assert!(store.insert_user(&user).unwrap());
        assert!(!store.insert_user(&user).unwrap());
        store.put_key(&key("key_a", "alice", "h1"), None).unwrap();
        store.put_key(&key("key_b", "bob", "h2"), None).unwrap();
        let removed = store.remove_user("alice").unwrap().unwrap();
        assert_eq!(removed.len(), 1);
        assert!(store.key_by_hash("h1").unwrap().is_none());
        assert!(store.key_by_hash("h2").unwrap().is_some());
        std::fs::remove_dir_all(dir).ok();
    }

    /// A burst of reads gets at most `CONCURRENT_READS` blocking threads at a time. Each read
    /// holds its thread a few milliseconds so that the burst overlaps; the most seen at once
    /// must then be exactly the bound (fewer would mean the reads never overlapped).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_reads_is_bounded() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (store, dir) = temp_store();
        let slot = Arc::new(StoreSlot::default());
        slot.set(Arc::new(store));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let reads: Vec<_> = (0..4 * CONCURRENT_READS)
            .map(|_| {
                let (slot, running, most) = (slot.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    slot.read(move |store| {
                        most.fetch_max(running.fetch_add(1, SeqCst) + 1, SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, SeqCst);
                        store.key_by_hash("absent")
                    })
                    .await
                })
            })
            .collect();
        for read in reads {
            assert!(read.await.unwrap().unwrap().is_none());
        }
        assert_eq!(most.load(SeqCst), CONCURRENT_READS);
        std::fs::remove_dir_all(dir).ok();
    }
}
