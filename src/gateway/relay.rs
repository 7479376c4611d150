//! The old process's last seconds in a zero-downtime upgrade.
//!
//! Once the old process has handed sled over (see `App::hand_off_store`), Pingora still lets it
//! accept connections for a few seconds (both processes hold the listening sockets until the
//! old one's close timeout), and its keep-alive connections still bring requests. It cannot
//! check a cold key or an Idempotency-Key without sled, so it relays such requests untouched to
//! the new process, over a Unix socket private to each process. The new process checks,
//! limits and meters them as its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use rand::distr::{Alphanumeric, SampleString};

pub struct Relay {
    /// This process's own relay socket.
    own: PathBuf,
    /// A file naming the relay socket of the newest process.
    pointer: PathBuf,
}

impl Relay {
    /// Sockets live next to the upgrade socket (the runtime directory under systemd).
    pub fn new(upgrade_sock: &str) -> Relay {
        let upgrade_sock = Path::new(upgrade_sock);
        let dir = upgrade_sock.parent().unwrap_or(Path::new("."));
        let token = Alphanumeric.sample_string(&mut rand::rng(), 12);
        Relay {
            own: dir.join(format!("tollgate-relay-{token}.sock")),
            pointer: upgrade_sock.with_extension("relay"),
        }
    }

    pub fn own_path(&self) -> &Path {
        &self.own
    }

    /// Tells a process that hands over to this one where to relay.
    pub fn announce(&self) -> std::io::Result<()> {
        let tmp = self.pointer.with_extension("relay.tmp");
        std::fs::write(&tmp, self.own.to_string_lossy().as_bytes())?;
        std::fs::rename(&tmp, &self.pointer)
    }

    /// The new process's relay socket, once it has announced it (waiting up to `limit`).
    pub async fn successor(&self, limit: Duration) -> Option<HttpPeer> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(text) = tokio::fs::read_to_string(&self.pointer).await {
                let path = PathBuf::from(text.trim());
                if path != self.own && tokio::fs::metadata(&path).await.is_ok() {
                    return HttpPeer::new_uds(&path.to_string_lossy(), false, String::new()).ok();
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Removes this process's socket file when it exits.
    pub fn remove_own(&self) {
        let _ = std::fs::remove_file(&self.own);
    }
}

/// A request refused with 503 because sled went to the new process while it was being admitted
/// (a key or Idempotency-Key lookup found the store gone): it can still be relayed, as long as
/// its body was not read here.
pub fn store_went_away(
    app: &crate::app::App,
    admission: &Result<super::admission::Admission, super::respond::ApiError>,
    body_consumed: bool,
) -> bool {
    matches!(admission, Err(e) if e.status == 503) && app.store.is_released() && !body_consumed
}
