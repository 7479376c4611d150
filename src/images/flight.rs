//! Single flight: concurrent requests for the same image share one piece of work.
//!
//! The work runs in its own task, so the request that started it can hang up without
//! cancelling it for the others. Different keys never wait on each other.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

type Slot<T> = watch::Receiver<Option<T>>;

pub struct Flights<T> {
    running: Arc<Mutex<HashMap<String, Slot<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            running: Arc::default(),
        }
    }
}

/// What a caller got: the result, and whether it joined work someone else had started.
#[derive(Debug)]
pub struct Landed<T> {
    pub value: T,
    pub joined: bool,
}

/// Takes a flight off the map when its task ends, normally or by panic, so a key is never left
/// pointing at a flight that will not land.
struct Leave<T> {
    running: Arc<Mutex<HashMap<String, Slot<T>>>>,
    key: String,
}

impl<T> Drop for Leave<T> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&self.key);
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// The result of `work` for `key`, started now unless a flight for `key` is already under
    /// way. `abandoned` is the result when the work's task died without one (it panicked).
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F, abandoned: T) -> Landed<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (mut slot, joined) = {
            let Ok(mut running) = self.running.lock() else {
                return Landed {
                    value: abandoned,
                    joined: false,
                };
            };
            match running.get(key) {
                Some(slot) => (slot.clone(), true),
                None => {
                    let (tx, rx) = watch::channel(None);
                    running.insert(key.to_string(), rx.clone());
                    let running = self.running.clone();
                    let key = key.to_string();
                    let work = work();
                    tokio::spawn(async move {
                        let leave = Leave { running, key };
                        let value = work.await;
                        // Leave the map first: a request arriving after this finds the result
                        // in the store instead of a finished flight.
                        drop(leave);
                        let _ = tx.send(Some(value));
                    });
                    (rx, false)
                }
            }
        };
        let value = match slot.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or(abandoned),
            Err(_) => abandoned,
        };
        Landed { value, joined }
    }

    /// Flights under way (for tests and diagnostics).
    pub fn in_flight(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_different_keys_do_not_wait() {
        let flights: Arc<Flights<u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = watch::channel(false);
        let mut callers = Vec::new();
        for _ in 0..20 {
            let flights = flights.clone();
            let runs = runs.clone();
            let mut release = release_rx.clone();
            callers.push(tokio::spawn(async move {
                flights
                    .run(
                        "a",
                        move || async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            let _ = release.wait_for(|r| *r).await;
                            7
                        },
                        0,
                    )
                    .await
            }));
        }
        // While "a" is held, "b" completes on its own.
        let b = flights.run("b", || async { 9 }, 0).await;
        assert_eq!((b.value, b.joined), (9, false));
        while flights.in_flight() != 1 {
            tokio::task::yield_now().await;
        }
        release_tx.send(true).unwrap();
        let mut joined = 0;
        for c in callers {
            let landed = c.await.unwrap();
            assert_eq!(landed.value, 7);
            joined += landed.joined as usize;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 19);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_cancel_the_work() {
        let flights: Arc<Flights<u32>> = Arc::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = watch::channel(false);
        let first = {
            let flights = flights.clone();
            let finished = finished.clone();
            let mut release = release_rx.clone();
            tokio::spawn(async move {
                flights
                    .run(
                        "k",
                        move || async move {
                            let _ = release.wait_for(|r| *r).await;
                            finished.fetch_add(1, Ordering::SeqCst);
                            5
                        },
                        0,
                    )
                    .await
            })
        };
        while flights.in_flight() != 1 {
            tokio::task::yield_now().await;
        }
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(
            flights.in_flight(),
            1,
            "the work goes on without its caller"
        );
        release_tx.send(true).unwrap();
        while flights.in_flight() != 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_run_gives_the_abandoned_value() {
        let flights: Flights<u32> = Flights::default();
        let landed = flights.run("p", || async { panic!("boom") }, 3).await;
        assert_eq!(landed.value, 3);
        assert_eq!(
            flights.in_flight(),
            0,
            "a panicked run leaves no entry behind"
        );
        let again = flights.run("p", || async { 4 }, 3).await;
        assert_eq!(again.value, 4);
    }
}
