//! Kairos HTTP API: Segment-compatible ingest (`/v1/batch` and friends, browser aliases),
//! the profile, event-log and privacy API, health and metrics, and configuration.
//!
//! It owns HTTP concerns only: authentication, body limits and decompression, the error
//! table, routing. Meaning comes from `kairos-core`, durability from `kairos-store`. It must
//! never contain profile logic or touch fjall directly, and it takes its listener, clock and
//! shutdown signal from the caller so that tests bind `127.0.0.1:0` and control time.

pub mod abtest;
pub mod admin;
pub mod campaigns;
pub mod channels;
pub mod config;
pub mod default_templates;
pub mod delivery;
pub mod error;
pub mod ingest;
pub mod messages;
pub mod models;
pub mod openapi;
pub mod recs;
pub mod scoring;
pub mod sendtime;
pub mod training;

use axum::routing::{get, post};
use axum::Router;
use kairos_core::Millis;
use kairos_store::{Ingestor, Store, StoreError};
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::Config;
pub use error::{ApiError, ErrorCode};

/// Where "now" comes from. Tests pass a controllable one.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

pub fn system_clock() -> Clock {
    kairos_store::Clock::system().0
}

/// Shared state of every handler.
pub struct AppState {
    pub store: Store,
    pub ingest: Ingestor,
    pub config: Config,
    /// write key -> source name
    pub write_keys: HashMap<String, String>,
    pub limits: kairos_core::segment::Limits,
    pub clock: Clock,
    pub metrics: Option<PrometheusHandle>,
    /// Serialises edits of score and segment definitions.
    pub definitions_lock: tokio::sync::Mutex<()>,
    /// Webhook endpoints and the SMTP relay messages go through.
    pub channels: Arc<channels::Channels>,
    /// Predictive models served by the writer, their monitoring and training jobs.
    pub models: models::Models,
    /// Engagement-hour priors for send-time optimization.
    pub send_time: sendtime::SendTime,
    /// Product recommendations: histories folded from what the writer accepts, and the
    /// model serving.
    pub recs: recs::Recs,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("cannot open the store at {path}: {source}")]
    Store { path: String, source: StoreError },
}

/// An open Kairos: store, writer thread and the state the HTTP layer serves.
pub struct Kairos {
    pub state: Arc<AppState>,
    writer: Option<JoinHandle<()>>,
}

impl Kairos {
    /// Opens the store in `config.data_dir` and starts the writer. `config` must already
    /// carry credentials (see [`Config::ensure_credentials`]).
    pub fn open(
        config: Config,
        clock: Clock,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let store_err = |source| StartError::Store {
            path: config.data_dir.display().to_string(),
            source,
        };
        let store = Store::open(config.data_dir.join("store"), &config.store_options())
            .map_err(store_err)?;
        let mut opts = config.writer_options();
        opts.clock = kairos_store::Clock(clock.clone());
        let recs = recs::Recs::new(&config.recommendations);
        if config.recommendations.enabled {
            opts.observer = Some(recs.observer(&config.vocabulary));
        }
        let (ingest, writer) = Ingestor::start(store.clone(), opts).map_err(store_err)?;
        let stored = store.definitions().map_err(store_err)?;
        let defs = config.definitions(stored.clone());
        if Some(&defs) != stored.as_ref() {
            let scoring = kairos_core::Scoring::compile(&defs, None)
                .map_err(|e| config::ConfigError::Invalid(format!("definitions: {e}")))?;
            let done = ingest.define(scoring, clock()).map_err(store_err)?;
            // Waited for on a plain thread: `open` may be called from async code.
            std::thread::spawn(move || done.blocking_recv())
                .join()
                .map_err(|_| store_err(StoreError::WriterStopped))?
                .map_err(|_| store_err(StoreError::WriterStopped))?
                .map_err(store_err)?;
        }
        if stored.is_none() && config.default_definitions {
            // A new store: the built-in campaigns' templates, so they can send at once.
            for (name, t) in default_templates::default_templates() {
                if store.template(name).map_err(store_err)?.is_none() {
                    store
                        .put_template(name, &serde_json::json!(t))
                        .map_err(store_err)?;
                }
            }
        }
        // Campaigns whose channel goes nowhere: their messages become dead letters (to be
        // re-driven once the channel is configured); say so once, at start.
        for c in &store.scoring().campaigns.list {
            let missing = match c.channel.strip_prefix("webhook:") {
                Some(ep) => !config.delivery.webhooks.contains_key(ep),
                None => config.delivery.smtp.is_none(),
            };
            if missing && c.enabled {
                tracing::warn!(
                    "campaign {}: channel {} is not configured ([delivery.smtp] or [delivery.webhooks.<name>]); its messages will be dead letters until it is",
                    c.name,
                    c.channel
                );
            }
        }
        let channels = channels::Channels::new(&config.delivery)
            .map_err(|e| config::ConfigError::Invalid(format!("delivery: {e}")))?;
        let write_keys = config
            .sources
            .iter()
            .map(|s| (s.write_key.clone(), s.name.clone()))
            .collect();
        Ok(Self {
            state: Arc::new(AppState {
                store,
                ingest,
                limits: config.limits(),
                write_keys,
                clock,
                metrics,
                definitions_lock: tokio::sync::Mutex::new(()),
                channels: Arc::new(channels),
                models: models::Models::default(),
                send_time: sendtime::SendTime::default(),
                recs,
                config,
            }),
            writer: Some(writer),
        })
        .inspect(|k| {
            // The active version of every stored model serves from the first event.
            for problem in k.state.models.load(&k.state) {
                tracing::warn!("{problem}");
            }
        })
    }

    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router();
        let mut background = vec![
            tokio::spawn(maintenance(self.state.clone())),
            tokio::spawn(delivery::run_schedules(self.state.clone())),
            tokio::spawn(campaigns::run_auto_winner(self.state.clone())),
            tokio::spawn(models::run_monitor(self.state.clone())),
            tokio::spawn(sendtime::run_priors(self.state.clone())),
        ];
        // Recommendations fold the log on their own thread (CPU-bound rebuilds stay off the
        // async runtime).
        let recs_thread = recs::start(self.state.clone());
        if self.state.config.delivery.enabled {
            let channels = self.state.channels.clone();
            background.push(tokio::spawn(delivery::run_outbox(
                self.state.clone(),
                channels.clone(),
            )));
            if !self.state.config.delivery.change_hooks.is_empty() {
                background.push(tokio::spawn(delivery::run_change_hooks(
                    self.state.clone(),
                    channels,
                )));
            }
        }
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        for task in &background {
            task.abort();
        }
        for task in background {
            let _ = task.await;
        }
        self.state.recs.stop();
        if let Some(t) = recs_thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // Every acknowledged event is already fsync'd by its group commit, so there is
        // nothing to flush here. The writer thread ends when the last handle to it is gone:
        // when this was the last, wait for it, so the store is closed when this returns
        // (callers may remove its directory next). Handles may outlive this call (tests
        // keep the state), and then the writer ends with them.
        let writer = self.writer.take();
        if let (Ok(state), Some(writer)) = (Arc::try_unwrap(self.state), writer) {
            drop(state);
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(std::io::Error::other)?
                .map_err(|_| std::io::Error::other("the writer thread panicked"))?;
        }
        Ok(())
    }
}

