#![allow(clippy::unwrap_used)]

use kairos_sim::model::{HOUR, MINUTE};
use kairos_sim::{SimConfig, Simulation};
use std::collections::{HashMap, HashSet};

fn sim(people: usize, days: u32, seed: u64) -> Simulation {
    Simulation::new(SimConfig {
        people,
        days,
        seed,
        start_ms: 1_793_491_200_000, // 2026-11-01T00:00:00Z
    })
}

#[test]
fn same_seed_same_stream_other_seed_other_stream() {
    let a: Vec<String> = sim(100, 5, 1)
        .events()
        .map(|e| e.value.to_string())
        .collect();
    let b: Vec<String> = sim(100, 5, 1)
        .events()
        .map(|e| e.value.to_string())
        .collect();
    let c: Vec<String> = sim(100, 5, 2)
        .events()
        .map(|e| e.value.to_string())
        .collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn every_event_is_valid_segment_in_time_order() {
    let s = sim(300, 10, 3);
    let mut ids = HashSet::new();
    let mut last = i64::MIN;
    let mut n = 0;
    for e in s.events() {
        n += 1;
        let v = &e.value;
        assert!(
            ids.insert(v["messageId"].as_str().unwrap().to_string()),
            "duplicate messageId"
        );
        assert!(e.ts >= last, "stream must be in timestamp order");
        last = e.ts;
        let ts: jiff::Timestamp = v["timestamp"].as_str().unwrap().parse().unwrap();
        assert_eq!(ts.as_millisecond(), e.ts);
        assert!(v["userId"].is_string() || v["anonymousId"].is_string());
        match v["type"].as_str().unwrap() {
            "track" => assert!(!v["event"].as_str().unwrap().is_empty()),
            "identify" => assert!(v["traits"]["email"].is_string()),
            "page" => {}
            other => panic!("unexpected type {other}"),
        }
    }
    // Volume: roughly 30-150 events per person per 30 days.
    let per_person_30d = n as f64 / 300.0 * 3.0;
    assert!(
        (30.0..=150.0).contains(&per_person_30d),
        "{per_person_30d} events per person per 30 days"
    );
}

#[test]
fn likely_buyers_buy_more() {
    let s = sim(2000, 20, 4);
    let mut orders: HashMap<String, u32> = HashMap::new();
    for e in s.events() {
        if e.value["event"] == "Order Completed" {
            *orders
                .entry(e.value["anonymousId"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let mut people = s.people.clone();
    people.sort_by(|a, b| a.intent.total_cmp(&b.intent));
    let q = people.len() / 5;
    let mean = |ps: &[kairos_sim::PersonTruth]| {
        ps.iter()
            .map(|p| *orders.get(&p.anonymous_id).unwrap_or(&0) as f64)
            .sum::<f64>()
            / ps.len() as f64
    };
    let (low, high) = (mean(&people[..q]), mean(&people[people.len() - q..]));
    assert!(
        high > 4.0 * low.max(0.01),
        "top intent quintile {high} vs bottom {low} orders per person"
    );
}

#[test]
fn human_opens_cluster_near_preferred_hours_and_machine_opens_are_instant() {
    let s = sim(1500, 20, 5);
    let by_anon: HashMap<&str, &kairos_sim::PersonTruth> = s
        .people
        .iter()
        .map(|p| (p.anonymous_id.as_str(), p))
        .collect();
    let mut delivered: HashMap<String, i64> = HashMap::new();
    let (mut near, mut human, mut machine_fast, mut machine) = (0, 0, 0, 0);
    for e in s.events() {
        let v = &e.value;
        let msg = v["properties"]["message_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match v["event"].as_str() {
            Some("Email Delivered") => {
                delivered.insert(msg, e.ts);
            }
            Some("Email Opened") if e.machine_open => {
                machine += 1;
                if e.ts - delivered[&msg] <= 10_000 {
                    machine_fast += 1;
                }
            }
            Some("Email Opened") => {
                human += 1;
                let p = by_anon[v["anonymousId"].as_str().unwrap()];
                let h = s.local_hour(p, e.ts) as i32;
                if p.preferred_hours.iter().any(|ph| {
                    let d = (h - *ph as i32).rem_euclid(24);
                    d.min(24 - d) <= 1
                }) {
                    near += 1;
                }
            }
            _ => {}
        }
    }
    assert!(
        human > 500 && machine > 50,
        "{human} human, {machine} machine opens"
    );
    assert_eq!(machine_fast, machine, "machine opens come within seconds");
    // A preferred hour +-1 covers at most 6/24 of the day for two peaks; opens land there
    // far more often than chance.
    assert!(
        near as f64 / human as f64 > 0.8,
        "{near}/{human} opens near preferred hours"
    );
    let _ = (HOUR, MINUTE);
}

#[tokio::test]
async fn sender_authenticates_compresses_batches_and_retries_429() {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(HeaderMap, usize)>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen2, calls2) = (seen.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/v1/batch",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (seen, calls) = (seen2.clone(), calls2.clone());
            async move {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "0")],
                        String::new(),
                    );
                }
                let mut text = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut text)
                    .unwrap();
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let n = v["batch"].as_array().unwrap().len();
                seen.lock().unwrap().push((headers, n));
                (
                    StatusCode::OK,
                    [("retry-after", "0")],
                    serde_json::json!({"success": true, "accepted": n, "rejected": []}).to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let summary = kairos_sim::run(kairos_sim::SimulateArgs {
        target: Some(base),
        write_key: "wk_sim".into(),
        people: 20,
        days: 3,
        speed: 0.0,
        seed: 9,
        out: None,
        truth: None,
        catalog: None,
        batch_size: 25,
        concurrency: 2,
        gzip: true,
        start: None,
    })
    .await
    .unwrap();
    assert_eq!(
        summary.accepted, summary.events,
        "everything accepted after the 429 retry"
    );
    let seen = seen.lock().unwrap();
    assert!(seen.iter().all(|(_, n)| *n <= 25));
    let (h, _) = &seen[0];
    assert_eq!(h["content-encoding"], "gzip");
    // "wk_sim:" in base64
    assert_eq!(h["authorization"], "Basic d2tfc2ltOg==");
}

/// Found with campaigns: a simulated last day ran past the moment `simulate` started, so
/// events arrived from the future and decisions were made at instants not yet reached.
#[tokio::test]
async fn regression_an_as_fast_as_possible_history_has_no_event_after_now() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let started = jiff::Timestamp::now().as_millisecond();
    kairos_sim::run(kairos_sim::SimulateArgs {
        target: None,
        write_key: String::new(),
        people: 200,
        days: 3,
        speed: 0.0,
        seed: 5,
        out: Some(out.clone()),
        truth: None,
        catalog: None,
        batch_size: 100,
        concurrency: 1,
        gzip: false,
        start: None,
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let latest = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            ms(v["timestamp"].as_str().unwrap())
        })
        .max()
        .unwrap();
    assert!(
        latest <= started + 60_000,
        "an event {} ms after the start",
        latest - started
    );
}

fn file_args(out: &std::path::Path, start: Option<&str>) -> kairos_sim::SimulateArgs {
    kairos_sim::SimulateArgs {
        target: None,
        write_key: String::new(),
        people: 100,
        days: 3,
        speed: 0.0,
        seed: 5,
        out: Some(out.to_path_buf()),
        truth: None,
        catalog: None,
        batch_size: 100,
        concurrency: 1,
        gzip: false,
        start: start.map(|s| s.parse().unwrap()),
    }
}

#[tokio::test]
async fn a_fixed_start_gives_the_same_events_whenever_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let start = "2026-11-02T00:00:00Z";
    kairos_sim::run(file_args(&a, Some(start))).await.unwrap();
    kairos_sim::run(file_args(&b, Some(start))).await.unwrap();
    let (a, b) = (
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap(),
    );
    assert!(a.lines().count() > 100);
    // sentAt is not in the file; everything else is the same, byte for byte.
    assert_eq!(a, b);
    let from = start.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    for line in a.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["timestamp"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        // Each person's first local day begins at most a day before the start (zones
        // east of UTC); the last ends by the start plus the days.
        assert!(
            t >= from - 86_400_000 && t <= from + 3 * 86_400_000,
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_start_whose_history_would_end_after_now_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let soon = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24);
    let err = kairos_sim::run(file_args(
        &dir.path().join("x.jsonl"),
        Some(&soon.to_string()),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("--start"), "{err}");
}

#[test]
fn complements_are_bought_together() {
    let s = sim(2000, 20, 5);
    let index: HashMap<&str, usize> = s
        .catalog
        .iter()
        .enumerate()
        .map(|(i, p)| (p.product_id.as_str(), i))
        .collect();
    let (mut multi, mut with_complement) = (0, 0);
    for e in s.events() {
        if e.value["event"] != "Order Completed" {
            continue;
        }
        let lines: Vec<usize> = e.value["properties"]["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| index[l["product_id"].as_str().unwrap()])
            .collect();
        if lines.len() < 2 {
            continue;
        }
        multi += 1;
        if lines
            .iter()
            .any(|a| lines.iter().any(|b| s.catalog[*a].complements.contains(b)))
        {
            with_complement += 1;
        }
    }
    assert!(multi > 200, "{multi} orders with several products");
    let share = with_complement as f64 / multi as f64;
    assert!(
        share > 0.3,
        "{share} of multi-product orders hold a complement pair"
    );
}
