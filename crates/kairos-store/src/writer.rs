//! The single writer: every change to profiles goes through it, one group at a time.
//!
//! A group is everything queued while the previous group was being committed (up to a cap).
//! For each event the writer dedupes the messageId, resolves identity, folds the event into
//! the profile, and appends it to the event log (chunks, each event linked to the person's
//! previous one: `crate::events`); then all changed profiles, event chunks, dedupe keys
//! and dead letters of the group are committed in one batch with one fsync, and only then is
//! every submission of the group answered. So an acknowledged event is durable, and a
//! request is never answered before the events of requests that arrived earlier.
//!
//! The commit itself (memtable inserts, journal write, fsync) runs on a second thread, the
//! committer, while the writer plans the next group: about a third of the writer's time
//! was the commit, and the second core was mostly idle. At most one group is in flight;
//! the writer waits for it before handing over the next, before groups with backfill
//! pages, erasures or definitions (they read the store), before evicting cached profiles,
//! and when idle. Merges, replays and timers read a person's events and redirects while
//! they may still be unwritten: what the pending batch and the group in flight write
//! (events, redirects, identity and dedupe keys) stays readable in memory
//! (`Unwritten`) until it is committed. The committer answers the group's requests once the fsync
//! returned, then hands the group's accepted events to the [`Observer`], when the process
//! installed one, so that it need not read them back from the log. When a commit fails, the
//! group planned on top of it fails as well and the writer forgets its caches, as after any
//! failed group.
//!
//! Most dedupe checks and identity lookups are for keys that do not exist (a new event, a
//! new person); in-memory key filters (`crate::probe`) rule those out without a store read.
//!
//! Each stage of a group is a histogram: `kairos_group_events`, `kairos_group_plan_seconds`
//! (the writer's work), `kairos_group_wait_seconds` (waiting for the group in flight),
//! `kairos_group_write_seconds` (memtables and journal) and `kairos_group_fsync_seconds`;
//! `kairos_group_commit_seconds` runs from the start of planning to the fsync's return.

use crate::events::{Chunk, ChunkBuilder, NO_PREV};
use crate::keys::*;
use crate::sorted_batch::SortedBatch;
use crate::store::{
    day_of, decode_event, decode_event_for_fold, known_event_key, suppression_hash, DeadLetter,
    Store, BACKFILL_KEY, DEFINITIONS_KEY, NEXT_CHANGE_KEY,
};
use crate::StoreError;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use kairos_core::identity::{self, canonical_id, event_identifiers, Found};
use kairos_core::profile::Reason;
use kairos_core::segment::Rejected;
use kairos_core::{
    Change, ChangeKind, CoreConfig, Event, EventKind, IdKey, Millis, Profile, ProfileId, Scoring,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// std's maps with foldhash instead of SipHash, which was 4% of the writer's time. Its
/// seed is random per process, so clients choosing messageIds and identifiers still cannot
/// make them collide on purpose.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Tuning of the writer.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// fsync each group before answering. Only benchmarks of the non-durable ceiling turn
    /// this off.
    pub sync: bool,
    /// Upper bound of events per group commit.
    pub max_group_events: usize,
    /// Submissions that may wait for the writer; beyond it callers are told to back off.
    pub queue_capacity: usize,
    /// Decoded profiles kept in memory.
    pub cache_profiles: usize,
    pub core: CoreConfig,
    /// How often due segment timers are looked for.
    pub timer_interval: Duration,
    /// The time segments are evaluated at; tests pass their own.
    pub clock: Clock,
    /// Keys recorded in the in-memory key filters since their last scan before they are
    /// rebuilt from the store (at least; see `probe`), so that memory stays bounded by
    /// what is stored.
    pub key_filter_rebuild_after: usize,
    /// Accepted messageIds kept in memory (and in one record per group) before they are
    /// moved into the dedupe index in bulk (see `crate::dedupe`).
    pub dedupe_ingest_after: usize,
    /// Called by the backfill thread with each page's number once it has read and evaluated
    /// the page, before the writer records it. Lets tests interleave writes with a backfill
    /// deterministically; `None` otherwise.
    #[doc(hidden)]
    pub backfill_hook: Option<BackfillHook>,
    /// Told of every accepted event once it is durable (see [`Observer`]); `None` when no
    /// part of the process follows the log (imports).
    pub observer: Option<Arc<dyn Observer>>,
    /// Where each submission's events go once the writer is done with them, for the
    /// thread that decoded them to free; `None` frees them on a helper thread. mimalloc
    /// frees a block cheaply on the thread that allocated it and expensively on another
    /// (an atomic hand-back, and reclaiming the page): for `kairos import`, freeing on the
    /// helper thread took 6.6k instructions per event, on the parser 1.6k. A closed
    /// receiver falls back to the helper thread.
    pub return_events: Option<std::sync::mpsc::Sender<Vec<Prepared>>>,
}

/// An event the writer accepted, as an [`Observer`] is told of it.
#[derive(Clone, Copy, Debug)]
pub struct Accepted<'a> {
    /// Its arrival sequence number: its place in the log.
    pub seq: u64,
    /// The profile it was folded into, canonical at that moment (a later merge may
    /// redirect it, see [`Store::resolve_id`]).
    pub profile: ProfileId,
    pub event: &'a Event,
}

/// Follows the events the writer accepts without reading them back from the log (the
/// server's recommendations do): the writer already holds each one decoded, and knows its
/// seq and the profile it went into.
pub trait Observer: Send + Sync {
    /// The accepted events of one group, in seq order with no seq missing between the first
    /// and the last, once the group is committed (and fsync'd, unless `sync` is off). Called
    /// on the committer thread after the group's requests were answered, for groups in
    /// commit order; a group that failed is never passed, so seqs may be missing between two
    /// calls. The writer may already plan the next group meanwhile, but the next group is
    /// not committed until this returns: it must not block.
    fn durable(&self, events: &[Accepted<'_>]);
}

impl std::fmt::Debug for dyn Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// See [`WriterOptions::backfill_hook`].
#[doc(hidden)]
#[derive(Clone)]
pub struct BackfillHook(pub Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for BackfillHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackfillHook")
    }
}

/// Milliseconds since the epoch, from the system or from a test.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> Millis + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as Millis)
        }))
    }

    pub fn now(&self) -> Millis {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            sync: true,
            max_group_events: 20_000,
            queue_capacity: 512,
            cache_profiles: 250_000,
            core: CoreConfig::default(),
            timer_interval: Duration::from_millis(25),
            clock: Clock::system(),
            key_filter_rebuild_after: crate::probe::REBUILD_AFTER_MIN,
            dedupe_ingest_after: crate::dedupe::INGEST_AFTER,
            backfill_hook: None,
            observer: None,
            return_events: None,
        }
    }
}

/// An event with its stored encoding, prepared by the caller so that serialisation runs on
/// the request threads rather than on the single writer thread.
pub struct Prepared {
    pub event: Event,
    pub bytes: Vec<u8>,
}

impl Prepared {
    pub fn new(event: Event) -> Self {
        // Most stored events fit: grown from empty, the buffer was reallocated and copied
        // seven or eight times per event. It is copied into an event chunk and dropped.
        let mut bytes = Vec::with_capacity(Self::TYPICAL_BYTES);
        kairos_core::stored_json::write_event(&event, &mut bytes);
        Self { event, bytes }
    }

    /// Room reserved for an event's stored form: simulated shop events take 400 to 700
    /// bytes, with the context an SDK sends.
    const TYPICAL_BYTES: usize = 1024;

    pub fn all(events: Vec<Event>) -> Vec<Self> {
        events.into_iter().map(Self::new).collect()
    }
}

/// Events of one request (or one import chunk), and the rejected ones to dead-letter.
pub struct Submission {
    pub events: Vec<Prepared>,
    pub rejected: Vec<Rejected>,
    pub received_at: Millis,
    pub source: String,
    pub reply: Option<oneshot::Sender<Result<Outcome, StoreError>>>,
}

/// What happened to a submission once it is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: usize,
    pub duplicates: usize,
    /// Dropped because the person was erased and a suppression entry was kept.
    pub suppressed: usize,
    pub dead_lettered: usize,
}

/// Summary of an erasure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erased {
    pub profile: ProfileId,
    pub events: usize,
    pub identifiers: usize,
    pub dead_letters: usize,
}

pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Ingest(Submission),
    /// Block the writer until the sender side is dropped.
    Hold(crossbeam_channel::Receiver<()>),
    Erase {
        id: ProfileId,
        keep_suppression: bool,
        at: Millis,
        reply: Reply<Option<Erased>>,
    },
    /// Timers that came due: re-evaluate those profiles.
    Tick {
        due: Vec<(Millis, ProfileId)>,
        done: Sender<()>,
    },
    /// A scheduled campaign run reaches these people (members of its segment when listed).
    Schedule {
        campaign: String,
        at: Millis,
        profiles: Vec<ProfileId>,
        reply: Reply<usize>,
    },
    /// A page of the backfill, evaluated by its threads: record it.
    Rebuild {
        page: BackfillPage,
        done: Sender<()>,
    },
    /// The backfill for definitions of this version has read every profile.
    BackfillDone(u64),
    /// Store and put in force new definitions (already compiled by the caller).
    Define {
        scoring: Arc<Scoring>,
        /// `None` when the version stays (only campaigns changed).
        deltas: Option<Arc<Deltas>>,
        /// Told once they are in force (the backfill thread waits for it).
        in_force: Sender<()>,
        reply: Reply<()>,
    },
    /// Forget messageIds that arrived more than `days` before `now`.
    PruneDedupe {
        now: Millis,
        days: u32,
        reply: Reply<u64>,
    },
}

/// For a profile last evaluated under earlier definitions, by their version: which
/// segments of the definitions in force are new or edited since, and where each old due
/// index went ([`kairos_core::scoring::definitions_delta`]). A profile under definitions
/// not in here (forgotten, or scoring events differently) is re-evaluated whole.
#[derive(Debug, Default)]
pub(crate) struct Deltas {
    by_version: HashMap<u64, (Vec<bool>, Vec<Option<u16>>)>,
}

impl Deltas {
    /// Deltas to `new` from the definitions `in_force` and from those the store remembers.
    fn compute(store: &Store, in_force: Option<&Scoring>, new: &Scoring) -> Self {
        let mut out = Self::default();
        let mut add = |old: &Scoring| {
            if old.version != new.version
                && old.replay_version == new.replay_version
                && !out.by_version.contains_key(&old.version)
            {
                let delta = kairos_core::scoring::definitions_delta(old, new);
                out.by_version.insert(old.version, delta);
            }
        };
        if let Some(old) = in_force {
            add(old);
        }
        match store.definitions_history() {
            Ok(history) => {
                for (_, defs) in history.iter().rev() {
                    // Definitions the rule language of this build no longer accepts only
                    // cost a full re-evaluation of the profiles still under them.
                    if let Ok(old) = Scoring::compile(defs, None) {
                        add(&old);
                    }
                }
            }
            Err(e) => tracing::warn!("earlier definitions unreadable: {e}"),
        }
        out
    }

    fn get(&self, from: u64) -> Option<(&[bool], &[Option<u16>])> {
        self.by_version
            .get(&from)
            .map(|(c, r)| (c.as_slice(), r.as_slice()))
    }
}

