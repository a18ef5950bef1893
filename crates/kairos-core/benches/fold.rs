//! The core state machine with and without scoring, folding events into profiles with no
//! definitions (the baseline), with 10 scores and 20 segments (the built-in ones plus
//! typical extras), and with those plus a served model (200 trees of depth 6 over the
//! built-in features: features extracted and a prediction made on every event).
//!
//! Two workloads: `mix`, 50,000 events drawn uniformly from a shop's event kinds for 2,000
//! people over 14 hours (every person active every half hour: a stress case for timers,
//! 4.6 membership or tier changes per event), and `sim`, the first 100,000 events of the
//! `kairos simulate` shop (people in sessions on some days, in their time zones, email
//! campaigns, signups), decoded by the ingest path's own decoder. Results in
//! docs/PERFORMANCE.md.
//!
//! `cargo bench -p kairos-core --bench fold`

use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use kairos_core::defaults::default_definitions;
use kairos_core::{
    CoreConfig, Definitions, Event, EventKind, Profile, ProfileId, ScoreDef, Scoring, SegmentDef,
};
use serde_json::{json, Map, Value};

/// The allocator of the `kairos` binary, where this fold runs: glibc's malloc made the
/// bench measure a different allocator from the one in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PEOPLE: usize = 2_000;
const EVENTS: usize = 50_000;

/// xorshift: the bench must not depend on a random crate's version for its numbers.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// (person, event) in time order: browsing, carts, checkouts, orders, email engagement,
/// identifies with traits; roughly the mix of `kairos simulate`.
fn events() -> Vec<(usize, Event)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let categories = ["shoes", "shirts", "bags", "hats", "socks"];
    let mut t = 1_795_348_800_000i64;
    (0..EVENTS)
        .map(|i| {
            t += rng.below(2_000) as i64;
            let person = rng.below(PEOPLE as u64) as usize;
            let cat = categories[rng.below(5) as usize];
            let country = ["DE", "US", "AT", "FR"][person % 4];
            let plan = if person.is_multiple_of(3) { "pro" } else { "free" };
            let (kind, name, props, traits) = match rng.below(100) {
                0..=44 => (EventKind::Track, "Product Viewed", json!({"product_id": format!("p{}", rng.below(500)), "category": cat, "price": 20 + rng.below(100)}), json!({})),
                45..=54 => (EventKind::Page, "", json!({"path": "/"}), json!({})),
                55..=64 => (EventKind::Track, "Added to Cart", json!({"product_id": format!("p{}", rng.below(500)), "category": cat, "price": 20 + rng.below(100), "quantity": 1}), json!({})),
                65..=69 => (EventKind::Track, "Checkout Started", json!({"value": 80}), json!({})),
                70..=74 => (EventKind::Track, "Order Completed", json!({"revenue": 20 + rng.below(400), "products": [{"product_id": "p1", "category": cat}]}), json!({})),
                75..=84 => (EventKind::Track, "Email Opened", json!({"campaign": "weekly"}), json!({})),
                85..=89 => (EventKind::Track, "Email Clicked", json!({"campaign": "weekly"}), json!({})),
                90..=91 => (EventKind::Track, "Unsubscribed", json!({"list": "marketing"}), json!({})),
                _ => (EventKind::Identify, "", json!({}), json!({"email": format!("u{person}@example.com"), "plan": plan, "country": country})),
            };
            let ev = Event {
                message_id: format!("m{i}"),
                kind,
                event: (kind == EventKind::Track).then(|| name.to_string()),
                name: None,
                user_id: Some(format!("u{person}")),
                anonymous_id: None,
                previous_id: None,
                group_id: None,
                timestamp: t,
                received_at: t,
                properties: obj(props),
                traits: obj(traits),
                context: Map::new(),
                source: String::new(),
            };
            (person, ev)
        })
        .collect()
}

/// People and events of the `sim` workload.
const SIM_PEOPLE: usize = 2_000;
const SIM_EVENTS: usize = 100_000;

