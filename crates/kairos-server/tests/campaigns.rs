//! The campaign API: definitions checked when saved, the messaging rules, the decision
//! stream, and the report with attribution, against a server on 127.0.0.1:0 whose clock the
//! test moves.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const MIN: i64 = 60_000;

fn cart_campaign() -> Value {
    json!({
        "trigger": {"event": "event.name == \"Added to Cart\""},
        "wait": "30m",
        "exit": "did(\"Order Completed\", since: trigger)",
        "template": "cart_abandonment",
        "priority": 2,
        "conversion": {"event": "Order Completed", "within": "3d"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_are_checked_when_saved_and_listed() {
    let s = TestServer::start_with(|c| c.default_definitions = false).await;
    let (status, body) = s
        .admin_put(
            "/v1/campaigns/vip_launch",
            json!({"trigger": {"segment": "vip"}, "template": "launch"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_definition");
    assert_eq!(
        body["error"]["field"],
        "campaigns.vip_launch.trigger.segment"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown segment `vip`"),
        "{body}"
    );

    let (status, body) = s
        .admin_put(
            "/v1/campaigns/cart",
            json!({"trigger": {"event": "event.name == \"Added to Cart\""}, "wait": "30 minutes", "template": "t"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "campaigns.cart.wait");

    let (status, body) = s
        .admin_put(
            "/v1/campaigns/cart",
            json!({"trigger": {}, "tempalte": "t"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tempalte"),
        "{body}"
    );

    let (status, body) = s.admin_put("/v1/campaigns/cart", cart_campaign()).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = s.admin_get("/v1/campaigns").await;
    let names: Vec<&str> = list["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["cart"]);
    let (status, one) = s.admin_get("/v1/campaigns/cart").await;
    assert_eq!(status, 200);
    assert_eq!(one["definition"]["wait"], "30m");

    let (status, body) = s
        .admin_put("/v1/messaging", json!({"quiet_hours": "late evening"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "messaging.quiet_hours");
    let (status, _) = s
        .admin_put(
            "/v1/messaging",
            json!({"quiet_hours": "22:00-07:00", "caps": {"email": ["2 per 1d"]}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, m) = s.admin_get("/v1/messaging").await;
    assert_eq!(m["messaging"]["quiet_hours"], "22:00-07:00");

    let (status, _) = s
        .admin_send(reqwest::Method::DELETE, "/v1/campaigns/cart", None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = s.admin_get("/v1/campaigns/cart").await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_a_campaign_uses_cannot_be_deleted() {
    let s = TestServer::start().await;
    let (status, body) = s
        .admin_send(reqwest::Method::DELETE, "/v1/segments/lapsed", None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("campaigns.win_back.trigger.segment"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_sends_opens_and_conversions_per_variant() {
    let s = TestServer::start_with(|c| c.default_definitions = false).await;
    let mut campaign = cart_campaign();
    campaign["template"] = Value::Null;
    campaign["variants"] = json!([
        {"name": "a", "template": "cart_a"},
        {"name": "b", "template": "cart_b"}
    ]);
    let (status, body) = s.admin_put("/v1/campaigns/cart", campaign).await;
    assert_eq!(status, 200, "{body}");
    let t0 = s.now.load(std::sync::atomic::Ordering::SeqCst);
    let ts = |ms: i64| kairos_core::time::format_timestamp(t0 + ms);
    let mut batch = Vec::new();
    for i in 0..6 {
        batch.push(json!({"type": "identify", "userId": format!("u{i}"), "messageId": format!("i{i}"), "timestamp": ts(0),
            "traits": {"email": format!("u{i}@example.com"), "timezone": "UTC", "subscriptions": {"marketing": true}}}));
        batch.push(json!({"type": "track", "userId": format!("u{i}"), "messageId": format!("c{i}"), "timestamp": ts(MIN),
            "event": "Added to Cart", "properties": {"product_id": "p1", "price": 30}}));
    }
    let (status, body) = s.post("/v1/batch", json!({"batch": batch})).await;
    assert_eq!(status, 200, "{body}");
    // Thirty minutes later every cart gets its message (12:31 UTC: no quiet hours).
    s.advance(31 * MIN);
    let report = s
        .wait_for("/v1/campaigns/cart/report", 10, |r| {
            r["decisions"]["queued"].as_u64() == Some(6)
        })
        .await;
    let sends: u64 = report["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["sends"].as_u64().unwrap())
        .sum();
    assert_eq!(sends, 6);
    // Engagement comes back as events carrying the message id.
    let (_, stream) = s.admin_get("/v1/campaigns/cart/changes?limit=100").await;
    let queued: Vec<(String, String, String)> = stream["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "queued")
        .map(|c| {
            (
                c["profile"].as_str().unwrap().to_string(),
                c["messageId"].as_str().unwrap().to_string(),
                c["variant"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(queued.len(), 6);
    let (_, first_profile) = s.admin_get(&format!("/v1/profiles/{}", queued[0].0)).await;
    let user = first_profile["identifiers"]["userId"][0]
        .as_str()
        .unwrap()
        .to_string();
    let mid = queued[0].1.clone();
    let variant = queued[0].2.clone();
    let (status, body) = s
        .post(
            "/v1/batch",
            json!({"batch": [
                {"type": "track", "userId": user, "messageId": "o1", "timestamp": ts(40 * MIN), "event": "Email Opened", "properties": {"message_id": mid}},
                {"type": "track", "userId": user, "messageId": "o2", "timestamp": ts(41 * MIN), "event": "Email Opened", "properties": {"message_id": mid}},
                {"type": "track", "userId": user, "messageId": "p1", "timestamp": ts(50 * MIN), "event": "Order Completed", "properties": {"revenue": 30}}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, report) = s.admin_get("/v1/campaigns/cart/report").await;
    let v = report["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == variant.as_str())
        .unwrap()
        .clone();
    assert_eq!(v["opens"]["count"], 1, "{report}");
    assert_eq!(v["conversions"]["count"], 1, "{report}");
    assert_eq!(v["revenue"], 30.0, "{report}");
    assert_eq!(report["control"], "a");
    assert_eq!(report["winner"], Value::Null);
    s.stop().await;
}
