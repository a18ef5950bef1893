#![allow(clippy::unwrap_used)]
//! Send-time optimization over HTTP: a person with a habit gets their own hour, a newcomer
//! gets the population's, machine opens teach nothing, and bad input gets a clear error.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::json;

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_moment_is_the_persons_own_hour_or_the_populations() {
    let s = TestServer::start().await;
    let now = s.now.load(std::sync::atomic::Ordering::SeqCst); // Sunday 2026-11-22 12:00Z
    let ts = kairos_core::time::format_timestamp;
    let mut batch = Vec::new();
    // 60 people who read email around 08:00 UTC on weekdays.
    for i in 0..60 {
        for d in 1..20 {
            let t = now - d * DAY - 4 * HOUR + (i % 7) * 60_000; // 08:0x UTC
            batch.push(
                json!({"type": "track", "userId": format!("p{i}"), "event": "Email Opened",
                "properties": {"message_id": format!("m{i}-{d}")}, "timestamp": ts(t)}),
            );
        }
    }
    // Ada in Tokyo clicks at 21:00 local, for weeks; and her mail client pre-fetches every
    // email at delivery (machine opens at 03:00 local), which must not count.
    for d in 1..30 {
        let deliver = now - d * DAY - 6 * HOUR; // 06:00Z = 15:00 Tokyo
        let mid = format!("ada-{d}");
        batch.push(
            json!({"type": "track", "userId": "ada", "event": "Email Delivered",
            "properties": {"message_id": mid}, "timestamp": ts(deliver),
            "context": {"timezone": "Asia/Tokyo"}}),
        );
        batch.push(
            json!({"type": "track", "userId": "ada", "event": "Email Opened",
            "properties": {"message_id": mid}, "timestamp": ts(deliver + 4_000),
            "context": {"timezone": "Asia/Tokyo"}}),
        );
        batch.push(
            json!({"type": "track", "userId": "ada", "event": "Email Clicked",
            "properties": {"message_id": mid}, "timestamp": ts(now - d * DAY), // 12:00Z = 21:00 Tokyo
            "context": {"timezone": "Asia/Tokyo"}}),
        );
    }
    batch.push(json!({"type": "identify", "userId": "ada", "traits": {"timezone": "Asia/Tokyo"}, "timestamp": ts(now - 40 * DAY)}));
    batch.push(json!({"type": "track", "userId": "newbie", "event": "Product Viewed", "timestamp": ts(now - HOUR)}));
    for chunk in batch.chunks(400) {
        let (st, b) = s.post("/v1/batch", json!({"batch": chunk})).await;
        assert_eq!(st, 200, "{b}");
        assert!(b["rejected"].as_array().unwrap().is_empty(), "{b}");
    }
    let (st, p) = s
        .admin_send(Method::POST, "/v1/send-time/priors", None)
        .await;
    assert_eq!(st, 200, "{p}");
    assert!(p["people"].as_u64().unwrap() >= 60);
    assert_eq!(
        p["population_top_hours"][0]["local_hour_of_week"]
            .as_u64()
            .unwrap()
            % 24,
        8,
        "{p}"
    );

    let (st, a) = s.admin_get("/v1/profiles/ada/send-time?within=48h").await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["time_zone"], "Asia/Tokyo");
    assert!(
        a["best"]["local"].as_str().unwrap().ends_with("21:00"),
        "{a}"
    );
    assert!(
        a["explanation"]["personal_share"].as_f64().unwrap() > 0.6,
        "{a}"
    );
    assert!(
        a["explanation"]["machine_opens_ignored"].as_u64().unwrap() >= 29,
        "{a}"
    );
    assert_eq!(a["explanation"]["human_opens"], 0);
    let best = kairos_core::time::parse_timestamp(a["best"]["at"].as_str().unwrap()).unwrap();
    assert!(best >= now && best < now + 48 * HOUR);
    assert!(a["runner_up"]["at"].is_string());

    let (_, n) = s.admin_get("/v1/profiles/newbie/send-time").await;
    assert_eq!(n["time_zone"], "UTC");
    assert!(
        n["best"]["local"].as_str().unwrap().ends_with("08:00"),
        "the population's hour: {n}"
    );
    assert!(
        n["explanation"]["personal_share"].as_f64().unwrap() < 0.1,
        "{n}"
    );
    assert!(n["explanation"]["prior"]
        .as_str()
        .unwrap()
        .contains("population"));

    // The micro-audience receptive now (12:00Z = 21:00 in Tokyo): Ada, not the morning
    // readers, whose hour was four hours ago.
    let (st, r) = s.admin_get("/v1/send-time/receptive?min_lift=3").await;
    assert_eq!(st, 200, "{r}");
    let ids: Vec<String> = r["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    let (_, ada) = s.admin_get("/v1/profiles/ada").await;
    assert_eq!(ids, vec![ada["id"].as_str().unwrap().to_string()], "{r}");
    assert!(r["people"][0]["local"].as_str().unwrap().ends_with("21:00"));
    let (st, b) = s.admin_get("/v1/send-time/receptive?segment=nope").await;
    assert_eq!(st, 404, "{b}");
    let (st, b) = s.admin_get("/v1/send-time/receptive?min_lift=0").await;
    assert_eq!((st, b["error"]["field"].clone()), (400, json!("min_lift")));

    let (st, b) = s.admin_get("/v1/profiles/ada/send-time?within=90d").await;
    assert_eq!(st, 400);
    assert_eq!(b["error"]["field"], "within");
    let (st, _) = s.admin_get("/v1/profiles/nobody/send-time").await;
    assert_eq!(st, 404);
    s.stop().await;
}
