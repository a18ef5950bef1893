#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use kairos_core::{EventKind, IdKey};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;

#[test]
fn events_build_a_profile_readable_after_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    let out = h.send(vec![
        identify(
            "m1",
            Some("u1"),
            None,
            1_000,
            json!({"email": "Ada@Example.com", "plan": "pro"}),
        ),
        track(
            "m2",
            "Added to Cart",
            Some("u1"),
            None,
            2_000,
            json!({"product_id": "p1", "price": 10.5, "quantity": 2}),
        ),
        track(
            "m3",
            "Order Completed",
            Some("u1"),
            None,
            3_000,
            json!({"revenue": 21.0}),
        ),
    ]);
    assert_eq!(out.accepted, 3);
    let p = h.profile_of(&IdKey::user("u1")).unwrap();
    assert_eq!(p.state.orders, 1);
    assert_eq!(p.state.revenue_micros, 21_000_000);
    assert!(
        p.state.cart.items().is_empty(),
        "the order cleared the cart"
    );
    assert_eq!(
        h.profile_of(&IdKey::email("ada@example.com").unwrap())
            .unwrap()
            .id,
        p.id
    );
    let events = h.store.profile_events(p.id, None, 10).unwrap();
    assert_eq!(events.len(), 3);
    h.close();
}

#[test]
fn duplicates_are_ignored_within_a_group_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    let out = h.send(vec![
        ev(EventKind::Track, "dup", Some("u1"), None, 1),
        ev(EventKind::Track, "dup", Some("u1"), None, 1),
    ]);
    assert_eq!((out.accepted, out.duplicates), (1, 1));
    h.close();
    let h = Harness::open(dir.path());
    let out = h.send(vec![ev(EventKind::Track, "dup", Some("u1"), None, 5)]);
    assert_eq!((out.accepted, out.duplicates), (0, 1));
    let out = h.send(vec![ev(EventKind::Track, "new", Some("u1"), None, 5)]);
    assert_eq!(out.accepted, 1);
    // Sequence numbers continue after a restart instead of overwriting the log.
    assert_eq!(h.store.log_after(0, 100).unwrap().len(), 2);
    h.close();
}

/// `kairos import` writes its journal uncompressed and the server compresses; either must
/// read what the other left in the journal (each entry says how it was written). The
/// events are large enough that their chunks pass the journal's 4 KB compression
/// threshold, and the store is reopened before any memtable is flushed.
#[test]
fn events_journaled_with_or_without_compression_are_read_back_by_the_other_setting() {
    for first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let writing = kairos_store::StoreOptions {
            journal_compression: first,
            ..Default::default()
        };
        let h = Harness::open_with(dir.path(), &writing);
        let events: Vec<_> = (0..300)
            .map(|i| {
                track(
                    &format!("m{i}"),
                    "Product Viewed",
                    Some(&format!("u{}", i % 7)),
                    None,
                    i,
                    json!({"description": format!("{i} {}", "a fine product ".repeat(20))}),
                )
            })
            .collect();
        assert_eq!(h.send(events.clone()).accepted, 300);
        let written = h.store.log_after(0, 1_000).unwrap();
        h.close();
        let reading = kairos_store::StoreOptions {
            journal_compression: !first,
            ..Default::default()
        };
        let h = Harness::open_with(dir.path(), &reading);
        let read = h.store.log_after(0, 1_000).unwrap();
        assert_eq!(read.len(), 300, "journal compression {first}");
        assert_eq!(read, written);
        let p = h.profile_of(&IdKey::user("u3")).unwrap();
        assert_eq!(h.store.profile_events(p.id, None, 100).unwrap().len(), 43);
        h.close();
    }
}