/// The reason recorded for changes definitions made.
const REDEFINED: &str = "definitions changed";

/// Brings `profile` up to `scoring` from its own state. `None` when its history must be
/// replayed (definitions that score events differently), which needs the event log.
fn redefine(
    profile: &mut Profile,
    scoring: &Scoring,
    deltas: &Deltas,
    now: Millis,
) -> Option<Vec<Change>> {
    if profile.derived.replay_version != scoring.replay_version && !scoring.is_empty() {
        return None;
    }
    Some(if profile.derived.version == scoring.version {
        Vec::new()
    } else {
        match deltas.get(profile.derived.version) {
            Some((changed, remap)) => profile.redefine(scoring, now, changed, remap),
            None => profile.reevaluate(scoring, now, Reason::Replay(REDEFINED)),
        }
    })
}

/// A page of the backfill, read and evaluated by the backfill threads, for the writer to
/// record ([`Writer::record_backfill_page`]).
struct BackfillPage {
    /// The definitions it was evaluated against.
    version: u64,
    /// The last profile read: the next page starts after it.
    last: Option<ProfileId>,
    /// Profiles whose memberships, tiers or timer moved, brought up to date.
    moved: Vec<Moved>,
    /// Profiles read and left as stored: nothing moved.
    unchanged: Vec<ProfileId>,
    /// Profiles whose history must be replayed, which the writer does.
    replay: Vec<Profile>,
}

impl BackfillPage {
    fn new(version: u64) -> Self {
        Self {
            version,
            last: None,
            moved: Vec::new(),
            unchanged: Vec::new(),
            replay: Vec::new(),
        }
    }

    fn append(&mut self, other: BackfillPage) {
        self.last = other.last.or(self.last);
        self.moved.extend(other.moved);
        self.unchanged.extend(other.unchanged);
        self.replay.extend(other.replay);
    }
}

struct Moved {
    profile: Profile,
    old_timer: Option<Millis>,
    changes: Vec<Change>,
}

/// Decodes stored profiles and brings each up to `scoring` (at `now`).
fn evaluate_profiles(
    raw: &[(ProfileId, fjall::Slice)],
    scoring: &Scoring,
    deltas: &Deltas,
    now: Millis,
) -> Result<BackfillPage, StoreError> {
    let mut page = BackfillPage::new(scoring.version);
    for (id, bytes) in raw {
        let mut profile = Profile::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let old_timer = profile.timer();
        match redefine(&mut profile, scoring, deltas, now) {
            None => page.replay.push(profile),
            Some(changes) if !changes.is_empty() || old_timer != profile.timer() => {
                page.moved.push(Moved {
                    profile,
                    old_timer,
                    changes,
                })
            }
            Some(_) => page.unchanged.push(*id),
        }
    }
    page.last = raw.last().map(|(id, _)| *id);
    Ok(page)
}

/// A page for [`PageEvaluator`]: the threads take runs of [`PageJob::RUN`] profiles in turn
/// (`next` is the next run's number), not half each: the page reader, the writer and the
/// storage engine share the same cores, and with fixed halves the page waited for whichever
/// half lost its core meanwhile.
struct PageJob {
    raw: Arc<Vec<(ProfileId, fjall::Slice)>>,
    scoring: Arc<Scoring>,
    deltas: Arc<Deltas>,
    now: Millis,
    next: std::sync::atomic::AtomicUsize,
}

type EvaluatedRuns = Vec<(usize, Result<BackfillPage, StoreError>)>;

impl PageJob {
    const RUN: usize = 32;

    /// Evaluates runs until none is left; returns them with their numbers.
    fn work(&self) -> EvaluatedRuns {
        let mut done = Vec::new();
        loop {
            let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let start = i.saturating_mul(Self::RUN);
            if start >= self.raw.len() {
                return done;
            }
            let run = &self.raw[start..(start + Self::RUN).min(self.raw.len())];
            done.push((
                i,
                evaluate_profiles(run, &self.scoring, &self.deltas, self.now),
            ));
        }
    }
}

/// [`evaluate_profiles`] over whole pages on two threads, the caller's and one helper that
/// lives as long as the evaluator: decoding is most of a backfill's work, and the writer
/// has little left to do for it. (A thread per page cost a fresh allocator heap each time.)
struct PageEvaluator {
    jobs:
        Option<crossbeam_channel::Sender<(Arc<PageJob>, crossbeam_channel::Sender<EvaluatedRuns>)>>,
    helper: Option<std::thread::JoinHandle<()>>,
}

impl PageEvaluator {
    fn start() -> Result<Self, StoreError> {
        let (jobs, rx) = crossbeam_channel::bounded::<(
            Arc<PageJob>,
            crossbeam_channel::Sender<EvaluatedRuns>,
        )>(1);
        let helper = std::thread::Builder::new()
            .name("kairos-backfill-eval".into())
            .spawn(move || {
                for (job, done) in rx {
                    let _ = done.send(job.work());
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            helper: Some(helper),
        })
    }

    fn evaluate(
        &self,
        raw: Vec<(ProfileId, fjall::Slice)>,
        scoring: Arc<Scoring>,
        deltas: Arc<Deltas>,
        now: Millis,
    ) -> Result<BackfillPage, StoreError> {
        let version = scoring.version;
        let job = Arc::new(PageJob {
            raw: Arc::new(raw),
            scoring,
            deltas,
            now,
            next: std::sync::atomic::AtomicUsize::new(0),
        });
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let helped = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send((job.clone(), done_tx)).is_ok());
        let mut runs = job.work();
        if helped {
            runs.extend(
                done_rx
                    .recv()
                    .map_err(|_| StoreError::Io("the backfill helper stopped".into()))?,
            );
        }
        runs.sort_unstable_by_key(|(i, _)| *i);
        let mut page = BackfillPage::new(version);
        for (_, run) in runs {
            page.append(run?);
        }
        Ok(page)
    }
}

impl Drop for PageEvaluator {
    fn drop(&mut self) {
        // Closing the channel ends the helper's loop.
        self.jobs = None;
        if let Some(h) = self.helper.take() {
            let _ = h.join();
        }
    }
}

/// Progress of bringing every profile up to new definitions.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Backfill {
    pub version: u64,
    pub done: u64,
    /// Profiles when it started (approximate).
    pub total: u64,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
}

/// The handle that feeds the writer thread. Cloneable; the writer stops when every handle
/// is dropped, after finishing what was queued.
#[derive(Clone)]
pub struct Ingestor {
    tx: Sender<Command>,
    /// For the timer and backfill threads (see [`Writer::run`]).
    internal: Sender<Command>,
    store: Store,
    backfill: Arc<Mutex<Option<Backfill>>>,
    /// Stops the timer thread when the last handle is dropped.
    _timers: Arc<StopOnDrop>,
    lateness: Lateness,
    clock: Clock,
    backfill_hook: Option<BackfillHook>,
    /// The version of the definitions last sent to the writer.
    defined: Arc<Mutex<u64>>,
}

/// How late due timers were processed, in milliseconds.
type Lateness = Arc<Mutex<hdrhistogram::Histogram<u64>>>;

/// Timer lateness so far: how long after its due instant each timer was processed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerLateness {
    pub count: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// Stops a helper thread (timers, key filter scan) and waits for it, so that no thread
/// holds the store once the last handle is gone (tests reopen or inspect the files right
/// after).
pub(crate) struct StopOnDrop {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Returned when the queue is full: the caller should answer 429.
pub struct QueueFull(pub Submission);

impl std::fmt::Debug for QueueFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueueFull({} events)", self.0.events.len())
    }
}

impl Ingestor {
    /// Starts the writer thread over `store`.
    pub fn start(store: Store, opts: WriterOptions) -> Result<(Self, JoinHandle<()>), StoreError> {
        let (tx, rx) = crossbeam_channel::bounded(opts.queue_capacity.max(1));
        // Freeing thousands of decoded events per group is measurable on the writer thread;
        // a helper thread frees them instead.
        let (drop_tx, drop_rx) = crossbeam_channel::bounded::<Garbage>(64);
        std::thread::Builder::new()
            .name("kairos-free".into())
            .spawn(move || while drop_rx.recv().is_ok() {})?;
        let interval = opts.timer_interval;
        let clock = opts.clock.clone();
        let ingestor_clock = opts.clock.clone();
        let backfill_hook = opts.backfill_hook.clone();
        let lateness: Lateness = Arc::new(Mutex::new(
            hdrhistogram::Histogram::new(3).map_err(|e| StoreError::Io(e.to_string()))?,
        ));
        let disposal = Disposal {
            graveyard: drop_tx,
            events_back: opts.return_events.clone(),
        };
        let mut writer = Writer::new(store.clone(), opts, disposal, lateness.clone())?;
        // A backfill the last run did not finish (cut short by a crash or a stop).
        let version = store.scoring().version;
        let resume = store
            .backfill_cursor()?
            .filter(|(v, _)| *v == version)
            .map(|(_, after)| after);
        let mut resume_deltas = None;
        if resume.is_some() {
            writer.backfill = Some(BackfillWatch::default());
            let deltas = Arc::new(Deltas::compute(&store, None, &store.scoring()));
            writer.deltas = deltas.clone();
            resume_deltas = Some(deltas);
        }
        let (internal, internal_rx) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new()
            .name("kairos-writer".into())
            .spawn(move || writer.run(rx, internal_rx))?;
        let stop = Arc::new(AtomicBool::new(false));
        let timers = {
            let (tx, store, stop) = (internal.clone(), store.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kairos-timers".into())
                .spawn(move || run_timers(&store, &tx, &stop, interval, &clock))?
        };
        let ingestor = Self {
            tx,
            internal,
            store,
            backfill: Arc::new(Mutex::new(None)),
            _timers: Arc::new(StopOnDrop {
                stop,
                thread: Some(timers),
            }),
            lateness,
            clock: ingestor_clock,
            backfill_hook,
            defined: Arc::new(Mutex::new(version)),
        };
        if let (Some(after), Some(deltas)) = (resume, resume_deltas) {
            let now = ingestor.clock.now();
            ingestor.spawn_backfill(version, None, after, deltas, now)?;
        }
        Ok((ingestor, handle))
    }

    /// Stores new definitions, puts them in force for every event from now on, and starts
    /// bringing every stored profile up to them in the background (see [`Ingestor::backfill`]).
    pub fn define(
        &self,
        scoring: Scoring,
        now: Millis,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let scoring = Arc::new(scoring);
        // Compared with the definitions last sent, not those in force: the writer may not
        // have reached those yet, and a revert to what is in force is still a change then.
        let mut sent = self
            .defined
            .lock()
            .map_err(|_| StoreError::Io("definitions lock poisoned".into()))?;
        // Only campaigns changed: no profile's segments or scores can differ.
        let same = scoring.version == *sent;
        let deltas = (!same).then(|| {
            let in_force = self.store.scoring();
            Arc::new(Deltas::compute(&self.store, Some(&in_force), &scoring))
        });
        let (in_force_tx, in_force_rx) = crossbeam_channel::bounded(1);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Define {
                scoring: scoring.clone(),
                deltas: deltas.clone(),
                in_force: in_force_tx,
                reply,
            })
            .map_err(|_| StoreError::WriterStopped)?;
        *sent = scoring.version;
        if let Some(deltas) = deltas {
            self.spawn_backfill(scoring.version, Some(in_force_rx), None, deltas, now)?;
        }
        Ok(rx)
    }

