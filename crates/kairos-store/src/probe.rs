//! "Could this key be stored?" answered in memory, so the writer skips most store reads for
//! keys that do not exist: a new event's messageId (the dedupe check) and a new person's
//! identifiers. Such a read is not cheap even when the key is absent: it searches the
//! keyspace's memtable skiplist, a few microseconds of cache misses, several times per
//! event.
//!
//! A [`Probe`] holds two Bloom filters: one of every key present when the writer started,
//! filled by a background scan, and one of every key the writer has inserted since. Until
//! the scan is done every key "may" be present and the store is read as before. Removed
//! keys stay in the filters (a false "may", which only costs the read they would have cost
//! anyway); the filters start afresh at the next start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use fjall::Keyspace;

/// Bits per key. With 8 probes inside one 512-bit block, about 1% false positives.
const BITS_PER_KEY: usize = 12;
const PROBES: u32 = 8;
const BLOCK_WORDS: usize = 8;

/// A blocked Bloom filter: every key's bits lie in one 64-byte block, so a query touches
/// one cache line.
#[derive(Debug)]
pub(crate) struct Bloom {
    blocks: Vec<[u64; BLOCK_WORDS]>,
    len: usize,
    capacity: usize,
}

fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

impl Bloom {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1024);
        let blocks = (capacity * BITS_PER_KEY)
            .div_ceil(BLOCK_WORDS * 64)
            .next_power_of_two();
        Self {
            blocks: vec![[0; BLOCK_WORDS]; blocks],
            len: 0,
            capacity,
        }
    }

    /// The block, and the bit positions in it from the hash's other bits.
    fn locate(&self, h: u64) -> (usize, impl Iterator<Item = (usize, u64)>) {
        let block = (h as usize) & (self.blocks.len() - 1);
        // A second, independent-enough stream of bits for the positions.
        let mut x = h.rotate_left(32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let bits = (0..PROBES).map(move |_| {
            let bit = (x >> 55) as usize; // 9 bits: 0..512
            x = x.wrapping_mul(0xd6e8_feb8_6659_fd93).rotate_left(17);
            (bit / 64, 1u64 << (bit % 64))
        });
        (block, bits)
    }

    pub(crate) fn insert(&mut self, key: &[u8]) {
        let (b, bits) = self.locate(hash(key));
        for (w, m) in bits {
            self.blocks[b][w] |= m;
        }
        self.len += 1;
    }

    #[cfg(test)]
    fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(hash(key))
    }

    fn may_contain_hash(&self, h: u64) -> bool {
        let (b, mut bits) = self.locate(h);
        let block = &self.blocks[b];
        bits.all(|(w, m)| block[w] & m != 0)
    }

    fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.blocks.len() * BLOCK_WORDS * 8
    }
}

/// Bloom filters that grow: when the newest is full another twice its size is added, so
/// the false-positive rate stays bounded however many keys arrive.
#[derive(Debug)]
pub(crate) struct GrowingBloom(Vec<Bloom>);

impl GrowingBloom {
    fn new(capacity: usize) -> Self {
        Self(vec![Bloom::with_capacity(capacity)])
    }

    fn insert(&mut self, key: &[u8]) {
        let full = self.0.last().is_none_or(Bloom::is_full);
        if full {
            let next = self.0.last().map_or(1 << 16, |b| b.capacity * 2);
            self.0.push(Bloom::with_capacity(next));
        }
        if let Some(b) = self.0.last_mut() {
            b.insert(key);
        }
    }

    fn may_contain(&self, h: u64) -> bool {
        self.0.iter().any(|b| b.may_contain_hash(h))
    }
}

/// See the module doc.
pub(crate) struct Probe {
    /// Keys present at start, once the scan has finished.
    existing: Option<Bloom>,
    scan: Option<Receiver<Bloom>>,
    /// Keys inserted since start.
    inserted: GrowingBloom,
}

impl Probe {
    /// Whether `key` may be stored; `false` means it certainly is not.
    pub(crate) fn may_contain(&mut self, key: &[u8]) -> bool {
        if self.existing.is_none() {
            match self.scan.as_ref().map(Receiver::try_recv) {
                Some(Ok(bloom)) => {
                    self.existing = Some(bloom);
                    self.scan = None;
                }
                // Still scanning, or the scan failed: no answer but "maybe".
                _ => return true,
            }
        }
        let h = hash(key);
        self.existing
            .as_ref()
            .is_some_and(|b| b.may_contain_hash(h))
            || self.inserted.may_contain(h)
    }

    /// Records a key the writer is about to store.
    pub(crate) fn insert(&mut self, key: &[u8]) {
        self.inserted.insert(key);
    }

