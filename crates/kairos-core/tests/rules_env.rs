//! Rules evaluated over the real profile state equal a naive scan of the raw events under the
//! documented window semantics (bucketed by the window's resolution), whatever the order in
//! which the events arrived.

use kairos_core::rules_env::ProfileEnv;
use kairos_core::time::{DAY, HOUR, MINUTE};
use kairos_core::vocab::Vocabulary;
use kairos_core::{Event, EventKind, ProfileState};
use kairos_rules::{compile, AggId, Aggregates, Env, EventRef, Field, Schema, ScoreInfo, Val};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const NAMES: [&str; 3] = ["Product Viewed", "Added to Cart", "Order Completed"];

fn event(i: usize, name: &str, ts: i64, category: &str, price: u32) -> Event {
    Event {
        message_id: format!("m{i}"),
        kind: EventKind::Track,
        event: Some(name.into()),
        name: None,
        user_id: Some("u".into()),
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        timestamp: ts,
        received_at: ts,
        properties: json!({"category": category, "price": price})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        traits: Map::new(),
        context: Map::new(),
        source: String::new(),
    }
}

/// What a view of a bare state (no scores, no segments) borrows besides the state.
#[derive(Default)]
struct Bare {
    aggregates: Aggregates,
    segments: kairos_core::bits::Bits,
    zone: kairos_core::rules_env::ZoneCell,
}

impl Bare {
    fn with(aggregates: Aggregates) -> Self {
        Self {
            aggregates,
            ..Self::default()
        }
    }

    fn env<'a>(&'a self, state: &'a ProfileState, now: i64) -> ProfileEnv<'a> {
        ProfileEnv {
            state,
            aggregates: &self.aggregates,
            now,
            event: None,
            scores: &[],
            segments: &self.segments,
            series: &[],
            trigger: None,
            zone: &self.zone,
        }
    }
}

/// A view that answers `window_turns` and `local_turns` with their conservative defaults
/// (every window expiry, every turn of the local clock), so that walking its
/// `next_change` visits every instant at which anything a rule reads can move.
struct Conservative<'a>(ProfileEnv<'a>);

impl Env for Conservative<'_> {
    fn now(&self) -> i64 {
        self.0.now()
    }
    fn field(&self, f: Field) -> Val<'_> {
        self.0.field(f)
    }
    fn trait_value(&self, path: &[String]) -> Option<&Value> {
        self.0.trait_value(path)
    }
    fn score(&self, index: usize) -> Option<f64> {
        self.0.score(index)
    }
    fn tier(&self, index: usize) -> Option<&str> {
        self.0.tier(index)
    }
    fn in_segment(&self, index: usize) -> bool {
        self.0.in_segment(index)
    }
    fn subscribed(&self, list: &str) -> bool {
        self.0.subscribed(list)
    }
    fn consented(&self, purpose: &str) -> bool {
        self.0.consented(purpose)
    }
    fn event(&self) -> Option<EventRef<'_>> {
        self.0.event()
    }
    fn count(&self, agg: AggId, from: i64) -> f64 {
        self.0.count(agg, from)
    }
    fn sum(&self, agg: AggId, from: i64) -> f64 {
        self.0.sum(agg, from)
    }
    fn last(&self, agg: AggId) -> Option<i64> {
        self.0.last(agg)
    }
    fn first(&self, agg: AggId) -> Option<i64> {
        self.0.first(agg)
    }
    fn window_expiry(&self, agg: AggId, from: i64) -> Option<i64> {
        self.0.window_expiry(agg, from)
    }
    fn local_change(&self, daily: bool) -> Option<i64> {
        self.0.local_change(daily)
    }
}

/// Events `back` before a fixed instant, and the instant `ahead` after it to evaluate at.
fn history(raw: &[(&str, i64, &str, u32)], ahead: i64) -> (Vec<Event>, i64) {
    let base = 1_000 * DAY;
    let events = raw
        .iter()
        .enumerate()
        .map(|(i, (n, back, c, p))| event(i, n, base - back, c, *p))
        .collect();
    (events, base + ahead)
}

/// The resolution that answers a window of this length.
fn resolution(window: i64) -> Option<i64> {
    [(MINUTE, 48 * 60), (HOUR, 35 * 24), (DAY, 400)]
        .into_iter()
        .find(|(res, keep)| window <= res * keep)
        .map(|(res, _)| res)
}