    /// Starts the backfill thread for definitions `version`, over the profiles after
    /// `after`, once `in_force` says the writer has put them in force.
    fn spawn_backfill(
        &self,
        version: u64,
        in_force: Option<crossbeam_channel::Receiver<()>>,
        after: Option<ProfileId>,
        deltas: Arc<Deltas>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let total = self.store.approximate_counts().profiles;
        let status = Backfill {
            version,
            done: 0,
            total,
            started_at: now,
            finished_at: None,
        };
        if let Ok(mut g) = self.backfill.lock() {
            *g = Some(status);
        }
        let (tx, store, progress, clock, hook) = (
            self.internal.clone(),
            self.store.clone(),
            self.backfill.clone(),
            self.clock.clone(),
            self.backfill_hook.clone(),
        );
        std::thread::Builder::new()
            .name("kairos-backfill".into())
            .spawn(move || {
                // Gone without a word: the writer stopped.
                if in_force.is_some_and(|rx| rx.recv().is_err()) {
                    return;
                }
                let run = Run {
                    version,
                    after,
                    deltas,
                    hook,
                };
                if let Err(e) = run_backfill(&store, &tx, &progress, run, &clock) {
                    tracing::error!("backfill stopped: {e}");
                }
            })?;
        Ok(())
    }

    /// Runs a scheduled campaign at `at` over `profiles` (the caller lists its segment's
    /// members); answers with how many entered it, once that is durable.
    pub fn schedule(
        &self,
        campaign: &str,
        at: Millis,
        profiles: Vec<ProfileId>,
    ) -> Result<oneshot::Receiver<Result<usize, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.internal
            .send(Command::Schedule {
                campaign: campaign.to_string(),
                at,
                profiles,
                reply,
            })
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(rx)
    }

    /// How late timers have been processed since start.
    pub fn timer_lateness(&self) -> TimerLateness {
        match self.lateness.lock() {
            Ok(h) => TimerLateness {
                count: h.len(),
                p50_ms: h.value_at_quantile(0.5),
                p99_ms: h.value_at_quantile(0.99),
                max_ms: h.max(),
            },
            Err(_) => TimerLateness::default(),
        }
    }

    /// Progress of the newest backfill, if any ran since start.
    pub fn backfill(&self) -> Option<Backfill> {
        self.backfill.lock().ok().and_then(|g| g.clone())
    }

    /// Queues a submission unless the queue is full.
    pub fn try_submit(&self, sub: Submission) -> Result<(), QueueFull> {
        match self.tx.try_send(Command::Ingest(sub)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(cmd) | TrySendError::Disconnected(cmd)) => match cmd {
                Command::Ingest(s) => Err(QueueFull(s)),
                _ => unreachable!("try_send returns the command it was given"),
            },
        }
    }

    /// Queues a submission, waiting for room (imports).
    pub fn submit(&self, sub: Submission) -> Result<(), StoreError> {
        self.tx
            .send(Command::Ingest(sub))
            .map_err(|_| StoreError::WriterStopped)
    }

    /// Erases a person: events, identifiers, dedupe keys, dead letters, the profile and its
    /// redirects. With `keep_suppression`, hashes of the identifiers are kept so that late
    /// events for the person are dropped instead of re-creating them.
    pub fn erase(
        &self,
        id: ProfileId,
        keep_suppression: bool,
        at: Millis,
    ) -> Result<oneshot::Receiver<Result<Option<Erased>, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Erase {
                id,
                keep_suppression,
                at,
                reply,
            })
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(rx)
    }

    /// Forgets messageIds that arrived more than `retention_days` before `now` (so their
    /// events would be accepted again); answers with how many.
    pub fn prune_dedupe(
        &self,
        now: Millis,
        retention_days: u32,
    ) -> Result<oneshot::Receiver<Result<u64, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.internal
            .send(Command::PruneDedupe {
                now,
                days: retention_days,
                reply,
            })
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(rx)
    }

    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }

    /// Stops the writer after what is already queued, until the returned guard is dropped.
    /// Submissions queue meanwhile (and are refused once the queue is full). For consistent
    /// file-level backups and for tests of backpressure.
    pub fn pause(&self) -> Result<PauseGuard, StoreError> {
        let (tx, rx) = crossbeam_channel::bounded(0);
        self.tx
            .send(Command::Hold(rx))
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(PauseGuard { _release: tx })
    }
}

/// What a batch writes that the writer may need to read back before it is committed:
/// identity and dedupe entries, and the events and redirects merges and replays read.
#[derive(Default)]
struct Unwritten {
    ids: HashMap<Vec<u8>, ProfileId>,
    /// Sealed event chunks by the seq of their first event.
    chunks: std::collections::BTreeMap<u64, fjall::Slice>,
    /// `redirected` entries added: new id -> the old ids that now redirect to it.
    redirected: HashMap<u64, Vec<u64>>,
    /// `redirects` entries added: old id -> new id.
    redirects: HashMap<u64, u64>,
}

/// A planned group on its way to disk.
struct Handoff {
    batch: SortedBatch,
    sync: bool,
    replies: Vec<(Reply<Outcome>, Outcome)>,
    /// Timer batches of the group: their thread waits until these are dropped.
    dones: Vec<Sender<()>>,
    events: usize,
    started: std::time::Instant,
    /// For the observer, when there is one.
    fed: Vec<Fed>,
}

/// A submission's events, kept for the observer until their group is durable, and which
/// of them were accepted: (index in `events`, seq, profile).
struct Fed {
    events: Vec<Prepared>,
    accepted: Vec<(usize, u64, ProfileId)>,
}

/// Tells `observer` of a durable group's accepted events.
fn tell(observer: &dyn Observer, fed: &[Fed]) {
    let accepted: Vec<Accepted<'_>> = fed
        .iter()
        .flat_map(|f| {
            f.accepted.iter().filter_map(move |&(i, seq, profile)| {
                f.events.get(i).map(|p| Accepted {
                    seq,
                    profile,
                    event: &p.event,
                })
            })
        })
        .collect();
    if !accepted.is_empty() {
        observer.durable(&accepted);
    }
}

/// The committer thread: commits and fsyncs handed-over groups in order and answers their
/// requests.
struct Committer {
    tx: Sender<Handoff>,
    results: Receiver<Result<(), StoreError>>,
    thread: JoinHandle<()>,
}

