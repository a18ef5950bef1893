//! Predictive models inside the state machine: after every event (and every replay) each
//! active model predicts from the person's features, computed by the same
//! [`crate::features::FeatureSet`] that built its training set, and the result is kept on
//! the profile with the hybrid score that blends it with a rule score.
//!
//! The core does not know how a model computes: it holds [`Predictor`]s, pure functions
//! from feature values to a probability, bound by feature *name* to the feature set in
//! force. A model whose features the current definitions no longer produce is not bound
//! and says why, rather than being fed the wrong columns.

use crate::features::FeatureSet;
use crate::identity::ProfileId;
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A trained model the core can evaluate. Must be deterministic: the same inputs give the
/// same probability.
pub trait Predictor: Send + Sync {
    /// The calibrated probability for `inputs`, in the model's own feature order. `profile`
    /// and `at` say whose prediction it is and when, for monitoring; they must not change
    /// the result.
    fn predict(&self, profile: ProfileId, at: Millis, inputs: &[f32]) -> f64;
}

/// How a model's probability blends with a rule score into one 0-100 number:
/// `100 * (score_weight * score / score_scale + model_weight * probability) / (sum of weights)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hybrid {
    /// The rule score to blend.
    pub score: String,
    #[serde(default = "half")]
    pub score_weight: f64,
    #[serde(default = "half")]
    pub model_weight: f64,
}

fn half() -> f64 {
    0.5
}

impl Hybrid {
    /// The blend for a rule score `score` (of which `top` is the maximum) and a model
    /// probability `p`, on 0-100.
    pub fn value(&self, score: f64, top: f64, p: f64) -> f64 {
        let s = (score / top).clamp(0.0, 1.0);
        let total = (self.score_weight + self.model_weight).max(f64::MIN_POSITIVE);
        100.0 * (self.score_weight * s + self.model_weight * p) / total
    }
}

/// A model to serve.
#[derive(Clone)]
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    /// Its input features, by name, in its column order.
    pub features: Vec<String>,
    pub predictor: Arc<dyn Predictor>,
    pub hybrid: Option<Hybrid>,
}

struct Bound {
    model: ServedModel,
    /// Position in the feature vector of each model input.
    columns: Vec<usize>,
    /// The hybrid's score: its position among the scores and the value that maps to 100.
    score: Option<(usize, f64)>,
}

/// The models in force, bound to a feature set.
#[derive(Default)]
pub struct ModelSet {
    bound: Vec<Bound>,
}

/// One model's output for one person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub model: String,
    pub version: u64,
    pub probability: f64,
    /// The hybrid score (0-100), when the model has one.
    pub hybrid: Option<f64>,
    /// The instant the features were taken.
    pub at: Millis,
}

