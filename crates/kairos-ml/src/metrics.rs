//! Evaluation metrics for a binary classifier: ranking (AUC-ROC, PR-AUC), probability
//! quality (log loss, Brier, calibration table), decisions at a threshold (precision,
//! recall, F1), lift and gains by decile, and population stability for drift.
//!
//! Ties in scores are treated as one threshold everywhere (AUC counts a tied
//! positive/negative pair as half), as scikit-learn does, so numbers compare.

use serde::{Deserialize, Serialize};

/// Indices of `scores` by descending score.
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// `idx` (by descending score) in groups of tied scores: (score, positives, negatives).
fn tied_groups<'a>(
    idx: &'a [usize],
    scores: &'a [f64],
    y: &'a [f32],
) -> impl Iterator<Item = (f64, f64, f64)> + 'a {
    let mut i = 0;
    std::iter::from_fn(move || {
        let s = scores[*idx.get(i)?];
        let (mut p, mut n) = (0.0, 0.0);
        while i < idx.len() && scores[idx[i]] == s {
            if y[idx[i]] > 0.5 {
                p += 1.0
            } else {
                n += 1.0
            }
            i += 1;
        }
        Some((s, p, n))
    })
}

/// Area under the ROC curve; 0.5 when only one class is present.
pub fn auc(scores: &[f64], y: &[f32]) -> f64 {
    let idx = order_desc(scores);
    let pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let neg = y.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    // Each negative beats the positives already seen and ties half with its own group's.
    let mut seen_pos = 0.0;
    let mut area = 0.0;
    for (_, gp, gn) in tied_groups(&idx, scores, y) {
        area += gn * (seen_pos + gp / 2.0);
        seen_pos += gp;
    }
    area / (pos * neg)
}

/// Average precision (area under the precision-recall curve as a step function), as
/// scikit-learn's `average_precision_score`.
pub fn average_precision(scores: &[f64], y: &[f32]) -> f64 {
    let idx = order_desc(scores);
    let pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    if pos == 0.0 {
        return 0.0;
    }
    let (mut tp, mut fp, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    for (_, gp, gn) in tied_groups(&idx, scores, y) {
        tp += gp;
        fp += gn;
        let recall = tp / pos;
        ap += (recall - last_recall) * tp / (tp + fp);
        last_recall = recall;
    }
    ap
}

const EPS: f64 = 1e-15;

/// Mean negative log-likelihood of probabilities `p`.
pub fn log_loss(p: &[f64], y: &[f32]) -> f64 {
    if p.is_empty() {
        return 0.0;
    }
    let s: f64 = p
        .iter()
        .zip(y)
        .map(|(&p, &y)| {
            let p = p.clamp(EPS, 1.0 - EPS);
            if y > 0.5 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    s / p.len() as f64
}

/// Mean squared error of probabilities `p`.
pub fn brier(p: &[f64], y: &[f32]) -> f64 {
    if p.is_empty() {
        return 0.0;
    }
    p.iter()
        .zip(y)
        .map(|(&p, &y)| (p - y as f64).powi(2))
        .sum::<f64>()
        / p.len() as f64
}

/// Decisions at one threshold (`p >= threshold` is positive).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtThreshold {
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub accuracy: f64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub true_negatives: u64,
    pub false_negatives: u64,
}

pub fn at_threshold(p: &[f64], y: &[f32], threshold: f64) -> AtThreshold {
    let (mut tp, mut fp, mut tn, mut fneg) = (0u64, 0u64, 0u64, 0u64);
    for (&p, &y) in p.iter().zip(y) {
        match (p >= threshold, y > 0.5) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fneg += 1,
        }
    }
    let div = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = div(tp, tp + fp);
    let recall = div(tp, tp + fneg);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    AtThreshold {
        threshold,
        precision,
        recall,
        f1,
        accuracy: div(tp + tn, tp + tn + fp + fneg),
        true_positives: tp,
        false_positives: fp,
        true_negatives: tn,
        false_negatives: fneg,
    }
}

/// The score threshold with the highest F1 (the lowest such score on ties).
pub fn best_f1_threshold(scores: &[f64], y: &[f32]) -> f64 {
    let idx = order_desc(scores);
    let pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let (mut best, mut best_t) = (-1.0, 0.5);
    for (s, gp, gn) in tied_groups(&idx, scores, y) {
        tp += gp;
        fp += gn;
        let f1 = if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + (pos - tp))
        };
        if f1 > best {
            best = f1;
            best_t = s;
        }
    }
    best_t
}

/// One tenth of the rows, by descending score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decile {
    /// 1 = the highest scores.
    pub decile: u32,
    pub rows: u64,
    pub positives: u64,
    /// Positive rate in this decile.
    pub rate: f64,
    /// `rate` over the overall positive rate.
    pub lift: f64,
    /// Share of all positives in deciles 1..=this one.
    pub cumulative_gain: f64,
    pub min_score: f64,
    pub max_score: f64,
}

