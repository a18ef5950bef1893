//! Scores and segments over real profiles: exact decay, caps, tiers, timers, priorities,
//! replay determinism, and definitions that must be refused.

use kairos_core::scoring::decay;
use kairos_core::time::{DAY, HOUR, MINUTE};
use kairos_core::{
    ChangeKind, CoreConfig, Definitions, Event, EventKind, Profile, ProfileId, ScoreDef, Scoring,
    SegmentDef,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const T0: i64 = 1_760_000_000_000;

fn track(i: usize, name: &str, ts: i64, props: Value) -> Event {
    Event {
        message_id: format!("m{i}"),
        kind: EventKind::Track,
        event: Some(name.into()),
        name: None,
        user_id: Some("u1".into()),
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        timestamp: ts,
        received_at: ts,
        properties: props.as_object().cloned().unwrap_or_default(),
        traits: Map::new(),
        context: Map::new(),
        source: String::new(),
    }
}

fn score(rules: &[&str], half_life: Option<&str>, tiers: Option<&str>) -> ScoreDef {
    ScoreDef {
        rules: rules.iter().map(|r| r.to_string()).collect(),
        half_life: half_life.map(str::to_string),
        tiers: tiers.map(str::to_string),
        ..ScoreDef::default()
    }
}

fn segment(rule: &str, priority: i32) -> SegmentDef {
    SegmentDef {
        rule: rule.into(),
        priority,
        ..SegmentDef::default()
    }
}

fn defs(scores: Vec<(&str, ScoreDef)>, segments: Vec<(&str, SegmentDef)>) -> Definitions {
    Definitions {
        scores: scores
            .into_iter()
            .map(|(n, d)| (n.to_string(), d))
            .collect(),
        segments: segments
            .into_iter()
            .map(|(n, d)| (n.to_string(), d))
            .collect(),
        ..Definitions::default()
    }
}

fn compiled(d: &Definitions) -> Scoring {
    Scoring::compile(d, None).unwrap_or_else(|e| panic!("{e}"))
}

fn raw(p: &Profile, scoring: &Scoring, name: &str, now: i64) -> f64 {
    let i = scoring
        .scores
        .iter()
        .position(|s| s.name == name)
        .unwrap_or(usize::MAX);
    p.derived.scores_at(scoring, now)[i].raw
}

/// 0..n in an order drawn from `seed` (Fisher-Yates with xorshift).
fn shuffled_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

fn points_defs() -> Definitions {
    defs(
        vec![(
            "engagement",
            score(
                &[
                    r#"when event.name == "A" then +3"#,
                    r#"when event.name == "B" then -2"#,
                    r#"when event.name == "C" then +7.5"#,
                ],
                Some("14d"),
                None,
            ),
        )],
        vec![],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The O(1) decayed value equals the naive sum of decayed points to 1e-9.
    #[test]
    fn decayed_score_equals_the_naive_sum(
        steps in prop::collection::vec((0usize..3, 0i64..5 * DAY), 1..200),
        read_after in 0i64..60 * DAY,
    ) {
        let scoring = compiled(&points_defs());
        let h = 14 * DAY;
        let cfg = CoreConfig::default();
        let mut p = Profile::new(ProfileId(1));
        let mut t = T0;
        let mut naive_points = Vec::new();
        for (i, (kind, gap)) in steps.iter().enumerate() {
            t += gap;
            let (name, pts) = [("A", 3.0), ("B", -2.0), ("C", 7.5)][*kind];
            p.apply(&track(i, name, t, json!({})), &cfg, &scoring, t);
            naive_points.push((t, pts));
        }
        let now = t + read_after;
        let naive: f64 = naive_points.iter().map(|(ti, pts)| pts * decay(Some(h), now - ti)).sum();
        let got = raw(&p, &scoring, "engagement", now);
        prop_assert!((got - naive).abs() <= 1e-9 * naive.abs().max(1.0), "{got} vs {naive}");
        // The explanation's contributions add up to the same value.
        let ex = p.derived.explain(&scoring, "engagement", now).unwrap_or_default();
        let sum: f64 = ex["contributions"].as_array().into_iter().flatten()
            .map(|c| c["contribution"].as_f64().unwrap_or(0.0)).sum();
        prop_assert!((sum - naive).abs() <= 1e-6 * naive.abs().max(1.0));
    }

    /// Shuffled arrival (late events replayed) gives the same scores, memberships and
    /// timer as in-order arrival.
    #[test]
    fn shuffled_arrival_gives_the_in_order_result(
        steps in prop::collection::vec((0usize..3, 0i64..3 * HOUR), 1..60),
        seed in any::<u64>(),
    ) {
        let d = defs(
            vec![("engagement", score(&[
                r#"when event.name == "A" then +10 at most 2 times per 1d"#,
                r#"when event.name == "B" and count("A", within: 2h) >= 1 then +5"#,
                r#"when event.name == "C" then -4"#,
            ], Some("2d"), Some("cold < 10 <= warm < 25 <= hot")))],
            vec![
                ("busy", segment(r#"count("A", within: 6h) >= 2"#, 2)),
                ("hot", segment(r#"tier.engagement == "hot""#, 1)),
            ],
        );
        let scoring = compiled(&d);
        let cfg = CoreConfig::default();
        let mut t = T0;
        let mut events = Vec::new();
        for (i, (kind, gap)) in steps.iter().enumerate() {
            t += gap;
            events.push(track(i, ["A", "B", "C"][*kind], t, json!({})));
        }
        let now = t + MINUTE;
        let mut in_order = Profile::new(ProfileId(1));
        for e in &events {
            in_order.apply(e, &cfg, &scoring, now);
        }
        // Arrive shuffled: fold in place when possible, replay when late.
        let order = shuffled_order(events.len(), seed);
        let mut shuffled = Profile::new(ProfileId(1));
        let mut seen: Vec<Event> = Vec::new();
        for &i in &order {
            let e = &events[i];
            seen.push(e.clone());
            if shuffled.needs_replay(e, &scoring) {
                let mut history = seen.clone();
                shuffled.rebuild(&mut history, &cfg, &scoring, now, "late event");
            } else {
                shuffled.apply(e, &cfg, &scoring, now);
            }
        }
        prop_assert_eq!(&shuffled.state, &in_order.state);
        let a = in_order.derived.scores_at(&scoring, now);
        let b = shuffled.derived.scores_at(&scoring, now);
        for (x, y) in a.iter().zip(&b) {
            prop_assert!((x.raw - y.raw).abs() <= 1e-9 * x.raw.abs().max(1.0));
            prop_assert_eq!(x.tier, y.tier);
        }
        prop_assert_eq!(
            shuffled.derived.segments.keys().collect::<Vec<_>>(),
            in_order.derived.segments.keys().collect::<Vec<_>>()
        );
        prop_assert_eq!(&shuffled.derived.primary, &in_order.derived.primary);
        prop_assert_eq!(shuffled.derived.timer, in_order.derived.timer);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Rules that read only the event take late events in place (no replay), and the
    /// result, caps and trend included, equals in-order arrival.
    #[test]
    fn late_events_for_event_only_rules_fold_in_place(
        steps in prop::collection::vec((0usize..3, 0i64..6 * HOUR), 1..80),
        seed in any::<u64>(),
    ) {
        let d = defs(
            vec![("engagement", score(&[
                r#"when event.name == "A" then +10 at most 2 times per 1d"#,
                r#"when event.name == "B" and event.properties.price > 50 then +5 at most 3 times per 6h"#,
                r#"when event.name == "C" then -4"#,
            ], Some("3d"), Some("cold < 10 <= warm < 25 <= hot")))],
            vec![],
        );
        let scoring = compiled(&d);
        let cfg = CoreConfig::default();
        let mut t = T0;
        let mut events = Vec::new();
        for (i, (kind, gap)) in steps.iter().enumerate() {
            t += gap;
            events.push(track(i, ["A", "B", "C"][*kind], t, json!({"price": (i * 37) % 100})));
        }
        let now = t + MINUTE;
        let mut in_order = Profile::new(ProfileId(1));
        for e in &events {
            in_order.apply(e, &cfg, &scoring, now);
        }
        let order = shuffled_order(events.len(), seed);
        let mut shuffled = Profile::new(ProfileId(1));
        let mut seen = Vec::new();
        for &i in &order {
            let e = &events[i];
            seen.push(e.clone());
            let late_by = shuffled.derived.applied.map_or(0, |a| a.0 - e.timestamp);
            if late_by <= kairos_core::scoring::LATE_LIMIT {
                prop_assert!(!shuffled.needs_replay(e, &scoring));
                shuffled.apply(e, &cfg, &scoring, now);
            } else {
                prop_assert!(shuffled.needs_replay(e, &scoring));
                let mut history = seen.clone();
                shuffled.rebuild(&mut history, &cfg, &scoring, now, "late event");
            }
        }
        let a = in_order.derived.explain(&scoring, "engagement", now).unwrap_or_default();
        let b = shuffled.derived.explain(&scoring, "engagement", now).unwrap_or_default();
        let close = |x: &Value, y: &Value| (x.as_f64().unwrap_or(0.0) - y.as_f64().unwrap_or(0.0)).abs() <= 1e-6;
        prop_assert!(close(&a["raw"], &b["raw"]), "{a} vs {b}");
        for k in ["1d", "7d", "30d"] {
            prop_assert!(close(&a["trend"][k], &b["trend"][k]), "trend {k}: {a} vs {b}");
        }
        for (x, y) in a["contributions"].as_array().into_iter().flatten()
            .zip(b["contributions"].as_array().into_iter().flatten()) {
            prop_assert_eq!(&x["fired"], &y["fired"]);
            prop_assert_eq!(&x["capped"], &y["capped"]);
            prop_assert!(close(&x["contribution"], &y["contribution"]));
        }
    }

    /// Re-evaluating only what an event or timer may have changed gives exactly what
    /// re-evaluating everything gives: same memberships, tiers and timer, no change missed.
    #[test]
    fn selective_evaluation_equals_full_evaluation(
        steps in prop::collection::vec((0usize..16, 0i64..90 * MINUTE), 1..80),
    ) {
        let mut d = kairos_core::defaults::default_definitions();
        d.segments.insert("hot_and_viewing".into(), segment(
            r#"tier.engagement == "hot" or (score.purchase_intent >= 15 and in_segment("recent_viewers"))"#, 0));
        d.segments.insert("evening".into(), segment("local_hour >= 18", 8));
        d.segments.insert("pro".into(), segment(r#"traits.plan == "pro""#, 9));
        // Segments reading the groups of fields events write only sometimes: the zone,
        // first_seen, subscriptions and consent.
        d.segments.insert("berlin_monday".into(), segment(
            r#"timezone == "Europe/Berlin" or local_weekday == 1"#, 10));
        d.segments.insert("fresh".into(), segment("first_seen < 3h and event_count < 20", 11));
        d.segments.insert("reachable".into(), segment(
            r#"subscribed("marketing") and not subscribed("offers") and consented("analytics")"#, 12));
        d.segments.insert("mail_state".into(), segment(
            "suppressed or email_delivered >= 2 or last_email_click < 1h or cart_value > 50", 13));
        let scoring = compiled(&d);
        let cfg = CoreConfig::default();
        let names = ["Product Viewed", "Added to Cart", "Order Completed", "Email Opened",
                     "Email Clicked", "Checkout Started", "identify", "Subscribed",
                     "Unsubscribed", "Consent Updated", "page in a zone", "identify a zone",
                     "identify subscriptions", "Email Delivered", "Email Bounced", "Product Removed"];
        let zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo"];
        let mut p = Profile::new(ProfileId(1));
        let mut t = T0;
        for (i, (k, gap)) in steps.iter().enumerate() {
            t += gap;
            let props = match names[*k] {
                "Subscribed" | "Unsubscribed" => {
                    json!({"list": if i % 3 == 0 { "offers" } else { "marketing" }})
                }
                "Consent Updated" => json!({"purposes": {"analytics": i % 2 == 0}}),
                "Email Bounced" => json!({"type": if i % 2 == 0 { "hard" } else { "soft" }}),
                _ => json!({"revenue": 400, "product_id": "p1", "price": 30}),
            };
            let mut e = track(i, names[*k], t, props);
            let identify = |e: &mut Event, traits: serde_json::Value| {
                e.kind = EventKind::Identify;
                e.event = None;
                e.traits = traits.as_object().cloned().unwrap_or_default();
            };
            match names[*k] {
                "identify" => identify(&mut e, json!({"plan": if i % 2 == 0 { "pro" } else { "free" }})),
                "identify a zone" => identify(&mut e, json!({"timezone": zones[i % 3]})),
                "identify subscriptions" => identify(&mut e, json!({
                    "subscriptions": {"marketing": i % 2 == 0},
                    "consent": {"analytics": "granted"},
                })),
                "page in a zone" => {
                    e.kind = EventKind::Page;
                    e.event = None;
                    e.context.insert("timezone".into(), json!(zones[(i + 1) % 3]));
                }
                _ => {}
            }
            p.apply(&e, &cfg, &scoring, t);
            let mut full = p.clone();
            let missed = full.reevaluate(&scoring, t, kairos_core::profile::Reason::Timer);
            prop_assert!(missed.is_empty(), "missed after event {i}: {missed:?}");
            prop_assert_eq!(full.derived.timer, p.derived.timer);
        }
        // And through the timers alone, for two days.
        let end = t + 2 * DAY;
        while let Some(next) = p.derived.timer.filter(|x| *x <= end) {
            p.catch_up(&scoring, next);
            let mut full = p.clone();
            let missed = full.reevaluate(&scoring, next, kairos_core::profile::Reason::Timer);
            prop_assert!(missed.is_empty(), "missed at timer {next}: {missed:?}");
            prop_assert_eq!(full.derived.timer, p.derived.timer);
        }
    }
}

#[test]
fn caps_count_the_first_n_matches_of_each_window() {
    let d = defs(
        vec![(
            "engagement",
            score(
                &[r#"when event.name == "Email Opened" then +5 at most 3 times per 1d"#],
                None,
                None,
            ),
        )],
        vec![],
    );
    let scoring = compiled(&d);
    let cfg = CoreConfig::default();
    let mut p = Profile::new(ProfileId(1));
    for i in 0..5 {
        let t = T0 + i * HOUR;
        p.apply(
            &track(i as usize, "Email Opened", t, json!({})),
            &cfg,
            &scoring,
            t,
        );
    }
    assert_eq!(raw(&p, &scoring, "engagement", T0 + 5 * HOUR), 15.0);
    // The next UTC day is a new window.
    let t = T0 + DAY + 30 * MINUTE;
    p.apply(&track(9, "Email Opened", t, json!({})), &cfg, &scoring, t);
    assert_eq!(raw(&p, &scoring, "engagement", t), 20.0);
    let ex = p
        .derived
        .explain(&scoring, "engagement", t)
        .unwrap_or_default();
    assert_eq!(ex["contributions"][0]["fired"], 4);
    assert_eq!(ex["contributions"][0]["capped"], 2);
}

#[test]
fn a_decaying_score_changes_tier_on_its_timer_and_clamps_on_read() {
    let mut s = score(
        &[
            r#"when event.name == "Order Completed" then +80"#,
            r#"when event.name == "Unsubscribed" then -500"#,
        ],
        Some("1d"),
        Some("cold < 30 <= warm < 70 <= hot"),
    );
    s.min = Some(0.0);
    s.max = Some(100.0);
    let d = defs(vec![("intent", s)], vec![]);
    let scoring = compiled(&d);
    let cfg = CoreConfig::default();
    let mut p = Profile::new(ProfileId(1));
    let changes = p.apply(
        &track(1, "Order Completed", T0, json!({})),
        &cfg,
        &scoring,
        T0,
    );
    assert!(changes.iter().any(|c| matches!(&c.kind,
        ChangeKind::Tier { to: Some(t), .. } if &**t == "hot")));
    // 80 decays to 70 after log2(80/70) days: the timer is set for that instant.
    let expected = T0 + (DAY as f64 * (80.0f64 / 70.0).log2()).ceil() as i64;
    let timer = p.derived.timer.unwrap_or(0);
    assert!((timer - expected).abs() <= 1, "{timer} vs {expected}");
    let changes = p.catch_up(&scoring, timer + 1);
    assert_eq!(
        changes.iter().map(|c| c.kind.clone()).collect::<Vec<_>>(),
        vec![ChangeKind::Tier {
            score: "intent".into(),
            from: Some("hot".into()),
            to: Some("warm".into())
        }]
    );
    // Far below zero raw, shown as the minimum; the explanation says it was clamped.
    let t = T0 + 2 * DAY;
    p.apply(&track(2, "Unsubscribed", t, json!({})), &cfg, &scoring, t);
    let ex = p.derived.explain(&scoring, "intent", t).unwrap_or_default();
    assert_eq!(ex["value"], 0.0);
    assert_eq!(ex["clamped"], true);
    assert_eq!(ex["tier"], "cold");
    assert_eq!(
        ex["contributions"][0]["rule"],
        r#"when event.name == "Unsubscribed" then -500"#
    );
}

#[test]
fn activity_windows_exit_by_timer_without_a_new_event() {
    let d = defs(vec![], vec![("active_now", segment("last_seen < 15m", 3))]);
    let scoring = compiled(&d);
    let cfg = CoreConfig::default();
    let mut p = Profile::new(ProfileId(1));
    let changes = p.apply(&track(1, "Page Viewed", T0, json!({})), &cfg, &scoring, T0);
    assert_eq!(changes.len(), 2, "{changes:?}"); // enter + primary
    assert_eq!(p.derived.timer, Some(T0 + 15 * MINUTE));
    assert!(p.catch_up(&scoring, T0 + 15 * MINUTE - 1).is_empty());
    let changes = p.catch_up(&scoring, T0 + 15 * MINUTE + 5 * MINUTE);
    assert_eq!(
        changes[0].kind,
        ChangeKind::Exit {
            segment: "active_now".into()
        }
    );
    assert_eq!(&*changes[0].reason, "time passed");
    assert_eq!(
        changes[0].at,
        T0 + 15 * MINUTE,
        "recorded when the window closed"
    );
    assert_eq!(p.derived.timer, None);
    assert_eq!(p.derived.primary, None);
}

#[test]
fn the_primary_segment_is_the_member_with_the_highest_priority() {
    let d = defs(
        vec![],
        vec![
            ("vip", segment("lifetime_revenue >= 100", 1)),
            (
                "recent_browsers",
                segment(r#"did("Product Viewed", within: 1d)"#, 2),
            ),
            (
                "lapsed",
                segment(
                    r#"not did("Order Completed", within: 90d) and orders > 0"#,
                    3,
                ),
            ),
        ],
    );
    let scoring = compiled(&d);
    let cfg = CoreConfig::default();
    let mut p = Profile::new(ProfileId(1));
    p.apply(
        &track(1, "Product Viewed", T0, json!({})),
        &cfg,
        &scoring,
        T0,
    );
    assert_eq!(p.derived.primary.as_deref(), Some("recent_browsers"));
    let t = T0 + HOUR;
    p.apply(
        &track(2, "Order Completed", t, json!({"revenue": 250})),
        &cfg,
        &scoring,
        t,
    );
    assert_eq!(p.derived.primary.as_deref(), Some("vip"));
    assert_eq!(p.derived.segments.len(), 2);
    let view = p.view_scored(&scoring, t);
    assert_eq!(view["derived"]["primary_segment"], "vip");
}

#[test]
fn bad_definitions_are_refused_with_their_path() {
    let err = |d: Definitions| Scoring::compile(&d, None).err().map(|e| e.to_string());
    let e = err(defs(vec![], vec![("x", segment("score.nope > 1", 1))])).unwrap_or_default();
    assert!(e.starts_with("segments.x.rule: 1:"), "{e}");
    let e = err(defs(
        vec![("s", score(&["when in_segment(\"x\") then +1"], None, None))],
        vec![("x", segment("orders > 1", 1))],
    ))
    .unwrap_or_default();
    assert!(e.contains("score rules cannot read segments"), "{e}");
    let e = err(defs(
        vec![],
        vec![
            ("a", segment("in_segment(\"b\")", 1)),
            ("b", segment("in_segment(\"a\")", 1)),
        ],
    ))
    .unwrap_or_default();
    assert!(e.contains("cycle"), "{e}");
    let e = err(defs(
        vec![("s", score(&["when orders > 1 then 5"], None, None))],
        vec![],
    ))
    .unwrap_or_default();
    assert_eq!(
        e,
        "scores.s.rules[0]: 1:22: expected `+` or `-` and the points, found number 5"
    );
    let e = err(defs(vec![], vec![("x", segment("last_seen < \"15m\"", 1))])).unwrap_or_default();
    assert!(e.starts_with("segments.x.rule: 1:"), "{e}");
    let e = err(defs(vec![("bad name", score(&[], None, None))], vec![])).unwrap_or_default();
    assert!(e.contains("not a valid name"), "{e}");
    // Unknown event names are accepted, with a warning.
    let known = ["Order Completed".to_string()].into_iter().collect();
    let ok = Scoring::compile(
        &defs(
            vec![],
            vec![("x", segment(r#"did("Order Complete", within: 1d)"#, 1))],
        ),
        Some(&known),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.warnings.len(), 1, "{:?}", ok.warnings);
}

#[test]
fn redefining_segments_equals_evaluating_everything() {
    let a = kairos_core::defaults::default_definitions();
    let sa = compiled(&a);
    let mut b = a.clone();
    b.segments.insert(
        "viewers_2".into(),
        segment(r#"count("Product Viewed", within: 2h) >= 2"#, 0),
    );
    b.segments
        .insert("active_shoppers".into(), segment("last_seen < 5m", 4));
    b.segments.remove("lapsed");
    // The win-back campaign targets it: a segment a campaign uses cannot go alone.
    b.campaigns.remove("win_back");
    let sb = compiled(&b);
    let (changed, remap) = kairos_core::scoring::definitions_delta(&sa, &sb);
    let cfg = CoreConfig::default();
    for seed in 0..40u64 {
        let mut p = Profile::new(ProfileId(1));
        let mut t = T0;
        let names = [
            "Product Viewed",
            "Added to Cart",
            "Order Completed",
            "Email Opened",
        ];
        for i in 0..(5 + seed as usize % 20) {
            t += ((seed * 7919 + i as u64 * 104_729) % (40 * 60_000)) as i64;
            p.apply(
                &track(
                    i,
                    names[(seed as usize + i) % 4],
                    t,
                    json!({"revenue": 600}),
                ),
                &cfg,
                &sa,
                t,
            );
        }
        let now = t + (seed as i64 % 7) * MINUTE;
        let mut quick = p.clone();
        let mut full = p.clone();
        let q = quick.redefine(&sb, now, &changed, &remap);
        let f = full.reevaluate(
            &sb,
            now,
            kairos_core::profile::Reason::Replay("definitions changed"),
        );
        assert_eq!(quick.derived.segments, full.derived.segments, "seed {seed}");
        assert_eq!(quick.derived.primary, full.derived.primary, "seed {seed}");
        assert_eq!(quick.derived.timer, full.derived.timer, "seed {seed}");
        assert_eq!(q, f, "seed {seed}");
    }
}
