//! Training and evaluating predictive models on the stored event history.
//!
//! The training set comes from replaying every person's events through the core (see
//! [`kairos_core::features::examples`]): features at each cut-off from the same
//! [`kairos_core::features::FeatureSet`] that serves live events, the label from the rule
//! evaluated one horizon later. Split by time, purged so no training label looks into the
//! test period; the test rows are scored by the model and by every rule score (Platt-scaled
//! on the training rows) so the report shows what the model adds.
//!
//! Used by `kairos train` / `kairos evaluate` (on a stopped server's data directory) and
//! by `POST /v1/models/{name}/train` (in a running server, beside ingest).

use kairos_core::features::{FeatureDefs, LABEL_FEATURE};
use kairos_core::predict::Hybrid;
use kairos_core::time::{format_timestamp, DAY};
use kairos_core::{CoreConfig, Definitions, Millis, Scoring};
use kairos_ml::calibrate::{Calibration, Method};
use kairos_ml::data::Dataset;
use kairos_ml::metrics::{best_f1_threshold, Evaluation};
use kairos_ml::model::{Kind, TrainSpec};
use kairos_ml::report::{DataSummary, FoldResult, Importance, Report};
use kairos_ml::split::{rolling_origin, time_split};
use kairos_ml::{ftrl, gbdt, linear, Model, Tiers};
use kairos_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What a model predicts and how it is trained (`[models.<name>]` in config, or the body
/// of `POST /v1/models/{name}/train`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    /// The outcome: a rule true when it happened within `horizon` after a cut-off.
    pub label: String,
    pub horizon: String,
    /// Cut-offs every this long over the history.
    pub every: String,
    pub learner: Kind,
    pub calibration: Method,
    pub tiers: Tiers,
    /// Blend with a rule score into one 0-100 number.
    pub hybrid: Option<Hybrid>,
    /// Share of the latest cut-offs that test.
    pub test_share: f64,
    /// Rolling-origin cross-validation folds (0 = none).
    pub cv_folds: usize,
    pub gbdt: gbdt::Params,
    pub logistic: linear::Params,
    pub ftrl: ftrl::Params,
}

impl Default for ModelSpec {
    fn default() -> Self {
        let train = TrainSpec::default();
        Self {
            label: r#"did("Order Completed", within: 7d)"#.into(),
            horizon: "7d".into(),
            every: "3d".into(),
            learner: Kind::Gbdt,
            calibration: Method::Platt,
            tiers: Tiers::default(),
            hybrid: None,
            test_share: 0.25,
            cv_folds: 0,
            gbdt: train.gbdt,
            logistic: train.logistic,
            ftrl: train.ftrl,
        }
    }
}

