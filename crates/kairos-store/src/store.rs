//! The embedded store: opening, reads, and the maintenance that does not belong to the writer.

use crate::events::{Chunk, NO_PREV};
use crate::keys::*;
use crate::StoreError;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use kairos_core::{Definitions, Event, IdKey, Millis, Profile, ProfileId, Scoring};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

pub(crate) const DEFINITIONS_KEY: &[u8] = b"definitions";
/// The seq the next change record gets (kept so that erased records' seqs are not reused).
pub(crate) const NEXT_CHANGE_KEY: &[u8] = b"next_change";
/// Where the backfill of the definitions in force stands: their version, then the last
/// profile id it brought up to date (absent before the first page). Written in the same
/// batches as the pages, removed when the backfill is done: a backfill cut short by a crash
/// resumes from it.
pub(crate) const BACKFILL_KEY: &[u8] = b"backfill";
/// Definitions put in force before, under this prefix and a sequence number, so that a
/// backfill can tell what changed for a profile last evaluated under any of them, not only
/// under the definitions just replaced (most profiles are not rewritten by a backfill, so
/// they keep the version they were last evaluated under).
pub(crate) const DEFINITIONS_HISTORY_PREFIX: &[u8] = b"definitions_history:";
/// Earlier definitions kept: a profile evaluated under an older one is re-evaluated whole.
pub(crate) const DEFINITIONS_HISTORY: usize = 16;

pub(crate) fn definitions_history_key(seq: u64) -> Vec<u8> {
    let mut k = DEFINITIONS_HISTORY_PREFIX.to_vec();
    k.extend_from_slice(&u64_key(seq));
    k
}
const KNOWN_EVENT_PREFIX: &str = "event:";

pub(crate) fn known_event_key(name: &str) -> Vec<u8> {
    format!("{KNOWN_EVENT_PREFIX}{name}").into_bytes()
}

/// Memtable size per keyspace. Smaller than fjall's 64 MB default: the single writer's
/// inserts and point reads walk the memtable skiplist, and a shallower one is faster.
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Data block size of the profiles keyspace (fjall's default is 4 KB, about six encoded
/// profiles). A backfill reads every profile: with 4 KB blocks a fifth of its time went to
/// one `pread`, decompression and cache insertion per block. Fixed when a store is created.
const PROFILE_BLOCK_BYTES: u32 = 16 * 1024;

/// fjall's flush and compaction threads. Its default is one per core, up to 4, and its
/// worker 0 hands every compaction request on to the others: when all of them are busy it
/// re-sends the request to itself in a busy loop until one is free. With two workers (on
/// 2 cores) that loop was a quarter of all CPU samples during the compaction that follows
/// a bulk load; with three, 6.5% of the samples of `bench backfill` (fill and backfill);
/// with six, 0.3%, and the workers' share of all samples fell from 42% to 37%. Idle
/// workers only wait on the channel; the extra compactions they may run at once share the
/// same cores at the workers' lower priority ([`StoreOptions::worker_nice`]).
fn store_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(2, 8)
        + 4
}

/// The name fjall gives its flush and compaction threads.
const WORKER_THREAD_NAME: &str = "fjall:worker";

/// The ids of this process's storage engine worker threads (by their name; Linux only).
fn worker_threads() -> Vec<u32> {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|c| c.trim_end() == WORKER_THREAD_NAME)
            })
            .filter_map(|task| task.file_name().to_str()?.parse().ok())
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// Sets the nice value of every storage engine worker thread in this process whose nice
/// value is lower (whose priority is higher), once `expected` of them are there: a
/// thread takes its name only when it first runs, so those fjall spawned a moment ago in
/// `open` may not carry it yet. Waits at most half a second for them (then lowers those
/// named by then). Those of other stores open in the process are treated alike. Returns
/// how many were lowered. Best effort: a thread that cannot be read or reniced is left
/// as it is.
fn lower_worker_priority(nice: i32, expected: usize) -> usize {
    #[cfg(target_os = "linux")]
    {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        let mut workers = worker_threads();
        while workers.len() < expected && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            workers = worker_threads();
        }
        workers
            .into_iter()
            .filter(|&tid| thread_nice(tid).is_none_or(|n| n < nice))
            // SAFETY: setpriority reads and writes no memory of ours; on Linux a thread id
            // with PRIO_PROCESS names that one thread.
            .filter(|&tid| unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0)
            .count()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (nice, expected);
        0
    }
}

/// The nice value of thread `tid` of this process (field 19 of its `stat`, after the
/// parenthesised name, which may itself hold spaces and parentheses).
#[cfg(target_os = "linux")]
fn thread_nice(tid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from the state (3rd) on; nice is the 19th.
    after_name.split_whitespace().nth(16)?.parse().ok()
}

/// See [`Store::background_work`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackgroundWork {
    pub flushes_queued: usize,
    pub compactions_running: usize,
    pub time_compacting: std::time::Duration,
}

impl BackgroundWork {
    pub fn is_idle(&self) -> bool {
        self.flushes_queued == 0 && self.compactions_running == 0
    }
}

