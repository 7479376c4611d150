//! Rate limits and budgets (SPEC §3.6): sliding minute and hour windows, UTC-day budgets and a
//! cap on requests in flight, per key and per user.
//!
//! Counts are exact: every subject (a key, or a user across their keys) has its own counters,
//! so no key is ever refused because of another key's traffic (a shared sketch such as
//! `pingora-limits::Rate` over-counts on collisions). Check and count happen under one short
//! lock, so a burst of 2N concurrent requests against a limit of N admits exactly N. The
//! counters live in memory, in sharded maps; day counts are seeded from the usage kept in sled
//! when the process starts, so budgets survive restarts.

pub mod headers;
pub mod window;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::{LimitValues, LimitsSection};
use window::SlidingWindow;

const SHARDS: usize = 64;
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY_MS: u64 = 86_400_000;

/// The limits of the contract, named as in the configuration (and in metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitName {
    RequestsPerMinute,
    RequestsPerHour,
    RequestsPerDay,
    TokensPerMinute,
    TokensPerDay,
    ImagesPerDay,
    MaxConcurrent,
}

impl LimitName {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::RequestsPerMinute => "requests_per_minute",
            LimitName::RequestsPerHour => "requests_per_hour",
            LimitName::RequestsPerDay => "requests_per_day",
            LimitName::TokensPerMinute => "tokens_per_minute",
            LimitName::TokensPerDay => "tokens_per_day",
            LimitName::ImagesPerDay => "images_per_day",
            LimitName::MaxConcurrent => "max_concurrent",
        }
    }

    pub fn is_tokens(self) -> bool {
        matches!(self, LimitName::TokensPerMinute | LimitName::TokensPerDay)
    }
}

/// The limits that apply to one subject; 0 is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: u64,
    pub rph: u64,
    pub rpd: u64,
    pub tpm: u64,
    pub tpd: u64,
    pub images_per_day: u64,
    pub max_concurrent: u64,
}

impl Limits {
    /// A key's limits: the configuration defaults, overridden field by field by its own.
    pub fn for_key(defaults: &LimitsSection, own: Option<&LimitValues>) -> Limits {
        let own = own.cloned().unwrap_or_default();
        Limits {
            rpm: own
                .requests_per_minute
                .unwrap_or(defaults.requests_per_minute),
            rph: own.requests_per_hour.unwrap_or(defaults.requests_per_hour),
            rpd: own.requests_per_day.unwrap_or(defaults.requests_per_day),
            tpm: own.tokens_per_minute.unwrap_or(defaults.tokens_per_minute),
            tpd: own.tokens_per_day.unwrap_or(defaults.tokens_per_day),
            images_per_day: own.images_per_day.unwrap_or(defaults.images_per_day),
            max_concurrent: own.max_concurrent.unwrap_or(defaults.max_concurrent),
        }
    }

    /// A user's limits: only what was set on the user, across all their keys.
    pub fn for_user(own: Option<&LimitValues>) -> Limits {
        let own = own.cloned().unwrap_or_default();
        Limits {
            rpm: own.requests_per_minute.unwrap_or(0),
            rph: own.requests_per_hour.unwrap_or(0),
            rpd: own.requests_per_day.unwrap_or(0),
            tpm: own.tokens_per_minute.unwrap_or(0),
            tpd: own.tokens_per_day.unwrap_or(0),
            images_per_day: own.images_per_day.unwrap_or(0),
            max_concurrent: own.max_concurrent.unwrap_or(0),
        }
    }

