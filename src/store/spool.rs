//! The spool: where a process that handed sled over to its successor (a zero-downtime upgrade)
//! writes the usage and idempotent responses of the requests it is still draining, and where
//! the successor picks them up. Files are JSON lines, written to a temporary name, synced and
//! renamed, so the reader only ever sees complete files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, StoreResult, UsageRow};
use crate::auth::hex;

/// What the write-behind writes to: sled, or the spool once sled is gone.
pub trait RecordSink {
    fn add_usage(&self, hour: i64, key_id: &str, delta: &UsageRow) -> StoreResult<()>;
    fn put_idempotent_response(
        &self,
        scope: &[u8; 32],
        expires_at: i64,
        record: &[u8],
    ) -> StoreResult<()>;
    /// Makes everything written so far durable.
    fn flush(&self) -> StoreResult<()>;
}

impl RecordSink for Store {
    fn add_usage(&self, hour: i64, key_id: &str, delta: &UsageRow) -> StoreResult<()> {
        Store::add_usage(self, hour, key_id, delta)
    }

    fn put_idempotent_response(
        &self,
        scope: &[u8; 32],
        expires_at: i64,
        record: &[u8],
    ) -> StoreResult<()> {
        Store::put_idempotent_response(self, scope, expires_at, record)
    }

    fn flush(&self) -> StoreResult<()> {
        Store::flush(self)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Usage {
        hour: i64,
        key_id: String,
        row: UsageRow,
    },
    Idempotency {
        scope: String,
        expires_at: i64,
        /// Base64 of the encoded record.
        record: String,
    },
}

/// The spool directory below `storage.path`.
pub fn dir(storage: &Path) -> PathBuf {
    storage.join("spool")
}

/// Writes spool files; each `flush` with something to write makes one file.
pub struct SpoolWriter {
    dir: PathBuf,
    lines: Mutex<Vec<String>>,
    files: AtomicU64,
}

impl SpoolWriter {
    pub fn new(dir: PathBuf) -> SpoolWriter {
        SpoolWriter {
            dir,
            lines: Mutex::new(Vec::new()),
            files: AtomicU64::new(0),
        }
    }

    fn push(&self, line: &Line) -> StoreResult<()> {
        let text = serde_json::to_string(line)?;
        self.lines
            .lock()
            .map_err(|_| StoreError("spool lock poisoned".into()))?
            .push(text);
        Ok(())
    }
}

impl RecordSink for SpoolWriter {
    fn add_usage(&self, hour: i64, key_id: &str, delta: &UsageRow) -> StoreResult<()> {
        self.push(&Line::Usage {
            hour,
            key_id: key_id.to_string(),
            row: delta.clone(),
        })
    }

    fn put_idempotent_response(
        &self,
        scope: &[u8; 32],
        expires_at: i64,
        record: &[u8],
    ) -> StoreResult<()> {
        self.push(&Line::Idempotency {
            scope: hex(scope),
            expires_at,
            record: base64::engine::general_purpose::STANDARD.encode(record),
        })
    }

    fn flush(&self) -> StoreResult<()> {
        let lines = std::mem::take(
            &mut *self
                .lines
                .lock()
                .map_err(|_| StoreError("spool lock poisoned".into()))?,
        );
        if lines.is_empty() {
            return Ok(());
        }
        let io = |e: std::io::Error| StoreError(format!("spool {}: {e}", self.dir.display()));
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            crate::time::now_unix_ms(),
            self.files.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        for line in &lines {
            writeln!(file, "{line}").map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, self.dir.join(format!("{name}.jsonl"))).map_err(io)?;
        Ok(())
    }
}

/// Applies every complete spool file to `store` and deletes it; returns the usage applied (for
/// the day budgets). A file that cannot be parsed is renamed `*.bad` and left for a human.
pub fn import(store: &Store, dir: &Path) -> StoreResult<Vec<(i64, String, UsageRow)>> {
    let mut applied = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(applied);
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| StoreError(format!("spool {}: {e}", path.display())))?;
        let lines: Result<Vec<Line>, _> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str::<Line>)
            .collect();
        let Ok(lines) = lines else {
            log::error!("spool file {} is unreadable; left as .bad", path.display());
            let _ = std::fs::rename(&path, path.with_extension("bad"));
            continue;
        };
        let mut usage = Vec::new();
        for line in lines {
            match line {
                Line::Usage { hour, key_id, row } => {
                    store.add_usage(hour, &key_id, &row)?;
                    usage.push((hour, key_id, row));
                }
                Line::Idempotency {
                    scope,
                    expires_at,
                    record,
                } => {
                    let (Some(scope), Ok(record)) = (
                        unhex32(&scope),
                        base64::engine::general_purpose::STANDARD.decode(record),
                    ) else {
                        continue;
                    };
                    store.put_idempotent_response(&scope, expires_at, &record)?;
                }
            }
        }
        // Durable before the file goes: a crash in between would count it twice, never lose it.
        store.flush()?;
        std::fs::remove_file(&path)
            .map_err(|e| StoreError(format!("spool {}: {e}", path.display())))?;
        log::info!(
            "imported {} usage rows from spool {}",
            usage.len(),
            path.display()
        );
        applied.extend(usage);
    }
    Ok(applied)
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_records_reach_the_store_once() {
        let base = std::env::temp_dir().join(format!(
            "tollgate-spool-{}-{}",
            std::process::id(),
            crate::time::now_unix_ms()
        ));
        let spool = dir(&base);
        let writer = SpoolWriter::new(spool.clone());
        let row = UsageRow {
            user: "alice".into(),
            requests: 2,
            prompt_tokens: 5,
            ..UsageRow::default()
        };
        writer.add_usage(3600, "k1", &row).unwrap();
        writer
            .put_idempotent_response(&[7u8; 32], 99, b"record")
            .unwrap();
        writer.flush().unwrap();
        writer.flush().unwrap(); // nothing new: no second file
        writer.add_usage(3600, "k1", &row).unwrap();
        writer.flush().unwrap();
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 2);

        let store = Store::open(&base, 8, std::time::Duration::ZERO).unwrap();
        let applied = import(&store, &spool).unwrap();
        assert_eq!(applied.len(), 2);
        let rows = store.usage_between(0, 7200).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].2.requests, rows[0].2.prompt_tokens), (4, 10));
        assert_eq!(
            store.idempotent_response(&[7u8; 32]).unwrap(),
            Some((99, b"record".to_vec()))
        );
        assert!(import(&store, &spool).unwrap().is_empty(), "files are gone");
        let _ = std::fs::remove_dir_all(&base);
    }
}