/// The built-in model: purchase in the next 7 days, blended with the purchase-intent score.
pub fn default_models() -> std::collections::BTreeMap<String, ModelSpec> {
    let mut m = std::collections::BTreeMap::new();
    m.insert(
        "purchase_7d".to_string(),
        ModelSpec {
            hybrid: Some(Hybrid {
                score: "purchase_intent".into(),
                score_weight: 0.5,
                model_weight: 0.5,
            }),
            ..ModelSpec::default()
        },
    );
    m
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A setting or the data itself cannot make a model: names the setting.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ml(#[from] kairos_ml::MlError),
}

impl From<kairos_core::scoring::DefinitionError> for TrainError {
    fn from(e: kairos_core::scoring::DefinitionError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl ModelSpec {
    pub fn horizon_ms(&self) -> Result<Millis, TrainError> {
        kairos_rules::parse_duration(&self.horizon)
            .map_err(|e| TrainError::Invalid(format!("horizon: {e}")))
    }

    pub fn every_ms(&self) -> Result<Millis, TrainError> {
        kairos_rules::parse_duration(&self.every)
            .map_err(|e| TrainError::Invalid(format!("every: {e}")))
    }

    fn train_spec(&self) -> TrainSpec {
        TrainSpec {
            learner: self.learner,
            gbdt: self.gbdt.clone(),
            logistic: self.logistic.clone(),
            ftrl: self.ftrl.clone(),
            calibration: self.calibration,
            tiers: self.tiers,
            validation_share: 0.2,
        }
    }
}

/// Definitions to replay with: no campaigns (replays decide no messages), the label rule
/// compiled among the features so the state keeps the windows it reads.
pub fn label_scoring(
    defs: &Definitions,
    features: &FeatureDefs,
    label: &str,
) -> Result<Scoring, TrainError> {
    let mut defs = defs.clone();
    defs.campaigns.clear();
    defs.features = features.clone();
    defs.features
        .expressions
        .insert(LABEL_FEATURE.into(), label.to_string());
    Scoring::compile(&defs, None)
        .map_err(|e| TrainError::Invalid(format!("the label or the features do not compile: {e}")))
}

/// Cut-offs every `every` from the day after the first event, while a horizon fits
/// before the last.
pub fn cutoffs(first: Millis, end: Millis, every: Millis, horizon: Millis) -> Vec<Millis> {
    (0..)
        .map(|i| first.div_euclid(DAY) * DAY + DAY + i * every)
        .take_while(|c| c + horizon <= end)
        .collect()
}

/// The labelled table of a model over the stored history, rows in time order.
pub struct History {
    pub data: Dataset,
    pub cutoffs: Vec<Millis>,
    pub people: u64,
    pub first: Millis,
    pub end: Millis,
}

pub fn history(
    store: &Store,
    scoring: &Scoring,
    core: &CoreConfig,
    every: Millis,
    horizon: Millis,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<History, TrainError> {
    let Some((first, end)) = store.event_time_range()? else {
        return Err(TrainError::Invalid("the store holds no events".into()));
    };
    let cuts = cutoffs(first, end, every, horizon);
    if cuts.len() < 2 {
        return Err(TrainError::Invalid(format!(
            "the history ({} to {}) holds fewer than two cut-offs {} apart with a horizon after them; shorten `every` or `horizon`, or load more history",
            format_timestamp(first),
            format_timestamp(end),
            kairos_core::time::format_duration(every)
        )));
    }
    let total = store.approximate_counts().profiles;
    let mut examples =
        store.training_examples(scoring, core, &cuts, horizon, end, |n| progress(n, total))?;
    examples.sort_by_key(|(id, e)| (e.cutoff, id.0));
    let names: Vec<String> = scoring
        .features
        .names
        .iter()
        .filter(|n| *n != LABEL_FEATURE)
        .cloned()
        .collect();
    let mut data = Dataset::with_names(names);
    let mut row_cutoffs = Vec::with_capacity(examples.len());
    let mut people = std::collections::HashSet::new();
    for (id, e) in &examples {
        data.push(&e.features, e.label)?;
        row_cutoffs.push(e.cutoff);
        people.insert(id.0);
    }
    Ok(History {
        data,
        cutoffs: row_cutoffs,
        people: people.len() as u64,
        first,
        end,
    })
}

/// A trained, stored model and its report.
pub struct Trained {
    pub version: u64,
    pub activated: bool,
    pub report: Report,
}

/// Trains model `name` on the store's history, evaluates it against the rule scores,
/// stores it as a new version (activated when `activate`) and returns the report.
#[allow(clippy::too_many_arguments)]
pub fn train(
    store: &Store,
    defs: &Definitions,
    core: &CoreConfig,
    name: &str,
    spec: &ModelSpec,
    activate: bool,
    now: Millis,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Trained, TrainError> {
    kairos_core::scoring::check_name(format!("models.{name}"), name, false)?;
    if !(0.05..=0.5).contains(&spec.test_share) {
        return Err(TrainError::Invalid("test_share: must be 0.05..=0.5".into()));
    }
    spec.tiers.check()?;
    let (horizon, every) = (spec.horizon_ms()?, spec.every_ms()?);
    let scoring = label_scoring(defs, &defs.features, &spec.label)?;
    if let Some(h) = &spec.hybrid {
        if !defs.scores.contains_key(&h.score) {
            return Err(TrainError::Invalid(format!(
                "hybrid.score: no score named {:?}",
                h.score
            )));
        }
    }
    let hist = history(store, &scoring, core, every, horizon, progress)?;
    let fold = time_split(&hist.cutoffs, spec.test_share, horizon).ok_or_else(|| {
        TrainError::Invalid("too few cut-offs to split by time into train and test".into())
    })?;
    let train = hist.data.subset(&fold.train);
    let test = hist.data.subset(&fold.test);
    for (part, d) in [("training", &train), ("test", &test)] {
        d.check_trainable()
            .map_err(|e| TrainError::Invalid(format!("the {part} rows cannot be used: {e}")))?;
    }
    let train_spec = spec.train_spec();
    let (model, log) = Model::fit(&train_spec, &train)?;
    let boundary = fold.boundary.unwrap_or(hist.end);
    let mut report = evaluate(&model, &train, &test, defs)?;
    report.model = name.to_string();
    report.learner = model.learner.kind().to_string();
    report.label = spec.label.clone();
    report.train_seconds = log.seconds;
    report.data = DataSummary {
        source: format!(
            "event history of {} people, {} to {}; cut-offs every {}, label {} after each",
            hist.people,
            format_timestamp(hist.first),
            format_timestamp(hist.end),
            spec.every,
            spec.horizon
        ),
        split: format!(
            "by time: test = cut-offs from {}; train = cut-offs whose label window ends by then (purged)",
            format_timestamp(boundary)
        ),
        train_rows: train.rows() as u64,
        test_rows: test.rows() as u64,
        train_positive_rate: train.positive_rate(),
        test_positive_rate: test.positive_rate(),
        features: train.cols() as u64,
    };
    if spec.cv_folds > 0 {
        for (k, f) in rolling_origin(&hist.cutoffs, spec.cv_folds, horizon)
            .into_iter()
            .enumerate()
        {
            let (tr, te) = (hist.data.subset(&f.train), hist.data.subset(&f.test));
            if tr.check_trainable().is_err() || te.check_trainable().is_err() {
                continue;
            }
            let (m, _) = Model::fit(&train_spec, &tr)?;
            let e = Evaluation::new("fold", &m.predict_dataset(&te), &te.y, m.threshold);
            report
                .folds
                .push(FoldResult::new(k as u32 + 1, tr.rows(), te.rows(), &e));
        }
    }
    report.notes.push(
        "The stored model is the one evaluated here (trained on the training rows only), so these numbers are its own.".into(),
    );
    let meta = json!({
        "label": spec.label,
        "horizon": spec.horizon,
        "every": spec.every,
        "learner": model.learner.kind(),
        "features": defs.features,
        "feature_names": model.features,
        "hybrid": spec.hybrid,
        "tiers": spec.tiers,
        "trained_at": format_timestamp(now),
        "test_from": format_timestamp(boundary),
        "data_end": format_timestamp(hist.end),
        "data_end_ms": hist.end,
        "metrics": metrics_summary(&report),
        "report": report,
    });
    let version = store.put_model(name, &meta, &model.to_bytes())?;
    report.version = Some(version);
    if activate {
        store.activate_model(name, version)?;
    }
    Ok(Trained {
        version,
        activated: activate,
        report,
    })
}

/// The headline numbers of a report, for listings.
pub fn metrics_summary(r: &Report) -> Value {
    let e: Vec<Value> = r
        .evaluations
        .iter()
        .map(|e| {
            json!({"name": e.name, "auc": e.auc, "pr_auc": e.pr_auc, "log_loss": e.log_loss, "brier": e.brier})
        })
        .collect();
    json!(e)
}

/// The model's metrics on `test` beside each rule score's (Platt-scaled on `train`),
/// with feature importance.
pub fn evaluate(
    model: &Model,
    train: &Dataset,
    test: &Dataset,
    defs: &Definitions,
) -> Result<Report, TrainError> {
    let p = model.predict_dataset(test);
    let mut report = Report {
        evaluations: vec![Evaluation::new(
            &format!("model ({})", model.learner.kind()),
            &p,
            &test.y,
            model.threshold,
        )],
        ..Report::default()
    };
    for score in defs.scores.keys() {
        let column = format!("score_{score}");
        let Some(j) = train.names.iter().position(|n| *n == column) else {
            continue;
        };
        let values = |d: &Dataset| -> Vec<f64> {
            (0..d.rows())
                .map(|i| {
                    let v = d.row(i)[j];
                    if v.is_nan() {
                        0.0
                    } else {
                        v as f64
                    }
                })
                .collect()
        };
        let (xs, xt) = (values(train), values(test));
        let platt = Calibration::fit(Method::Platt, &xs, &train.y);
        let ps: Vec<f64> = xs.iter().map(|&v| platt.apply(v)).collect();
        let pt: Vec<f64> = xt.iter().map(|&v| platt.apply(v)).collect();
        report.evaluations.push(Evaluation::new(
            &format!("rule score {score}"),
            &pt,
            &test.y,
            best_f1_threshold(&ps, &train.y),
        ));
    }
    // Mean |contribution| over up to 2000 test rows, spread evenly.
    let step = (test.rows() / 2000).max(1);
    let mut mean_abs = vec![0.0; test.cols()];
    let mut n = 0.0f64;
    for i in (0..test.rows()).step_by(step) {
        let e = model.explain(test.row(i), 0);
        for c in e.contributions {
            if let Some(j) = model.features.iter().position(|f| *f == c.feature) {
                mean_abs[j] += c.contribution.abs();
            }
        }
        n += 1.0;
    }
    report.importance = model
        .importance()
        .into_iter()
        .map(|(feature, importance)| {
            let j = model.features.iter().position(|f| *f == feature);
            Importance {
                mean_abs_contribution: j.map_or(0.0, |j| mean_abs[j] / n.max(1.0)),
                feature,
                importance,
            }
        })
        .collect();
    Ok(report)
}

/// Re-evaluates stored model `name` `version` on the history as it is now: by default on
/// cut-offs whose label matured after the model's training data ended (what it has
/// predicted since), else on the model's own test period.
pub fn evaluate_stored(
    store: &Store,
    defs: &Definitions,
    core: &CoreConfig,
    name: &str,
    version: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, TrainError> {
    let stored = store
        .model(name, version)?
        .ok_or_else(|| TrainError::Invalid(format!("model {name} has no version {version}")))?;
    let model = Model::from_bytes(&stored.bytes)?;
    let meta = &stored.meta;
    let spec_str = |k: &str| {
        meta.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let features: FeatureDefs = serde_json::from_value(meta["features"].clone())
        .map_err(|e| TrainError::Invalid(format!("model {name} v{version}: features: {e}")))?;
    let spec = ModelSpec {
        label: spec_str("label"),
        horizon: spec_str("horizon"),
        every: spec_str("every"),
        ..ModelSpec::default()
    };
    let (horizon, every) = (spec.horizon_ms()?, spec.every_ms()?);
    let scoring = label_scoring(defs, &features, &spec.label)?;
    let hist = history(store, &scoring, core, every, horizon, progress)?;
    let data_end = meta["data_end_ms"].as_i64().unwrap_or(i64::MAX);
    let test_from = meta
        .get("test_from")
        .and_then(Value::as_str)
        .and_then(kairos_core::time::parse_timestamp);
    let later: Vec<usize> = (0..hist.cutoffs.len())
        .filter(|&i| hist.cutoffs[i] > data_end)
        .collect();
    let (rows, what) = if !later.is_empty() {
        (later, "cut-offs after the model's training data ended")
    } else {
        let from = test_from.unwrap_or(i64::MAX);
        (
            (0..hist.cutoffs.len())
                .filter(|&i| hist.cutoffs[i] >= from)
                .collect(),
            "the model's own test period (no later labels have matured yet)",
        )
    };
    let train_rows: Vec<usize> = (0..hist.cutoffs.len())
        .filter(|&i| hist.cutoffs[i] + horizon <= test_from.unwrap_or(i64::MAX))
        .collect();
    // Columns by name, in the model's order.
    let cols: Vec<usize> =
        model
            .features
            .iter()
            .map(|f| {
                hist.data.names.iter().position(|n| n == f).ok_or_else(|| {
                    TrainError::Invalid(format!("feature {f} is no longer computed"))
                })
            })
            .collect::<Result<_, _>>()?;
    let project = |idx: &[usize]| -> Dataset {
        let mut d = Dataset::with_names(model.features.clone());
        for &i in idx {
            let row = hist.data.row(i);
            let x: Vec<f32> = cols.iter().map(|&c| row[c]).collect();
            let _ = d.push(&x, hist.data.y[i] > 0.5);
        }
        d
    };
    let test = project(&rows);
    let train = project(&train_rows);
    test.check_trainable()
        .map_err(|e| TrainError::Invalid(format!("the evaluation rows cannot be used: {e}")))?;
    let mut report = evaluate(&model, &train, &test, defs)?;
    report.model = name.to_string();
    report.version = Some(version);
    report.learner = model.learner.kind().to_string();
    report.label = spec.label.clone();
    report.data = DataSummary {
        source: format!(
            "event history of {} people to {}",
            hist.people,
            format_timestamp(hist.end)
        ),
        split: format!("evaluated on {what}"),
        train_rows: train.rows() as u64,
        test_rows: test.rows() as u64,
        train_positive_rate: train.positive_rate(),
        test_positive_rate: test.positive_rate(),
        features: test.cols() as u64,
    };
    Ok(report)
}
