//! Product recommendations over HTTP, and the background work that keeps them current.
//!
//! A thread follows the event log (arrival order, a seq cursor) and folds product views,
//! cart additions and purchases into each person's recent history in memory; every
//! `rebuild_interval_secs` with new interactions or catalog changes it rebuilds the model
//! ([`kairos_recs::Snapshot`]) from a copy of them and swaps it in. Ingest never waits for
//! any of it. Requests read the current snapshot.
//!
//! The events come from the writer as it accepted them (the feed: a
//! [`kairos_store::Observer`] turns each durable group into its interactions on the
//! committer thread) rather than read back from the log: finding, decoding and looking up
//! the product events there was a seventh of the server's CPU under ingest. The log is read
//! at start, and whenever the feed missed events: it drops groups instead of waiting when
//! the thread is behind (a rebuild runs), a group that failed to commit leaves seqs out, and
//! a group handed over before an erasure may hold the erased person. Groups carry their
//! seqs, so the thread knows where to read from.
//!
//! Nothing per person is written to disk here: the histories are rebuilt from the log at
//! start (the log is the record, and erasure already removes a person from it), and
//! erasing a person drops their history at once and rebuilds the similarities without
//! them at the next rebuild.

use crate::admin::{authorize, blocking, resolve};
use crate::error::{ApiError, ErrorCode};
use crate::AppState;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use crossbeam_channel::{Receiver, Sender};
use kairos_core::identity::IdKey;
use kairos_core::time::format_timestamp;
use kairos_core::vocab::Vocabulary;
use kairos_core::{Event, Millis, Profile};
use kairos_recs::interaction::{interactions_of, item_of, names_interaction, Interactions};
use kairos_recs::model::{BuildStats, Seen};
use kairos_recs::{
    Context, Item, Kind, Method, Recommendation, RecsConfig, RecsError, Request, Snapshot,
};
use kairos_store::{Accepted, EventParts, LogPage, Observer, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

type S = State<Arc<AppState>>;

/// `[recommendations]`: the background model and its settings (`[recommendations.model]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecommendationsConfig {
    pub enabled: bool,
    /// Least time between two rebuilds of the similarities.
    pub rebuild_interval_secs: u64,
    /// How often the log is read for new events when idle.
    pub poll_ms: u64,
    /// Interactions kept per person (the newest).
    pub max_history: usize,
    pub model: RecsConfig,
}

impl Default for RecommendationsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rebuild_interval_secs: 60,
            poll_ms: 500,
            max_history: 200,
            model: RecsConfig::default(),
        }
    }
}

/// Events read from the log per step of the tailing thread.
const LOG_BATCH: usize = 5000;

/// Groups the feed holds for the tailing thread; beyond it they are dropped and read from
/// the log. A group is up to one request's worth of events while ingest keeps up (more when
/// it does not), so this covers a rebuild of several seconds at full ingest. Unit tests
/// use a small one to reach the fallback.
const FEED_GROUPS: usize = if cfg!(test) { 4 } else { 1024 };

/// Groups taken from the feed per step before rebuilds and requests are looked at again.
const FEED_STEP: usize = 256;

/// What the tailing thread has done, for the status endpoint.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub running: bool,
    pub cursor: u64,
    pub events_read: u64,
    pub interactions_folded: u64,
    /// Of `events_read`, those that came from the writer's feed rather than from the log.
    pub events_fed: u64,
    /// Times the feed missed events (dropped, a failed commit, or handed over before an
    /// erasure) and the log was read for them instead.
    pub feed_gaps: u64,
    pub caught_up: bool,
    pub last_build: Option<BuildStats>,
    pub last_build_ms: Option<u64>,
    pub builds: u64,
    pub last_error: Option<String>,
}

enum Msg {
    /// Read the log to its end, rebuild, answer.
    Rebuild(tokio::sync::oneshot::Sender<Result<Status, String>>),
    Stop,
}

/// The recommendation state shared by handlers and the tailing thread.
pub struct Recs {
    interactions: RwLock<Interactions>,
    snapshot: RwLock<Arc<Snapshot>>,
    status: Mutex<Status>,
    catalog_changed: AtomicBool,
    /// Erasures so far: when it moved since the last rebuild, the next one checks every
    /// person still exists, and the tailer forgets the identifiers it has looked up. Only
    /// moved under the `interactions` lock (see [`take`]).
    erasures: Arc<AtomicU64>,
    tx: Mutex<Option<Sender<Msg>>>,
    /// The receiving end of the feed until the tailing thread takes it.
    feed: Mutex<Option<Receiver<Fed>>>,
    /// Whether the tailing thread takes the feed: until it does, the feed does nothing.
    listening: Arc<AtomicBool>,
}

