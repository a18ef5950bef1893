//! Replaying the same log gives the same scores, tiers, memberships and enter/exit records,
//! whatever the batching and however late the timer thread runs.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use kairos_core::Event;
use kairos_store::Clock;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_795_348_800_000;
const MIN: i64 = 60_000;

/// A shop log in arrival order: some events arrive up to 20 minutes late, anonymous
/// browsing is later tied to a user (merges).
fn log() -> Vec<Event> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut out = Vec::new();
    for i in 0..1500usize {
        let person = rng.random_range(0..25);
        let ts = T0 + (i as i64) * 30_000 + rng.random_range(0..30_000);
        let user = format!("u{person}");
        let anon = format!("a{person}");
        let id = format!("m{i}");
        let mut e = match rng.random_range(0..10) {
            0..=3 => track(
                &id,
                "Product Viewed",
                None,
                Some(&anon),
                ts,
                json!({"product_id": format!("p{}", rng.random_range(0..9))}),
            ),
            4 => track(
                &id,
                "Added to Cart",
                Some(&user),
                None,
                ts,
                json!({"product_id": "p1", "price": 40, "quantity": 1}),
            ),
            5 => track(
                &id,
                "Order Completed",
                Some(&user),
                None,
                ts,
                json!({"revenue": rng.random_range(10..600)}),
            ),
            6 | 7 => track(&id, "Email Opened", Some(&user), None, ts, json!({})),
            8 => track(&id, "Email Clicked", Some(&user), None, ts, json!({})),
            _ => identify(
                &id,
                Some(&user),
                Some(&anon),
                ts,
                json!({"email": format!("{user}@example.com")}),
            ),
        };
        e.received_at = ts
            + if rng.random_bool(0.2) {
                rng.random_range(0..20 * MIN)
            } else {
                0
            };
        out.push(e);
    }
    out.sort_by_key(|e| e.received_at);
    out
}

struct Run {
    h: Harness,
    now: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

fn start() -> Run {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let n = now.clone();
    let h = Harness::with_defaults(
        dir.path(),
        Clock(Arc::new(move || n.load(Ordering::SeqCst))),
    );
    Run { h, now, _dir: dir }
}

impl Run {
    /// Lets every timer due by `until` run, then reads everything derived.
    /// Moves the clock to `until` and waits until every timer due by then has run.
    fn run_timers_until(&self, until: i64) {
        self.now.store(until, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self
            .h
            .store
            .next_timer()
            .unwrap()
            .is_some_and(|(t, _)| t <= until)
        {
            assert!(std::time::Instant::now() < deadline, "timers did not drain");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self, until: i64) -> (Vec<Value>, Vec<Value>) {
        self.run_timers_until(until);
        let scoring = self.h.store.scoring();
        let mut records = Vec::new();
        let mut streams: Vec<String> = scoring
            .segments
            .iter()
            .map(|s| format!("segment:{}", s.name))
            .collect();
        streams.extend(scoring.scores.iter().map(|s| format!("tier:{}", s.name)));
        streams.push("primary".into());
        for stream in streams {
            for mut c in self.h.store.changes(&stream, 0, usize::MAX).unwrap() {
                c.as_object_mut().unwrap().remove("seq");
                records.push(c);
            }
        }
        records.sort_by_key(|c| c.to_string());
        let profiles = self
            .h
            .store
            .profiles_after(None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|p| {
                let mut v = p.view_scored(&scoring, until);
                v["state"] = serde_json::to_value(&p.state).unwrap();
                v
            })
            .collect();
        self.h.close();
        (records, profiles)
    }
}

#[test]
fn the_same_log_gives_the_same_records_whatever_the_batching_and_timer_lateness() {
    let log = log();
    let end = log.last().unwrap().received_at + 2 * 86_400_000;

    // One event per commit, the clock following the log: timers run nearly on time.
    let a = start();
    for e in &log {
        a.now.store(e.received_at, Ordering::SeqCst);
        a.h.send(vec![e.clone()]);
    }
    let a = a.finish(end);

    // Large batches, the clock standing still until the end: every timer runs late, and
    // events catch their profile's due timers up themselves.
    let b = start();
    for chunk in log.chunks(97) {
        b.h.send(chunk.to_vec());
    }
    let b = b.finish(end);

    assert!(
        a.0.len() > 100,
        "a meaningful number of records: {}",
        a.0.len()
    );
    assert!(a.0.iter().any(|c| c["reason"] == "time passed"));
    assert!(a
        .0
        .iter()
        .any(|c| c["reason"].as_str().unwrap().starts_with("replay: ")));
    assert_eq!(a.1.len(), b.1.len());
    for (x, y) in a.1.iter().zip(&b.1) {
        assert_eq!(x, y);
    }
    assert_eq!(a.0.len(), b.0.len());
    for (x, y) in a.0.iter().zip(&b.0) {
        assert_eq!(x, y);
    }
}

/// Timers that moved later keep their earlier index entry (one store key less per event);
/// that entry must fire as a no-op and the person still leave on time.
#[test]
fn regression_a_timer_pushed_later_by_new_activity_fires_at_the_new_instant_only() {
    let run = start();
    let track_at = |id: &str, t: i64| {
        let mut e = ev(kairos_core::EventKind::Track, id, Some("ada"), None, t);
        e.received_at = t;
        e
    };
    let member = |run: &Run| {
        let p = run.h.profile_of(&kairos_core::IdKey::user("ada")).unwrap();
        let member = p
            .derived
            .segments
            .iter()
            .any(|(s, _)| s == "active_shoppers");
        member
    };
    run.h.send(vec![track_at("a1", T0)]);
    assert!(member(&run));
    // Active again ten minutes later: "active in the last 15 minutes" now ends at T0 + 25m.
    run.now.store(T0 + 10 * MIN, Ordering::SeqCst);
    run.h.send(vec![track_at("a2", T0 + 10 * MIN)]);
    // Past the first instant (T0 + 15m): the entry left there fires and changes nothing.
    run.run_timers_until(T0 + 20 * MIN);
    assert!(member(&run), "still active at T0 + 20m");
    run.run_timers_until(T0 + 26 * MIN);
    assert!(!member(&run), "left at T0 + 25m with no new event");
    let (records, _) = run.finish(T0 + 26 * MIN);
    let exits: Vec<_> = records
        .iter()
        .filter(|c| c["segment"] == "active_shoppers" && c["type"] == "exit")
        .collect();
    assert_eq!(exits.len(), 1, "{records:?}");
    assert_eq!(
        exits[0]["at"],
        kairos_core::time::format_timestamp(T0 + 25 * MIN)
    );
}
