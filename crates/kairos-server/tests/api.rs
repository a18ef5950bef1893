#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use serde_json::json;
use std::io::Write;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn batch_is_durable_and_readable_right_after_the_ack() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post(
            "/v1/batch",
            json!({"batch": [
                {"type": "identify", "userId": "user-42", "anonymousId": null, "messageId": "m1",
                 "traits": {"email": "Ada@Example.com", "plan": "pro"}, "timestamp": "2026-11-22T11:00:00.000+00:00"},
                {"type": "track", "event": "Order Completed", "userId": "user-42", "messageId": "m2",
                 "properties": {"revenue": 49.5}, "timestamp": "2026-11-22T11:01:00.123456+00:00"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"], json!([]));
    let (status, p) = s.admin_get("/v1/profiles?email=ada@example.com").await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["state"]["orders"], 1);
    assert_eq!(p["state"]["lifetimeRevenue"], 49.5);
    assert_eq!(p["state"]["traits"]["plan"], "pro");
    let id = p["id"].as_str().unwrap().to_string();
    let (_, by_user) = s.admin_get("/v1/profiles/user-42").await;
    assert_eq!(by_user["id"], id.as_str());
    let (_, events) = s
        .admin_get(&format!("/v1/profiles/{id}/events?limit=1"))
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
    let next = events["next"].as_str().unwrap().to_string();
    let (_, page2) = s
        .admin_get(&format!("/v1/profiles/{id}/events?limit=1&after={next}"))
        .await;
    assert_eq!(page2["events"][0]["messageId"], "m2");
    s.stop().await;
}

#[tokio::test]
async fn bad_events_are_rejected_one_by_one_and_dead_lettered() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post(
            "/v1/batch",
            json!({"batch": [
                {"type": "track", "event": "A", "userId": "u1", "messageId": "ok"},
                {"type": "track", "event": "A", "messageId": "no-ids"},
                {"type": "teleport", "userId": "u1", "messageId": "bad-type"},
                {"type": "track", "userId": "u1", "messageId": "no-event"},
                {"type": "track", "event": "A", "userId": ["x"], "messageId": "wrong-type"},
                {"type": "track", "event": "A", "userId": "u1", "timestamp": "last tuesday", "messageId": "bad-time"},
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 1);
    let rejected = body["rejected"].as_array().unwrap();
    let errors: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["error"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors[0],
        (1, "userId: an event needs a userId or an anonymousId")
    );
    assert!(
        errors[1].1.starts_with("type: unknown type \"teleport\""),
        "{:?}",
        errors[1]
    );
    assert_eq!(errors[2], (3, "event: is required for a track call"));
    assert_eq!(errors[3], (4, "userId: must be a string, not an array"));
    assert_eq!(
        errors[4],
        (
            5,
            "timestamp: \"last tuesday\" is not an ISO-8601 timestamp"
        )
    );
    assert_eq!(rejected[0]["messageId"], "no-ids");
    let (status, dl) = s.admin_get("/v1/dead-letters").await;
    assert_eq!(status, 200);
    let list = dl["deadLetters"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[2]["error"], "event: is required for a track call");
    assert!(list[2]["raw"].as_str().unwrap().contains("no-event"));
    assert_eq!(list[2]["source"], "web");
    s.stop().await;
}

#[tokio::test]
async fn single_event_endpoint_answers_400_naming_the_field() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post("/v1/track", json!({"userId": "u1", "messageId": "x"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_event");
    assert_eq!(body["error"]["field"], "event");
    assert_eq!(
        body["error"]["message"],
        "event: is required for a track call"
    );
    let (_, dl) = s.admin_get("/v1/dead-letters").await;
    assert_eq!(
        dl["deadLetters"].as_array().unwrap().len(),
        1,
        "kept for inspection"
    );
    let (status, body) = s
        .post("/v1/track", json!({"userId": "u1", "event": "Signed Up"}))
        .await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn whole_body_errors_are_400_with_json() {
    let s = TestServer::start_with(|c| {
        c.ingest.max_body_bytes = 64 * 1024;
        c.ingest.max_batch_bytes = 64 * 1024;
        c.ingest.max_event_bytes = 32 * 1024;
    })
    .await;
    let send = |body: Vec<u8>, encoding: Option<&'static str>| {
        let mut req = s
            .client
            .post(s.url("/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .header("content-type", "application/json")
            .body(body);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (st, b) = send(b"{this is not json".to_vec(), None).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("body is not valid JSON"));
    let (st, b) = send(b"{\"batch\": {}}".to_vec(), None).await;
    assert_eq!((st, b["error"]["field"].as_str()), (400, Some("batch")));
    let big = json!({"batch": (0..40).map(|i| json!({"type":"track","event":"A","userId":"u","properties":{"pad": "x".repeat(2000)},"messageId": format!("b{i}")})).collect::<Vec<_>>()});
    let big = serde_json::to_vec(&big).unwrap();
    assert!(big.len() > 64 * 1024);
    let (st, b) = send(big.clone(), None).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (400, Some("payload_too_large"))
    );
    // Compressed it fits the wire limit but not the decompressed one.
    let (st, b) = send(gzip(&big), Some("gzip")).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (400, Some("payload_too_large")),
        "{b}"
    );
    // A small, highly compressible bomb trips the ratio bound.
    let mut bomb = b"{\"batch\": [], \"pad\": \"".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 60_000));
    bomb.extend(b"\"}");
    let (st, b) = send(gzip(&bomb), Some("gzip")).await;
    assert_eq!(st, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expands more than"),
        "{b}"
    );
    let (st, b) = send(b"\x1f\x8bnot gzip".to_vec(), Some("gzip")).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    let (st, b) = send(b"{}".to_vec(), Some("br")).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (400, Some("unsupported_encoding"))
    );
    // One oversized event inside a valid batch is rejected alone.
    let (st, b) = s
        .post("/v1/batch", json!({"batch": [
            {"type":"track","event":"A","userId":"u","properties":{"pad": "x".repeat(33 * 1024)},"messageId":"huge"},
            {"type":"track","event":"A","userId":"u","messageId":"small"}]}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(b["accepted"], 1);
    assert!(b["rejected"][0]["error"]
        .as_str()
        .unwrap()
        .starts_with("size: event is "));
    s.stop().await;
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let s = TestServer::start().await;
    let body = serde_json::to_vec(
        &json!({"batch": [{"type":"track","event":"A","userId":"gz","messageId":"g1"}]}),
    )
    .unwrap();
    let r = s
        .client
        .post(s.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, _) = s.admin_get("/v1/profiles?userId=gz").await;
    assert_eq!(st, 200);
    s.stop().await;
}

#[tokio::test]
async fn write_keys_and_admin_tokens_are_checked() {
    let s = TestServer::start().await;
    let body = json!({"batch": [{"type":"track","event":"A","userId":"u","messageId":"k1"}]});
    let r = s
        .client
        .post(s.url("/v1/batch"))
        .basic_auth("wrong", Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unauthorized");
    let r = s
        .client
        .post(s.url("/v1/batch"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no key at all");
    let mut with_key = body.clone();
    with_key["writeKey"] = json!(WRITE_KEY);
    let r = s
        .client
        .post(s.url("/v1/batch"))
        .json(&with_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "writeKey in the body");
    // The write key never opens the read API.
    let r = s
        .client
        .get(s.url("/v1/profiles/u"))
        .bearer_auth(WRITE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s.client.get(s.url("/v1/profiles/u")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn duplicate_message_ids_are_stored_once() {
    let s = TestServer::start().await;
    let ev = json!({"type":"track","event":"Product Viewed","userId":"d","messageId":"same","sentAt":"2026-11-22T11:00:00Z"});
    let (_, b1) = s.post("/v1/batch", json!({"batch": [ev.clone()]})).await;
    let mut retry = ev.clone();
    retry["sentAt"] = json!("2026-11-22T11:00:05Z");
    let (_, b2) = s.post("/v1/batch", json!({"batch": [retry]})).await;
    assert_eq!(
        (b1["duplicates"].as_u64(), b2["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(b2["accepted"], 1, "a retry is acknowledged");
    let (_, p) = s.admin_get("/v1/profiles/d").await;
    assert_eq!(p["state"]["eventCount"], 1);
    s.stop().await;
}

#[tokio::test]
async fn clock_skew_is_corrected_from_sent_at() {
    let s = TestServer::start().await;
    // Server time is 12:00:00; the device thinks it is 11:00:00 when sending, so its event
    // stamped 10:59:00 really happened at 11:59:00.
    let (st, _) = s
        .post("/v1/batch", json!({"sentAt": "2026-11-22T11:00:00Z", "batch": [
            {"type":"track","event":"Product Viewed","userId":"skew","messageId":"s1","timestamp":"2026-11-22T10:59:00Z"}]}))
        .await;
    assert_eq!(st, 200);
    let (_, events) = s.admin_get("/v1/profiles/skew/events").await;
    assert_eq!(events["events"][0]["timestamp"], "2026-11-22T11:59:00.000Z");
    s.stop().await;
}

#[tokio::test]
async fn full_queue_answers_429_with_retry_after() {
    let s = TestServer::start_with(|c| c.ingest.queue_capacity = 1).await;
    let pause = s.state.ingest.pause().unwrap();
    // Give the writer a moment to take the pause command off the queue.
    for _ in 0..100 {
        if s.state.ingest.queue_len() == 0 {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let body = json!({"batch": [{"type":"track","event":"A","userId":"q","messageId":"q1"}]});
    let first = {
        let client = s.client.clone();
        let url = s.url("/v1/batch");
        let body = body.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .basic_auth(WRITE_KEY, Some(""))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    while s.state.ingest.queue_len() < 1 {
        tokio::task::yield_now().await;
    }
    let r = s
        .client
        .post(s.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"batch": [{"type":"track","event":"A","userId":"q","messageId":"q2"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    drop(pause);
    assert_eq!(first.await.unwrap(), 200);
    s.stop().await;
}

#[tokio::test]
async fn browser_endpoints_take_text_plain_and_answer_cors() {
    let s = TestServer::start().await;
    let r = s
        .client
        .post(s.url("/v1/t"))
        .header("content-type", "text/plain")
        .header("origin", "https://shop.example")
        .body(serde_json::to_vec(&json!({"writeKey": WRITE_KEY, "event": "Product Viewed", "anonymousId": "browser-1"})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let pre = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/v1/b"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 200);
    assert!(pre.headers().contains_key("access-control-allow-methods"));
    let other = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/v1/b"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    s.stop().await;
}

#[tokio::test]
async fn export_and_erase_a_person() {
    let s = TestServer::start().await;
    s.post("/v1/batch", json!({"batch": [
        {"type":"identify","userId":"gdpr-user","anonymousId":"gdpr-anon","traits":{"email":"gdpr@example.com"},"messageId":"e1"},
        {"type":"track","event":"Order Completed","userId":"gdpr-user","properties":{"revenue":10},"messageId":"e2"},
        {"type":"track","userId":"gdpr-user","messageId":"e3"},
    ]})).await;
    let (st, export) = s.admin_get("/v1/profiles/gdpr-user/export").await;
    assert_eq!(st, 200);
    assert_eq!(export["events"].as_array().unwrap().len(), 2);
    assert_eq!(export["deadLetters"].as_array().unwrap().len(), 1);
    assert_eq!(
        export["profile"]["identifiers"]["email"][0],
        "gdpr@example.com"
    );
    let r = s
        .client
        .delete(s.url("/v1/profiles/gdpr-user"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let erased: serde_json::Value = r.json().await.unwrap();
    assert_eq!(erased["events"], 2);
    assert_eq!(erased["deadLetters"], 1);
    let (st, _) = s.admin_get("/v1/profiles/gdpr-user").await;
    assert_eq!(st, 404);
    let (st, _) = s.admin_get("/v1/profiles?email=gdpr@example.com").await;
    assert_eq!(st, 404);
    // A late event of the erased person is dropped, not turned into a new profile.
    let (_, b) = s.post("/v1/batch", json!({"batch": [{"type":"track","event":"A","anonymousId":"gdpr-anon","messageId":"late"}]})).await;
    assert_eq!(b["suppressed"], 1);
    let (st, _) = s.admin_get("/v1/profiles?anonymousId=gdpr-anon").await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let s = TestServer::start().await;
    let r = s
        .client
        .get(s.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = r.json().await.unwrap();
    for path in [
        "/v1/batch",
        "/v1/track",
        "/v1/t",
        "/v1/profiles/{id}",
        "/v1/profiles/{id}/export",
        "/v1/dead-letters",
        "/v1/scores/{name}",
        "/v1/segments",
        "/v1/segments/{name}",
        "/v1/segments/{name}/members",
        "/v1/segments/{name}/changes",
        "/v1/backfill",
        "/v1/profiles/{id}/scores",
        "/v1/profiles/{id}/scores/{name}",
        "/v1/campaigns",
        "/v1/campaigns/{name}",
        "/v1/campaigns/{name}/report",
        "/v1/campaigns/{name}/changes",
        "/v1/messaging",
        "/v1/templates/{name}",
        "/v1/templates/{name}/preview",
        "/v1/outbox",
        "/v1/outbox/dead",
        "/v1/outbox/dead/{id}/redrive",
        "/v1/messages/{id}",
        "/v1/catalog/items",
        "/v1/catalog/items/{id}",
        "/v1/catalog/items/{id}/recommendations",
        "/v1/profiles/{id}/recommendations",
        "/v1/recommendations/status",
        "/v1/recommendations/rebuild",
        "/v1/unsubscribe",
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/versions/{version}/report",
        "/v1/models/{name}/versions/{version}/report.html",
        "/v1/models/{name}/activate",
        "/v1/models/{name}/rollback",
        "/v1/models/{name}/deactivate",
        "/v1/models/{name}/train",
        "/v1/models/{name}/training",
        "/v1/models/{name}/monitoring",
        "/v1/models/monitor",
        "/v1/profiles/{id}/predictions",
        "/v1/profiles/{id}/send-time",
        "/v1/send-time/priors",
        "/v1/send-time/receptive",
        "/health",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let r = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}
