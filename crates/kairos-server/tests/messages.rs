//! Templates, previews, dead letters and re-drive, scheduled campaigns, change hooks and the
//! automatic A/B winner, against a server on 127.0.0.1:0 whose clock the test moves.

#![allow(clippy::unwrap_used)]

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use kairos_core::campaign::{CampaignDef, TriggerDef, VariantDef};
use kairos_server::config::{ChangeHook, WebhookEndpointConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIN: i64 = 60_000;

/// A receiver answering with the status in `status`; records (idempotency key, body).
#[derive(Default)]
struct Sink {
    status: AtomicU16,
    got: Mutex<Vec<(String, Value)>>,
}

async fn sink(
    State(s): State<Arc<Sink>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let code = match s.status.load(Ordering::SeqCst) {
        0 => 200,
        c => c,
    };
    if code == 200 {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        s.got
            .lock()
            .unwrap()
            .push((key, serde_json::from_slice(&body).unwrap()));
    }
    StatusCode::from_u16(code).unwrap()
}

async fn start_sink() -> (String, Arc<Sink>) {
    let s = Arc::new(Sink::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(sink))
        .with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, s)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn endpoint(url: &str) -> WebhookEndpointConfig {
    WebhookEndpointConfig {
        url: url.to_string(),
        secret: "sink-secret".into(),
        timeout_ms: 5_000,
    }
}

fn subscriber(user: &str, ts: &str) -> Value {
    json!({"type": "identify", "userId": user, "messageId": format!("id-{user}"), "timestamp": ts,
           "traits": {"email": format!("{user}@example.com"), "first_name": "Ada", "timezone": "UTC",
                      "subscriptions": {"marketing": true}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_checked_when_saved_and_previews_list_what_was_missing() {
    let s = TestServer::start().await;
    // The built-in campaigns' templates come with a new store.
    let (_, list) = s.admin_get("/v1/templates").await;
    let names: Vec<&str> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for t in [
        "cart_abandonment",
        "vip_early_access",
        "win_back",
        "welcome_1",
        "welcome_2",
        "welcome_3",
    ] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }
    let (status, body) = s
        .admin_put(
            "/v1/templates/broken",
            json!({"subject": "Hi", "html": "<p>\n{% if profile.vip %}VIP{% endfi %}</p>"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_template");
    assert_eq!(body["error"]["field"], "html");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2, column"),
        "{body}"
    );
    let (status, _) = s
        .admin_put("/v1/templates/no_body", json!({"subject": "Hi"}))
        .await;
    assert_eq!(status, 400);

    let (status, body) = s
        .admin_put("/v1/templates/hello", json!({"subject": "Hello {{ profile.first_name | default: \"there\" }}",
            "text": "{{ profile.first_name }} {{ profile.nickname }} has {{ profile.cart.items.size }} items; score {{ scores.engagement.tier }}"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let t0 = s.now.load(Ordering::SeqCst);
    let ts = kairos_core::time::format_timestamp(t0);
    s.post("/v1/batch", json!({"batch": [subscriber("ada", &ts),
        {"type": "track", "userId": "ada", "messageId": "c1", "timestamp": ts, "event": "Added to Cart", "properties": {"product_id": "p1"}}]})).await;
    let (status, p) = s
        .admin_send(
            reqwest::Method::POST,
            "/v1/templates/hello/preview",
            Some(json!({"profile": "ada"})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["subject"], "Hello Ada");
    assert_eq!(p["text"], "Ada  has 1 items; score cold");
    assert_eq!(p["missing"], json!(["profile.nickname"]));
    // Sample data instead of a profile.
    let (_, p) = s
        .admin_send(
            reqwest::Method::POST,
            "/v1/templates/hello/preview",
            Some(json!({"data": {"profile": {"first_name": "Bo", "nickname": "B"}}})),
        )
        .await;
    assert_eq!(p["subject"], "Hello Bo");
    let (status, _) = s
        .admin_send(reqwest::Method::POST, "/v1/templates/nope/preview", None)
        .await;
    assert_eq!(status, 404);
    // A forged unsubscribe link is refused.
    let r = s
        .client
        .get(s.url("/v1/unsubscribe?token=abc.def"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_becomes_a_dead_letter_and_can_be_redriven() {
    let (url, sink) = start_sink().await;
    sink.status.store(400, Ordering::SeqCst);
    let s = TestServer::start_with(|c| {
        c.default_definitions = false;
        c.delivery.poll_ms = 20;
        c.delivery.webhooks.insert("sink".into(), endpoint(&url));
        c.campaigns.insert(
            "receipt".into(),
            CampaignDef {
                trigger: TriggerDef {
                    event: Some(r#"event.name == "Order Completed""#.into()),
                    ..TriggerDef::default()
                },
                template: Some("receipt".into()),
                channel: "webhook:sink".into(),
                purpose: "transactional".into(),
                ..CampaignDef::default()
            },
        );
    })
    .await;
    s.admin_put(
        "/v1/templates/receipt",
        json!({"subject": "Thanks", "text": "Order {{ event.order_id }}"}),
    )
    .await;
    let ts = kairos_core::time::format_timestamp(s.now.load(Ordering::SeqCst));
    s.post(
        "/v1/batch",
        json!({"batch": [{"type": "track", "userId": "u1", "messageId": "o1", "timestamp": ts,
        "event": "Order Completed", "properties": {"order_id": "A-1"}}]}),
    )
    .await;
    let dead = s
        .wait_for("/v1/outbox/dead", 10, |d| {
            d["messages"].as_array().is_some_and(|m| m.len() == 1)
        })
        .await;
    let m = &dead["messages"][0];
    assert_eq!(m["status"], "dead");
    assert!(m["lastError"].as_str().unwrap().contains("HTTP 400"), "{m}");
    let id = m["messageId"].as_str().unwrap().to_string();
    let (_, one) = s.admin_get(&format!("/v1/messages/{id}")).await;
    assert_eq!(one["status"], "dead");
    // The receiver is fixed; re-drive it.
    sink.status.store(200, Ordering::SeqCst);
    let (status, _) = s
        .admin_send(
            reqwest::Method::POST,
            &format!("/v1/outbox/dead/{id}/redrive"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    until("the re-driven message", || {
        sink.got.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(sink.got.lock().unwrap()[0].0, id);
    assert_eq!(sink.got.lock().unwrap()[0].1["text"], "Order A-1");
    let one = s
        .wait_for(&format!("/v1/messages/{id}"), 10, |m| m["status"] == "sent")
        .await;
    assert_eq!(one["attempts"], 1);
    let (status, _) = s
        .admin_send(reqwest::Method::POST, "/v1/outbox/dead/nope/redrive", None)
        .await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_campaign_reaches_its_segment_and_change_hooks_post_segment_changes() {
    let (url, sink) = start_sink().await;
    let s = TestServer::start_with(|c| {
        c.default_definitions = false;
        c.delivery.poll_ms = 20;
        c.delivery.webhooks.insert("sink".into(), endpoint(&url));
        c.segments.insert(
            "shoppers".into(),
            kairos_core::SegmentDef {
                rule: r#"did("Added to Cart", within: 30d)"#.into(),
                priority: 1,
                ..Default::default()
            },
        );
        c.campaigns.insert(
            "digest".into(),
            CampaignDef {
                trigger: TriggerDef {
                    schedule: Some("every 1h".into()),
                    segment: Some("shoppers".into()),
                    ..TriggerDef::default()
                },
                template: Some("digest".into()),
                channel: "webhook:sink".into(),
                quiet_hours: Some(false),
                ..CampaignDef::default()
            },
        );
        c.delivery.change_hooks.push(ChangeHook {
            endpoint: "sink".into(),
            streams: vec!["segment:*".into()],
        });
    })
    .await;
    s.admin_put(
        "/v1/templates/digest",
        json!({"subject": "Your digest", "text": "Hi {{ profile.first_name }}"}),
    )
    .await;
    let t0 = s.now.load(Ordering::SeqCst);
    let ts = kairos_core::time::format_timestamp(t0);
    s.post("/v1/batch", json!({"batch": [
        subscriber("ada", &ts),
        {"type": "track", "userId": "ada", "messageId": "c1", "timestamp": ts, "event": "Added to Cart", "properties": {"product_id": "p1"}},
        subscriber("bob", &ts),
    ]})).await;
    // The change hook posts Ada's entry into the segment, keyed by stream and seq.
    until("the segment change", || {
        sink.got
            .lock()
            .unwrap()
            .iter()
            .any(|(_, b)| b["type"] == "change")
    })
    .await;
    let (key, change) = sink
        .got
        .lock()
        .unwrap()
        .iter()
        .find(|(_, b)| b["type"] == "change")
        .cloned()
        .unwrap();
    assert_eq!(change["stream"], "segment:shoppers");
    assert_eq!(change["change"]["type"], "enter");
    assert!(key.starts_with("segment:shoppers:"), "{key}");
    // The schedule's first run is the next full hour after it was first seen.
    s.advance(60 * MIN);
    until("the digest", || {
        sink.got
            .lock()
            .unwrap()
            .iter()
            .any(|(_, b)| b["type"] == "message")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sink.got.lock().unwrap().clone();
    let digests: Vec<&Value> = got
        .iter()
        .map(|(_, b)| b)
        .filter(|b| b["type"] == "message")
        .collect();
    assert_eq!(digests.len(), 1, "only the segment's member: {digests:?}");
    assert_eq!(digests[0]["to"], "ada@example.com");
    assert_eq!(digests[0]["text"], "Hi Ada");
    let changes = got.iter().filter(|(_, b)| b["type"] == "change").count();
    assert_eq!(changes, 1, "each change posted once: {got:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_significant_winner_takes_every_later_send_when_auto_winner_is_on() {
    let s = TestServer::start_with(|c| {
        c.default_definitions = false;
        c.delivery.enabled = false;
        c.campaigns.insert(
            "promo".into(),
            CampaignDef {
                trigger: TriggerDef {
                    event: Some(r#"event.name == "Signed Up""#.into()),
                    ..TriggerDef::default()
                },
                variants: vec![
                    VariantDef {
                        name: "a".into(),
                        template: "promo_a".into(),
                        weight: 1.0,
                    },
                    VariantDef {
                        name: "b".into(),
                        template: "promo_b".into(),
                        weight: 1.0,
                    },
                ],
                conversion: Some(kairos_core::campaign::ConversionDef {
                    event: "Order Completed".into(),
                    within: "7d".into(),
                }),
                auto_winner: true,
                quiet_hours: Some(false),
                ..CampaignDef::default()
            },
        );
    })
    .await;
    let ts = kairos_core::time::format_timestamp(s.now.load(Ordering::SeqCst));
    let mut batch = Vec::new();
    for i in 0..400 {
        let u = format!("u{i}");
        batch.push(subscriber(&u, &ts));
        batch.push(json!({"type": "track", "userId": u, "messageId": format!("s{i}"), "timestamp": ts, "event": "Signed Up"}));
    }
    let (status, body) = s.post("/v1/batch", json!({"batch": batch})).await;
    assert_eq!(status, 200, "{body}");
    // Variant b converts half its people, a nobody.
    let (_, stream) = s.admin_get("/v1/campaigns/promo/changes?limit=1000").await;
    let mut orders = Vec::new();
    for c in stream["changes"].as_array().unwrap() {
        if c["status"] == "queued" && c["variant"] == "b" && orders.len() < 100 {
            let (_, p) = s
                .admin_get(&format!("/v1/profiles/{}", c["profile"].as_str().unwrap()))
                .await;
            let user = p["identifiers"]["userId"][0].as_str().unwrap().to_string();
            orders.push(json!({"type": "track", "userId": user, "messageId": format!("o-{user}"), "timestamp": ts, "event": "Order Completed", "properties": {"revenue": 50}}));
        }
    }
    s.post("/v1/batch", json!({"batch": orders})).await;
    let (_, report) = s.admin_get("/v1/campaigns/promo/report").await;
    assert_eq!(report["winner"], "b", "{report}");
    let picked = kairos_server::campaigns::pick_winners(&s.state)
        .await
        .unwrap();
    assert_eq!(picked, vec![("promo".to_string(), "b".to_string())]);
    let (_, def) = s.admin_get("/v1/campaigns/promo").await;
    assert_eq!(def["definition"]["winner"], "b");
    // Everyone who signs up now gets b.
    let mut batch = Vec::new();
    for i in 400..440 {
        let u = format!("u{i}");
        batch.push(subscriber(&u, &ts));
        batch.push(json!({"type": "track", "userId": u, "messageId": format!("s{i}"), "timestamp": ts, "event": "Signed Up"}));
    }
    s.post("/v1/batch", json!({"batch": batch})).await;
    let (_, stream) = s
        .admin_get("/v1/campaigns/promo/changes?limit=1000&since=0")
        .await;
    let late: Vec<&Value> = stream["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "queued")
        .skip(400)
        .collect();
    assert_eq!(late.len(), 40);
    assert!(late.iter().all(|c| c["variant"] == "b"), "{late:?}");
    s.stop().await;
}
