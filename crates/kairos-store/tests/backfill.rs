//! A new segment is backfilled over every stored profile while events keep arriving; when
//! the backfill reports done, its members are exactly the profiles that match.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use kairos_core::defaults::default_definitions;
use kairos_core::{IdKey, SegmentDef};
use kairos_store::{Clock, StoreOptions, WriterOptions};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_795_348_800_000;

#[test]
fn a_backfill_while_ingesting_ends_with_exactly_the_matching_members() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::with_defaults(dir.path(), Clock(Arc::new(|| T0 + 3_600_000)));
    let order = |i: usize, user: usize, amount: i64| {
        track(
            &format!("m{i}"),
            "Order Completed",
            Some(&format!("u{user}")),
            None,
            T0 + i as i64,
            json!({"revenue": amount}),
        )
    };
    // 3,000 people with one order each.
    let first: Vec<_> = (0..3000).map(|u| order(u, u, (u % 100) as i64)).collect();
    for chunk in first.chunks(500) {
        h.send(chunk.to_vec());
    }
    // A new segment: spent at least 150.
    let mut defs = default_definitions();
    defs.segments.insert(
        "spenders".into(),
        SegmentDef {
            rule: "lifetime_revenue >= 150".into(),
            priority: 0,
            ..SegmentDef::default()
        },
    );
    let version = h.define(defs);
    // Meanwhile, every third person orders again for 100: some of them cross 150.
    let second: Vec<_> = (0..3000)
        .step_by(3)
        .map(|u| order(10_000 + u, u, 100))
        .collect();
    for chunk in second.chunks(50) {
        h.send(chunk.to_vec());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !h
        .ingest
        .backfill()
        .is_some_and(|b| b.version == version && b.finished_at.is_some())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "backfill did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let members: std::collections::BTreeSet<_> = h
        .store
        .segment_members("spenders", None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut expected = std::collections::BTreeSet::new();
    for u in 0..3000usize {
        let spent = (u % 100) as i64 + if u % 3 == 0 { 100 } else { 0 };
        let p = h.profile_of(&IdKey::user(&format!("u{u}"))).unwrap();
        if spent >= 150 {
            expected.insert(p.id);
        }
        assert_eq!(
            p.derived.segments.get("spenders").is_some(),
            spent >= 150,
            "profile of u{u} (spent {spent})"
        );
    }
    assert_eq!(members.len(), expected.len());
    assert_eq!(members, expected);
    h.close();
}

#[test]
fn a_backfill_cut_short_by_a_stop_resumes_when_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock(Arc::new(|| T0 + 3_600_000));
    let writer = || WriterOptions {
        clock: clock.clone(),
        timer_interval: Duration::from_millis(5),
        ..WriterOptions::default()
    };
    let h = Harness::with_defaults(dir.path(), clock.clone());
    let people = 10_000usize;
    let orders: Vec<_> = (0..people)
        .map(|u| {
            track(
                &format!("m{u}"),
                "Order Completed",
                Some(&format!("u{u}")),
                None,
                T0 + u as i64,
                json!({"revenue": (u % 100) as i64}),
            )
        })
        .collect();
    for chunk in orders.chunks(1000) {
        h.send(chunk.to_vec());
    }
    let mut defs = default_definitions();
    defs.segments.insert(
        "spenders".into(),
        SegmentDef {
            rule: "lifetime_revenue >= 90".into(),
            priority: 0,
            ..SegmentDef::default()
        },
    );
    let version = h.define(defs);
    // Stopped at once, a page or two into the backfill (20 pages of 512).
    h.close();
    // Read without a writer, which would resume it.
    let partial = kairos_store::Store::open(dir.path(), &StoreOptions::default())
        .unwrap()
        .segment_size("spenders")
        .unwrap();
    assert!(
        partial < (people / 10) as u64,
        "the first run finished the backfill ({partial} members): nothing to resume"
    );

    // Reopened under the same definitions: nothing calls `define`, the store resumes.
    let h = Harness::open_full(dir.path(), &StoreOptions::default(), writer());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match h.ingest.backfill() {
            Some(b) if b.version == version && b.finished_at.is_some() => break,
            Some(b) => assert_eq!(b.version, version),
            None => panic!("no backfill resumed"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backfill did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let members = h.store.segment_size("spenders").unwrap();
    assert_eq!(members, (people / 10) as u64);
    for u in [0usize, 89, 90, 4_321, 9_999] {
        let p = h.profile_of(&IdKey::user(&format!("u{u}"))).unwrap();
        assert_eq!(
            p.derived.segments.get("spenders").is_some(),
            u % 100 >= 90,
            "u{u}"
        );
    }
    h.close();
    // Done means done: the next start has nothing to resume.
    let h = Harness::open_full(dir.path(), &StoreOptions::default(), writer());
    assert_eq!(h.ingest.backfill(), None);
    h.close();
}
