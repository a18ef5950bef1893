//! L2-regularised logistic regression on standardised features, fitted by L-BFGS.
//!
//! The objective is scikit-learn's: `0.5 * |w|^2 + C * sum(log loss)` with the intercept
//! unpenalised, so `c` means the same here as there. Features are centred and scaled by
//! their training mean and deviation; a missing value becomes the mean (0 after scaling).
//! Both classes are named by value (1 is positive), never by the order labels appear.

use crate::data::Dataset;
use crate::{sigmoid, MlError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Inverse regularisation strength (scikit-learn's `C`).
    pub c: f64,
    pub max_iter: usize,
    /// Stop when the largest gradient component of the mean loss is below this
    /// (scikit-learn's `tol` for lbfgs).
    pub tol: f64,
    /// Threads for the loss and gradient; 0 = all available.
    pub threads: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            c: 1.0,
            max_iter: 200,
            tol: 1e-4,
            threads: 0,
        }
    }
}

/// A fitted model: `sigmoid(intercept + sum(w_j * (x_j - mean_j) / scale_j))`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// L-BFGS iterations used.
    pub iterations: usize,
}

impl Linear {
    /// The standardised value of feature `j`.
    #[inline]
    pub fn standardise(&self, j: usize, v: f32) -> f64 {
        if v.is_nan() {
            0.0
        } else {
            (v as f64 - self.means[j]) / self.scales[j]
        }
    }

    #[inline]
    pub fn margin(&self, x: &[f32]) -> f64 {
        self.intercept
            + x.iter()
                .enumerate()
                .map(|(j, &v)| self.weights[j] * self.standardise(j, v))
                .sum::<f64>()
    }

    pub fn predict_proba(&self, x: &[f32]) -> f64 {
        sigmoid(self.margin(x))
    }

    /// Per-feature contributions to the margin: coefficient x standardised value (how far
    /// this person's value moves the log-odds from an average person's).
    pub fn contributions(&self, x: &[f32]) -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(j, &v)| self.weights[j] * self.standardise(j, v))
            .collect()
    }
}

