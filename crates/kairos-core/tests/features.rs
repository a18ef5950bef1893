//! Model features from profile state: the built-ins, declared expressions (with windows the
//! state keeps because the features registered them) and one-hot traits.

mod support;

use kairos_core::features::FeatureDefs;
use kairos_core::time::{DAY, HOUR, MINUTE};
use kairos_core::{CoreConfig, Definitions, EventKind, Profile, ProfileId, Scoring};
use serde_json::json;
use support::{event, track};

const T0: i64 = 1_760_000_000_000;

fn defs() -> Definitions {
    let mut d = kairos_core::defaults::default_definitions();
    d.features = FeatureDefs {
        builtins: true,
        expressions: [
            (
                "shoe_views_7d",
                r#"count("Product Viewed" where category == "shoes", within: 7d)"#,
            ),
            ("big_spender", "lifetime_revenue > 100"),
            ("days_since_cart", r#"last("Added to Cart")"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        categorical: [(
            "plan".to_string(),
            vec!["free".to_string(), "pro".to_string()],
        )]
        .into_iter()
        .collect(),
    };
    d
}

#[test]
fn features_are_computed_from_the_profile_state_by_name() {
    let scoring = Scoring::compile(&defs(), None).unwrap_or_else(|e| panic!("{e}"));
    let f = &scoring.features;
    let cfg = CoreConfig::default();
    let mut p = Profile::new(ProfileId(1));
    let events = vec![
        event(
            0,
            EventKind::Identify,
            None,
            T0,
            json!({}),
            json!({"plan": "pro", "timezone": "UTC", "subscriptions": {"marketing": true}}),
        ),
        track(1, "Product Viewed", T0 + HOUR, json!({"category": "shoes"})),
        track(
            2,
            "Product Viewed",
            T0 + 2 * HOUR,
            json!({"category": "shirts"}),
        ),
        track(
            3,
            "Added to Cart",
            T0 + 3 * HOUR,
            json!({"product_id": "a", "price": 40, "quantity": 2}),
        ),
        track(4, "Order Completed", T0 + 4 * HOUR, json!({"revenue": 100})),
        track(5, "Order Completed", T0 + 2 * DAY, json!({"revenue": 50})),
        track(6, "Email Delivered", T0 + 3 * DAY, json!({})),
        track(7, "Email Delivered", T0 + 3 * DAY + MINUTE, json!({})),
        track(8, "Email Opened", T0 + 3 * DAY + HOUR, json!({})),
    ];
    for e in &events {
        p.apply(e, &cfg, &scoring, e.received_at);
    }
    let now = T0 + 4 * DAY;
    let v = f.extract(&p, &scoring, now);
    assert_eq!(v.len(), f.names.len());
    let get = |name: &str| {
        let i = f
            .names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no feature {name} in {:?}", f.names));
        v[i]
    };
    let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
    assert!(close(
        get("days_since_last_seen"),
        (now - (T0 + 3 * DAY + HOUR)) as f32 / DAY as f32
    ));
    assert!(close(get("days_since_first_seen"), 4.0));
    assert_eq!(get("events_total"), 9.0);
    assert_eq!(get("orders"), 2.0);
    assert_eq!(get("lifetime_revenue"), 150.0);
    assert_eq!(get("avg_order_value"), 75.0);
    assert!(close(get("days_since_last_order"), 2.0));
    assert_eq!(get("cart_items"), 0.0, "the order emptied the cart");
    assert_eq!(get("email_open_rate"), 0.5);
    assert_eq!(get("email_click_rate"), 0.0);
    assert_eq!(get("subscribed_marketing"), 1.0);
    assert_eq!(get("suppressed"), 0.0);
    assert!(get("score_engagement") > 0.0);
    assert_eq!(get("shoe_views_7d"), 1.0);
    assert_eq!(get("big_spender"), 1.0);
    assert!(close(
        get("days_since_cart"),
        (now - (T0 + 3 * HOUR)) as f32 / DAY as f32
    ));
    assert_eq!((get("plan=free"), get("plan=pro")), (0.0, 1.0));
    // No order yet: the average is missing, not zero.
    let fresh = f.extract(&Profile::new(ProfileId(2)), &scoring, now);
    let i = f
        .names
        .iter()
        .position(|n| n == "avg_order_value")
        .unwrap_or(usize::MAX);
    assert!(fresh[i].is_nan());
    // A week later the shoe view has left its window.
    let later = f.extract(&p, &scoring, now + 7 * DAY);
    let i = f
        .names
        .iter()
        .position(|n| n == "shoe_views_7d")
        .unwrap_or(usize::MAX);
    assert_eq!(later[i], 0.0);
}

#[test]
fn bad_feature_definitions_name_their_path() {
    let mut d = defs();
    d.features
        .expressions
        .insert("broken".into(), "count(\"X\", within: )".into());
    let e = Scoring::compile(&d, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("features.expressions.broken"), "{e}");
    let mut d = defs();
    d.features
        .expressions
        .insert("orders".into(), "orders * 2".into());
    let e = Scoring::compile(&d, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("defined twice"), "{e}");
    let mut d = defs();
    d.features.categorical.insert("country".into(), vec![]);
    assert!(Scoring::compile(&d, None).is_err());
}

#[test]
fn examples_take_features_at_the_cutoff_and_the_label_after_it_without_leakage() {
    let mut d = defs();
    d.campaigns.clear();
    d.features.expressions.insert(
        kairos_core::features::LABEL_FEATURE.into(),
        r#"did("Order Completed", within: 7d)"#.into(),
    );
    let scoring = Scoring::compile(&d, None).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&String> = scoring
        .features
        .names
        .iter()
        .filter(|n| *n != kairos_core::features::LABEL_FEATURE)
        .collect();
    let mut history = vec![
        track(1, "Product Viewed", T0, json!({"category": "shoes"})),
        track(2, "Order Completed", T0 + 10 * DAY, json!({"revenue": 80})),
        track(3, "Product Viewed", T0 + 20 * DAY, json!({})),
    ];
    history.reverse();
    let cutoffs = [
        T0 - DAY,
        T0 + DAY,
        T0 + 5 * DAY,
        T0 + 14 * DAY,
        T0 + 30 * DAY,
    ];
    let ex = kairos_core::features::examples(
        &mut history,
        &CoreConfig::default(),
        &scoring,
        &cutoffs,
        7 * DAY,
        T0 + 25 * DAY,
    );
    // Before the first event: no example; after data_end - horizon: none either.
    let got: Vec<(i64, bool)> = ex.iter().map(|e| (e.cutoff, e.label)).collect();
    assert_eq!(
        got,
        vec![
            (T0 + DAY, false),
            (T0 + 5 * DAY, true),
            (T0 + 14 * DAY, false)
        ]
    );
    let orders = names
        .iter()
        .position(|n| *n == "orders")
        .unwrap_or(usize::MAX);
    // The order on day 10 is the label of the day-5 example, not one of its features.
    assert_eq!(ex[1].features[orders], 0.0);
    assert_eq!(ex[2].features[orders], 1.0);
    assert!(ex.iter().all(|e| e.features.len() == names.len()));
}
