//! A sliding window of counts: 60 slots over its span (one second each for a minute window,
//! one minute each for an hour). A count leaves the window one span after the slot it was
//! added in, so the window slides in steps of one slot — exact at that granularity, with a
//! fixed 60 counters of memory however busy the key.

use std::time::Duration;

const SLOTS: usize = 60;

#[derive(Debug, Clone)]
pub struct SlidingWindow {
    slot_ms: u64,
    counts: [u32; SLOTS],
    /// Absolute index (`time / slot_ms`) of the newest slot in `counts`.
    head: u64,
    total: u64,
}

impl SlidingWindow {
    pub fn new(span: Duration) -> Self {
        SlidingWindow {
            slot_ms: (span.as_millis() as u64 / SLOTS as u64).max(1),
            counts: [0; SLOTS],
            head: 0,
            total: 0,
        }
    }

    pub fn span_ms(&self) -> u64 {
        self.slot_ms * SLOTS as u64
    }

    /// Drops the slots that have left the window by `now_ms`. A clock that steps back leaves
    /// the window as it is.
    fn advance(&mut self, now_ms: u64) {
        let slot = now_ms / self.slot_ms;
        if slot <= self.head {
            return;
        }
        let steps = slot - self.head;
        if steps >= SLOTS as u64 {
            self.counts = [0; SLOTS];
            self.total = 0;
        } else {
            for s in self.head + 1..=slot {
                let i = (s % SLOTS as u64) as usize;
                self.total -= u64::from(self.counts[i]);
                self.counts[i] = 0;
            }
        }
        self.head = slot;
    }

    pub fn total(&mut self, now_ms: u64) -> u64 {
        self.advance(now_ms);
        self.total
    }

    pub fn add(&mut self, now_ms: u64, n: u64) {
        self.advance(now_ms);
        let i = ((now_ms / self.slot_ms).min(self.head) % SLOTS as u64) as usize;
        let n = n.min(u64::from(u32::MAX - self.counts[i]));
        self.counts[i] += n as u32;
        self.total += n;
    }

    /// Takes back `n` added at `at_ms`, if that slot is still in the window.
    pub fn remove(&mut self, now_ms: u64, at_ms: u64, n: u64) {
        self.advance(now_ms);
        let slot = at_ms / self.slot_ms;
        if slot > self.head || self.head - slot >= SLOTS as u64 {
            return;
        }
        let i = (slot % SLOTS as u64) as usize;
        let n = n.min(u64::from(self.counts[i]));
        self.counts[i] -= n as u32;
        self.total -= n;
    }

    /// How long until the total is below `limit` again (zero when it already is): the time
    /// until enough of the oldest slots have left the window.
    pub fn wait_until_below(&mut self, now_ms: u64, limit: u64) -> Duration {
        self.advance(now_ms);
        if self.total < limit {
            return Duration::ZERO;
        }
        let mut remaining = self.total;
        // Walk the ring from the oldest slot (the one after the head) to the newest; after
        // `advance`, the slot at age `a` holds the counts of slot `head - a`.
        let mut index = (self.head % SLOTS as u64) as usize;
        for age in (0..SLOTS as u64).rev() {
            index = if index + 1 == SLOTS { 0 } else { index + 1 };
            let count = u64::from(self.counts[index]);
            if count == 0 {
                continue;
            }
            remaining -= count;
            if remaining < limit {
                let leaves_at = (self.head - age + SLOTS as u64) * self.slot_ms;
                return Duration::from_millis(leaves_at.saturating_sub(now_ms));
            }
        }
        Duration::from_millis(self.span_ms())
    }

    /// How long until the window's count next drops (the oldest non-empty slot leaves).
    pub fn next_release(&mut self, now_ms: u64) -> Duration {
        if self.total(now_ms) == 0 {
            return Duration::ZERO;
        }
        self.wait_until_below(now_ms, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn counts_slide_out_one_span_after_their_slot() {
        let mut w = SlidingWindow::new(MINUTE);
        let t0 = 1_000_000_000;
        w.add(t0, 3);
        w.add(t0 + 30_000, 2);
        assert_eq!(w.total(t0 + 59_999), 5);
        assert_eq!(
            w.total(t0 + 60_000),
            2,
            "the first slot left after a minute"
        );
        assert_eq!(w.total(t0 + 89_999), 2);
        assert_eq!(w.total(t0 + 90_000), 0);
    }

    #[test]
    fn waits_are_measured_to_the_slot_leaving() {
        let mut w = SlidingWindow::new(MINUTE);
        let t0 = 2_000_000_000;
        w.add(t0, 1);
        w.add(t0 + 10_000, 1);
        w.add(t0 + 20_000, 1);
        assert_eq!(w.wait_until_below(t0 + 25_000, 4), Duration::ZERO);
        assert_eq!(
            w.wait_until_below(t0 + 25_000, 3),
            Duration::from_millis(35_000)
        );
        assert_eq!(
            w.wait_until_below(t0 + 25_000, 2),
            Duration::from_millis(45_000)
        );
        assert_eq!(
            w.wait_until_below(t0 + 25_000, 1),
            Duration::from_millis(55_000)
        );
        assert_eq!(w.next_release(t0 + 25_000), Duration::from_millis(35_000));
        assert_eq!(w.next_release(t0 + 95_000), Duration::ZERO);
    }

    #[test]
    fn removal_only_touches_slots_still_in_the_window() {
        let mut w = SlidingWindow::new(MINUTE);
        let t0 = 3_000_000_000;
        w.add(t0, 2);
        w.remove(t0 + 1_000, t0, 1);
        assert_eq!(w.total(t0 + 1_000), 1);
        w.remove(t0 + 61_000, t0, 1);
        assert_eq!(w.total(t0 + 61_000), 0);
        w.remove(t0 + 61_000, t0, 5);
        assert_eq!(w.total(t0 + 61_000), 0);
    }

    #[test]
    fn hour_window_and_backward_clock() {
        let mut w = SlidingWindow::new(Duration::from_secs(3600));
        let t0 = 4_000_000_000;
        w.add(t0, 1);
        w.add(t0 - 5_000, 1);
        assert_eq!(
            w.total(t0 - 10_000),
            2,
            "a clock stepping back keeps the counts"
        );
        assert_eq!(w.total(t0 + 3_599_999 - (t0 % 60_000)), 2);
        assert_eq!(w.total(t0 + 3_600_000), 0);
    }

    #[test]
    fn long_idle_gap_clears_everything() {
        let mut w = SlidingWindow::new(MINUTE);
        w.add(5_000_000, 7);
        assert_eq!(w.total(5_000_000 + 10 * 60_000), 0);
        w.add(5_000_000 + 10 * 60_000, 1);
        assert_eq!(w.total(5_000_000 + 10 * 60_000), 1);
    }
}
