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

/// What a bucket holds: a count, or a count and a sum.
pub trait Tally: Copy + Default + PartialEq {
    fn one(value: f64) -> Self;
    fn merge(&mut self, other: Self);
    fn count(&self) -> u64;
    fn sum(&self) -> f64;
}

impl Tally for u32 {
    fn one(_: f64) -> Self {
        1
    }
    fn merge(&mut self, other: Self) {
        *self = self.saturating_add(other);
    }
    fn count(&self) -> u64 {
        *self as u64
    }
    fn sum(&self) -> f64 {
        0.0
    }
}

/// A count and the sum of a numeric property (`sum("Order Completed", "revenue", ...)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CountSum {
    pub count: u32,
    pub sum: f64,
}

impl Tally for CountSum {
    fn one(value: f64) -> Self {
        Self {
            count: 1,
            sum: value,
        }
    }
    fn merge(&mut self, other: Self) {
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
    }
    fn count(&self) -> u64 {
        self.count as u64
    }
    fn sum(&self) -> f64 {
        self.sum
    }
}

/// Events of one name (or one filtered aggregate) in time buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buckets<T> {
    /// Lifetime tally.
    pub total: T,
    pub first: Millis,
    pub last: Millis,
    /// Sorted sparse (key, tally) for all resolutions in one allocation: the key's top two
    /// bits are the resolution, the low 30 the bucket index (minutes fit until year 4011).
    #[serde(with = "key_deltas")]
    buckets: Vec<(u32, T)>,
}

