//! Per-event-name counters in time buckets, so that "in the last 30 minutes" and "in the last
//! 90 days" are both answerable from a few hundred bytes per name.
//!
//! Three resolutions are kept, each for a horizon measured back from the newest event of that
//! name: minutes for 48 hours, hours for 35 days, days for 400 days; plus lifetime totals.
//! A window is answered at the finest resolution that covers it, so it is exact to that
//! bucket (a 30-minute window to the minute, a 7-day window to the hour).
//!
//! Pruning is relative to the newest event *of this name*, and a late event older than a
//! horizon is simply not added to that resolution. The final buckets are therefore the same
//! whatever order the events arrived in: replay determinism holds.

use crate::time::{Millis, DAY, HOUR, MINUTE};
use serde::{Deserialize, Serialize};

const RESOLUTIONS: [(Millis, i64); 3] = [(MINUTE, 48 * 60), (HOUR, 35 * 24), (DAY, 400)];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub total: u64,
    pub first: Millis,
    pub last: Millis,
    /// Sorted sparse (key, count) for all resolutions in one allocation: the key's top two
    /// bits are the resolution, the low 30 the bucket index (minutes fit until year 4011).
    buckets: Vec<(u32, u32)>,
}

const INDEX_BITS: u32 = 30;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

fn bucket_index(ts: Millis, res: Millis) -> u32 {
    (ts.max(0).div_euclid(res).min(INDEX_MASK as i64)) as u32
}

fn key(res_slot: usize, idx: u32) -> u32 {
    ((res_slot as u32) << INDEX_BITS) | idx
}

impl Counter {
    pub fn add(&mut self, ts: Millis) {
        if self.total == 0 {
            self.first = ts;
            self.last = ts;
        } else {
            self.first = self.first.min(ts);
            self.last = self.last.max(ts);
        }
        self.total += 1;
        for (slot, (res, keep)) in RESOLUTIONS.iter().enumerate() {
            let horizon = bucket_index(self.last, *res).saturating_sub(*keep as u32);
            let idx = bucket_index(ts, *res);
            if idx >= horizon {
                let k = key(slot, idx);
                match self.buckets.binary_search_by_key(&k, |(b, _)| *b) {
                    Ok(pos) => self.buckets[pos].1 += 1,
                    Err(pos) => self.buckets.insert(pos, (k, 1)),
                }
            }
            // Drop this resolution's buckets below its horizon.
            let lo = self.buckets.partition_point(|(b, _)| *b < key(slot, 0));
            let hi = self
                .buckets
                .partition_point(|(b, _)| *b < key(slot, horizon));
            if hi > lo {
                self.buckets.drain(lo..hi);
            }
        }
    }

    /// Events with a timestamp in `(now - window, now]`, exact to the bucket of the finest
    /// resolution that covers the window. A window longer than 400 days counts the lifetime
    /// total of events at or before `now`, as far as the day buckets and total allow.
    pub fn count_within(&self, window: Millis, now: Millis) -> u64 {
        if self.total == 0 || window <= 0 {
            return 0;
        }
        if now - window < self.first && now >= self.last {
            return self.total;
        }
        for (slot, (res, keep)) in RESOLUTIONS.iter().enumerate() {
            if window <= res * keep {
                let from = key(slot, bucket_index(now - window + 1, *res));
                let to = key(slot, bucket_index(now, *res));
                let lo = self.buckets.partition_point(|(b, _)| *b < from);
                return self.buckets[lo..]
                    .iter()
                    .take_while(|(b, _)| *b <= to)
                    .map(|(_, c)| *c as u64)
                    .sum();
            }
        }
        self.total
    }

    /// Bytes held on the heap, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_at_each_resolution() {
        let now = 1_000 * DAY;
        let mut c = Counter::default();
        for t in [
            now - 10 * MINUTE,
            now - 2 * HOUR,
            now - 3 * DAY,
            now - 60 * DAY,
            now,
        ] {
            c.add(t);
        }
        assert_eq!(c.count_within(30 * MINUTE, now), 2);
        assert_eq!(c.count_within(3 * HOUR, now), 3);
        assert_eq!(c.count_within(7 * DAY, now), 4);
        assert_eq!(c.count_within(90 * DAY, now), 5);
        assert_eq!(c.count_within(30 * MINUTE, now + HOUR), 0);
        assert_eq!(c.total, 5);
    }

    #[test]
    fn late_events_give_the_in_order_result() {
        let base = 500 * DAY;
        let times: Vec<Millis> = (0..200)
            .map(|i| base + (i * 7919 % 200) * 37 * MINUTE)
            .collect();
        let mut in_order = Counter::default();
        let mut sorted = times.clone();
        sorted.sort();
        for t in &sorted {
            in_order.add(*t);
        }
        let mut shuffled = Counter::default();
        for t in times.iter().rev() {
            shuffled.add(*t);
        }
        assert_eq!(in_order, shuffled);
    }
}