    /// The set limits with their values, for `/account`.
    pub fn named(&self) -> Vec<(LimitName, u64)> {
        [
            (LimitName::RequestsPerMinute, self.rpm),
            (LimitName::RequestsPerHour, self.rph),
            (LimitName::RequestsPerDay, self.rpd),
            (LimitName::TokensPerMinute, self.tpm),
            (LimitName::TokensPerDay, self.tpd),
            (LimitName::ImagesPerDay, self.images_per_day),
            (LimitName::MaxConcurrent, self.max_concurrent),
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect()
    }
}

/// Whose limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Key,
    User,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A UTC-day budget is spent: retrying today will not help.
    Budget {
        limit: LimitName,
        scope: Scope,
        max: u64,
    },
    /// A sliding window is full; it has room again after `retry_after`.
    Window {
        limit: LimitName,
        scope: Scope,
        max: u64,
        retry_after: Duration,
    },
    /// Too many requests in flight.
    Concurrency { scope: Scope, max: u64 },
}

impl Refusal {
    pub fn limit(&self) -> LimitName {
        match self {
            Refusal::Budget { limit, .. } | Refusal::Window { limit, .. } => *limit,
            Refusal::Concurrency { .. } => LimitName::MaxConcurrent,
        }
    }
}

/// One limit's state as `x-ratelimit-*` headers and `/account` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: LimitName,
    pub max: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// The counters of one subject. The windows count whether or not a limit is set, so a limit
/// set at run time applies to the traffic already in its window (184 bytes a subject, and from
/// 32 bytes for each window with counts in it; see `window`).
#[derive(Debug)]
struct Counters {
    rpm: SlidingWindow,
    rph: SlidingWindow,
    tpm: SlidingWindow,
    /// Days since the epoch (UTC) that the day counts are for.
    day: u64,
    day_requests: u64,
    day_tokens: u64,
    day_images: u64,
    inflight: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rpm: SlidingWindow::new(MINUTE),
            rph: SlidingWindow::new(HOUR),
            tpm: SlidingWindow::new(MINUTE),
            day: 0,
            day_requests: 0,
            day_tokens: 0,
            day_images: 0,
            inflight: 0,
        }
    }
}

impl Counters {
    fn roll_day(&mut self, now_ms: u64) {
        let day = now_ms / DAY_MS;
        if day > self.day {
            self.day = day;
            self.day_requests = 0;
            self.day_tokens = 0;
            self.day_images = 0;
        }
    }

    /// The first limit that refuses a request now: budgets first (retrying cannot help),
    /// then windows, then concurrency.
    fn check(
        &mut self,
        limits: &Limits,
        scope: Scope,
        now_ms: u64,
        is_image: bool,
    ) -> Result<(), Refusal> {
        let budgets = [
            (LimitName::RequestsPerDay, limits.rpd, self.day_requests),
            (LimitName::TokensPerDay, limits.tpd, self.day_tokens),
            (
                LimitName::ImagesPerDay,
                if is_image { limits.images_per_day } else { 0 },
                self.day_images,
            ),
        ];
        for (limit, max, used) in budgets {
            if max > 0 && used >= max {
                return Err(Refusal::Budget { limit, scope, max });
            }
        }
        let windows = [
            (LimitName::RequestsPerMinute, limits.rpm, &mut self.rpm),
            (LimitName::RequestsPerHour, limits.rph, &mut self.rph),
            (LimitName::TokensPerMinute, limits.tpm, &mut self.tpm),
        ];
        for (limit, max, window) in windows {
            if max > 0 && window.total(now_ms) >= max {
                let retry_after = window.wait_until_below(now_ms, max);
                return Err(Refusal::Window {
                    limit,
                    scope,
                    max,
                    retry_after,
                });
            }
        }
        if limits.max_concurrent > 0 && self.inflight >= limits.max_concurrent {
            return Err(Refusal::Concurrency {
                scope,
                max: limits.max_concurrent,
            });
        }
        Ok(())
    }

    fn count_request(&mut self, now_ms: u64) {
        self.rpm.add(now_ms, 1);
        self.rph.add(now_ms, 1);
        self.day_requests += 1;
        self.inflight += 1;
    }

    fn uncount_request(&mut self, now_ms: u64, at_ms: u64) {
        self.rpm.remove(now_ms, at_ms, 1);
        self.rph.remove(now_ms, at_ms, 1);
        if self.day == at_ms / DAY_MS {
            self.day_requests = self.day_requests.saturating_sub(1);
        }
    }