impl ModelSet {
    /// Binds `models` to `features` (with `scores`: each score's name and the value that
    /// counts as its top, the `max` clamp or 100). Returns the set and, for every model
    /// that cannot be bound, why.
    pub fn bind(
        models: Vec<ServedModel>,
        features: &FeatureSet,
        scores: &[(String, f64)],
    ) -> (ModelSet, Vec<String>) {
        let mut set = ModelSet::default();
        let mut problems = Vec::new();
        for model in models {
            let mut columns = Vec::with_capacity(model.features.len());
            let mut missing = Vec::new();
            for f in &model.features {
                match features.names.iter().position(|n| n == f) {
                    Some(i) => columns.push(i),
                    None => missing.push(f.as_str()),
                }
            }
            if !missing.is_empty() {
                problems.push(format!(
                    "model {} v{}: the features in force do not define {} (retrain, or restore the [features] it was trained with)",
                    model.name,
                    model.version,
                    missing.join(", ")
                ));
                continue;
            }
            let score = match &model.hybrid {
                None => None,
                Some(h) => match scores.iter().position(|(n, _)| *n == h.score) {
                    Some(i) => Some((i, scores[i].1)),
                    None => {
                        problems.push(format!(
                            "model {} v{}: hybrid score {:?} is not defined",
                            model.name, model.version, h.score
                        ));
                        continue;
                    }
                },
            };
            set.bound.push(Bound {
                model,
                columns,
                score,
            });
        }
        (set, problems)
    }

    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.bound.iter().map(|b| &b.model)
    }

    /// Every model's prediction from `features` (a full feature vector of the set this
    /// was bound to) and the current rule score values.
    pub fn predict(
        &self,
        profile: ProfileId,
        features: &[f32],
        scores: &[f64],
        at: Millis,
    ) -> Vec<Prediction> {
        let mut inputs = Vec::new();
        self.bound
            .iter()
            .map(|b| {
                inputs.clear();
                inputs.extend(
                    b.columns
                        .iter()
                        .map(|&c| features.get(c).copied().unwrap_or(f32::NAN)),
                );
                let probability = b.model.predictor.predict(profile, at, &inputs);
                let hybrid = b.model.hybrid.as_ref().zip(b.score).map(|(h, (i, top))| {
                    h.value(scores.get(i).copied().unwrap_or(0.0), top, probability)
                });
                Prediction {
                    model: b.model.name.clone(),
                    version: b.model.version,
                    probability,
                    hybrid,
                    at,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::{Definitions, Scoring};

    struct Sum;
    impl Predictor for Sum {
        fn predict(&self, _: ProfileId, _: Millis, inputs: &[f32]) -> f64 {
            (inputs.iter().map(|&v| v as f64).sum::<f64>() / 100.0).clamp(0.0, 1.0)
        }
    }

    fn served(features: &[&str], hybrid: Option<Hybrid>) -> ServedModel {
        ServedModel {
            name: "m".into(),
            version: 3,
            features: features.iter().map(|f| f.to_string()).collect(),
            predictor: Arc::new(Sum),
            hybrid,
        }
    }

    #[test]
    fn models_bind_by_feature_name_and_say_what_is_missing() {
        let scoring = Scoring::compile(&crate::defaults::default_definitions(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        // Columns in the model's own order, not the feature set's.
        let problems = scoring.set_models(vec![served(&["orders", "events_total"], None)]);
        assert!(problems.is_empty(), "{problems:?}");
        let mut x = vec![0f32; scoring.features.len()];
        let at = |n: &str| {
            scoring
                .features
                .names
                .iter()
                .position(|f| f == n)
                .unwrap_or(0)
        };
        x[at("orders")] = 10.0;
        x[at("events_total")] = 30.0;
        let p = scoring.models().predict(ProfileId(1), &x, &[], 0);
        assert_eq!(p.len(), 1);
        assert!((p[0].probability - 0.4).abs() < 1e-9);
        let problems = scoring.set_models(vec![served(&["orders", "shoe_size"], None)]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("shoe_size"), "{problems:?}");
        assert!(
            scoring.models().is_empty(),
            "an unbound model is not served"
        );
        let empty =
            Scoring::compile(&Definitions::default(), None).unwrap_or_else(|e| panic!("{e}"));
        let h = Hybrid {
            score: "purchase_intent".into(),
            score_weight: 0.5,
            model_weight: 0.5,
        };
        let problems = empty.set_models(vec![served(&[], Some(h))]);
        assert!(problems[0].contains("purchase_intent"), "{problems:?}");
    }

    #[test]
    fn hybrid_blends_on_a_0_to_100_scale() {
        let h = Hybrid {
            score: "s".into(),
            score_weight: 1.0,
            model_weight: 3.0,
        };
        assert!((h.value(50.0, 100.0, 0.2) - 100.0 * (0.5 + 0.6) / 4.0).abs() < 1e-9);
        assert_eq!(
            h.value(500.0, 100.0, 1.0),
            100.0,
            "the score is capped at its top"
        );
        assert_eq!(h.value(-5.0, 100.0, 0.0), 0.0);
    }
}
