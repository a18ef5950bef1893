//! Predictive models in a running server: serving the active version of each model inside
//! the writer's state machine (hot-swapped, no restart), explaining one person's
//! prediction, monitoring drift (population stability of every feature and of the score)
//! and the AUC on labels that matured since activation, online learning for FTRL models,
//! and the model API: list, versions, reports, activate, rollback, train.

use crate::admin::{authorize, blocking, resolve};
use crate::error::{ApiError, ErrorCode};
use crate::training::{self, ModelSpec};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use kairos_core::features::FeatureDefs;
use kairos_core::predict::{Hybrid, Predictor, ServedModel};
use kairos_core::time::format_timestamp;
use kairos_core::{Millis, ProfileId, Scoring};
use kairos_ml::metrics::{auc, Baseline};
use kairos_ml::Model;
use kairos_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

type S = State<Arc<AppState>>;

/// `[predictions]`: monitoring and online learning of served models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictionConfig {
    /// Population stability index above which a model counts as drifted (0.1 is a
    /// moderate shift, 0.25 a major one).
    pub psi_threshold: f64,
    /// How often matured labels are collected and drift is measured.
    pub monitor_interval_secs: u64,
    /// FTRL models learn from every label that matures in the live stream.
    pub online_learning: bool,
    /// Predictions waiting for their label to mature, at most (oldest dropped first).
    pub max_pending: usize,
    /// Matured labels kept for the rolling AUC.
    pub matured_window: usize,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        Self {
            psi_threshold: 0.25,
            monitor_interval_secs: 60,
            online_learning: true,
            max_pending: 200_000,
            matured_window: 20_000,
        }
    }
}

/// One served model version.
pub struct Active {
    pub name: String,
    pub version: u64,
    pub meta: Value,
    pub model: RwLock<Model>,
    pub label: String,
    pub horizon: Millis,
    /// Least time between two snapshots of one person awaiting a label.
    pub every: Millis,
    pub features: FeatureDefs,
    pub hybrid: Option<Hybrid>,
    pub activated_at: Millis,
    monitor: Monitor,
}

#[derive(Default)]
struct Pending {
    queue: VecDeque<(ProfileId, Millis, f64)>,
    last: HashMap<ProfileId, Millis>,
}

struct Monitor {
    feature_counts: Vec<Vec<AtomicU64>>,
    score_counts: Vec<AtomicU64>,
    predictions: AtomicU64,
    pending: Mutex<Pending>,
    /// (predicted probability, matured label), newest last.
    matured: Mutex<VecDeque<(f64, bool)>>,
    matured_total: AtomicU64,
    learned: AtomicU64,
}