/// (person, event) of the simulated shop in event-time order, each event decoded from its
/// Segment JSON as an import would; a person's anonymous and identified events go to one
/// profile (identity resolution is the store's, not the fold's, work). The simulator sends
/// some events late (mobile flushes); the store replays a person's history for those, so
/// this in-order fold takes every event at its own time.
fn sim_events() -> Vec<(usize, Event)> {
    let sim = kairos_sim::Simulation::new(kairos_sim::SimConfig {
        people: SIM_PEOPLE,
        days: 120,
        seed: 42,
        start_ms: 1_790_000_000_000,
    });
    let person = sim.person_by_id();
    let limits = kairos_core::segment::Limits::default();
    let mut events: Vec<(usize, Event)> = sim
        .events()
        .take(SIM_EVENTS)
        .enumerate()
        .filter_map(|(i, e)| {
            let env = kairos_core::segment::RequestEnv {
                received_at: e.ts,
                correct_skew: false,
                source: String::new(),
            };
            let line = e.value.to_string();
            let mut ev = kairos_core::segment::decode_line(&line, i, &env, &limits).ok()?;
            ev.received_at = ev.timestamp;
            let id = ev.user_id.as_ref().or(ev.anonymous_id.as_ref())?;
            Some((*person.get(id)?, ev))
        })
        .collect();
    events.sort_by_key(|(_, ev)| ev.order_key());
    events
}

/// The built-in 2 scores and 7 segments plus 8 scores and 13 segments of the usual kinds.
fn definitions() -> Definitions {
    let mut d = default_definitions();
    let score = |rules: &[&str], half_life: &str, tiers: &str| ScoreDef {
        rules: rules.iter().map(|r| r.to_string()).collect(),
        half_life: Some(half_life.into()),
        tiers: Some(tiers.into()),
        min: Some(0.0),
        max: Some(100.0),
        ..ScoreDef::default()
    };
    let extra_scores = [
        ("browse_depth", score(&["when event.name == \"Product Viewed\" then +1 at most 20 times per 1d", "when event.type == \"page\" then +0.5"], "7d", "low < 10 <= high")),
        ("email_affinity", score(&["when event.name == \"Email Opened\" then +3", "when event.name == \"Email Clicked\" then +8", "when event.name == \"Unsubscribed\" then -50"], "30d", "cold < 20 <= warm < 60 <= hot")),
        ("cart_heat", score(&["when event.name == \"Added to Cart\" then +15", "when event.name == \"Checkout Started\" then +25", "when event.name == \"Order Completed\" then -60"], "1d", "cool < 30 <= hot")),
        ("loyalty", score(&["when event.name == \"Order Completed\" then +10", "when event.name == \"Order Completed\" and orders >= 3 then +15"], "90d", "new < 20 <= regular < 50 <= loyal")),
        ("churn_risk", score(&["when event.name == \"Unsubscribed\" then +40", "when event.name == \"Email Opened\" then -5", "when event.name == \"Order Completed\" then -20"], "30d", "low < 30 <= high")),
        ("discount_seeker", score(&["when event.name == \"Product Viewed\" and event.properties.price < 40 then +2", "when event.name == \"Order Completed\" and event.properties.revenue < 60 then +5"], "14d", "no < 25 <= yes")),
        ("shoe_fan", score(&["when event.name == \"Product Viewed\" and event.properties.category == \"shoes\" then +4 at most 5 times per 1d", "when event.name == \"Added to Cart\" and event.properties.category == \"shoes\" then +10"], "14d", "no < 30 <= yes")),
        ("pro_fit", score(&["when traits.plan == \"pro\" and event.type == \"identify\" then +30 at most 1 time per 30d", "when traits.country in [\"DE\", \"AT\"] and event.name == \"Order Completed\" then +10"], "60d", "no < 30 <= yes")),
    ];
    for (n, s) in extra_scores {
        d.scores.insert(n.into(), s);
    }
    let extra_segments = [
        ("frequent_viewers", "count(\"Product Viewed\", within: 24h) >= 3"),
        ("shoe_browsers", "count(\"Product Viewed\" where category == \"shoes\", within: 7d) >= 2"),
        ("big_spenders_90d", "sum(\"Order Completed\", \"revenue\", within: 90d) > 500"),
        ("hot_engaged", "score.engagement >= 70"),
        ("high_intent", "tier.purchase_intent == \"high\""),
        ("vip_at_risk", "in_segment(\"vip\") and score.churn_risk > 20"),
        ("pro_plan", "traits.plan == \"pro\""),
        ("dach", "traits.country in [\"DE\", \"AT\"]"),
        ("has_email", "exists(traits.email)"),
        ("checkout_abandoners", "did(\"Checkout Started\", within: 2h) and not did(\"Order Completed\", since: \"Checkout Started\")"),
        ("repeat_buyers", "orders >= 3"),
        ("full_carts_now", "last_seen < 1h and cart_value > 100"),
        ("evening_people", "local_hour >= 18"),
    ];
    for (i, (n, rule)) in extra_segments.into_iter().enumerate() {
        d.segments.insert(
            n.into(),
            SegmentDef {
                rule: rule.into(),
                priority: 10 + i as i32,
                ..SegmentDef::default()
            },
        );
    }
    d
}

