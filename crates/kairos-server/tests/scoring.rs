//! Scores and segments through the HTTP API: definitions checked when saved, read after
//! write, explanations, timers that end memberships with no new event, change streams,
//! primary segments, backfills of new segments, and erasure of everything derived.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use serde_json::{json, Value};

const MIN: i64 = 60_000;

fn track(user: &str, event: &str, id: &str, props: Value) -> Value {
    // The test clock starts at 2026-11-22T12:00:00Z.
    json!({"type": "track", "userId": user, "event": event, "messageId": id,
           "properties": props, "timestamp": "2026-11-22T12:00:00Z"})
}

#[tokio::test]
async fn definitions_are_checked_when_saved() {
    let s = TestServer::start().await;
    let (status, body) = s
        .admin_put(
            "/v1/segments/broken",
            json!({"rule": "count(\"Product Viewed\", within: 24h) >=", "priority": 1}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_definition");
    assert_eq!(body["error"]["field"], "segments.broken.rule");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("segments.broken.rule: 1:"), "{msg}");
    assert!(msg.contains("expected"), "{msg}");

    let (status, body) = s
        .admin_put(
            "/v1/scores/fit",
            json!({"rules": ["when traits.plan == \"pro\" then +10", "when last_seen < \"15m\" then +1"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "scores.fit.rules[1]");

    let (status, body) = s
        .admin_put("/v1/segments/x", json!({"rule": "score.nope > 3"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));

    // Unknown event names are accepted with a warning.
    s.post("/v1/track", track("u1", "Order Completed", "m1", json!({})))
        .await;
    let (status, body) = s
        .admin_put(
            "/v1/segments/typo",
            json!({"rule": "did(\"Order Complete\", within: 1d)", "priority": 9}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["warnings"].as_array().unwrap().len(), 1, "{body}");

    // Not a definition at all.
    let (status, body) = s
        .admin_put(
            "/v1/segments/x",
            json!({"rule": "orders > 1", "colour": "red"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body");
    s.stop().await;
}

#[tokio::test]
async fn scores_are_current_when_the_ingest_is_acknowledged() {
    let s = TestServer::start().await;
    let (status, _) = s
        .post(
            "/v1/batch",
            json!({"batch": [
                track("ada", "Email Opened", "o1", json!({})),
                track("ada", "Email Opened", "o2", json!({})),
                track("ada", "Email Clicked", "c1", json!({})),
                track("ada", "Added to Cart", "a1", json!({"product_id": "p1", "price": 30})),
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, ex) = s.admin_get("/v1/profiles/ada/scores/engagement").await;
    assert_eq!(status, 200, "{ex}");
    // 2 opens x 5 + click 10 + cart 5.
    assert_eq!(ex["value"], 25.0, "{ex}");
    assert_eq!(ex["tier"], "cold");
    let top = &ex["contributions"][0];
    assert_eq!(top["contribution"], 10.0);
    assert_eq!(ex["trend"]["1d"], 0.0);
    let (_, all) = s.admin_get("/v1/profiles/ada/scores").await;
    assert_eq!(all["scores"]["purchase_intent"]["value"], 10.0, "{all}");
    // Memberships show on the profile itself.
    let (_, p) = s.admin_get("/v1/profiles/ada").await;
    let segs: Vec<&str> = p["derived"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(segs.contains(&"active_shoppers"), "{p}");
    assert!(segs.contains(&"engaged"), "{p}");
    assert_eq!(p["derived"]["primary_segment"], "active_shoppers");
    // The timeline of derived changes, oldest first.
    let timeline = all["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .any(|c| c["type"] == "enter" && c["segment"] == "engaged"),
        "{all}"
    );
    let (status, _) = s.admin_get("/v1/profiles/ada/scores/nope").await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test]
async fn activity_segments_end_by_timer_without_a_new_event() {
    let s = TestServer::start().await;
    s.post("/v1/track", track("bob", "Product Viewed", "v1", json!({})))
        .await;
    let (_, seg) = s.admin_get("/v1/segments").await;
    let size = |name: &str| {
        seg["segments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .map(|x| x["size"].clone())
    };
    assert_eq!(size("active_shoppers"), Some(json!(1)), "{seg}");
    assert_eq!(size("recent_viewers"), Some(json!(1)), "{seg}");
    let (_, p) = s.admin_get("/v1/profiles/bob").await;
    assert_eq!(p["derived"]["primary_segment"], "recent_viewers");

    // Ten minutes later the viewer window closes; fifteen, the activity one.
    s.advance(10 * MIN);
    s.wait_for("/v1/segments/recent_viewers/changes", 5, |b| {
        b["changes"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    let (_, p) = s.admin_get("/v1/profiles/bob").await;
    assert_eq!(p["derived"]["primary_segment"], "active_shoppers");
    s.advance(5 * MIN);
    let changes = s
        .wait_for("/v1/segments/active_shoppers/changes", 5, |b| {
            b["changes"].as_array().is_some_and(|c| c.len() == 2)
        })
        .await;
    let list = changes["changes"].as_array().unwrap();
    assert_eq!(list[0]["type"], "enter");
    assert_eq!(list[0]["reason"], "event: Product Viewed");
    assert_eq!(list[1]["type"], "exit");
    assert_eq!(list[1]["reason"], "time passed");
    assert_eq!(list[1]["at"], "2026-11-22T12:15:00.000Z");
    assert_eq!(list[1]["profile"], p["id"]);
    // The cursor continues after the last change.
    let next = changes["next"].as_u64().unwrap();
    let (_, rest) = s
        .admin_get(&format!(
            "/v1/segments/active_shoppers/changes?since={next}"
        ))
        .await;
    assert_eq!(rest["changes"], json!([]));
    let (_, members) = s.admin_get("/v1/segments/active_shoppers/members").await;
    assert_eq!(members["members"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn a_new_segment_is_backfilled_over_existing_profiles() {
    let s = TestServer::start().await;
    let mut batch = Vec::new();
    for i in 0..120 {
        let event = if i % 3 == 0 {
            "Order Completed"
        } else {
            "Product Viewed"
        };
        batch.push(track(
            &format!("u{i}"),
            event,
            &format!("m{i}"),
            json!({"revenue": i}),
        ));
    }
    let (status, _) = s.post("/v1/batch", json!({ "batch": batch })).await;
    assert_eq!(status, 200);
    let (status, body) = s
        .admin_put(
            "/v1/segments/buyers",
            json!({"rule": "orders >= 1 and lifetime_revenue >= 30", "priority": 0,
                   "description": "bought for 30 or more"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.wait_for("/v1/backfill", 10, |b| b["backfill"]["finished"] == true)
        .await;
    // Orders for i in 30, 33, ..., 117: 30 people.
    let (_, seg) = s.admin_get("/v1/segments/buyers").await;
    assert_eq!(seg["size"], 30, "{seg}");
    let (_, page) = s.admin_get("/v1/segments/buyers/members?limit=20").await;
    assert_eq!(page["members"].as_array().unwrap().len(), 20);
    let next = page["next"].as_str().unwrap();
    let (_, page2) = s
        .admin_get(&format!(
            "/v1/segments/buyers/members?limit=20&after={next}"
        ))
        .await;
    assert_eq!(page2["members"].as_array().unwrap().len(), 10);
    assert_eq!(page2["next"], Value::Null);
    let (_, p) = s.admin_get("/v1/profiles/u33").await;
    assert_eq!(p["derived"]["primary_segment"], "buyers", "{p}");
    let (_, changes) = s.admin_get("/v1/segments/buyers/changes").await;
    assert_eq!(
        changes["changes"][0]["reason"],
        "replay: definitions changed"
    );

    // Removing it ends every membership.
    let (status, _) = s
        .admin_send(reqwest::Method::DELETE, "/v1/segments/buyers", None)
        .await;
    assert_eq!(status, 200);
    s.wait_for("/v1/backfill", 10, |b| b["backfill"]["finished"] == true)
        .await;
    let (status, _) = s.admin_get("/v1/segments/buyers").await;
    assert_eq!(status, 404);
    let (_, p) = s.admin_get("/v1/profiles/u33").await;
    assert_ne!(p["derived"]["primary_segment"], "buyers", "{p}");
    s.stop().await;
}

#[tokio::test]
async fn erasure_removes_memberships_and_changes() {
    let s = TestServer::start().await;
    s.post("/v1/track", track("eve", "Product Viewed", "e1", json!({})))
        .await;
    let (_, p) = s.admin_get("/v1/profiles/eve").await;
    let id = p["id"].as_str().unwrap().to_string();
    let (status, _) = s
        .admin_send(reqwest::Method::DELETE, &format!("/v1/profiles/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let (_, members) = s.admin_get("/v1/segments/recent_viewers/members").await;
    assert_eq!(members["members"], json!([]));
    let (_, changes) = s.admin_get("/v1/segments/recent_viewers/changes").await;
    assert_eq!(changes["changes"], json!([]));
    // And no timer is left to wake the erased profile.
    assert_eq!(s.state.store.next_timer().unwrap(), None);
    s.stop().await;
}
