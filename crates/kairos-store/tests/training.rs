//! Training examples from the stored log: every person's history replayed through the core.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use kairos_core::features::LABEL_FEATURE;
use kairos_core::time::DAY;
use serde_json::json;

const T0: i64 = 1_760_000_000_000;

/// `people` people who each view a product at `T0 + i` ms; one in `buyers_every` orders on
/// day 3.
fn views_then_orders(people: i64, buyers_every: i64) -> Vec<kairos_core::Event> {
    let mut events = Vec::new();
    for i in 0..people {
        let user = format!("u{i}");
        let view = track(
            &format!("v{i}"),
            "Product Viewed",
            Some(&user),
            None,
            T0 + i,
            json!({}),
        );
        events.push(view);
        if i % buyers_every == 0 {
            let revenue = json!({"revenue": 10});
            let order = track(
                &format!("o{i}"),
                "Order Completed",
                Some(&user),
                None,
                T0 + 3 * DAY,
                revenue,
            );
            events.push(order);
        }
    }
    events
}

/// Definitions whose label is an order within 7 days of a cut-off.
fn purchase_label() -> kairos_core::Scoring {
    let mut d = kairos_core::Definitions::default();
    d.features.expressions.insert(
        LABEL_FEATURE.into(),
        r#"did("Order Completed", within: 7d)"#.into(),
    );
    kairos_core::Scoring::compile(&d, None).unwrap()
}

#[test]
fn every_person_gives_one_example_per_cutoff_with_the_label_from_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    // One in three buys on day 3.
    let events = views_then_orders(30, 3);
    h.send(events);
    let scoring = purchase_label();
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

/// Several pages of people, replayed by workers that each take the next page when done:
/// the examples come out in profile order, each person's as `person_examples` gives them,
/// and progress counts every person once, rising.
#[test]
fn examples_over_many_pages_come_in_profile_order() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    // Everyone views before the cut-off; one in four buys after it.
    let events = views_then_orders(2_300, 4);
    for chunk in events.chunks(500) {
        h.send(chunk.to_vec());
    }
    let scoring = purchase_label();
    let (cuts, horizon, end) = ([T0 + DAY], 7 * DAY, T0 + 30 * DAY);
    let core = Default::default();
    let mut seen = Vec::new();
    let ex = h
        .store
        .training_examples(&scoring, &core, &cuts, horizon, end, |n| seen.push(n))
        .unwrap();
    let mut expected = Vec::new();
    for p in h.store.profiles_after(None, 10_000).unwrap() {
        for e in h
            .store
            .person_examples(p.id, &scoring, &core, &cuts, horizon, end)
            .unwrap()
        {
            expected.push((p.id, e));
        }
    }
    assert_eq!(ex.len(), 2_300);
    assert_eq!(ex.len(), expected.len());
    for ((id, e), (want_id, want)) in ex.iter().zip(&expected) {
        assert_eq!((id, e.label, e.cutoff), (want_id, want.label, want.cutoff));
    }
    assert_eq!(ex.iter().filter(|(_, e)| e.label).count(), 575);
    assert_eq!(seen.len(), 3, "one report per page of 1,000");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(seen.last(), Some(&2_300));
    h.close();
}

#[test]
fn model_versions_are_stored_activated_and_rolled_back_durably() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    let s = &h.store;
    assert_eq!(s.active_model("purchase_7d").unwrap(), None);
    let v1 = s
        .put_model("purchase_7d", &json!({"auc": 0.71}), b"model one")
        .unwrap();
    let v2 = s
        .put_model("purchase_7d", &json!({"auc": 0.74}), b"model two")
        .unwrap();
    assert_eq!((v1, v2), (1, 2));
    assert!(matches!(
        s.activate_model("purchase_7d", 9),
        Err(kairos_store::StoreError::NotFound(_))
    ));
    assert_eq!(s.activate_model("purchase_7d", v1).unwrap(), None);
    assert_eq!(s.activate_model("purchase_7d", v2).unwrap(), Some(v1));
    h.close();
    let h = Harness::open(dir.path());
    let s = &h.store;
    assert_eq!(s.active_model("purchase_7d").unwrap(), Some(2));
    let m = s.model("purchase_7d", 2).unwrap().unwrap();
    assert_eq!(
        (m.meta["auc"].as_f64(), m.bytes.as_slice()),
        (Some(0.74), &b"model two"[..])
    );
    assert_eq!(s.rollback_model("purchase_7d").unwrap(), Some(1));
    assert_eq!(s.active_model("purchase_7d").unwrap(), Some(1));
    assert_eq!(
        s.rollback_model("purchase_7d").unwrap(),
        None,
        "nothing older than 1"
    );
    assert_eq!(s.model_versions("purchase_7d").unwrap(), vec![1, 2]);
    assert_eq!(s.model_versions("other").unwrap(), Vec::<u64>::new());
    h.close();
}