/// Mean and deviation of each column over present values (deviation 1 for constants).
pub fn column_stats(data: &Dataset) -> (Vec<f64>, Vec<f64>) {
    let d = data.cols();
    let mut sum = vec![0.0; d];
    let mut sq = vec![0.0; d];
    let mut cnt = vec![0usize; d];
    for i in 0..data.rows() {
        for (j, &v) in data.row(i).iter().enumerate() {
            if !v.is_nan() {
                sum[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
                cnt[j] += 1;
            }
        }
    }
    let mut means = vec![0.0; d];
    let mut scales = vec![1.0; d];
    for j in 0..d {
        if cnt[j] > 0 {
            let m = sum[j] / cnt[j] as f64;
            let var = (sq[j] / cnt[j] as f64 - m * m).max(0.0);
            means[j] = m;
            scales[j] = if var > 1e-24 { var.sqrt() } else { 1.0 };
        }
    }
    (means, scales)
}

pub fn train(data: &Dataset, params: &Params) -> Result<Linear, MlError> {
    data.check_trainable()?;
    if params.c <= 0.0 || params.c.is_nan() {
        return Err(MlError::invalid("logistic.c", "must be > 0"));
    }
    let (means, scales) = column_stats(data);
    let d = data.cols();
    let n = data.rows();
    let threads = if params.threads > 0 {
        params.threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let mut model = Linear {
        means,
        scales,
        weights: vec![0.0; d],
        intercept: 0.0,
        iterations: 0,
    };
    // Standardised once, as f32: the optimiser passes over it dozens of times.
    let mut z = vec![0f32; n * d];
    for i in 0..n {
        for (j, &v) in data.row(i).iter().enumerate() {
            z[i * d + j] = model.standardise(j, v) as f32;
        }
    }
    let y = &data.y;
    // Threads only pay for themselves on big tables.
    let threads = if n * d >= 2_000_000 { threads } else { 1 };
    let chunk = n.div_ceil(threads).max(1);
    // Objective in mean units: mean log loss + |w|^2 / (2 C n).
    let reg = 1.0 / (params.c * n as f64);
    // Single precision in the inner loops (they vectorise), double for every sum that
    // spans more than a block of rows.
    const BLOCK: usize = 512;
    let part = |theta: &[f64], start: usize, end: usize, g: &mut [f64]| -> f64 {
        let w: Vec<f32> = theta[..d].iter().map(|&v| v as f32).collect();
        let mut acc = vec![0f32; d];
        let mut loss = 0.0;
        for (k, i) in (start..end).enumerate() {
            let row = &z[i * d..(i + 1) * d];
            let m = theta[d] + dot32(row, &w) as f64;
            let yi = y[i] as f64;
            // log(1 + e^m) - y m, stably.
            loss += if m > 0.0 {
                m + (-m).exp().ln_1p()
            } else {
                m.exp().ln_1p()
            } - yi * m;
            let r = (sigmoid(m) - yi) as f32;
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += r * v;
            }
            g[d] += r as f64;
            if k % BLOCK == BLOCK - 1 {
                for (gj, a) in g.iter_mut().zip(acc.iter_mut()) {
                    *gj += *a as f64;
                    *a = 0.0;
                }
            }
        }
        for (gj, a) in g.iter_mut().zip(&acc) {
            *gj += *a as f64;
        }
        loss
    };
    let eval = |theta: &[f64], grad: &mut [f64]| -> f64 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        if threads == 1 {
            loss = part(theta, 0, n, grad);
        } else {
            let parts: Vec<(f64, Vec<f64>)> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .step_by(chunk)
                    .map(|start| {
                        s.spawn(move || {
                            let mut g = vec![0.0; d + 1];
                            let l = part(theta, start, (start + chunk).min(n), &mut g);
                            (l, g)
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or((f64::NAN, vec![f64::NAN; d + 1])))
                    .collect()
            });
            for (l, g) in parts {
                loss += l;
                for (a, b) in grad.iter_mut().zip(&g) {
                    *a += b;
                }
            }
        }
        let nf = n as f64;
        let mut penalty = 0.0;
        for j in 0..d {
            grad[j] = grad[j] / nf + reg * theta[j];
            penalty += theta[j] * theta[j];
        }
        grad[d] /= nf;
        loss / nf + 0.5 * reg * penalty
    };
    let mut theta = vec![0.0; d + 1];
    // Start the intercept at the base rate's log-odds.
    theta[d] = crate::logit(data.positive_rate());
    let iterations = lbfgs(&mut theta, eval, params.max_iter, params.tol);
    model.intercept = theta[d];
    model.weights = theta[..d].to_vec();
    model.iterations = iterations;
    Ok(model)
}

/// Minimises `f` from `x` with limited-memory BFGS (10 pairs) and a backtracking
/// Armijo line search. Returns the iterations used.
pub fn lbfgs(
    x: &mut [f64],
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    max_iter: usize,
    tol: f64,
) -> usize {
    const M: usize = 10;
    let k = x.len();
    let mut g = vec![0.0; k];
    let mut fx = f(x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut new_g = vec![0.0; k];
    let mut new_x = vec![0.0; k];
    for it in 0..max_iter {
        if g.iter().fold(0.0f64, |a, v| a.max(v.abs())) < tol {
            return it;
        }
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y) in s_hist.iter().zip(&y_hist).rev() {
            let rho = 1.0 / dot(y, s);
            let a = rho * dot(s, &q);
            axpy(-a, y, &mut q);
            alphas.push((a, rho));
        }
        if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        } else {
            let norm = dot(&g, &g).sqrt().max(1e-12);
            q.iter_mut().for_each(|v| *v /= norm);
        }
        for ((s, y), (a, rho)) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
            let b = rho * dot(y, &q);
            axpy(a - b, s, &mut q);
        }
        let dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        let dir = if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            slope = -dot(&g, &g);
            g.iter().map(|v| -v).collect()
        } else {
            dir
        };
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            for i in 0..k {
                new_x[i] = x[i] + step * dir[i];
            }
            let fnew = f(&new_x, &mut new_g);
            if fnew.is_finite() && fnew <= fx + 1e-4 * step * slope {
                let s: Vec<f64> = (0..k).map(|i| new_x[i] - x[i]).collect();
                let y: Vec<f64> = (0..k).map(|i| new_g[i] - g[i]).collect();
                let improvement = fx - fnew;
                x.copy_from_slice(&new_x);
                g.copy_from_slice(&new_g);
                fx = fnew;
                if dot(&s, &y) > 1e-12 {
                    s_hist.push(s);
                    y_hist.push(y);
                    if s_hist.len() > M {
                        s_hist.remove(0);
                        y_hist.remove(0);
                    }
                }
                accepted = true;
                if improvement.abs() <= 1e-14 * fx.abs().max(1.0) {
                    return it + 1;
                }
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            return it;
        }
    }
    max_iter
}

/// Dot product in eight independent lanes, so it vectorises.
fn dot32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lbfgs_minimises_a_rosenbrock() {
        let mut x = vec![-1.2, 1.0];
        let f = |x: &[f64], g: &mut [f64]| {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        };
        lbfgs(&mut x, f, 500, 1e-8);
        assert!(
            (x[0] - 1.0).abs() < 1e-5 && (x[1] - 1.0).abs() < 1e-5,
            "{x:?}"
        );
    }

    #[test]
    fn gradient_is_zero_at_the_fit_and_positive_class_is_one() {
        // Labels listed negative-first and positive-first give the same model.
        let mut a = Dataset::with_names(vec!["x".into(), "z".into()]);
        for i in 0..200 {
            let x = i as f32 / 20.0;
            let noise = ((i * 37) % 11) as f32 / 11.0;
            a.push(&[x, noise], x + noise > 5.5).expect("row");
        }
        let mut idx: Vec<usize> = (0..200).collect();
        idx.reverse();
        let b = a.subset(&idx);
        let ma = train(&a, &Params::default()).expect("fits");
        let mb = train(&b, &Params::default()).expect("fits");
        assert!(ma.weights[0] > 0.0);
        for (wa, wb) in ma.weights.iter().zip(&mb.weights) {
            assert!((wa - wb).abs() < 1e-4, "{ma:?} {mb:?}");
        }
    }
}