/// Events of `name` (passing `keep`) in `(from, now]`, bucketed like the state: an event
/// counts when its bucket is not older than the bucket of `from + 1`, and none count when
/// the newest is at or before `from`.
fn naive(
    events: &[Event],
    name: &str,
    keep: &dyn Fn(&Event) -> bool,
    from: i64,
    now: i64,
) -> (u64, f64) {
    let matching: Vec<&Event> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some(name) && keep(e) && e.timestamp <= now)
        .collect();
    let newest = matching.iter().map(|e| e.timestamp).max();
    if newest.is_none_or(|t| from != i64::MIN && t <= from) {
        return (0, 0.0);
    }
    let res = if from == i64::MIN {
        None
    } else {
        resolution(now - from)
    };
    let counted: Vec<&&Event> = match res {
        Some(res) => matching
            .iter()
            .filter(|e| e.timestamp.div_euclid(res) >= (from + 1).div_euclid(res))
            .collect(),
        None => matching.iter().collect(),
    };
    let sum = counted
        .iter()
        .map(|e| {
            e.properties
                .get("price")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        })
        .sum();
    (counted.len() as u64, sum)
}

fn schema() -> Schema {
    Schema {
        scores: vec![ScoreInfo::default()],
        ..Schema::default()
    }
}

#[derive(Clone, Debug)]
struct Query {
    name: &'static str,
    category: Option<&'static str>,
    within: Option<i64>,
    since: Option<&'static str>,
}

fn query() -> impl Strategy<Value = Query> {
    (
        prop::sample::select(NAMES.to_vec()),
        prop::option::of(prop::sample::select(vec!["shoes", "hats"])),
        prop::option::of(prop_oneof![
            (1i64..120).prop_map(|m| m * MINUTE),
            (1i64..100).prop_map(|h| h * HOUR),
            (1i64..120).prop_map(|d| d * DAY),
        ]),
        prop::option::of(prop::sample::select(NAMES.to_vec())),
    )
        .prop_map(|(name, category, within, since)| Query {
            name,
            category,
            within,
            since,
        })
}

fn source(q: &Query, func: &str) -> String {
    let filter = q
        .category
        .map(|c| format!(" where category == {c:?}"))
        .unwrap_or_default();
    let prop = if func == "sum" { ", \"price\"" } else { "" };
    let mut s = format!("{func}({:?}{filter}{prop}", q.name);
    if let Some(w) = q.within {
        s.push_str(&format!(", within: {}ms", w));
    }
    if let Some(a) = q.since {
        s.push_str(&format!(", since: {a:?}"));
    }
    s.push(')');
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn state_backed_windows_equal_the_naive_scan(
        raw in prop::collection::vec(
            (prop::sample::select(NAMES.to_vec()), 0i64..(150 * DAY), prop::sample::select(vec!["shoes", "hats", "bags"]), 1u32..200),
            0..60,
        ),
        queries in prop::collection::vec(query(), 1..6),
        ahead in 0i64..(2 * DAY),
        seed in any::<u64>(),
    ) {
        let (events, now) = history(&raw, ahead);
        let mut aggs = Aggregates::default();
        let s = schema();
        let programs: Vec<(Query, kairos_rules::Program, kairos_rules::Program)> = queries
            .iter()
            .map(|q| {
                let count = compile(&format!("{} >= 0", source(q, "count")), &s, &mut aggs);
                let sum = compile(&format!("{} >= 0", source(q, "sum")), &s, &mut aggs);
                (q.clone(), count.unwrap_or_else(|e| panic!("{e}")), sum.unwrap_or_else(|e| panic!("{e}")))
            })
            .collect();
        // Fold in a shuffled order: late events must land where in-order ones would.
        let mut order: Vec<usize> = (0..events.len()).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let vocab = Vocabulary::default();
        let mut state = ProfileState::default();
        for i in order {
            state.apply(&events[i], &vocab);
            state.apply_aggregates(&events[i], &aggs);
        }
        let bare = Bare::with(aggs.clone());
        let env = bare.env(&state, now);
        for (q, count, sum) in &programs {
            let keep = |e: &Event| q.category.is_none_or(|c| e.properties.get("category") == Some(&json!(c)));
            let mut from = q.within.map_or(i64::MIN, |w| now - w);
            if let Some(anchor) = q.since {
                if let Some(t) = events.iter().filter(|e| e.event.as_deref() == Some(anchor) && e.timestamp <= now).map(|e| e.timestamp).max() {
                    from = from.max(t);
                }
            }
            let (want_n, want_sum) = naive(&events, q.name, &keep, from, now);
            // Evaluate the compiled left-hand sides (`count(...)`, `sum(...)`) as values.
            let lhs = |p: &kairos_rules::Program| -> f64 {
                let v = compile_value_of(p, &s, &mut aggs.clone());
                match v.value(&env) { kairos_rules::Val::Num(n) => n, other => panic!("{other:?}") }
            };
            prop_assert_eq!(lhs(count), want_n as f64, "{}", count.source);
            prop_assert!((lhs(sum) - want_sum).abs() < 1e-6, "{}: {} vs {}", sum.source, lhs(sum), want_sum);
        }
    }
}