/// With `return_events`, every submitted event comes back to the submitter once the
/// writer is done with it (to be freed on the thread that decoded it); after the receiver
/// is gone the writer frees them itself and goes on.
#[test]
fn used_events_come_back_to_their_submitter_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (back, used) = std::sync::mpsc::channel();
    let writer = kairos_store::WriterOptions {
        return_events: Some(back),
        ..Default::default()
    };
    let h = Harness::open_full(dir.path(), &Default::default(), writer);
    let mut sent = Vec::new();
    for batch in numbered_tracks(250, 9).chunks(100) {
        assert_eq!(h.send(batch.to_vec()).accepted, batch.len());
        sent.extend(batch.iter().map(|e| e.message_id.clone()));
    }
    // The duplicate's event comes back too.
    assert_eq!(h.send(numbered_tracks(1, 1)).duplicates, 1);
    sent.push("m0".into());
    let mut returned: Vec<String> = Vec::new();
    while returned.len() < sent.len() {
        let events = used
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        returned.extend(events.into_iter().map(|p| p.event.message_id));
    }
    assert_eq!(returned, sent);
    drop(used);
    let late = ev(EventKind::Track, "late", Some("u1"), None, 9_999);
    assert_eq!(h.send(vec![late]).accepted, 1);
    assert_eq!(h.store.log_after(0, 1_000).unwrap().len(), 251);
    h.close();
}

/// `n` track events `m0..`, spread over `people` users `u0..`, one millisecond apart.
fn numbered_tracks(n: i64, people: i64) -> Vec<kairos_core::Event> {
    (0..n)
        .map(|i| {
            ev(
                EventKind::Track,
                &format!("m{i}"),
                Some(&format!("u{}", i % people)),
                None,
                i,
            )
        })
        .collect()
}

/// The writer rules out absent messageIds and identifiers with in-memory filters built by a
/// background scan after a restart; keys stored before the restart must still be found,
/// whether the scan is still running (store reads) or done (filters).
#[test]
fn stored_message_ids_and_identifiers_are_found_after_a_restart_while_and_after_key_filters_build()
{
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    let events = numbered_tracks(3_000, 700);
    assert_eq!(h.send(events.clone()).accepted, 3_000);
    let profiles = h.store.profiles_after(None, 100_000).unwrap().len();
    h.close();
    let h = Harness::open(dir.path());
    for round in 0..4 {
        let out = h.send(events.clone());
        assert_eq!((out.accepted, out.duplicates), (0, 3_000), "round {round}");
        let fresh = ev(
            EventKind::Track,
            &format!("fresh-{round}"),
            Some(&format!("u{}", round * 100)),
            None,
            10_000,
        );
        assert_eq!(h.send(vec![fresh]).accepted, 1, "round {round}");
        assert_eq!(
            h.store.profiles_after(None, 100_000).unwrap().len(),
            profiles,
            "round {round}: a known userId made a new profile"
        );
        // Later rounds run after the scan of a few thousand keys has long finished.
        std::thread::sleep(std::time::Duration::from_millis(150 * round));
    }
    h.close();
}

/// With a tiny rebuild threshold the writer rescans its key filters every few groups;
/// no stored messageId or identifier may be missed across those rebuilds.
#[test]
fn duplicates_and_known_people_are_found_across_key_filter_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let writer = kairos_store::WriterOptions {
        key_filter_rebuild_after: 150,
        ..kairos_store::WriterOptions::default()
    };
    let h = Harness::open_full(dir.path(), &kairos_store::StoreOptions::default(), writer);
    let events = numbered_tracks(2_000, 400);
    for chunk in events.chunks(100) {
        assert_eq!(h.send(chunk.to_vec()).accepted, 100);
    }
    let profiles = h.store.profiles_after(None, 100_000).unwrap().len();
    assert_eq!(profiles, 400);
    for (round, chunk) in events.chunks(100).enumerate() {
        let out = h.send(chunk.to_vec());
        assert_eq!((out.accepted, out.duplicates), (0, 100), "resend {round}");
        let fresh = ev(
            EventKind::Track,
            &format!("fresh-{round}"),
            Some(&format!("u{round}")),
            None,
            5_000,
        );
        assert_eq!(h.send(vec![fresh]).accepted, 1);
        // Give some rescans time to finish, so both the store path and the filters run.
        if round % 5 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
    }
    assert_eq!(h.store.profiles_after(None, 100_000).unwrap().len(), 400);
    h.close();
}