/// Options for opening a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Block compression (LZ4). Off only for tests that inspect raw files.
    pub compression: bool,
    /// Block cache size in bytes.
    pub cache_bytes: u64,
    /// LZ4 for values of 4 KB and more in the write-ahead journal (fjall's default), which
    /// here means the event chunks. The tables compress them again when the memtable is
    /// flushed, so this only trades CPU for journal bytes: on for the server, which
    /// fsyncs the journal per group and whose fsyncs slow down with more bytes; off for
    /// `kairos import`, which fsyncs once at the end (compressing chunks cost its
    /// committer 6.2k instructions per event, a tenth of the import).
    pub journal_compression: bool,
    /// The nice value the storage engine's flush and compaction threads run at (Linux;
    /// ignored elsewhere), as RocksDB's low-priority pool does. Their work can wait for
    /// idle CPU; a backfill or a burst of ingest cannot. Right after a bulk fill of 1M
    /// profiles, a new segment's backfill took 3.5-4.7 s (median 3.9 s) with 10 and six
    /// workers, against 3.6-6.2 s (median 5.1 s) at the process's own priority with three,
    /// and durable ingest stayed the same within noise (docs/PERFORMANCE.md). `None` leaves
    /// them at the process's priority; a value at or below the process's own is ignored
    /// (raising priority needs privileges).
    pub worker_nice: Option<i32>,
}

/// See [`StoreOptions::worker_nice`].
pub const DEFAULT_WORKER_NICE: i32 = 10;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            compression: true,
            cache_bytes: 256 * 1024 * 1024,
            journal_compression: true,
            worker_nice: Some(DEFAULT_WORKER_NICE),
        }
    }
}

impl StoreOptions {
    /// For offline jobs that replay everyone's history (training sets, send-time
    /// evaluation): a block cache of a quarter of the memory this process may use (the
    /// machine's, or its cgroup's limit when lower), between 256 MB and 8 GB. A replay walks
    /// each person's event chain and reads an event chunk per event; a training-set replay
    /// of 2.35M events took 38 s with a 2 GB cache against 54-61 s with 256 MB. The server
    /// keeps 256 MB: with 5.7 GB, the backfill right after a bulk fill took 9.7 s against
    /// 7.7-8.0 s (more CPU in the cache), and nothing it measured got faster.
    pub fn for_replays() -> Self {
        let server = Self::default();
        // Never below what the server uses.
        let floor = server.cache_bytes;
        Self {
            cache_bytes: memory_limit_bytes()
                .map_or(floor, |m| (m / 4).clamp(floor, 8 * 1024 * 1024 * 1024)),
            ..server
        }
    }
}

/// Physical memory, or the cgroup (v2) limit when set and lower. `None` where
/// `/proc/meminfo` cannot be read (not Linux).
fn memory_limit_bytes() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|kb| kb.trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        })?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// A dead-lettered (rejected) event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub seq: u64,
    pub received_at: Millis,
    pub source: String,
    pub index: usize,
    pub message_id: Option<String>,
    pub error: String,
    pub raw: String,
}

/// What [`Store::log_after_where`] decodes of each wanted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventParts {
    All,
    /// Everything but `context` and `traits` (left empty): the context an SDK sends
    /// (library, page, user agent...) is most of a stored event, and readers of product
    /// interactions do not look at it.
    WithoutContext,
}

/// A page of the log read by [`Store::log_after_where`].
#[derive(Debug, Default)]
pub struct LogPage {
    /// The wanted events of the page.
    pub events: Vec<StoredEvent>,
    /// The newest sequence number scanned (the reader's next cursor).
    pub last: Option<u64>,
    /// Events scanned, wanted or not.
    pub scanned: usize,
}

/// A stored event with its arrival sequence number.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
}

/// Handles to every keyspace; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Database,
    /// Events in chunks by the seq of their first event (see [`crate::events`]).
    pub(crate) events: Keyspace,
    pub(crate) dedupe: Keyspace,
    /// MessageIds accepted since their last bulk move into `dedupe`, one record per group
    /// (see [`crate::dedupe`]).
    pub(crate) dedupe_recent: Keyspace,
    pub(crate) profiles: Keyspace,
    pub(crate) identity: Keyspace,
    pub(crate) redirects: Keyspace,
    pub(crate) redirected: Keyspace,
    pub(crate) dead: Keyspace,
    pub(crate) suppress: Keyspace,
    pub(crate) meta: Keyspace,
    pub(crate) timers: Keyspace,
    pub(crate) members: Keyspace,
    pub(crate) stream_changes: Keyspace,
    pub(crate) timeline: Keyspace,
    /// Messages campaigns queued, keyed by (due time, message id) (see [`outbox_key`]).
    pub(crate) outbox: Keyspace,
    /// Campaign report counters: `campaign \0 variant \0 metric` -> (count, value sum).
    pub(crate) campaign_stats: Keyspace,
    /// Delivered messages by id (see [`crate::outbox`]).
    pub(crate) messages: Keyspace,
    /// Messages that ran out of attempts, by id, until re-driven.
    pub(crate) dead_messages: Keyspace,
    /// Message templates by name: JSON `{subject, html, text, updatedAt}`.
    pub(crate) templates: Keyspace,
    /// Trained model versions (see [`crate::models`]).
    pub(crate) models: Keyspace,
    /// Product catalog items by id, as JSON (see [`crate::catalog`]).
    pub(crate) catalog: Keyspace,
    /// The compiled score and segment definitions in force; the writer replaces them.
    pub(crate) scoring: Arc<RwLock<Arc<Scoring>>>,
    path: PathBuf,
}

fn decode_change(bytes: &[u8]) -> Result<serde_json::Value, StoreError> {
    kairos_core::Change::decode_record(bytes)
        .map_err(|e| StoreError::Corrupt(format!("change: {e}")))
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
}

/// [`decode_event`] for replays through the core's fold: the context's `timezone` only
/// ([`Event::from_json_for_fold`]).
pub(crate) fn decode_event_for_fold(bytes: &[u8]) -> Result<Event, StoreError> {
    Event::from_json_for_fold(bytes).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
}

/// [`decode_event`] for [`EventParts::WithoutContext`].
fn decode_event_without_context(bytes: &[u8]) -> Result<Event, StoreError> {
    Event::from_json_without_context(bytes).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
}