    fn standings(&mut self, limits: &Limits, now_ms: u64) -> Vec<Standing> {
        let until_midnight = Duration::from_millis(DAY_MS - now_ms % DAY_MS);
        let mut out = Vec::new();
        let mut window = |limit, max: u64, w: &mut SlidingWindow| {
            if max == 0 {
                return;
            }
            let used = w.total(now_ms);
            let reset = w.next_release(now_ms);
            out.push(Standing {
                limit,
                max,
                remaining: max.saturating_sub(used),
                reset,
            });
        };
        window(LimitName::RequestsPerMinute, limits.rpm, &mut self.rpm);
        window(LimitName::RequestsPerHour, limits.rph, &mut self.rph);
        window(LimitName::TokensPerMinute, limits.tpm, &mut self.tpm);
        for (limit, max, used) in [
            (LimitName::RequestsPerDay, limits.rpd, self.day_requests),
            (LimitName::TokensPerDay, limits.tpd, self.day_tokens),
            (
                LimitName::ImagesPerDay,
                limits.images_per_day,
                self.day_images,
            ),
        ] {
            if max > 0 {
                out.push(Standing {
                    limit,
                    max,
                    remaining: max.saturating_sub(used),
                    reset: until_midnight,
                });
            }
        }
        if limits.max_concurrent > 0 {
            out.push(Standing {
                limit: LimitName::MaxConcurrent,
                max: limits.max_concurrent,
                remaining: limits.max_concurrent.saturating_sub(self.inflight),
                reset: Duration::ZERO,
            });
        }
        out
    }
}

/// A fast multiply-rotate hash (as in rustc's FxHash). The maps are keyed by gateway-made
/// random key ids and by user names that only the admin API or sign-in create, so the
/// flooding resistance of SipHash buys nothing here, and it was a tenth of the check's cost.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(SEED);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type CounterMap = HashMap<String, Counters, BuildHasherDefault<FxHasher>>;

#[derive(Default)]
struct Shard {
    keys: CounterMap,
    users: CounterMap,
}

/// What one request is checked against.
pub struct Subject<'a> {
    pub key_id: &'a str,
    pub user: &'a str,
    pub key_limits: Limits,
    pub user_limits: Limits,
}

pub struct Limiter {
    shards: Box<[Mutex<Shard>]>,
}

/// An admitted request. Dropping it ends the request's share of `max_concurrent`.
pub struct Ticket {
    limiter: Arc<Limiter>,
    key_id: String,
    user: String,
    admitted_ms: u64,
    counted: bool,
    /// One image counted at admission (see `Limiter::admit_reserving_image`).
    reserved_image: bool,
    /// The tightest request and token standings after admission, for response headers.
    pub standings: Vec<Standing>,
}

impl Ticket {
    /// Whether the request still counts (it was not refused after admission).
    pub fn counted(&self) -> bool {
        self.counted
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The image reserved at admission was not made (a cache hit after all, or a failure).
    pub fn refund_image(&mut self, now_ms: u64) {
        if std::mem::take(&mut self.reserved_image) {
            let day = self.admitted_ms / DAY_MS;
            self.limiter.with_both(&self.key_id, &self.user, |k, u| {
                for c in [k, u] {
                    c.roll_day(now_ms);
                    if c.day == day {
                        c.day_images = c.day_images.saturating_sub(1);
                    }
                }
            });
        }
    }

    /// Whether this request made the image reserved at admission.
    pub fn made_image(&self) -> bool {
        self.reserved_image
    }

    /// The request was refused after admission (its body broke a rule): it does not count.
    pub fn uncount(&mut self, now_ms: u64) {
        self.refund_image(now_ms);
        if std::mem::take(&mut self.counted) {
            let at = self.admitted_ms;
            self.limiter.with_both(&self.key_id, &self.user, |k, u| {
                k.uncount_request(now_ms, at);
                u.uncount_request(now_ms, at);
            });
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limiter.with_both(&self.key_id, &self.user, |k, u| {
            k.inflight = k.inflight.saturating_sub(1);
            u.inflight = u.inflight.saturating_sub(1);
        });
    }
}

fn shard_of(id: &str, salt: u8) -> usize {
    let mut h = FxHasher::default();
    salt.hash(&mut h);
    id.hash(&mut h);
    // The high bits are the best mixed.
    (h.finish() >> 40) as usize % SHARDS
}

/// The counters of `id`, allocating its name only the first time it is seen (the `entry`
/// API would allocate on every lookup).
fn counters<'a>(map: &'a mut CounterMap, id: &str) -> Option<&'a mut Counters> {
    if !map.contains_key(id) {
        map.insert(id.to_string(), Counters::default());
    }
    map.get_mut(id)
}