/// A gradient-boosted forest of the serving shape over `width` features.
struct Forest(kairos_ml::gbdt::Forest);

impl kairos_core::predict::Predictor for Forest {
    fn predict(&self, _: ProfileId, _: kairos_core::Millis, inputs: &[f32]) -> f64 {
        self.0.predict_proba(inputs)
    }
}

fn served_model(scoring: &Scoring) -> kairos_core::predict::ServedModel {
    let width = scoring.features.len();
    let mut rng = Rng(7);
    let mut d = kairos_ml::Dataset::with_names(scoring.features.names.clone());
    for _ in 0..20_000 {
        let x: Vec<f32> = (0..width).map(|_| rng.below(1000) as f32 / 100.0).collect();
        let label = x[0] + x[1] * x[2] / 10.0 > 10.0 + rng.below(500) as f32 / 100.0;
        d.push(&x, label).unwrap_or_else(|e| panic!("{e}"));
    }
    let params = kairos_ml::gbdt::Params {
        rounds: 200,
        max_depth: 6,
        max_leaves: 64,
        min_data_in_leaf: 5,
        ..Default::default()
    };
    let (forest, _) = kairos_ml::gbdt::train(&d, None, &params).unwrap_or_else(|e| panic!("{e}"));
    kairos_core::predict::ServedModel {
        name: "purchase_7d".into(),
        version: 1,
        features: scoring.features.names.clone(),
        predictor: std::sync::Arc::new(Forest(forest)),
        hybrid: Some(kairos_core::predict::Hybrid {
            score: "purchase_intent".into(),
            score_weight: 0.5,
            model_weight: 0.5,
        }),
    }
}

/// Folds `events` into fresh profiles; returns them and the number of changes.
fn fold_all(
    events: &[(usize, Event)],
    people: usize,
    cfg: &CoreConfig,
    scoring: &Scoring,
) -> (Vec<Profile>, usize) {
    let mut profiles: Vec<Profile> = (0..people)
        .map(|i| Profile::new(ProfileId(i as u64)))
        .collect();
    let mut changes = 0usize;
    for (person, ev) in events {
        changes += profiles[*person]
            .apply(ev, cfg, scoring, ev.received_at)
            .len();
    }
    (profiles, changes)
}

fn fold(c: &mut Criterion) {
    let cfg = CoreConfig::default();
    let defs = definitions();
    assert_eq!((defs.scores.len(), defs.segments.len()), (10, 20));
    let scored = Scoring::compile(&defs, None).unwrap_or_else(|e| panic!("{e}"));
    let none = Scoring::default();
    let with_model = Scoring::compile(&defs, None).unwrap_or_else(|e| panic!("{e}"));
    let problems = with_model.set_models(vec![served_model(&with_model)]);
    assert!(problems.is_empty(), "{problems:?}");
    // The uniform mix keeps its group name of earlier runs ("fold"); the simulated shop is
    // "fold-sim".
    for (group_name, events, people) in [
        ("fold", events(), PEOPLE),
        ("fold-sim", sim_events(), SIM_PEOPLE),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(events.len() as u64));
        group.sample_size(10);
        for (label, scoring) in [
            ("no definitions", &none),
            ("10 scores + 20 segments", &scored),
            ("10 scores + 20 segments + GBDT 200x6", &with_model),
        ] {
            group.bench_function(label, |b| {
                b.iter_batched(
                    || (),
                    |()| fold_all(&events, people, &cfg, scoring),
                    BatchSize::LargeInput,
                )
            });
        }
        group.finish();
    }
}