/// The `count(...)`/`sum(...)` side of a `... >= 0` program, compiled against the same
/// registry so aggregate ids agree.
fn compile_value_of(
    p: &kairos_rules::Program,
    s: &Schema,
    aggs: &mut Aggregates,
) -> kairos_rules::Program {
    let lhs = p.source.trim_end_matches(" >= 0");
    kairos_rules::compile_value(lhs, s, aggs).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn since_compares_instants_exactly_within_one_minute() {
    let mut aggs = Aggregates::default();
    let rule = compile(
        r#"did("Added to Cart", within: 2h) and not did("Order Completed", since: "Added to Cart")"#,
        &schema(),
        &mut aggs,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = 1_000 * DAY + 30 * MINUTE;
    let vocab = Vocabulary::default();
    let mut state = ProfileState::default();
    // The order 20 s before the cart add, in the same minute: the cart is still abandoned.
    for e in [
        event(1, "Order Completed", t + 20_000, "x", 5),
        event(2, "Added to Cart", t + 40_000, "x", 5),
    ] {
        state.apply(&e, &vocab);
        state.apply_aggregates(&e, &aggs);
    }
    let bare = Bare::with(aggs);
    let env = |now| bare.env(&state, now);
    assert!(rule.matches(&env(t + MINUTE)));
    // It leaves the segment by itself two hours later, and the timer knows when.
    let next = rule.next_change(&env(t + MINUTE)).unwrap_or(0);
    assert!(
        next > t + MINUTE && next <= t + 40_000 + 2 * HOUR + MINUTE,
        "{next}"
    );
    assert!(!rule.matches(&env(t + 40_000 + 2 * HOUR + MINUTE)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A segment's timer is the instant its result really turns: at every instant where
    /// anything it reads could move before then (each window edge, each age bound) the
    /// result is still the one at `now`, and at the timer it differs. Without a timer, it
    /// never turns.
    #[test]
    fn next_flip_is_the_first_instant_the_result_turns(
        raw in prop::collection::vec(
            (prop::sample::select(NAMES.to_vec()), 0i64..(3 * DAY), prop::sample::select(vec!["shoes", "hats"]), 1u32..200),
            0..40,
        ),
        rule in prop::sample::select(vec![
            r#"count("Product Viewed", within: 24h) >= 3"#,
            r#"count("Product Viewed" where category == "shoes", within: 90m) >= 2"#,
            r#"sum("Order Completed", "price", within: 2d) > 150"#,
            r#"did("Added to Cart", within: 2h) and not did("Order Completed", since: "Added to Cart")"#,
            r#"count("Added to Cart", within: 30m) == 1 or not did("Order Completed", within: 1d)"#,
            r#"not (count("Product Viewed", within: 3h) < 2) and did("Added to Cart", within: 6h)"#,
            r#"count("Product Viewed", within: 7d) - count("Added to Cart", within: 1d) > 2"#,
            r#"last_seen < 15m or count("Order Completed", within: 36h) >= 2"#,
            r#"30 > sum("Order Completed", "price", within: 3h) and 2 <= count("Product Viewed", within: 12h)"#,
            // Rules of the clock alone that never turn would probe forever: each of these
            // turns within days whatever the events.
            r#"local_hour >= 18 or did("Product Viewed", within: 24h)"#,
            r#"(local_weekday == 6 or 9 > local_hour) and count("Added to Cart", within: 90m) != 1"#,
        ]),
        ahead in 0i64..DAY,
    ) {
        let (events, now) = history(&raw, ahead);
        let mut aggs = Aggregates::default();
        let program = compile(rule, &schema(), &mut aggs).unwrap_or_else(|e| panic!("{e}"));
        let vocab = Vocabulary::default();
        let mut state = ProfileState::default();
        for e in &events {
            state.apply(e, &vocab);
            state.apply_aggregates(e, &aggs);
        }
        let bare = Bare::with(aggs);
        let env = |now| bare.env(&state, now);
        let current = program.matches(&env(now));
        let flip = program.next_flip(&env(now), current, 100_000);
        let horizon = flip.unwrap_or(now + 30 * DAY);
        // Every instant at which anything the rule reads may move, not only those at which
        // one of its comparisons turns (which is what `next_change` looks for).
        let mut t = now;
        while let Some(next) = program.next_change(&Conservative(env(t))).filter(|n| *n < horizon) {
            prop_assert!(next > t);
            prop_assert_eq!(program.matches(&env(next)), current, "{} turned at {} before {:?}", rule, next, flip);
            t = next;
        }
        if let Some(f) = flip {
            prop_assert!(f > now);
            prop_assert_ne!(program.matches(&env(f)), current, "{} did not turn at {}", rule, f);
        }
    }
}

/// The local clock, read as arithmetic on the zone's offset, agrees with the calendar of
/// the zone (jiff's), DST jumps and half- and quarter-hour zones included, and its next
/// change is never after the instant the local hour (or day) really turns.
mod local_clock {
    use super::*;
    use kairos_rules::compile::CmpOp;
    use kairos_rules::{Env, Field, Threshold, Val};

    const ZONES: [&str; 8] = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "America/St_Johns",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
    ];

    fn state_in(zone: &str) -> ProfileState {
        let mut e = event(0, "x", 0, "c", 1);
        e.kind = EventKind::Identify;
        e.event = None;
        e.traits = json!({ "timezone": zone })
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut state = ProfileState::default();
        state.apply(&e, &Vocabulary::default());
        state
    }

    fn calendar(zone: &str, t: i64) -> (i64, i64) {
        let tz = jiff::tz::TimeZone::get(zone).unwrap_or_else(|e| panic!("{e}"));
        let z = jiff::Timestamp::from_millisecond(t)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_zoned(tz);
        (z.hour() as i64, z.weekday().to_monday_one_offset() as i64)
    }

    fn num(v: Val<'_>) -> i64 {
        match v {
            Val::Num(n) => n as i64,
            other => panic!("{other:?}"),
        }
    }

    fn check(zone: &str, state: &ProfileState, now: i64) {
        let bare = Bare::default();
        let env = |now| bare.env(state, now);
        // Where a comparison of the local clock turns, found with the zone looked up once,
        // is where stepping through every change of the clock finds it.
        for (daily, field, values) in [
            (false, Field::LocalHour, [0.0, 2.0, 9.0, 18.0, 23.0]),
            (true, Field::LocalWeekday, [1.0, 3.0, 5.0, 6.0, 7.0]),
        ] {
            for value in values {
                for (op, value_first) in [(CmpOp::Ge, false), (CmpOp::Eq, false), (CmpOp::Gt, true)]
                {
                    let threshold = Threshold {
                        op,
                        value,
                        value_first,
                    };
                    let read = |t| match env(t).field(field) {
                        Val::Num(x) => threshold.holds(x),
                        other => panic!("{other:?}"),
                    };
                    let mut stepped = None;
                    let mut t = now;
                    for _ in 0..32 {
                        t = env(t).local_change(daily).unwrap_or(i64::MAX);
                        stepped.get_or_insert(t);
                        if read(t) != read(now) {
                            stepped = Some(t);
                            break;
                        }
                    }
                    assert_eq!(
                        env(now).local_turns(daily, threshold),
                        stepped,
                        "{zone} {now} {field:?} {value}"
                    );
                }
            }
        }
        let (hour, weekday) = calendar(zone, now);
        assert_eq!(num(env(now).field(Field::LocalHour)), hour, "{zone} {now}");
        assert_eq!(
            num(env(now).field(Field::LocalWeekday)),
            weekday,
            "{zone} {now}"
        );
        for (daily, unit) in [(false, HOUR), (true, DAY)] {
            let next = env(now).local_change(daily).unwrap_or(i64::MAX);
            assert!(
                next > now && next <= now + unit + 2 * HOUR,
                "{zone} {now} {next}"
            );
            // Nothing turns before it (checked each minute, and just before it).
            let read = |t| {
                if daily {
                    calendar(zone, t).1
                } else {
                    calendar(zone, t).0
                }
            };
            let mut t = now;
            while t < next {
                assert_eq!(read(t), read(now), "{zone}: turned at {t} before {next}");
                t = (t + MINUTE).min(next - 1).max(t + 1);
            }
        }
    }

    /// Every DST transition of these zones from 2024 to 2027, looked at from every seven
    /// minutes of the three hours around it.
    #[test]
    fn the_local_clock_across_every_transition() {
        for zone in ZONES {
            let state = state_in(zone);
            let tz = jiff::tz::TimeZone::get(zone).unwrap_or_else(|e| panic!("{e}"));
            let from = jiff::Timestamp::from_millisecond(1_704_067_200_000)
                .unwrap_or_else(|e| panic!("{e}"));
            for tr in tz
                .following(from)
                .take_while(|t| t.timestamp().as_millisecond() < 1_830_297_600_000)
            {
                let at = tr.timestamp().as_millisecond();
                let mut now = at - 3 * HOUR + 17_000;
                while now < at + 3 * HOUR {
                    check(zone, &state, now);
                    now += 7 * MINUTE;
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn local_hour_weekday_and_their_next_change_follow_the_zone(
            zone in 0usize..ZONES.len(),
            // 2024-01-01 to 2028-01-01, to the minute.
            minute in 0i64..(4 * 365 + 1) * 24 * 60,
        ) {
            let zone = ZONES[zone];
            check(zone, &state_in(zone), 1_704_067_200_000 + minute * MINUTE + 17_000);
        }
    }
}