/// Runs `f` on two subjects' counters; both are always present (see `counters`), and were
/// one not, the request would be judged on fresh counters rather than fail.
fn run_on<T>(
    k: Option<&mut Counters>,
    u: Option<&mut Counters>,
    f: impl FnOnce(&mut Counters, &mut Counters) -> T,
) -> T {
    match (k, u) {
        (Some(k), Some(u)) => f(k, u),
        (k, u) => {
            let (mut fresh_k, mut fresh_u) = (Counters::default(), Counters::default());
            f(k.unwrap_or(&mut fresh_k), u.unwrap_or(&mut fresh_u))
        }
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard leaves plain counters behind, still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl Limiter {
    /// Runs `f` on the key's and the user's counters under their shard locks (taken in index
    /// order, so two requests never wait on each other in a cycle).
    fn with_both<T>(
        &self,
        key_id: &str,
        user: &str,
        f: impl FnOnce(&mut Counters, &mut Counters) -> T,
    ) -> T {
        let (ks, us) = (shard_of(key_id, 0), shard_of(user, 1));
        if ks == us {
            let mut shard = lock(&self.shards[ks]);
            let Shard { keys, users } = &mut *shard;
            return run_on(counters(keys, key_id), counters(users, user), f);
        }
        let (first, second) = (ks.min(us), ks.max(us));
        let mut a = lock(&self.shards[first]);
        let mut b = lock(&self.shards[second]);
        let (key_shard, user_shard) = if ks == first {
            (&mut *a, &mut *b)
        } else {
            (&mut *b, &mut *a)
        };
        run_on(
            counters(&mut key_shard.keys, key_id),
            counters(&mut user_shard.users, user),
            f,
        )
    }

    /// Checks every limit that applies and, if none refuses, counts the request.
    pub fn admit(
        self: &Arc<Self>,
        subject: &Subject<'_>,
        now_ms: u64,
        is_image: bool,
    ) -> Result<Ticket, Refusal> {
        self.admit_inner(subject, now_ms, is_image, false)
    }

    /// Like `admit` for a request known to make exactly one image (a `/prompt` miss): the image
    /// is counted under the same lock as the check, so concurrent misses cannot overrun
    /// `images_per_day`. [`Ticket::refund_image`] gives it back if no image is made after all.
    pub fn admit_reserving_image(
        self: &Arc<Self>,
        subject: &Subject<'_>,
        now_ms: u64,
    ) -> Result<Ticket, Refusal> {
        self.admit_inner(subject, now_ms, true, true)
    }

    fn admit_inner(
        self: &Arc<Self>,
        subject: &Subject<'_>,
        now_ms: u64,
        is_image: bool,
        reserve_image: bool,
    ) -> Result<Ticket, Refusal> {
        let standings = self.with_both(subject.key_id, subject.user, |k, u| {
            k.roll_day(now_ms);
            u.roll_day(now_ms);
            k.check(&subject.key_limits, Scope::Key, now_ms, is_image)?;
            u.check(&subject.user_limits, Scope::User, now_ms, is_image)?;
            k.count_request(now_ms);
            u.count_request(now_ms);
            if reserve_image {
                k.day_images += 1;
                u.day_images += 1;
            }
            let mut all = k.standings(&subject.key_limits, now_ms);
            all.extend(u.standings(&subject.user_limits, now_ms));
            Ok(all)
        })?;
        Ok(Ticket {
            limiter: self.clone(),
            key_id: subject.key_id.to_string(),
            user: subject.user.to_string(),
            admitted_ms: now_ms,
            counted: true,
            reserved_image: reserve_image,
            standings,
        })
    }

    /// Adds what a finished request used to the token windows and day budgets.
    pub fn consume(&self, key_id: &str, user: &str, tokens: u64, images: u64, now_ms: u64) {
        self.with_both(key_id, user, |k, u| {
            for c in [k, u] {
                c.roll_day(now_ms);
                c.tpm.add(now_ms, tokens);
                c.day_tokens += tokens;
                c.day_images += images;
            }
        });
    }

    /// Day counts from before a restart: today's usage as kept in sled.
    pub fn seed_day(
        &self,
        key_id: &str,
        user: &str,
        requests: u64,
        tokens: u64,
        images: u64,
        now_ms: u64,
    ) {
        self.with_both(key_id, user, |k, u| {
            for c in [k, u] {
                c.roll_day(now_ms);
                c.day_requests += requests;
                c.day_tokens += tokens;
                c.day_images += images;
            }
        });
    }

    /// The standing of every limit of a subject, without counting anything (for `/account`).
    pub fn standings(&self, subject: &Subject<'_>, now_ms: u64) -> Vec<(Scope, Standing)> {
        self.with_both(subject.key_id, subject.user, |k, u| {
            k.roll_day(now_ms);
            u.roll_day(now_ms);
            let mut all: Vec<(Scope, Standing)> = k
                .standings(&subject.key_limits, now_ms)
                .into_iter()
                .map(|s| (Scope::Key, s))
                .collect();
            all.extend(
                u.standings(&subject.user_limits, now_ms)
                    .into_iter()
                    .map(|s| (Scope::User, s)),
            );
            all
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_000_000_000;

    fn subject(key: &str, rpm: u64) -> Subject<'_> {
        Subject {
            key_id: key,
            user: "u",
            key_limits: Limits {
                rpm,
                ..Limits::default()
            },
            user_limits: Limits::default(),
        }
    }

    #[test]
    fn admits_exactly_the_limit_under_concurrency() {
        let limiter = Arc::new(Limiter::default());
        let admitted = std::sync::atomic::AtomicU64::new(0);
        let tickets = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        if let Ok(t) = limiter.admit(&subject("k", 50), T0, false) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tickets.lock().unwrap().push(t);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 50);
    }

    #[test]
    fn keys_do_not_share_counts() {
        let limiter = Arc::new(Limiter::default());
        for i in 0..10_000 {
            let key = format!("key_{i}");
            let t = limiter.admit(&subject(&key, 1), T0, false);
            assert!(t.is_ok(), "{key} was refused");
        }
    }

    #[test]
    fn window_refusal_reports_when_to_retry() {
        let limiter = Arc::new(Limiter::default());
        let _a = limiter.admit(&subject("k", 1), T0, false).unwrap();
        match limiter.admit(&subject("k", 1), T0 + 1_500, false) {
            Err(Refusal::Window {
                limit, retry_after, ..
            }) => {
                assert_eq!(limit, LimitName::RequestsPerMinute);
                assert_eq!(retry_after, Duration::from_millis(60_000 - 1_500));
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(limiter.admit(&subject("k", 1), T0 + 60_000, false).is_ok());
    }

    #[test]
    fn budgets_concurrency_and_user_limits() {
        let limiter = Arc::new(Limiter::default());
        let budget = Subject {
            key_id: "k",
            user: "u",
            key_limits: Limits {
                rpd: 2,
                max_concurrent: 1,
                ..Limits::default()
            },
            user_limits: Limits::default(),
        };
        let first = limiter.admit(&budget, T0, false).unwrap();
        assert_eq!(
            limiter.admit(&budget, T0, false).err(),
            Some(Refusal::Concurrency {
                scope: Scope::Key,
                max: 1
            })
        );
        drop(first);
        let _second = limiter.admit(&budget, T0, false).unwrap();
        assert!(matches!(
            limiter.admit(&budget, T0, false),
            Err(Refusal::Budget {
                limit: LimitName::RequestsPerDay,
                ..
            })
        ));
        // The next UTC day starts afresh.
        let tomorrow = (T0 / DAY_MS + 1) * DAY_MS;
        drop(_second);
        assert!(limiter.admit(&budget, tomorrow, false).is_ok());

        let user_capped = |key: &'static str| Subject {
            key_id: key,
            user: "shared",
            key_limits: Limits::default(),
            user_limits: Limits {
                rpm: 2,
                ..Limits::default()
            },
        };
        let _a = limiter.admit(&user_capped("k1"), T0, false).unwrap();
        let _b = limiter.admit(&user_capped("k2"), T0, false).unwrap();
        assert!(matches!(
            limiter.admit(&user_capped("k3"), T0, false),
            Err(Refusal::Window {
                scope: Scope::User,
                ..
            })
        ));
    }

    #[test]
    fn tokens_refuse_once_at_or_over_and_uncount_takes_a_request_back() {
        let limiter = Arc::new(Limiter::default());
        let s = Subject {
            key_id: "k",
            user: "u",
            key_limits: Limits {
                tpm: 100,
                rpm: 1,
                ..Limits::default()
            },
            user_limits: Limits::default(),
        };
        let mut t = limiter.admit(&s, T0, false).unwrap();
        t.uncount(T0);
        drop(t);
        let t = limiter
            .admit(&s, T0, false)
            .expect("the uncounted request left room");
        drop(t);
        limiter.consume("k", "u", 100, 0, T0 + 10);
        let s2 = Subject {
            key_limits: Limits {
                tpm: 100,
                ..Limits::default()
            },
            ..s
        };
        assert!(matches!(
            limiter.admit(&s2, T0 + 20, false),
            Err(Refusal::Window {
                limit: LimitName::TokensPerMinute,
                ..
            })
        ));
    }

    #[test]
    fn image_budget_only_applies_to_image_requests() {
        let limiter = Arc::new(Limiter::default());
        let s = Subject {
            key_id: "k",
            user: "u",
            key_limits: Limits {
                images_per_day: 1,
                ..Limits::default()
            },
            user_limits: Limits::default(),
        };
        limiter.seed_day("k", "u", 0, 0, 1, T0);
        assert!(limiter.admit(&s, T0, false).is_ok());
        assert!(matches!(
            limiter.admit(&s, T0, true),
            Err(Refusal::Budget {
                limit: LimitName::ImagesPerDay,
                ..
            })
        ));
    }

    #[test]
    fn a_reserved_image_counts_at_once_and_a_refund_gives_it_back() {
        let limiter = Arc::new(Limiter::default());
        let s = Subject {
            key_id: "k",
            user: "u",
            key_limits: Limits {
                images_per_day: 2,
                ..Limits::default()
            },
            user_limits: Limits::default(),
        };
        let first = limiter.admit_reserving_image(&s, T0).unwrap();
        let mut second = limiter.admit_reserving_image(&s, T0).unwrap();
        assert!(first.made_image() && second.made_image());
        // Both reservations are counted before either request finishes.
        assert!(matches!(
            limiter.admit_reserving_image(&s, T0),
            Err(Refusal::Budget {
                limit: LimitName::ImagesPerDay,
                ..
            })
        ));
        second.refund_image(T0);
        assert!(!second.made_image());
        second.refund_image(T0); // only once
        let third = limiter.admit_reserving_image(&s, T0).unwrap();
        assert!(third.made_image());
        assert!(limiter.admit_reserving_image(&s, T0).is_err());
    }
}
