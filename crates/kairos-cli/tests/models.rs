#![allow(clippy::unwrap_used)]
//! `kairos train`, `kairos evaluate` and `kairos models` end to end on a simulated shop:
//! the model must beat the rule-based purchase-intent score it is measured against, the
//! reports must be written, versions must activate and roll back, and a plain CSV table
//! (here the one `kairos examples` writes) must train and evaluate too.

mod support;

use kairos_ml::report::Report;
use std::path::Path;
use support::kairos;

fn report(path: &Path) -> Report {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn train_evaluate_and_manage_models_on_a_simulated_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("shop.jsonl");
    let (ok, out) = kairos(
        &[
            "simulate",
            "--people",
            "1500",
            "--days",
            "40",
            "--seed",
            "5",
            // The same events whatever day the test runs.
            "--start",
            "2026-10-05T00:00:00Z",
            "--out",
            events.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let (ok, out) = kairos(&["import", events.to_str().unwrap()], &data);
    assert!(ok, "{out}");

    // Bad input first: a label that does not parse, a learner that does not exist.
    let (ok, out) = kairos(&["train", "--model", "m", "--label", "did(\"x\""], &data);
    assert!(!ok && out.contains("label"), "{out}");
    let (ok, out) = kairos(&["train", "--model", "m", "--learner", "forest"], &data);
    assert!(!ok && out.contains("forest"), "{out}");

    let reports = dir.path().join("reports");
    let (ok, out) = kairos(
        &[
            "train",
            "--model",
            "purchase_7d",
            "--activate",
            "--cv",
            "2",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    assert!(out.contains("stored model purchase_7d version 1"), "{out}");
    let r = report(&reports.join("purchase_7d-v1.json"));
    let model = &r.evaluations[0];
    let rule = r
        .evaluations
        .iter()
        .find(|e| e.name == "rule score purchase_intent")
        .unwrap();
    println!(
        "model AUC {:.4}, rule purchase_intent AUC {:.4}",
        model.auc, rule.auc
    );
    assert!(
        model.auc > rule.auc + 0.01,
        "model {} vs rule {}",
        model.auc,
        rule.auc
    );
    assert!(model.log_loss < rule.log_loss);
    assert_eq!(model.deciles.len(), 10);
    assert_eq!(r.folds.len(), 2);
    assert!(!r.importance.is_empty());
    let html = std::fs::read_to_string(reports.join("purchase_7d-v1.html")).unwrap();
    assert_eq!(html.matches("<svg class=\"plot\"").count(), 4);

    // A second version, then activate and roll back.
    let (ok, out) = kairos(
        &[
            "train",
            "--model",
            "purchase_7d",
            "--learner",
            "logistic",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let (ok, out) = kairos(&["models", "activate", "purchase_7d", "2"], &data);
    assert!(ok, "{out}");
    let (ok, out) = kairos(&["models", "list"], &data);
    assert!(
        ok && out.contains("purchase_7d") && out.contains("logistic"),
        "{out}"
    );
    let (ok, out) = kairos(&["models", "rollback", "purchase_7d"], &data);
    assert!(ok && out.contains("version 1"), "{out}");
    let (ok, out) = kairos(&["models", "rollback", "purchase_7d"], &data);
    assert!(!ok && out.contains("no older version"), "{out}");
    let (ok, out) = kairos(&["models", "activate", "purchase_7d", "9"], &data);
    assert!(!ok && out.contains("no version 9"), "{out}");

    // Not drifted (no server has monitored it): --if-drifted does nothing.
    let (ok, out) = kairos(&["train", "--model", "purchase_7d", "--if-drifted"], &data);
    assert!(ok && out.contains("nothing to do"), "{out}");

    let (ok, out) = kairos(
        &[
            "evaluate",
            "--model",
            "purchase_7d",
            "--version",
            "1",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let e = report(&reports.join("purchase_7d-v1-evaluation.json"));
    assert!(
        (e.evaluations[0].auc - model.auc).abs() < 1e-9,
        "same rows, same model: same AUC"
    );

    // The same history as a plain table.
    let table = dir.path().join("examples.csv");
    let (ok, out) = kairos(
        &[
            "examples",
            "--label",
            "did(\"Order Completed\", within: 7d)",
            "--every",
            "3d",
            "--out",
            table.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let saved = dir.path().join("table.model.json");
    let (ok, out) = kairos(
        &[
            "train",
            "--table",
            table.to_str().unwrap(),
            "--target",
            "label",
            "--drop",
            "cutoff,profile",
            "--cv",
            "3",
            "--out",
            saved.to_str().unwrap(),
            "--report-dir",
            reports.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let t = report(&reports.join("examples-report.json"));
    assert_eq!(t.folds.len(), 3);
    assert!(t.evaluations[0].auc > 0.8, "{}", t.evaluations[0].auc);
    assert!(t.evaluations.iter().any(|e| e.name.contains("logistic")));
    let (ok, out) = kairos(
        &[
            "evaluate",
            "--model-file",
            saved.to_str().unwrap(),
            "--table",
            table.to_str().unwrap(),
            "--target",
            "label",
            "--drop",
            "cutoff,profile",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let (ok, out) = kairos(
        &[
            "train",
            "--table",
            table.to_str().unwrap(),
            "--target",
            "nope",
        ],
        &data,
    );
    assert!(!ok && out.contains("no column `nope`"), "{out}");

    // Scheduled retraining against a running server (which holds the store).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(support::Server::start(&data));
    let remote = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            "purchase_7d",
            "--server",
            &server.base,
            "--admin-token",
            support::ADMIN,
            "--report-dir",
            reports.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        kairos(&args, &data)
    };
    let (ok, out) = remote(&["--if-drifted"]);
    assert!(ok && out.contains("has not drifted"), "{out}");
    let (ok, out) = remote(&["--every", "5d"]);
    assert!(
        ok && out.contains("version 3 stored in the server"),
        "{out}"
    );
    assert!(reports.join("purchase_7d-v3.html").exists());
    let (ok, out) = kairos(&["train", "--model", "purchase_7d"], &data);
    assert!(
        !ok && out.contains("is a server running"),
        "the store is the server's: {out}"
    );
    drop(server);
}