impl Monitor {
    fn new(model: &Model) -> Self {
        let counts = |b: &Baseline| (0..b.shares.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            feature_counts: model.feature_baselines.iter().map(counts).collect(),
            score_counts: counts(&model.score_baseline),
            predictions: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            matured: Mutex::new(VecDeque::new()),
            matured_total: AtomicU64::new(0),
            learned: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the core calls: the model's probability, with the inputs counted for drift and
/// the prediction queued to meet its label.
struct MlPredictor {
    active: Arc<Active>,
    max_pending: usize,
}

impl Predictor for MlPredictor {
    fn predict(&self, profile: ProfileId, at: Millis, inputs: &[f32]) -> f64 {
        let a = &self.active;
        let model = a.model.read().unwrap_or_else(|p| p.into_inner());
        let p = model.predict(inputs);
        let m = &a.monitor;
        m.predictions.fetch_add(1, Ordering::Relaxed);
        for ((b, counts), &v) in model
            .feature_baselines
            .iter()
            .zip(&m.feature_counts)
            .zip(inputs)
        {
            if let Some(c) = counts.get(b.bin(v as f64)) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(c) = m.score_counts.get(model.score_baseline.bin(p)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        drop(model);
        let mut pending = lock(&m.pending);
        let due = pending
            .last
            .get(&profile)
            .is_none_or(|&t| at >= t + a.every || at < t);
        if due {
            pending.last.insert(profile, at);
            pending.queue.push_back((profile, at, p));
            while pending.queue.len() > self.max_pending {
                if let Some((id, t, _)) = pending.queue.pop_front() {
                    if pending.last.get(&id) == Some(&t) {
                        pending.last.remove(&id);
                    }
                }
            }
        }
        p
    }
}

/// The served models of a server.
#[derive(Default)]
pub struct Models {
    active: RwLock<BTreeMap<String, Arc<Active>>>,
    training: Mutex<BTreeMap<String, Value>>,
}

fn active_of(
    meta: &Value,
    name: &str,
    version: u64,
    model: Model,
    now: Millis,
) -> Result<Active, String> {
    let s = |k: &str| {
        meta.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let dur = |k: &str| {
        kairos_rules::parse_duration(&s(k))
            .map_err(|e| format!("model {name} v{version}: {k}: {e}"))
    };
    let features: FeatureDefs = serde_json::from_value(meta["features"].clone())
        .map_err(|e| format!("model {name} v{version}: features: {e}"))?;
    let hybrid: Option<Hybrid> = serde_json::from_value(meta["hybrid"].clone()).unwrap_or(None);
    let monitor = Monitor::new(&model);
    Ok(Active {
        name: name.to_string(),
        version,
        meta: meta.clone(),
        label: s("label"),
        horizon: dur("horizon")?,
        every: dur("every")?,
        features,
        hybrid,
        activated_at: now,
        model: RwLock::new(model),
        monitor,
    })
}

impl Models {
    /// Loads the active version of every stored model (with what online learning added to
    /// it) and puts them in force. Returns the problems, one per model that cannot serve.
    pub fn load(&self, state: &AppState) -> Vec<String> {
        let store = &state.store;
        let now = (state.clock)();
        let mut problems = Vec::new();
        let mut active = BTreeMap::new();
        let names = match store.model_names() {
            Ok(n) => n,
            Err(e) => return vec![format!("listing models: {e}")],
        };
        for name in names {
            let Ok(Some(version)) = store.active_model(&name) else {
                continue;
            };
            match load_version(store, &name, version, now) {
                Ok(a) => {
                    active.insert(name, Arc::new(a));
                }
                Err(e) => problems.push(e),
            }
        }
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = active;
        problems.extend(self.apply(state));
        problems
    }

    /// Binds the loaded models to the scoring in force.
    fn apply(&self, state: &AppState) -> Vec<String> {
        let served: Vec<ServedModel> = self
            .list()
            .into_iter()
            .map(|a| ServedModel {
                name: a.name.clone(),
                version: a.version,
                features: a
                    .model
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .features
                    .clone(),
                hybrid: a.hybrid.clone(),
                predictor: Arc::new(MlPredictor {
                    active: a.clone(),
                    max_pending: state.config.predictions.max_pending,
                }),
            })
            .collect();
        state.store.scoring().set_models(served)
    }

    pub fn list(&self) -> Vec<Arc<Active>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Active>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

fn load_version(store: &Store, name: &str, version: u64, now: Millis) -> Result<Active, String> {
    let stored = store
        .model(name, version)
        .map_err(|e| format!("model {name} v{version}: {e}"))?
        .ok_or_else(|| format!("model {name}: version {version} is missing"))?;
    let bytes = match store.model_online(name, version) {
        Ok(Some(online)) => online,
        _ => stored.bytes,
    };
    let model = Model::from_bytes(&bytes).map_err(|e| format!("model {name} v{version}: {e}"))?;
    active_of(&stored.meta, name, version, model, now)
}

/// Population stability per feature and of the score, matured-label AUC, drift verdict.
pub fn monitoring(a: &Active, threshold: f64) -> Value {
    let model = a.model.read().unwrap_or_else(|p| p.into_inner());
    let m = &a.monitor;
    let counts =
        |c: &[AtomicU64]| -> Vec<u64> { c.iter().map(|x| x.load(Ordering::Relaxed)).collect() };
    let predictions = m.predictions.load(Ordering::Relaxed);
    let mut features: Vec<(String, f64)> = model
        .features
        .iter()
        .zip(&model.feature_baselines)
        .zip(&m.feature_counts)
        .map(|((f, b), c)| (f.clone(), b.psi(&counts(c))))
        .collect();
    features.sort_by(|x, y| y.1.total_cmp(&x.1));
    let score_psi = model.score_baseline.psi(&counts(&m.score_counts));
    let matured: Vec<(f64, bool)> = lock(&m.matured).iter().copied().collect();
    let p: Vec<f64> = matured.iter().map(|x| x.0).collect();
    let y: Vec<f32> = matured
        .iter()
        .map(|x| if x.1 { 1.0 } else { 0.0 })
        .collect();
    let both = y.contains(&1.0) && y.contains(&0.0);
    let matured_auc = both.then(|| auc(&p, &y));
    // Too few predictions make PSI noise; judge drift from 500 on.
    let judged = predictions >= 500;
    let worst = features.first().map_or(0.0, |f| f.1);
    let drifted = judged && (worst > threshold || score_psi > threshold);
    let trained_auc = a.meta["metrics"].get(0).and_then(|m| m["auc"].as_f64());
    json!({
        "model": a.name,
        "version": a.version,
        "since": format_timestamp(a.activated_at),
        "predictions": predictions,
        "psi_threshold": threshold,
        "score_psi": score_psi,
        "feature_psi": features.iter().take(50).map(|(f, v)| json!({"feature": f, "psi": v})).collect::<Vec<_>>(),
        "drifted": drifted,
        "drift_judged": judged,
        "matured": {
            "labels": m.matured_total.load(Ordering::Relaxed),
            "window": matured.len(),
            "positive_rate": if y.is_empty() { Value::Null } else { json!(y.iter().map(|&v| v as f64).sum::<f64>() / y.len() as f64) },
            "auc": matured_auc,
            "auc_at_training": trained_auc,
        },
        "pending_labels": lock(&m.pending).queue.len(),
        "online_updates": m.learned.load(Ordering::Relaxed),
    })
}

/// One monitoring round for every served model: labels that matured by `now` are taken
/// from the event history by the same replay that builds training sets; FTRL models learn
/// from them; drift and matured AUC are published as metrics and saved in the store.
pub fn monitor_round(state: &AppState, now: Millis) -> Vec<Value> {
    let models = match state.models.get_all() {
        Some(m) => m,
        None => return Vec::new(),
    };
    let cfg = &state.config.predictions;
    let mut out = Vec::new();
    for a in models {
        let due: Vec<(ProfileId, Millis, f64)> = {
            let mut pending = lock(&a.monitor.pending);
            let mut due = Vec::new();
            let mut keep = VecDeque::with_capacity(pending.queue.len());
            while let Some(x) = pending.queue.pop_front() {
                if x.1 + a.horizon <= now {
                    due.push(x);
                } else {
                    keep.push_back(x);
                }
            }
            pending.queue = keep;
            due
        };
        if !due.is_empty() {
            learn_matured(state, &a, &due, now, cfg);
        }
        let status = monitoring(&a, cfg.psi_threshold);
        let labels = [("model", a.name.clone())];
        metrics::gauge!("kairos_model_score_psi", &labels)
            .set(status["score_psi"].as_f64().unwrap_or(0.0));
        if let Some(worst) = status["feature_psi"].get(0) {
            metrics::gauge!("kairos_model_max_feature_psi", &labels)
                .set(worst["psi"].as_f64().unwrap_or(0.0));
        }
        if let Some(list) = status["feature_psi"].as_array() {
            for f in list {
                metrics::gauge!(
                    "kairos_model_feature_psi",
                    "model" => a.name.clone(),
                    "feature" => f["feature"].as_str().unwrap_or_default().to_string()
                )
                .set(f["psi"].as_f64().unwrap_or(0.0));
            }
        }
        if let Some(v) = status["matured"]["auc"].as_f64() {
            metrics::gauge!("kairos_model_matured_auc", &labels).set(v);
        }
        metrics::gauge!("kairos_model_drifted", &labels).set(if status["drifted"] == true {
            1.0
        } else {
            0.0
        });
        let was = state
            .store
            .model_status(&a.name)
            .ok()
            .flatten()
            .is_some_and(|s| s["drifted"] == true);
        if status["drifted"] == true && !was {
            tracing::warn!(
                "model {} v{} has drifted: score PSI {:.3}, worst feature {} (threshold {}); retrain with `kairos train --model {} --if-drifted`",
                a.name,
                a.version,
                status["score_psi"].as_f64().unwrap_or(0.0),
                status["feature_psi"][0],
                cfg.psi_threshold,
                a.name
            );
        }
        if let Err(e) = state.store.put_model_status(&a.name, &status) {
            tracing::warn!("saving the monitoring status of model {}: {e}", a.name);
        }
        out.push(status);
    }
    out
}

fn learn_matured(
    state: &AppState,
    a: &Active,
    due: &[(ProfileId, Millis, f64)],
    now: Millis,
    cfg: &PredictionConfig,
) {
    let defs = state.store.scoring().definitions.clone();
    let scoring: Scoring = match training::label_scoring(&defs, &a.features, &a.label) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("model {}: matured labels cannot be computed: {e}", a.name);
            return;
        }
    };
    let core = state.config.core();
    let names: Vec<&String> = scoring
        .features
        .names
        .iter()
        .filter(|n| *n != kairos_core::features::LABEL_FEATURE)
        .collect();
    let online = cfg.online_learning
        && matches!(
            a.model.read().unwrap_or_else(|p| p.into_inner()).learner,
            kairos_ml::Learner::Ftrl(_)
        );
    let columns: Vec<Option<usize>> = {
        let m = a.model.read().unwrap_or_else(|p| p.into_inner());
        m.features
            .iter()
            .map(|f| names.iter().position(|n| *n == f))
            .collect()
    };
    let mut learned = 0u64;
    for &(id, at, p) in due {
        let id = state.store.resolve_id(id).unwrap_or(id);
        let Ok(examples) = state
            .store
            .person_examples(id, &scoring, &core, &[at], a.horizon, now)
        else {
            continue;
        };
        let Some(ex) = examples.into_iter().next() else {
            continue;
        };
        {
            let mut w = lock(&a.monitor.matured);
            w.push_back((p, ex.label));
            while w.len() > cfg.matured_window {
                w.pop_front();
            }
        }
        a.monitor.matured_total.fetch_add(1, Ordering::Relaxed);
        if online {
            let x: Vec<f32> = columns
                .iter()
                .map(|c| {
                    c.and_then(|c| ex.features.get(c).copied())
                        .unwrap_or(f32::NAN)
                })
                .collect();
            a.model
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .learn(&x, ex.label);
            learned += 1;
        }
    }
    if learned > 0 {
        a.monitor.learned.fetch_add(learned, Ordering::Relaxed);
        let bytes = a.model.read().unwrap_or_else(|p| p.into_inner()).to_bytes();
        if let Err(e) = state.store.put_model_online(&a.name, a.version, &bytes) {
            tracing::warn!("saving what model {} learned online: {e}", a.name);
        }
    }
}

impl Models {
    fn get_all(&self) -> Option<Vec<Arc<Active>>> {
        let l = self.list();
        (!l.is_empty()).then_some(l)
    }
}

/// Runs [`monitor_round`] every `monitor_interval_secs`.
pub async fn run_monitor(state: Arc<AppState>) {
    let secs = state.config.predictions.monitor_interval_secs.max(1);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = state.clone();
        let _ = tokio::task::spawn_blocking(move || monitor_round(&s, (s.clock)())).await;
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", get(get_model))
        .route(
            "/v1/models/{name}/versions/{version}/report",
            get(report_json),
        )
        .route(
            "/v1/models/{name}/versions/{version}/report.html",
            get(report_html),
        )
        .route("/v1/models/{name}/activate", post(activate))
        .route("/v1/models/{name}/rollback", post(rollback))
        .route("/v1/models/{name}/deactivate", post(deactivate))
        .route("/v1/models/{name}/train", post(start_training))
        .route("/v1/models/{name}/training", get(training_status))
        .route("/v1/models/{name}/monitoring", get(get_monitoring))
        .route("/v1/models/monitor", post(run_monitor_now))
        .route("/v1/profiles/{id}/predictions", get(profile_predictions))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no model named {name:?}"))
}

fn version_summary(name: &str, version: u64, meta: &Value, active: Option<u64>) -> Value {
    json!({
        "name": name,
        "version": version,
        "active": active == Some(version),
        "learner": meta["learner"],
        "label": meta["label"],
        "horizon": meta["horizon"],
        "trained_at": meta["trained_at"],
        "data_end": meta["data_end"],
        "metrics": meta["metrics"],
        "hybrid": meta["hybrid"],
        "feature_names": meta["feature_names"],
    })
}

async fn list_models(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, |s| {
        let mut out = Vec::new();
        for name in s.store.model_names()? {
            let versions = s.store.model_versions(&name)?;
            let active = s.store.active_model(&name)?;
            let shown = active.or(versions.last().copied());
            let meta = match shown {
                Some(v) => s.store.model(&name, v)?.map(|m| m.meta).unwrap_or_default(),
                None => Value::Null,
            };
            out.push(json!({
                "name": name,
                "versions": versions.len(),
                "active": active,
                "learner": meta["learner"],
                "label": meta["label"],
                "metrics": meta["metrics"],
                "serving": s.models.get(&name).map(|a| a.version),
            }));
        }
        Ok(Json(json!({"models": out})))
    })
    .await
}

async fn get_model(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| {
        let versions = s.store.model_versions(&name)?;
        if versions.is_empty() {
            return Err(not_found(&name));
        }
        let active = s.store.active_model(&name)?;
        let mut list = Vec::new();
        for v in versions.iter().rev() {
            if let Some(m) = s.store.model(&name, *v)? {
                list.push(version_summary(&name, *v, &m.meta, active));
            }
        }
        Ok(Json(json!({
            "name": name,
            "active": active,
            "versions": list,
            "status": s.store.model_status(&name)?,
        })))
    })
    .await
}

fn stored_report(s: &AppState, name: &str, version: &str) -> Result<Value, ApiError> {
    let v: u64 = version.parse().map_err(|_| {
        ApiError::new(ErrorCode::InvalidParameter, "version: expected a number").field("version")
    })?;
    let m = s.store.model(name, v)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("model {name} has no version {v}"),
        )
    })?;
    Ok(m.meta["report"].clone())
}