/// Folds one workload (`KAIROS_FOLD_ONCE=mix` or `sim`) once with the 10 scores and 20
/// segments and prints what happened, for instruction counts under `valgrind
/// --tool=callgrind` (which the host's noise does not move, unlike wall time):
/// `KAIROS_FOLD_ONCE=sim valgrind --tool=callgrind <bench binary>`. Also prints the mean
/// size of the profiles' stored encoding, by part.
fn fold_once(workload: &str) {
    let (events, people) = match workload {
        "sim" => (sim_events(), SIM_PEOPLE),
        _ => (events(), PEOPLE),
    };
    let cfg = CoreConfig::default();
    let scoring = Scoring::compile(&definitions(), None).unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    let (profiles, changes) = fold_all(&events, people, &cfg, &scoring);
    let took = started.elapsed();
    // What the store would write per profile, part by part (postcard, as stored).
    let seen: Vec<&Profile> = profiles
        .iter()
        .filter(|p| p.state.event_count > 0)
        .collect();
    let mean = |part: &dyn Fn(&Profile) -> usize| {
        seen.iter().map(|p| part(p)).sum::<usize>() / seen.len().max(1)
    };
    println!(
        "{workload}: {} profiles, mean encoded {} bytes: state {} (activity {}), derived {} \
         (scores {}), engagement {}, messaging {}",
        seen.len(),
        mean(&|p| p.encode().len()),
        mean(&|p| encoded(&p.state)),
        mean(&|p| encoded(&p.state.activity)),
        mean(&|p| encoded(&p.derived)),
        mean(&|p| encoded(&p.derived.scores)),
        mean(&|p| encoded(&p.engagement)),
        mean(&|p| encoded(&p.messaging)),
    );
    // Every change, for comparing two builds' decisions (`KAIROS_FOLD_DUMP=file`).
    if let Some(path) = std::env::var_os("KAIROS_FOLD_DUMP") {
        let mut profiles: Vec<Profile> = (0..people)
            .map(|i| Profile::new(ProfileId(i as u64)))
            .collect();
        let mut out = String::new();
        for (person, ev) in &events {
            for c in profiles[*person].apply(ev, &cfg, &scoring, ev.received_at) {
                out.push_str(&format!("{person} {c:?}\n"));
            }
        }
        std::fs::write(path, out).unwrap_or_else(|e| panic!("{e}"));
    }
    println!(
        "{workload}: {} events, {changes} changes, {:.0} events/s",
        events.len(),
        events.len() as f64 / took.as_secs_f64()
    );
    // The stored encoding both ways (what a backfill decodes and a group commit encodes
    // per profile), `KAIROS_CODEC_ROUNDS` times over every profile: under callgrind, the
    // inclusive counts of `Profile::encode` and `Profile::decode`.
    let rounds: usize = std::env::var("KAIROS_CODEC_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    if rounds > 0 {
        let mut bytes = 0usize;
        let mut encoding = std::time::Duration::ZERO;
        let mut decoding = std::time::Duration::ZERO;
        for _ in 0..rounds {
            for p in &seen {
                let started = std::time::Instant::now();
                let enc = std::hint::black_box(p.encode());
                encoding += started.elapsed();
                bytes += enc.len();
                let started = std::time::Instant::now();
                let back = Profile::decode(&enc).unwrap_or_else(|e| panic!("{e}"));
                decoding += started.elapsed();
                assert_eq!(back.id, p.id);
            }
        }
        let n = rounds * seen.len();
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        println!(
            "{workload}: encoded and decoded {n} profiles ({} bytes each): {:.2} us to encode, \
             {:.2} us to decode per profile",
            bytes / n.max(1),
            per(encoding),
            per(decoding)
        );
    }
}

/// Bytes of `v` in the store's encoding.
fn encoded<T: serde::Serialize>(v: &T) -> usize {
    postcard::to_allocvec(v).map_or(0, |b| b.len())
}

criterion_group!(benches, fold);

fn main() {
    if let Some(w) = std::env::var_os("KAIROS_FOLD_ONCE") {
        fold_once(&w.to_string_lossy());
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
