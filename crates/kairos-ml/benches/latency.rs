//! Serving latency percentiles, one call timed at a time: a prediction and a TreeSHAP
//! explanation (the served quadrature explainer, with the subset-table explainer it
//! replaced and the recursive algorithm as baselines) from a forest of 200 trees of depth
//! 6 over 50 features (the serving shape), beside a logistic model on the same
//! rows as the floor.
//!
//! `cargo bench -p kairos-ml --bench latency`

use hdrhistogram::Histogram;
use kairos_ml::data::synthetic;
use kairos_ml::gbdt::{self, Params};
use kairos_ml::{linear, shap};
use std::hint::black_box;
use std::time::Instant;

fn measure(name: &str, n: usize, mut f: impl FnMut(usize)) {
    // Warm caches and branch predictors first.
    for i in 0..n / 10 {
        f(i);
    }
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..n {
        let t = Instant::now();
        f(i);
        let _ = h.record(t.elapsed().as_nanos() as u64);
    }
    println!(
        "{name:<28} n={n:<7} p50 {:>7.2} us  p99 {:>7.2} us  p99.9 {:>7.2} us  max {:>8.2} us",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3
    );
}

fn main() {
    let data = synthetic(50_000, 50, 42);
    let params = Params {
        rounds: 200,
        max_depth: 6,
        max_leaves: 64,
        min_data_in_leaf: 5,
        ..Params::default()
    };
    let (forest, _) = gbdt::train(&data, None, &params).expect("trains");
    let depth = forest.trees.iter().map(|t| t.depth()).max().unwrap_or(0);
    println!(
        "forest: {} trees, max depth {depth}, 50 features",
        forest.trees.len()
    );
    let lin = linear::train(&data, &linear::Params::default()).expect("fits");
    let rows: Vec<&[f32]> = (0..10_000).map(|i| data.row(i)).collect();
    let k = rows.len();
    measure("gbdt 200x6 predict", 200_000, |i| {
        black_box(forest.predict_proba(black_box(rows[i % k])));
    });
    let quad = shap::Explainer::new(&forest).expect("depth 6 fits");
    let tables = shap::TableExplainer::new(&forest).expect("depth 6 fits");
    // What is timed is right: the same numbers as the recursive algorithm.
    for x in rows.iter().take(100) {
        let (a, b) = (quad.contributions(x), shap::contributions(&forest, x));
        assert!(a.iter().zip(&b).all(|(u, v)| (u - v).abs() < 1e-9));
    }
    measure("gbdt 200x6 TreeSHAP (quad)", 100_000, |i| {
        black_box(quad.contributions(black_box(rows[i % k])));
    });
    measure("gbdt 200x6 TreeSHAP (tables)", 100_000, |i| {
        black_box(tables.contributions(black_box(rows[i % k])));
    });
    measure("gbdt 200x6 TreeSHAP recursive", 5_000, |i| {
        black_box(shap::contributions(&forest, black_box(rows[i % k])));
    });
    measure("logistic 50 predict", 200_000, |i| {
        black_box(lin.predict_proba(black_box(rows[i % k])));
    });
}