impl Recs {
    pub fn new(config: &RecommendationsConfig) -> Self {
        Self {
            interactions: RwLock::new(Interactions::new(config.max_history)),
            snapshot: RwLock::new(Arc::new(Snapshot::empty(config.model.clone()))),
            status: Mutex::new(Status::default()),
            catalog_changed: AtomicBool::new(true),
            erasures: Arc::new(AtomicU64::new(0)),
            tx: Mutex::new(None),
            feed: Mutex::new(None),
            listening: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The writer's end of the feed, for [`kairos_store::WriterOptions::observer`].
    pub fn observer(&self, vocab: &Vocabulary) -> Arc<dyn Observer> {
        let (tx, rx) = crossbeam_channel::bounded(FEED_GROUPS);
        *self.feed.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
        Arc::new(Feed {
            tx,
            vocab: vocab.clone(),
            listening: self.listening.clone(),
            erasures: self.erasures.clone(),
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The catalog changed: the next rebuild reloads it.
    pub fn catalog_changed(&self) {
        self.catalog_changed.store(true, Ordering::Relaxed);
    }

    /// Drops everything held about a person (erasure).
    pub fn forget(&self, person: u64) {
        let mut inter = self.interactions.write().unwrap_or_else(|p| p.into_inner());
        inter.forget(person);
        // Under the lock, so that the feed's groups are checked against it (see `take`).
        self.erasures.fetch_add(1, Ordering::Relaxed);
    }

    /// Recommendations for a stored person.
    pub fn for_profile(
        &self,
        profile: &Profile,
        context: Context,
        n: usize,
        method: Method,
        now: Millis,
    ) -> (Arc<Snapshot>, Vec<Recommendation>) {
        let snap = self.snapshot();
        let cart_items = profile.state.cart.items();
        let cart: Vec<&str> = cart_items.iter().map(|i| i.product_id.as_str()).collect();
        let inter = self.interactions.read().unwrap_or_else(|p| p.into_inner());
        let history = inter.seen(profile.id.0);
        let recs = snap.recommend(&Request {
            history: &history,
            cart: &cart,
            context,
            n,
            now,
            method,
        });
        (snap.clone(), recs)
    }

    /// Asks the tailing thread to catch up with the log and rebuild now.
    pub async fn rebuild_now(&self) -> Result<Status, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|t| t.send(Msg::Rebuild(tx)).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err("recommendations are not running in this process".into());
        }
        rx.await
            .map_err(|_| "the recommendations thread stopped".to_string())?
    }

    /// Stops the tailing thread (it finishes the step it is in).
    pub fn stop(&self) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(Msg::Stop);
        }
    }
}

/// The one place recommendations read events: the log in arrival order after a cursor,
/// only the events that can be interactions decoded (most of a shop's log is pages,
/// sessions, checkouts and email events).
fn read_log(store: &Store, after: u64, vocab: &Vocabulary) -> Result<LogPage, StoreError> {
    store.log_after_where(after, LOG_BATCH, EventParts::WithoutContext, &|json| {
        may_interact(json, vocab)
    })
}

/// Reads only `type` and `event` of a stored event (the rest is skipped, not built).
/// Anything it cannot read is decoded in full, where a real error shows.
fn may_interact(json: &[u8], vocab: &Vocabulary) -> bool {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        event: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_slice::<Head>(json) {
        Ok(h) => {
            h.kind.as_deref() == Some("track")
                && h.event.is_some_and(|n| names_interaction(&n, vocab))
        }
        Err(_) => true,
    }
}

/// The person an event belongs to (merges followed when first looked up; a rebuild
/// follows the later ones). Identifiers already looked up come from `known`, which the
/// tailer clears at every rebuild and erasure: two point reads per product event were a
/// third of its time.
fn person_of(
    store: &Store,
    ev: &Event,
    known: &mut HashMap<IdKey, u64>,
) -> Result<Option<u64>, StoreError> {
    let key = match (&ev.user_id, &ev.anonymous_id) {
        (Some(u), _) => IdKey::user(u),
        (None, Some(a)) => IdKey::anonymous(a),
        _ => return Ok(None),
    };
    if let Some(&p) = known.get(&key) {
        return Ok(Some(p));
    }
    match store.lookup(&key)? {
        Some(id) => {
            let p = store.resolve_id(id)?.0;
            if known.len() >= KNOWN_IDS {
                known.clear();
            }
            known.insert(key, p);
            Ok(Some(p))
        }
        // Not cached: the person may be created by a later event.
        None => Ok(None),
    }
}

/// Identifiers the tailer keeps looked up between rebuilds, at most.
const KNOWN_IDS: usize = 200_000;

/// A product event as the histories take it.
struct Found {
    seq: u64,
    person: u64,
    list: Vec<(String, Kind)>,
    ts: Millis,
    /// What it says about the product (single-product events only).
    meta: Option<Item>,
}

/// The products an event is an interaction with, and what it says about the product.
type Products = (Vec<(String, Kind)>, Option<Item>);

/// What an event brings to the histories, if anything: the log and the feed both go through
/// it, so that they fold the same interactions.
fn interactions(ev: &Event, vocab: &Vocabulary) -> Option<Products> {
    let list = interactions_of(ev, vocab);
    if list.is_empty() {
        return None;
    }
    // Orders list several products; their attributes come from the catalog.
    let meta = if list.len() == 1 { item_of(ev) } else { None };
    Some((list, meta))
}

/// Adds a product event to the histories; returns how many interactions it held.
fn apply(inter: &mut Interactions, f: Found) -> u64 {
    if let Some(m) = f.meta {
        inter.record_meta(m);
    }
    let n = f.list.len() as u64;
    for (item, kind) in f.list {
        inter.push(f.person, &item, kind, f.ts);
    }
    n
}

/// One durable group of events as the feed hands it over: every seq from `first` to
/// `last`, and the product events among them.
struct Fed {
    first: u64,
    last: u64,
    /// [`Recs::erasures`] when it was handed over. An erasure is answered only after the
    /// groups committed before it were handed over, so a group older than an erasure the
    /// tailer knows of may hold the erased person's events: the log is read instead.
    erasures: u64,
    found: Vec<Found>,
}

/// The writer's end of the feed ([`Recs::observer`]). Runs on the committer thread: it
/// never waits for the tailing thread, and drops the group when that one is behind.
struct Feed {
    tx: Sender<Fed>,
    vocab: Vocabulary,
    listening: Arc<AtomicBool>,
    erasures: Arc<AtomicU64>,
}

impl Observer for Feed {
    fn durable(&self, events: &[Accepted<'_>]) {
        if !self.listening.load(Ordering::Relaxed) {
            return;
        }
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        let erasures = self.erasures.load(Ordering::Relaxed);
        let found = events
            .iter()
            // The log's reader finds no person for an event without either id.
            .filter(|a| a.event.user_id.is_some() || a.event.anonymous_id.is_some())
            .filter_map(|a| {
                let (list, meta) = interactions(a.event, &self.vocab)?;
                Some(Found {
                    seq: a.seq,
                    person: a.profile.0,
                    list,
                    ts: a.event.timestamp,
                    meta,
                })
            })
            .collect();
        let fed = Fed {
            first: first.seq,
            last: last.seq,
            erasures,
            found,
        };
        if self.tx.try_send(fed).is_err() {
            metrics::counter!("kairos_recs_feed_dropped_total").increment(1);
        }
    }
}

/// Every catalog item, valid ones only (they were validated when stored).
fn load_catalog(store: &Store) -> Result<Vec<Item>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.catalog_items(after.as_deref(), 10_000)?;
        let Some(last) = page.last().map(|x| x.0.clone()) else {
            break;
        };
        for (id, v) in page {
            match Item::from_json(Some(&id), &v) {
                Ok(i) => out.push(i),
                Err(e) => tracing::warn!("catalog item {id:?} skipped: {e}"),
            }
        }
        after = Some(last);
    }
    Ok(out)
}