#[test]
fn anonymous_history_joins_the_user_on_identify_and_the_id_follows() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    h.send(vec![ev(EventKind::Track, "m1", None, Some("a1"), 1_000)]);
    let anon = h.profile_of(&IdKey::anonymous("a1")).unwrap();
    h.send(vec![identify(
        "m2",
        Some("u1"),
        Some("a1"),
        2_000,
        json!({}),
    )]);
    let user = h.profile_of(&IdKey::user("u1")).unwrap();
    assert_ne!(
        anon.id, user.id,
        "the id is derived from the userId once known"
    );
    assert_eq!(user.state.event_count, 2);
    assert_eq!(
        h.store.profile(anon.id).unwrap().unwrap().id,
        user.id,
        "old id redirects"
    );
    assert_eq!(h.store.profile_events(user.id, None, 10).unwrap().len(), 2);
    h.close();
}

#[test]
fn alias_merges_two_users_and_replays_in_event_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    h.send(vec![
        track(
            "m1",
            "Added to Cart",
            Some("old"),
            None,
            1_000,
            json!({"product_id": "p1"}),
        ),
        track(
            "m2",
            "Order Completed",
            Some("new"),
            None,
            2_000,
            json!({"revenue": 5}),
        ),
    ]);
    h.send(vec![alias("m3", "new", "old", 3_000)]);
    let p = h.profile_of(&IdKey::user("new")).unwrap();
    assert_eq!(h.profile_of(&IdKey::user("old")).unwrap().id, p.id);
    // The cart add (t=1000) came before the order (t=2000), so the merged cart is empty.
    assert!(p.state.cart.items().is_empty());
    assert_eq!(p.state.event_count, 3);
    h.close();
}

#[test]
fn chained_merges_keep_every_event_of_everyone_merged_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    // Two anonymous browsing sessions, a user, then everything joined in two steps; the
    // events of each land in different chunks and groups.
    h.send(vec![
        ev(EventKind::Track, "a1-1", None, Some("a1"), 1_000),
        ev(EventKind::Track, "a2-1", None, Some("a2"), 1_500),
    ]);
    h.send(vec![ev(EventKind::Track, "a1-2", None, Some("a1"), 2_000)]);
    h.send(vec![ev(
        EventKind::Track,
        "old-1",
        Some("old"),
        None,
        2_500,
    )]);
    h.send(vec![identify(
        "id-1",
        Some("new"),
        Some("a1"),
        3_000,
        json!({}),
    )]);
    h.send(vec![
        identify("id-2", Some("new"), Some("a2"), 3_500, json!({})),
        alias("al-1", "new", "old", 4_000),
        ev(EventKind::Track, "new-1", Some("new"), None, 500),
    ]);
    let expect = [
        "new-1", "a1-1", "a2-1", "a1-2", "old-1", "id-1", "id-2", "al-1",
    ];
    let check = |h: &Harness| {
        let p = h.profile_of(&IdKey::user("new")).unwrap();
        for k in [
            IdKey::anonymous("a1"),
            IdKey::anonymous("a2"),
            IdKey::user("old"),
        ] {
            assert_eq!(h.profile_of(&k).unwrap().id, p.id);
        }
        assert_eq!(p.state.event_count, expect.len() as u64);
        let got: Vec<String> = h
            .store
            .profile_events(p.id, None, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.event.message_id)
            .collect();
        assert_eq!(got, expect, "every event once, in event-time order");
        // Paging continues after the last (time, seq) seen.
        let first = h.store.profile_events(p.id, None, 3).unwrap();
        let last = first.last().unwrap();
        let rest = h
            .store
            .profile_events(p.id, Some((last.event.timestamp, last.seq)), 100)
            .unwrap();
        assert_eq!(first.len() + rest.len(), expect.len());
        assert_eq!(rest[0].event.message_id, expect[3]);
    };
    check(&h);
    h.close();
    let h = Harness::open(dir.path());
    check(&h);
    // A late event replays the whole merged history from the chains.
    h.send(vec![ev(EventKind::Track, "late", Some("new"), None, 100)]);
    let p = h.profile_of(&IdKey::user("new")).unwrap();
    assert_eq!(p.state.event_count, expect.len() as u64 + 1);
    h.close();
}

#[test]
fn regression_a_data_directory_of_the_per_event_key_format_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db
            .keyspace("by_profile", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        ks.insert([1u8; 24], []).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = kairos_store::Store::open(dir.path(), &Default::default())
        .err()
        .expect("an old data directory must not open");
    assert!(
        matches!(err, kairos_store::StoreError::Format(_)),
        "got {err}"
    );
    assert!(err.to_string().contains("earlier Kairos"), "got {err}");
}