async fn report_json(
    State(state): S,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    blocking(&state, move |s| stored_report(s, &name, &version).map(Json)).await
}

async fn report_html(
    State(state): S,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers)?;
    let v = blocking(&state, move |s| stored_report(s, &name, &version)).await?;
    let report: kairos_ml::report::Report = serde_json::from_value(v)
        .map_err(|e| ApiError::new(ErrorCode::StorageFailure, format!("stored report: {e}")))?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(report.html())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    version: u64,
}

/// Re-binds the served models after a change of which version is active. Holds the
/// definitions lock so a definitions swap cannot carry over a stale set.
async fn reload(state: &Arc<AppState>) -> Result<Vec<String>, ApiError> {
    let _guard = state.definitions_lock.lock().await;
    blocking(state, |s| Ok(s.models.load(s))).await
}

async fn activate(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let b: ActivateBody = crate::scoring::parse_body(&body)?;
    let n = name.clone();
    let previous = blocking(&state, move |s| {
        let stored = s.store.model(&n, b.version)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("model {n} has no version {}", b.version),
            )
        })?;
        // Refuse what cannot serve before it replaces what can.
        Model::from_bytes(&stored.bytes).map_err(|e| {
            ApiError::new(ErrorCode::InvalidParameter, e.to_string()).field("version")
        })?;
        Ok(s.store.activate_model(&n, b.version)?)
    })
    .await?;
    let problems = reload(&state).await?;
    Ok(Json(json!({
        "name": name,
        "active": b.version,
        "previous": previous,
        "serving": state.models.get(&name).map(|a| a.version),
        "warnings": problems,
    })))
}