/// Starts the tailing thread; it runs until [`Recs::stop`].
pub fn start(state: Arc<AppState>) -> Option<std::thread::JoinHandle<()>> {
    if !state.config.recommendations.enabled {
        return None;
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    *state.recs.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let feed = state
        .recs
        .feed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    state.recs.set_status(|s| s.running = true);
    std::thread::Builder::new()
        .name("kairos-recs".into())
        .spawn(move || run(&state, rx, feed))
        .ok()
}

struct Tail {
    cursor: u64,
    /// The log is read before the feed is taken again: at start, after the feed missed
    /// events, and when the feed was quiet for a poll interval (it may have dropped the
    /// last groups). Always, without a feed.
    behind: bool,
    /// The newest seq of a group the feed handed over while the log was to be read: once
    /// a read reaches the log's end, the cursor is at least this (those events are in the
    /// log, or were erased).
    floor: u64,
    /// See [`person_of`]; `erasures` is the count it was last cleared at.
    known: HashMap<IdKey, u64>,
    erasures: u64,
    /// The erasure count the last rebuild checked people against.
    checked_erasures: u64,
    dirty: bool,
    last_build: Option<Instant>,
    catalog: Arc<Vec<Item>>,
}

impl Tail {
    /// At the start of the log, which is still to be read; `dirty`: build once caught up.
    fn new(dirty: bool) -> Self {
        Self {
            cursor: 0,
            behind: true,
            floor: 0,
            known: HashMap::new(),
            erasures: 0,
            checked_erasures: 0,
            dirty,
            last_build: None,
            catalog: Arc::new(Vec::new()),
        }
    }
}

/// What woke the tailing thread.
enum Wake {
    Control(Option<Msg>),
    Fed(Option<Fed>),
    Idle,
}

fn run(state: &AppState, rx: Receiver<Msg>, mut feed: Option<Receiver<Fed>>) {
    let cfg = &state.config.recommendations;
    let mut t = Tail::new(true);
    // Before the first read of the log: groups committed from now on are handed over.
    state
        .recs
        .listening
        .store(feed.is_some(), Ordering::Relaxed);
    let poll = Duration::from_millis(cfg.poll_ms.max(10));
    let interval = Duration::from_secs(cfg.rebuild_interval_secs);
    loop {
        let caught_up = match read_step(state, &mut t, feed.is_some()) {
            Ok(c) => c,
            Err(e) => {
                state
                    .recs
                    .set_status(|s| s.last_error = Some(e.to_string()));
                true
            }
        };
        state.recs.set_status(|s| s.caught_up = caught_up);
        let changed = t.dirty
            || state.recs.catalog_changed.load(Ordering::Relaxed)
            || state.recs.erasures.load(Ordering::Relaxed) != t.checked_erasures;
        let due = t.last_build.is_none_or(|b| b.elapsed() >= interval);
        if caught_up && changed && due {
            if let Err(e) = rebuild(state, &mut t) {
                state
                    .recs
                    .set_status(|s| s.last_error = Some(e.to_string()));
            }
        }
        let wait = if caught_up { poll } else { Duration::ZERO };
        let wake = match &feed {
            Some(f) => crossbeam_channel::select! {
                recv(rx) -> m => Wake::Control(m.ok()),
                recv(f) -> m => Wake::Fed(m.ok()),
                default(wait) => Wake::Idle,
            },
            None => match rx.recv_timeout(wait) {
                Ok(m) => Wake::Control(Some(m)),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => Wake::Idle,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Wake::Control(None),
            },
        };
        match wake {
            Wake::Control(None | Some(Msg::Stop)) => break,
            Wake::Control(Some(Msg::Rebuild(reply))) => {
                let res = (|| -> Result<Status, StoreError> {
                    catch_up(state, &mut t, feed.as_ref())?;
                    rebuild(state, &mut t)?;
                    Ok(state.recs.status())
                })();
                let _ = reply.send(res.map_err(|e| e.to_string()));
            }
            Wake::Fed(Some(m)) => {
                take(state, &mut t, m);
                if let Some(f) = &feed {
                    for m in f.try_iter().take(FEED_STEP) {
                        take(state, &mut t, m);
                    }
                }
            }
            // The writer stopped: what it committed last is in the log.
            Wake::Fed(None) => {
                feed = None;
                t.behind = true;
            }
            // Nothing handed over for a while: the feed may have dropped the last groups,
            // which reading the log from the cursor finds (cheaply when it did not).
            Wake::Idle => t.behind = true,
        }
    }
    state.recs.listening.store(false, Ordering::Relaxed);
    state.recs.set_status(|s| s.running = false);
}

/// Reads a batch of the log when it is to be read; returns whether the tailer is caught up.
fn read_step(state: &AppState, t: &mut Tail, fed: bool) -> Result<bool, StoreError> {
    if !t.behind {
        return Ok(true);
    }
    if fold(state, t)? >= LOG_BATCH {
        return Ok(false);
    }
    reached_end(state, t, fed);
    Ok(true)
}

/// Takes what the feed holds, then reads the log to its end whatever the feed said: it may
/// have dropped the last groups.
fn catch_up(
    state: &AppState,
    t: &mut Tail,
    feed: Option<&Receiver<Fed>>,
) -> Result<(), StoreError> {
    if let Some(f) = feed {
        for m in f.try_iter().take(f.len()) {
            take(state, t, m);
        }
    }
    while fold(state, t)? >= LOG_BATCH {}
    reached_end(state, t, feed.is_some());
    Ok(())
}

/// A read of the log reached its end: every group handed over before it is in it.
fn reached_end(state: &AppState, t: &mut Tail, fed: bool) {
    if t.floor > t.cursor {
        t.cursor = t.floor;
        let cursor = t.cursor;
        state.recs.set_status(|s| s.cursor = cursor);
    }
    t.behind = !fed;
}

/// Folds a group the feed handed over; or, when the feed missed events before it or it
/// predates an erasure, leaves it to the log (see [`Tail::behind`]).
fn take(state: &AppState, t: &mut Tail, m: Fed) {
    let missed = |t: &mut Tail, m: &Fed| {
        t.behind = true;
        t.floor = t.floor.max(m.last);
        state.recs.set_status(|s| s.feed_gaps += 1);
    };
    if t.behind || m.last <= t.cursor {
        t.floor = t.floor.max(m.last);
        return;
    }
    if m.first > t.cursor + 1 {
        missed(t, &m);
        return;
    }
    let mut folded = 0u64;
    if !m.found.is_empty() {
        let mut inter = state
            .recs
            .interactions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        // Compared under the lock `forget` counts under: either the person was forgotten
        // after this fold, or the group is not folded.
        if m.erasures != state.recs.erasures.load(Ordering::Relaxed) {
            drop(inter);
            missed(t, &m);
            return;
        }
        for f in m.found {
            // Part of the group was read from the log already.
            if f.seq > t.cursor {
                folded += apply(&mut inter, f);
            }
        }
        t.dirty = true;
    }
    let n = m.last - t.cursor;
    t.cursor = m.last;
    let cursor = t.cursor;
    state.recs.set_status(|s| {
        s.cursor = cursor;
        s.events_read += n;
        s.events_fed += n;
        s.interactions_folded += folded;
    });
}

/// Reads one batch of the log into the histories; returns how many events it read.
fn fold(state: &AppState, t: &mut Tail) -> Result<usize, StoreError> {
    let vocab = &state.config.vocabulary;
    let page = read_log(&state.store, t.cursor, vocab)?;
    let Some(last) = page.last else {
        return Ok(0);
    };
    let erasures = state.recs.erasures.load(Ordering::Relaxed);
    if erasures != t.erasures {
        t.known.clear();
        t.erasures = erasures;
    }
    let mut found = Vec::new();
    for stored in page.events {
        let ev = &stored.event;
        let Some((list, meta)) = interactions(ev, vocab) else {
            continue;
        };
        if let Some(person) = person_of(&state.store, ev, &mut t.known)? {
            found.push(Found {
                seq: stored.seq,
                person,
                list,
                ts: ev.timestamp,
                meta,
            });
        }
    }
    let mut folded = 0u64;
    if !found.is_empty() {
        let mut inter = state
            .recs
            .interactions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for f in found {
            folded += apply(&mut inter, f);
        }
        t.dirty = true;
    }
    t.cursor = last;
    let n = page.scanned;
    state.recs.set_status(|s| {
        s.cursor = last;
        s.events_read += n as u64;
        s.interactions_folded += folded;
    });
    Ok(n)
}

fn rebuild(state: &AppState, t: &mut Tail) -> Result<(), StoreError> {
    let started = Instant::now();
    let recs = &state.recs;
    if recs.catalog_changed.swap(false, Ordering::Relaxed) {
        t.catalog = Arc::new(load_catalog(&state.store)?);
    }
    let now = (state.clock)();
    let model = state.config.recommendations.model.clone();
    let erasures = recs.erasures.load(Ordering::Relaxed);
    let check_erased = erasures != t.checked_erasures;
    t.checked_erasures = erasures;
    // Lookups made before the merges followed below would keep feeding the old ids.
    t.known.clear();
    // Follow merges (and drop people erased meanwhile) before copying the histories.
    let keys = recs
        .interactions
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .person_keys();
    let mut moves = Vec::new();
    for k in keys {
        let to = state.store.resolve_id(kairos_core::ProfileId(k))?;
        let gone = check_erased && state.store.profile(to)?.is_none();
        if gone || to.0 != k {
            moves.push((k, to.0, gone));
        }
    }
    let copy = {
        let mut inter = recs.interactions.write().unwrap_or_else(|p| p.into_inner());
        for (from, to, gone) in moves {
            if gone {
                inter.forget(from);
            } else {
                inter.rekey(from, to);
            }
        }
        inter.prune_before(now - (model.history_days * kairos_core::time::DAY as f64) as i64);
        inter.clone()
    };
    let clock = Instant::now();
    let timer = move || clock.elapsed().as_millis() as u64;
    let snap = Snapshot::build(&copy, &t.catalog, model, now, &timer);
    drop(copy);
    let stats = snap.stats().clone();
    *recs.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
    t.dirty = false;
    t.last_build = Some(Instant::now());
    let ms = started.elapsed().as_millis() as u64;
    metrics::gauge!("kairos_recs_build_seconds").set(ms as f64 / 1000.0);
    tracing::debug!(
        "recommendations rebuilt in {ms} ms: {} products, {} people",
        stats.products,
        stats.people
    );
    recs.set_status(|s| {
        s.last_build = Some(stats);
        s.last_build_ms = Some(ms);
        s.builds += 1;
        s.last_error = None;
    });
    Ok(())
}

/// A recommendation as the API and templates show it: the item's fields, `product_id` and
/// `name` (Segment's names for id and title), the score and the reason.
pub fn recommendation_json(snap: &Snapshot, r: &Recommendation) -> Value {
    let mut v = r.item.to_json();
    v["product_id"] = json!(r.item.id);
    v["name"] = json!(r.item.title);
    v["score"] = json!((r.score as f64 * 1e6).round() / 1e6);
    v["reason"] = serde_json::to_value(&r.reason).unwrap_or(Value::Null);
    v["reason_text"] = json!(r
        .reason
        .describe(|id| snap.item(id).map_or(id.to_string(), |i| i.title.clone())));
    v
}

/// The `recommendations` template variable: complements of the cart when there is one,
/// else more like the person's recent products (popular products for someone new).
pub fn template_variable(state: &AppState, profile: Option<&Profile>) -> Value {
    let Some(p) = profile else {
        return json!([]);
    };
    let context = if p.state.cart.items().is_empty() {
        Context::Browse
    } else {
        Context::Cart
    };
    let (snap, recs) = state
        .recs
        .for_profile(p, context, 6, Method::Hybrid, (state.clock)());
    Value::Array(recs.iter().map(|r| recommendation_json(&snap, r)).collect())
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/profiles/{id}/recommendations", get(for_person))
        .route("/v1/recommendations/status", get(status))
        .route("/v1/recommendations/rebuild", post(rebuild_endpoint))
        .route(
            "/v1/catalog/items",
            get(list_items)
                .post(bulk_items)
                .layer(DefaultBodyLimit::max(BULK_MAX_BYTES)),
        )
        .route(
            "/v1/catalog/items/{id}",
            get(get_item).put(put_item).delete(delete_item),
        )
        .route("/v1/catalog/items/{id}/recommendations", get(for_item))
}

/// A bulk import request's body, at most.
const BULK_MAX_BYTES: usize = 32 * 1024 * 1024;

fn invalid(e: RecsError) -> ApiError {
    match e {
        RecsError::Invalid { field, reason } => {
            ApiError::new(ErrorCode::InvalidParameter, format!("{field}: {reason}")).field(field)
        }
        other => ApiError::new(ErrorCode::InvalidParameter, other.to_string()),
    }
}

#[derive(Deserialize)]
struct RecsQuery {
    n: Option<String>,
    context: Option<String>,
    method: Option<String>,
}

struct Parsed {
    n: usize,
    context: Context,
    method: Method,
}

fn parse_query(q: &RecsQuery, default_context: Context) -> Result<Parsed, ApiError> {
    let bad = |field: &str, msg: String| {
        ApiError::new(ErrorCode::InvalidParameter, format!("{field}: {msg}")).field(field)
    };
    let n = match q.n.as_deref() {
        None => 6,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=50).contains(n))
            .ok_or_else(|| bad("n", format!("{s:?} is not a number from 1 to 50")))?,
    };
    let context = match q.context.as_deref() {
        None => default_context,
        Some(s) => Context::parse(s)
            .ok_or_else(|| bad("context", format!("{s:?} is not one of cart, browse")))?,
    };
    let method = match q.method.as_deref() {
        None => Method::Hybrid,
        Some(s) => Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                bad(
                    "method",
                    format!("{s:?} is not one of hybrid, item_knn, content, popularity"),
                )
            })?,
    };
    Ok(Parsed { n, context, method })
}

