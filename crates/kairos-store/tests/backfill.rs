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
    wait_for_backfill(&h, version);
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
    let orders = one_order_each(people);
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

/// The backfill read a person, the person was erased, then the writer recorded the page:
/// the copy read before the erasure used to be written back, identifiers and all.
#[test]
fn a_profile_erased_while_the_backfill_holds_its_copy_stays_erased() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock(Arc::new(|| T0 + 3_600_000));
    // The first page waits, read and evaluated, until the erasure is durable.
    let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new((read_tx, go_rx));
    let hook = kairos_store::BackfillHook(Arc::new(move |page| {
        if page == 0 {
            let g = gate.lock().unwrap();
            g.0.send(()).unwrap();
            g.1.recv().unwrap();
        }
    }));
    let writer = WriterOptions {
        clock: clock.clone(),
        timer_interval: Duration::from_millis(5),
        backfill_hook: Some(hook),
        ..WriterOptions::default()
    };
    let h = Harness::open_full(dir.path(), &StoreOptions::default(), writer);
    // No rule with a window or a clock: no timer touches a profile behind the test's back.
    let segment = |rule: &str| SegmentDef {
        rule: rule.into(),
        priority: 0,
        ..SegmentDef::default()
    };
    let mut defs = kairos_core::Definitions::default();
    defs.segments
        .insert("whales".into(), segment("orders >= 1000"));
    // Over no profiles: done before any is stored, so its thread never calls the hook.
    let first = h.define(defs.clone());
    wait_for_backfill(&h, first);
    let orders: Vec<_> = (0..100usize)
        .map(|u| {
            track(
                &format!("m{u}"),
                "Order Completed",
                Some(&format!("erased-or-not-{u}")),
                None,
                T0 + u as i64,
                json!({"revenue": 10}),
            )
        })
        .collect();
    h.send(orders);
    let victim = h.profile_of(&IdKey::user("erased-or-not-7")).unwrap().id;
    // Everyone enters the new segment: every profile of the page moved.
    defs.segments
        .insert("buyers".into(), segment("orders >= 1"));
    let version = h.define(defs);
    read_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let erased = h
        .ingest
        .erase(victim, false, T0 + 1_000)
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
    assert!(erased.is_some());
    go_tx.send(()).unwrap();
    wait_for_backfill(&h, version);
    h.close();
    let h = Harness::open(dir.path());
    assert_eq!(h.store.segment_size("buyers").unwrap(), 99);
    assert!(h.store.profile(victim).unwrap().is_none());
    // No stored byte names the person (`erased-or-not-7`, not `...-70` to `...-79`).
    let id = b"erased-or-not-7";
    let names = |b: &[u8]| {
        b.ends_with(id)
            || b.windows(id.len() + 1)
                .any(|w| &w[..id.len()] == id && !w[id.len()].is_ascii_digit())
    };
    let mut hits = 0;
    h.store
        .scan_all(|k, v| {
            if names(k) || names(v) {
                hits += 1;
            }
        })
        .unwrap();
    assert_eq!(hits, 0, "the erased person is stored again");
    h.close();
}

/// Person `u{i}` orders once, for `i % 100`.
fn one_order_each(people: usize) -> Vec<kairos_core::Event> {
    (0..people)
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
        .collect()
}

fn wait_for_backfill(h: &Harness, version: u64) {
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
}

/// Definitions edited and at once reverted, both before the writer reached the edit: the
/// revert compared itself with the definitions still in force, took itself for a no-op
/// and started no backfill, so the edit's backfill stopped half way and its cursor made
/// every restart start it again.
#[test]
fn definitions_reverted_before_the_edit_took_effect_still_get_their_backfill() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::with_defaults(dir.path(), Clock(Arc::new(|| T0 + 3_600_000)));
    h.send(one_order_each(2000));
    let original = default_definitions();
    let mut edited = original.clone();
    edited.segments.insert(
        "spenders".into(),
        SegmentDef {
            rule: "lifetime_revenue >= 50".into(),
            priority: 0,
            ..SegmentDef::default()
        },
    );
    let compile = |d: &kairos_core::Definitions| kairos_core::Scoring::compile(d, None).unwrap();
    let reverted_version = compile(&original).version;
    let pause = h.ingest.pause().unwrap();
    let edit = h.ingest.define(compile(&edited), 0).unwrap();
    let revert = h.ingest.define(compile(&original), 0).unwrap();
    drop(pause);
    edit.blocking_recv().unwrap().unwrap();
    revert.blocking_recv().unwrap().unwrap();
    assert_eq!(h.store.scoring().version, reverted_version);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match h.ingest.backfill() {
            Some(b) if b.version == reverted_version && b.finished_at.is_some() => break,
            b => assert!(
                std::time::Instant::now() < deadline,
                "no backfill of the reverted definitions finished: {b:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.store.segment_size("spenders").unwrap(), 0);
    h.close();
    // Nothing left to resume.
    let h = Harness::open(dir.path());
    assert_eq!(h.ingest.backfill(), None);
    h.close();
}
