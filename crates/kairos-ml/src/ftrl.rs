//! FTRL-Proximal logistic regression (McMahan et al., "Ad Click Prediction: a View from
//! the Trenches", 2013): a per-coordinate adaptive online learner with L1 and L2, updated
//! one labelled example at a time as labels mature from the live stream.
//!
//! Inputs are standardised with fixed means and deviations (taken from the training set
//! it was started from) and clipped to +-5, so one extreme value cannot swing the model.

use crate::{sigmoid, MlError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub alpha: f64,
    pub beta: f64,
    pub l1: f64,
    pub l2: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            beta: 1.0,
            l1: 0.0,
            l2: 1.0,
        }
    }
}

/// The learner's state. The last coordinate is the bias.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ftrl {
    pub params: Params,
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    pub z: Vec<f64>,
    pub n: Vec<f64>,
    /// Examples learned so far.
    pub updates: u64,
}

const CLIP: f64 = 5.0;

impl Ftrl {
    pub fn new(params: Params, means: Vec<f64>, scales: Vec<f64>) -> Result<Self, MlError> {
        if params.alpha <= 0.0 || params.beta < 0.0 || params.l1 < 0.0 || params.l2 < 0.0 {
            return Err(MlError::invalid(
                "ftrl",
                "alpha must be > 0; beta, l1, l2 >= 0",
            ));
        }
        if means.len() != scales.len() {
            return Err(MlError::invalid(
                "ftrl",
                "means and scales differ in length",
            ));
        }
        let d = means.len() + 1;
        Ok(Self {
            params,
            means,
            scales,
            z: vec![0.0; d],
            n: vec![0.0; d],
            updates: 0,
        })
    }

    /// Starts from a batch logistic model's weights, so the online model begins where
    /// the last retrain left it (with no L1, `w = -z / (beta / alpha + l2)` at `n = 0`).
    pub fn warm_start(params: Params, lin: &crate::linear::Linear) -> Result<Self, MlError> {
        let mut f = Self::new(params, lin.means.clone(), lin.scales.clone())?;
        let k = f.params.beta / f.params.alpha + f.params.l2;
        for (z, w) in
            f.z.iter_mut()
                .zip(lin.weights.iter().chain([&lin.intercept]))
        {
            *z = -w * k;
        }
        Ok(f)
    }

    fn input(&self, x: &[f32], j: usize) -> f64 {
        if j == self.means.len() {
            return 1.0;
        }
        let v = x.get(j).copied().unwrap_or(f32::NAN);
        if v.is_nan() {
            0.0
        } else {
            ((v as f64 - self.means[j]) / self.scales[j]).clamp(-CLIP, CLIP)
        }
    }

    #[inline]
    fn weight(&self, j: usize) -> f64 {
        let p = &self.params;
        let z = self.z[j];
        if z.abs() <= p.l1 {
            0.0
        } else {
            -(z - z.signum() * p.l1) / ((p.beta + self.n[j].sqrt()) / p.alpha + p.l2)
        }
    }

    pub fn weights(&self) -> Vec<f64> {
        (0..self.z.len()).map(|j| self.weight(j)).collect()
    }

    pub fn margin(&self, x: &[f32]) -> f64 {
        (0..self.z.len())
            .map(|j| self.weight(j) * self.input(x, j))
            .sum()
    }

    pub fn predict_proba(&self, x: &[f32]) -> f64 {
        sigmoid(self.margin(x))
    }

    /// Per-feature contributions to the margin (the bias excluded).
    pub fn contributions(&self, x: &[f32]) -> Vec<f64> {
        (0..self.means.len())
            .map(|j| self.weight(j) * self.input(x, j))
            .collect()
    }

    /// Learns one example; returns the probability predicted before learning it.
    pub fn update(&mut self, x: &[f32], label: bool) -> f64 {
        let p = self.predict_proba(x);
        let y = if label { 1.0 } else { 0.0 };
        for j in 0..self.z.len() {
            let xi = self.input(x, j);
            if xi == 0.0 {
                continue;
            }
            let g = (p - y) * xi;
            let w = self.weight(j);
            let sigma = ((self.n[j] + g * g).sqrt() - self.n[j].sqrt()) / self.params.alpha;
            self.z[j] += g - sigma * w;
            self.n[j] += g * g;
        }
        self.updates += 1;
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_separable_signal_online_and_l1_zeroes_noise() {
        let params = Params {
            l1: 1.0,
            ..Params::default()
        };
        let mut f = Ftrl::new(params, vec![0.0, 0.0], vec![1.0, 1.0]).expect("valid");
        let mut s = 7u64;
        for _ in 0..20_000 {
            let a = (crate::gbdt::next_u64(&mut s) % 1000) as f32 / 500.0 - 1.0;
            let noise = (crate::gbdt::next_u64(&mut s) % 1000) as f32 / 500.0 - 1.0;
            f.update(&[a, noise], a > 0.1);
        }
        let w = f.weights();
        assert!(w[0] > 1.0, "{w:?}");
        assert!(w[1].abs() < 0.2, "{w:?}");
        assert!(f.predict_proba(&[0.9, 0.0]) > 0.9);
        assert!(f.predict_proba(&[-0.9, 0.0]) < 0.1);
    }

    #[test]
    fn warm_start_predicts_like_the_batch_model() {
        let lin = crate::linear::Linear {
            means: vec![1.0, 2.0],
            scales: vec![2.0, 1.0],
            weights: vec![0.7, -0.3],
            intercept: -1.1,
            iterations: 0,
        };
        let f = Ftrl::warm_start(Params::default(), &lin).expect("valid");
        for x in [[1.0f32, 2.0], [3.0, 0.5], [-1.0, 4.0]] {
            assert!((f.predict_proba(&x) - lin.predict_proba(&x)).abs() < 1e-12);
        }
    }
}