fn model_json(state: &AppState, snap: &Snapshot) -> Value {
    let st = state.recs.status();
    let stats = snap.stats();
    json!({
        "built_at": (st.builds > 0).then(|| format_timestamp(stats.built_at)),
        "products": stats.products,
        "people": stats.people,
        "caught_up": st.caught_up,
    })
}

async fn for_person(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<RecsQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let p = parse_query(&q, Context::Browse)?;
    blocking(&state, move |s| {
        let profile = resolve(s, &id)?;
        let (snap, recs) = s
            .recs
            .for_profile(&profile, p.context, p.n, p.method, (s.clock)());
        // The cart context falls back to browsing when the cart is empty; say which ran.
        let used = if p.context == Context::Cart && profile.state.cart.items().is_empty() {
            Context::Browse
        } else {
            p.context
        };
        Ok(Json(json!({
            "profile": profile.id.to_string(),
            "context": used,
            "method": p.method,
            "items": recs.iter().map(|r| recommendation_json(&snap, r)).collect::<Vec<_>>(),
            "model": model_json(s, &snap),
        })))
    })
    .await
}

async fn for_item(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<RecsQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let p = parse_query(&q, Context::Cart)?;
    let snap = state.recs.snapshot();
    if snap.item(&id).is_none() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no product {id:?} in the model (yet)"),
        ));
    }
    let now = (state.clock)();
    let seen = [Seen {
        item: &id,
        kind: kairos_recs::Kind::View,
        ts: now,
    }];
    let cart = [id.as_str()];
    let recs = snap.recommend(&Request {
        history: if p.context == Context::Browse {
            &seen
        } else {
            &[]
        },
        cart: if p.context == Context::Cart {
            &cart
        } else {
            &[]
        },
        context: p.context,
        n: p.n,
        now,
        method: p.method,
    });
    Ok(Json(json!({
        "product_id": id,
        "context": p.context,
        "items": recs.iter().map(|r| recommendation_json(&snap, r)).collect::<Vec<_>>(),
        "model": model_json(&state, &snap),
    })))
}