/// Background upkeep: prunes dedupe keys past the retention window, hourly.
async fn maintenance(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let asked = state
            .ingest
            .prune_dedupe((state.clock)(), state.config.ingest.dedupe_retention_days);
        let res = match asked {
            Ok(rx) => rx
                .await
                .unwrap_or(Err(kairos_store::StoreError::WriterStopped)),
            Err(e) => Err(e),
        };
        match res {
            Ok(n) if n > 0 => tracing::info!("pruned {n} dedupe keys past retention"),
            Err(e) => tracing::warn!("dedupe pruning failed: {e}"),
            _ => {}
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    use ingest::Endpoint;
    let cors = cors_layer(&state.config.cors_origins);
    let mut browser = Router::new();
    for (path, ep) in [
        ("/v1/b", Endpoint::Batch),
        ("/v1/t", Endpoint::Single(kairos_core::EventKind::Track)),
        ("/v1/i", Endpoint::Single(kairos_core::EventKind::Identify)),
        ("/v1/p", Endpoint::Single(kairos_core::EventKind::Page)),
        ("/v1/s", Endpoint::Single(kairos_core::EventKind::Screen)),
        ("/v1/g", Endpoint::Single(kairos_core::EventKind::Group)),
        ("/v1/a", Endpoint::Single(kairos_core::EventKind::Alias)),
    ] {
        browser = browser.route(path, post(ingest::handler(ep)));
    }
    let mut api = Router::new();
    for (path, ep) in [
        ("/v1/batch", Endpoint::Batch),
        ("/v1/import", Endpoint::Batch),
        ("/v1/track", Endpoint::Single(kairos_core::EventKind::Track)),
        (
            "/v1/identify",
            Endpoint::Single(kairos_core::EventKind::Identify),
        ),
        ("/v1/page", Endpoint::Single(kairos_core::EventKind::Page)),
        (
            "/v1/screen",
            Endpoint::Single(kairos_core::EventKind::Screen),
        ),
        ("/v1/group", Endpoint::Single(kairos_core::EventKind::Group)),
        ("/v1/alias", Endpoint::Single(kairos_core::EventKind::Alias)),
    ] {
        api = api.route(path, post(ingest::handler(ep)));
    }
    Router::new()
        .merge(browser.layer(cors.clone()))
        .merge(api.layer(cors))
        .merge(admin::routes())
        .merge(scoring::routes())
        .merge(models::routes())
        .merge(sendtime::routes())
        .merge(campaigns::routes())
        .merge(messages::routes())
        .merge(recs::routes())
        .route("/health", get(health))
        .route("/metrics", get(metrics_endpoint))
        .route("/v1/openapi.json", get(openapi::handler))
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers(Any)
        .max_age(std::time::Duration::from_secs(3600));
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let list: Vec<http::HeaderValue> = origins
            .iter()
            .filter_map(|o| http::HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

async fn health(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "status": "ok",
        "queue": state.ingest.queue_len(),
        "queueCapacity": state.config.ingest.queue_capacity,
    }))
}

async fn metrics_endpoint(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> Result<String, ApiError> {
    match &state.metrics {
        Some(h) => Ok(h.render()),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "metrics are not enabled in this process",
        )),
    }
}
