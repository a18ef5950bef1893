//! Serving cost of a trained model: one prediction and one TreeSHAP explanation for a
//! forest of 200 trees of depth 6 (the serving shape), next to a logistic model
//! on the same features as the cheapest possible baseline.
//!
//! `cargo bench -p kairos-ml --bench ml`

use criterion::{criterion_group, criterion_main, Criterion};
use kairos_ml::data::synthetic;
use kairos_ml::gbdt::{self, Params};
use kairos_ml::{linear, shap};
use std::hint::black_box;

fn serving(c: &mut Criterion) {
    let data = synthetic(50_000, 50, 42);
    let params = Params {
        rounds: 200,
        max_depth: 6,
        max_leaves: 64,
        min_data_in_leaf: 5,
        ..Params::default()
    };
    let (forest, _) = gbdt::train(&data, None, &params).expect("trains");
    assert_eq!(forest.trees.len(), 200);
    let lin = linear::train(&data, &linear::Params::default()).expect("fits");
    let rows: Vec<&[f32]> = (0..1000).map(|i| data.row(i)).collect();
    let mut g = c.benchmark_group("serving");
    let mut i = 0;
    g.bench_function("gbdt_200x6_predict", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            black_box(forest.predict_proba(black_box(rows[i])))
        })
    });
    g.bench_function("gbdt_200x6_treeshap", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            black_box(shap::contributions(&forest, black_box(rows[i])))
        })
    });
    g.bench_function("logistic_50_predict", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            black_box(lin.predict_proba(black_box(rows[i])))
        })
    });
    g.finish();
}

criterion_group!(benches, serving);
criterion_main!(benches);
