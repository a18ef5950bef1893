#![allow(clippy::unwrap_used)]
//! Predictive models in a running server: training through the API on the live store,
//! serving inside the state machine before the ack, explanations, hot swap and rollback,
//! monitoring with matured labels and online learning, and what bad input gets.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

const DAY: i64 = 86_400_000;

fn rnd(s: &mut u64) -> f64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    (*s >> 11) as f64 / (1u64 << 53) as f64
}

/// 300 people over 40 days, each with a latent intent that drives browsing, carts and
/// orders: enough history for cut-offs every 4 days with a 7-day horizon.
async fn history(s: &TestServer) {
    let start = s.now.load(std::sync::atomic::Ordering::SeqCst) - 40 * DAY;
    let mut seed = 99u64;
    let mut batch = Vec::new();
    for i in 0..300 {
        let intent = (i % 10) as f64 / 10.0;
        for day in 0..40 {
            if rnd(&mut seed) > 0.15 + 0.5 * intent {
                continue;
            }
            let t = start + day * DAY + (rnd(&mut seed) * 0.9 * DAY as f64) as i64;
            let ts = |off: i64| kairos_core::time::format_timestamp(t + off);
            batch.push(
                json!({"type": "track", "userId": format!("u-{i}"), "event": "Product Viewed",
                "properties": {"price": 40}, "timestamp": ts(0)}),
            );
            if rnd(&mut seed) < intent {
                batch.push(json!({"type": "track", "userId": format!("u-{i}"), "event": "Added to Cart",
                    "properties": {"product_id": "p1", "price": 40, "quantity": 1}, "timestamp": ts(60_000)}));
                if rnd(&mut seed) < intent * 0.6 {
                    batch.push(json!({"type": "track", "userId": format!("u-{i}"), "event": "Order Completed",
                        "properties": {"order_id": format!("o-{i}-{day}"), "revenue": 40}, "timestamp": ts(120_000)}));
                }
            }
            if batch.len() >= 200 {
                let (st, b) = s
                    .post("/v1/batch", json!({"batch": std::mem::take(&mut batch)}))
                    .await;
                assert_eq!(st, 200, "{b}");
            }
        }
    }
    let (st, b) = s.post("/v1/batch", json!({"batch": batch})).await;
    assert_eq!(st, 200, "{b}");
}

