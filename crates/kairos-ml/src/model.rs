//! The served model: a learner, its calibration, the feature names it expects, the
//! decision threshold and probability tiers, and the training distributions that drift
//! is measured against. Serialised as JSON bytes for the store's model versions.

use crate::calibrate::{Calibration, Method};
use crate::data::Dataset;
use crate::ftrl::Ftrl;
use crate::gbdt::Forest;
use crate::linear::Linear;
use crate::metrics::Baseline;
use crate::{ftrl, gbdt, linear, MlError};
use serde::{Deserialize, Serialize};

/// Format of [`Model::to_bytes`]; bumped on incompatible changes.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Learner {
    Gbdt(Forest),
    Logistic(Linear),
    /// Online: keeps learning from labels that mature in the live stream.
    Ftrl(Ftrl),
}

impl Learner {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Gbdt(_) => "gbdt",
            Self::Logistic(_) => "logistic",
            Self::Ftrl(_) => "ftrl",
        }
    }

    #[inline]
    pub fn margin(&self, x: &[f32]) -> f64 {
        match self {
            Self::Gbdt(f) => f.margin(x),
            Self::Logistic(l) => l.margin(x),
            Self::Ftrl(f) => f.margin(x),
        }
    }
}

/// Which learner to train.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Gbdt,
    Logistic,
    Ftrl,
}

impl std::str::FromStr for Kind {
    type Err = MlError;
    fn from_str(s: &str) -> Result<Self, MlError> {
        match s {
            "gbdt" => Ok(Self::Gbdt),
            "logistic" => Ok(Self::Logistic),
            "ftrl" => Ok(Self::Ftrl),
            _ => Err(MlError::invalid(
                "learner",
                format!("`{s}` is not one of gbdt, logistic, ftrl"),
            )),
        }
    }
}

/// Probability tiers: `p < medium` is low, `p < high` medium, else high.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tiers {
    pub medium: f64,
    pub high: f64,
}

impl Default for Tiers {
    fn default() -> Self {
        Self {
            medium: 0.2,
            high: 0.5,
        }
    }
}

impl Tiers {
    pub fn check(&self) -> Result<(), MlError> {
        if !(0.0 < self.medium && self.medium < self.high && self.high < 1.0) {
            return Err(MlError::invalid("tiers", "need 0 < medium < high < 1"));
        }
        Ok(())
    }

    pub fn tier(&self, p: f64) -> &'static str {
        if p >= self.high {
            "high"
        } else if p >= self.medium {
            "medium"
        } else {
            "low"
        }
    }
}

/// Everything that shapes a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    pub learner: Kind,
    pub gbdt: gbdt::Params,
    pub logistic: linear::Params,
    pub ftrl: ftrl::Params,
    pub calibration: Method,
    pub tiers: Tiers,
    /// Share of the training rows (the latest, in the order given) held out for early
    /// stopping, calibration and the decision threshold.
    pub validation_share: f64,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            learner: Kind::Gbdt,
            gbdt: gbdt::Params {
                early_stopping_rounds: 20,
                ..gbdt::Params::default()
            },
            logistic: linear::Params::default(),
            ftrl: ftrl::Params::default(),
            calibration: Method::Platt,
            tiers: Tiers::default(),
            validation_share: 0.2,
        }
    }
}

/// One feature's share of a prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub feature: String,
    pub value: Option<f64>,
    /// In log-odds units; positive raises the probability.
    pub contribution: f64,
}

/// A prediction with its explanation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub probability: f64,
    pub tier: &'static str,
    /// The margin with no feature known (TreeSHAP's expected value, or the intercept).
    pub base_margin: f64,
    pub margin: f64,
    /// Biggest first by absolute size.
    pub contributions: Vec<Contribution>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: u32,
    pub features: Vec<String>,
    pub learner: Learner,
    pub calibration: Calibration,
    pub tiers: Tiers,
    /// Decision threshold on the calibrated probability (best F1 on the validation rows).
    pub threshold: f64,
    /// Training distribution of each feature and of the probability, for drift (PSI).
    pub feature_baselines: Vec<Baseline>,
    pub score_baseline: Baseline,
    /// The TreeSHAP explainer's copy of the forest, built on the first explanation.
    #[serde(skip)]
    explainer: std::sync::OnceLock<Option<crate::shap::Explainer>>,
}

/// What the fit did besides the model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FitLog {
    pub train_rows: usize,
    pub validation_rows: usize,
    pub rounds: Option<usize>,
    pub iterations: Option<usize>,
    pub seconds: f64,
}

