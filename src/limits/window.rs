//! A sliding window of counts in 60 slots over its span (one second each for a minute window,
//! one minute each for an hour). A count leaves the window one span after the slot it was
//! added in, so the window slides in steps of one slot: exact at that granularity.
//!
//! Only slots that hold a count are kept. The gateway keeps three windows for every key and
//! every user it has seen, and most of them are nearly empty: a dense ring of 60 counters per
//! window cost about 800 bytes a subject (160 MB for 100,000 active keys and their users),
//! where a key with a request or two in its windows now costs about a quarter of that.

use std::time::Duration;

const SLOTS: u64 = 60;

#[derive(Debug, Clone)]
pub struct SlidingWindow {
    slot_ms: u64,
    /// Absolute index (`time / slot_ms`) of the newest slot the window has reached.
    head: u64,
    total: u64,
    /// The slots still in the window that hold a count, oldest first: the absolute slot index
    /// in 32 bits (compared by age from `head`, which wraps safely since ages stay below 60)
    /// and its count.
    slots: Vec<(u32, u32)>,
}

impl SlidingWindow {
    pub fn new(span: Duration) -> Self {
        SlidingWindow {
            slot_ms: (span.as_millis() as u64 / SLOTS).max(1),
            head: 0,
            total: 0,
            slots: Vec::new(),
        }
    }

    pub fn span_ms(&self) -> u64 {
        self.slot_ms * SLOTS
    }

    /// How many slots before the head `slot` is.
    fn age(&self, slot: u32) -> u64 {
        u64::from((self.head as u32).wrapping_sub(slot))
    }

    /// Drops the slots that have left the window by `now_ms`. A clock that steps back leaves
    /// the window as it is.
    fn advance(&mut self, now_ms: u64) {
        let slot = now_ms / self.slot_ms;
        if slot <= self.head {
            return;
        }
        self.head = slot;
        let expired = self
            .slots
            .iter()
            .take_while(|(s, _)| self.age(*s) >= SLOTS)
            .count();
        if expired == 0 {
            return;
        }
        for (_, count) in self.slots.drain(..expired) {
            self.total -= u64::from(count);
        }
        if self.slots.is_empty() {
            // An idle subject gives back what a busy spell made the list grow to.
            self.slots = Vec::new();
        }
    }

    pub fn total(&mut self, now_ms: u64) -> u64 {
        self.advance(now_ms);
        self.total
    }

    pub fn add(&mut self, now_ms: u64, n: u64) {
        self.advance(now_ms);
        // After a clock step back the count goes to the slot of its own time, or the oldest
        // slot still in the window when its time has already left it.
        let age = (self.head - (now_ms / self.slot_ms).min(self.head)).min(SLOTS - 1);
        let slot = self.head.wrapping_sub(age) as u32;
        // Oldest first, so the slot is found (or its place is) from the newest end.
        let at = self
            .slots
            .iter()
            .rposition(|(s, _)| self.age(*s) >= age)
            .map_or(0, |i| i + 1);
        let index = match at.checked_sub(1) {
            Some(i) if self.slots[i].0 == slot => i,
            _ => {
                self.slots.insert(at, (slot, 0));
                at
            }
        };
        let count = &mut self.slots[index].1;
        let n = n.min(u64::from(u32::MAX - *count));
        *count += n as u32;
        self.total += n;
    }

    /// Takes back `n` added at `at_ms`, if that slot is still in the window.
    pub fn remove(&mut self, now_ms: u64, at_ms: u64, n: u64) {
        self.advance(now_ms);
        let slot = at_ms / self.slot_ms;
        if slot > self.head || self.head - slot >= SLOTS {
            return;
        }
        let Some(index) = self.slots.iter().position(|(s, _)| *s == slot as u32) else {
            return;
        };
        let count = &mut self.slots[index].1;
        let n = n.min(u64::from(*count));
        *count -= n as u32;
        self.total -= n;
        if *count == 0 {
            self.slots.remove(index);
        }
    }

    /// How long until the total is below `limit` again (zero when it already is): the time
    /// until enough of the oldest slots have left the window.
    pub fn wait_until_below(&mut self, now_ms: u64, limit: u64) -> Duration {
        self.advance(now_ms);
        if self.total < limit {
            return Duration::ZERO;
        }
        let mut remaining = self.total;
        for (slot, count) in &self.slots {
            remaining -= u64::from(*count);
            if remaining < limit {
                let leaves_at = (self.head - self.age(*slot) + SLOTS) * self.slot_ms;
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

    /// The window against a plain model (every count kept with its slot, summed on demand),
    /// over a long run of random adds, removals and clock moves, steps back included.
    #[test]
    fn agrees_with_a_plain_model() {
        use std::collections::BTreeMap;
        for span in [MINUTE, Duration::from_secs(3600)] {
            let mut w = SlidingWindow::new(span);
            let slot_ms = span.as_millis() as u64 / SLOTS;
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            let (mut head, mut now, mut added_at) = (0u64, 7_000_000_000u64, Vec::new());
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut random = |below: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % below
            };
            for _ in 0..20_000 {
                now = match random(10) {
                    0 => now.saturating_sub(random(3 * slot_ms)),
                    1 => now + random(70 * slot_ms),
                    _ => now + random(slot_ms),
                };
                head = head.max(now / slot_ms);
                model.retain(|slot, _| head - slot < SLOTS);
                match random(4) {
                    0 if !added_at.is_empty() => {
                        let at: u64 = added_at[random(added_at.len() as u64) as usize];
                        let n = random(3);
                        w.remove(now, at, n);
                        if let Some(count) = model.get_mut(&(at / slot_ms)) {
                            *count -= n.min(*count);
                        }
                    }
                    _ => {
                        let n = 1 + random(5);
                        w.add(now, n);
                        let slot = (now / slot_ms).clamp(head - (SLOTS - 1), head);
                        *model.entry(slot).or_default() += n;
                        added_at.push(now);
                    }
                }
                let total: u64 = model.values().sum();
                assert_eq!(w.total(now), total);
                let limit = 1 + random(total + 1);
                let mut remaining = total;
                let expected = if total < limit {
                    0
                } else {
                    let leaves = model.iter().find_map(|(slot, count)| {
                        remaining -= count;
                        (remaining < limit).then_some((slot + SLOTS) * slot_ms)
                    });
                    leaves.map_or(span.as_millis() as u64, |at| at.saturating_sub(now))
                };
                assert_eq!(
                    w.wait_until_below(now, limit),
                    Duration::from_millis(expected)
                );
            }
        }
    }

    #[test]
    fn an_idle_window_gives_its_memory_back() {
        let mut w = SlidingWindow::new(MINUTE);
        for i in 0..60 {
            w.add(9_000_000 + i * 1_000, 1);
        }
        assert_eq!(w.slots.len(), 60);
        assert_eq!(w.total(9_000_000 + 200_000), 0);
        assert_eq!(w.slots.capacity(), 0);
    }
}
