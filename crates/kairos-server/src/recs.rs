//! Product recommendations over HTTP, and the background work that keeps them current.
//!
//! A thread tails the event log (arrival order, a seq cursor) and folds product views,
//! cart additions and purchases into each person's recent history in memory; every
//! `rebuild_interval_secs` with new interactions or catalog changes it rebuilds the model
//! ([`kairos_recs::Snapshot`]) from a copy of them and swaps it in. Ingest never waits for
//! any of it: the writer does not know this exists. Requests read the current snapshot.
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
use kairos_core::identity::IdKey;
use kairos_core::time::format_timestamp;
use kairos_core::vocab::Vocabulary;
use kairos_core::{Event, Millis, Profile};
use kairos_recs::interaction::{interactions_of, item_of, names_interaction, Interactions};
use kairos_recs::model::{BuildStats, Seen};
use kairos_recs::{
    Context, Item, Method, Recommendation, RecsConfig, RecsError, Request, Snapshot,
};
use kairos_store::{EventParts, LogPage, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
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

/// What the tailing thread has done, for the status endpoint.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub running: bool,
    pub cursor: u64,
    pub events_read: u64,
    pub interactions_folded: u64,
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
    /// person still exists, and the tailer forgets the identifiers it has looked up.
    erasures: AtomicU64,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
}

impl Recs {
    pub fn new(config: &RecommendationsConfig) -> Self {
        Self {
            interactions: RwLock::new(Interactions::new(config.max_history)),
            snapshot: RwLock::new(Arc::new(Snapshot::empty(config.model.clone()))),
            status: Mutex::new(Status::default()),
            catalog_changed: AtomicBool::new(true),
            erasures: AtomicU64::new(0),
            tx: Mutex::new(None),
        }
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
        self.interactions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .forget(person);
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
    let (tx, rx) = mpsc::channel();
    *state.recs.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    state.recs.set_status(|s| s.running = true);
    std::thread::Builder::new()
        .name("kairos-recs".into())
        .spawn(move || run(&state, rx))
        .ok()
}

struct Tail {
    cursor: u64,
    /// See [`person_of`]; `erasures` is the count it was last cleared at.
    known: HashMap<IdKey, u64>,
    erasures: u64,
    /// The erasure count the last rebuild checked people against.
    checked_erasures: u64,
    dirty: bool,
    last_build: Option<Instant>,
    catalog: Arc<Vec<Item>>,
}

fn run(state: &AppState, rx: mpsc::Receiver<Msg>) {
    let cfg = &state.config.recommendations;
    let mut t = Tail {
        cursor: 0,
        known: HashMap::new(),
        erasures: 0,
        checked_erasures: 0,
        dirty: true,
        last_build: None,
        catalog: Arc::new(Vec::new()),
    };
    let poll = Duration::from_millis(cfg.poll_ms.max(10));
    let interval = Duration::from_secs(cfg.rebuild_interval_secs);
    loop {
        let caught_up = match fold(state, &mut t) {
            Ok(n) => n < LOG_BATCH,
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
        match rx.recv_timeout(wait) {
            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Msg::Rebuild(reply)) => {
                let res = (|| -> Result<Status, StoreError> {
                    while fold(state, &mut t)? >= LOG_BATCH {}
                    rebuild(state, &mut t)?;
                    Ok(state.recs.status())
                })();
                let _ = reply.send(res.map_err(|e| e.to_string()));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    state.recs.set_status(|s| s.running = false);
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
    for stored in &page.events {
        let ev = &stored.event;
        let list = interactions_of(ev, vocab);
        if list.is_empty() {
            continue;
        }
        if let Some(person) = person_of(&state.store, ev, &mut t.known)? {
            found.push((person, list, ev.timestamp, item_of(ev)));
        }
    }
    let mut folded = 0u64;
    if !found.is_empty() {
        let mut inter = state
            .recs
            .interactions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for (person, list, ts, meta) in found {
            // Orders list several products; their attributes come from the catalog.
            if list.len() == 1 {
                if let Some(m) = meta {
                    inter.record_meta(m);
                }
            }
            for (item, kind) in list {
                inter.push(person, &item, kind, ts);
                folded += 1;
            }
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