#[test]
fn regression_shared_device_keeps_two_known_users_apart() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    h.send(vec![identify(
        "m1",
        Some("u1"),
        Some("device"),
        1_000,
        json!({}),
    )]);
    h.send(vec![identify(
        "m2",
        Some("u2"),
        Some("device"),
        2_000,
        json!({}),
    )]);
    let p1 = h.profile_of(&IdKey::user("u1")).unwrap();
    let p2 = h.profile_of(&IdKey::user("u2")).unwrap();
    assert_ne!(p1.id, p2.id);
    assert_eq!(h.profile_of(&IdKey::anonymous("device")).unwrap().id, p1.id);
    h.close();
}

#[test]
fn erasure_leaves_no_byte_naming_the_person_and_suppresses_late_events() {
    let dir = tempfile::tempdir().unwrap();
    let opts = kairos_store::StoreOptions {
        compression: false,
        ..Default::default()
    };
    let h = Harness::open_with(dir.path(), &opts);
    h.send(vec![
        identify(
            "m1",
            Some("secret-user-77"),
            Some("secret-anon-77"),
            1_000,
            json!({"email": "secret77@example.org"}),
        ),
        track(
            "m2",
            "Order Completed",
            Some("secret-user-77"),
            None,
            2_000,
            json!({"revenue": 9}),
        ),
        ev(EventKind::Track, "m3", Some("someone-else"), None, 3_000),
    ]);
    // A rejected event naming the person lands in the dead-letter area.
    let (tx, rx) = tokio::sync::oneshot::channel();
    h.ingest
        .submit(kairos_store::Submission {
            events: vec![],
            rejected: vec![kairos_core::segment::Rejected {
                index: 0,
                message_id: None,
                error: kairos_core::segment::FieldError::new(
                    "event",
                    "is required for a track call",
                ),
                raw: r#"{"type":"track","userId":"secret-user-77"}"#.into(),
            }],
            received_at: 0,
            source: "t".into(),
            reply: Some(tx),
        })
        .unwrap();
    rx.blocking_recv().unwrap().unwrap();
    let id = h.profile_of(&IdKey::user("secret-user-77")).unwrap().id;
    let erased = h
        .ingest
        .erase(id, true, 5_000)
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (erased.events, erased.identifiers, erased.dead_letters),
        (2, 3, 1)
    );
    let needles = ["secret-user-77", "secret-anon-77", "secret77@example.org"];
    let mut hits = Vec::new();
    h.store
        .scan_all(|k, v| {
            for n in needles {
                let n = n.as_bytes();
                if k.windows(n.len()).any(|w| w == n) || v.windows(n.len()).any(|w| w == n) {
                    hits.push(String::from_utf8_lossy(n).to_string());
                }
            }
        })
        .unwrap();
    assert!(hits.is_empty(), "still stored: {hits:?}");
    // The other person's event shared the erased ones' chunk and is still there.
    let other = h.profile_of(&IdKey::user("someone-else")).unwrap();
    let kept = h.store.profile_events(other.id, None, 10).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].event.message_id, "m3");
    assert_eq!(h.store.log_after(0, 100).unwrap().len(), 1);
    // Late event for the erased person is dropped, others still flow.
    let out = h.send(vec![
        ev(
            EventKind::Track,
            "late",
            Some("secret-user-77"),
            None,
            6_000,
        ),
        ev(EventKind::Track, "m4", Some("someone-else"), None, 6_000),
    ]);
    assert_eq!((out.accepted, out.suppressed), (1, 1));
    h.close();
    // Nothing in the files on disk either (compression is off so a substring would show).
    let mut on_disk = Vec::new();
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                on_disk.push(format!("{} in {}", n, entry.display()));
            }
        }
    }
    assert!(on_disk.is_empty(), "found on disk: {on_disk:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A small population whose identities only join through their own ids, identify, alias
/// and email: the replay-determinism property must hold for any arrival order.
fn population(seed: u64) -> Vec<kairos_core::Event> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("m{n}")
    };
    for p in 0..6 {
        let user = format!("user{p}");
        let anon = format!("anon{p}");
        let anon2 = format!("anon{p}b");
        let base = 1_000_000 + p as i64 * 10_000;
        use rand::Rng;
        for k in 0..rng.random_range(1..6) {
            let name = [
                "Product Viewed",
                "Added to Cart",
                "Order Completed",
                "Email Opened",
            ][k % 4];
            out.push(track(
                &id(),
                name,
                None,
                Some(&anon),
                base + k as i64 * 60_000,
                json!({"product_id": format!("p{}", k % 3), "revenue": 3.5, "price": 2}),
            ));
        }
        out.push(identify(
            &id(),
            Some(&user),
            Some(&anon),
            base + 500_000,
            json!({"email": format!("P{p}@x.io"), "plan": if p % 2 == 0 {"pro"} else {"free"}}),
        ));
        out.push(identify(
            &id(),
            None,
            Some(&anon2),
            base + 700_000,
            json!({"email": format!("p{p}@x.io ")}),
        ));
        out.push(track(
            &id(),
            "Removed from Cart",
            Some(&user),
            None,
            base + 800_000,
            json!({"product_id": "p1"}),
        ));
        if p % 3 == 0 {
            out.push(alias(&id(), &user, &format!("legacy{p}"), base + 900_000));
            out.push(ev(
                EventKind::Page,
                &id(),
                Some(&format!("legacy{p}")),
                None,
                base + 100,
            ));
        }
        out.push(identify(
            &id(),
            Some(&user),
            None,
            base + 400_000,
            json!({"plan": "trial", "timezone": "Europe/Berlin"}),
        ));
    }
    out
}

