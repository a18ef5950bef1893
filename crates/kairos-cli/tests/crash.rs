#![allow(clippy::unwrap_used)]
//! Acknowledged means durable: a real server is killed with SIGKILL at random moments under
//! concurrent writers; after each restart every acknowledged messageId is in the log exactly
//! once. Seed with KAIROS_CRASH_SEED to replay a failure.

mod support;

use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

async fn writer(
    base: String,
    worker: usize,
    round: usize,
    seed: u64,
    acked: Arc<Mutex<HashSet<String>>>,
) -> (usize, usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (worker as u64) << 32 ^ round as u64);
    let mut sent_batches: Vec<serde_json::Value> = Vec::new();
    let (mut ok, mut retried) = (0, 0);
    for n in 0.. {
        // SDKs retry a batch with the same messageIds; do it now and then.
        let body = if !sent_batches.is_empty() && rng.random_bool(0.1) {
            retried += 1;
            sent_batches[rng.random_range(0..sent_batches.len())].clone()
        } else {
            let size = rng.random_range(1..=50);
            let events: Vec<_> = (0..size)
                .map(|i| {
                    json!({"type": "track", "event": "Product Viewed",
                           "userId": format!("crash-user-{}", rng.random_range(0..200)),
                           "messageId": format!("r{round}-w{worker}-b{n}-{i}"),
                           "properties": {"product_id": format!("sku-{i}")}})
                })
                .collect();
            json!({"batch": events})
        };
        let r = client
            .post(format!("{base}/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&body)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                // Only a complete 200 response counts as an acknowledgement.
                if r.bytes().await.is_err() {
                    break;
                }
                let mut a = acked.lock().unwrap();
                for e in body["batch"].as_array().unwrap() {
                    a.insert(e["messageId"].as_str().unwrap().to_string());
                }
                ok += 1;
                sent_batches.push(body);
            }
            Ok(r) if r.status() == 429 => tokio::time::sleep(Duration::from_millis(5)).await,
            Ok(r) => panic!("unexpected status {}", r.status()),
            Err(_) => break, // the server is gone
        }
    }
    (ok, retried)
}

async fn crash_loop(rounds: usize) {
    let seed: u64 = std::env::var("KAIROS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("crash loop: {rounds} rounds, KAIROS_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acked = Arc::new(Mutex::new(HashSet::new()));
    for round in 0..rounds {
        let mut server = Server::start(&data).await;
        let tasks: Vec<_> = (0..4)
            .map(|w| tokio::spawn(writer(server.base.clone(), w, round, seed, acked.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        server.kill();
        let mut batches = 0;
        for t in tasks {
            batches += t.await.unwrap().0;
        }
        // Restart on the same data and audit the log.
        let server = Server::start(&data).await;
        let logged = server.logged_message_ids().await;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &logged {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        let dupes: Vec<_> = counts
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(id, _)| *id)
            .collect();
        let acked = acked.lock().unwrap();
        let missing: Vec<_> = acked
            .iter()
            .filter(|id| !counts.contains_key(id.as_str()))
            .collect();
        println!(
            "round {round}: {batches} batches acknowledged before the kill; {} acknowledged ids in total, {} in the log",
            acked.len(),
            logged.len()
        );
        assert!(
            missing.is_empty() && dupes.is_empty(),
            "seed {seed}, round {round}: {} acknowledged ids missing (e.g. {:?}), {} duplicated (e.g. {:?})\nserver log:\n{}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            dupes.len(),
            dupes.iter().take(5).collect::<Vec<_>>(),
            server.log_tail()
        );
        drop(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_exactly_once() {
    crash_loop(20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: cargo test -p kairos-cli --test crash -- --ignored"]
async fn soak_acknowledged_events_survive_sigkill_exactly_once() {
    crash_loop(200).await;
}