async fn train(s: &TestServer, name: &str, body: Value, activate: bool) -> Value {
    let path = format!("/v1/models/{name}/train?activate={activate}");
    let (st, b) = s.admin_send(Method::POST, &path, Some(body)).await;
    assert_eq!(st, 202, "{b}");
    let done = s
        .wait_for(&format!("/v1/models/{name}/training"), 120, |b| {
            b["state"] != "running"
        })
        .await;
    assert_eq!(done["state"], "done", "{done}");
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_serve_explain_swap_monitor_and_learn_online() {
    let s = TestServer::start_with(|c| {
        c.predictions.monitor_interval_secs = 86_400;
    })
    .await;
    history(&s).await;
    let spec = json!({
        "label": "did(\"Order Completed\", within: 7d)",
        "horizon": "7d",
        "every": "4d",
        "learner": "ftrl",
        "hybrid": {"score": "purchase_intent", "score_weight": 0.5, "model_weight": 0.5}
    });
    let done = train(&s, "buy", spec.clone(), true).await;
    assert_eq!(done["version"], 1);
    assert_eq!(done["activated"], true);
    let model_auc = done["metrics"][0]["auc"].as_f64().unwrap();
    assert!(model_auc > 0.7, "{done}");

    let (_, list) = s.admin_get("/v1/models").await;
    let buy = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "buy")
        .unwrap()
        .clone();
    assert_eq!(
        (buy["active"].clone(), buy["serving"].clone()),
        (json!(1), json!(1)),
        "{list}"
    );

    // Served before the ack: the profile read right after the event carries the prediction.
    let (st, _) = s
        .post(
            "/v1/track",
            json!({"userId": "u-7", "event": "Product Viewed", "properties": {"price": 40}}),
        )
        .await;
    assert_eq!(st, 200);
    let (_, p) = s.admin_get("/v1/profiles/u-7").await;
    let pred = p["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["model"] == "buy")
        .unwrap()
        .clone();
    assert_eq!(pred["version"], 1);
    let prob = pred["probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&prob), "{pred}");
    let hybrid = pred["hybrid"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&hybrid), "{pred}");

    // The explanation adds up to the margin (coefficient x value for linear learners).
    let (st, e) = s.admin_get("/v1/profiles/u-7/predictions?top=0").await;
    assert_eq!(st, 200, "{e}");
    let e = e["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["model"] == "buy")
        .unwrap()
        .clone();
    let sum: f64 = e["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["contribution"].as_f64().unwrap())
        .sum();
    let (base, margin) = (
        e["base_margin"].as_f64().unwrap(),
        e["margin"].as_f64().unwrap(),
    );
    assert!((base + sum - margin).abs() < 1e-6, "{e}");
    assert!(["low", "medium", "high"].contains(&e["tier"].as_str().unwrap()));
    assert!(e["hybrid"]["value"].as_f64().is_some());

    // A gradient-boosted version, then a hot swap to it without a restart, then rollback.
    let done = train(&s, "buy", json!({"every": "4d", "learner": "gbdt"}), false).await;
    assert_eq!(
        (done["version"].clone(), done["activated"].clone()),
        (json!(2), json!(false))
    );
    let (st, b) = s
        .admin_send(
            Method::POST,
            "/v1/models/buy/activate",
            Some(json!({"version": 2})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (b["previous"].clone(), b["serving"].clone()),
        (json!(1), json!(2))
    );
    s.post(
        "/v1/track",
        json!({"userId": "u-8", "event": "Product Viewed"}),
    )
    .await;
    let (_, p) = s.admin_get("/v1/profiles/u-8").await;
    assert_eq!(p["predictions"][0]["version"], 2, "{p}");
    let (_, e) = s.admin_get("/v1/profiles/u-8/predictions?top=0").await;
    let e = &e["predictions"][0];
    assert_eq!(e["learner"], "gbdt");
    let sum: f64 = e["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["contribution"].as_f64().unwrap())
        .sum();
    assert!(
        (e["base_margin"].as_f64().unwrap() + sum - e["margin"].as_f64().unwrap()).abs() < 1e-6,
        "TreeSHAP adds up: {e}"
    );
    let (st, b) = s
        .admin_send(Method::POST, "/v1/models/buy/rollback", None)
        .await;
    assert_eq!((st, b["active"].clone()), (200, json!(1)), "{b}");
    s.advance(1_000);
    let (_, b) = s
        .post(
            "/v1/track",
            json!({"userId": "u-8", "event": "Product Viewed"}),
        )
        .await;
    assert_eq!(b["accepted"], 1, "{b}");
    let (_, p) = s.admin_get("/v1/profiles/u-8").await;
    assert_eq!(p["predictions"][0]["version"], 1, "{p}");

    // The report, as a page with its plots.
    let r = s
        .client
        .get(s.url("/v1/models/buy/versions/1/report.html"))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert_eq!(html.matches("<svg class=\"plot\"").count(), 4);
    assert!(html.contains("rule score purchase_intent"));

    // Monitoring: 120 people are scored now; half of the likely buyers buy within the
    // week; eight days later their labels have matured and the online learner took them.
    let before = s.admin_get("/v1/models/buy/monitoring").await.1;
    let updates_before = before["online_updates"].as_u64().unwrap();
    for i in 0..120 {
        s.post(
            "/v1/track",
            json!({"userId": format!("u-{i}"), "event": "Product Viewed"}),
        )
        .await;
    }
    s.advance(2 * DAY);
    for i in (0..120).filter(|i| i % 10 >= 6 && i % 3 == 0) {
        let (st, b) = s
            .post(
                "/v1/track",
                json!({"userId": format!("u-{i}"), "event": "Order Completed",
            "properties": {"order_id": format!("late-{i}"), "revenue": 10}}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
    s.advance(6 * DAY);
    let (st, m) = s.admin_send(Method::POST, "/v1/models/monitor", None).await;
    assert_eq!(st, 200, "{m}");
    let m = m["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["model"] == "buy")
        .unwrap()
        .clone();
    assert!(m["matured"]["labels"].as_u64().unwrap() >= 120, "{m}");
    assert!(
        m["matured"]["auc"].as_f64().is_some(),
        "both classes matured: {m}"
    );
    assert!(
        m["online_updates"].as_u64().unwrap() >= updates_before + 120,
        "{m}"
    );
    assert!(m["score_psi"].as_f64().is_some() && m["feature_psi"].as_array().unwrap().len() > 5);
    // The status is kept in the store for `kairos train --if-drifted`.
    let (_, detail) = s.admin_get("/v1/models/buy").await;
    assert!(
        detail["status"]["matured"]["labels"].as_u64().unwrap() >= 120,
        "{detail}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_model_requests_get_a_clear_error() {
    let s = TestServer::start().await;
    let (st, b) = s
        .admin_send(
            Method::POST,
            "/v1/models/buy/train",
            Some(json!({"horizon": "7x"})),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["error"]["field"], "horizon");
    let (st, b) = s
        .admin_send(
            Method::POST,
            "/v1/models/buy/train",
            Some(json!({"lable": "x"})),
        )
        .await;
    assert_eq!(st, 400, "unknown field: {b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("lable"));
    // Nothing stored: training on an empty store fails and says why.
    let (st, _) = s
        .admin_send(Method::POST, "/v1/models/buy/train", Some(json!({})))
        .await;
    assert_eq!(st, 202);
    let done = s
        .wait_for("/v1/models/buy/training", 30, |b| b["state"] != "running")
        .await;
    assert_eq!(done["state"], "failed");
    assert!(
        done["error"].as_str().unwrap().contains("no events"),
        "{done}"
    );
    let (st, b) = s
        .admin_send(
            Method::POST,
            "/v1/models/buy/activate",
            Some(json!({"version": 3})),
        )
        .await;
    assert_eq!(st, 404, "{b}");
    let (st, b) = s
        .admin_send(Method::POST, "/v1/models/buy/activate", Some(json!({})))
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, _) = s.admin_get("/v1/models/nope").await;
    assert_eq!(st, 404);
    let (st, _) = s.admin_get("/v1/models/nope/monitoring").await;
    assert_eq!(st, 404);
    let (st, b) = s
        .admin_send(Method::POST, "/v1/models/nope/rollback", None)
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, _) = s.admin_get("/v1/profiles/nobody/predictions").await;
    assert_eq!(st, 404);
    let (st, _) = s.admin_get("/v1/models/buy/versions/x/report").await;
    assert_eq!(st, 400);
    let r = s.client.get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}
