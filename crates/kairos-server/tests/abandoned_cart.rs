//! End to end, the abandoned-cart flow of the source documents: events over HTTP, the
//! campaign's wait as a durable timer, the decision in the core, the outbox, Liquid
//! rendering and a signed webhook to a real receiver on 127.0.0.1, with the server's clock
//! moved by the test. Also: an order in time sends nothing, an unsubscribed person gets
//! nothing, a second campaign inside the cap is suppressed with its reason, and a send in
//! quiet hours waits for 08:00 local time.

#![allow(clippy::unwrap_used)]

mod common;

use axum::extract::State;
use axum::http::HeaderMap;
use common::*;
use kairos_core::campaign::{CampaignDef, MessagingDef, TriggerDef};
use kairos_server::config::WebhookEndpointConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const MIN: i64 = 60_000;
const SECRET: &str = "whsec_test_secret";

/// What arrived, and the server's clock (signatures are made with it).
#[derive(Default)]
struct Received(
    Mutex<Vec<(HeaderMap, Value)>>,
    std::sync::OnceLock<Arc<std::sync::atomic::AtomicI64>>,
);

async fn receive(
    State(r): State<Arc<Received>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> &'static str {
    let sig = headers
        .get("kairos-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let now = r.1.get().unwrap().load(std::sync::atomic::Ordering::SeqCst) / 1000;
    kairos_server::channels::verify(SECRET.as_bytes(), &sig, &body, now, 300)
        .unwrap_or_else(|e| panic!("bad signature {sig}: {e}"));
    r.0.lock()
        .unwrap()
        .push((headers, serde_json::from_slice(&body).unwrap()));
    "ok"
}

async fn receiver() -> (String, Arc<Received>) {
    let got = Arc::new(Received::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, got)
}

fn campaign(template: &str, priority: i32) -> CampaignDef {
    CampaignDef {
        trigger: TriggerDef {
            event: Some(r#"event.name == "Added to Cart""#.into()),
            ..TriggerDef::default()
        },
        wait: Some("30m".into()),
        exit: Some(r#"did("Order Completed", since: trigger)"#.into()),
        template: Some(template.into()),
        channel: "webhook:shop".into(),
        priority,
        ..CampaignDef::default()
    }
}

fn identify(user: &str, tz: &str, subscribed: bool, ts: &str) -> Value {
    json!({"type": "identify", "userId": user, "messageId": format!("id-{user}"), "timestamp": ts,
           "traits": {"email": format!("{user}@example.com"), "first_name": user.to_uppercase(), "timezone": tz,
                      "subscriptions": {"marketing": subscribed}}})
}

fn add_to_cart(user: &str, ts: &str) -> Value {
    json!({"type": "track", "userId": user, "messageId": format!("cart-{user}"), "timestamp": ts, "event": "Added to Cart",
           "properties": {"product_id": "sku-1", "name": "Trail Shoes", "price": 89.5, "quantity": 2}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_cart_sends_one_rendered_message_thirty_minutes_later_and_only_when_it_should()
{
    let (url, got) = receiver().await;
    let s = TestServer::start_with(|c| {
        c.default_definitions = false;
        c.delivery.poll_ms = 20;
        c.delivery.webhooks.insert(
            "shop".into(),
            WebhookEndpointConfig {
                url: url.clone(),
                secret: SECRET.into(),
                timeout_ms: 5_000,
            },
        );
        c.campaigns
            .insert("cart_abandonment".into(), campaign("cart", 2));
        c.campaigns
            .insert("browse_reminder".into(), campaign("browse", 5));
        c.messaging = Some(MessagingDef {
            caps: BTreeMap::from([("webhook".to_string(), vec!["1 per 4h".to_string()])]),
            quiet_hours: "21:00-08:00".into(),
            default_timezone: "UTC".into(),
        });
    })
    .await;
    // The receiver checks signatures against the server's (moved) clock.
    got.1.set(s.now.clone()).unwrap();
    for (name, subject) in [
        (
            "cart",
            "{{ profile.first_name | default: \"Hi\" }}, your cart is waiting",
        ),
        ("browse", "Still looking?"),
    ] {
        let (status, body) = s
            .admin_put(
                &format!("/v1/templates/{name}"),
                json!({"subject": subject,
                       "html": "<p>Hi {{ profile.nickname | default: \"there\" }}</p>{% for item in profile.cart.items %}<li>{{ item.name }} x {{ item.quantity }}</li>{% endfor %}<a href=\"{{ unsubscribe_url }}\">unsubscribe</a>",
                       "text": "{{ event.name }} x {{ event.quantity }}"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // 2026-11-22 12:00Z: 13:00 in Berlin, 04:00 in Los Angeles.
    let t0 = s.now.load(std::sync::atomic::Ordering::SeqCst);
    let ts = |ms: i64| kairos_core::time::format_timestamp(t0 + ms);
    let batch = vec![
        identify("ada", "Europe/Berlin", true, &ts(0)),
        add_to_cart("ada", &ts(0)),
        identify("bob", "Europe/Berlin", true, &ts(0)),
        add_to_cart("bob", &ts(0)),
        identify("cy", "Europe/Berlin", false, &ts(0)),
        add_to_cart("cy", &ts(0)),
        identify("dee", "America/Los_Angeles", true, &ts(0)),
        add_to_cart("dee", &ts(0)),
    ];
    let (status, body) = s.post("/v1/batch", json!({"batch": batch})).await;
    assert_eq!(status, 200, "{body}");
    // Bob orders ten minutes later.
    s.advance(10 * MIN);
    let order = json!({"type": "track", "userId": "bob", "messageId": "order-bob", "timestamp": ts(10 * MIN),
                       "event": "Order Completed", "properties": {"revenue": 179}});
    let (status, body) = s.post("/v1/batch", json!({"batch": [order]})).await;
    assert_eq!(status, 200, "{body}");

    // Nothing before the wait is over.
    s.advance(20 * MIN - 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(got.0.lock().unwrap().is_empty());
    s.advance(1);
    let sent = s
        .wait_for("/v1/campaigns/cart_abandonment/report", 10, |r| {
            r["variants"][0]["sends"].as_u64() == Some(1)
                && r["decisions"]["deferred"].as_u64() == Some(1)
        })
        .await;
    assert_eq!(sent["decisions"]["exited"], 1, "bob ordered: {sent}");
    assert_eq!(
        sent["decisions"]["suppressed"], 1,
        "cy unsubscribed: {sent}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while got.0.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing arrived");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    {
        let got = got.0.lock().unwrap();
        assert_eq!(got.len(), 1, "exactly one message: {got:?}");
        let (headers, body) = &got[0];
        assert_eq!(body["campaign"], "cart_abandonment");
        assert_eq!(body["to"], "ada@example.com");
        assert_eq!(body["subject"], "ADA, your cart is waiting");
        let html = body["html"].as_str().unwrap();
        assert!(
            html.contains("<p>Hi there</p>"),
            "fallback for a missing variable: {html}"
        );
        assert!(html.contains("<li>Trail Shoes x 2</li>"), "{html}");
        assert!(html.contains("/v1/unsubscribe?token="), "{html}");
        assert_eq!(body["text"], "Trail Shoes x 2");
        assert_eq!(
            headers.get("idempotency-key").unwrap().to_str().unwrap(),
            body["messageId"].as_str().unwrap()
        );
    }
    let report = s
        .wait_for("/v1/campaigns/cart_abandonment/report", 10, |r| {
            r["variants"][0]["sent"].as_u64() == Some(1)
        })
        .await;
    assert_eq!(report["variants"][0]["deadLetters"], 0);
    // Ada's second campaign wanted her at the same instant: suppressed by the cap, with why.
    let (_, stream) = s.admin_get("/v1/campaigns/browse_reminder/changes").await;
    let ada_decision: Vec<&Value> = stream["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "suppressed")
        .collect();
    assert!(
        ada_decision.iter().any(|c| c["reason"]
            .as_str()
            .unwrap()
            .contains("frequency cap 1 per 4h on webhook:shop: cart_abandonment was sent")),
        "{stream}"
    );
    // Dee's message waits for 08:00 in Los Angeles (16:00Z), not dropped.
    let (_, dee) = s.admin_get("/v1/profiles/dee/scores").await;
    let deferred = dee["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "deferred")
        .cloned()
        .unwrap_or_else(|| panic!("{dee}"));
    assert_eq!(deferred["until"], "2026-11-22T16:00:00.000Z");
    s.advance(4 * 60 * MIN - 30 * MIN - 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(got.0.lock().unwrap().len(), 1);
    s.advance(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while got.0.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "dee's message did not arrive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let got_all = got.0.lock().unwrap().clone();
    assert_eq!(got_all[1].1["to"], "dee@example.com");
    drop(got_all);

    // The unsubscribe link works: one click, and the person is unsubscribed at once.
    let link = got.0.lock().unwrap()[0].1["unsubscribeUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let path = &link[link.find("/v1/unsubscribe").unwrap()..];
    let r = reqwest::Client::new()
        .post(s.url(path))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, ada) = s.admin_get("/v1/profiles/ada").await;
    assert_eq!(ada["state"]["subscriptions"]["marketing"], false, "{ada}");
    s.stop().await;
}
