//! Idempotency-Key (SPEC §3.5): the first request of a scope (key id, method, path and query,
//! Idempotency-Key) goes upstream and its response is kept for `ttl_s`; the same request again
//! gets that response back byte for byte, with no upstream call and no tokens charged.
//!
//! Claims of requests in flight live in memory only: the process handling the request is the
//! only one that can finish it, and a crash must not leave a key locked. A completed response
//! stays in memory until the write-behind has put it in sled, so a retry arriving in between
//! is answered too. Nothing here writes to sled on the request path.

pub mod record;
pub mod recording;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::IdempotencySection;
use crate::store::spool::RecordSink;
use crate::store::{Store, StoreError, StoreResult, StoreSlot};
pub use record::Record;

/// How long a request whose scope is claimed waits for the claimant's body hash before it is
/// answered 409 (its retry will then be judged).
const HASH_WAIT: Duration = Duration::from_secs(2);

/// The methods the header applies to.
pub fn applies_to(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
    )
}

/// 1 to 255 visible ASCII characters.
pub fn valid_key(key: &[u8]) -> bool {
    (1..=255).contains(&key.len()) && key.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The scope hash: key id, method, path and query as sent, and the Idempotency-Key.
pub fn scope(key_id: &str, method: &str, path_and_query: &str, idempotency_key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        key_id.as_bytes(),
        method.as_bytes(),
        path_and_query.as_bytes(),
        idempotency_key,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[derive(Debug, Clone)]
enum Entry {
    InFlight {
        since_ms: u64,
        claim: u64,
        body_hash: Option<[u8; 32]>,
    },
    Completed(Arc<Record>),
}

/// What a request with an Idempotency-Key gets.
#[derive(Debug)]
pub enum Decision {
    /// The scope is ours: proxy the request and record its response.
    Proceed(u64),
    /// A live record exists: judge it against this request's body hash.
    Judge(Existing),
}

#[derive(Debug, Clone)]
pub enum Existing {
    InFlight { claim: u64 },
    Completed(Arc<Record>),
}

#[derive(Debug)]
pub enum Verdict {
    Replay(Arc<Record>),
    InProgress,
    Mismatch,
}

pub struct Idempotency {
    config: IdempotencySection,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    /// Completed responses waiting for the write-behind.
    to_write: Mutex<Vec<([u8; 32], Arc<Record>)>>,
    next_claim: AtomicU64,
}

impl Idempotency {
    pub fn new(config: IdempotencySection) -> Self {
        Idempotency {
            config,
            entries: Mutex::new(HashMap::new()),
            to_write: Mutex::new(Vec::new()),
            next_claim: AtomicU64::new(1),
        }
    }

    pub fn max_response_bytes(&self) -> u64 {
        self.config.max_response_bytes
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live entry of a scope in memory, dropping a stale claim or an expired response.
    fn live(
        &self,
        entries: &mut HashMap<[u8; 32], Entry>,
        scope: &[u8; 32],
        now_ms: u64,
    ) -> Option<Existing> {
        let live = match entries.get(scope)? {
            Entry::InFlight {
                since_ms, claim, ..
            } => {
                let timeout_ms = self.config.inflight_timeout_s.saturating_mul(1000);
                (now_ms.saturating_sub(*since_ms) < timeout_ms)
                    .then_some(Existing::InFlight { claim: *claim })
            }
            Entry::Completed(record) => ((now_ms / 1000) as i64 <= record.expires_at)
                .then(|| Existing::Completed(record.clone())),
        };
        if live.is_none() {
            entries.remove(scope);
        }
        live
    }

    /// Claims the scope, or says what holds it. Reads sled (off the async threads) only when
    /// memory knows nothing of the scope.
    pub async fn begin(
        &self,
        store: &StoreSlot,
        scope: [u8; 32],
        now_ms: u64,
    ) -> Result<Decision, StoreError> {
        if let Some(existing) = self.live(&mut self.entries(), &scope, now_ms) {
            return Ok(Decision::Judge(existing));
        }
        let stored = store
            .read(move |s| s.idempotent_response(&scope))
            .await?
            .filter(|(expires, _)| *expires >= (now_ms / 1000) as i64)
            .and_then(|(expires, bytes)| Record::decode(&bytes, expires));
        let mut entries = self.entries();
        if let Some(existing) = self.live(&mut entries, &scope, now_ms) {
            return Ok(Decision::Judge(existing));
        }
        if let Some(record) = stored {
            return Ok(Decision::Judge(Existing::Completed(Arc::new(record))));
        }
        let claim = self.next_claim.fetch_add(1, Ordering::Relaxed);
        entries.insert(
            scope,
            Entry::InFlight {
                since_ms: now_ms,
                claim,
                body_hash: None,
            },
        );
        Ok(Decision::Proceed(claim))
    }

    /// The claimant's request body is complete: later requests can be judged against it.
    pub fn body_hashed(&self, scope: &[u8; 32], claim: u64, hash: [u8; 32]) {
        if let Some(Entry::InFlight {
            claim: c,
            body_hash,
            ..
        }) = self.entries().get_mut(scope)
        {
            if *c == claim {
                *body_hash = Some(hash);
            }
        }
    }

    /// Judges a request against the live record of its scope.
    pub async fn judge(
        &self,
        scope: &[u8; 32],
        existing: Existing,
        body_hash: [u8; 32],
    ) -> Verdict {
        match existing {
            Existing::Completed(record) if record.body_hash == body_hash => Verdict::Replay(record),
            Existing::Completed(_) => Verdict::Mismatch,
            Existing::InFlight { claim } => {
                let deadline = tokio::time::Instant::now() + HASH_WAIT;
                loop {
                    let seen = match self.entries().get(scope) {
                        Some(Entry::InFlight {
                            claim: c,
                            body_hash,
                            ..
                        }) if *c == claim => *body_hash,
                        // It completed (or was released) meanwhile: the retry will see that.
                        _ => return Verdict::InProgress,
                    };
                    match seen {
                        Some(h) if h == body_hash => return Verdict::InProgress,
                        Some(_) => return Verdict::Mismatch,
                        None if tokio::time::Instant::now() >= deadline => {
                            return Verdict::InProgress
                        }
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        }
    }

    /// The claimant's response is complete and storable: replay it from now on.
    pub fn complete(&self, scope: [u8; 32], claim: u64, record: Record) {
        let record = Arc::new(record);
        let mut entries = self.entries();
        let ours =
            matches!(entries.get(&scope), Some(Entry::InFlight { claim: c, .. }) if *c == claim);
        if !ours {
            return;
        }
        entries.insert(scope, Entry::Completed(record.clone()));
        drop(entries);
        self.to_write
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((scope, record));
    }

    /// The claimant's response is not stored (5xx, 408, 409, 429, cut short, too large…):
    /// the scope is free again so a retry goes upstream.
    pub fn release(&self, scope: &[u8; 32], claim: u64) {
        let mut entries = self.entries();
        if matches!(entries.get(scope), Some(Entry::InFlight { claim: c, .. }) if *c == claim) {
            entries.remove(scope);
        }
    }

    /// Writes completed responses to sled and flushes; once stored, memory forgets them.
    pub fn write_to(&self, store: &impl RecordSink) -> StoreResult<usize> {
        let batch = std::mem::take(&mut *self.to_write.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, (scope, record)) in batch.iter().enumerate() {
            if let Err(e) =
                store.put_idempotent_response(scope, record.expires_at, &record.encode())
            {
                let mut queue = self.to_write.lock().unwrap_or_else(|p| p.into_inner());
                queue.extend(batch.into_iter().skip(i));
                return Err(e);
            }
        }
        if !batch.is_empty() {
            store.flush()?;
        }
        let mut entries = self.entries();
        for (scope, record) in &batch {
            if matches!(entries.get(scope), Some(Entry::Completed(r)) if Arc::ptr_eq(r, record)) {
                entries.remove(scope);
            }
        }
        Ok(batch.len())
    }

    /// Drops stale claims and expired responses from memory and sled.
    pub fn sweep(&self, store: &Store, now_ms: u64) -> StoreResult<usize> {
        {
            let mut entries = self.entries();
            let scopes: Vec<[u8; 32]> = entries.keys().copied().collect();
            for scope in scopes {
                self.live(&mut entries, &scope, now_ms);
            }
        }
        store.sweep_idempotent_responses((now_ms / 1000) as i64)
    }

    pub fn ttl_s(&self) -> u64 {
        self.config.ttl_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idem() -> Idempotency {
        Idempotency::new(IdempotencySection {
            ttl_s: 60,
            inflight_timeout_s: 10,
            max_response_bytes: 1024,
        })
    }

    fn record(hash: u8) -> Record {
        Record {
            body_hash: [hash; 32],
            status: 200,
            headers: Vec::new(),
            body: bytes::Bytes::from_static(b"{}"),
            expires_at: i64::MAX,
        }
    }

    #[test]
    fn keys_and_scopes() {
        assert!(valid_key(b"abc-123_XYZ"));
        assert!(!valid_key(b""));
        assert!(!valid_key(b"has space"));
        assert!(!valid_key(&[b'a'; 256]));
        assert!(valid_key(&[b'a'; 255]));
        assert!(!valid_key("é".as_bytes()));
        assert_ne!(
            scope("k1", "POST", "/v1/x", b"a"),
            scope("k2", "POST", "/v1/x", b"a")
        );
        assert_ne!(
            scope("k", "POST", "/v1/x?a=1", b"a"),
            scope("k", "POST", "/v1/x", b"a")
        );
        assert_ne!(
            scope("k", "POST", "/v1/xa", b""),
            scope("k", "POST", "/v1/x", b"a")
        );
    }

    #[tokio::test]
    async fn claim_judge_complete_and_release() {
        let i = idem();
        let s = [1u8; 32];
        let now = 1_000_000;
        let claim = {
            let mut e = i.entries();
            assert!(i.live(&mut e, &s, now).is_none());
            drop(e);
            // Claim as `begin` does, without a store.
            i.entries().insert(
                s,
                Entry::InFlight {
                    since_ms: now,
                    claim: 7,
                    body_hash: None,
                },
            );
            7
        };
        i.body_hashed(&s, claim, [9; 32]);
        let existing = i.live(&mut i.entries(), &s, now).unwrap();
        assert!(matches!(
            i.judge(&s, existing.clone(), [9; 32]).await,
            Verdict::InProgress
        ));
        assert!(matches!(
            i.judge(&s, existing, [8; 32]).await,
            Verdict::Mismatch
        ));
        i.complete(s, claim, record(9));
        let existing = i.live(&mut i.entries(), &s, now).unwrap();
        assert!(matches!(
            i.judge(&s, existing.clone(), [9; 32]).await,
            Verdict::Replay(_)
        ));
        assert!(matches!(
            i.judge(&s, existing, [1; 32]).await,
            Verdict::Mismatch
        ));
        // A claim older than the in-flight timeout is dropped.
        let t = [2u8; 32];
        i.entries().insert(
            t,
            Entry::InFlight {
                since_ms: now,
                claim: 8,
                body_hash: None,
            },
        );
        assert!(i.live(&mut i.entries(), &t, now + 9_999).is_some());
        assert!(i.live(&mut i.entries(), &t, now + 10_000).is_none());
        // Releasing frees the scope; a stale claimant cannot release a newer claim.
        i.entries().insert(
            t,
            Entry::InFlight {
                since_ms: now,
                claim: 9,
                body_hash: None,
            },
        );
        i.release(&t, 8);
        assert!(i.live(&mut i.entries(), &t, now).is_some());
        i.release(&t, 9);
        assert!(i.live(&mut i.entries(), &t, now).is_none());
    }
}
