//! Kairos predictive models: training, evaluating, serving and explaining.
//!
//! # What this crate owns
//! - [`Dataset`]: a dense row-major `f32` table (NaN = missing) with a 0/1 target, read
//!   from CSV ([`Dataset::from_csv`]) or built from feature vectors.
//! - [`gbdt`]: a histogram gradient-boosted tree learner for log loss (leaf-wise growth,
//!   histogram subtraction, learned missing-value directions, early stopping), trained on
//!   several threads; its output is a compact [`gbdt::Forest`] that predicts without any
//!   training structure and explains with exact path-dependent TreeSHAP.
//! - [`linear`]: L2-regularised logistic regression fitted by L-BFGS on standardised
//!   features; [`ftrl`]: FTRL-Proximal logistic regression that learns one example at a
//!   time, for labels maturing from the live stream.
//! - [`calibrate`]: Platt scaling and isotonic regression.
//! - [`metrics`]: AUC-ROC, PR-AUC, log loss, Brier, threshold metrics, lift and gains,
//!   calibration tables, population stability; [`report`]: the evaluation as JSON and as an
//!   HTML page with SVG plots.
//! - [`model`]: the serialisable [`Model`] that a store keeps as versions and a server
//!   serves: learner + calibration + feature names + probability tiers.
//!
//! # What it must never depend on
//! No store, no HTTP, no async, no clock, no Kairos core types: inputs are numbers and
//! names, so the same code trains offline and serves online, and can be benchmarked
//! against other libraries on the same arrays. The only IO is reading a CSV a caller opened.

pub mod calibrate;
pub mod data;
pub mod ftrl;
pub mod gbdt;
pub mod linear;
pub mod metrics;
pub mod model;
pub mod report;
pub mod shap;
pub mod split;

pub use data::Dataset;
pub use model::{Learner, Model, Tiers};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlError {
    /// Input that cannot be trained on or read: names the field and the reason.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    #[error("model bytes: {0}")]
    Decode(String),
}

impl MlError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The logistic function, stable for large |x|.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Log-odds of a probability, clamped away from 0 and 1.
#[inline]
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}
