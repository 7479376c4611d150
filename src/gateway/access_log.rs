//! One JSON line per request on stdout. Lines go through a bounded channel to a writer
//! thread started on first use (after Pingora's daemon fork), so a slow stdout never blocks a
//! request; when the channel is full the line is dropped and counted.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

const QUEUE: usize = 8192;

pub struct AccessLog {
    enabled: bool,
    sender: OnceLock<SyncSender<String>>,
    dropped: AtomicU64,
}

impl AccessLog {
    pub fn new(enabled: bool) -> Self {
        AccessLog {
            enabled,
            sender: OnceLock::new(),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn write(&self, line: String) {
        if !self.enabled {
            return;
        }
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = sync_channel::<String>(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || {
                    let stdout = std::io::stdout();
                    while let Ok(line) = rx.recv() {
                        let mut out = stdout.lock();
                        let _ = writeln!(out, "{line}");
                        // Drain what queued meanwhile before paying for a flush.
                        while let Ok(more) = rx.try_recv() {
                            let _ = writeln!(out, "{more}");
                        }
                        let _ = out.flush();
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start the access-log writer: {e}");
            }
            tx
        });
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sender.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
