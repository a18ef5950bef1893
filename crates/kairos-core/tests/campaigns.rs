//! Campaign decisions in the pure core: the abandoned-cart flow of the source documents,
//! exits, consent, caps with priorities, quiet hours (DST), A/B assignment and holdout,
//! attribution, and independence from how promptly timers ran.

mod support;

use kairos_core::campaign::{
    parse_quiet_hours, parse_schedule, CampaignDef, ConversionDef, MessageStatus, MessagingDef,
    Metric, StepDef, TriggerDef, VariantDef,
};
use kairos_core::time::{format_timestamp, time_zone, DAY, HOUR, MINUTE};
use kairos_core::{
    Change, ChangeKind, CoreConfig, Definitions, Event, EventKind, Profile, ProfileId, Scoring,
    SegmentDef,
};
use serde_json::json;
use std::collections::BTreeMap;
use support::{event, track};

/// 2025-10-09T08:53:20Z: 10:53 in Berlin (CEST).
const T0: i64 = 1_760_000_000_000;

/// An identify that gives an address, a time zone and the marketing subscription.
fn identify(i: usize, ts: i64, subscribed: bool) -> Event {
    event(
        i,
        EventKind::Identify,
        None,
        ts,
        json!({}),
        json!({"email": "ada@example.com", "first_name": "Ada", "timezone": "Europe/Berlin",
               "subscriptions": {"marketing": if subscribed { "subscribed" } else { "unsubscribed" }}}),
    )
}

fn cart_campaign() -> CampaignDef {
    CampaignDef {
        trigger: TriggerDef {
            event: Some(r#"event.name == "Added to Cart""#.into()),
            ..TriggerDef::default()
        },
        wait: Some("30m".into()),
        exit: Some(r#"did("Order Completed", since: trigger)"#.into()),
        template: Some("cart".into()),
        priority: 2,
        ..CampaignDef::default()
    }
}

fn definitions(campaigns: Vec<(&str, CampaignDef)>) -> Definitions {
    Definitions {
        campaigns: campaigns
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect(),
        ..Definitions::default()
    }
}

fn compiled(d: &Definitions) -> Scoring {
    Scoring::compile(d, None).unwrap_or_else(|e| panic!("{e}"))
}

/// Message changes only, as (campaign, status, at) with the reason.
fn messages(changes: &[Change]) -> Vec<(String, &'static str, i64, String)> {
    changes
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Message {
                campaign, status, ..
            } => Some((
                campaign.clone(),
                status.as_str(),
                c.at,
                c.reason.to_string(),
            )),
            _ => None,
        })
        .collect()
}

fn statuses(changes: &[Change]) -> Vec<(String, &'static str)> {
    messages(changes)
        .into_iter()
        .map(|(c, s, _, _)| (c, s))
        .collect()
}

fn queued(changes: &[Change]) -> Vec<&kairos_core::campaign::Outgoing> {
    changes
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Message {
                status: MessageStatus::Queued(o),
                ..
            } => Some(o.as_ref()),
            _ => None,
        })
        .collect()
}

struct Run {
    profile: Profile,
    scoring: Scoring,
    cfg: CoreConfig,
    changes: Vec<Change>,
}

impl Run {
    fn new(d: &Definitions) -> Self {
        Self {
            profile: Profile::new(ProfileId(7)),
            scoring: compiled(d),
            cfg: CoreConfig::default(),
            changes: Vec::new(),
        }
    }
    fn apply(&mut self, ev: &Event) {
        let c = self
            .profile
            .apply(ev, &self.cfg, &self.scoring, ev.received_at);
        self.changes.extend(c);
    }
    /// The timer thread at `now`.
    fn tick(&mut self, now: i64) {
        let c = self.profile.catch_up(&self.scoring, now);
        self.changes.extend(c);
    }
}