fn ingest_all(events: &[kairos_core::Event], batch: usize) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    for chunk in events.chunks(batch.max(1)) {
        h.send(chunk.to_vec());
    }
    let all = h.all_profiles();
    h.close();
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn replay_is_deterministic_under_shuffles_and_batch_sizes(seed in 0u64..1000, shuffle in 0u64..1000, batch in 1usize..20) {
        let events = population(seed);
        let mut sorted = events.clone();
        sorted.sort_by_key(|e| e.order_key());
        let expected = ingest_all(&sorted, 1000);
        let mut shuffled = events.clone();
        shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(shuffle));
        let got = ingest_all(&shuffled, batch);
        prop_assert_eq!(expected.len(), 6, "one profile per person");
        let differing: Vec<String> = expected
            .iter()
            .zip(got.iter().chain(std::iter::repeat(&serde_json::Value::Null)))
            .filter(|(e, g)| e != g)
            .map(|(e, g)| format!("expected {}\n     got {}", e, g))
            .collect();
        prop_assert!(got.len() == expected.len() && differing.is_empty(), "{} vs {} profiles; first difference:\n{}", got.len(), expected.len(), differing.first().map(|s| &s[..s.len().min(3000)]).unwrap_or(""));
    }
}

#[test]
fn duplicates_are_found_before_during_and_after_recent_message_ids_move_to_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let writer = || kairos_store::WriterOptions {
        dedupe_ingest_after: 250,
        ..kairos_store::WriterOptions::default()
    };
    let opts = kairos_store::StoreOptions::default();
    let h = Harness::open_full(dir.path(), &opts, writer());
    let events = numbered_tracks(1_000, 50);
    // Sent in groups of 100: the recent ones move to the index four times.
    for chunk in events.chunks(100) {
        assert_eq!(h.send(chunk.to_vec()).accepted, 100);
        let out = h.send(chunk.to_vec());
        assert_eq!((out.accepted, out.duplicates), (0, 100));
    }
    h.close();
    // After a restart, both the moved ones and the recent ones left in group records.
    let h = Harness::open_full(dir.path(), &opts, writer());
    for (i, chunk) in events.chunks(100).enumerate() {
        let out = h.send(chunk.to_vec());
        assert_eq!((out.accepted, out.duplicates), (0, 100), "chunk {i}");
    }
    // Erasing a person forgets their messageIds, moved or recent: the same events are
    // accepted again (no suppression kept).
    let u7 = h.profile_of(&IdKey::user("u7")).unwrap();
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e.user_id.as_deref() == Some("u7"))
        .cloned()
        .collect();
    assert_eq!(mine.len(), 20);
    h.ingest
        .erase(u7.id, false, 10_000)
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap()
        .unwrap();
    let out = h.send(mine.clone());
    assert_eq!((out.accepted, out.duplicates), (20, 0));
    h.close();
    let h = Harness::open_full(dir.path(), &opts, writer());
    let out = h.send(mine);
    assert_eq!((out.accepted, out.duplicates), (0, 20));
    h.close();
}

