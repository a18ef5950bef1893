#![allow(clippy::unwrap_used)]
//! `kairos evaluate send-time` on a simulated shop whose people have known preferred hours
//! and whose email went out at random times: the model's hour must beat a fixed 10:00 and
//! the population's best hour, in hit rate and in expected open rate.

mod support;

use support::kairos;

#[test]
fn the_send_time_model_beats_a_fixed_hour_and_the_populations_hour() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("shop.jsonl");
    let truth = dir.path().join("truth.jsonl");
    let (ok, out) = kairos(
        &[
            "simulate",
            "--people",
            "800",
            "--days",
            "35",
            "--seed",
            "3",
            // The same events whatever day the test runs.
            "--start",
            "2026-10-05T00:00:00Z",
            "--out",
            events.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    let (ok, out) = kairos(&["import", events.to_str().unwrap()], &data);
    assert!(ok, "{out}");
    let result = dir.path().join("st.json");
    let (ok, out) = kairos(
        &[
            "evaluate",
            "send-time",
            "--truth",
            truth.to_str().unwrap(),
            "--test-days",
            "10",
            "--out",
            result.to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{out}");
    println!("{out}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    let hit = &r["hit_rate_within_1h"];
    assert!(
        hit["model"].as_f64().unwrap() > hit["population_best_hour"].as_f64().unwrap() + 0.1,
        "{r}"
    );
    assert!(
        hit["model"].as_f64().unwrap() > hit["fixed_10am"].as_f64().unwrap() + 0.1,
        "{r}"
    );
    assert!(r["lift"]["over_fixed_10am"].as_f64().unwrap() > 1.3, "{r}");
    assert!(
        r["lift"]["over_population_best_hour"].as_f64().unwrap() > 1.2,
        "{r}"
    );
    assert!(r["test_opens"].as_u64().unwrap() > 100);

    let (ok, out) = kairos(
        &["evaluate", "send-time", "--truth", "/nonexistent.jsonl"],
        &data,
    );
    assert!(!ok && out.contains("nonexistent"), "{out}");
}