async fn status(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(json!({
        "status": state.recs.status(),
        "config": state.config.recommendations,
    })))
}

async fn rebuild_endpoint(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let st = state
        .recs
        .rebuild_now()
        .await
        .map_err(|e| ApiError::new(ErrorCode::StorageFailure, e))?;
    Ok(Json(json!({"status": st})))
}

fn check_path_id(id: &str) -> Result<(), ApiError> {
    kairos_recs::catalog::validate_id(id).map_err(invalid)
}

async fn get_item(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    check_path_id(&id)?;
    blocking(&state, move |s| {
        let item = s
            .store
            .catalog_item(&id)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no item {id:?}")))?;
        Ok(Json(json!({"item": item})))
    })
    .await
}

async fn put_item(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    check_path_id(&id)?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(ErrorCode::InvalidBody, format!("body: not JSON: {e}")).field("body")
    })?;
    let item = Item::from_json(Some(&id), &v).map_err(invalid)?;
    blocking(&state, move |s| {
        let replaced = s.store.put_catalog_item(&item.id, &item.to_json())?;
        s.recs.catalog_changed();
        Ok(Json(json!({"item": item.to_json(), "created": !replaced})))
    })
    .await
}

async fn delete_item(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    check_path_id(&id)?;
    blocking(&state, move |s| {
        if !s.store.delete_catalog_item(&id)? {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no item {id:?}"),
            ));
        }
        s.recs.catalog_changed();
        Ok(Json(json!({"deleted": id})))
    })
    .await
}

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<String>,
}

async fn list_items(
    State(state): S,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("limit: {s:?} is not a number from 1 to 1000"),
                )
                .field("limit")
            })?,
    };
    blocking(&state, move |s| {
        let page = s.store.catalog_items(q.after.as_deref(), limit + 1)?;
        let more = page.len() > limit;
        let items: Vec<Value> = page.into_iter().take(limit).map(|(_, v)| v).collect();
        let next = if more {
            items
                .last()
                .and_then(|v| v.get("id"))
                .cloned()
                .unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        Ok(Json(json!({"items": items, "next": next})))
    })
    .await
}

