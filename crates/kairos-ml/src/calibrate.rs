//! Probability calibration of a model's margin: Platt scaling (a logistic fit of the
//! label on the margin, with Platt's smoothed targets) and isotonic regression (the best
//! monotone step function, by pool-adjacent-violators, interpolated between blocks).
//! Fit on data the model was not trained on, or the calibration learns its overfit.

use crate::sigmoid;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Calibration {
    /// `sigmoid(margin)` as it is.
    None,
    /// `sigmoid(a * margin + b)`.
    Platt { a: f64, b: f64 },
    /// Piecewise-linear through (margin, probability) knots, flat beyond the ends.
    Isotonic { x: Vec<f64>, y: Vec<f64> },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    None,
    #[default]
    Platt,
    Isotonic,
}

impl Calibration {
    pub fn fit(method: Method, margins: &[f64], y: &[f32]) -> Self {
        match method {
            Method::None => Self::None,
            Method::Platt => platt(margins, y),
            Method::Isotonic => isotonic(margins, y),
        }
    }

    pub fn apply(&self, margin: f64) -> f64 {
        match self {
            Self::None => sigmoid(margin),
            Self::Platt { a, b } => sigmoid(a * margin + b),
            Self::Isotonic { x, y } => {
                if x.is_empty() {
                    return sigmoid(margin);
                }
                let k = x.partition_point(|&v| v < margin);
                if k == 0 {
                    return y[0];
                }
                if k == x.len() {
                    return y[y.len() - 1];
                }
                let (x0, x1, y0, y1) = (x[k - 1], x[k], y[k - 1], y[k]);
                if x1 == x0 {
                    y1
                } else {
                    y0 + (y1 - y0) * (margin - x0) / (x1 - x0)
                }
            }
        }
    }
}

fn platt(s: &[f64], y: &[f32]) -> Calibration {
    let pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let neg = y.len() as f64 - pos;
    let (hi, lo) = ((pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0));
    let t: Vec<f64> = y.iter().map(|&v| if v > 0.5 { hi } else { lo }).collect();
    let (mut a, mut b) = (1.0, 0.0);
    let loss = |a: f64, b: f64| -> f64 {
        s.iter()
            .zip(&t)
            .map(|(&s, &t)| {
                let m = a * s + b;
                let l1p = if m > 0.0 {
                    m + (-m).exp().ln_1p()
                } else {
                    m.exp().ln_1p()
                };
                l1p - t * m
            })
            .sum()
    };
    let mut f = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-12, 0.0, 1e-12);
        for (&s, &t) in s.iter().zip(&t) {
            let p = sigmoid(a * s + b);
            let r = p - t;
            let w = p * (1.0 - p);
            ga += r * s;
            gb += r;
            haa += w * s * s;
            hab += w * s;
            hbb += w;
        }
        if ga.abs() < 1e-9 && gb.abs() < 1e-9 {
            break;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let da = -(hbb * ga - hab * gb) / det;
        let db = -(haa * gb - hab * ga) / det;
        let mut step = 1.0;
        let mut moved = false;
        while step > 1e-10 {
            let (na, nb) = (a + step * da, b + step * db);
            let nf = loss(na, nb);
            if nf < f + 1e-4 * step * (ga * da + gb * db) {
                a = na;
                b = nb;
                f = nf;
                moved = true;
                break;
            }
            step /= 2.0;
        }
        if !moved {
            break;
        }
    }
    Calibration::Platt { a, b }
}

fn isotonic(s: &[f64], y: &[f32]) -> Calibration {
    let mut idx: Vec<usize> = (0..s.len()).collect();
    idx.sort_unstable_by(|&i, &j| s[i].total_cmp(&s[j]));
    // Blocks of (sum of y, weight, sum of x); ties in x start in one block.
    let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
    let mut k = 0;
    while k < idx.len() {
        let x = s[idx[k]];
        let (mut sy, mut w) = (0.0, 0.0);
        while k < idx.len() && s[idx[k]] == x {
            sy += y[idx[k]] as f64;
            w += 1.0;
            k += 1;
        }
        blocks.push((sy, w, x * w));
        while blocks.len() >= 2 {
            let n = blocks.len();
            let (a, b) = (blocks[n - 2], blocks[n - 1]);
            if a.0 / a.1 < b.0 / b.1 {
                break;
            }
            blocks.pop();
            blocks[n - 2] = (a.0 + b.0, a.1 + b.1, a.2 + b.2);
        }
    }
    Calibration::Isotonic {
        x: blocks.iter().map(|b| b.2 / b.1).collect(),
        y: blocks.iter().map(|b| b.0 / b.1).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_recovers_a_scaled_logistic() {
        // True probability sigmoid(0.5 m - 1); labels drawn deterministically by quantile.
        let mut s = Vec::new();
        let mut y = Vec::new();
        for i in 0..4000 {
            let m = (i % 200) as f64 / 20.0 - 5.0;
            let p = sigmoid(0.5 * m - 1.0);
            let u = ((i / 200) as f64 + 0.5) / 20.0;
            s.push(m);
            y.push(if u < p { 1.0 } else { 0.0 });
        }
        let Calibration::Platt { a, b } = platt(&s, &y) else {
            panic!("platt");
        };
        assert!((a - 0.5).abs() < 0.05 && (b + 1.0).abs() < 0.1, "{a} {b}");
    }

    #[test]
    fn isotonic_is_monotone_and_pools_violators() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = [0.0, 1.0, 0.0, 1.0, 1.0, 1.0];
        let c = isotonic(&s, &y);
        let Calibration::Isotonic { y: ys, .. } = &c else {
            panic!("isotonic");
        };
        assert!(ys.windows(2).all(|w| w[0] <= w[1]), "{ys:?}");
        assert_eq!(c.apply(0.0), 0.0);
        assert!((c.apply(2.5) - 0.5).abs() < 1e-12);
        assert_eq!(c.apply(10.0), 1.0);
    }
}