#[test]
fn an_abandoned_cart_gets_exactly_one_email_thirty_minutes_later_with_the_cart() {
    let d = definitions(vec![("cart_abandonment", cart_campaign())]);
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    let cart = json!({"product_id": "sku-1", "name": "Red Shoes", "price": 80, "quantity": 1});
    r.apply(&track(2, "Added to Cart", T0 + MINUTE, cart.clone()));
    assert_eq!(
        statuses(&r.changes),
        vec![("cart_abandonment".into(), "entered")]
    );
    // The journey's wake-up is the profile's timer: the host needs no event to send.
    assert_eq!(r.profile.timer(), Some(T0 + 31 * MINUTE));
    r.tick(T0 + 31 * MINUTE - 1);
    assert_eq!(queued(&r.changes).len(), 0);
    r.tick(T0 + 31 * MINUTE);
    let sent = queued(&r.changes);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].template, "cart");
    assert_eq!(sent[0].channel, "email");
    assert_eq!(sent[0].to.as_deref(), Some("ada@example.com"));
    assert_eq!(sent[0].event, cart);
    let at = messages(&r.changes).last().map(|m| m.2);
    assert_eq!(at, Some(T0 + 31 * MINUTE));
    // Later timers and events send nothing more; another cart add within the journey is
    // ignored, one after it starts a new journey.
    r.tick(T0 + 5 * HOUR);
    r.apply(&track(3, "Product Viewed", T0 + 5 * HOUR, json!({})));
    assert_eq!(queued(&r.changes).len(), 1);
    assert_eq!(r.profile.timer(), None);
}

#[test]
fn an_order_before_the_wait_ends_exits_the_journey_and_nothing_is_sent() {
    let d = definitions(vec![("cart_abandonment", cart_campaign())]);
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    r.apply(&track(
        2,
        "Added to Cart",
        T0 + MINUTE,
        json!({"product_id": "a"}),
    ));
    r.apply(&track(
        3,
        "Order Completed",
        T0 + 20 * MINUTE,
        json!({"revenue": 80}),
    ));
    r.tick(T0 + 2 * HOUR);
    let m = messages(&r.changes);
    assert_eq!(
        m.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec!["entered", "exited"]
    );
    assert_eq!(m[1].2, T0 + 20 * MINUTE);
    assert!(m[1].3.contains("Order Completed"), "{}", m[1].3);
    // An order from before the cart does not count: `since: trigger`.
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    r.apply(&track(
        2,
        "Order Completed",
        T0 + MINUTE,
        json!({"revenue": 80}),
    ));
    r.apply(&track(
        3,
        "Added to Cart",
        T0 + 2 * MINUTE,
        json!({"product_id": "a"}),
    ));
    r.tick(T0 + HOUR);
    assert_eq!(queued(&r.changes).len(), 1);
}

#[test]
fn unsubscribed_bounced_and_unknown_addresses_get_nothing_and_the_reason_is_recorded() {
    let d = definitions(vec![("cart_abandonment", cart_campaign())]);
    let cases: Vec<(Vec<Event>, &str)> = vec![
        (vec![identify(1, T0, false)], "unsubscribed from marketing"),
        (
            vec![
                identify(1, T0, true),
                track(5, "Unsubscribed", T0 + 10 * MINUTE, json!({})),
            ],
            "unsubscribed from marketing",
        ),
        (
            vec![
                identify(1, T0, true),
                track(
                    5,
                    "Email Bounced",
                    T0 + 10 * MINUTE,
                    json!({"type": "hard"}),
                ),
            ],
            "suppressed (hard bounce)",
        ),
        (
            vec![event(
                1,
                EventKind::Identify,
                None,
                T0,
                json!({}),
                json!({"subscriptions": {"marketing": true}}),
            )],
            "no email address",
        ),
        (
            vec![event(
                1,
                EventKind::Identify,
                None,
                T0,
                json!({}),
                json!({"email": "x@example.com"}),
            )],
            "not subscribed to marketing",
        ),
    ];
    for (setup, why) in cases {
        let mut r = Run::new(&d);
        let (first, rest) = setup.split_at(1);
        r.apply(&first[0]);
        r.apply(&track(
            2,
            "Added to Cart",
            T0 + MINUTE,
            json!({"product_id": "a"}),
        ));
        for e in rest {
            r.apply(e);
        }
        r.tick(T0 + HOUR);
        let m = messages(&r.changes);
        assert_eq!(queued(&r.changes).len(), 0, "{why}");
        let last = m.last().unwrap_or_else(|| panic!("{why}: no decision"));
        assert_eq!(last.1, "suppressed", "{why}");
        assert!(last.3.contains(why), "{} does not say {why}", last.3);
    }
}