async fn rollback(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let n = name.clone();
    let to = blocking(&state, move |s| Ok(s.store.rollback_model(&n)?)).await?;
    let Some(to) = to else {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("model {name} has no older version than the active one to roll back to"),
        ));
    };
    let problems = reload(&state).await?;
    Ok(Json(
        json!({"name": name, "active": to, "warnings": problems}),
    ))
}

async fn deactivate(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let n = name.clone();
    let previous = blocking(&state, move |s| Ok(s.store.deactivate_model(&n)?)).await?;
    reload(&state).await?;
    Ok(Json(
        json!({"name": name, "active": null, "previous": previous}),
    ))
}

#[derive(Deserialize)]
struct TrainQuery {
    activate: Option<bool>,
}

/// Starts training in the background: 202 with where to follow it.
async fn start_training(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<TrainQuery>,
    body: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers)?;
    let spec: ModelSpec = if body.iter().all(u8::is_ascii_whitespace) {
        state.config.models.get(&name).cloned().unwrap_or_default()
    } else {
        crate::scoring::parse_body(&body)?
    };
    kairos_rules::parse_duration(&spec.horizon).map_err(|e| {
        ApiError::new(ErrorCode::InvalidParameter, format!("horizon: {e}")).field("horizon")
    })?;
    kairos_rules::parse_duration(&spec.every).map_err(|e| {
        ApiError::new(ErrorCode::InvalidParameter, format!("every: {e}")).field("every")
    })?;
    {
        let mut t = lock(&state.models.training);
        if t.get(&name).is_some_and(|s| s["state"] == "running") {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!("model {name} is already training"),
            ));
        }
        t.insert(
            name.clone(),
            json!({"state": "running", "done": 0, "total": 0}),
        );
    }
    let activate = q.activate.unwrap_or(false);
    let s = state.clone();
    let n = name.clone();
    tokio::task::spawn_blocking(move || {
        let defs = s.store.scoring().definitions.clone();
        let core = s.config.core();
        let s2 = s.clone();
        let n2 = n.clone();
        let mut progress = move |done: u64, total: u64| {
            lock(&s2.models.training).insert(
                n2.clone(),
                json!({"state": "running", "done": done, "total": total}),
            );
        };
        let result = training::train(
            &s.store,
            &defs,
            &core,
            &n,
            &spec,
            activate,
            (s.clock)(),
            &mut progress,
        );
        let status = match result {
            Ok(t) => {
                if t.activated {
                    let _g = s.definitions_lock.blocking_lock();
                    for p in s.models.load(&s) {
                        tracing::warn!("{p}");
                    }
                }
                json!({
                    "state": "done",
                    "version": t.version,
                    "activated": t.activated,
                    "metrics": training::metrics_summary(&t.report),
                })
            }
            Err(e) => json!({"state": "failed", "error": e.to_string()}),
        };
        lock(&s.models.training).insert(n, status);
    });
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(
            json!({"name": name, "state": "running", "status": format!("/v1/models/{name}/training")}),
        ),
    ))
}

