//! Campaigns through the writer: a journey's wait is a durable timer, its send an outbox row
//! written with the decision, its decisions report counters, and erasure removes its rows.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use kairos_core::campaign::{CampaignDef, TriggerDef};
use kairos_core::IdKey;
use kairos_store::{Clock, StoreOptions, WriterOptions};
use serde_json::json;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 2025-10-09T08:53:20Z (10:53 in Berlin: outside quiet hours).
const T0: i64 = 1_760_000_000_000;
const MIN: i64 = 60_000;

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_abandoned_cart_becomes_one_outbox_row_when_its_timer_comes_due() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let clock = {
        let now = now.clone();
        Clock(Arc::new(move || now.load(Ordering::SeqCst)))
    };
    let writer = WriterOptions {
        clock,
        timer_interval: Duration::from_millis(5),
        ..WriterOptions::default()
    };
    let h = Harness::open_full(dir.path(), &StoreOptions::default(), writer);
    let mut defs = kairos_core::defaults::default_definitions();
    // Only the campaign under test (the built-in welcome series would mail these people).
    defs.campaigns.clear();
    defs.campaigns.insert(
        "cart_abandonment".into(),
        CampaignDef {
            trigger: TriggerDef {
                event: Some(r#"event.name == "Added to Cart""#.into()),
                ..TriggerDef::default()
            },
            // Sooner than any built-in segment's timer: only the journey wakes the person.
            wait: Some("5m".into()),
            exit: Some(r#"did("Order Completed", since: trigger)"#.into()),
            template: Some("cart".into()),
            ..CampaignDef::default()
        },
    );
    h.define(defs);
    let subscribed = |email: &str| json!({"email": email, "timezone": "Europe/Berlin", "subscriptions": {"marketing": true}});
    h.send(vec![
        identify("i1", Some("ada"), None, T0, subscribed("ada@example.com")),
        identify("i2", Some("bob"), None, T0, subscribed("bob@example.com")),
        track(
            "c1",
            "Added to Cart",
            Some("ada"),
            None,
            T0 + MIN,
            json!({"product_id": "sku-1", "name": "Red Shoes", "price": 80}),
        ),
        track(
            "c2",
            "Added to Cart",
            Some("bob"),
            None,
            T0 + MIN,
            json!({"product_id": "sku-2"}),
        ),
        track(
            "o2",
            "Order Completed",
            Some("bob"),
            None,
            T0 + 3 * MIN,
            json!({"revenue": 40}),
        ),
    ]);
    assert!(h.store.due_outbox(i64::MAX, 10).unwrap().is_empty());
    // Nothing is due before 5 minutes; then the timer thread decides with no new event.
    now.store(T0 + 6 * MIN, Ordering::SeqCst);
    wait_until("the outbox row", || {
        !h.store.due_outbox(i64::MAX, 10).unwrap().is_empty()
    });
    now.store(T0 + 3 * 60 * MIN, Ordering::SeqCst);
    let ada = h.profile_of(&IdKey::user("ada")).unwrap();
    wait_until("bob's exit to be counted", || {
        h.store
            .campaign_stats("cart_abandonment")
            .unwrap()
            .iter()
            .any(|(_, m, _, _)| m == "exited")
    });
    let rows = h.store.due_outbox(i64::MAX, 10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0].1;
    assert_eq!(row.campaign, "cart_abandonment");
    assert_eq!(row.template, "cart");
    assert_eq!(row.to.as_deref(), Some("ada@example.com"));
    assert_eq!(row.profile, ada.id.0);
    assert_eq!(row.event["name"], "Red Shoes");
    assert_eq!(row.due, T0 + 6 * MIN);
    assert_eq!(row.status, "scheduled");
    let mut stats = h.store.campaign_stats("cart_abandonment").unwrap();
    stats.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let counts: Vec<(&str, &str, u64)> = stats
        .iter()
        .map(|(v, m, n, _)| (v.as_str(), m.as_str(), *n))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("", "entered", 2),
            ("", "exited", 1),
            ("default", "queued", 1)
        ]
    );
    // The decisions are on the person's timeline.
    let timeline = h.store.profile_changes(ada.id, 100).unwrap();
    let statuses: Vec<&str> = timeline
        .iter()
        .filter(|c| c["type"] == "message")
        .filter_map(|c| c["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["entered", "queued"]);

    // Erasing Ada removes the row that holds her address.
    let erased = h
        .ingest
        .erase(ada.id, false, T0 + 4 * 60 * MIN)
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
    assert!(erased.is_some());
    assert!(h.store.due_outbox(i64::MAX, 10).unwrap().is_empty());
    let mut mentions = 0;
    h.store
        .scan_all(|k, v| {
            let hay = [k, v].concat();
            if hay.windows(15).any(|w| w == b"ada@example.com") {
                mentions += 1;
            }
        })
        .unwrap();
    assert_eq!(mentions, 0);
    h.close();
}

#[test]
fn delivery_outcomes_move_rows_between_outbox_sent_and_dead_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let writer = || WriterOptions {
        clock: Clock(Arc::new(|| T0 + MIN)),
        ..WriterOptions::default()
    };
    let h = Harness::open_full(dir.path(), &StoreOptions::default(), writer());
    let mut defs = kairos_core::Definitions::default();
    defs.campaigns.insert(
        "receipt".into(),
        CampaignDef {
            trigger: TriggerDef {
                event: Some(r#"event.name == "Order Completed""#.into()),
                ..TriggerDef::default()
            },
            template: Some("receipt".into()),
            purpose: "transactional".into(),
            ..CampaignDef::default()
        },
    );
    h.define(defs);
    let traits = json!({"email": "cy@example.com"});
    h.send(vec![
        identify("i1", Some("cy"), None, T0, traits),
        track("o1", "Order Completed", Some("cy"), None, T0 + 1, json!({})),
        track("o2", "Order Completed", Some("cy"), None, T0 + 2, json!({})),
        track("o3", "Order Completed", Some("cy"), None, T0 + 3, json!({})),
    ]);
    let due = h.store.due_outbox(T0 + MIN, 10).unwrap();
    assert_eq!(due.len(), 3);
    let (k1, r1) = &due[0];
    let (k2, r2) = &due[1];
    let (k3, r3) = &due[2];
    h.store.outbox_sent(k1, r1, T0 + MIN).unwrap();
    h.store
        .outbox_retry(k2, r2, T0 + 10 * MIN, "HTTP 503: busy")
        .unwrap();
    h.store
        .outbox_dead(k3, r3, T0 + MIN, "HTTP 400: bad payload")
        .unwrap();
    // Only the retried one is left, due later, with its attempt counted.
    assert!(h.store.due_outbox(T0 + MIN, 10).unwrap().is_empty());
    let later = h.store.due_outbox(T0 + 10 * MIN, 10).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].1.message_id, r2.message_id);
    assert_eq!(
        (later[0].1.attempts, later[0].1.status.as_str()),
        (1, "failed")
    );
    h.close();

    // After a restart every outcome is where it was left.
    let h = Harness::open_full(dir.path(), &StoreOptions::default(), writer());
    let sent = h.store.message(&r1.message_id).unwrap().unwrap();
    assert_eq!((sent.status.as_str(), sent.attempts), ("sent", 1));
    let dead = h.store.dead_messages(None, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 400: bad payload"));
    assert_eq!(
        h.store.message(&r2.message_id).unwrap().unwrap().status,
        "failed"
    );
    let counts: Vec<(String, u64)> = h
        .store
        .campaign_stats("receipt")
        .unwrap()
        .into_iter()
        .filter(|(_, m, _, _)| ["sent", "retried", "dead"].contains(&m.as_str()))
        .map(|(_, m, n, _)| (m, n))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("dead".into(), 1),
            ("retried".into(), 1),
            ("sent".into(), 1)
        ]
    );
    // A re-driven dead message is due again with fresh attempts; unknown ids are refused.
    assert!(h.store.redrive(&r3.message_id, T0 + 2 * MIN).unwrap());
    assert!(!h.store.redrive("nope", T0).unwrap());
    let due = h.store.due_outbox(T0 + 2 * MIN, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].1.attempts, due[0].1.status.as_str()),
        (0, "scheduled")
    );
    assert!(h.store.dead_messages(None, 10).unwrap().is_empty());

    // Erasure takes the sent record and the pending rows with the person.
    let cy = h.profile_of(&IdKey::user("cy")).unwrap();
    h.ingest
        .erase(cy.id, false, T0 + 3 * MIN)
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
    assert!(h.store.message(&r1.message_id).unwrap().is_none());
    assert!(h.store.pending_messages(10).unwrap().is_empty());
    h.close();
}
