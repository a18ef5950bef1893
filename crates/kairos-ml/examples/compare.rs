//! The Kairos side of `bench/ml_compare.py`: trains on exactly the arrays and folds the
//! script gives LightGBM and scikit-learn, and prints one JSON line per fold with the
//! training time and test metrics.
//!
//! Inputs (written by the script): `X` row-major little-endian f32, `Y` one byte per row
//! (0/1), `FOLDS` one byte per row (the fold that tests the row; 255 = always train).
//!
//! `cargo run --release -p kairos-ml --example compare -- X Y FOLDS COLS LEARNER PARAMS_JSON`

use kairos_ml::data::Dataset;
use kairos_ml::{gbdt, linear, metrics};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        return Err("usage: compare X Y FOLDS COLS gbdt|logistic PARAMS_JSON".into());
    }
    let xb = std::fs::read(&a[1])?;
    let y = std::fs::read(&a[2])?;
    let folds = std::fs::read(&a[3])?;
    let cols: usize = a[4].parse()?;
    let learner = a[5].as_str();
    let x: Vec<f32> = xb
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let rows = y.len();
    if x.len() != rows * cols || folds.len() != rows {
        return Err("X, Y and FOLDS disagree on the row count".into());
    }
    let all = Dataset {
        names: (0..cols).map(|j| format!("f{j}")).collect(),
        x,
        y: y.iter().map(|&v| v as f32).collect(),
    };
    let mut ids: Vec<u8> = folds.iter().copied().filter(|&f| f != 255).collect();
    ids.sort_unstable();
    ids.dedup();
    for fold in ids {
        let train_rows: Vec<usize> = (0..rows).filter(|&i| folds[i] != fold).collect();
        let test_rows: Vec<usize> = (0..rows).filter(|&i| folds[i] == fold).collect();
        let train = all.subset(&train_rows);
        let test = all.subset(&test_rows);
        let started = Instant::now();
        let (p, extra) = match learner {
            "gbdt" => {
                let params: gbdt::Params = serde_json::from_str(&a[6])?;
                let (forest, _) = gbdt::train(&train, None, &params)?;
                let secs = started.elapsed().as_secs_f64();
                let p = forest.predict_dataset(&test, params.threads.max(1));
                (
                    p,
                    serde_json::json!({"seconds": secs, "trees": forest.trees.len()}),
                )
            }
            "logistic" => {
                let params: linear::Params = serde_json::from_str(&a[6])?;
                let m = linear::train(&train, &params)?;
                let secs = started.elapsed().as_secs_f64();
                let p = (0..test.rows())
                    .map(|i| m.predict_proba(test.row(i)))
                    .collect();
                (
                    p,
                    serde_json::json!({"seconds": secs, "iterations": m.iterations}),
                )
            }
            other => return Err(format!("unknown learner {other}").into()),
        };
        let mut out = extra;
        out["fold"] = fold.into();
        out["auc"] = metrics::auc(&p, &test.y).into();
        out["log_loss"] = metrics::log_loss(&p, &test.y).into();
        println!("{out}");
    }
    Ok(())
}