/// Validates a bulk body: a JSON array of items, `{"items": [...]}`, or JSON lines.
/// Returns the valid items and the rejected ones as `{index, id, error, field}`.
pub fn parse_bulk(body: &[u8]) -> Result<(Vec<Item>, Vec<Value>), ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(ErrorCode::InvalidBody, "body: not UTF-8").field("body"))?;
    let not_json = |e: serde_json::Error| {
        ApiError::new(ErrorCode::InvalidBody, format!("body: not JSON: {e}")).field("body")
    };
    let whole: Option<Value> = if text.trim_start().starts_with('[') {
        Some(serde_json::from_str(text).map_err(not_json)?)
    } else {
        serde_json::from_str(text).ok()
    };
    let values: Vec<Result<Value, String>> = match whole {
        Some(Value::Array(a)) => a.into_iter().map(Ok).collect(),
        Some(Value::Object(mut m)) if m.contains_key("items") => match m.remove("items") {
            Some(Value::Array(a)) => a.into_iter().map(Ok).collect(),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidBody,
                    "items: must be an array of items",
                )
                .field("items"))
            }
        },
        Some(one) => vec![Ok(one)],
        None => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| format!("line is not JSON: {e}")))
            .collect(),
    };
    if values.len() > 100_000 {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "body: at most 100000 items per request",
        )
        .field("body"));
    }
    let mut items = Vec::with_capacity(values.len());
    let mut rejected = Vec::new();
    for (index, v) in values.into_iter().enumerate() {
        let v = match v {
            Ok(v) => v,
            Err(msg) => {
                rejected.push(json!({"index": index, "error": msg, "field": "body"}));
                continue;
            }
        };
        match Item::from_json(None, &v) {
            Ok(item) => items.push(item),
            Err(e) => {
                let mut r = json!({"index": index, "error": e.to_string()});
                if let RecsError::Invalid { field, .. } = &e {
                    r["field"] = json!(field);
                }
                if let Some(id) = v.get("id").or_else(|| v.get("product_id")) {
                    r["id"] = id.clone();
                }
                rejected.push(r);
            }
        }
    }
    Ok((items, rejected))
}

