//! Configuration: built-in defaults < TOML file < `KAIROS_*` environment < command-line flags
//! (the CLI applies the flags last).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    /// Bearer token for the admin and read API. Generated and printed when unset.
    pub admin_token: Option<String>,
    /// Write keys, one per source. A dev key is generated and printed when empty.
    pub sources: Vec<Source>,
    /// Origins allowed to call the browser endpoints (`*` for any).
    pub cors_origins: Vec<String>,
    pub ingest: IngestConfig,
    pub store: StoreConfig,
    pub identity: IdentityConfig,
    pub vocabulary: kairos_core::vocab::Vocabulary,
    /// Start a new store with the built-in scores and segments (see docs/scoring.md).
    pub default_definitions: bool,
    /// Scores applied at every start (`[scores.engagement]`); the API edits the rest.
    pub scores: BTreeMap<String, kairos_core::ScoreDef>,
    /// Segments applied at every start (`[segments.vip]`).
    pub segments: BTreeMap<String, kairos_core::SegmentDef>,
    /// Campaigns applied at every start (`[campaigns.cart_abandonment]`).
    pub campaigns: BTreeMap<String, kairos_core::campaign::CampaignDef>,
    /// Caps and quiet hours for every campaign (`[messaging]`), applied at every start when
    /// given; else what the store holds (the API edits it).
    pub messaging: Option<kairos_core::campaign::MessagingDef>,
    /// Where messages go: webhook endpoints, the SMTP relay, retries.
    pub delivery: DeliveryConfig,
    /// What models see of a person (`[features]`, docs/features.md), applied at every start
    /// when given.
    pub features: Option<kairos_core::features::FeatureDefs>,
    /// Predictive models and how `kairos train` builds them (`[models.purchase_7d]`,
    /// docs/models.md). The built-in `purchase_7d` when none are given.
    pub models: BTreeMap<String, crate::training::ModelSpec>,
    /// Monitoring and online learning of served models (`[predictions]`).
    pub predictions: crate::models::PredictionConfig,
    /// Product recommendations (`[recommendations]`, `[recommendations.model]`,
    /// docs/recommendations.md).
    pub recommendations: crate::recs::RecommendationsConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Run the delivery worker (off: messages wait in the outbox).
    pub enabled: bool,
    /// How Kairos is reached from a recipient's mail client, for unsubscribe links.
    pub public_url: String,
    /// How often the worker looks for due messages.
    pub poll_ms: u64,
    /// Attempts before a message becomes a dead letter.
    pub max_attempts: u32,
    /// Exponential backoff with full jitter: the n-th retry waits up to
    /// `min(retry_max_ms, retry_base_ms * 2^n)`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Webhook endpoints by name (`channel = "webhook:<name>"`).
    pub webhooks: BTreeMap<String, WebhookEndpointConfig>,
    /// The SMTP relay for `channel = "email"`.
    pub smtp: Option<SmtpConfig>,
    /// Change streams posted to webhook endpoints as they happen (`segment:vip`,
    /// `tier:engagement`, `primary`, `campaign:<name>`; `segment:*` for every segment).
    pub change_hooks: Vec<ChangeHook>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    pub url: String,
    /// Signs every request (`Kairos-Signature`, see docs/campaigns.md).
    pub secret: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `plain` (local relays), `starttls` or `tls`.
    #[serde(default = "default_security")]
    pub security: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `Shop <news@shop.example>`.
    pub from: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_security() -> String {
    "starttls".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChangeHook {
    pub endpoint: String,
    pub streams: Vec<String>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            public_url: "http://127.0.0.1:8080".into(),
            poll_ms: 250,
            max_attempts: 8,
            retry_base_ms: 5_000,
            retry_max_ms: 3_600_000,
            webhooks: BTreeMap::new(),
            smtp: None,
            change_hooks: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub write_key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub max_event_bytes: usize,
    /// Decompressed body limit.
    pub max_batch_bytes: usize,
    /// Body limit as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Decompressed size may be at most this many times the compressed size.
    pub max_decompression_ratio: usize,
    pub queue_capacity: usize,
    pub max_group_events: usize,
    pub dedupe_retention_days: u32,
    /// Keep hashed identifiers of erased people so their late events are dropped.
    pub suppress_erased: bool,
    /// fsync before acknowledging. Only a benchmark of the non-durable ceiling turns it off.
    pub fsync: bool,
    pub cache_profiles: usize,
}

/// The embedded store (`[store]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Block cache in MB. Unset: 256 MB for the server and imports, and for offline replays
    /// (`kairos train`, `kairos examples`) a quarter of the memory
    /// ([`kairos_store::StoreOptions::for_replays`]).
    pub cache_mb: Option<u64>,
    /// Nice value (0-19) of the storage engine's flush and compaction threads, so that
    /// their work waits for CPU the writer, a backfill or the HTTP workers do not use.
    /// Unset: 10; 0 runs them at the server's own priority
    /// ([`kairos_store::StoreOptions::worker_nice`]).
    pub worker_nice: Option<i32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Identify traits that identify a person besides email, e.g. `["phone"]`.
    pub traits: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./kairos-data"),
            admin_token: None,
            sources: Vec::new(),
            cors_origins: vec!["*".into()],
            ingest: IngestConfig::default(),
            store: StoreConfig::default(),
            identity: IdentityConfig::default(),
            vocabulary: Default::default(),
            default_definitions: true,
            scores: BTreeMap::new(),
            segments: BTreeMap::new(),
            campaigns: BTreeMap::new(),
            messaging: None,
            delivery: DeliveryConfig::default(),
            features: None,
            models: crate::training::default_models(),
            predictions: Default::default(),
            recommendations: Default::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            max_body_bytes: 500 * 1024,
            max_decompression_ratio: 100,
            queue_capacity: 512,
            max_group_events: 20_000,
            dedupe_retention_days: 30,
            suppress_erased: true,
            fsync: true,
            cache_profiles: 250_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Applies `KAIROS_*` variables from `vars` (normally `std::env::vars()`).
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("KAIROS_"))
            .collect();
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                name: name.into(),
                message: format!("{v:?} is not a valid number"),
            })
        }
        for (name, v) in &vars {
            match name.as_str() {
                "KAIROS_LISTEN" => self.listen = v.clone(),
                "KAIROS_DATA_DIR" => self.data_dir = PathBuf::from(v),
                "KAIROS_ADMIN_TOKEN" => self.admin_token = Some(v.clone()),
                "KAIROS_WRITE_KEY" => {
                    self.sources.retain(|s| s.name != "default");
                    self.sources.push(Source {
                        name: "default".into(),
                        write_key: v.clone(),
                    });
                }
                "KAIROS_CORS_ORIGINS" => {
                    self.cors_origins = v
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                }
                "KAIROS_QUEUE_CAPACITY" => self.ingest.queue_capacity = num(name, v)?,
                "KAIROS_DEDUPE_RETENTION_DAYS" => self.ingest.dedupe_retention_days = num(name, v)?,
                "KAIROS_MAX_GROUP_EVENTS" => self.ingest.max_group_events = num(name, v)?,
                "KAIROS_CACHE_MB" => self.store.cache_mb = Some(num(name, v)?),
                "KAIROS_WORKER_NICE" => self.store.worker_nice = Some(num(name, v)?),
                "KAIROS_FSYNC" => {
                    self.ingest.fsync = !matches!(v.as_str(), "0" | "false" | "off" | "no")
                }
                // Read by the CLI itself (logging, config path).
                "KAIROS_LOG" | "KAIROS_CONFIG" => {}
                _ => tracing::warn!("ignoring unknown environment variable {name}"),
            }
        }
        Ok(())
    }

    /// The definitions to put in force at start: what the store holds (or, for a new store,
    /// the built-in ones unless turned off), with the config file's scores and segments
    /// applied over them.
    pub fn definitions(
        &self,
        stored: Option<kairos_core::Definitions>,
    ) -> kairos_core::Definitions {
        let mut defs = stored.unwrap_or_else(|| {
            if self.default_definitions {
                kairos_core::defaults::default_definitions()
            } else {
                Default::default()
            }
        });
        for (k, v) in &self.scores {
            defs.scores.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.segments {
            defs.segments.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.campaigns {
            defs.campaigns.insert(k.clone(), v.clone());
        }
        if let Some(m) = &self.messaging {
            defs.messaging = m.clone();
        }
        if let Some(f) = &self.features {
            defs.features = f.clone();
        }
        defs
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(kairos_recs::RecsError::Invalid { field, reason }) =
            self.recommendations.model.validate()
        {
            return Err(ConfigError::Invalid(format!(
                "recommendations.model.{field}: {reason}"
            )));
        }
        if self.recommendations.max_history < 2 {
            return Err(ConfigError::Invalid(
                "recommendations.max_history: use at least 2".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.sources {
            if s.write_key.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "source {:?} has an empty write_key",
                    s.name
                )));
            }
            if !seen.insert(&s.write_key) {
                return Err(ConfigError::Invalid(format!(
                    "write key of source {:?} is used twice",
                    s.name
                )));
            }
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 8) {
            return Err(ConfigError::Invalid(
                "admin_token must be at least 8 characters".into(),
            ));
        }
        let d = &self.delivery;
        for (name, w) in &d.webhooks {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "delivery.webhooks.{name}.url: expected an http:// or https:// URL"
                )));
            }
            if w.secret.len() < 8 {
                return Err(ConfigError::Invalid(format!(
                    "delivery.webhooks.{name}.secret: use at least 8 characters"
                )));
            }
        }
        if let Some(smtp) = &d.smtp {
            if !["plain", "starttls", "tls"].contains(&smtp.security.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "delivery.smtp.security: `{}`; expected plain, starttls or tls",
                    smtp.security
                )));
            }
        }
        for (i, h) in d.change_hooks.iter().enumerate() {
            if !d.webhooks.contains_key(&h.endpoint) {
                return Err(ConfigError::Invalid(format!(
                    "delivery.change_hooks[{i}].endpoint: no [delivery.webhooks.{}]",
                    h.endpoint
                )));
            }
        }
        if d.max_attempts == 0 || d.retry_base_ms == 0 || d.retry_max_ms < d.retry_base_ms {
            return Err(ConfigError::Invalid(
                "delivery: max_attempts and retry_base_ms must be positive and retry_max_ms >= retry_base_ms".into(),
            ));
        }
        if self
            .store
            .worker_nice
            .is_some_and(|n| !(0..=19).contains(&n))
        {
            return Err(ConfigError::Invalid(
                "store.worker_nice: expected a nice value from 0 to 19".into(),
            ));
        }
        if self.ingest.max_event_bytes > self.ingest.max_batch_bytes {
            return Err(ConfigError::Invalid(
                "ingest.max_event_bytes exceeds ingest.max_batch_bytes".into(),
            ));
        }
        Ok(())
    }

    pub fn core(&self) -> kairos_core::CoreConfig {
        kairos_core::CoreConfig {
            identity_traits: self.identity.traits.clone(),
            vocabulary: self.vocabulary.clone(),
        }
    }

    pub fn limits(&self) -> kairos_core::segment::Limits {
        kairos_core::segment::Limits {
            max_event_bytes: self.ingest.max_event_bytes,
            max_batch_bytes: self.ingest.max_batch_bytes,
            ..Default::default()
        }
    }

    /// The store's options for the server and imports.
    pub fn store_options(&self) -> kairos_store::StoreOptions {
        self.with_store_config(kairos_store::StoreOptions::default())
    }

    /// The store's options for offline jobs that replay everyone's history.
    pub fn replay_store_options(&self) -> kairos_store::StoreOptions {
        self.with_store_config(kairos_store::StoreOptions::for_replays())
    }

    fn with_store_config(&self, mut o: kairos_store::StoreOptions) -> kairos_store::StoreOptions {
        if let Some(mb) = self.store.cache_mb {
            o.cache_bytes = mb.saturating_mul(1024 * 1024);
        }
        if let Some(nice) = self.store.worker_nice {
            o.worker_nice = (nice > 0).then_some(nice);
        }
        o
    }

    pub fn writer_options(&self) -> kairos_store::WriterOptions {
        kairos_store::WriterOptions {
            sync: self.ingest.fsync,
            max_group_events: self.ingest.max_group_events,
            queue_capacity: self.ingest.queue_capacity,
            cache_profiles: self.ingest.cache_profiles,
            core: self.core(),
            ..Default::default()
        }
    }
}