#[test]
fn dedupe_keys_expire_after_the_retention_window() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    let day = 86_400_000i64;
    let mut old = ev(EventKind::Track, "old-id", Some("u1"), None, 1_000);
    old.received_at = 100 * day;
    let mut recent = ev(EventKind::Track, "recent-id", Some("u1"), None, 1_000);
    recent.received_at = 125 * day;
    h.send(vec![old.clone(), recent.clone()]);
    // 30-day retention at day 140: the day-100 key goes, the day-125 key stays.
    let pruned = h.ingest.prune_dedupe(140 * day, 30).unwrap();
    assert_eq!(pruned.blocking_recv().unwrap().unwrap(), 1);
    let out = h.send(vec![old, recent]);
    assert_eq!((out.accepted, out.duplicates), (1, 1));
    h.close();
}

#[test]
fn configured_traits_identify_people() {
    let dir = tempfile::tempdir().unwrap();
    let store = kairos_store::Store::open(dir.path(), &Default::default()).unwrap();
    let opts = kairos_store::WriterOptions {
        core: kairos_core::CoreConfig {
            identity_traits: vec!["phone".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let (ingest, handle) = kairos_store::Ingestor::start(store.clone(), opts).unwrap();
    let h = Harness {
        store,
        ingest,
        handle: Some(handle),
    };
    h.send(vec![identify(
        "m1",
        Some("crm-7"),
        None,
        1_000,
        json!({"phone": "+4930123"}),
    )]);
    // A later anonymous identify from another device with the same phone joins the person.
    h.send(vec![identify(
        "m2",
        None,
        Some("tablet"),
        2_000,
        json!({"phone": "+4930123"}),
    )]);
    let p = h.profile_of(&IdKey::anonymous("tablet")).unwrap();
    assert_eq!(p.user_ids(), vec!["crm-7".to_string()]);
    h.close();
}

#[test]
fn the_log_read_without_context_holds_everything_else_of_each_event() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(dir.path());
    let mut viewed = track(
        "v1",
        "Product Viewed",
        Some("u1"),
        None,
        10,
        json!({"product_id": "p1", "price": 12.5, "tags": ["a", "b"]}),
    );
    viewed.context = json!({"library": {"name": "analytics-python"}, "ip": "10.0.0.1"})
        .as_object()
        .cloned()
        .unwrap();
    viewed.traits = json!({"plan": "pro"}).as_object().cloned().unwrap();
    let page = ev(EventKind::Page, "pg", None, Some("a1"), 11);
    h.send(vec![viewed, page]);
    let full = h.store.log_after(0, 10).unwrap();
    let lean = h
        .store
        .log_after_where(0, 10, kairos_store::EventParts::WithoutContext, &|_| true)
        .unwrap();
    assert_eq!(lean.scanned, 2);
    assert_eq!(lean.events.len(), 2);
    for (f, l) in full.iter().zip(&lean.events) {
        let mut expected = f.event.clone();
        expected.context.clear();
        expected.traits.clear();
        assert_eq!((l.seq, &l.event), (f.seq, &expected));
    }
    assert!(!full[0].event.context.is_empty() && !full[0].event.traits.is_empty());
    h.close();
}

/// What an observer was told: (seq, profile, messageId), and whether each call's events
/// were already readable in the log.
struct Recorder {
    store: kairos_store::Store,
    told: std::sync::Mutex<Vec<(u64, u64, String)>>,
    unreadable: std::sync::atomic::AtomicUsize,
    calls: std::sync::atomic::AtomicUsize,
}

impl kairos_store::Observer for Recorder {
    fn durable(&self, events: &[kairos_store::Accepted<'_>]) {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls.fetch_add(1, Relaxed);
        let first = events[0].seq;
        let page = self
            .store
            .log_after_where(
                first - 1,
                events.len(),
                kairos_store::EventParts::All,
                &|_| true,
            )
            .unwrap();
        let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
        let told: Vec<u64> = events.iter().map(|a| a.seq).collect();
        if seqs != told {
            self.unreadable.fetch_add(1, Relaxed);
        }
        let mut list = self.told.lock().unwrap();
        for a in events {
            list.push((a.seq, a.profile.0, a.event.message_id.clone()));
        }
    }
}

/// The recommendations follow the log through the observer instead of reading it back:
/// it must be told of every accepted event once it is in the log, in seq order with no
/// seq left out within a group, with the profile it was folded into (the merged one for
/// the event that merged), and of nothing a duplicate or a suppression dropped.
#[test]
fn the_observer_is_told_of_each_accepted_event_in_the_log_with_its_seq_and_profile() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (h, recorder) = Harness::open_observed(dir.path(), |store| {
        std::sync::Arc::new(Recorder {
            store,
            told: Default::default(),
            unreadable: Default::default(),
            calls: Default::default(),
        })
    });
    h.send(vec![
        ev(EventKind::Track, "a1", None, Some("anon"), 1_000),
        ev(EventKind::Track, "a2", None, Some("anon"), 1_001),
    ]);
    let anon = h.profile_of(&IdKey::anonymous("anon")).unwrap().id.0;
    let out = h.send(vec![
        ev(EventKind::Track, "a1", None, Some("anon"), 1_000),
        identify("i1", Some("zed"), Some("anon"), 1_002, json!({})),
        ev(EventKind::Track, "u1", Some("zed"), None, 1_003),
    ]);
    assert_eq!((out.accepted, out.duplicates), (2, 1));
    let zed = h.profile_of(&IdKey::user("zed")).unwrap().id.0;
    assert_ne!(anon, zed);
    // Nothing accepted: nothing told.
    h.send(vec![ev(EventKind::Track, "u1", Some("zed"), None, 1_003)]);
    h.close();
    let told = recorder.told.lock().unwrap().clone();
    assert_eq!(
        told,
        vec![
            (1, anon, "a1".to_string()),
            (2, anon, "a2".to_string()),
            (3, zed, "i1".to_string()),
            (4, zed, "u1".to_string()),
        ]
    );
    assert_eq!(recorder.calls.load(Relaxed), 2);
    assert_eq!(recorder.unreadable.load(Relaxed), 0);
}

/// Takes its time over the first group it is told of, then checks that nothing after
/// that group is in the log yet.
struct SlowObserver {
    store: kairos_store::Store,
    told: std::sync::Mutex<Vec<String>>,
    /// Calls that found a later group already committed.
    overtaken: std::sync::atomic::AtomicUsize,
}

impl kairos_store::Observer for SlowObserver {
    fn durable(&self, events: &[kairos_store::Accepted<'_>]) {
        let first_call = self.told.lock().unwrap().is_empty();
        if first_call {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let last = events.last().unwrap().seq;
        let later = self
            .store
            .log_after_where(last, 10, kairos_store::EventParts::All, &|_| true)
            .unwrap();
        if !later.events.is_empty() {
            self.overtaken
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut told = self.told.lock().unwrap();
        told.extend(events.iter().map(|a| a.event.message_id.clone()));
    }
}

/// The writer plans the next group as soon as one is committed, while the committer still
/// tells the observer of it; the next group must still not be committed before the
/// observer returns. Otherwise a group could reach the recommendations after a later
/// erasure was answered (they drop the erased person's history then) and bring the
/// person back.
#[test]
fn the_next_group_is_not_committed_before_the_observer_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (h, observer) = Harness::open_observed(dir.path(), |store| {
        std::sync::Arc::new(SlowObserver {
            store,
            told: Default::default(),
            overtaken: Default::default(),
        })
    });
    // Each is acknowledged before the observer hears of it: the second is planned and
    // handed over while the observer takes its time over the first.
    h.send(vec![ev(EventKind::Track, "e1", Some("eve"), None, 1_000)]);
    h.send(vec![ev(EventKind::Track, "e2", Some("eve"), None, 1_001)]);
    h.close();
    assert_eq!(
        *observer.told.lock().unwrap(),
        vec!["e1".to_string(), "e2".to_string()]
    );
    assert_eq!(
        observer
            .overtaken
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