/// The stored form of a bucket list: the keys are sorted, so each is written as its
/// distance from the one before, a byte or two instead of the five a key with its
/// resolution in the top bits takes. Human-readable forms (JSON) keep the keys.
/// Profiles of encoding 6 stored the keys ([`crate::profile::reading_version_6`]).
mod key_deltas {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        buckets: &[(u32, T)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return buckets.serialize(s);
        }
        let mut prev = 0u32;
        s.collect_seq(buckets.iter().map(|(k, t)| {
            let delta = k.wrapping_sub(prev);
            prev = *k;
            (delta, t)
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<(u32, T)>, D::Error> {
        let deltas = !d.is_human_readable() && !crate::profile::reading_version_6();
        let mut buckets: Vec<(u32, T)> = Vec::deserialize(d)?;
        if deltas {
            let mut prev = 0u32;
            for (k, _) in &mut buckets {
                prev = prev.wrapping_add(*k);
                *k = prev;
            }
        }
        Ok(buckets)
    }
}

/// Per-event-name activity counts.
pub type Counter = Buckets<u32>;
/// Counts and sums of a property, for `sum(...)` aggregates.
pub type SumCounter = Buckets<CountSum>;

const INDEX_BITS: u32 = 30;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

fn bucket_index(ts: Millis, res: Millis) -> u32 {
    (ts.max(0).div_euclid(res).min(INDEX_MASK as i64)) as u32
}

fn key(res_slot: usize, idx: u32) -> u32 {
    ((res_slot as u32) << INDEX_BITS) | idx
}

impl<T: Tally> Buckets<T> {
    pub fn add(&mut self, ts: Millis) {
        self.add_value(ts, 0.0)
    }

    pub fn add_value(&mut self, ts: Millis, value: f64) {
        let one = T::one(value);
        if self.total.count() == 0 {
            self.first = ts;
            self.last = ts;
        } else {
            self.first = self.first.min(ts);
            self.last = self.last.max(ts);
        }
        self.total.merge(one);
        for (slot, (res, keep)) in RESOLUTIONS.iter().enumerate() {
            let horizon = bucket_index(self.last, *res).saturating_sub(*keep as u32);
            let idx = bucket_index(ts, *res);
            if idx >= horizon {
                let k = key(slot, idx);
                match self.buckets.binary_search_by_key(&k, |(b, _)| *b) {
                    Ok(pos) => self.buckets[pos].1.merge(one),
                    Err(pos) => self.buckets.insert(pos, (k, one)),
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

    /// The resolution slot answering a window, and the key range of `(now - window, now]`.
    fn range(&self, window: Millis, now: Millis) -> Option<(Millis, u32, u32)> {
        for (slot, (res, keep)) in RESOLUTIONS.iter().enumerate() {
            if window <= res * keep {
                let from = key(slot, bucket_index(now - window + 1, *res));
                let to = key(slot, bucket_index(now, *res));
                return Some((*res, from, to));
            }
        }
        None
    }

    /// The window covers every event there is.
    fn covers_all(&self, window: Millis, now: Millis) -> bool {
        now - window < self.first && now >= self.last
    }

    /// Events with a timestamp in `(now - window, now]`, exact to the bucket of the finest
    /// resolution that covers the window. A window longer than 400 days counts the lifetime
    /// total of events at or before `now`, as far as the day buckets and total allow.
    pub fn tally_within(&self, window: Millis, now: Millis) -> T {
        if self.total.count() == 0 || window <= 0 {
            return T::default();
        }
        if self.covers_all(window, now) {
            return self.total;
        }
        match self.range(window, now) {
            Some((_, from, to)) => {
                let lo = self.buckets.partition_point(|(b, _)| *b < from);
                let mut t = T::default();
                for (_, v) in self.buckets[lo..].iter().take_while(|(b, _)| *b <= to) {
                    t.merge(*v);
                }
                t
            }
            None => self.total,
        }
    }

    pub fn count_within(&self, window: Millis, now: Millis) -> u64 {
        self.tally_within(window, now).count()
    }

    pub fn sum_within(&self, window: Millis, now: Millis) -> f64 {
        self.tally_within(window, now).sum()
    }

    /// The first instant after `now` at which `tally_within(window, t)` can differ from its
    /// value at `now` with no new event: when the oldest counted bucket leaves the window.
    pub fn expiry(&self, window: Millis, now: Millis) -> Option<Millis> {
        if self.total.count() == 0 || window <= 0 {
            return None;
        }
        let shortcut_end = self
            .covers_all(window, now)
            .then(|| self.first.saturating_add(window));
        let bucketed = self.range(window, now).and_then(|(res, from, to)| {
            let lo = self.buckets.partition_point(|(b, _)| *b < from);
            let (k, _) = self.buckets.get(lo).filter(|(b, _)| *b <= to)?;
            let idx = (k & INDEX_MASK) as i64;
            Some((idx + 1) * res + window - 1)
        });
        [shortcut_end, bucketed]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// [`Buckets::tally_within`] and [`Buckets::expiry`] together, from one lookup of the
    /// window's buckets: a timer's look-ahead asks both at every edge it steps over.
    pub fn tally_and_expiry(&self, window: Millis, now: Millis) -> (T, Option<Millis>) {
        if self.total.count() == 0 || window <= 0 {
            return (T::default(), None);
        }
        let covers_all = self.covers_all(window, now);
        let shortcut_end = covers_all.then(|| self.first.saturating_add(window));
        let (tally, bucketed) = match self.range(window, now) {
            Some((res, from, to)) => {
                let lo = self.buckets.partition_point(|(b, _)| *b < from);
                let in_range = || self.buckets[lo..].iter().take_while(|(b, _)| *b <= to);
                let bucketed = in_range()
                    .next()
                    .map(|(k, _)| ((k & INDEX_MASK) as i64 + 1) * res + window - 1);
                let tally = if covers_all {
                    self.total
                } else {
                    let mut t = T::default();
                    for (_, v) in in_range() {
                        t.merge(*v);
                    }
                    t
                };
                (tally, bucketed)
            }
            None => (self.total, None),
        };
        let expiry = [shortcut_end, bucketed]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min();
        (tally, expiry)
    }

    /// Bytes held on the heap, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(u32, T)>()
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
    fn stored_bucket_keys_are_deltas_and_json_keeps_the_keys() {
        let now = 1_000 * DAY;
        let mut c = Counter::default();
        for i in 0..50 {
            c.add(now - i * 47 * MINUTE);
        }
        let stored = postcard::to_allocvec(&c).unwrap_or_default();
        let back: Counter = postcard::from_bytes(&stored).unwrap_or_default();
        assert_eq!(back, c);
        // Five bytes a key before; now most deltas are one byte.
        assert!(
            stored.len() < c.buckets.len() * 3 + 24,
            "{} bytes",
            stored.len()
        );
        let json = serde_json::to_value(&c).unwrap_or_default();
        assert_eq!(json["buckets"][0][0], c.buckets[0].0);
        let from_json: Counter = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(from_json, c);
    }

    proptest::proptest! {
        /// The fused lookup answers what the two separate ones do, at every resolution,
        /// inside, at and past the newest event.
        #[test]
        fn tally_and_expiry_is_tally_within_and_expiry(
            offsets in proptest::collection::vec((0i64..(60 * DAY), 0u32..100), 0..60),
            window in 1i64..(500 * DAY),
            ahead in -(3 * DAY)..(90 * DAY),
        ) {
            let base = 2_000 * DAY;
            let mut c = SumCounter::default();
            for (back, value) in &offsets {
                c.add_value(base - back, f64::from(*value));
            }
            let now = base + ahead;
            let (tally, expiry) = c.tally_and_expiry(window, now);
            proptest::prop_assert_eq!(tally, c.tally_within(window, now));
            proptest::prop_assert_eq!(expiry, c.expiry(window, now));
        }
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