async fn training_status(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let t = lock(&state.models.training).get(&name).cloned();
    t.map(Json).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("model {name} has not been trained by this server"),
        )
    })
}

async fn get_monitoring(
    State(state): S,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let a = state.models.get(&name).ok_or_else(|| not_found(&name))?;
    Ok(Json(monitoring(&a, state.config.predictions.psi_threshold)))
}

/// Runs a monitoring round now (collect matured labels, learn, measure drift).
async fn run_monitor_now(State(state): S, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let out = blocking(&state, |s| Ok(monitor_round(s, (s.clock)()))).await?;
    Ok(Json(json!({"models": out})))
}

#[derive(Deserialize)]
struct ExplainQuery {
    top: Option<usize>,
}

/// Every served model's prediction for a person now, with the features behind it.
async fn profile_predictions(
    State(state): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ExplainQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let top = q.top.unwrap_or(10);
    blocking(&state, move |s| {
        let profile = resolve(s, &id)?;
        let scoring = s.store.scoring();
        let now = (s.clock)();
        let features = scoring.features.extract(&profile, &scoring, now);
        let scores: Vec<f64> = profile
            .derived
            .scores_at(&scoring, now)
            .iter()
            .map(|x| x.value)
            .collect();
        let mut out = Vec::new();
        for a in s.models.list() {
            let model = a.model.read().unwrap_or_else(|p| p.into_inner());
            let x: Vec<f32> = model
                .features
                .iter()
                .map(|f| {
                    scoring
                        .features
                        .names
                        .iter()
                        .position(|n| n == f)
                        .map_or(f32::NAN, |i| features[i])
                })
                .collect();
            let e = model.explain(&x, top);
            let hybrid = a.hybrid.as_ref().and_then(|h| {
                let i = scoring.scores.iter().position(|c| c.name == h.score)?;
                let score = scores.get(i).copied().unwrap_or(0.0);
                Some(json!({
                    "value": h.value(score, scoring.scores[i].top(), e.probability),
                    "score": h.score,
                    "score_value": scores.get(i),
                    "score_weight": h.score_weight,
                    "model_weight": h.model_weight,
                }))
            });
            out.push(json!({
                "model": a.name,
                "version": a.version,
                "learner": model.learner.kind(),
                "probability": e.probability,
                "tier": e.tier,
                "threshold": model.threshold,
                "hybrid": hybrid,
                "base_margin": e.base_margin,
                "margin": e.margin,
                "contributions": e.contributions,
                "explanation": match model.learner.kind() {
                    "gbdt" => "TreeSHAP: each feature's share of the log-odds against the average person",
                    _ => "coefficient x standardised value: each feature's share of the log-odds against the average person",
                },
                "at_last_event": profile.predictions.iter().find(|p| p.model == a.name).map(|p| json!({
                    "version": p.version,
                    "probability": p.probability,
                    "hybrid": p.hybrid,
                    "at": format_timestamp(p.at),
                })),
            }));
        }
        Ok(Json(json!({
            "profile": profile.id.to_string(),
            "at": format_timestamp(now),
            "predictions": out,
        })))
    })
    .await
}