impl Store {
    pub fn open(path: impl AsRef<Path>, opts: &StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)?;
        // Counted before `open` starts more (see `lower_worker_priority`).
        let workers_before = if opts.worker_nice.is_some() {
            worker_threads().len()
        } else {
            0
        };
        let workers = store_workers();
        let db = Database::builder(&path)
            .cache_size(opts.cache_bytes)
            .manual_journal_persist(true)
            .journal_compression(if opts.journal_compression {
                fjall::CompressionType::Lz4
            } else {
                fjall::CompressionType::None
            })
            .worker_threads(workers)
            .open()?;
        if let Some(nice) = opts.worker_nice {
            let lowered = lower_worker_priority(nice, workers_before + workers);
            tracing::debug!("{lowered} storage worker threads lowered to nice {nice}");
        }
        // Stores written before the chunked event log kept one key per event and a
        // per-person index; their profiles do not say where their events are.
        if db.keyspace_exists("by_profile") || db.keyspace_exists("log") {
            return Err(StoreError::Format(format!(
                "{} was written by an earlier Kairos (one key per event); export its events \
                 with that version (GET /v1/events) and import them into a new data directory",
                path.display()
            )));
        }
        let compression = opts.compression;
        let ks = |name: &str| -> Result<Keyspace, StoreError> {
            Ok(db.keyspace(name, || {
                let o = KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(MEMTABLE_BYTES);
                let o = if name == "profiles" {
                    o.data_block_size_policy(fjall::config::BlockSizePolicy::all(
                        PROFILE_BLOCK_BYTES,
                    ))
                } else {
                    o
                };
                if compression {
                    o
                } else {
                    o.data_block_compression_policy(fjall::config::CompressionPolicy::disabled())
                }
            })?)
        };
        let store = Self {
            events: ks("events")?,
            dedupe: ks("dedupe")?,
            dedupe_recent: ks("dedupe_recent")?,
            profiles: ks("profiles")?,
            identity: ks("identity")?,
            redirects: ks("redirects")?,
            redirected: ks("redirected")?,
            dead: ks("dead")?,
            suppress: ks("suppress")?,
            meta: ks("meta")?,
            timers: ks("timers")?,
            members: ks("members")?,
            stream_changes: ks("stream_changes")?,
            timeline: ks("timeline")?,
            outbox: ks("outbox")?,
            campaign_stats: ks("campaign_stats")?,
            messages: ks("messages")?,
            dead_messages: ks("dead_messages")?,
            templates: ks("templates")?,
            models: ks("models")?,
            catalog: ks("catalog")?,
            scoring: Arc::new(RwLock::new(Arc::new(Scoring::default()))),
            db,
            path,
        };
        if let Some(defs) = store.definitions()? {
            match Scoring::compile(&defs, None) {
                Ok(s) => store.set_scoring(Arc::new(s)),
                Err(e) => tracing::error!("stored definitions do not compile, none in force: {e}"),
            }
        }
        Ok(store)
    }

    /// The score and segment definitions in force.
    pub fn scoring(&self) -> Arc<Scoring> {
        match self.scoring.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Puts new definitions in force, with the models in force carried over (re-bound to
    /// the new features; a model they no longer feed is dropped, with a warning).
    pub(crate) fn set_scoring(&self, s: Arc<Scoring>) {
        let old = self.scoring();
        s.set_send_time_priors(old.send_time_priors());
        let models = old.served_models();
        if !models.is_empty() {
            for problem in s.set_models(models) {
                tracing::warn!("{problem}");
            }
        }
        match self.scoring.write() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }

    /// The stored definitions, if any were ever saved.
    pub fn definitions(&self) -> Result<Option<Definitions>, StoreError> {
        match self.meta.get(DEFINITIONS_KEY)? {
            Some(v) => {
                Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                    StoreError::Corrupt(format!("definitions: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }

    /// The definitions put in force before (see [`DEFINITIONS_HISTORY_PREFIX`]), oldest
    /// first, with their sequence numbers. Entries that no longer parse are skipped: they
    /// only make backfills faster.
    pub(crate) fn definitions_history(&self) -> Result<Vec<(u64, Definitions)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.meta.prefix(DEFINITIONS_HISTORY_PREFIX) {
            let (k, v) = guard.into_inner()?;
            let Some(seq) = k.get(DEFINITIONS_HISTORY_PREFIX.len()..).and_then(read_u64) else {
                continue;
            };
            if let Ok(d) = serde_json::from_slice(&v) {
                out.push((seq, d));
            }
        }
        Ok(out)
    }

    /// The unfinished backfill recorded in the store: its definitions version and the last
    /// profile it brought up to date, if any.
    pub(crate) fn backfill_cursor(&self) -> Result<Option<(u64, Option<ProfileId>)>, StoreError> {
        let Some(v) = self.meta.get(BACKFILL_KEY)? else {
            return Ok(None);
        };
        let corrupt = || StoreError::corrupt("backfill cursor");
        let version = v.get(..8).and_then(read_u64).ok_or_else(corrupt)?;
        let after = match v.get(8..) {
            Some([]) => None,
            Some(id) => Some(ProfileId(read_u64(id).ok_or_else(corrupt)?)),
            None => return Err(corrupt()),
        };
        Ok(Some((version, after)))
    }

    /// Every event name ever stored (for warnings about rules naming others).
    pub fn known_events(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        for guard in self.meta.prefix(KNOWN_EVENT_PREFIX) {
            let k = guard.key()?;
            if let Some(name) = k.get(KNOWN_EVENT_PREFIX.len()..) {
                out.insert(String::from_utf8_lossy(name).into_owned());
            }
        }
        Ok(out)
    }

    /// Members of a segment in profile id order after `after`, with the time they entered.
    pub fn segment_members(
        &self,
        segment: &str,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<(ProfileId, Millis)>, StoreError> {
        let start = match after {
            Some(p) => named_key(segment, p.0.saturating_add(1)),
            None => name_prefix(segment),
        };
        let prefix = name_prefix(segment);
        let mut out = Vec::new();
        for guard in self.members.range(start..) {
            let (k, v) = guard.into_inner()?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let id = named_key_tail(&k).ok_or(StoreError::corrupt("member key"))?;
            let since = read_u64(&v).map_or(0, |b| b as i64);
            out.push((ProfileId(id), since));
        }
        Ok(out)
    }

    /// Number of members of a segment (a prefix scan).
    pub fn segment_size(&self, segment: &str) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for guard in self.members.prefix(name_prefix(segment)) {
            guard.key()?;
            n += 1;
        }
        Ok(n)
    }

    /// Changes of one stream (`segment:<name>`, `tier:<score>`, `primary`) after cursor
    /// `after`, oldest first. Each carries its `seq`, the next cursor.
    pub fn changes(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let prefix = name_prefix(stream);
        let mut out = Vec::new();
        for guard in self
            .stream_changes
            .range(named_key(stream, after.saturating_add(1))..)
        {
            let (k, v) = guard.into_inner()?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push(decode_change(&v)?);
        }
        Ok(out)
    }

    /// A profile's newest segment, tier and primary-segment changes (at most `limit`),
    /// oldest first: the profile's timeline of derived changes.
    pub fn profile_changes(
        &self,
        id: ProfileId,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        for guard in self.timeline.prefix(u64_key(id.0)).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, stream) = guard.into_inner()?;
            let Some(seq) = k.get(8..16).and_then(read_u64) else {
                continue;
            };
            let key = named_key(&String::from_utf8_lossy(&stream), seq);
            if let Some(v) = self.stream_changes.get(key)? {
                out.push(decode_change(&v)?);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Timers due at or before `now`, oldest first, after `after` (exclusive) if given.
    pub fn due_timers(
        &self,
        after: Option<(Millis, ProfileId)>,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, ProfileId)>, StoreError> {
        let end = timer_key(now, ProfileId(u64::MAX)).to_vec();
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = match after {
            Some((t, p)) => {
                let start = timer_key(t, p).to_vec();
                if start >= end {
                    return Ok(Vec::new());
                }
                Box::new(self.timers.range((
                    std::ops::Bound::Excluded(start),
                    std::ops::Bound::Included(end),
                )))
            }
            None => Box::new(self.timers.range(..=end)),
        };
        let mut out = Vec::new();
        for guard in iter {
            let k = guard.key()?;
            if let Some(t) = parse_timer_key(&k) {
                out.push(t);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The earliest pending timer, if any.
    pub fn next_timer(&self) -> Result<Option<(Millis, ProfileId)>, StoreError> {
        match self.timers.first_key_value() {
            Some(g) => Ok(parse_timer_key(&g.key()?)),
            None => Ok(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The storage engine's background work: memtable flushes queued, compactions running,
    /// and the time spent compacting since the store was opened. (fjall marks these
    /// counters experimental; benchmarks use them to wait for a quiet store.)
    pub fn background_work(&self) -> BackgroundWork {
        BackgroundWork {
            flushes_queued: self.db.outstanding_flushes(),
            compactions_running: self.db.active_compactions(),
            time_compacting: self.db.time_compacting(),
        }
    }

    /// fsyncs everything written so far.
    pub fn persist(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Follows merge redirects to the profile's current id.
    pub fn resolve_id(&self, mut id: ProfileId) -> Result<ProfileId, StoreError> {
        for _ in 0..64 {
            match self.redirects.get(u64_key(id.0))? {
                Some(v) => id = ProfileId(read_u64(&v).ok_or(StoreError::corrupt("redirect"))?),
                None => return Ok(id),
            }
        }
        Err(StoreError::corrupt("redirect cycle"))
    }

    pub fn profile(&self, id: ProfileId) -> Result<Option<Profile>, StoreError> {
        self.profile_record(self.resolve_id(id)?)
    }

    /// The record stored under exactly this id (no redirect followed).
    pub(crate) fn profile_record(&self, id: ProfileId) -> Result<Option<Profile>, StoreError> {
        match self.profiles.get(u64_key(id.0))? {
            Some(bytes) => Ok(Some(
                Profile::decode(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    pub fn lookup(&self, key: &IdKey) -> Result<Option<ProfileId>, StoreError> {
        Ok(self
            .identity
            .get(key.index_key())?
            .and_then(|v| read_u64(&v))
            .map(ProfileId))
    }

    /// The chunk holding `seq`: (seq of its first event, bytes).
    pub(crate) fn chunk_of(&self, seq: u64) -> Result<Option<(u64, fjall::Slice)>, StoreError> {
        match self.events.range(..=u64_key(seq)).next_back() {
            Some(g) => {
                let (k, v) = g.into_inner()?;
                Ok(Some((
                    read_u64(&k).ok_or(StoreError::corrupt("chunk key"))?,
                    v,
                )))
            }
            None => Ok(None),
        }
    }

    /// (prev, event time, event JSON) of the event `seq`, reusing `cached` when it holds
    /// the chunk; `None` when there is no such event. The payload is empty once erased.
    pub(crate) fn record(
        &self,
        seq: u64,
        cached: &mut Option<(u64, fjall::Slice)>,
    ) -> Result<Option<(u64, Millis, fjall::Slice)>, StoreError> {
        let read = |c: &Option<(u64, fjall::Slice)>| -> Result<_, StoreError> {
            let Some((first, bytes)) = c.as_ref().filter(|(first, _)| seq >= *first) else {
                return Ok(None);
            };
            Ok(Chunk::parse(bytes)?
                .record((seq - first) as usize)
                .map(|r| (r.prev, r.time, fjall::Slice::from(r.payload))))
        };
        if let Some(r) = read(cached)? {
            return Ok(Some(r));
        }
        *cached = self.chunk_of(seq)?;
        read(cached)
    }

    pub fn event_by_seq(&self, seq: u64) -> Result<Option<Event>, StoreError> {
        match self.record(seq, &mut None)? {
            Some((_, _, p)) if !p.is_empty() => Ok(Some(decode_event(&p)?)),
            _ => Ok(None),
        }
    }

    /// Visits every event on the chains starting at `heads` (newest first within a chain):
    /// `unwritten` answers for events the store does not hold yet (the writer's pending
    /// batches). `visit` gets (seq, event time, event JSON).
    pub(crate) fn walk_events(
        &self,
        heads: &[u64],
        mut unwritten: impl FnMut(u64) -> Option<(u64, Millis, fjall::Slice)>,
        mut visit: impl FnMut(u64, Millis, &fjall::Slice) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut cached = None;
        let mut steps = 0u64;
        for &head in heads {
            let mut seq = head;
            while seq != NO_PREV {
                let (prev, time, payload) = match unwritten(seq) {
                    Some(r) => r,
                    None => self.record(seq, &mut cached)?.ok_or_else(|| {
                        StoreError::Corrupt(format!("a profile names missing event {seq}"))
                    })?,
                };
                if payload.is_empty() {
                    return Err(StoreError::Corrupt(format!(
                        "a profile names erased event {seq}"
                    )));
                }
                visit(seq, time, &payload)?;
                // Links point back in arrival order; anything else is a corrupt chain.
                if prev >= seq {
                    return Err(StoreError::corrupt("event chain"));
                }
                seq = prev;
                steps += 1;
                if steps > 1 << 40 {
                    return Err(StoreError::corrupt("event chain"));
                }
            }
        }
        Ok(())
    }

    /// (event time, seq) of every stored event of a profile, in that order.
    pub(crate) fn event_keys(&self, p: &Profile) -> Result<Vec<(Millis, u64)>, StoreError> {
        let mut keys = Vec::new();
        self.walk_events(
            &p.log_heads,
            |_| None,
            |seq, t, _| {
                keys.push((t, seq));
                Ok(())
            },
        )?;
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// A profile's events in event-time order, starting after `after` = (time, seq).
    pub fn profile_events(
        &self,
        id: ProfileId,
        after: Option<(Millis, u64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.profile_events_decoded(id, after, limit, decode_event)
    }

    /// [`Store::profile_events`], each event read by `decode`.
    fn profile_events_decoded(
        &self,
        id: ProfileId,
        after: Option<(Millis, u64)>,
        limit: usize,
        decode: fn(&[u8]) -> Result<Event, StoreError>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let Some(p) = self.profile(id)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut cached = None;
        for (_, seq) in self
            .event_keys(&p)?
            .into_iter()
            .filter(|k| after.is_none_or(|a| *k > a))
            .take(limit)
        {
            if let Some((_, _, payload)) = self.record(seq, &mut cached)? {
                out.push(StoredEvent {
                    seq,
                    event: decode(&payload)?,
                });
            }
        }
        Ok(out)
    }

    /// Events in arrival order with seq > `after` (export, replay, audits).
    pub fn log_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self
            .log_after_where(after, limit, EventParts::All, &|_| true)?
            .events)
    }

    /// The log after `after` in arrival order, `limit` events scanned, of which only those
    /// whose stored JSON `wanted` accepts are decoded and returned: a reader that needs a
    /// few kinds of event (recommendations read product events) skips building the rest,
    /// and with [`EventParts::WithoutContext`] the bulk of the ones it wants.
    pub fn log_after_where(
        &self,
        after: u64,
        limit: usize,
        parts: EventParts,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> Result<LogPage, StoreError> {
        let decode = match parts {
            EventParts::All => decode_event,
            EventParts::WithoutContext => decode_event_without_context,
        };
        let mut page = LogPage::default();
        let from = after.saturating_add(1);
        let start = match self.chunk_of(from)? {
            Some((first, _)) => first,
            None => 0,
        };
        for guard in self.events.range(u64_key(start)..) {
            let (k, v) = guard.into_inner()?;
            let first = read_u64(&k).ok_or(StoreError::corrupt("chunk key"))?;
            let chunk = Chunk::parse(&v)?;
            for i in 0..chunk.len() {
                let seq = first + i as u64;
                match chunk.record(i) {
                    Some(r) if seq >= from && !r.payload.is_empty() => {
                        if wanted(r.payload) {
                            page.events.push(StoredEvent {
                                seq,
                                event: decode(r.payload)?,
                            });
                        }
                        page.last = Some(seq);
                        page.scanned += 1;
                        if page.scanned >= limit {
                            return Ok(page);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(page)
    }

    pub fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for guard in self.dead.range(u64_key(after.saturating_add(1))..) {
            let (_, v) = guard.into_inner()?;
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt(format!("dead letter: {e}")))?,
            );
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Whether `dedupe` holds the messageId; the writer's recent ones are not there yet.
    pub(crate) fn is_duplicate(&self, message_id: &str) -> Result<bool, StoreError> {
        Ok(self.dedupe.contains_key(message_id.as_bytes())?)
    }

    /// Profiles in id order after `after` (for listing and backfills).
    /// Up to `limit` stored profiles after `after`, undecoded, in id order.
    pub(crate) fn profile_values_after(
        &self,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<(ProfileId, fjall::Slice)>, StoreError> {
        let start = after.map(|p| p.0.saturating_add(1)).unwrap_or(0);
        let mut out = Vec::with_capacity(limit.min(4096));
        for guard in self.profiles.range(u64_key(start)..) {
            let (k, v) = guard.into_inner()?;
            let id = read_u64(&k).ok_or(StoreError::corrupt("profile key"))?;
            out.push((ProfileId(id), v));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn profiles_after(
        &self,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        let start = after.map(|p| p.0.saturating_add(1)).unwrap_or(0);
        let mut out = Vec::new();
        for guard in self.profiles.range(u64_key(start)..) {
            let (_, v) = guard.into_inner()?;
            out.push(Profile::decode(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Approximate counts, cheap to compute.
    pub fn approximate_counts(&self) -> Counts {
        Counts {
            // Arrival seqs handed out (erased events included): cheap, and close.
            events: self.last_seqs().map_or(0, |(e, _)| e),
            profiles: self.profiles.approximate_len() as u64,
            dead_letters: self.dead.approximate_len() as u64,
        }
    }

    /// Last arrival seq in the log and in the dead-letter area (recovery of counters).
    pub(crate) fn next_change_seq(&self) -> Result<u64, StoreError> {
        Ok(match self.meta.get(NEXT_CHANGE_KEY)? {
            Some(v) => read_u64(&v).ok_or(StoreError::corrupt("next change seq"))?,
            None => 1,
        })
    }

    pub(crate) fn last_seqs(&self) -> Result<(u64, u64), StoreError> {
        let last_event = match self.events.last_key_value() {
            Some(g) => {
                let (k, v) = g.into_inner()?;
                let first = read_u64(&k).ok_or(StoreError::corrupt("chunk key"))?;
                first + Chunk::parse(&v)?.len() as u64 - 1
            }
            None => 0,
        };
        let last_dead = match self.dead.last_key_value() {
            Some(g) => read_u64(&g.key()?).unwrap_or(0),
            None => 0,
        };
        Ok((last_event, last_dead))
    }

    /// Removes dedupe entries older than `retention_days` before `now`. Returns how many.
    /// The writer calls it ([`crate::Ingestor::prune_dedupe`]) after moving its recent
    /// entries here.
    pub(crate) fn prune_dedupe(&self, now: Millis, retention_days: u32) -> Result<u64, StoreError> {
        let today = day_of(now);
        let cutoff = today.saturating_sub(retention_days);
        let mut batch = self.db.batch();
        let mut n = 0u64;
        for guard in self.dedupe.iter() {
            let (k, v) = guard.into_inner()?;
            if dedupe_day(&v).is_some_and(|d| d < cutoff) {
                batch.remove(&self.dedupe, k);
                n += 1;
            }
        }
        batch.commit()?;
        self.persist()?;
        Ok(n)
    }

    /// Has this identifier been erased (and suppression kept)?
    pub fn is_suppressed(&self, key: &IdKey) -> Result<bool, StoreError> {
        Ok(self.suppress.contains_key(suppression_hash(key))?)
    }

    pub(crate) fn has_suppressions(&self) -> bool {
        self.suppress.first_key_value().is_some()
    }

    /// Makes deleted data leave the files on disk, for erasure.
    ///
    /// Deleting keys only writes tombstones; the old bytes stay in tables until compaction and
    /// in the write-ahead journal until it is rotated and every memtable it covers is flushed.
    /// So: first flush and fully compact every keyspace (tombstones drop the old values from
    /// tables); then push the journal over fjall's rotation size (64 MB; fjall has no public
    /// call to rotate it) with filler in a scratch keyspace and flush that, which seals the
    /// journal and lets fjall delete it, since nothing else in it is unflushed; then clear the
    /// scratch. Costs about 64 MB of sequential IO; erasures of one group share one purge.
    pub fn purge_deleted(&self) -> Result<(), StoreError> {
        // fjall seals its journal only once it passes this size, and only while a flush runs.
        const JOURNAL_ROTATION_BYTES: usize = 64_000_000;
        self.persist()?;
        for ks in self.all_keyspaces() {
            ks.rotate_memtable_and_wait()?;
            ks.major_compact()?;
        }
        // Every journal present now may hold the erased bytes; done when all of them are gone.
        let old_journals = self.journal_ids()?;
        let newest_old = old_journals.iter().copied().max().unwrap_or(0);
        let scratch = self
            .db
            .keyspace("purge_scratch", KeyspaceCreateOptions::default)?;
        // Incompressible filler: the journal compresses large values.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let chunk: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut next_key = 0u64;
        let mut write_filler = |bytes: usize| -> Result<(), StoreError> {
            let mut written = 0usize;
            while written < bytes {
                let mut batch = self.db.batch();
                for _ in 0..8 {
                    batch.insert(&scratch, u64_key(next_key), chunk.clone());
                    next_key += 1;
                    written += chunk.len();
                }
                batch.commit()?;
            }
            self.persist()
        };
        write_filler(JOURNAL_ROTATION_BYTES + (8 << 20))?;
        // Rotation and deletion both happen in fjall's workers after a flush, possibly after
        // the waits here returned, and deletion only once every keyspace the journal covers
        // has flushed past it: keep flushing until the old journals are gone (a busy machine
        // can take seconds). Flushes on a never-rotated journal mean more filler is needed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let ids = self.journal_ids()?;
            if !ids.iter().any(|id| old_journals.contains(id)) {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Engine(
                    "erased data is still in a sealed journal that could not be evicted".into(),
                ));
            }
            if ids.iter().all(|&id| id <= newest_old) {
                // Still writing to an old journal: push it past the rotation size again.
                write_filler(8 << 20)?;
            }
            for ks in self.all_keyspaces() {
                ks.rotate_memtable_and_wait()?;
            }
            scratch.insert(u64_key(u64::MAX), [0u8])?;
            self.persist()?;
            scratch.rotate_memtable_and_wait()?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        scratch.clear()?;
        scratch.major_compact()?;
        self.persist()?;
        Ok(())
    }

    /// Numbers of the journal files (`<n>.jnl`) in the database folder.
    fn journal_ids(&self) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let name = entry?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".jnl"))
                .and_then(|n| n.parse().ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    pub(crate) fn all_keyspaces(&self) -> [&Keyspace; 21] {
        [
            &self.events,
            &self.dedupe,
            &self.dedupe_recent,
            &self.profiles,
            &self.identity,
            &self.redirects,
            &self.redirected,
            &self.dead,
            &self.suppress,
            &self.meta,
            &self.timers,
            &self.members,
            &self.stream_changes,
            &self.timeline,
            &self.outbox,
            &self.campaign_stats,
            &self.messages,
            &self.dead_messages,
            &self.templates,
            &self.models,
            &self.catalog,
        ]
    }

    /// Stores a template (already checked by the caller), durably.
    pub fn put_template(&self, name: &str, template: &serde_json::Value) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(template).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.templates.insert(name.as_bytes(), bytes)?;
        self.persist()
    }

    pub fn template(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        match self.templates.get(name.as_bytes())? {
            Some(v) => {
                Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                    StoreError::Corrupt(format!("template {name}: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }

    /// Every template, by name.
    pub fn templates(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.templates.iter() {
            let (k, v) = guard.into_inner()?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let t = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("template {name}: {e}")))?;
            out.push((name, t));
        }
        Ok(out)
    }

    /// Returns whether it existed.
    pub fn delete_template(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.templates.contains_key(name.as_bytes())?;
        self.templates.remove(name.as_bytes())?;
        self.persist()?;
        Ok(existed)
    }

    /// A position a background task keeps across restarts (a schedule's last run, a change
    /// hook's cursor), by name.
    pub fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .meta
            .get(format!("cursor:{name}").as_bytes())?
            .and_then(|v| read_u64(&v))
            .map(|v| v as i64))
    }

    pub fn set_cursor(&self, name: &str, value: i64) -> Result<(), StoreError> {
        self.meta.insert(
            format!("cursor:{name}").as_bytes(),
            (value as u64).to_be_bytes(),
        )?;
        self.persist()
    }

    /// A 32-byte secret for signing links (unsubscribe), made once per store and kept.
    pub fn link_secret(&self) -> Result<Vec<u8>, StoreError> {
        const KEY: &[u8] = b"link_secret";
        if let Some(v) = self.meta.get(KEY)? {
            return Ok(v.to_vec());
        }
        use sha2::Digest;
        use std::io::Read;
        let mut random = [0u8; 32];
        let from_os = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .is_ok();
        // Where the OS offers no random device: hashed clock, pid and addresses.
        let mut h = sha2::Sha256::new();
        h.update(random);
        h.update([from_os as u8]);
        h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
        h.update(std::process::id().to_be_bytes());
        let local = 0u8;
        h.update(format!("{:p}", &local).as_bytes());
        h.update(self.path.to_string_lossy().as_bytes());
        let secret: [u8; 32] = h.finalize().into();
        self.meta.insert(KEY, secret)?;
        self.persist()?;
        Ok(secret.to_vec())
    }

    /// Outbox rows due at or before `now`, oldest first: (key, row).
    pub fn due_outbox(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, OutboxRow)>, StoreError> {
        let end = u64_key(time_bits(now).saturating_add(1));
        let mut out = Vec::new();
        for guard in self.outbox.range(..end.to_vec()) {
            let (k, v) = guard.into_inner()?;
            let row = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("outbox row: {e}")))?;
            out.push((k.to_vec(), row));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A campaign's report counters: (variant, metric) -> (count, sum of values).
    pub fn campaign_stats(
        &self,
        campaign: &str,
    ) -> Result<Vec<(String, String, u64, f64)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.campaign_stats.prefix(name_prefix(campaign)) {
            let (k, v) = guard.into_inner()?;
            let mut parts = k.split(|b| *b == 0).skip(1);
            let (Some(variant), Some(metric)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (n, sum) = decode_stat(&v);
            out.push((
                String::from_utf8_lossy(variant).into_owned(),
                String::from_utf8_lossy(metric).into_owned(),
                n,
                sum,
            ));
        }
        Ok(out)
    }

    /// Visits every stored key and value (for erasure audits in tests and `kairos doctor`).
    pub fn scan_all(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        for ks in self.all_keyspaces() {
            for guard in ks.iter() {
                let (k, v) = guard.into_inner()?;
                f(&k, &v);
            }
        }
        Ok(())
    }

    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

/// A message a campaign queued, as the outbox holds it until delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxRow {
    pub message_id: String,
    pub campaign: String,
    pub step: u16,
    pub variant: String,
    pub template: String,
    pub channel: String,
    pub purpose: String,
    pub to: Option<String>,
    pub profile: u64,
    /// The trigger event's properties (`event` in templates).
    pub event: serde_json::Value,
    pub queued_at: Millis,
    pub due: Millis,
    /// `scheduled`, `sending`, `sent`, `failed` (will retry) or `dead`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The last attempt may have reached the receiver (it timed out or lost the connection
    /// after sending): the next one is flagged as a possible duplicate.
    #[serde(default)]
    pub uncertain: bool,
}

/// Outbox key: due time (ordered), then the message id.
pub fn outbox_key(due: Millis, message_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + message_id.len());
    k.extend_from_slice(&time_bits(due).to_be_bytes());
    k.extend_from_slice(message_id.as_bytes());
    k
}

pub(crate) fn stat_key(campaign: &str, variant: &str, metric: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + variant.len() + metric.len() + 2);
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(variant.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
    k
}

pub(crate) fn encode_stat(n: u64, sum: f64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&n.to_be_bytes());
    v[8..].copy_from_slice(&sum.to_bits().to_be_bytes());
    v
}

pub(crate) fn decode_stat(v: &[u8]) -> (u64, f64) {
    let n = v.get(..8).and_then(read_u64).unwrap_or(0);
    let sum = v.get(8..16).and_then(read_u64).map_or(0.0, f64::from_bits);
    (n, sum)
}

/// Day number since the epoch.
pub fn day_of(t: Millis) -> u32 {
    t.max(0).div_euclid(kairos_core::time::DAY) as u32
}

pub(crate) fn suppression_hash(key: &IdKey) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"kairos-erased:");
    h.update(key.index_key());
    h.finalize().into()
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub events: u64,
    pub profiles: u64,
    pub dead_letters: u64,
}

use kairos_core::features::Example;

impl Store {
    /// Training examples over every stored person (see [`kairos_core::features::examples`]):
    /// each history replayed through the core with `scoring` (which carries the label rule),
    /// features at each cut-off, the label `horizon` later. Calls `progress(people done)`
    /// every thousand people.
    pub fn training_examples(
        &self,
        scoring: &Scoring,
        cfg: &kairos_core::CoreConfig,
        cutoffs: &[Millis],
        horizon: Millis,
        data_end: Millis,
        mut progress: impl FnMut(u64),
    ) -> Result<Vec<(ProfileId, Example)>, StoreError> {
        /// Where the workers are in the profiles keyspace: the last id read, the number of
        /// the next page, and whether there is nothing left to read.
        struct Cursor {
            after: Option<ProfileId>,
            next_page: usize,
            finished: bool,
        }
        type Part = Result<Vec<(ProfileId, Example)>, StoreError>;
        const PAGE: usize = 1000;
        // People replay independently. Each worker takes the next page as it finishes one,
        // so no core waits for the slowest share of a page (threads were started and
        // joined per page before), and the examples come out in page order all the same.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cursor = Mutex::new(Cursor {
            after: None,
            next_page: 0,
            finished: false,
        });
        let (tx, rx) = std::sync::mpsc::channel::<(usize, usize, Part)>();
        let mut parts: std::collections::BTreeMap<usize, Part> = Default::default();
        let panicked = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let (tx, cursor) = (tx.clone(), &cursor);
                    s.spawn(move || loop {
                        let (number, page) = {
                            let mut c = cursor.lock().unwrap_or_else(PoisonError::into_inner);
                            if c.finished {
                                return;
                            }
                            let number = c.next_page;
                            c.next_page += 1;
                            match self.profiles_after(c.after, PAGE) {
                                Ok(page) => match page.last() {
                                    Some(last) => {
                                        c.after = Some(last.id);
                                        (number, page)
                                    }
                                    None => {
                                        c.finished = true;
                                        return;
                                    }
                                },
                                Err(e) => {
                                    c.finished = true;
                                    let _ = tx.send((number, 0, Err(e)));
                                    return;
                                }
                            }
                        };
                        let mut out = Vec::new();
                        let part = page
                            .iter()
                            .try_for_each(|p| {
                                let examples = self.person_examples(
                                    p.id, scoring, cfg, cutoffs, horizon, data_end,
                                )?;
                                out.extend(examples.into_iter().map(|ex| (p.id, ex)));
                                Ok(())
                            })
                            .map(|()| out);
                        if part.is_err() {
                            cursor
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .finished = true;
                        }
                        if tx.send((number, page.len(), part)).is_err() {
                            return;
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut done = 0u64;
            for (number, people, part) in rx {
                done += people as u64;
                progress(done);
                parts.insert(number, part);
            }
            handles.into_iter().any(|h| h.join().is_err())
        });
        if panicked {
            return Err(StoreError::Corrupt("a replay thread panicked".into()));
        }
        let mut out = Vec::new();
        for part in parts.into_values() {
            out.extend(part?);
        }
        Ok(out)
    }
}

impl Store {
    /// One person's training examples (see [`Store::training_examples`]): how labels that
    /// matured in the live stream are taken, by the same code as training sets.
    pub fn person_examples(
        &self,
        id: ProfileId,
        scoring: &Scoring,
        cfg: &kairos_core::CoreConfig,
        cutoffs: &[Millis],
        horizon: Millis,
        data_end: Millis,
    ) -> Result<Vec<kairos_core::features::Example>, StoreError> {
        let mut events: Vec<Event> = self
            .profile_events_decoded(id, None, usize::MAX, decode_event_for_fold)?
            .into_iter()
            .map(|s| s.event)
            .collect();
        Ok(kairos_core::features::examples(
            &mut events,
            cfg,
            scoring,
            cutoffs,
            horizon,
            data_end,
        ))
    }
}

impl Store {
    /// The earliest and latest event time in the store (a scan of the event log that reads
    /// only record headers).
    pub fn event_time_range(&self) -> Result<Option<(Millis, Millis)>, StoreError> {
        let mut range: Option<(Millis, Millis)> = None;
        for guard in self.events.iter() {
            let v = guard.value()?;
            let chunk = Chunk::parse(&v)?;
            for r in (0..chunk.len()).filter_map(|i| chunk.record(i)) {
                if !r.payload.is_empty() {
                    let t = r.time;
                    range = Some(range.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
                }
            }
        }
        Ok(range)
    }
}