/// Credentials generated for a zero-config start, kept in the data directory so that a
/// restart keeps them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevCredentials {
    pub write_key: String,
    pub admin_token: String,
}

fn random_token(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let s: String = (0..24)
        .map(|_| {
            let c = rng.random_range(0..36u8);
            (if c < 10 { b'0' + c } else { b'a' + c - 10 }) as char
        })
        .collect();
    format!("{prefix}{s}")
}

impl Config {
    /// Fills in a write key and an admin token when none are configured. Returns the
    /// credentials it filled in (to print them), or `None` when nothing was missing.
    pub fn ensure_credentials(&mut self) -> Result<Option<DevCredentials>, ConfigError> {
        if !self.sources.is_empty() && self.admin_token.is_some() {
            return Ok(None);
        }
        let path = self.data_dir.join("dev-credentials.json");
        let creds = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(_) => {
                let c = DevCredentials {
                    write_key: random_token("wk_dev_"),
                    admin_token: random_token("adm_dev_"),
                };
                std::fs::create_dir_all(&self.data_dir).map_err(|source| ConfigError::Read {
                    path: self.data_dir.clone(),
                    source,
                })?;
                let text = serde_json::to_vec_pretty(&c)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
                std::fs::write(&path, text).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                c
            }
        };
        if self.sources.is_empty() {
            self.sources.push(Source {
                name: "dev".into(),
                write_key: creds.write_key.clone(),
            });
        }
        if self.admin_token.is_none() {
            self.admin_token = Some(creds.admin_token.clone());
        }
        Ok(Some(creds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_cache_comes_from_the_file_then_the_environment() {
        const MB: u64 = 1024 * 1024;
        assert_eq!(Config::default().store_options().cache_bytes, 256 * MB);
        let replays = Config::default().replay_store_options().cache_bytes;
        assert!(
            (256 * MB..=8192 * MB).contains(&replays),
            "a quarter of memory, bounded: {replays}"
        );
        let mut c: Config = toml::from_str("[store]\ncache_mb = 512\n").expect("toml");
        assert_eq!(c.store_options().cache_bytes, 512 * MB);
        assert_eq!(c.replay_store_options().cache_bytes, 512 * MB);
        c.apply_env([("KAIROS_CACHE_MB".to_string(), "2048".to_string())])
            .expect("env");
        assert_eq!(c.store_options().cache_bytes, 2048 * MB);
        let err = c
            .apply_env([("KAIROS_CACHE_MB".to_string(), "lots".to_string())])
            .expect_err("not a number");
        assert!(err.to_string().contains("KAIROS_CACHE_MB"), "{err}");
        assert!(toml::from_str::<Config>("[store]\ncache = 1\n").is_err());
    }

    #[test]
    fn env_overrides_file_values() {
        let mut c: Config = toml::from_str(
            r#"
            listen = "0.0.0.0:9000"
            [[sources]]
            name = "web"
            write_key = "wk_web"
            [ingest]
            queue_capacity = 10
            "#,
        )
        .expect("toml");
        c.apply_env([
            ("KAIROS_LISTEN".to_string(), "127.0.0.1:7000".to_string()),
            ("KAIROS_WRITE_KEY".to_string(), "wk_env".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ])
        .expect("env");
        assert_eq!(c.listen, "127.0.0.1:7000");
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.ingest.queue_capacity, 10);
        assert_eq!(
            c.ingest.max_event_bytes,
            32 * 1024,
            "defaults fill the rest"
        );
        let err = c
            .apply_env([("KAIROS_QUEUE_CAPACITY".to_string(), "lots".to_string())])
            .expect_err("bad number");
        assert!(err.to_string().contains("KAIROS_QUEUE_CAPACITY"));
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let c: Config = toml::from_str(include_str!("../../../docs/kairos.example.toml"))
            .expect("docs/kairos.example.toml parses");
        c.validate().expect("and is valid");
        assert_eq!(c.sources.len(), 2);
        let defaults = Config {
            admin_token: c.admin_token.clone(),
            sources: c.sources.clone(),
            ..Config::default()
        };
        assert_eq!(c, defaults, "the example documents the defaults");
    }

    #[test]
    fn model_specs_parse_from_toml_and_unknown_keys_are_named() {
        let c: Config = toml::from_str(
            "[models.churn]\nlabel = 'not did(\"Session Started\", within: 30d)'\nhorizon = \"30d\"\nlearner = \"logistic\"\ncalibration = \"isotonic\"\ntiers = { medium = 0.3, high = 0.6 }\ngbdt = { rounds = 50 }\n",
        )
        .expect("parses");
        let m = &c.models["churn"];
        assert_eq!(m.learner, kairos_ml::model::Kind::Logistic);
        assert_eq!(m.calibration, kairos_ml::calibrate::Method::Isotonic);
        assert_eq!(m.gbdt.rounds, 50);
        assert_eq!(m.every, "3d", "unset keys keep their defaults");
        assert!(
            !c.models.contains_key("purchase_7d"),
            "given models replace the built-in"
        );
        let err = toml::from_str::<Config>("[models.churn]\nlabl = \"x\"\n")
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("labl"), "{err}");
    }

    #[test]
    fn features_from_the_file_go_over_the_stored_definitions() {
        let c: Config = toml::from_str(
            "[features]\nbuiltins = false\n[features.expressions]\nbig = \"lifetime_revenue > 1000\"\n[features.categorical]\nplan = [\"free\", \"pro\"]\n",
        )
        .expect("parses");
        let d = c.definitions(None);
        assert!(!d.features.builtins);
        assert_eq!(d.features.expressions.len(), 1);
        let s = kairos_core::Scoring::compile(&d, None).expect("compiles");
        assert_eq!(s.features.names, vec!["big", "plan=free", "plan=pro"]);
    }

    #[test]
    fn worker_nice_defaults_to_ten_and_zero_keeps_the_servers_priority() {
        let mut c = Config::default();
        assert_eq!(c.store_options().worker_nice, Some(10));
        assert_eq!(c.replay_store_options().worker_nice, Some(10));
        c.apply_env([("KAIROS_WORKER_NICE".to_string(), "0".to_string())])
            .expect("env");
        c.validate().expect("0 is valid");
        assert_eq!(c.store_options().worker_nice, None);
        let c: Config = toml::from_str("[store]\nworker_nice = 19\n").expect("parses");
        c.validate().expect("19 is valid");
        assert_eq!(c.store_options().worker_nice, Some(19));
        let c: Config = toml::from_str("[store]\nworker_nice = 20\n").expect("parses");
        let err = c
            .validate()
            .expect_err("20 is not a nice value")
            .to_string();
        assert!(err.contains("store.worker_nice"), "{err}");
        let err = Config::default()
            .apply_env([("KAIROS_WORKER_NICE".to_string(), "low".to_string())])
            .expect_err("not a number")
            .to_string();
        assert!(err.contains("KAIROS_WORKER_NICE"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_not_silence() {
        let err = toml::from_str::<Config>("listne = \"x\"").expect_err("typo");
        assert!(err.to_string().contains("listne"));
        let err = toml::from_str::<Config>("[vocabulary]\nordr = [\"Order\"]").expect_err("typo");
        assert!(err.to_string().contains("ordr"), "{err}");
        let err = toml::from_str::<Config>("[segments.vip]\nrule = \"orders > 1\"\nprio = 1")
            .expect_err("typo");
        assert!(err.to_string().contains("prio"), "{err}");
    }
}