#[test]
fn transactional_messages_skip_caps_and_quiet_hours_but_not_a_hard_bounce() {
    let receipt = CampaignDef {
        trigger: TriggerDef {
            event: Some(r#"event.name == "Order Completed""#.into()),
            ..TriggerDef::default()
        },
        template: Some("receipt".into()),
        purpose: "transactional".into(),
        ..CampaignDef::default()
    };
    let d = definitions(vec![("receipt", receipt)]);
    let mut r = Run::new(&d);
    // Not subscribed to marketing, 23:00 in Berlin, three orders in an hour: all sent.
    r.apply(&identify(1, T0, false));
    for i in 0..3 {
        r.apply(&track(
            2 + i,
            "Order Completed",
            T0 + 12 * HOUR + i as i64 * MINUTE,
            json!({}),
        ));
    }
    assert_eq!(queued(&r.changes).len(), 3);
    r.apply(&track(
        9,
        "Email Bounced",
        T0 + 13 * HOUR,
        json!({"type": "hard"}),
    ));
    r.apply(&track(10, "Order Completed", T0 + 14 * HOUR, json!({})));
    assert_eq!(queued(&r.changes).len(), 3);
    assert_eq!(messages(&r.changes).last().map(|m| m.1), Some("suppressed"));
}

#[test]
fn when_two_campaigns_want_the_same_person_the_higher_priority_wins_and_the_other_is_suppressed() {
    let browse = CampaignDef {
        trigger: TriggerDef {
            event: Some(r#"event.name == "Added to Cart""#.into()),
            ..TriggerDef::default()
        },
        wait: Some("30m".into()),
        template: Some("browse".into()),
        priority: 5,
        ..CampaignDef::default()
    };
    let d = definitions(vec![
        ("cart_abandonment", cart_campaign()),
        ("a_browse", browse),
    ]);
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    r.apply(&track(
        2,
        "Added to Cart",
        T0 + MINUTE,
        json!({"product_id": "a"}),
    ));
    r.tick(T0 + HOUR);
    let decided: Vec<_> = messages(&r.changes)
        .into_iter()
        .filter(|m| m.1 != "entered")
        .collect();
    assert_eq!(decided.len(), 2);
    // Priority 2 beats priority 5 although "a_browse" sorts first by name.
    assert_eq!(
        (decided[0].0.as_str(), decided[0].1),
        ("cart_abandonment", "queued")
    );
    assert_eq!(
        (decided[1].0.as_str(), decided[1].1),
        ("a_browse", "suppressed")
    );
    assert!(
        decided[1]
            .3
            .contains("frequency cap 1 per 4h on email: cart_abandonment was sent"),
        "{}",
        decided[1].3
    );
    // Four hours after the send the cap allows the next one.
    r.apply(&track(
        3,
        "Added to Cart",
        T0 + 31 * MINUTE + 4 * HOUR,
        json!({"product_id": "b"}),
    ));
    r.tick(T0 + 6 * HOUR);
    assert_eq!(queued(&r.changes).len(), 2);
}

#[test]
fn a_send_in_quiet_hours_is_deferred_to_eight_in_the_morning_local_time() {
    let d = definitions(vec![("cart_abandonment", cart_campaign())]);
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    // 21:05 in Berlin: due 21:35 local, inside 21:00-08:00.
    let add = T0 + 10 * HOUR + 12 * MINUTE;
    r.apply(&track(2, "Added to Cart", add, json!({"product_id": "a"})));
    r.tick(add + 30 * MINUTE);
    let m = messages(&r.changes);
    assert_eq!(m.last().map(|x| x.1), Some("deferred"));
    // 08:00 CEST on 2025-10-10 is 06:00Z.
    let eight = 1_760_076_000_000;
    assert_eq!(format_timestamp(eight), "2025-10-10T06:00:00.000Z");
    assert!(m
        .last()
        .is_some_and(|x| x.3.contains("2025-10-10T06:00:00.000Z")));
    assert_eq!(r.profile.timer(), Some(eight));
    r.tick(eight - 1);
    assert_eq!(queued(&r.changes).len(), 0);
    r.tick(eight);
    assert_eq!(queued(&r.changes).len(), 1);
    assert_eq!(messages(&r.changes).last().map(|x| x.2), Some(eight));
}

#[test]
fn quiet_hours_end_at_the_right_instant_across_daylight_saving_changes() {
    let tz = time_zone("Europe/Berlin").unwrap_or_else(|| panic!("tz"));
    let q = parse_quiet_hours("21:00-08:00")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("none"));
    // 2026-03-28 22:00 CET (21:00Z): the night clocks spring forward; 08:00 CEST = 06:00Z.
    let before_spring = 1_774_731_600_000;
    assert_eq!(format_timestamp(before_spring), "2026-03-28T21:00:00.000Z");
    assert_eq!(
        q.deferral(before_spring, &tz)
            .map(format_timestamp)
            .as_deref(),
        Some("2026-03-29T06:00:00.000Z")
    );
    // 2026-10-24 23:00 CEST (21:00Z): clocks fall back; 08:00 CET = 07:00Z.
    let before_fall = 1_761_339_600_000 + 365 * DAY;
    assert_eq!(format_timestamp(before_fall), "2026-10-24T21:00:00.000Z");
    assert_eq!(
        q.deferral(before_fall, &tz)
            .map(format_timestamp)
            .as_deref(),
        Some("2026-10-25T07:00:00.000Z")
    );
    // Outside quiet hours: no deferral. A quiet end inside the spring gap (02:30 does not
    // exist on 2026-03-29) moves to just after the gap, 03:00 CEST = 01:00Z.
    assert_eq!(q.deferral(before_spring - 2 * HOUR, &tz), None);
    let gap = parse_quiet_hours("23:00-02:30")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("none"));
    assert_eq!(
        gap.deferral(before_spring + 2 * HOUR, &tz)
            .map(format_timestamp)
            .as_deref(),
        Some("2026-03-29T01:00:00.000Z")
    );
    for bad in ["21:00", "25:00-08:00", "21:00-21:00", "9-5"] {
        assert!(parse_quiet_hours(bad).is_err(), "{bad}");
    }
}

