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
//! anyway) until the probe is rebuilt: when more keys were inserted than the scan found.

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
struct Bloom {
    blocks: Vec<[u64; BLOCK_WORDS]>,
    len: usize,
    capacity: usize,
}

fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

impl Bloom {
    fn with_capacity(capacity: usize) -> Self {
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

    fn insert(&mut self, key: &[u8]) {
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

    fn heap_bytes(&self) -> usize {
        self.blocks.len() * BLOCK_WORDS * 8
    }
}

/// Bloom filters that grow: when the newest is full another twice its size is added, so
/// the false-positive rate stays bounded however many keys arrive.
#[derive(Debug)]
struct GrowingBloom(Vec<Bloom>);

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

    fn len(&self) -> usize {
        self.0.iter().map(|b| b.len).sum()
    }

    fn heap_bytes(&self) -> usize {
        self.0.iter().map(Bloom::heap_bytes).sum()
    }
}

/// Keys inserted since the last scan before a probe asks to be rebuilt (see
/// [`Probe::wants_rebuild`]), at the least, by default: 24 MB of filter.
pub(crate) const REBUILD_AFTER_MIN: usize = 16 << 20;

/// See the module doc.
pub(crate) struct Probe {
    keyspace: Keyspace,
    /// Keys present when the scan started, once it has finished.
    existing: Option<GrowingBloom>,
    scan: Option<Receiver<GrowingBloom>>,
    /// Keys inserted since the scan started.
    inserted: GrowingBloom,
    rebuild_after: usize,
    /// Stops and joins the scan thread when the probe goes.
    _thread: Option<Scan>,
}

impl Probe {
    /// A probe of `keyspace`, its scan started on a thread; it asks to be rebuilt after
    /// `rebuild_after` inserted keys, or as many as the scan found if more.
    pub(crate) fn start(keyspace: Keyspace, rebuild_after: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let (ks, flag) = (keyspace.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("kairos-probe".into())
            .spawn(move || {
                if let Some(bloom) = scan(&ks, &flag) {
                    tracing::debug!(
                        keys = bloom.len(),
                        bytes = bloom.heap_bytes(),
                        "key filter ready"
                    );
                    let _ = tx.send(bloom);
                }
            });
        let thread = match thread {
            Ok(t) => Some(Scan {
                stop,
                thread: Some(t),
            }),
            // No thread: the probe never gets its filter and always answers "maybe".
            Err(e) => {
                tracing::warn!("key filter scan not started: {e}");
                None
            }
        };
        Self {
            keyspace,
            existing: None,
            scan: Some(rx),
            inserted: GrowingBloom::new(1 << 16),
            rebuild_after,
            _thread: thread,
        }
    }

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
        self.existing.as_ref().is_some_and(|b| b.may_contain(h)) || self.inserted.may_contain(h)
    }

    /// Records a key the writer is about to store.
    pub(crate) fn insert(&mut self, key: &[u8]) {
        self.inserted.insert(key);
    }

    /// Whether the keys inserted since the scan outnumber the keys it found (and a floor):
    /// removed keys (expired dedupe entries, erasures) stay in the filters, so a process
    /// that runs for months would hold ever more of them. A rebuild rescans what is stored
    /// now; until it is done, every key is a "maybe" again.
    pub(crate) fn wants_rebuild(&self) -> bool {
        let scanned = self.existing.as_ref().map_or(0, GrowingBloom::len);
        self.inserted.len() >= self.rebuild_after.max(scanned)
    }

    /// Starts over with a fresh scan. Every key inserted so far must be committed (the scan
    /// reads the store, and forgets the keys recorded here).
    pub(crate) fn rebuild(&mut self) {
        *self = Self::start(self.keyspace.clone(), self.rebuild_after);
    }

    /// Whether the scan has finished (for tests).
    #[cfg(test)]
    fn ready(&mut self) -> bool {
        let _ = self.may_contain(b"");
        self.existing.is_some()
    }
}

/// The scan thread of a probe. Dropping it stops the scan and waits for the thread, so no
/// thread holds the store after the writer ends.
type Scan = crate::writer::StopOnDrop;

/// Every key of `ks` in a filter; `None` when stopped or on a read error (then the probe
/// keeps answering "maybe").
fn scan(ks: &Keyspace, stop: &AtomicBool) -> Option<GrowingBloom> {
    // Sized for the estimate; more keys than that grow it like any other.
    let estimate = ks.approximate_len();
    let mut bloom = GrowingBloom::new(estimate + estimate / 4);
    for (i, guard) in ks.iter().enumerate() {
        if i % 4096 == 0 && stop.load(Ordering::Relaxed) {
            return None;
        }
        match guard.key() {
            Ok(k) => bloom.insert(&k),
            Err(e) => {
                tracing::warn!("key filter scan failed: {e}");
                return None;
            }
        }
    }
    Some(bloom)
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
    fn a_probe_says_maybe_until_its_scan_is_done_then_knows_old_and_new_keys_and_rebuilds() {
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
        let mut p = Probe::start(ks.clone(), 30_000);
        p.insert(b"new-1");
        wait_ready(&mut p);
        assert!((0..20_000u32).all(|i| p.may_contain(format!("old-{i}").as_bytes())));
        assert!(p.may_contain(b"new-1"));
        let absent = (0..10_000u32)
            .filter(|i| !p.may_contain(format!("absent-{i}").as_bytes()))
            .count();
        assert!(
            absent > 9_700,
            "only {absent} of 10000 absent keys ruled out"
        );

        // Inserting more keys than the scan found (and the floor) asks for a rebuild,
        // which forgets what was inserted and finds in the store what was committed.
        for i in 0..30_000u32 {
            let k = format!("later-{i}");
            p.insert(k.as_bytes());
            ks.insert(k, b"").unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(p.wants_rebuild());
        p.rebuild();
        assert!(
            p.may_contain(b"anything"),
            "a rebuilding probe answers maybe"
        );
        wait_ready(&mut p);
        assert!(!p.wants_rebuild());
        assert_eq!(p.inserted.len(), 0);
        assert!((0..30_000u32).all(|i| p.may_contain(format!("later-{i}").as_bytes())));
        assert!((0..20_000u32).all(|i| p.may_contain(format!("old-{i}").as_bytes())));
    }

    fn wait_ready(p: &mut Probe) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !p.ready() {
            assert!(std::time::Instant::now() < deadline, "scan never finished");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