    /// Whether the scan has finished (for tests).
    #[cfg(test)]
    fn ready(&mut self) -> bool {
        let _ = self.may_contain(b"");
        self.existing.is_some()
    }
}

/// The background scan that fills the probes' filters of existing keys. Dropping it stops
/// the scan and waits for the thread, so no thread holds the store after the writer ends.
pub(crate) type Scan = crate::writer::StopOnDrop;

/// Starts scanning `keyspaces` on a thread; returns a probe for each, in order.
pub(crate) fn start(keyspaces: Vec<Keyspace>) -> (Vec<Probe>, Option<Scan>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut probes = Vec::new();
    let mut senders = Vec::new();
    for _ in &keyspaces {
        let (tx, rx) = crossbeam_channel::bounded(1);
        senders.push(tx);
        probes.push(Probe {
            existing: None,
            scan: Some(rx),
            inserted: GrowingBloom::new(1 << 16),
        });
    }
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("kairos-probe".into())
        .spawn(move || {
            for (ks, tx) in keyspaces.iter().zip(senders) {
                match scan(ks, &flag) {
                    Some(bloom) => {
                        tracing::debug!(
                            keys = bloom.len,
                            bytes = bloom.heap_bytes(),
                            "key filter ready"
                        );
                        let _ = tx.send(bloom);
                    }
                    None => return,
                }
            }
        });
    match thread {
        Ok(t) => (
            probes,
            Some(Scan {
                stop,
                thread: Some(t),
            }),
        ),
        // No thread: the probes never get their filters and always answer "maybe".
        Err(e) => {
            tracing::warn!("key filter scan not started: {e}");
            (probes, None)
        }
    }
}

/// Every key of `ks` in a filter; `None` when stopped or on a read error (then the probe
/// keeps answering "maybe").
fn scan(ks: &Keyspace, stop: &AtomicBool) -> Option<Bloom> {
    let estimate = ks.approximate_len();
    let mut capacity = (estimate + estimate / 4).max(1 << 16);
    'sized: loop {
        let mut bloom = Bloom::with_capacity(capacity);
        for (i, guard) in ks.iter().enumerate() {
            if i % 4096 == 0 && stop.load(Ordering::Relaxed) {
                return None;
            }
            if bloom.is_full() {
                // More keys than estimated: start again bigger rather than lose accuracy.
                capacity *= 4;
                continue 'sized;
            }
            match guard.key() {
                Ok(k) => bloom.insert(&k),
                Err(e) => {
                    tracing::warn!("key filter scan failed: {e}");
                    return None;
                }
            }
        }
        return Some(bloom);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bloom_never_forgets_and_rarely_imagines() {
        let mut b = Bloom::with_capacity(100_000);
        for i in 0..100_000u32 {
            b.insert(format!("m-{i}").as_bytes());
        }
        assert!((0..100_000u32).all(|i| b.may_contain(format!("m-{i}").as_bytes())));
        let false_positives = (0..100_000u32)
            .filter(|i| b.may_contain(format!("other-{i}").as_bytes()))
            .count();
        // ~1% expected at 12 bits per key; 2.5% leaves room, 50% would be a broken hash.
        assert!(false_positives < 2_500, "{false_positives} false positives");
    }

    #[test]
    fn a_growing_bloom_keeps_its_rate_past_its_first_capacity() {
        let mut g = GrowingBloom::new(1024);
        for i in 0..50_000u32 {
            g.insert(format!("k{i}").as_bytes());
        }
        assert!(g.0.len() > 1);
        assert!((0..50_000u32).all(|i| g.may_contain(hash(format!("k{i}").as_bytes()))));
        let fp = (0..50_000u32)
            .filter(|i| g.may_contain(hash(format!("x{i}").as_bytes())))
            .count();
        assert!(fp < 2_500, "{fp} false positives");
    }

    #[test]
    fn a_probe_says_maybe_until_its_scan_is_done_then_knows_old_and_new_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = fjall::Database::builder(dir.path())
            .open()
            .unwrap_or_else(|e| panic!("{e}"));
        let ks = db
            .keyspace("k", fjall::KeyspaceCreateOptions::default)
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..20_000u32 {
            ks.insert(format!("old-{i}"), b"")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (mut probes, scan) = start(vec![ks.clone()]);
        let mut p = probes.remove(0);
        p.insert(b"new-1");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !p.ready() {
            assert!(std::time::Instant::now() < deadline, "scan never finished");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(scan);
        assert!((0..20_000u32).all(|i| p.may_contain(format!("old-{i}").as_bytes())));
        assert!(p.may_contain(b"new-1"));
        let absent = (0..10_000u32)
            .filter(|i| !p.may_contain(format!("absent-{i}").as_bytes()))
            .count();
        assert!(
            absent > 9_700,
            "only {absent} of 10000 absent keys ruled out"
        );
    }
}
