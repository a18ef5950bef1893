//! Catalog and recommendations against a server on 127.0.0.1:0: the catalog API with its
//! validation, recommendations for a cart and for browsing with their reasons, filters,
//! erasure, and the template variable in a preview.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

async fn put(s: &TestServer, id: &str, body: Value) -> (u16, Value) {
    s.admin_put(&format!("/v1/catalog/items/{id}"), body).await
}

async fn rebuild(s: &TestServer) -> Value {
    let (st, body) = s
        .admin_send(reqwest::Method::POST, "/v1/recommendations/rebuild", None)
        .await;
    assert_eq!(st, 200, "{body}");
    body["status"].clone()
}

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

const T: &str = "2026-11-22T10:00:00.000Z";

fn order(user: &str, n: usize, products: &[&str]) -> Value {
    let lines: Vec<Value> = products
        .iter()
        .map(|p| json!({"product_id": p, "price": 10}))
        .collect();
    json!({"type": "track", "event": "Order Completed", "userId": user, "messageId": format!("o-{user}-{n}"),
           "properties": {"order_id": format!("{user}-{n}"), "revenue": 10, "products": lines}, "timestamp": T})
}

#[tokio::test]
async fn catalog_api_validates_pages_and_bulk_imports() {
    let s = TestServer::start().await;
    let (st, body) = put(
        &s,
        "cam-1",
        json!({"title": "Camera", "category": "Cameras", "price": 499.0,
        "tags": ["mirrorless"], "image_url": "https://shop.example/cam.png"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["created"], true);
    let (_, body) = put(&s, "cam-1", json!({"title": "Camera II", "price": 549})).await;
    assert_eq!(body["created"], false);
    let (st, body) = s.admin_get("/v1/catalog/items/cam-1").await;
    assert_eq!(
        (st, body["item"]["title"].as_str()),
        (200, Some("Camera II"))
    );
    // Bad input: 400 naming the field.
    for (bad, field) in [
        (json!({"title": "x", "price": -3}), "price"),
        (json!({"title": "x", "price": "cheap"}), "price"),
        (json!({"price": 3}), "title"),
        (json!({"title": "x", "in_stock": "yes"}), "in_stock"),
        (json!({"title": "x", "colour": "red"}), "colour"),
        (
            json!({"title": "x", "image_url": "javascript:alert(1)"}),
            "image_url",
        ),
        (json!({"title": "x", "id": "other"}), "id"),
    ] {
        let (st, body) = put(&s, "p", bad.clone()).await;
        assert_eq!(st, 400, "{bad} -> {body}");
        assert_eq!(body["error"]["field"], field, "{bad} -> {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter");
    }
    let r = s
        .client
        .put(s.url("/v1/catalog/items/p"))
        .bearer_auth(ADMIN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Bulk: JSON lines, one bad line rejected alone.
    let lines = (0..250)
        .map(|i| {
            json!({"id": format!("sku-{i:03}"), "title": format!("Item {i}"), "category": "Misc"})
                .to_string()
        })
        .chain([
            json!({"id": "bad", "title": "Bad", "price": -1}).to_string(),
            "nope".into(),
        ])
        .collect::<Vec<_>>()
        .join("\n");
    let r = s
        .client
        .post(s.url("/v1/catalog/items"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/x-ndjson")
        .body(lines)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["stored"], 250, "{body}");
    assert_eq!(body["rejected"][0]["index"], 250);
    assert_eq!(body["rejected"][0]["id"], "bad");
    assert_eq!(body["rejected"][0]["field"], "price");
    assert_eq!(body["rejected"][1]["index"], 251);
    // A JSON array works too.
    let (st, body) = s
        .admin_send(
            reqwest::Method::POST,
            "/v1/catalog/items",
            Some(json!([{"product_id": "seg-1", "name": "From Segment"}])),
        )
        .await;
    assert_eq!((st, body["stored"].as_u64()), (200, Some(1)), "{body}");
    // Paging.
    let (_, page) = s.admin_get("/v1/catalog/items?limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 100);
    assert_eq!(page["items"][0]["id"], "cam-1");
    let next = page["next"].as_str().unwrap().to_string();
    let (_, page2) = s
        .admin_get(&format!("/v1/catalog/items?limit=1000&after={next}"))
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 152);
    assert_eq!(page2["next"], Value::Null);
    let (st, body) = s.admin_get("/v1/catalog/items?limit=0").await;
    assert_eq!((st, body["error"]["field"].as_str()), (400, Some("limit")));
    // Delete.
    let (st, _) = s
        .admin_send(reqwest::Method::DELETE, "/v1/catalog/items/cam-1", None)
        .await;
    assert_eq!(st, 200);
    let (st, _) = s.admin_get("/v1/catalog/items/cam-1").await;
    assert_eq!(st, 404);
    // Admin only.
    let r = s
        .client
        .get(s.url("/v1/catalog/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    s.stop().await;
}

#[tokio::test]
async fn carts_get_complements_with_reasons_filters_hold_and_erasure_forgets() {
    let s = TestServer::start().await;
    for (id, title, cat, price) in [
        ("camera", "Camera", "Cameras", 499.0),
        ("lens", "Zoom Lens", "Lenses", 299.0),
        ("bag", "Camera Bag", "Bags", 59.0),
        ("tent", "Tent", "Outdoor", 199.0),
        ("stove", "Camping Stove", "Outdoor", 49.0),
        ("mug", "Mug", "Kitchen", 9.0),
    ] {
        let (st, body) = put(
            &s,
            id,
            json!({"title": title, "category": cat, "price": price, "url": format!("https://shop.example/{id}")}),
        )
        .await;
        assert_eq!(st, 200, "{body}");
    }
    let mut batch = Vec::new();
    for u in 0..8 {
        batch.push(order(&format!("buyer{u}"), 0, &["camera", "lens"]));
        if u % 2 == 0 {
            batch.push(json!({"type": "track", "event": "Added to Cart", "userId": format!("buyer{u}"),
                "messageId": format!("c-{u}"), "properties": {"product_id": "bag"}, "timestamp": T}));
        }
    }
    for u in 0..5 {
        batch.push(order(&format!("camper{u}"), 0, &["tent", "stove"]));
    }
    for u in 0..20 {
        batch.push(
            json!({"type": "track", "event": "Product Viewed", "userId": format!("viewer{u}"),
            "messageId": format!("v-{u}"), "properties": {"product_id": "mug"}, "timestamp": T}),
        );
    }
    // Ada has a camera in her cart.
    batch.push(
        json!({"type": "track", "event": "Added to Cart", "userId": "ada", "messageId": "ada-1",
        "properties": {"product_id": "camera", "name": "Camera", "price": 499}, "timestamp": T}),
    );
    let (st, body) = s.post("/v1/batch", json!({ "batch": batch })).await;
    assert_eq!(st, 200, "{body}");
    let status = rebuild(&s).await;
    assert_eq!(status["caught_up"], true, "{status}");
    assert!(
        status["last_build"]["people"].as_u64().unwrap() >= 34,
        "{status}"
    );

    let (st, body) = s
        .admin_get("/v1/profiles/ada/recommendations?context=cart&n=3")
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["context"], "cart");
    let got = ids(&body);
    assert_eq!(got[0], "lens", "{body}");
    assert_eq!(
        body["items"][0]["reason"],
        json!({"source": "co_purchase", "with": "camera"})
    );
    assert_eq!(body["items"][0]["reason_text"], "often bought with Camera");
    assert_eq!(body["items"][0]["url"], "https://shop.example/lens");
    assert!(got.contains(&"bag".to_string()), "{body}");
    assert!(!got.contains(&"camera".to_string()), "in the cart: {body}");

    // Out of stock: never recommended.
    put(
        &s,
        "lens",
        json!({"title": "Zoom Lens", "category": "Lenses", "in_stock": false}),
    )
    .await;
    rebuild(&s).await;
    let (_, body) = s
        .admin_get("/v1/profiles/ada/recommendations?context=cart&n=3")
        .await;
    assert!(!ids(&body).contains(&"lens".to_string()), "{body}");
    assert_eq!(ids(&body)[0], "bag", "{body}");

    // A product's own page: bought with it.
    let (st, body) = s
        .admin_get("/v1/catalog/items/tent/recommendations?n=2")
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(ids(&body)[0], "stove");

    // A new person: popular products, reason given.
    s.post(
        "/v1/track",
        json!({"userId": "newbie", "event": "Signed Up", "timestamp": T}),
    )
    .await;
    let (st, body) = s.admin_get("/v1/profiles/newbie/recommendations").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        5,
        "everything in stock: {body}"
    );
    assert!(
        ["popular", "trending"].contains(&body["items"][0]["reason"]["source"].as_str().unwrap())
    );

    // Just bought: not recommended again.
    s.post("/v1/batch", json!({"batch": [order("ada", 1, &["bag"])]}))
        .await;
    rebuild(&s).await;
    let (_, body) = s.admin_get("/v1/profiles/ada/recommendations?n=6").await;
    assert!(!ids(&body).contains(&"bag".to_string()), "{body}");

    // Parameters are checked.
    for (q, field) in [
        ("n=0", "n"),
        ("n=many", "n"),
        ("context=email", "context"),
        ("method=magic", "method"),
    ] {
        let (st, body) = s
            .admin_get(&format!("/v1/profiles/ada/recommendations?{q}"))
            .await;
        assert_eq!(st, 400, "{q}: {body}");
        assert_eq!(body["error"]["field"], field, "{q}: {body}");
    }
    let (st, _) = s.admin_get("/v1/profiles/nobody/recommendations").await;
    assert_eq!(st, 404);

    // The abandoned-cart template shows them.
    let (st, p) = s
        .admin_send(
            reqwest::Method::POST,
            "/v1/templates/cart_abandonment/preview",
            Some(json!({"profile": "ada"})),
        )
        .await;
    assert_eq!(st, 200, "{p}");
    let html = p["html"].as_str().unwrap();
    assert!(html.contains("You may also like"), "{html}");
    // Her order emptied the cart, so the browse context ran: never the fallback text.
    assert!(!html.contains("Your cart is saved"), "{html}");

    // Erasure: the person's history leaves the model at once, and their pairs at the
    // next rebuild.
    let before = rebuild(&s).await["last_build"]["people"].as_u64().unwrap();
    let (st, _) = s
        .admin_send(reqwest::Method::DELETE, "/v1/profiles/buyer0", None)
        .await;
    assert_eq!(st, 200);
    let after = rebuild(&s).await["last_build"]["people"].as_u64().unwrap();
    assert_eq!(after, before - 1);
    s.stop().await;
}

/// The tailer keeps identifiers it looked up until its next rebuild: events of an
/// anonymous visitor who was merged into a known person meanwhile must still end up in
/// that person's history, not in a second person's.
#[tokio::test]
async fn browsing_before_and_after_a_merge_lands_in_one_history() {
    let s = TestServer::start().await;
    let view = |anon: &str, n: usize, product: &str| {
        json!({"type": "track", "event": "Product Viewed", "anonymousId": anon,
               "messageId": format!("v-{anon}-{n}"), "properties": {"product_id": product},
               "timestamp": T})
    };
    s.post(
        "/v1/batch",
        json!({"batch": [order("zed", 0, &["kettle"]), view("anon-z", 0, "stove")]}),
    )
    .await;
    let people = |st: &Value| st["last_build"]["people"].as_u64().unwrap();
    let first = rebuild(&s).await;
    assert_eq!(people(&first), 2, "zed and the anonymous visitor: {first}");
    let folded = first["interactions_folded"].as_u64().unwrap();
    // One more view, read by the tailer on its own (it looks the visitor up then).
    s.post("/v1/batch", json!({"batch": [view("anon-z", 1, "tent")]}))
        .await;
    for _ in 0..200 {
        let (_, st) = s.admin_get("/v1/recommendations/status").await;
        if st["status"]["interactions_folded"].as_u64().unwrap() > folded {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The visitor logs in: both profiles merge; then views again.
    s.post(
        "/v1/identify",
        json!({"userId": "zed", "anonymousId": "anon-z", "timestamp": T}),
    )
    .await;
    s.post("/v1/batch", json!({"batch": [view("anon-z", 2, "mug")]}))
        .await;
    let st = rebuild(&s).await;
    assert_eq!(people(&st), 1, "{st}");
    let (code, body) = s.admin_get("/v1/profiles/zed/recommendations?n=5").await;
    assert_eq!(code, 200, "{body}");
    s.stop().await;
}