async fn bulk_items(
    State(state): S,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let (items, rejected) = parse_bulk(&body)?;
    blocking(&state, move |s| {
        for chunk in items.chunks(10_000) {
            let rows: Vec<(String, Value)> =
                chunk.iter().map(|i| (i.id.clone(), i.to_json())).collect();
            s.store.put_catalog_items(&rows)?;
        }
        if !items.is_empty() {
            s.recs.catalog_changed();
        }
        Ok(Json(json!({
            "success": rejected.is_empty(),
            "stored": items.len(),
            "rejected": rejected,
        })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Source;
    use crate::{Config, Kairos};
    use kairos_store::{Outcome, Prepared, Submission};
    use std::collections::BTreeMap;

    /// 2026-11-22T10:00:00Z: the events' time, and the clock's.
    const T0: Millis = 1_795_341_600_000;

    fn open(dir: &std::path::Path) -> Kairos {
        let mut config = Config {
            data_dir: dir.to_path_buf(),
            sources: vec![Source {
                name: "web".into(),
                write_key: "wk_test_123".into(),
            }],
            admin_token: Some("admin-token-for-tests".into()),
            ..Config::default()
        };
        // No reads of the log when the feed is quiet: the tests say when the log is read.
        config.recommendations.poll_ms = 600_000;
        Kairos::open(config, Arc::new(|| T0), None).expect("open")
    }

    /// Stops the tailing thread and the writer, so that the store can be opened again.
    fn close(k: Kairos, tailer: Option<std::thread::JoinHandle<()>>) {
        k.state.recs.stop();
        if let Some(t) = tailer {
            t.join().expect("the tailing thread panicked");
        }
        let Kairos { state, mut writer } = k;
        let state = Arc::try_unwrap(state).unwrap_or_else(|_| panic!("state still shared"));
        drop(state);
        if let Some(w) = writer.take() {
            w.join().expect("the writer panicked");
        }
    }

    fn event(v: Value) -> Event {
        let mut v = v;
        v["receivedAt"] = json!(T0);
        if v.get("timestamp").is_none() {
            v["timestamp"] = json!(T0);
        }
        serde_json::from_value(v).unwrap_or_else(|e| panic!("event: {e}"))
    }

    fn track(id: &str, who: (&str, &str), name: &str, props: Value, at: Millis) -> Event {
        event(
            json!({"messageId": id, "type": "track", who.0: who.1, "event": name,
                     "properties": props, "timestamp": at}),
        )
    }

    fn view(id: &str, who: (&str, &str), product: &str, at: Millis) -> Event {
        track(
            id,
            who,
            "Product Viewed",
            json!({"product_id": product}),
            at,
        )
    }

    /// Submits one request's events and waits until they are durable.
    fn submit(state: &AppState, events: Vec<Event>) -> Outcome {
        let (reply, rx) = tokio::sync::oneshot::channel();
        state
            .ingest
            .submit(Submission {
                events: Prepared::all(events),
                rejected: Vec::new(),
                received_at: T0,
                source: "web".into(),
                reply: Some(reply),
            })
            .expect("submit");
        rx.blocking_recv()
            .expect("answered")
            .unwrap_or_else(|e| panic!("ingest: {e}"))
    }

    /// Returns once the feed was handed every group answered so far: the committer hands a
    /// group over after answering it, and answers the next group after that.
    fn handed_over(state: &AppState) {
        submit(state, Vec::new());
    }

    /// Erases a person as `DELETE /v1/profiles/{id}` does.
    fn erase(state: &AppState, user: &str) {
        let id = state
            .store
            .lookup(&IdKey::user(user))
            .expect("lookup")
            .expect("known");
        let rx = state.ingest.erase(id, false, T0).expect("erase");
        let erased = rx.blocking_recv().expect("answered").expect("erased");
        state.recs.forget(erased.expect("found").profile.0);
    }

    fn rebuild_now(state: &AppState) -> Status {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let control = state
            .recs
            .tx
            .lock()
            .expect("lock")
            .clone()
            .expect("running");
        control.send(Msg::Rebuild(tx)).expect("send");
        rx.blocking_recv()
            .expect("answered")
            .unwrap_or_else(|e| panic!("rebuild: {e}"))
    }

    fn wait_until(state: &AppState, done: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = state.recs.status();
            if done(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "not reached: {st:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    type Histories = BTreeMap<u64, Vec<(String, Kind, Millis, Option<Item>)>>;

    /// Every person's history, with what the events said about each product.
    fn histories(state: &AppState) -> Histories {
        let inter = state.recs.interactions.read().expect("lock");
        inter
            .person_keys()
            .into_iter()
            .map(|p| {
                let list = inter
                    .history(p)
                    .iter()
                    .map(|r| {
                        let id = inter.item_id(r.item).to_string();
                        (id, r.kind, r.ts, inter.meta(r.item).cloned())
                    })
                    .collect();
                (p, list)
            })
            .collect()
    }

    /// What a tailer that only reads the log folds from the store in `dir`, after a rebuild
    /// (which follows merges, as the other side's rebuild did).
    fn from_the_log(dir: &std::path::Path) -> (Histories, Status) {
        let k = open(dir);
        let tailer = start(k.state.clone());
        let st = rebuild_now(&k.state);
        let h = histories(&k.state);
        close(k, tailer);
        (h, st)
    }

    fn profile_of(state: &AppState, user: &str) -> u64 {
        let id = state.store.lookup(&IdKey::user(user)).expect("lookup");
        state
            .store
            .resolve_id(id.expect("known"))
            .expect("resolve")
            .0
    }

    /// The feed must give the histories reading the log gives: anonymous browsing merged
    /// by an identify, an order of several products (one listed twice), product
    /// attributes, events that are not interactions, and an erased person.
    #[test]
    fn the_feed_folds_what_reading_the_log_folds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = open(dir.path());
        let state: &AppState = &k.state;
        let tailer = start(k.state.clone());
        // It listens to the feed from its first read of the log on, which its first
        // (empty) build follows; what was committed before that, it reads from the log.
        wait_until(state, |s| s.builds > 0);
        let anon = ("anonymousId", "anon-z");
        let requests = vec![
            vec![
                view("v1", anon, "stove", T0),
                view("v2", anon, "tent", T0 + 1),
                event(
                    json!({"messageId": "p1", "type": "page", "anonymousId": "anon-z",
                             "name": "Product Viewed"}),
                ),
            ],
            vec![
                track(
                    "o1",
                    ("userId", "zed"),
                    "Order Completed",
                    json!({"products": [{"product_id": "kettle"}, {"product_id": "mug"},
                                        {"product_id": "kettle"}]}),
                    T0 + 2,
                ),
                track(
                    "e1",
                    ("userId", "ann"),
                    "Email Opened",
                    json!({"product_id": "lamp"}),
                    T0 + 4,
                ),
            ],
            // The visitor logs in: the anonymous profile merges into zed's.
            vec![event(
                json!({"messageId": "i1", "type": "identify", "userId": "zed",
                              "anonymousId": "anon-z"}),
            )],
            vec![
                view("v3", anon, "lamp", T0 + 5),
                track(
                    "c1",
                    ("userId", "ann"),
                    "Added to Cart",
                    json!({"product_id": "lamp", "name": "Desk Lamp", "price": 30}),
                    T0 + 5,
                ),
                view("v4", ("userId", "eve"), "tent", T0 + 6),
                track(
                    "c2",
                    ("userId", "eve"),
                    "Product Added",
                    json!({"sku": "stove"}),
                    T0 + 7,
                ),
            ],
        ];
        let mut accepted = 0;
        for events in requests {
            accepted += submit(state, events).accepted as u64;
            // One group at a time: none is dropped.
            wait_until(state, |s| s.events_fed == accepted);
        }
        erase(state, "eve");
        accepted +=
            submit(state, vec![view("v5", ("userId", "bob"), "mug", T0 + 8)]).accepted as u64;
        wait_until(state, |s| s.events_fed == accepted);
        let st = rebuild_now(state);
        assert_eq!(st.feed_gaps, 0, "{st:?}");
        assert_eq!(st.events_fed, st.events_read, "{st:?}");
        let fed = histories(state);
        let zed = profile_of(state, "zed");
        close(k, tailer);

        let (logged, log_st) = from_the_log(dir.path());
        assert_eq!(log_st.events_fed, 0, "{log_st:?}");
        assert_eq!(fed, logged);
        let items = |p: u64| -> Vec<&str> { fed[&p].iter().map(|r| r.0.as_str()).collect() };
        assert_eq!(items(zed), ["stove", "tent", "kettle", "mug", "lamp"]);
        assert_eq!(fed.len(), 3, "zed, ann and bob; eve erased: {fed:?}");
        let meta = |item: &str| {
            let r = fed.values().flatten().find(|r| r.0 == item);
            r.and_then(|r| r.3.as_ref()).map(|i| i.title.clone())
        };
        // An order of several products says nothing about them; the latest event wins.
        assert_eq!(meta("kettle"), None);
        assert_eq!(meta("lamp").as_deref(), Some("Desk Lamp"));
        // The log no longer holds eve's events; the feed gave her two, which she took along.
        assert_eq!(st.interactions_folded, log_st.interactions_folded + 2);
    }

    /// Drives the tailer by hand: takes the feed's groups and reads the log as `run` does.
    struct Hand {
        t: Tail,
        feed: Receiver<Fed>,
    }

    impl Hand {
        fn new(state: &AppState) -> Self {
            state.recs.listening.store(true, Ordering::Relaxed);
            let feed = state.recs.feed.lock().expect("lock").take().expect("feed");
            let mut hand = Self {
                t: Tail::new(false),
                feed,
            };
            hand.step(state);
            hand
        }

        /// Takes every group handed over, then reads the log while it is to be read.
        fn step(&mut self, state: &AppState) {
            handed_over(state);
            for m in self.feed.try_iter().collect::<Vec<_>>() {
                take(state, &mut self.t, m);
            }
            while !read_step(state, &mut self.t, true).expect("log") {}
        }
    }

    /// Groups the feed dropped (its channel was full) are read from the log when the next
    /// group shows the gap: each event folded once, none missing.
    #[test]
    fn a_gap_in_the_feed_is_filled_from_the_log_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = open(dir.path());
        let state: &AppState = &k.state;
        let mut hand = Hand::new(state);
        let mut n = 0;
        let mut request = |who: &str| {
            n += 1;
            let events = vec![
                view(&format!("v{n}"), ("userId", who), &format!("p{n}"), T0 + n),
                track(
                    &format!("o{n}"),
                    ("userId", who),
                    "Order Completed",
                    json!({"products": [{"product_id": "a"}, {"product_id": "b"}]}),
                    T0 + n,
                ),
            ];
            assert_eq!(submit(state, events).accepted, 2);
        };
        request("ann");
        hand.step(state);
        assert_eq!(hand.t.cursor, 2);
        // More groups than the feed holds while the tailer does not take them: the last
        // three are dropped, unseen until the next group.
        for who in ["ann", "bob", "cy", "dee", "eve", "fay", "gus"] {
            request(who);
        }
        handed_over(state);
        assert_eq!(hand.feed.len(), FEED_GROUPS);
        hand.step(state);
        assert_eq!(state.recs.status().feed_gaps, 0);
        request("hal");
        hand.step(state);
        let st = state.recs.status();
        assert_eq!(st.feed_gaps, 1, "{st:?}");
        assert_eq!(st.cursor, 18, "{st:?}");
        assert_eq!(st.events_read, 18, "{st:?}");
        assert_eq!(st.events_fed, 2 + 2 * FEED_GROUPS as u64, "{st:?}");
        assert_eq!(st.interactions_folded, 9 * 3, "{st:?}");
        // Taken up again after the gap.
        request("ivy");
        hand.step(state);
        let st = state.recs.status();
        assert_eq!((st.cursor, st.events_fed, st.feed_gaps), (20, 12, 1));
        assert_eq!(st.interactions_folded, 10 * 3, "{st:?}");
        let fed = histories(state);
        close(k, None);
        // Nothing to rebuild here (no merges): the histories as folded.
        assert_eq!(fed, from_the_log(dir.path()).0);
    }

    /// The feed's last groups dropped with nothing after them to show the gap: a rebuild
    /// reads the log to its end, and so does the tailer once the feed is quiet.
    #[test]
    fn groups_dropped_at_the_end_of_the_feed_are_read_from_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = open(dir.path());
        let state: &AppState = &k.state;
        let mut hand = Hand::new(state);
        let mut n = 0u64;
        let mut drop_two = |hand: &mut Hand| {
            for _ in 0..FEED_GROUPS + 2 {
                n += 1;
                let (id, who) = (format!("v{n}"), format!("u{n}"));
                submit(state, vec![view(&id, ("userId", &who), "mug", T0)]);
            }
            hand.step(state);
            assert_eq!(state.recs.status().cursor, n - 2);
            n
        };
        let all = drop_two(&mut hand);
        catch_up(state, &mut hand.t, Some(&hand.feed)).expect("catch up");
        let st = state.recs.status();
        assert_eq!((st.cursor, st.events_read), (all, all), "{st:?}");
        let all = drop_two(&mut hand);
        // As `run` does when the feed is quiet for a poll interval.
        hand.t.behind = true;
        hand.step(state);
        let st = state.recs.status();
        assert_eq!(
            (st.cursor, st.events_read, st.interactions_folded),
            (all, all, all),
            "{st:?}"
        );
        assert_eq!(st.events_fed, 2 * FEED_GROUPS as u64, "{st:?}");
        close(k, None);
    }

    /// A group handed over before an erasure and taken after it may hold the erased
    /// person's events: it is read from the log instead, which no longer has them.
    #[test]
    fn a_group_handed_over_before_an_erasure_is_not_folded_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = open(dir.path());
        let state: &AppState = &k.state;
        let mut hand = Hand::new(state);
        submit(
            state,
            vec![
                view("v1", ("userId", "eve"), "tent", T0),
                view("v2", ("userId", "bob"), "mug", T0),
            ],
        );
        let eve = profile_of(state, "eve");
        let bob = profile_of(state, "bob");
        erase(state, "eve");
        hand.step(state);
        let st = state.recs.status();
        assert_eq!((st.feed_gaps, st.events_fed), (1, 0), "{st:?}");
        let h = histories(state);
        assert!(!h.contains_key(&eve), "{h:?}");
        assert_eq!(h[&bob].len(), 1);
        // Groups handed over after it are taken.
        submit(state, vec![view("v3", ("userId", "bob"), "lamp", T0 + 1)]);
        hand.step(state);
        let st = state.recs.status();
        assert_eq!(
            (st.feed_gaps, st.events_fed, st.cursor),
            (1, 1, 3),
            "{st:?}"
        );
        close(k, None);
    }

    /// The head read must agree with `interactions_of` on what could be an interaction,
    /// or the tailer would skip products (or decode everything).
    #[test]
    fn only_events_that_can_be_interactions_are_decoded() {
        let vocab = Vocabulary::default();
        let stored = |v: Value| serde_json::to_vec(&v).unwrap_or_default();
        let track = |name: &str| {
            stored(json!({"messageId": "m", "type": "track", "event": name,
                          "properties": {"product_id": "p1", "products": [{"product_id": "p2"}]},
                          "timestamp": 0, "receivedAt": 0}))
        };
        for name in [
            "Product Viewed",
            "Added to Cart",
            "Order Completed",
            "Added to Wishlist",
        ] {
            assert!(may_interact(&track(name), &vocab), "{name}");
        }
        for name in ["Checkout Started", "Email Opened", "Signed Up"] {
            assert!(!may_interact(&track(name), &vocab), "{name}");
        }
        let page = stored(json!({"messageId": "m", "type": "page", "name": "Product Viewed"}));
        assert!(!may_interact(&page, &vocab));
        // Unreadable bytes go to the full decode, which reports them.
        assert!(may_interact(b"{not json", &vocab));
    }
}