impl Committer {
    fn start(
        store: Store,
        observer: Option<Arc<dyn Observer>>,
        disposal: Disposal,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = crossbeam_channel::bounded::<Handoff>(1);
        let (done, results) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("kairos-commit".into())
            .spawn(move || {
                while let Ok(h) = rx.recv() {
                    let writing = std::time::Instant::now();
                    let result = h
                        .batch
                        .into_write_batch(&store.db)
                        .commit()
                        .map_err(StoreError::from)
                        .and_then(|()| {
                            metrics::histogram!("kairos_group_write_seconds")
                                .record(writing.elapsed().as_secs_f64());
                            if !h.sync {
                                return Ok(());
                            }
                            let syncing = std::time::Instant::now();
                            let synced = store.persist();
                            metrics::histogram!("kairos_group_fsync_seconds")
                                .record(syncing.elapsed().as_secs_f64());
                            synced
                        });
                    let committed = result.is_ok();
                    match &result {
                        Ok(()) => {
                            for (reply, outcome) in h.replies {
                                let _ = reply.send(Ok(outcome));
                            }
                            metrics::counter!("kairos_events_committed_total")
                                .increment(h.events as u64);
                            metrics::counter!("kairos_group_commits_total").increment(1);
                            metrics::histogram!("kairos_group_commit_seconds")
                                .record(h.started.elapsed().as_secs_f64());
                        }
                        Err(e) => {
                            tracing::error!("group commit failed: {e}");
                            for (reply, _) in h.replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    // The writer waits for the commit, not for the observer: it plans the
                    // next group while the observer reads this one. The observer still sees
                    // every group before the next one commits (this thread takes them in
                    // turn), so before any later erasure is answered.
                    let writer_gone = done.send(result).is_err();
                    if committed {
                        if let Some(o) = &observer {
                            tell(o.as_ref(), &h.fed);
                        }
                    }
                    drop(h.dones);
                    if !h.fed.is_empty() {
                        disposal.discard(Garbage::Fed(h.fed));
                    }
                    if writer_gone {
                        break;
                    }
                }
            })?;
        Ok(Self {
            tx,
            results,
            thread,
        })
    }
}

/// Keeps the writer paused while alive.
pub struct PauseGuard {
    _release: crossbeam_channel::Sender<()>,
}

enum Verdict {
    Accepted { seq: u64, profile: ProfileId },
    Duplicate,
    Suppressed,
}

struct Writer {
    store: Store,
    opts: WriterOptions,
    cache: HashMap<ProfileId, Profile>,
    dirty: HashSet<ProfileId>,
    batch: SortedBatch,
    /// The chunk of events being filled; it goes into the batch when full or with it.
    chunk: Option<ChunkBuilder>,
    /// MessageIds accepted and not yet in the `dedupe` keyspace (see `crate::dedupe`).
    recent: crate::dedupe::Recent,
    /// What the pending batch writes, readable before it is committed.
    pending: Unwritten,
    /// The same for the group the committer holds.
    inflight_writes: Unwritten,
    committer: Option<Committer>,
    /// A group has been handed to the committer and its result not yet received.
    inflight: bool,
    /// Identity index entries already read or written, so hot identifiers skip the store.
    /// Only this thread writes the index, so the cache cannot go stale.
    id_cache: HashMap<Vec<u8>, ProfileId>,
    /// In-memory answers to "is this messageId / identifier stored?" that rule out most
    /// absent keys without reading the store (see [`crate::probe`]).
    dedupe_probe: crate::probe::Probe,
    id_probe: crate::probe::Probe,
    next_seq: u64,
    next_dead: u64,
    suppress_active: bool,
    disposal: Disposal,
    /// From earlier definitions to these, when only segments changed: lets a backfill
    /// evaluate just the new and edited segments.
    deltas: Arc<Deltas>,
    /// The sequence number the next entry of the definitions history gets.
    next_history: u64,
    scoring: Arc<Scoring>,
    next_change: u64,
    /// `next_change` as the newest batch stores it.
    written_next_change: u64,
    /// Event names ever seen, so rules naming others get a warning.
    known_events: HashSet<String>,
    /// While a backfill runs: what happened to profiles since it started.
    backfill: Option<BackfillWatch>,
    lateness: Lateness,
    /// Campaign report counters written so far (see [`Writer::count_stat`]).
    stats: HashMap<Vec<u8>, (u64, f64)>,
}

impl Writer {
    fn new(
        store: Store,
        opts: WriterOptions,
        disposal: Disposal,
        lateness: Lateness,
    ) -> Result<Self, StoreError> {
        let (last_seq, last_dead) = store.last_seqs()?;
        let next_change = store.next_change_seq()?;
        let known_events = store.known_events()?.into_iter().collect();
        let next_history = store
            .definitions_history()?
            .last()
            .map_or(0, |(seq, _)| seq + 1);
        let committer = Committer::start(store.clone(), opts.observer.clone(), disposal.clone())?;
        Ok(Self {
            dedupe_probe: crate::probe::Probe::start(
                store.dedupe.clone(),
                opts.key_filter_rebuild_after,
            ),
            id_probe: crate::probe::Probe::start(
                store.identity.clone(),
                opts.key_filter_rebuild_after,
            ),
            committer: Some(committer),
            inflight: false,
            inflight_writes: Unwritten::default(),
            lateness,
            backfill: None,
            known_events,
            scoring: store.scoring(),
            next_change,
            written_next_change: next_change,
            batch: SortedBatch::default(),
            chunk: None,
            recent: crate::dedupe::Recent::load(&store.dedupe_recent)?,
            suppress_active: store.has_suppressions(),
            store,
            opts,
            cache: HashMap::default(),
            dirty: HashSet::default(),
            pending: Unwritten::default(),
            id_cache: HashMap::default(),
            next_seq: last_seq + 1,
            next_dead: last_dead + 1,
            disposal,
            deltas: Arc::default(),
            next_history,
            stats: HashMap::default(),
        })
    }

    /// `rx` carries callers' commands (bounded: a full queue is a 429); `internal` the
    /// timer and backfill threads' (they limit themselves to a few in flight, and must not
    /// take the room clients' requests are refused for).
    fn run(&mut self, rx: Receiver<Command>, internal: Receiver<Command>) {
        loop {
            if self.inflight && rx.is_empty() && internal.is_empty() {
                // Nothing to plan meanwhile: take the result now, so that what the writer
                // reads back comes from the store again (dedupe pruning writes there too).
                let _ = self.settle();
            }
            let first = crossbeam_channel::select! {
                recv(rx) -> m => match m {
                    Ok(c) => c,
                    // Every handle is gone: finish.
                    Err(_) => break,
                },
                recv(internal) -> m => match m {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            if let Command::Hold(release) = first {
                // Paused means everything before is on disk.
                let _ = self.settle();
                // Returns when the guard is dropped (the channel disconnects).
                let _ = release.recv();
                continue;
            }
            let mut group = vec![first];
            let mut events = group_size(&group[0]);
            while events < self.opts.max_group_events {
                let next = rx.try_recv().or_else(|_| internal.try_recv());
                match next {
                    Ok(Command::Hold(release)) => {
                        self.run_group(std::mem::take(&mut group));
                        let _ = self.settle();
                        let _ = release.recv();
                        break;
                    }
                    Ok(cmd) => {
                        events += group_size(&cmd);
                        group.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            self.run_group(group);
        }
        if let Err(e) = self.flush().and_then(|_| self.store.persist()) {
            tracing::error!("final flush failed: {e}");
        }
        if let Some(c) = self.committer.take() {
            drop(c.tx);
            let _ = c.thread.join();
        }
    }

    fn run_group(&mut self, group: Vec<Command>) {
        if group.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        // Erasures and definitions read what earlier groups wrote and are answered by this
        // thread: their groups are committed before going on. Timers and backfill pages read
        // only profiles (cached while unwritten), redirects (see `resolve_id`) and events
        // (`Unwritten`), and are answered by the committer.
        let pipelined = group.iter().all(|c| {
            matches!(
                c,
                Command::Ingest(_) | Command::Tick { .. } | Command::Rebuild { .. }
            )
        });
        // Backfill pages alone are not fsync'd: they only bring derived state up to
        // definitions already durable, the next fsync'd group persists them too (the
        // journal is written in order), and after a crash the backfill resumes from the
        // cursor that reached the disk with them. One fsync per page was most of a
        // backfill's time.
        let sync = self.opts.sync && !group.iter().all(|c| matches!(c, Command::Rebuild { .. }));
        let mut pruned: Vec<(Reply<u64>, u64)> = Vec::new();
        if self.recent.len() >= self.opts.dedupe_ingest_after {
            // Nothing of this group is planned yet: once the group in flight is committed,
            // every recent messageId is in a committed group record.
            if let Err(e) = self.ingest_recent() {
                tracing::error!("moving recent messageIds into the dedupe index: {e}");
            }
        }
        let mut scheduled: Vec<(Reply<usize>, usize)> = Vec::new();
        if !pipelined {
            // A failure was answered by the committer and reset the caches; this group
            // starts from the store as it is.
            let _ = self.settle();
        }
        if self.dedupe_probe.wants_rebuild() || self.id_probe.wants_rebuild() {
            // A rescan must find every key recorded so far: commit what is in flight first
            // (nothing of this group is planned yet).
            if self.settle().is_ok() && self.pending.ids.is_empty() {
                for probe in [&mut self.dedupe_probe, &mut self.id_probe] {
                    if probe.wants_rebuild() {
                        probe.rebuild();
                    }
                }
            }
        }
        let mut outcomes: Vec<(Reply<Outcome>, Outcome)> = Vec::new();
        let mut erasures = Vec::new();
        let mut dones: Vec<Sender<()>> = Vec::new();
        let mut defined: Vec<Reply<()>> = Vec::new();
        let mut fed: Vec<Fed> = Vec::new();
        let mut n_events = 0usize;
        let result = (|| -> Result<(), StoreError> {
            for cmd in group {
                match cmd {
                    Command::Ingest(mut sub) => {
                        n_events += sub.events.len();
                        let mut accepted = Vec::new();
                        let observed = self.opts.observer.is_some();
                        let outcome = self.ingest(&sub, observed.then_some(&mut accepted))?;
                        if let Some(reply) = sub.reply.take() {
                            outcomes.push((reply, outcome));
                        }
                        let events = std::mem::take(&mut sub.events);
                        if accepted.is_empty() {
                            self.disposal.discard(Garbage::Events(events));
                        } else {
                            fed.push(Fed { events, accepted });
                        }
                    }
                    Command::Erase {
                        id,
                        keep_suppression,
                        at,
                        reply,
                    } => {
                        let erased = self.erase(id, keep_suppression, at)?;
                        erasures.push((reply, erased));
                    }
                    Command::Tick { due, done } => {
                        self.tick(due)?;
                        dones.push(done);
                    }
                    Command::Schedule {
                        campaign,
                        at,
                        profiles,
                        reply,
                    } => {
                        let n = self.schedule(&campaign, at, profiles)?;
                        scheduled.push((reply, n));
                    }
                    Command::Rebuild { page, done } => {
                        self.record_backfill_page(page)?;
                        dones.push(done);
                    }
                    Command::BackfillDone(v) if v == self.scoring.version => {
                        self.backfill = None;
                        self.batch.remove(&self.store.meta, BACKFILL_KEY);
                    }
                    Command::BackfillDone(_) => {}
                    Command::Define {
                        scoring,
                        deltas,
                        in_force,
                        reply,
                    } => {
                        let json = serde_json::to_vec(&scoring.definitions)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        self.batch
                            .insert(&self.store.meta, DEFINITIONS_KEY, json.clone());
                        if let Some(deltas) = deltas {
                            self.deltas = deltas;
                        }
                        // Campaign-only edits keep the version: no backfill follows.
                        if scoring.version != self.scoring.version {
                            self.remember_definitions(json);
                            // The backfill thread starts reading as soon as the definitions
                            // are in force: whatever the writer wrote before must be in the
                            // store by then, and whatever it writes after is tracked.
                            self.settle()?;
                            self.backfill = Some(BackfillWatch::default());
                            // Committed with the definitions: a crash before the first
                            // page still leaves a backfill to resume.
                            let cursor = u64_key(scoring.version).to_vec();
                            self.batch.insert(&self.store.meta, BACKFILL_KEY, cursor);
                        }
                        self.scoring = scoring.clone();
                        self.store.set_scoring(scoring);
                        let _ = in_force.send(());
                        defined.push(reply);
                    }
                    Command::PruneDedupe { now, days, reply } => {
                        self.ingest_recent()?;
                        let n = self.store.prune_dedupe(now, days)?;
                        pruned.push((reply, n));
                    }
                    Command::Hold(_) => {}
                }
            }
            let batch = self.take_batch();
            metrics::histogram!("kairos_group_plan_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("kairos_group_events").record(n_events as f64);
            // The group in flight must be durable before this one goes: it was planned on
            // top of it.
            let waiting = std::time::Instant::now();
            self.settle()?;
            metrics::histogram!("kairos_group_wait_seconds")
                .record(waiting.elapsed().as_secs_f64());
            self.inflight_writes = std::mem::take(&mut self.pending);
            let handoff = Handoff {
                batch,
                sync,
                replies: std::mem::take(&mut outcomes),
                dones: std::mem::take(&mut dones),
                events: n_events,
                started,
                fed: std::mem::take(&mut fed),
            };
            let committer = self.committer.as_ref().ok_or(StoreError::WriterStopped)?;
            committer
                .tx
                .send(handoff)
                .map_err(|_| StoreError::WriterStopped)?;
            self.inflight = true;
            if !pipelined {
                self.settle()?;
                if !erasures.is_empty() {
                    self.store.purge_deleted()?;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                for (reply, erased) in erasures {
                    let _ = reply.send(Ok(erased));
                }
                for (reply, n) in scheduled {
                    let _ = reply.send(Ok(n));
                }
                for reply in defined {
                    let _ = reply.send(Ok(()));
                }
                for (reply, n) in pruned {
                    let _ = reply.send(Ok(n));
                }
            }
            Err(e) => {
                tracing::error!("group failed: {e}");
                // Nothing of this group was acknowledged; forget what the cache may hold of it.
                self.forget_uncommitted();
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(e.clone()));
                }
                for (reply, _) in erasures {
                    let _ = reply.send(Err(e.clone()));
                }
                for (reply, _) in scheduled {
                    let _ = reply.send(Err(e.clone()));
                }
                for reply in defined {
                    let _ = reply.send(Err(e.clone()));
                }
                for (reply, _) in pruned {
                    let _ = reply.send(Err(e.clone()));
                }
                // Definitions that did not commit are not in force either.
                if let Ok(Some(defs)) = self.store.definitions() {
                    if let Ok(s) = Scoring::compile(&defs, None) {
                        self.scoring = Arc::new(s);
                        self.store.set_scoring(self.scoring.clone());
                    }
                }
            }
        }
        // Timer and backfill threads wait for these; dropping them answers.
        drop(dones);
        if self.cache.len() > self.opts.cache_profiles {
            // An evicted profile is read from the store next time: its write must be there.
            if self.settle().is_ok() {
                let keep = self.opts.cache_profiles / 2;
                let mut i = 0usize;
                let evicted: Vec<Profile> = self
                    .cache
                    .extract_if(|_, _| {
                        i += 1;
                        i > keep
                    })
                    .map(|(_, p)| p)
                    .collect();
                // Freeing a hundred thousand profiles stalled the writer (and every timer
                // and request behind it) for a good part of a second.
                self.disposal.discard(Garbage::Profiles(evicted));
            }
        }
    }

    /// Waits for the group in flight. On failure (answered by the committer) forgets every
    /// cached state, since it may include what did not commit.
    fn settle(&mut self) -> Result<(), StoreError> {
        if !self.inflight {
            return Ok(());
        }
        self.inflight = false;
        self.inflight_writes = Unwritten::default();
        let result = match &self.committer {
            Some(c) => c.results.recv().unwrap_or(Err(StoreError::WriterStopped)),
            None => Err(StoreError::WriterStopped),
        };
        if result.is_err() {
            self.forget_uncommitted();
        }
        result
    }

    fn forget_uncommitted(&mut self) {
        self.stats.clear();
        self.cache.clear();
        self.dirty.clear();
        self.id_cache.clear();
        self.pending = Unwritten::default();
        self.inflight_writes = Unwritten::default();
        self.batch = SortedBatch::default();
        self.chunk = None;
        // What the failed groups accepted is not recorded: keep only the committed records.
        self.recent = crate::dedupe::Recent::load(&self.store.dedupe_recent).unwrap_or_default();
    }

    /// Moves the recent messageIds into the `dedupe` keyspace (sorted, in bulk).
    fn ingest_recent(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        let s = &self.store;
        let n = self.recent.ingest(&s.db, &s.dedupe, &s.dedupe_recent)?;
        metrics::counter!("kairos_dedupe_ingested_total").increment(n as u64);
        Ok(())
    }

    /// Folds a submission's events in; lists the accepted ones in `accepted` when given.
    fn ingest(
        &mut self,
        sub: &Submission,
        mut accepted: Option<&mut Vec<(usize, u64, ProfileId)>>,
    ) -> Result<Outcome, StoreError> {
        let mut out = Outcome::default();
        for r in &sub.rejected {
            let dl = DeadLetter {
                seq: self.next_dead,
                received_at: sub.received_at,
                source: sub.source.clone(),
                index: r.index,
                message_id: r.message_id.clone(),
                error: r.error.to_string(),
                raw: r.raw.clone(),
            };
            let bytes = serde_json::to_vec(&dl).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.batch
                .insert(&self.store.dead, u64_key(self.next_dead), bytes);
            self.next_dead += 1;
            out.dead_lettered += 1;
        }
        for (i, p) in sub.events.iter().enumerate() {
            match self.ingest_event(&p.event, &p.bytes)? {
                Verdict::Accepted { seq, profile } => {
                    out.accepted += 1;
                    if let Some(list) = accepted.as_deref_mut() {
                        list.push((i, seq, profile));
                    }
                }
                Verdict::Duplicate => out.duplicates += 1,
                Verdict::Suppressed => out.suppressed += 1,
            }
        }
        Ok(out)
    }

    fn lookup(&mut self, key: &IdKey) -> Result<Option<ProfileId>, StoreError> {
        let k = key.index_key();
        if let Some(id) = self
            .pending
            .ids
            .get(&k)
            .or_else(|| self.inflight_writes.ids.get(&k))
            .or_else(|| self.id_cache.get(&k))
        {
            return Ok(Some(*id));
        }
        if !self.id_probe.may_contain(&k) {
            return Ok(None);
        }
        let found = self.store.lookup(key)?;
        if let Some(id) = found {
            if self.id_cache.len() >= self.opts.cache_profiles.saturating_mul(3) {
                let full = std::mem::take(&mut self.id_cache);
                self.disposal.discard(Garbage::Ids(full));
            }
            self.id_cache.insert(k, id);
        }
        Ok(found)
    }

    fn load(&mut self, id: ProfileId) -> Result<&mut Profile, StoreError> {
        if !self.cache.contains_key(&id) {
            let p = self
                .store
                .profile(id)?
                .ok_or_else(|| StoreError::Corrupt(format!("identity points at missing {id}")))?;
            self.cache.insert(id, p);
        }
        self.cache
            .get_mut(&id)
            .ok_or_else(|| StoreError::corrupt("cache"))
    }

    fn ingest_event(&mut self, ev: &Event, encoded: &[u8]) -> Result<Verdict, StoreError> {
        if self.recent.contains(&ev.message_id)
            || (self.dedupe_probe.may_contain(ev.message_id.as_bytes())
                && self.store.is_duplicate(&ev.message_id)?)
        {
            return Ok(Verdict::Duplicate);
        }
        let traits = &self.opts.core.identity_traits;
        let ids = event_identifiers(ev, traits);
        if self.suppress_active {
            for k in &ids {
                if self.store.is_suppressed(k)? {
                    return Ok(Verdict::Suppressed);
                }
            }
        }
        // Most events come from someone known under every identifier they carry: then the
        // rules link and merge nothing (rules 3 and 4 of `identity`), and planning, with its
        // lookups of each found profile's userIds, is skipped. Aliases always plan.
        if ev.kind != EventKind::Alias {
            if let Some(id) = self.sole_profile(&ids)? {
                self.dirty.remove(&id);
                let profile = match self.cache.remove(&id) {
                    Some(p) => p,
                    None => self.store.profile(id)?.ok_or_else(|| {
                        StoreError::Corrupt(format!("identity points at missing {id}"))
                    })?,
                };
                debug_assert_eq!(canonical_id(&profile.identifiers), Some(id));
                let old_timer = profile.timer();
                return self.append_and_fold(ev, encoded, profile, false, old_timer);
            }
        }
        let traits = self.opts.core.identity_traits.clone();
        // Look up every identifier the rules may ask about, then plan without IO.
        let mut candidates = ids.clone();
        if let Some(user) = &ev.user_id {
            candidates.push(IdKey::anonymous(user));
        }
        if ev.kind == EventKind::Alias {
            if let Some(prev) = &ev.previous_id {
                candidates.push(IdKey::user(prev));
                candidates.push(IdKey::anonymous(prev));
            }
        }
        let mut found: HashMap<IdKey, Found> = HashMap::default();
        for k in candidates {
            if let Some(id) = self.lookup(&k)? {
                let user_ids = self.load(id)?.user_ids();
                found.insert(k, Found { id, user_ids });
            }
        }
        let plan = identity::plan(ev, &traits, |k| found.get(k).cloned());
        if !plan.conflicts.is_empty() {
            metrics::counter!("kairos_identity_conflicts_total").increment(1);
            tracing::debug!(
                message_id = %ev.message_id,
                "identifiers left with another person: {:?}",
                plan.conflicts
            );
        }

        // The identifiers the target will hold, hence its canonical id.
        let mut identifiers = match plan.target {
            Some(id) => self.load(id)?.identifiers.clone(),
            None => Default::default(),
        };
        for m in &plan.merge {
            identifiers.extend(self.load(*m)?.identifiers.iter().cloned());
        }
        identifiers.extend(plan.link.iter().cloned());
        let final_id = canonical_id(&identifiers)
            .ok_or_else(|| StoreError::corrupt("event without identifiers"))?;
        // Profiles whose records and events move under the final id. A merged profile may
        // already have the final id (it held the smallest userId): it is the home, not a source.
        let mut sources: Vec<ProfileId> = plan.merge.clone();
        sources.extend(plan.target);
        sources.retain(|s| *s != final_id);

        let mut profile = match plan.target {
            Some(id) => {
                self.dirty.remove(&id);
                self.cache
                    .remove(&id)
                    .ok_or_else(|| StoreError::corrupt("cache"))?
            }
            None => Profile::new(final_id),
        };
        if !sources.is_empty() {
            // A merged-in person's timers that came due before this event still fire, at
            // their instants, as they would have had the timer thread been quicker.
            for m in &plan.merge {
                if Some(*m) == plan.target || *m == final_id {
                    continue;
                }
                let now = ev.received_at.max(ev.timestamp);
                let scoring = self.scoring.clone();
                let (old, new, changes) = {
                    let p = self.load(*m)?;
                    let old = p.timer();
                    let changes = p.catch_up(&scoring, now);
                    (old, p.timer(), changes)
                };
                if !changes.is_empty() || old != new {
                    self.record_effects(*m, old, new, &changes)?;
                    self.dirty.insert(*m);
                }
            }
        }
        // Every merged person's campaign journeys and sends come along (sends count toward
        // caps), and their events: their chains join the profile's. This includes a merged
        // profile that is the home (holds the final id) while the event found no target.
        for m in &plan.merge {
            if Some(*m) != plan.target {
                let merged = self.load(*m)?;
                let (messaging, heads) = (merged.messaging.clone(), merged.log_heads.clone());
                profile.absorb_messaging(messaging);
                for h in heads {
                    if !profile.log_heads.contains(&h) {
                        profile.log_heads.push(h);
                    }
                }
            }
        }
        for s in &sources {
            self.move_profile(*s, final_id)?;
        }
        profile.id = final_id;
        if !plan.merge.is_empty() {
            metrics::counter!("kairos_profile_merges_total").increment(plan.merge.len() as u64);
        }
        let mut old_timer = profile.timer();
        if let Some(old_id) = plan.target.filter(|t| *t != final_id) {
            // The person's derived index entries move to the new id with them.
            self.forget_derived(old_id, &profile);
            for (seg, since) in profile.derived.segments.iter() {
                self.batch.insert(
                    &self.store.members,
                    named_key(seg, final_id.0),
                    (*since as u64).to_be_bytes(),
                );
            }
            old_timer = None;
        }
        let newly_linked: Vec<IdKey> = if sources.is_empty() {
            plan.link.clone()
        } else {
            identifiers.iter().cloned().collect()
        };
        profile.identifiers = identifiers;
        for k in newly_linked {
            let key = k.index_key();
            self.batch
                .insert(&self.store.identity, key.clone(), u64_key(final_id.0));
            self.id_probe.insert(&key);
            self.id_cache.insert(key.clone(), final_id);
            self.pending.ids.insert(key, final_id);
        }

        self.append_and_fold(ev, encoded, profile, !plan.merge.is_empty(), old_timer)
    }

    /// The profile every identifier of an event points at, when they all point at one.
    fn sole_profile(&mut self, ids: &[IdKey]) -> Result<Option<ProfileId>, StoreError> {
        let mut sole = None;
        for k in ids {
            match self.lookup(k)? {
                Some(id) if sole.is_none_or(|s| s == id) => sole = Some(id),
                _ => return Ok(None),
            }
        }
        Ok(sole)
    }

    /// Appends the event to `profile` (taken out of the cache, its identity settled), folds
    /// it in or replays the person's history, writes the effects, and caches the profile.
    fn append_and_fold(
        &mut self,
        ev: &Event,
        encoded: &[u8],
        mut profile: Profile,
        merged: bool,
        old_timer: Option<Millis>,
    ) -> Result<Verdict, StoreError> {
        let final_id = profile.id;
        let replay = if merged {
            Some("merge")
        } else if profile.needs_replay(ev, &self.scoring) {
            Some(
                if profile.derived.replay_version != self.scoring.replay_version {
                    "definitions changed"
                } else {
                    "late event"
                },
            )
        } else {
            None
        };
        // Append the event, linked to the person's previous one, and fold it in.
        let seq = self.next_seq;
        self.next_seq += 1;
        let prev = match profile.log_heads.first_mut() {
            Some(head) => std::mem::replace(head, seq),
            None => {
                profile.log_heads.push(seq);
                NO_PREV
            }
        };
        self.append_event(seq, prev, ev.timestamp, encoded);
        self.recent
            .insert(&ev.message_id, day_of(ev.received_at), seq);
        self.dedupe_probe.insert(ev.message_id.as_bytes());
        if let Some(name) = ev.activity_name() {
            if !self.known_events.contains(name) {
                self.known_events.insert(name.to_string());
                self.batch
                    .insert(&self.store.meta, known_event_key(name), []);
            }
        }
        // Evaluated at the arrival time recorded with the event, not at this thread's
        // clock: the result is then a function of the log alone.
        let now = ev.received_at;
        let changes = match replay {
            Some(why) => {
                let mut events = self.history(&profile.log_heads)?;
                metrics::counter!("kairos_profile_replays_total", "why" => why).increment(1);
                profile.rebuild(&mut events, &self.opts.core, &self.scoring, now, why)
            }
            None => profile.apply(ev, &self.opts.core, &self.scoring, now),
        };
        self.record_effects(final_id, old_timer, profile.timer(), &changes)?;
        self.cache.insert(final_id, profile);
        self.dirty.insert(final_id);
        Ok(Verdict::Accepted {
            seq,
            profile: final_id,
        })
    }

    /// Puts an event into the open chunk, starting a new chunk when it is full.
    fn append_event(&mut self, seq: u64, prev: u64, time: Millis, encoded: &[u8]) {
        if self
            .chunk
            .as_ref()
            .is_some_and(|c| c.is_full() || c.next_seq() != seq)
        {
            self.seal_chunk();
        }
        self.chunk
            .get_or_insert_with(|| ChunkBuilder::new(seq))
            .push(prev, time, encoded);
    }

    /// Moves the open chunk into the batch.
    fn seal_chunk(&mut self) {
        if let Some(c) = self.chunk.take() {
            let first = c.first;
            let bytes = fjall::Slice::from(c.finish());
            self.batch
                .insert(&self.store.events, u64_key(first), bytes.clone());
            self.pending.chunks.insert(first, bytes);
        }
    }

    /// Every event on the chains at `heads` (a profile's), unwritten ones included, in any
    /// order ([`Profile::rebuild`] sorts them).
    fn history(&self, heads: &[u64]) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        let unwritten = |seq: u64| {
            if let Some((prev, time, payload)) = self.chunk.as_ref().and_then(|c| c.get(seq)) {
                return Some((prev, time, fjall::Slice::from(payload)));
            }
            [&self.pending, &self.inflight_writes]
                .into_iter()
                .find_map(|w| {
                    let (first, bytes) = w.chunks.range(..=seq).next_back()?;
                    let r = Chunk::parse(bytes).ok()?.record((seq - first) as usize)?;
                    Some((r.prev, r.time, fjall::Slice::from(r.payload)))
                })
        };
        self.store.walk_events(heads, unwritten, |_, _, payload| {
            // Only rebuilds read these: the fold's view of each event is enough.
            events.push(decode_event_for_fold(payload)?);
            Ok(())
        })?;
        Ok(events)
    }

    /// Writes what an evaluation changed: the timer index, segment members, and the change
    /// records with their stream and profile index entries.
    fn record_effects(
        &mut self,
        id: ProfileId,
        old_timer: Option<Millis>,
        new_timer: Option<Millis>,
        changes: &[Change],
    ) -> Result<(), StoreError> {
        let s = &self.store;
        let mut stats: Vec<(String, String, &'static str, f64)> = Vec::new();
        // The index only needs an entry at or before each person's timer: a timer that moved
        // later (every event of someone active pushes "active in the last 15 minutes" on)
        // keeps its earlier entry, which fires, finds nothing due and is replaced then (see
        // `tick`). Rewriting the entry on every event was two of the three store keys an
        // event cost.
        let earlier = match (old_timer, new_timer) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) => new < old,
        };
        if earlier {
            if let Some(t) = old_timer {
                self.batch.remove(&s.timers, timer_key(t, id));
            }
            if let Some(t) = new_timer {
                self.batch.insert(&s.timers, timer_key(t, id), []);
            }
        }
        for c in changes {
            let seq = self.next_change;
            self.next_change += 1;
            match &c.kind {
                ChangeKind::Enter { segment } => self.batch.insert(
                    &s.members,
                    named_key(segment, id.0),
                    (c.at as u64).to_be_bytes(),
                ),
                ChangeKind::Exit { segment } => {
                    self.batch.remove(&s.members, named_key(segment, id.0))
                }
                ChangeKind::Message {
                    campaign,
                    step,
                    message_id,
                    status,
                } => {
                    use kairos_core::campaign::MessageStatus as M;
                    let (variant, metric, value) = match status {
                        M::Queued(o) => {
                            let row = crate::store::OutboxRow {
                                message_id: message_id.clone(),
                                campaign: campaign.clone(),
                                step: *step,
                                variant: o.variant.clone(),
                                template: o.template.clone(),
                                channel: o.channel.clone(),
                                purpose: o.purpose.clone(),
                                to: o.to.clone(),
                                profile: id.0,
                                event: o.event.clone(),
                                queued_at: c.at,
                                due: c.at,
                                status: "scheduled".into(),
                                attempts: 0,
                                last_error: None,
                                uncertain: false,
                            };
                            let bytes = serde_json::to_vec(&row)
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                            self.batch.insert(
                                &s.outbox,
                                crate::store::outbox_key(c.at, message_id),
                                bytes,
                            );
                            (o.variant.as_str(), "queued", 0.0)
                        }
                        M::Engaged {
                            variant,
                            metric,
                            value,
                        } => (variant.as_deref().unwrap_or(""), metric.as_str(), *value),
                        M::Holdout => ("holdout", "holdout", 0.0),
                        other => ("", other.as_str(), 0.0),
                    };
                    stats.push((campaign.clone(), variant.to_string(), metric, value));
                }
                _ => {}
            }
            let stream = c.stream();
            let bytes = c.encode(seq, id);
            self.batch
                .insert(&s.stream_changes, named_key(&stream, seq), bytes);
            self.batch
                .insert(&s.timeline, pair_key(id.0, seq), stream.into_bytes());
            metrics::counter!("kairos_segment_changes_total").increment(1);
        }
        for (campaign, variant, metric, value) in stats {
            self.count_stat(&campaign, &variant, metric, value)?;
        }
        Ok(())
    }

    /// Adds one occurrence (and `value`) to a campaign report counter. Only this thread
    /// writes them; the newest values are kept here so a group reads each key once.
    fn count_stat(
        &mut self,
        campaign: &str,
        variant: &str,
        metric: &str,
        value: f64,
    ) -> Result<(), StoreError> {
        let key = crate::store::stat_key(campaign, variant, metric);
        let (n, sum) = match self.stats.get(&key) {
            Some(v) => *v,
            None => self
                .store
                .campaign_stats
                .get(&key)?
                .map_or((0, 0.0), |v| crate::store::decode_stat(&v)),
        };
        let next = (n + 1, sum + value);
        self.batch.insert(
            &self.store.campaign_stats,
            key.clone(),
            crate::store::encode_stat(next.0, next.1),
        );
        if self.stats.len() > 100_000 {
            self.stats.clear();
        }
        self.stats.insert(key, next);
        Ok(())
    }

    /// Follows merge redirects, the unwritten ones included.
    fn resolve_id(&self, mut id: ProfileId) -> Result<ProfileId, StoreError> {
        // Pending moves are newer than the group in flight; chains are kept one hop in each.
        for w in [&self.inflight_writes, &self.pending] {
            if let Some(to) = w.redirects.get(&id.0) {
                id = ProfileId(*to);
            }
        }
        self.store.resolve_id(id)
    }

    /// Loads a profile for re-evaluation, or `None` when it no longer exists.
    fn take_profile(&mut self, id: ProfileId) -> Result<Option<Profile>, StoreError> {
        let id = self.resolve_id(id)?;
        if let Some(p) = self.cache.remove(&id) {
            return Ok(Some(p));
        }
        self.store.profile_record(id)
    }

    /// Re-evaluates profiles whose timers came due.
    fn tick(&mut self, due: Vec<(Millis, ProfileId)>) -> Result<(), StoreError> {
        let now = self.opts.clock.now();
        if let Ok(mut h) = self.lateness.lock() {
            for (at, _) in &due {
                let late = now.saturating_sub(*at).max(0) as u64;
                let _ = h.record(late);
                metrics::histogram!("kairos_timer_lateness_seconds").record(late as f64 / 1e3);
            }
        }
        for (at, id) in due {
            self.batch.remove(&self.store.timers, timer_key(at, id));
            let Some(mut profile) = self.take_profile(id)? else {
                continue;
            };
            let pid = profile.id;
            match profile.timer() {
                Some(t) if t == at => {
                    let changes = profile.catch_up(&self.scoring, now);
                    self.record_effects(pid, None, profile.timer(), &changes)?;
                    self.dirty.insert(pid);
                }
                // An entry left behind when the timer moved later: the real one goes in.
                Some(t) => self.batch.insert(&self.store.timers, timer_key(t, pid), []),
                None => {}
            }
            self.cache.insert(pid, profile);
        }
        Ok(())
    }

    /// Runs a scheduled campaign over `ids` at `at`; returns how many people it reached
    /// (those still in its segment).
    fn schedule(
        &mut self,
        campaign: &str,
        at: Millis,
        ids: Vec<ProfileId>,
    ) -> Result<usize, StoreError> {
        let mut reached = 0;
        for id in ids {
            let Some(mut profile) = self.take_profile(id)? else {
                continue;
            };
            let pid = profile.id;
            let old = profile.timer();
            let changes = profile.scheduled(&self.scoring, campaign, at);
            if changes.iter().any(|c| {
                matches!(&c.kind, ChangeKind::Message { campaign: n, status: kairos_core::campaign::MessageStatus::Entered, .. } if n == campaign)
            }) {
                reached += 1;
            }
            if !changes.is_empty() || old != profile.timer() {
                self.record_effects(pid, old, profile.timer(), &changes)?;
                self.dirty.insert(pid);
            }
            self.cache.insert(pid, profile);
        }
        Ok(reached)
    }

    /// Adds definitions (as stored) to the history the backfill's deltas come from, and
    /// forgets the oldest beyond [`crate::store::DEFINITIONS_HISTORY`].
    fn remember_definitions(&mut self, json: Vec<u8>) {
        let seq = self.next_history;
        self.next_history += 1;
        let meta = &self.store.meta;
        self.batch
            .insert(meta, crate::store::definitions_history_key(seq), json);
        let keep = crate::store::DEFINITIONS_HISTORY as u64;
        if seq >= keep {
            // One in, one out: only the entry that fell off can still be there.
            self.batch
                .remove(meta, crate::store::definitions_history_key(seq - keep));
        }
    }

    /// Whether the writer may hold a newer copy of profile `id` than one the backfill read:
    /// changed in this group, or written (or merged away) since the backfill started. A
    /// cached copy that is neither is the stored one, which the backfill read.
    fn has_newer_copy(&self, id: ProfileId) -> bool {
        self.dirty.contains(&id) || self.written_since_backfill(id)
    }

    fn written_since_backfill(&self, id: ProfileId) -> bool {
        self.backfill
            .as_ref()
            .is_some_and(|w| w.written.contains(&id))
    }

    fn erased_since_backfill(&self, id: ProfileId) -> bool {
        self.backfill
            .as_ref()
            .is_some_and(|w| w.erased.contains(&id))
    }

    /// Records a backfill page, evaluated by the backfill threads against the definitions in
    /// force (`version`): the profiles that moved are recorded as they come; those the
    /// writer may hold a newer copy of, and those that need their history replayed, are
    /// brought up to date here.
    fn record_backfill_page(&mut self, page: BackfillPage) -> Result<(), StoreError> {
        if page.version != self.scoring.version {
            // Evaluated against definitions replaced meanwhile: the backfill of the newer
            // ones covers these profiles again.
            self.disposal.discard(Garbage::Backfill(page));
            return Ok(());
        }
        let BackfillPage {
            version,
            last,
            moved,
            unchanged,
            replay,
        } = page;
        let mut garbage = Vec::new();
        for id in unchanged {
            if self.erased_since_backfill(id) {
                continue;
            }
            if self.has_newer_copy(id) {
                self.bring_up_to_date(id, None)?;
            }
        }
        for m in moved {
            let pid = m.profile.id;
            if self.erased_since_backfill(pid) {
                garbage.push(m.profile);
                continue;
            }
            if self.has_newer_copy(pid) {
                self.bring_up_to_date(pid, None)?;
                garbage.push(m.profile);
                continue;
            }
            self.record_effects(pid, m.old_timer, m.profile.timer(), &m.changes)?;
            self.dirty.insert(pid);
            // The copy it replaces, if cached, is freed off this thread.
            if let Some(old) = self.cache.insert(pid, m.profile) {
                garbage.push(old);
            }
        }
        for p in replay {
            if self.erased_since_backfill(p.id) {
                garbage.push(p);
                continue;
            }
            if let Some(p) = self.bring_up_to_date(p.id, Some(p))? {
                garbage.push(p);
            }
        }
        self.disposal.discard(Garbage::Profiles(garbage));
        if let Some(last) = last {
            let mut cursor = u64_key(version).to_vec();
            cursor.extend_from_slice(&u64_key(last.0));
            self.batch.insert(&self.store.meta, BACKFILL_KEY, cursor);
        }
        Ok(())
    }

    /// Brings profile `id` up to the definitions in force: its cached or stored copy, or
    /// `read` (the backfill's) when the writer holds none newer. Replays its history when
    /// scores or windows changed, else re-evaluates its segments.
    /// Returns the profile when it did not change, for the caller to free elsewhere.
    fn bring_up_to_date(
        &mut self,
        id: ProfileId,
        read: Option<Profile>,
    ) -> Result<Option<Profile>, StoreError> {
        // The writer's own copy is the newest; the backfill's may predate a write.
        let cached = self.cache.remove(&id);
        let stale = self.written_since_backfill(id);
        // A copy taken from the cache (also under the id a merge moved it to) goes back.
        let from_cache = cached.is_some() || stale || read.is_none();
        let mut profile = match (cached, read) {
            (Some(p), _) => p,
            (None, Some(read)) if !stale => read,
            (None, _) => match self.take_profile(id)? {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let pid = profile.id;
        let old_timer = profile.timer();
        let now = self.opts.clock.now();
        let changes = match redefine(&mut profile, &self.scoring, &self.deltas, now) {
            Some(changes) => changes,
            None => {
                let mut events = self.history(&profile.log_heads)?;
                let (core, scoring) = (&self.opts.core, &self.scoring);
                profile.rebuild(&mut events, core, scoring, now, REDEFINED)
            }
        };
        self.record_effects(pid, old_timer, profile.timer(), &changes)?;
        // Nothing else moved: the stored copy stays as it is and is re-evaluated, to the
        // same result, the next time the person is active.
        let moved = !changes.is_empty() || old_timer != profile.timer();
        if moved {
            self.dirty.insert(pid);
        }
        if moved || from_cache {
            self.cache.insert(pid, profile);
            return Ok(None);
        }
        Ok(Some(profile))
    }

    /// Removes a profile's timer and segment-member entries.
    fn forget_derived(&mut self, id: ProfileId, p: &Profile) {
        if let Some(t) = p.timer() {
            self.batch.remove(&self.store.timers, timer_key(t, id));
        }
        for seg in p.derived.segments.keys() {
            self.batch.remove(&self.store.members, named_key(seg, id.0));
        }
    }

    /// Moves profile `from` (its redirects and record) under `to`; its events come along
    /// through its log heads, which the caller adds to the merged profile.
    fn move_profile(&mut self, from: ProfileId, to: ProfileId) -> Result<(), StoreError> {
        // A merged-in person's memberships end with their id; the merged profile's own are
        // computed by the replay that follows.
        let source = match self.cache.get(&from) {
            Some(p) => Some(p.clone()),
            None => self.store.profile(from)?.filter(|p| p.id == from),
        };
        if let Some(p) = source {
            self.forget_derived(from, &p);
        }
        let s = &self.store;
        // Anything that redirected to `from` now redirects to `to`: chains stay one hop.
        let mut olds = Vec::new();
        for guard in s.redirected.prefix(u64_key(from.0)) {
            let key = guard.key()?;
            if let Some(old) = key.get(8..16).and_then(read_u64) {
                olds.push(old);
            }
        }
        for w in [&mut self.pending, &mut self.inflight_writes] {
            olds.extend(w.redirected.remove(&from.0).into_iter().flatten());
        }
        olds.sort_unstable();
        olds.dedup();
        for &old in &olds {
            self.batch.remove(&s.redirected, pair_key(from.0, old));
            self.batch.insert(&s.redirects, u64_key(old), u64_key(to.0));
            self.batch.insert(&s.redirected, pair_key(to.0, old), []);
            self.pending.redirects.insert(old, to.0);
        }
        self.pending.redirects.insert(from.0, to.0);
        // A backfill that read `from` before must not write it back.
        if let Some(w) = self.backfill.as_mut() {
            w.written.insert(from);
        }
        self.batch
            .insert(&s.redirects, u64_key(from.0), u64_key(to.0));
        self.batch.insert(&s.redirected, pair_key(to.0, from.0), []);
        let moved = self.pending.redirected.entry(to.0).or_default();
        moved.extend(olds);
        moved.push(from.0);
        self.batch.remove(&s.profiles, u64_key(from.0));
        self.cache.remove(&from);
        self.dirty.remove(&from);
        Ok(())
    }

    /// Commits everything written so far (after the group in flight), without fsync, so
    /// that the store can be read.
    fn flush(&mut self) -> Result<(), StoreError> {
        self.settle()?;
        let batch = self.take_batch();
        batch.into_write_batch(&self.store.db).commit()?;
        self.pending = Unwritten::default();
        Ok(())
    }

    /// The pending batch with every changed profile added.
    fn take_batch(&mut self) -> SortedBatch {
        self.seal_chunk();
        if let Some((key, record)) = self.recent.take_record() {
            self.batch.insert(&self.store.dedupe_recent, key, record);
        }
        let mut batch = std::mem::take(&mut self.batch);
        if self.next_change != self.written_next_change {
            batch.insert(&self.store.meta, NEXT_CHANGE_KEY, u64_key(self.next_change));
            self.written_next_change = self.next_change;
        }
        for id in self.dirty.drain() {
            if let Some(p) = self.cache.get(&id) {
                batch.insert(&self.store.profiles, u64_key(id.0), p.encode());
                if let Some(w) = self.backfill.as_mut() {
                    w.written.insert(id);
                }
            }
        }
        batch
    }

    fn erase(
        &mut self,
        id: ProfileId,
        keep_suppression: bool,
        at: Millis,
    ) -> Result<Option<Erased>, StoreError> {
        self.flush()?;
        let id = self.store.resolve_id(id)?;
        let Some(profile) = self.store.profile(id)? else {
            return Ok(None);
        };
        let s = self.store.clone();
        let mut erased = Erased {
            profile: id,
            events: 0,
            identifiers: 0,
            dead_letters: 0,
        };
        // Their events: dedupe keys go, and each chunk holding any is rewritten without them.
        let mut seqs = HashSet::default();
        let mut message_ids = Vec::new();
        s.walk_events(
            &profile.log_heads,
            |_| None,
            |seq, _, payload| {
                seqs.insert(seq);
                message_ids.push(decode_event(payload)?.message_id);
                Ok(())
            },
        )?;
        for m in &message_ids {
            self.batch.remove(&s.dedupe, m.as_bytes());
        }
        let batch = &mut self.batch;
        self.recent
            .erase(&message_ids, &s.dedupe_recent, |key, value| match value {
                Some(v) => batch.insert(&s.dedupe_recent, key, v),
                None => batch.remove(&s.dedupe_recent, key),
            })?;
        let mut chunks: Vec<u64> = Vec::new();
        let mut ordered: Vec<u64> = seqs.iter().copied().collect();
        ordered.sort_unstable();
        for seq in ordered {
            if let Some((first, bytes)) = s.chunk_of(seq)? {
                if chunks.last() != Some(&first) {
                    let rewritten = Chunk::parse(&bytes)?.without(first, |q| seqs.contains(&q));
                    self.batch.insert(&s.events, u64_key(first), rewritten);
                    chunks.push(first);
                }
            }
        }
        erased.events = seqs.len();
        for k in &profile.identifiers {
            self.id_cache.remove(&k.index_key());
            self.batch.remove(&s.identity, k.index_key());
            if keep_suppression {
                self.batch
                    .insert(&s.suppress, suppression_hash(k), at.to_be_bytes());
                self.suppress_active = true;
            }
            erased.identifiers += 1;
        }
        self.forget_derived(id, &profile);
        let mut ids = vec![id];
        for guard in s.redirected.prefix(u64_key(id.0)) {
            let key = guard.key()?;
            if let Some(old) = key.get(8..16).and_then(read_u64) {
                self.batch.remove(&s.redirects, u64_key(old));
                ids.push(ProfileId(old));
            }
            self.batch.remove(&s.redirected, key);
        }
        // Their segment and tier changes, under this id and every id merged into it.
        for pid in &ids {
            for guard in s.timeline.prefix(u64_key(pid.0)) {
                let (key, stream) = guard.into_inner()?;
                if let Some(seq) = key.get(8..16).and_then(read_u64) {
                    let stream = String::from_utf8_lossy(&stream);
                    self.batch
                        .remove(&s.stream_changes, named_key(&stream, seq));
                }
                self.batch.remove(&s.timeline, key);
            }
        }
        // Timer entries left behind at earlier instants (see `record_effects`), under this id
        // or one merged into it: a scan, as erasures are rare.
        for guard in s.timers.iter() {
            let key = guard.key()?;
            if parse_timer_key(&key).is_some_and(|(_, p)| ids.contains(&p)) {
                self.batch.remove(&s.timers, key);
            }
        }
        // Messages queued, sent or dead for them hold their address.
        let profiles: Vec<u64> = ids.iter().map(|p| p.0).collect();
        for (ks, key) in crate::outbox::rows_of(&s, &profiles)? {
            self.batch.remove(&ks, key);
        }
        // Rejected events that name the person are theirs too.
        // An identifier counts when it appears as a whole JSON string in the raw event.
        let needles: Vec<String> = profile
            .identifiers
            .iter()
            .map(|k| {
                serde_json::Value::String(k.value.clone())
                    .to_string()
                    .to_lowercase()
            })
            .collect();
        for guard in s.dead.iter() {
            let (k, v) = guard.into_inner()?;
            let raw = serde_json::from_slice::<DeadLetter>(&v)
                .map(|d| d.raw)
                .unwrap_or_else(|_| String::from_utf8_lossy(&v).into_owned())
                .to_lowercase();
            if needles.iter().any(|n| raw.contains(n.as_str())) {
                self.batch.remove(&s.dead, k);
                erased.dead_letters += 1;
            }
        }
        self.batch.remove(&s.profiles, u64_key(id.0));
        self.cache.remove(&id);
        self.dirty.remove(&id);
        if let Some(w) = self.backfill.as_mut() {
            w.erased.extend(ids);
        }
        Ok(Some(erased))
    }
}

fn group_size(cmd: &Command) -> usize {
    match cmd {
        Command::Ingest(s) => s.events.len().max(1),
        // A page is a few hundred profiles, most of them only looked up.
        Command::Rebuild { page, .. } => page.moved.len() + page.replay.len() + 1,
        Command::Tick { due, .. } => due.len().max(1),
        Command::Schedule { profiles, .. } => profiles.len().max(1),
        Command::Erase { .. }
        | Command::PruneDedupe { .. }
        | Command::Hold(_)
        | Command::Define { .. }
        | Command::BackfillDone(_) => 1,
    }
}

/// Where what the writer and the committer are done with is freed.
#[derive(Clone)]
struct Disposal {
    /// The helper thread's queue.
    graveyard: Sender<Garbage>,
    /// [`WriterOptions::return_events`].
    events_back: Option<std::sync::mpsc::Sender<Vec<Prepared>>>,
}

impl Disposal {
    /// Hands events back to their submitter if it asked for them, and everything else to
    /// the helper thread; frees it here when that one is behind.
    fn discard(&self, garbage: Garbage) {
        let garbage = match (garbage, &self.events_back) {
            (Garbage::Events(events), Some(back)) => match back.send(events) {
                Ok(()) => return,
                Err(unsent) => Garbage::Events(unsent.0),
            },
            (Garbage::Fed(fed), Some(back)) => {
                let mut rest = Vec::new();
                for f in fed {
                    if let Err(unsent) = back.send(f.events) {
                        rest.extend(unsent.0);
                    }
                }
                if rest.is_empty() {
                    return;
                }
                Garbage::Events(rest)
            }
            (garbage, _) => garbage,
        };
        if let Err(e) = self.graveyard.try_send(garbage) {
            drop(e.into_inner());
        }
    }
}

/// What the writer hands to a helper thread to free (large frees are measurable). The
/// contents are never read, only dropped there.
#[allow(dead_code)]
enum Garbage {
    Events(Vec<Prepared>),
    Profiles(Vec<Profile>),
    Backfill(BackfillPage),
    Ids(HashMap<Vec<u8>, ProfileId>),
    Fed(Vec<Fed>),
}

/// Finds due timers and hands them to the writer, one batch at a time, until stopped.
fn run_timers(
    store: &Store,
    tx: &Sender<Command>,
    stop: &AtomicBool,
    interval: Duration,
    clock: &Clock,
) {
    // Small batches: a timer late in a large one would wait for all before it.
    const BATCH: usize = 1_000;
    // Scans continue after the last timer handed over (deleted timers leave tombstones at
    // the start of the range); new timers are due after the instant that set them, so
    // they land after the cursor, but a full scan from the start runs whenever the
    // backlog is empty, to be sure.
    let mut cursor: Option<(Millis, ProfileId)> = None;
    let mut in_flight: std::collections::VecDeque<crossbeam_channel::Receiver<()>> =
        Default::default();
    while !stop.load(Ordering::Relaxed) {
        let due = match store.due_timers(cursor, clock.now(), BATCH) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("reading timers: {e}");
                std::thread::sleep(interval);
                continue;
            }
        };
        let full = due.len() >= BATCH;
        if let Some(last) = due.last() {
            cursor = Some(*last);
            let n = due.len();
            let (done, wait) = crossbeam_channel::bounded(1);
            if tx.send(Command::Tick { due, done }).is_err() {
                return;
            }
            in_flight.push_back(wait);
            metrics::counter!("kairos_timers_fired_total").increment(n as u64);
        }
        // At most two batches with the writer: one committing, one queued behind it.
        while in_flight.len() > 1 || (!full && !in_flight.is_empty()) {
            if let Some(w) = in_flight.pop_front() {
                // Answered (by dropping) once the group holding the tick is committed.
                let _ = w.recv();
            }
        }
        if !full {
            cursor = None;
            std::thread::sleep(interval);
        }
    }
}

/// What the writer did to profiles while a backfill runs, so that copies the backfill read
/// before are not taken for current ones.
#[derive(Default)]
struct BackfillWatch {
    /// Written (or merged away): the copy read may be stale.
    written: HashSet<ProfileId>,
    /// Erased: the copy read must not come back.
    erased: HashSet<ProfileId>,
}

/// What one backfill covers: definitions `version`, the profiles after `after`, and the
/// deltas from earlier definitions.
struct Run {
    version: u64,
    after: Option<ProfileId>,
    deltas: Arc<Deltas>,
    hook: Option<BackfillHook>,
}

/// Walks every profile, brings each up to the definitions of `run` and has the writer
/// record what moved; stops early when newer definitions replace them.
fn run_backfill(
    store: &Store,
    tx: &Sender<Command>,
    progress: &Mutex<Option<Backfill>>,
    run: Run,
    clock: &Clock,
) -> Result<(), StoreError> {
    const PAGE: usize = 512;
    let Run {
        version,
        after,
        deltas,
        hook,
    } = run;
    let mut pages = 0u64;
    // Up to two pages with the writer while the next is read and evaluated here: the
    // writer records a page within a group commit, and with one page in flight this
    // thread waited for that cycle (a tenth of a backfill) with its page ready.
    const IN_FLIGHT: usize = 2;
    let mut in_flight: std::collections::VecDeque<(crossbeam_channel::Receiver<()>, u64)> =
        std::collections::VecDeque::new();
    let finish = |wait: Option<(crossbeam_channel::Receiver<()>, u64)>| {
        if let Some((wait, n)) = wait {
            let _ = wait.recv();
            if let Ok(mut g) = progress.lock() {
                if let Some(b) = g.as_mut().filter(|b| b.version == version) {
                    b.done += n;
                    b.total = b.total.max(b.done);
                }
            }
        }
    };
    // Pages are read on a thread of their own while this one evaluates the previous page:
    // reading (decompressing blocks, filling the block cache) is a third of the work.
    let (pages_tx, pages_rx) = crossbeam_channel::bounded(2);
    let reader = {
        let store = store.clone();
        std::thread::Builder::new()
            .name("kairos-backfill-read".into())
            .spawn(move || {
                let mut after = after;
                loop {
                    let raw = store.profile_values_after(after, PAGE);
                    let last = raw.as_ref().ok().and_then(|r| r.last().map(|(id, _)| *id));
                    let end = raw.as_ref().map_or(true, |r| r.is_empty());
                    // The receiver is gone when the backfill stopped early.
                    if pages_tx.send(raw).is_err() || end {
                        return;
                    }
                    after = last;
                }
            })?
    };
    let evaluator = PageEvaluator::start()?;
    let result: Result<bool, StoreError> = (|| loop {
        let scoring = store.scoring();
        if scoring.version != version {
            in_flight.drain(..).for_each(|w| finish(Some(w)));
            return Ok(false);
        }
        let raw = pages_rx
            .recv()
            .map_err(|_| StoreError::Io("the backfill reader stopped".into()))??;
        if raw.is_empty() {
            return Ok(true);
        }
        let n = raw.len() as u64;
        let page = evaluator.evaluate(raw, scoring, deltas.clone(), clock.now())?;
        if let Some(h) = &hook {
            (h.0)(pages);
        }
        pages += 1;
        let (done, wait) = crossbeam_channel::bounded(1);
        tx.send(Command::Rebuild { page, done })
            .map_err(|_| StoreError::WriterStopped)?;
        in_flight.push_back((wait, n));
        if in_flight.len() > IN_FLIGHT {
            finish(in_flight.pop_front());
        }
    })();
    drop(pages_rx);
    let _ = reader.join();
    if !result? {
        return Ok(());
    }
    in_flight.drain(..).for_each(|w| finish(Some(w)));
    let _ = tx.send(Command::BackfillDone(version));
    if let Ok(mut g) = progress.lock() {
        if let Some(b) = g.as_mut().filter(|b| b.version == version) {
            b.finished_at = Some(clock.now());
            b.total = b.done;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kairos_core::{Definitions, SegmentDef};

    fn segment(rule: &str) -> SegmentDef {
        SegmentDef {
            rule: rule.into(),
            ..SegmentDef::default()
        }
    }

    fn define(ingest: &Ingestor, defs: &Definitions) -> Arc<Scoring> {
        let scoring = Scoring::compile(defs, None).unwrap();
        ingest
            .define(scoring, 0)
            .unwrap()
            .blocking_recv()
            .unwrap()
            .unwrap();
        ingest.store.scoring()
    }

    /// Most profiles are not rewritten by a backfill and keep the version they were last
    /// evaluated under; the next backfill must know what changed since then, too.
    #[test]
    fn deltas_reach_back_to_every_remembered_definitions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::StoreOptions::default()).unwrap();
        let (ingest, handle) = Ingestor::start(store.clone(), WriterOptions::default()).unwrap();
        let mut defs = Definitions::default();
        defs.segments.insert("a".into(), segment("orders >= 1"));
        let v0 = define(&ingest, &defs);
        defs.segments.insert("b".into(), segment("orders >= 2"));
        let v1 = define(&ingest, &defs);
        defs.segments.insert("a".into(), segment("orders >= 3"));
        defs.segments.insert("c".into(), segment("orders >= 4"));
        let v2 = define(&ingest, &defs);
        let deltas = Deltas::compute(&store, None, &v2);
        // v2's segments by position: a (edited), b, c (new).
        let names: Vec<&str> = v2.segments.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(deltas.get(v1.version).unwrap().0, [true, false, true]);
        assert_eq!(deltas.get(v0.version).unwrap().0, [true, true, true]);
        assert_eq!(deltas.get(v0.version).unwrap().1, [Some(0)]);
        assert!(deltas.get(v2.version).is_none());
        drop(ingest);
        handle.join().unwrap();
    }

    #[test]
    fn the_definitions_history_keeps_the_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::StoreOptions::default()).unwrap();
        let (ingest, handle) = Ingestor::start(store.clone(), WriterOptions::default()).unwrap();
        let n = crate::store::DEFINITIONS_HISTORY + 5;
        let mut defs = Definitions::default();
        for i in 0..n {
            defs.segments
                .insert("s".into(), segment(&format!("orders >= {i}")));
            define(&ingest, &defs);
        }
        drop(ingest);
        handle.join().unwrap();
        // Reopened: the sequence goes on from the stored entries.
        let (ingest, handle) = Ingestor::start(store.clone(), WriterOptions::default()).unwrap();
        defs.segments.insert("s".into(), segment("orders >= 1000"));
        define(&ingest, &defs);
        drop(ingest);
        handle.join().unwrap();
        let history = store.definitions_history().unwrap();
        assert_eq!(history.len(), crate::store::DEFINITIONS_HISTORY);
        let rules: Vec<String> = history
            .iter()
            .map(|(_, d)| d.segments["s"].rule.clone())
            .collect();
        let mut expected: Vec<String> = (n + 1 - crate::store::DEFINITIONS_HISTORY..n)
            .map(|i| format!("orders >= {i}"))
            .collect();
        expected.push("orders >= 1000".into());
        assert_eq!(rules, expected);
    }
}
