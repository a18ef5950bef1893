//! Train/test splits that do not leak.
//!
//! Examples taken from an event history are indexed by their cut-off instant, and each
//! label looks `horizon` past it. A time split trains on earlier cut-offs and tests on
//! later ones, and *purges* every training row whose label window reaches into the test
//! period (otherwise the model trains on outcomes that happen during the test). Rolling-
//! origin cross-validation repeats that with the boundary moving forward. Plain tables
//! have no time: they get stratified k-fold.

use crate::gbdt::next_u64;

/// Train and test row indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Fold {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
    /// First test cut-off (time splits).
    pub boundary: Option<i64>,
}

/// Distinct cut-offs, sorted.
fn distinct(cutoffs: &[i64]) -> Vec<i64> {
    let mut d = cutoffs.to_vec();
    d.sort_unstable();
    d.dedup();
    d
}

/// Rows with cut-off `>= boundary` test; rows whose label window ends by the boundary train.
fn split_at(cutoffs: &[i64], boundary: i64, end: Option<i64>, horizon: i64) -> Fold {
    let mut f = Fold {
        train: Vec::new(),
        test: Vec::new(),
        boundary: Some(boundary),
    };
    for (i, &c) in cutoffs.iter().enumerate() {
        if c >= boundary && end.is_none_or(|e| c < e) {
            f.test.push(i);
        } else if c + horizon <= boundary {
            f.train.push(i);
        }
    }
    f
}

/// The last `test_share` of cut-off instants (at least one) test, earlier ones train.
pub fn time_split(cutoffs: &[i64], test_share: f64, horizon: i64) -> Option<Fold> {
    let d = distinct(cutoffs);
    if d.len() < 2 {
        return None;
    }
    let k = ((d.len() as f64 * test_share).round() as usize).clamp(1, d.len() - 1);
    let f = split_at(cutoffs, d[d.len() - k], None, horizon);
    (!f.train.is_empty() && !f.test.is_empty()).then_some(f)
}

/// `folds` rolling-origin folds: the later half of the cut-offs is cut into `folds` test
/// blocks; each trains on everything (purged) before its block.
pub fn rolling_origin(cutoffs: &[i64], folds: usize, horizon: i64) -> Vec<Fold> {
    let d = distinct(cutoffs);
    let folds = folds.max(1);
    let first = d.len() / 2;
    let span = d.len() - first;
    if span < folds {
        return Vec::new();
    }
    (0..folds)
        .filter_map(|k| {
            let a = d[first + k * span / folds];
            let b = d.get(first + (k + 1) * span / folds).copied();
            let f = split_at(cutoffs, a, b, horizon);
            (!f.train.is_empty() && !f.test.is_empty()).then_some(f)
        })
        .collect()
}

/// Stratified k-fold: each fold holds about 1/k of each class, shuffled by `seed`.
pub fn stratified_kfold(y: &[f32], k: usize, seed: u64) -> Vec<Fold> {
    let k = k.max(2);
    let mut rng = seed.max(1);
    let mut fold_of = vec![0usize; y.len()];
    for class in [0.0f32, 1.0] {
        let mut rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        for i in (1..rows.len()).rev() {
            let j = (next_u64(&mut rng) % (i as u64 + 1)) as usize;
            rows.swap(i, j);
        }
        for (n, &r) in rows.iter().enumerate() {
            fold_of[r] = n % k;
        }
    }
    (0..k)
        .map(|f| Fold {
            train: (0..y.len()).filter(|&i| fold_of[i] != f).collect(),
            test: (0..y.len()).filter(|&i| fold_of[i] == f).collect(),
            boundary: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_split_purges_label_windows_that_reach_the_test() {
        // Daily cut-offs 0..10, horizon 2 days: test = days 8, 9; train = cut-offs whose
        // label window ends by day 8, i.e. days 0..=6. Day 7 is purged.
        let cutoffs: Vec<i64> = (0..10).flat_map(|d| [d, d]).collect();
        let f = time_split(&cutoffs, 0.2, 2).expect("split");
        assert_eq!(f.boundary, Some(8));
        assert!(f.test.iter().all(|&i| cutoffs[i] >= 8));
        assert!(f.train.iter().all(|&i| cutoffs[i] + 2 <= 8));
        assert_eq!(f.train.len(), 14);
        assert!(!f.train.iter().any(|&i| cutoffs[i] == 7));
    }

    #[test]
    fn rolling_origin_moves_forward_without_overlap() {
        let cutoffs: Vec<i64> = (0..20).collect();
        let folds = rolling_origin(&cutoffs, 3, 1);
        assert_eq!(folds.len(), 3);
        for f in &folds {
            let b = f.boundary.expect("boundary");
            assert!(f.train.iter().all(|&i| cutoffs[i] < b));
            assert!(f.test.iter().all(|&i| cutoffs[i] >= b));
        }
        let tests: Vec<usize> = folds.iter().flat_map(|f| f.test.clone()).collect();
        let mut sorted = tests.clone();
        sorted.dedup();
        assert_eq!(tests, sorted);
    }

    #[test]
    fn stratified_folds_partition_and_balance() {
        let y: Vec<f32> = (0..100)
            .map(|i| if i % 10 == 0 { 1.0 } else { 0.0 })
            .collect();
        let folds = stratified_kfold(&y, 5, 3);
        let mut all: Vec<usize> = folds.iter().flat_map(|f| f.test.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        for f in &folds {
            assert_eq!(f.test.iter().filter(|&&i| y[i] == 1.0).count(), 2);
        }
    }
}