impl Model {
    /// Trains on `data` whose rows are in time order (for a plain table, any order): the
    /// latest `validation_share` is held out for early stopping, calibration and the
    /// threshold.
    pub fn fit(spec: &TrainSpec, data: &Dataset) -> Result<(Model, FitLog), MlError> {
        spec.tiers.check()?;
        data.check_trainable()?;
        let started = std::time::Instant::now();
        let n = data.rows();
        let n_valid = ((n as f64 * spec.validation_share.clamp(0.0, 0.5)).round() as usize)
            .min(n.saturating_sub(2));
        let (train, valid) = if n_valid >= 10 {
            let cut = n - n_valid;
            let t = data.subset(&(0..cut).collect::<Vec<_>>());
            let v = data.subset(&(cut..n).collect::<Vec<_>>());
            // A validation part with one class cannot calibrate; train on everything.
            if t.check_trainable().is_ok() && v.check_trainable().is_ok() {
                (t, Some(v))
            } else {
                (data.clone(), None)
            }
        } else {
            (data.clone(), None)
        };
        let mut log = FitLog {
            train_rows: train.rows(),
            validation_rows: valid.as_ref().map_or(0, Dataset::rows),
            ..FitLog::default()
        };
        let learner = match spec.learner {
            Kind::Gbdt => {
                let mut params = spec.gbdt.clone();
                if valid.is_none() {
                    params.early_stopping_rounds = 0;
                }
                let (forest, tl) = gbdt::train(&train, valid.as_ref(), &params)?;
                log.rounds = Some(tl.best_rounds);
                Learner::Gbdt(forest)
            }
            Kind::Logistic => {
                let l = linear::train(&train, &spec.logistic)?;
                log.iterations = Some(l.iterations);
                Learner::Logistic(l)
            }
            Kind::Ftrl => {
                // Start where the batch optimum is, then pass over the rows in order once,
                // as the live stream would have delivered them.
                let l = linear::train(&train, &spec.logistic)?;
                let mut f = Ftrl::warm_start(spec.ftrl.clone(), &l)?;
                for i in 0..train.rows() {
                    f.update(train.row(i), train.y[i] > 0.5);
                }
                log.iterations = Some(l.iterations);
                Learner::Ftrl(f)
            }
        };
        let calib_set = valid.as_ref().unwrap_or(&train);
        let margins: Vec<f64> = (0..calib_set.rows())
            .map(|i| learner.margin(calib_set.row(i)))
            .collect();
        let calibration = Calibration::fit(spec.calibration, &margins, &calib_set.y);
        let probs: Vec<f64> = margins.iter().map(|&m| calibration.apply(m)).collect();
        let threshold = crate::metrics::best_f1_threshold(&probs, &calib_set.y);
        let feature_baselines = (0..data.cols())
            .map(|j| {
                let col: Vec<f64> = (0..train.rows()).map(|i| train.row(i)[j] as f64).collect();
                Baseline::fit(&col)
            })
            .collect();
        let mut model = Model {
            format: FORMAT,
            features: data.names.clone(),
            learner,
            calibration,
            tiers: spec.tiers,
            threshold,
            feature_baselines,
            score_baseline: Baseline {
                edges: Vec::new(),
                shares: Vec::new(),
            },
            explainer: Default::default(),
        };
        let train_probs: Vec<f64> = (0..train.rows())
            .map(|i| model.predict(train.row(i)))
            .collect();
        model.score_baseline = Baseline::fit(&train_probs);
        log.seconds = started.elapsed().as_secs_f64();
        Ok((model, log))
    }

    /// The calibrated probability for one feature vector.
    #[inline]
    pub fn predict(&self, x: &[f32]) -> f64 {
        self.calibration.apply(self.learner.margin(x))
    }

    pub fn predict_dataset(&self, data: &Dataset) -> Vec<f64> {
        match &self.learner {
            Learner::Gbdt(f) => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let mut p = f.predict_dataset(data, threads);
                for v in &mut p {
                    *v = self.calibration.apply(crate::logit(*v));
                }
                p
            }
            _ => (0..data.rows())
                .map(|i| self.predict(data.row(i)))
                .collect(),
        }
    }

    /// The prediction and each feature's contribution, biggest first; the top `top` (all
    /// when 0).
    pub fn explain(&self, x: &[f32], top: usize) -> Explanation {
        let (base_margin, phi) = match &self.learner {
            Learner::Gbdt(f) => match self
                .explainer
                .get_or_init(|| crate::shap::Explainer::new(f))
            {
                Some(fast) => (fast.expected_value, fast.contributions(x)),
                None => (
                    crate::shap::expected_value(f),
                    crate::shap::contributions(f, x),
                ),
            },
            Learner::Logistic(l) => (l.intercept, l.contributions(x)),
            Learner::Ftrl(f) => {
                let w = f.weights();
                (w[w.len() - 1], f.contributions(x))
            }
        };
        let margin = self.learner.margin(x);
        let probability = self.calibration.apply(margin);
        let mut contributions: Vec<Contribution> = phi
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0.0)
            .map(|(j, &c)| Contribution {
                feature: self.features.get(j).cloned().unwrap_or_default(),
                value: x.get(j).filter(|v| !v.is_nan()).map(|&v| v as f64),
                contribution: c,
            })
            .collect();
        contributions.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        if top > 0 {
            contributions.truncate(top);
        }
        Explanation {
            probability,
            tier: self.tiers.tier(probability),
            base_margin,
            margin,
            contributions,
        }
    }

    /// Global importance per feature, normalised to sum 1: split gain for trees, |weight|
    /// (on standardised inputs) for linear models.
    pub fn importance(&self) -> Vec<(String, f64)> {
        let raw: Vec<f64> = match &self.learner {
            Learner::Gbdt(f) => f.gain_importance.clone(),
            Learner::Logistic(l) => l.weights.iter().map(|w| w.abs()).collect(),
            Learner::Ftrl(f) => {
                let w = f.weights();
                w[..w.len() - 1].iter().map(|w| w.abs()).collect()
            }
        };
        let total: f64 = raw.iter().sum();
        let mut out: Vec<(String, f64)> = self
            .features
            .iter()
            .cloned()
            .zip(
                raw.iter()
                    .map(|v| if total > 0.0 { v / total } else { 0.0 }),
            )
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }

    /// Learns one matured label online; only an FTRL learner changes. Returns whether
    /// the model changed.
    pub fn learn(&mut self, x: &[f32], label: bool) -> bool {
        match &mut self.learner {
            Learner::Ftrl(f) => {
                f.update(x, label);
                true
            }
            _ => false,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, MlError> {
        let m: Model = serde_json::from_slice(bytes).map_err(|e| MlError::Decode(e.to_string()))?;
        if m.format != FORMAT {
            return Err(MlError::Decode(format!(
                "model format {} is not {FORMAT}",
                m.format
            )));
        }
        Ok(m)
    }
}
