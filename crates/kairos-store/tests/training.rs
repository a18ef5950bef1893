//! Training examples from the stored log: every person's history replayed through the core.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use kairos_core::features::LABEL_FEATURE;
use kairos_core::time::DAY;
use serde_json::json;

const T0: i64 = 1_760_000_000_000;

#[test]
fn every_person_gives_one_example_per_cutoff_with_the_label_from_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    let mut events = Vec::new();
    for i in 0..30 {
        let user = format!("u{i}");
        events.push(track(
            &format!("v{i}"),
            "Product Viewed",
            Some(&user),
            None,
            T0 + i as i64,
            json!({}),
        ));
        // One in three buys on day 3.
        if i % 3 == 0 {
            events.push(track(
                &format!("o{i}"),
                "Order Completed",
                Some(&user),
                None,
                T0 + 3 * DAY,
                json!({"revenue": 10}),
            ));
        }
    }
    h.send(events);
    let mut d = kairos_core::Definitions::default();
    d.features.expressions.insert(
        LABEL_FEATURE.into(),
        r#"did("Order Completed", within: 7d)"#.into(),
    );
    let scoring = kairos_core::Scoring::compile(&d, None).unwrap();
    let mut seen = Vec::new();
    let ex = h
        .store
        .training_examples(
            &scoring,
            &Default::default(),
            &[T0 + DAY, T0 + 20 * DAY],
            7 * DAY,
            T0 + 30 * DAY,
            |n| seen.push(n),
        )
        .unwrap();
    assert_eq!(ex.len(), 60);
    let positives = ex.iter().filter(|(_, e)| e.label).count();
    assert_eq!(positives, 10, "the day-1 cut-off of each buyer");
    assert!(ex
        .iter()
        .filter(|(_, e)| e.cutoff == T0 + 20 * DAY)
        .all(|(_, e)| !e.label));
    assert_eq!(seen.last(), Some(&30));
    h.close();
}
