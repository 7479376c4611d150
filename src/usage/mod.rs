//! Usage metering: what each admitted request used (SPEC §3.6), added up in memory per key
//! and hour and written to sled behind the requests, in batches — never a sled write on the
//! request path. A crash loses at most the last batch (one second); a graceful stop loses
//! nothing, since the last batch is written after the listeners have drained.

pub mod parse;
pub mod report;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::spool::RecordSink;
use crate::store::{StoreResult, UsageRow};

/// How often pending usage is written.
pub const WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub fn hour_of(unix_s: i64) -> i64 {
    unix_s - unix_s.rem_euclid(3600)
}

#[derive(Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<(i64, String), UsageRow>>,
}

impl UsageRecorder {
    /// Adds a finished request's usage to the pending batch.
    pub fn add(&self, unix_s: i64, key_id: &str, delta: UsageRow) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .entry((hour_of(unix_s), key_id.to_string()))
            .or_default()
            .add_from(delta);
    }

    /// Writes the pending batch to `store` and makes it durable. On failure the batch is put
    /// back to be tried again.
    pub fn write_to(&self, store: &impl RecordSink) -> StoreResult<usize> {
        let batch: Vec<_> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let mut written = 0;
        let mut result = Ok(());
        for ((hour, key_id), row) in &batch {
            if let Err(e) = store.add_usage(*hour, key_id, row) {
                result = Err(e);
                break;
            }
            written += 1;
        }
        let result = result.and_then(|_| store.flush());
        if let Err(e) = result {
            // Nothing written is lost; rows written twice would be: put back only the rest.
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (k, row) in batch.into_iter().skip(written) {
                pending.entry(k).or_default().add_from(row);
            }
            return Err(e);
        }
        Ok(written)
    }

    /// Rows not written yet, for queries that must see everything.
    pub fn pending(&self) -> Vec<(i64, String, UsageRow)> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .iter()
            .map(|((h, k), row)| (*h, k.clone(), row.clone()))
            .collect()
    }
}

trait AddFrom {
    fn add_from(&mut self, other: UsageRow);
}

impl AddFrom for UsageRow {
    fn add_from(&mut self, other: UsageRow) {
        if self.user.is_empty() {
            self.user = other.user.clone();
        }
        self.add(&other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_one_key_and_hour_are_added_up() {
        let r = UsageRecorder::default();
        let one = |tokens| UsageRow {
            user: "alice".into(),
            requests: 1,
            prompt_tokens: tokens,
            ..UsageRow::default()
        };
        r.add(7_200, "key_a", one(3));
        r.add(7_201 + 3_000, "key_a", one(4));
        r.add(10_800, "key_a", one(5));
        let mut rows = r.pending();
        rows.sort_by_key(|(h, _, _)| *h);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].0, rows[0].2.requests, rows[0].2.prompt_tokens),
            (7_200, 2, 7)
        );
        assert_eq!(rows[0].2.user, "alice");
        assert_eq!((rows[1].0, rows[1].2.requests), (10_800, 1));
    }
}