#[test]
fn variants_are_assigned_by_a_stable_hash_with_their_weights_and_a_holdout_gets_nothing() {
    let ab = CampaignDef {
        trigger: TriggerDef {
            event: Some(r#"event.name == "Added to Cart""#.into()),
            ..TriggerDef::default()
        },
        variants: vec![
            VariantDef {
                name: "a".into(),
                template: "cart_a".into(),
                weight: 3.0,
            },
            VariantDef {
                name: "b".into(),
                template: "cart_b".into(),
                weight: 1.0,
            },
        ],
        holdout: 0.2,
        ..cart_campaign()
    };
    let ab = CampaignDef {
        template: None,
        ..ab
    };
    let d = definitions(vec![("cart_abandonment", ab)]);
    let scoring = compiled(&d);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_round = Vec::new();
    for round in 0..2 {
        for person in 0..2000u64 {
            let mut p = Profile::new(ProfileId(person));
            let cfg = CoreConfig::default();
            let mut out = p.apply(&identify(1, T0, true), &cfg, &scoring, T0);
            out.extend(p.apply(
                &track(2, "Added to Cart", T0 + MINUTE, json!({"product_id": "a"})),
                &cfg,
                &scoring,
                T0 + MINUTE,
            ));
            out.extend(p.catch_up(&scoring, T0 + HOUR));
            let outcome = match queued(&out).first() {
                Some(o) => o.variant.clone(),
                None => messages(&out)
                    .last()
                    .map(|m| m.1.to_string())
                    .unwrap_or_default(),
            };
            if round == 0 {
                *counts.entry(outcome.clone()).or_default() += 1;
                first_round.push(outcome);
            } else {
                // Same person, same campaign: same assignment.
                assert_eq!(first_round[person as usize], outcome);
            }
        }
    }
    let share = |k: &str| counts.get(k).copied().unwrap_or(0) as f64 / 2000.0;
    assert!((share("holdout") - 0.2).abs() < 0.03, "{counts:?}");
    assert!((share("a") - 0.6).abs() < 0.03, "{counts:?}");
    assert!((share("b") - 0.2).abs() < 0.03, "{counts:?}");

    // With a winner, everyone outside the holdout gets it; the holdout stays the same.
    let mut d = d;
    if let Some(c) = d.campaigns.get_mut("cart_abandonment") {
        c.winner = Some("b".into());
    }
    let scoring = compiled(&d);
    for person in 0..500u64 {
        let mut p = Profile::new(ProfileId(person));
        let cfg = CoreConfig::default();
        let mut out = p.apply(&identify(1, T0, true), &cfg, &scoring, T0);
        out.extend(p.apply(
            &track(2, "Added to Cart", T0 + MINUTE, json!({"product_id": "a"})),
            &cfg,
            &scoring,
            T0 + MINUTE,
        ));
        out.extend(p.catch_up(&scoring, T0 + HOUR));
        match queued(&out).first() {
            Some(o) => assert_eq!(o.variant, "b"),
            None => assert_eq!(first_round[person as usize], "holdout"),
        }
    }
    if let Some(c) = d.campaigns.get_mut("cart_abandonment") {
        c.winner = Some("c".into());
    }
    assert!(Scoring::compile(&d, None).is_err());
}

#[test]
fn opens_clicks_and_conversions_are_attributed_to_the_message_once() {
    let mut c = cart_campaign();
    c.conversion = Some(ConversionDef {
        event: "Order Completed".into(),
        within: "3d".into(),
    });
    c.exit = None;
    let d = definitions(vec![("cart_abandonment", c)]);
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    r.apply(&track(
        2,
        "Added to Cart",
        T0 + MINUTE,
        json!({"product_id": "a"}),
    ));
    r.tick(T0 + HOUR);
    let mid = r
        .changes
        .iter()
        .find_map(|c| match &c.kind {
            ChangeKind::Message {
                status: MessageStatus::Queued(_),
                message_id,
                ..
            } => Some(message_id.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("not sent"));
    r.apply(&track(
        3,
        "Email Opened",
        T0 + 2 * HOUR,
        json!({"message_id": mid}),
    ));
    r.apply(&track(
        4,
        "Email Opened",
        T0 + 3 * HOUR,
        json!({"message_id": mid}),
    ));
    r.apply(&track(
        5,
        "Email Clicked",
        T0 + 3 * HOUR,
        json!({"message_id": mid}),
    ));
    r.apply(&track(
        6,
        "Email Opened",
        T0 + 3 * HOUR,
        json!({"message_id": "someone-else"}),
    ));
    r.apply(&track(
        7,
        "Order Completed",
        T0 + DAY,
        json!({"revenue": 120.5}),
    ));
    r.apply(&track(
        8,
        "Order Completed",
        T0 + 2 * DAY,
        json!({"revenue": 99}),
    ));
    let engaged: Vec<(Metric, f64, Option<String>)> = r
        .changes
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Message {
                status:
                    MessageStatus::Engaged {
                        metric,
                        value,
                        variant,
                    },
                ..
            } => Some((*metric, *value, variant.clone())),
            _ => None,
        })
        .collect();
    let d = Some("default".to_string());
    assert_eq!(
        engaged,
        vec![
            (Metric::Opened, 1.0, d.clone()),
            (Metric::Clicked, 1.0, d.clone()),
            (Metric::Converted, 120.5, d),
        ]
    );
}

#[test]
fn decisions_do_not_depend_on_how_promptly_timers_ran() {
    // One log; the host ran timers on time in the first run and never in the second (each
    // event catches up on its own).
    let mut c = cart_campaign();
    c.steps = vec![
        StepDef {
            wait: Some("30m".into()),
            template: Some("cart".into()),
            ..StepDef::default()
        },
        StepDef {
            wait: Some("1d".into()),
            template: Some("cart_reminder".into()),
            ..StepDef::default()
        },
    ];
    c.wait = None;
    c.template = None;
    c.exit = Some(r#"did("Order Completed", since: trigger)"#.into());
    let welcome = CampaignDef {
        trigger: TriggerDef {
            segment: Some("subscribers".into()),
            ..TriggerDef::default()
        },
        template: Some("welcome".into()),
        priority: 1,
        reentry: Some("never".into()),
        ..CampaignDef::default()
    };
    let mut d = definitions(vec![("cart_abandonment", c), ("welcome", welcome)]);
    d.messaging.caps = BTreeMap::from([("email".to_string(), vec!["3 per 1d".to_string()])]);
    d.segments.insert(
        "subscribers".into(),
        SegmentDef {
            rule: r#"subscribed("marketing") and last_seen < 2h"#.into(),
            priority: 1,
            ..SegmentDef::default()
        },
    );
    let log = vec![
        identify(1, T0, true),
        track(2, "Added to Cart", T0 + MINUTE, json!({"product_id": "a"})),
        track(3, "Product Viewed", T0 + 3 * HOUR, json!({})),
        track(
            4,
            "Added to Cart",
            T0 + DAY + 11 * HOUR,
            json!({"product_id": "b"}),
        ),
        track(5, "Product Viewed", T0 + 2 * DAY, json!({})),
        track(6, "Order Completed", T0 + 2 * DAY + HOUR, json!({})),
        track(7, "Product Viewed", T0 + 4 * DAY, json!({})),
    ];
    let mut prompt = Run::new(&d);
    let mut lazy = Run::new(&d);
    for ev in &log {
        // The prompt host runs every timer at its instant before the next event.
        while let Some(t) = prompt.profile.timer().filter(|t| *t < ev.timestamp) {
            prompt.tick(t);
        }
        prompt.apply(ev);
        lazy.apply(ev);
    }
    prompt.tick(T0 + 5 * DAY);
    lazy.tick(T0 + 5 * DAY);
    let a = messages(&prompt.changes);
    let b = messages(&lazy.changes);
    assert_eq!(a, b);
    // The journeys did what they should: one welcome at once; the first cart's email after
    // 30 minutes and its reminder a day later; the second cart's email deferred from 22:23
    // to 08:00 local, and its reminder stopped by the order.
    let kinds: Vec<(&str, &str)> = a.iter().map(|m| (m.0.as_str(), m.1)).collect();
    assert_eq!(
        kinds,
        vec![
            ("welcome", "entered"),
            ("welcome", "queued"),
            ("cart_abandonment", "entered"),
            ("cart_abandonment", "queued"),
            ("cart_abandonment", "queued"),
            ("cart_abandonment", "entered"),
            ("cart_abandonment", "deferred"),
            ("cart_abandonment", "queued"),
            ("cart_abandonment", "exited"),
        ]
    );
    let templates: Vec<&str> = queued(&prompt.changes)
        .iter()
        .map(|o| o.template.as_str())
        .collect();
    assert_eq!(templates, vec!["welcome", "cart", "cart_reminder", "cart"]);
    assert_eq!(prompt.profile, lazy.profile);
}

#[test]
fn a_tier_change_triggers_and_reentry_rules_hold() {
    let mut d = definitions(vec![]);
    d.scores.insert(
        "intent".into(),
        kairos_core::ScoreDef {
            rules: vec![r#"when event.name == "Product Viewed" then +10"#.into()],
            tiers: Some("low < 15 <= high".into()),
            half_life: Some("1d".into()),
            ..Default::default()
        },
    );
    d.campaigns.insert(
        "hot_lead".into(),
        CampaignDef {
            trigger: TriggerDef {
                score: Some("intent".into()),
                tier: Some("high".into()),
                ..TriggerDef::default()
            },
            template: Some("hot".into()),
            reentry: Some("never".into()),
            caps: vec![],
            ..CampaignDef::default()
        },
    );
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    r.apply(&track(2, "Product Viewed", T0 + MINUTE, json!({})));
    assert_eq!(queued(&r.changes).len(), 0);
    r.apply(&track(3, "Product Viewed", T0 + 2 * MINUTE, json!({})));
    assert_eq!(queued(&r.changes).len(), 1);
    // It decays back to low, then climbs to high again: `never` keeps it to one entry.
    r.apply(&track(4, "Product Viewed", T0 + 5 * DAY, json!({})));
    r.apply(&track(
        5,
        "Product Viewed",
        T0 + 5 * DAY + MINUTE,
        json!({}),
    ));
    assert_eq!(queued(&r.changes).len(), 1);
}

#[test]
fn bad_campaign_definitions_are_refused_with_their_path() {
    let cases: Vec<(CampaignDef, &str)> = vec![
        (
            CampaignDef {
                trigger: TriggerDef::default(),
                template: Some("t".into()),
                ..CampaignDef::default()
            },
            "campaigns.c.trigger",
        ),
        (
            CampaignDef {
                trigger: TriggerDef {
                    segment: Some("nope".into()),
                    ..TriggerDef::default()
                },
                template: Some("t".into()),
                ..CampaignDef::default()
            },
            "unknown segment `nope`",
        ),
        (
            CampaignDef {
                template: None,
                ..cart_campaign()
            },
            "campaigns.c.template",
        ),
        (
            CampaignDef {
                caps: vec!["3 a day".into()],
                ..cart_campaign()
            },
            "campaigns.c.caps[0]",
        ),
        (
            CampaignDef {
                channel: "sms".into(),
                ..cart_campaign()
            },
            "campaigns.c.channel",
        ),
        (
            CampaignDef {
                purpose: "spam".into(),
                ..cart_campaign()
            },
            "campaigns.c.purpose",
        ),
        (
            CampaignDef {
                holdout: 1.0,
                ..cart_campaign()
            },
            "campaigns.c.holdout",
        ),
        (
            CampaignDef {
                wait: None,
                wait_until: Some("orders > 0".into()),
                ..cart_campaign()
            },
            "needs `wait`",
        ),
        (
            CampaignDef {
                exit: Some("did(\"X\", since: trigger".into()),
                ..cart_campaign()
            },
            "campaigns.c.exit",
        ),
        (
            CampaignDef {
                trigger: TriggerDef {
                    event: Some(r#"did("Order Completed", since: trigger)"#.into()),
                    ..TriggerDef::default()
                },
                ..cart_campaign()
            },
            "only for campaign rules",
        ),
    ];
    for (c, want) in cases {
        let d = definitions(vec![("c", c)]);
        match Scoring::compile(&d, None) {
            Ok(_) => panic!("{want}: accepted"),
            Err(e) => assert!(e.to_string().contains(want), "{e} does not contain {want}"),
        }
    }
    let mut d = definitions(vec![("c", cart_campaign())]);
    d.messaging = MessagingDef {
        quiet_hours: "late".into(),
        ..MessagingDef::default()
    };
    assert!(Scoring::compile(&d, None).is_err());
    for ok in [
        "daily 10:00",
        "weekly mon 09:30",
        "every 6h",
        "once 2026-12-01T10:00:00Z",
    ] {
        assert!(parse_schedule(ok).is_ok(), "{ok}");
    }
    for bad in ["daily", "weekly 10:00", "every 10s", "monthly 1 10:00"] {
        assert!(parse_schedule(bad).is_err(), "{bad}");
    }
}

#[test]
fn schedules_run_at_local_times_and_reach_only_segment_members() {
    let tz = time_zone("America/New_York").unwrap_or_else(|| panic!("tz"));
    let s = parse_schedule("daily 10:00").unwrap_or_else(|e| panic!("{e}"));
    // T0 is 04:53 in New York (EDT): the next 10:00 is 14:00Z the same day.
    assert_eq!(
        s.next_after(T0, &tz).map(format_timestamp).as_deref(),
        Some("2025-10-09T14:00:00.000Z")
    );
    let w = parse_schedule("weekly mon 09:30").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        w.next_after(T0, &tz).map(format_timestamp).as_deref(),
        Some("2025-10-13T13:30:00.000Z")
    );
    let mut d = definitions(vec![(
        "winback",
        CampaignDef {
            trigger: TriggerDef {
                schedule: Some("daily 10:00".into()),
                segment: Some("quiet".into()),
                ..TriggerDef::default()
            },
            template: Some("winback".into()),
            ..CampaignDef::default()
        },
    )]);
    d.segments.insert(
        "quiet".into(),
        SegmentDef {
            rule: "last_seen >= 1d".into(),
            priority: 3,
            ..SegmentDef::default()
        },
    );
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    let run = T0 + HOUR;
    let out = r.profile.scheduled(&r.scoring, "winback", run);
    assert!(queued(&out).is_empty(), "not a member yet");
    let run = T0 + 2 * DAY;
    let out = r.profile.scheduled(&r.scoring, "winback", run);
    assert_eq!(queued(&out).len(), 1);
}

#[test]
fn wait_until_sends_as_soon_as_its_rule_holds_or_when_the_time_limit_runs_out() {
    // "Browse abandonment": wait until they viewed 3 products or 2 hours.
    let c = CampaignDef {
        trigger: TriggerDef {
            event: Some(r#"event.name == "Signed Up""#.into()),
            ..TriggerDef::default()
        },
        wait: Some("2h".into()),
        wait_until: Some(r#"count("Product Viewed", since: trigger) >= 3"#.into()),
        template: Some("picks".into()),
        ..CampaignDef::default()
    };
    let d = definitions(vec![("picks", c)]);
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    r.apply(&track(2, "Signed Up", T0 + MINUTE, json!({})));
    for i in 0..3 {
        r.apply(&track(
            3 + i,
            "Product Viewed",
            T0 + (10 + i as i64) * MINUTE,
            json!({}),
        ));
    }
    let m = messages(&r.changes);
    assert_eq!(
        m.last().map(|x| (x.1, x.2)),
        Some(("queued", T0 + 12 * MINUTE))
    );
    // Two views only: it goes when the two hours are up.
    let mut r = Run::new(&d);
    r.apply(&identify(1, T0, true));
    r.apply(&track(2, "Signed Up", T0 + MINUTE, json!({})));
    for i in 0..2 {
        r.apply(&track(
            3 + i,
            "Product Viewed",
            T0 + (10 + i as i64) * MINUTE,
            json!({}),
        ));
    }
    assert!(queued(&r.changes).is_empty());
    r.tick(T0 + 3 * HOUR);
    let m = messages(&r.changes);
    assert_eq!(
        m.last().map(|x| (x.1, x.2)),
        Some(("queued", T0 + MINUTE + 2 * HOUR))
    );
}

/// Ada (Berlin) clicks emails around 20:00 local for weeks; a campaign with
/// `send_at = "optimal"` holds her message for her evening instead of sending at once.
fn evening_reader(r: &mut Run) {
    r.apply(&identify(1, T0 - 40 * DAY, true));
    for d in 1..30 {
        // T0 is 10:53 CEST; 20:10 local is T0 + 9h17m.
        let at = T0 - d * DAY + 9 * HOUR + 17 * MINUTE;
        r.apply(&track(100 + d as usize, "Email Clicked", at, json!({})));
    }
    r.changes.clear();
}

#[test]
fn send_time_optimization_holds_a_message_for_the_persons_best_hour() {
    let campaign = CampaignDef {
        send_at: Some("optimal".into()),
        send_within: Some("24h".into()),
        explore: Some(0.0),
        ..cart_campaign()
    };
    let d = definitions(vec![("cart_abandonment", campaign)]);
    let mut r = Run::new(&d);
    evening_reader(&mut r);
    r.apply(&track(
        2,
        "Added to Cart",
        T0,
        json!({"product_id": "sku-1", "price": 80}),
    ));
    r.tick(T0 + 31 * MINUTE);
    let m = messages(&r.changes);
    let deferred = m
        .iter()
        .find(|x| x.1 == "deferred")
        .expect("held for later");
    assert!(deferred.3.contains("send-time optimization"), "{m:?}");
    // 20:00 local (CEST = UTC+2) the same day: 18:00Z.
    let evening = kairos_core::time::parse_timestamp("2025-10-09T18:00:00Z").unwrap_or(0);
    assert_eq!(r.profile.timer(), Some(evening), "{m:?}");
    assert!(queued(&r.changes).is_empty());
    r.tick(evening);
    assert_eq!(
        queued(&r.changes).len(),
        1,
        "sent at her hour, not re-optimised"
    );

    // Quiet hours cover her evening: the best hour outside them is chosen instead.
    let mut d2 = d.clone();
    d2.messaging = MessagingDef {
        quiet_hours: "19:00-08:00".into(),
        ..MessagingDef::default()
    };
    let mut r = Run::new(&d2);
    evening_reader(&mut r);
    r.apply(&track(
        2,
        "Added to Cart",
        T0,
        json!({"product_id": "sku-1", "price": 80}),
    ));
    r.tick(T0 + 31 * MINUTE);
    // Every allowed hour is as good as another (no priors yet): the first, now.
    assert_eq!(queued(&r.changes).len(), 1, "{:?}", messages(&r.changes));
    assert!(!messages(&r.changes).iter().any(|m| m.1 == "deferred"));
}

#[test]
fn send_time_exploration_sends_a_share_at_random_hours() {
    let campaign = CampaignDef {
        send_at: Some("optimal".into()),
        explore: Some(1.0),
        ..cart_campaign()
    };
    let d = definitions(vec![("cart_abandonment", campaign)]);
    let mut r = Run::new(&d);
    evening_reader(&mut r);
    r.apply(&track(
        2,
        "Added to Cart",
        T0,
        json!({"product_id": "sku-1", "price": 80}),
    ));
    r.tick(T0 + 31 * MINUTE);
    let m = messages(&r.changes);
    assert!(
        m.iter()
            .any(|x| x.1 == "deferred" && x.3.contains("exploration"))
            || queued(&r.changes).len() == 1,
        "{m:?}"
    );
    let bad = CampaignDef {
        send_at: Some("asap".into()),
        ..cart_campaign()
    };
    let err = Scoring::compile(&definitions(vec![("c", bad)]), None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("send_at") && err.contains("asap"), "{err}");
    let bad = CampaignDef {
        send_at: Some("optimal".into()),
        send_within: Some("30d".into()),
        ..cart_campaign()
    };
    let err = Scoring::compile(&definitions(vec![("c", bad)]), None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("send_within"), "{err}");
}