pub fn deciles(scores: &[f64], y: &[f32]) -> Vec<Decile> {
    let n = scores.len();
    if n == 0 {
        return Vec::new();
    }
    let idx = order_desc(scores);
    let pos_total = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let base = pos_total / n as f64;
    let mut out = Vec::new();
    let mut cum = 0.0;
    for d in 0..10 {
        let (a, b) = (d * n / 10, (d + 1) * n / 10);
        if a == b {
            continue;
        }
        let part = &idx[a..b];
        let positives = part.iter().filter(|&&i| y[i] > 0.5).count();
        cum += positives as f64;
        let rate = positives as f64 / part.len() as f64;
        out.push(Decile {
            decile: d as u32 + 1,
            rows: part.len() as u64,
            positives: positives as u64,
            rate,
            lift: if base > 0.0 { rate / base } else { 0.0 },
            cumulative_gain: if pos_total > 0.0 {
                cum / pos_total
            } else {
                0.0
            },
            min_score: scores[part[part.len() - 1]],
            max_score: scores[part[0]],
        });
    }
    out
}

/// Predicted against observed, in equal-count bins of predicted probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub rows: u64,
    pub mean_predicted: f64,
    pub observed_rate: f64,
    pub min_predicted: f64,
    pub max_predicted: f64,
}

pub fn calibration(p: &[f64], y: &[f32], bins: usize) -> Vec<CalibrationBin> {
    let n = p.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_unstable_by(|&a, &b| p[a].total_cmp(&p[b]));
    let bins = bins.max(1).min(n.max(1));
    (0..bins)
        .filter_map(|b| {
            let part = &idx[b * n / bins..(b + 1) * n / bins];
            if part.is_empty() {
                return None;
            }
            let k = part.len() as f64;
            Some(CalibrationBin {
                rows: part.len() as u64,
                mean_predicted: part.iter().map(|&i| p[i]).sum::<f64>() / k,
                observed_rate: part.iter().filter(|&&i| y[i] > 0.5).count() as f64 / k,
                min_predicted: p[part[0]],
                max_predicted: p[part[part.len() - 1]],
            })
        })
        .collect()
}

/// ROC curve as (false positive rate, true positive rate), at most `max_points` + 2.
pub fn roc_curve(scores: &[f64], y: &[f32], max_points: usize) -> Vec<(f64, f64)> {
    curve(scores, y, max_points, |tp, fp, pos, neg| {
        (
            if neg > 0.0 { fp / neg } else { 0.0 },
            if pos > 0.0 { tp / pos } else { 0.0 },
        )
    })
}

/// Precision-recall curve as (recall, precision).
pub fn pr_curve(scores: &[f64], y: &[f32], max_points: usize) -> Vec<(f64, f64)> {
    let mut c = curve(scores, y, max_points, |tp, fp, pos, _| {
        (
            if pos > 0.0 { tp / pos } else { 0.0 },
            if tp + fp > 0.0 { tp / (tp + fp) } else { 1.0 },
        )
    });
    c.retain(|&(r, _)| r > 0.0);
    c
}

fn curve(
    scores: &[f64],
    y: &[f32],
    max_points: usize,
    point: impl Fn(f64, f64, f64, f64) -> (f64, f64),
) -> Vec<(f64, f64)> {
    let idx = order_desc(scores);
    let pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let neg = y.len() as f64 - pos;
    let mut all = vec![point(0.0, 0.0, pos, neg)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (_, gp, gn) in tied_groups(&idx, scores, y) {
        tp += gp;
        fp += gn;
        all.push(point(tp, fp, pos, neg));
    }
    if all.len() <= max_points.max(2) {
        return all;
    }
    let step = all.len() as f64 / max_points as f64;
    let mut out: Vec<(f64, f64)> = (0..max_points)
        .map(|k| all[(k as f64 * step) as usize])
        .collect();
    if let Some(last) = all.last() {
        out.push(*last);
    }
    out
}

/// A reference distribution for population stability: decile edges of a feature or
/// score at training time and the share of values in each bin (missing is its own bin).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Upper edges of the bins (the last bin is open).
    pub edges: Vec<f64>,
    /// Shares per bin, then the missing share.
    pub shares: Vec<f64>,
}

impl Baseline {
    pub fn fit(values: &[f64]) -> Self {
        let mut present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        present.sort_unstable_by(f64::total_cmp);
        let mut edges = Vec::new();
        if !present.is_empty() {
            for q in 1..10 {
                let e = present[q * present.len() / 10];
                if edges.last() != Some(&e) {
                    edges.push(e);
                }
            }
        }
        let mut b = Self {
            edges,
            shares: Vec::new(),
        };
        b.shares = b.distribution(values);
        b
    }

    /// The bin of one value.
    pub fn bin(&self, v: f64) -> usize {
        if v.is_nan() {
            return self.edges.len() + 1;
        }
        self.edges.partition_point(|&e| e <= v)
    }

    /// Shares of `values` per bin of this baseline.
    pub fn distribution(&self, values: &[f64]) -> Vec<f64> {
        let mut counts = vec![0u64; self.edges.len() + 2];
        for &v in values {
            counts[self.bin(v)] += 1;
        }
        shares(&counts)
    }

    /// Population stability index of counts per bin against this baseline:
    /// `sum((a - e) * ln(a / e))` with shares floored at 1e-4. Below 0.1 is stable,
    /// 0.1-0.25 a moderate shift, above 0.25 a major one.
    pub fn psi(&self, counts: &[u64]) -> f64 {
        let actual = shares(counts);
        self.shares
            .iter()
            .zip(actual.iter().chain(std::iter::repeat(&0.0)))
            .map(|(&e, &a)| {
                let (e, a) = (e.max(1e-4), a.max(1e-4));
                (a - e) * (a / e).ln()
            })
            .sum()
    }
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            }
        })
        .collect()
}

/// All metrics of one scorer on one labelled set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// What was scored: the model, or a baseline such as a rule-based score.
    pub name: String,
    pub rows: u64,
    pub positives: u64,
    pub auc: f64,
    pub pr_auc: f64,
    pub log_loss: f64,
    pub brier: f64,
    pub at_threshold: AtThreshold,
    pub deciles: Vec<Decile>,
    pub calibration: Vec<CalibrationBin>,
    pub roc: Vec<(f64, f64)>,
    pub pr: Vec<(f64, f64)>,
}

impl Evaluation {
    /// Evaluates probabilities `p` against labels `y`, with decisions at `threshold`.
    pub fn new(name: &str, p: &[f64], y: &[f32], threshold: f64) -> Self {
        Self {
            name: name.to_string(),
            rows: y.len() as u64,
            positives: y.iter().filter(|&&v| v > 0.5).count() as u64,
            auc: auc(p, y),
            pr_auc: average_precision(p, y),
            log_loss: log_loss(p, y),
            brier: brier(p, y),
            at_threshold: at_threshold(p, y, threshold),
            deciles: deciles(p, y),
            calibration: calibration(p, y, 10),
            roc: roc_curve(p, y, 200),
            pr: pr_curve(p, y, 200),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AUC as the share of (positive, negative) pairs ranked right, ties half.
    fn naive_auc(s: &[f64], y: &[f32]) -> f64 {
        let (mut good, mut pairs) = (0.0, 0.0);
        for i in 0..s.len() {
            for j in 0..s.len() {
                if y[i] > 0.5 && y[j] < 0.5 {
                    pairs += 1.0;
                    if s[i] > s[j] {
                        good += 1.0
                    } else if s[i] == s[j] {
                        good += 0.5
                    }
                }
            }
        }
        good / pairs
    }

    proptest::proptest! {
        #[test]
        fn auc_matches_pair_counting(v in proptest::collection::vec((0u8..6, proptest::bool::ANY), 2..60)) {
            let s: Vec<f64> = v.iter().map(|x| x.0 as f64).collect();
            let y: Vec<f32> = v.iter().map(|x| if x.1 { 1.0 } else { 0.0 }).collect();
            if y.contains(&1.0) && y.contains(&0.0) {
                proptest::prop_assert!((auc(&s, &y) - naive_auc(&s, &y)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn average_precision_matches_sklearn_example() {
        // sklearn docs: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333...
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]);
        assert!((ap - 0.833_333_333_333_333_4).abs() < 1e-12, "{ap}");
        // roc_auc_score of the same is 0.75.
        assert!((auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn threshold_deciles_calibration() {
        let p: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let y: Vec<f32> = (0..100).map(|i| if i >= 80 { 1.0 } else { 0.0 }).collect();
        let t = at_threshold(&p, &y, 0.7);
        assert_eq!((t.true_positives, t.false_positives), (20, 10));
        assert!((t.recall - 1.0).abs() < 1e-12 && (t.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((best_f1_threshold(&p, &y) - 0.8).abs() < 1e-12);
        let d = deciles(&p, &y);
        assert_eq!(d.len(), 10);
        assert_eq!(d[0].positives, 10);
        assert!((d[0].lift - 5.0).abs() < 1e-12);
        assert!((d[1].cumulative_gain - 1.0).abs() < 1e-12);
        let c = calibration(&p, &y, 10);
        assert_eq!(c.len(), 10);
        assert_eq!(c[9].observed_rate, 1.0);
        assert!((log_loss(&[0.5, 0.5], &[1.0, 0.0]) - std::f64::consts::LN_2).abs() < 1e-12);
        assert!((brier(&[1.0, 0.0], &[1.0, 0.0])).abs() < 1e-12);
    }

    #[test]
    fn psi_zero_for_same_distribution_and_large_for_a_shift() {
        let v: Vec<f64> = (0..1000).map(|i| (i % 97) as f64).collect();
        let b = Baseline::fit(&v);
        let mut counts = vec![0u64; b.shares.len()];
        for &x in &v {
            counts[b.bin(x)] += 1;
        }
        assert!(b.psi(&counts) < 1e-9);
        let mut shifted = vec![0u64; b.shares.len()];
        for &x in &v {
            shifted[b.bin(x + 50.0)] += 1;
        }
        assert!(b.psi(&shifted) > 0.25, "{}", b.psi(&shifted));
    }
}
