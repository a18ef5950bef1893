//! The rule language end to end: what parses, what is refused and how, and evaluation
//! against a naive interpreter of the syntax tree.

use kairos_rules::ast::{BinOp, Expr, Lit, UnOp};
use kairos_rules::{
    compile, lookup, parse, AggId, Aggregates, Env, EventRef, Field, RuleError, Schema, ScoreInfo,
    Val,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeSet;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn schema() -> Schema {
    Schema {
        scores: vec![
            ScoreInfo {
                name: "engagement".into(),
                tiers: vec!["cold".into(), "warm".into(), "hot".into()],
            },
            ScoreInfo {
                name: "intent".into(),
                tiers: vec!["low".into(), "high".into()],
            },
        ],
        segments: vec!["vip".into(), "lapsed".into()],
        known_events: Some(
            [
                "Product Viewed",
                "Added to Cart",
                "Order Completed",
                "Email Opened",
            ]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>(),
        ),
        event_context: false,
        trigger_context: false,
    }
}

fn ok(src: &str) -> kairos_rules::Program {
    let mut aggs = Aggregates::default();
    compile(src, &schema(), &mut aggs).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn err(src: &str) -> String {
    let mut aggs = Aggregates::default();
    match compile(src, &schema(), &mut aggs) {
        Ok(_) => panic!("{src} should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn everything_the_issue_lists_compiles() {
    for src in [
        r#"traits.plan == "pro""#,
        r#"traits.country in ["DE", "AT"]"#,
        "lifetime_revenue > 1000",
        "orders >= 3",
        "last_seen < 15m",
        "exists(traits.phone)",
        r#"count("Product Viewed", within: 24h) >= 3"#,
        r#"did("Order Completed", within: 30d)"#,
        r#"sum("Order Completed", "revenue", within: 90d) > 500"#,
        r#"count("Product Viewed" where category == "shoes", within: 7d) > 0"#,
        r#"did("Added to Cart", within: 2h) and not did("Order Completed", since: "Added to Cart")"#,
        "score.engagement >= 70",
        r#"tier.engagement == "hot""#,
        r#"in_segment("vip")"#,
        "(orders >= 3 or lifetime_revenue > 1000) and not (last_seen > 60d)",
        "# a comment\norders > 1 # and another",
        r#"traits.country not in ["US"] and subscribed() and consented("marketing")"#,
        r#"local_hour in [18, 19, 20] and local_weekday <= 5"#,
        r#"lower(traits.email) == "a@b.c" or contains(traits.tags, "vip")"#,
        "sum(\"Order Completed\", \"revenue\", within: 90d) / max(orders, 1) > 50",
    ] {
        ok(src);
    }
}

#[test]
fn syntax_errors_say_where_what_was_expected_and_what_was_found() {
    let cases = [
        (
            "orders >= ",
            "1:11: expected a value, a name, a function call or `(`, found end of input",
        ),
        ("orders = 3", "1:8: expected `==`, found `=`"),
        ("(orders > 3", "1:12: expected `)`, found end of input"),
        (
            "orders > 3 3",
            "1:12: expected an operator (`and`, `or`, `==`, ...) or end of input, found number 3",
        ),
        (
            "count(\"x\" within: 1d)",
            "1:11: expected `,` or `)`, found `within`",
        ),
        (
            "orders > 3 and\n  last_seen < 15x",
            "2:17: unknown duration unit \"x\" (expected ms, s, m, h, d or w)",
        ),
        ("traits.name == \"bob", "1:16: unterminated string"),
        (
            "1 < orders < 3",
            "1:12: comparisons do not chain: use `and` (a < b and b < c) or parentheses",
        ),
        ("", "1:1: expected an expression, found end of input"),
        ("orders > 3 && x", "1:12: unexpected character '&'"),
        (
            "traits.",
            "1:8: expected a name after `.`, found end of input",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(err(src), want, "for {src:?}");
    }
}

#[test]
fn definitions_are_type_checked_when_saved() {
    let cases = [
        ("frobnicate(1)", "1:1: unknown function `frobnicate`"),
        (r#"traits.plan == 15m or "x" == 15m"#, "1:30: cannot compare a string with a duration"),
        ("score.loyalty > 3", "1:1: unknown score `loyalty` (known: engagement, intent)"),
        (r#"tier.engagement == "hott""#, "1:20: score `engagement` has no tier \"hott\" (tiers: cold, warm, hot)"),
        (r#"in_segment("whales")"#, "1:12: unknown segment \"whales\" (known: vip, lapsed)"),
        ("orders", "1:1: a rule must be true or false, this is a number"),
        ("orders > \"three\"", "1:10: cannot compare a number with a string"),
        ("count(\"x\", within: -1d) > 0", "1:20: `within:` needs a positive duration"),
        ("count(\"x\", during: 1d) > 0", "1:12: `count` has no argument `during:`"),
        ("count(x) > 0", "1:7: expected an event name as a string literal"),
        ("event.name == \"x\"", "1:1: `event` is only available in rules evaluated on an incoming event"),
        ("not orders", "1:5: `not` needs true/false, found a number"),
        ("orders and true", "1:1: `and` needs true/false, found a number"),
        ("orders in 3", "1:11: `in` needs a list or a list-valued trait on the right, found a number"),
        ("[1, 2] == orders", "1:1: a list can only follow `in`"),
        ("plan == \"pro\"", "1:1: unknown name `plan` (a trait is `traits.plan`"),
        ("count(\"x\" where count(\"y\") > 1) > 0", "1:17: `count` cannot be used inside `where`"),
        ("true > false", "1:1: `>` does not order true/false"),
        ("last_seen == 15m", "1:14: cannot compare a time with a duration (a time compares with a duration only by age"),
    ];
    for (src, want) in cases {
        let got = err(src);
        assert!(
            got.starts_with(want),
            "for {src:?}:\n got  {got}\n want {want}"
        );
    }
}

#[test]
fn unknown_event_names_are_accepted_with_a_warning() {
    let p = ok(r#"did("Prodcut Viewed", within: 1d) and did("Product Viewed")"#);
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(
        p.warnings[0].to_string(),
        "1:5: no event named \"Prodcut Viewed\" has been received yet"
    );
}

#[test]
fn equal_aggregates_are_registered_once() {
    let mut aggs = Aggregates::default();
    let s = schema();
    compile(r#"count("A" where x == 1, within: 1d) > 0"#, &s, &mut aggs)
        .unwrap_or_else(|e| panic!("{e}"));
    compile(r#"did("A" where (x == 1), within: 7d)"#, &s, &mut aggs)
        .unwrap_or_else(|e| panic!("{e}"));
    compile(
        r#"did("A", since: "B") and sum("A", "v") > 1"#,
        &s,
        &mut aggs,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&str> = aggs.specs.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["\"A\"|(x == 1.0)|", "\"A\"||", "\"B\"||", "\"A\"||v"]
    );
}

#[test]
fn error_type_tells_syntax_from_meaning() {
    let mut aggs = Aggregates::default();
    assert!(matches!(
        compile("orders >", &schema(), &mut aggs),
        Err(RuleError::Syntax { .. })
    ));
    assert!(matches!(
        compile("orders > \"x\"", &schema(), &mut aggs),
        Err(RuleError::Type { .. })
    ));
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let src = format!("{}orders > 1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(err(&src).contains("nested deeper than"));
    let src = format!("{}true", "not ".repeat(10_000));
    assert!(err(&src).contains("nested deeper than"));
}

// ---- Evaluation against a naive interpreter ----

#[derive(Clone, Debug)]
struct Ev {
    name: String,
    ts: i64,
    props: Map<String, Json>,
}

/// A profile as a plain list of events plus a few values; answers aggregates by scanning.
struct ListEnv<'a> {
    now: i64,
    events: Vec<Ev>,
    traits: Map<String, Json>,
    scores: Vec<f64>,
    tiers: Vec<String>,
    segments: Vec<bool>,
    aggs: &'a Aggregates,
    /// The campaign trigger instant, for `since: trigger`.
    trigger: Option<i64>,
}

impl ListEnv<'_> {
    fn matching(&self, agg: AggId) -> impl Iterator<Item = &Ev> {
        let spec = &self.aggs.specs[agg];
        self.events.iter().filter(move |e| {
            e.name == spec.event
                && e.ts <= self.now
                && spec.filter.as_ref().is_none_or(|f| {
                    f.matches(EventRef {
                        name: Some(&e.name),
                        kind: "track",
                        timestamp: e.ts,
                        properties: &e.props,
                    })
                })
        })
    }
}

impl Env for ListEnv<'_> {
    fn now(&self) -> i64 {
        self.now
    }
    fn field(&self, f: Field) -> Val<'_> {
        match f {
            Field::Orders => Val::Num(
                self.events
                    .iter()
                    .filter(|e| e.name == "Order Completed")
                    .count() as f64,
            ),
            Field::LastSeen => self
                .events
                .iter()
                .map(|e| e.ts)
                .max()
                .map_or(Val::Null, Val::Time),
            _ => Val::Null,
        }
    }
    fn trait_value(&self, path: &[String]) -> Option<&Json> {
        lookup(&self.traits, path)
    }
    fn score(&self, i: usize) -> Option<f64> {
        self.scores.get(i).copied()
    }
    fn tier(&self, i: usize) -> Option<&str> {
        self.tiers.get(i).map(String::as_str)
    }
    fn in_segment(&self, i: usize) -> bool {
        self.segments.get(i).copied().unwrap_or(false)
    }
    fn subscribed(&self, _: &str) -> bool {
        true
    }
    fn consented(&self, _: &str) -> bool {
        false
    }
    fn event(&self) -> Option<EventRef<'_>> {
        None
    }
    fn count(&self, agg: AggId, from: i64) -> f64 {
        self.matching(agg).filter(|e| e.ts > from).count() as f64
    }
    fn sum(&self, agg: AggId, from: i64) -> f64 {
        let spec = &self.aggs.specs[agg];
        let path = spec.property.clone().unwrap_or_default();
        self.matching(agg)
            .filter(|e| e.ts > from)
            .filter_map(|e| lookup(&e.props, &path).and_then(Json::as_f64))
            .sum()
    }
    fn last(&self, agg: AggId) -> Option<i64> {
        self.matching(agg).map(|e| e.ts).max()
    }
    fn first(&self, agg: AggId) -> Option<i64> {
        self.matching(agg).map(|e| e.ts).min()
    }
    fn trigger_time(&self) -> Option<i64> {
        self.trigger
    }
    fn window_expiry(&self, agg: AggId, from: i64) -> Option<i64> {
        let d = self.now - from;
        self.matching(agg)
            .filter(|e| e.ts > from)
            .map(|e| e.ts + d)
            .min()
    }
}

/// The reference: walks the syntax tree directly, scanning the event list for every call.
#[derive(Clone, Debug, PartialEq)]
enum R {
    Null,
    B(bool),
    N(f64),
    S(String),
    D(i64),
    T(i64),
}

fn truthy(r: &R) -> bool {
    *r == R::B(true)
}

fn req(a: &R, b: &R) -> bool {
    match (a, b) {
        (R::N(x), R::N(y)) => x == y,
        (x, y) => x == y && !matches!(x, R::N(_)),
    }
}

fn naive(e: &Expr, env: &ListEnv, props: Option<&Map<String, Json>>) -> R {
    let json = |v: Option<&Json>| match v {
        Some(Json::Bool(b)) => R::B(*b),
        Some(Json::Number(n)) => n.as_f64().map_or(R::Null, R::N),
        Some(Json::String(s)) => R::S(s.clone()),
        _ => R::Null,
    };
    match e {
        Expr::Lit { lit, .. } => match lit {
            Lit::Num(n) => R::N(*n),
            Lit::Str(s) => R::S(s.clone()),
            Lit::Dur(d) => R::D(*d),
            Lit::Bool(b) => R::B(*b),
            Lit::Null => R::Null,
        },
        Expr::Path { parts, .. } => {
            if let Some(p) = props {
                return json(lookup(p, parts));
            }
            match parts[0].as_str() {
                "traits" => json(lookup(&env.traits, &parts[1..])),
                "score" => R::N(env.scores[if parts[1] == "engagement" { 0 } else { 1 }]),
                "tier" => R::S(env.tiers[if parts[1] == "engagement" { 0 } else { 1 }].clone()),
                "orders" => R::N(
                    env.events
                        .iter()
                        .filter(|e| e.name == "Order Completed")
                        .count() as f64,
                ),
                "last_seen" => env.events.iter().map(|e| e.ts).max().map_or(R::Null, R::T),
                _ => R::Null,
            }
        }
        Expr::Call { name, args, .. } => {
            let ev_name = |i: usize| match &args[i].value {
                Expr::Lit {
                    lit: Lit::Str(s), ..
                } => s.clone(),
                _ => unreachable!(),
            };
            let named = |n: &str| args.iter().find(|a| a.name.as_deref() == Some(n));
            let matching = |name: &str, filter: Option<&Expr>| -> Vec<Ev> {
                env.events
                    .iter()
                    .filter(|e| e.name == name && e.ts <= env.now)
                    .filter(|e| filter.is_none_or(|f| truthy(&naive(f, env, Some(&e.props)))))
                    .cloned()
                    .collect()
            };
            let from = || {
                let mut from = match named("within").map(|a| &a.value) {
                    Some(Expr::Lit {
                        lit: Lit::Dur(d), ..
                    }) => env.now - d,
                    _ => i64::MIN,
                };
                if let Some(Expr::Lit {
                    lit: Lit::Str(s), ..
                }) = named("since").map(|a| &a.value)
                {
                    if let Some(t) = matching(s, None).iter().map(|e| e.ts).max() {
                        from = from.max(t);
                    }
                }
                from
            };
            match name.as_str() {
                "count" | "did" => {
                    let n = matching(&ev_name(0), args[0].filter.as_ref())
                        .iter()
                        .filter(|e| e.ts > from())
                        .count();
                    if name == "did" {
                        R::B(n >= 1)
                    } else {
                        R::N(n as f64)
                    }
                }
                "sum" => {
                    let prop = ev_name(1);
                    R::N(
                        matching(&ev_name(0), args[0].filter.as_ref())
                            .iter()
                            .filter(|e| e.ts > from())
                            .filter_map(|e| e.props.get(&prop).and_then(Json::as_f64))
                            .sum(),
                    )
                }
                "in_segment" => R::B(env.segments[if ev_name(0) == "vip" { 0 } else { 1 }]),
                "exists" => R::B(naive(&args[0].value, env, props) != R::Null),
                _ => unreachable!("{name}"),
            }
        }
        Expr::Unary {
            op: UnOp::Not,
            expr,
            ..
        } => R::B(!truthy(&naive(expr, env, props))),
        Expr::Unary {
            op: UnOp::Neg,
            expr,
            ..
        } => match naive(expr, env, props) {
            R::N(x) => R::N(-x),
            R::D(x) => R::D(-x),
            _ => R::Null,
        },
        Expr::Binary {
            op, left, right, ..
        } => {
            let l = naive(left, env, props);
            if *op == BinOp::And {
                return R::B(truthy(&l) && truthy(&naive(right, env, props)));
            }
            if *op == BinOp::Or {
                return R::B(truthy(&l) || truthy(&naive(right, env, props)));
            }
            if matches!(op, BinOp::In | BinOp::NotIn) {
                let Expr::List { items, .. } = &**right else {
                    unreachable!()
                };
                let found = items.iter().any(|i| req(&l, &naive(i, env, props)));
                return R::B(found == (*op == BinOp::In));
            }
            let r = naive(right, env, props);
            let (l, r) = match (&l, &r) {
                (R::T(t), R::D(_)) => (R::D(env.now - t), r),
                (R::D(_), R::T(t)) => (l, R::D(env.now - t)),
                _ => (l, r),
            };
            let ord = match (&l, &r) {
                (R::N(x), R::N(y)) => x.partial_cmp(y),
                (R::S(x), R::S(y)) => Some(x.cmp(y)),
                (R::D(x), R::D(y)) | (R::T(x), R::T(y)) => Some(x.cmp(y)),
                _ => None,
            };
            let arith = |f: fn(f64, f64) -> f64| match (&l, &r) {
                (R::N(x), R::N(y)) => {
                    let v = f(*x, *y);
                    if v.is_finite() {
                        R::N(v)
                    } else {
                        R::Null
                    }
                }
                _ => R::Null,
            };
            use std::cmp::Ordering::*;
            match op {
                BinOp::Eq => R::B(req(&l, &r)),
                BinOp::Ne => R::B(!req(&l, &r)),
                BinOp::Lt => R::B(ord == Some(Less)),
                BinOp::Le => R::B(matches!(ord, Some(Less | Equal))),
                BinOp::Gt => R::B(ord == Some(Greater)),
                BinOp::Ge => R::B(matches!(ord, Some(Greater | Equal))),
                BinOp::Add => arith(|a, b| a + b),
                BinOp::Sub => arith(|a, b| a - b),
                BinOp::Mul => arith(|a, b| a * b),
                BinOp::Div => arith(|a, b| a / b),
                _ => unreachable!(),
            }
        }
        Expr::List { .. } => unreachable!(),
    }
}

const EVENTS: [&str; 4] = [
    "Product Viewed",
    "Added to Cart",
    "Order Completed",
    "Email Opened",
];

fn lit_num() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..20).prop_map(|n| n.to_string()),
        (0u32..200).prop_map(|n| format!("{}.5", n))
    ]
}

fn dur() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..90).prop_map(|n| format!("{n}m")),
        (1u32..72).prop_map(|n| format!("{n}h")),
        (1u32..60).prop_map(|n| format!("{n}d")),
    ]
}

fn event() -> impl Strategy<Value = String> {
    prop::sample::select(EVENTS.to_vec()).prop_map(|e| format!("{e:?}"))
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        prop::sample::select(vec!["shoes", "hats", "bags"])
            .prop_map(|c| format!(" where category == {c:?}")),
        (0u32..100).prop_map(|p| format!(" where price > {p}")),
        Just(" where category in [\"shoes\", \"bags\"] and not (price < 10)".to_string()),
    ]
}

fn window() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        dur().prop_map(|d| format!(", within: {d}")),
        event().prop_map(|e| format!(", since: {e}")),
        (dur(), event()).prop_map(|(d, e)| format!(", within: {d}, since: {e}")),
    ]
}

fn num_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        lit_num(),
        Just("orders".to_string()),
        Just("traits.age".to_string()),
        Just("score.engagement".to_string()),
        (event(), filter(), window()).prop_map(|(e, f, w)| format!("count({e}{f}{w})")),
        (event(), filter(), window()).prop_map(|(e, f, w)| format!("sum({e}{f}, \"price\"{w})")),
    ];
    leaf.prop_recursive(2, 8, 2, |inner| {
        (
            inner.clone(),
            prop::sample::select(vec!["+", "-", "*", "/"]),
            inner,
        )
            .prop_map(|(a, op, b)| format!("({a} {op} {b})"))
    })
}

fn bool_expr() -> impl Strategy<Value = String> {
    let cmp = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    let leaf = prop_oneof![
        (num_expr(), cmp.clone(), num_expr()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        (event(), filter(), window()).prop_map(|(e, f, w)| format!("did({e}{f}{w})")),
        (prop::sample::select(vec!["<", "<=", ">", ">="]), dur())
            .prop_map(|(op, d)| format!("last_seen {op} {d}")),
        prop::sample::select(vec!["cold", "warm", "hot"])
            .prop_map(|t| format!("tier.engagement == {t:?}")),
        prop::sample::select(vec!["DE", "AT", "US"])
            .prop_map(|c| format!("traits.country in [{c:?}, \"FR\"]")),
        prop::sample::select(vec!["DE", "AT", "US"])
            .prop_map(|c| format!("traits.country not in [{c:?}]")),
        Just("exists(traits.phone)".to_string()),
        Just("in_segment(\"vip\")".to_string()),
        Just("traits.plan == \"pro\"".to_string()),
        Just("traits.vip".to_string()),
    ];
    leaf.prop_recursive(3, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} and {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
            inner.prop_map(|a| format!("not {a}")),
        ]
    })
}

fn history() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        (
            prop::sample::select(EVENTS.to_vec()),
            0i64..(90 * DAY),
            prop::sample::select(vec!["shoes", "hats", "bags"]),
            0u32..150,
        )
            .prop_map(|(name, back, cat, price)| Ev {
                name: name.to_string(),
                ts: 100 * DAY - back,
                props: json!({"category": cat, "price": price})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            }),
        0..40,
    )
}

fn profile_traits() -> impl Strategy<Value = Map<String, Json>> {
    (
        prop::option::of(prop::sample::select(vec!["DE", "AT", "US"])),
        prop::option::of(0u32..80),
        prop::option::of(prop::sample::select(vec!["pro", "free"])),
        prop::option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(|(c, age, plan, vip, phone)| {
            let mut m = Map::new();
            if let Some(c) = c {
                m.insert("country".into(), json!(c));
            }
            if let Some(a) = age {
                m.insert("age".into(), json!(a));
            }
            if let Some(p) = plan {
                m.insert("plan".into(), json!(p));
            }
            if let Some(v) = vip {
                m.insert("vip".into(), json!(v));
            }
            if phone {
                m.insert("phone".into(), json!("+49 30 1234"));
            }
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn compiled_evaluation_equals_the_naive_interpreter(
        src in bool_expr(),
        events in history(),
        traits in profile_traits(),
        now_back in 0i64..(3 * HOUR),
        score in 0u32..100,
        tier in prop::sample::select(vec!["cold", "warm", "hot"]),
        vip in any::<bool>(),
    ) {
        let mut aggs = Aggregates::default();
        let program = compile(&src, &schema(), &mut aggs).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        let ast = parse(&src).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let env = ListEnv {
            // Events are never newer than now (ingest corrects client clock skew).
            now: 100 * DAY + now_back,
            events,
            traits,
            scores: vec![score as f64, 0.0],
            tiers: vec![tier.to_string(), "low".into()],
            segments: vec![vip, false],
            aggs: &aggs,
            trigger: None,
        };
        let want = truthy(&naive(&ast, &env, None));
        prop_assert_eq!(program.matches(&env), want, "{}", src);
        // The next change is in the future, and nothing changes before it.
        if let Some(t) = program.next_change(&env) {
            prop_assert!(t > env.now);
            let before = ListEnv { now: t - 1, events: env.events.clone(), traits: env.traits.clone(), scores: env.scores.clone(), tiers: env.tiers.clone(), segments: env.segments.clone(), aggs: &aggs, trigger: None };
            prop_assert_eq!(program.matches(&before), want, "changed before next_change {} in {}", t, src);
        } else {
            let later = ListEnv { now: env.now + 400 * DAY, events: env.events.clone(), traits: env.traits.clone(), scores: env.scores.clone(), tiers: env.tiers.clone(), segments: env.segments.clone(), aggs: &aggs, trigger: None };
            prop_assert_eq!(program.matches(&later), want, "changed without a next_change in {}", src);
        }
    }

    #[test]
    fn printing_and_parsing_again_gives_the_same_tree(src in bool_expr()) {
        let a = parse(&src).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let printed = a.to_string();
        let b = parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
        prop_assert_eq!(a.without_positions(), b.without_positions());
    }

    #[test]
    fn arbitrary_text_never_panics(src in "[a-z\"'()\\[\\],.:<>=! 0-9_#\n+*/-]{0,60}") {
        let mut aggs = Aggregates::default();
        let _ = compile(&src, &schema(), &mut aggs);
    }

    #[test]
    fn token_soup_never_panics(words in prop::collection::vec(prop::sample::select(vec![
        "count(", "did(", "sum(", ")", "(", "[", "]", ",", "where", "within:", "since:", "and", "or", "not", "in",
        "\"Order Completed\"", "15m", "3", "-", "orders", "traits.x", "score.engagement", "tier.engagement", "==", "<", "last_seen",
        "exists(", "in_segment(", "\"vip\"", ".", "event.name", "null", "true",
    ]), 0..25)) {
        let src = words.join(" ");
        let mut aggs = Aggregates::default();
        let _ = compile(&src, &schema(), &mut aggs);
    }
}

#[test]
fn age_comparisons_and_windows_on_a_concrete_history() {
    let mut aggs = Aggregates::default();
    let s = schema();
    let cart_abandoned = compile(
        r#"did("Added to Cart", within: 2h) and not did("Order Completed", since: "Added to Cart")"#,
        &s,
        &mut aggs,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let active = compile("last_seen < 15m", &s, &mut aggs).unwrap_or_else(|e| panic!("{e}"));
    let t0 = 10 * DAY;
    let ev = |name: &str, ts: i64| Ev {
        name: name.into(),
        ts,
        props: Map::new(),
    };
    let mut env = ListEnv {
        now: t0 + 5 * MIN,
        events: vec![ev("Order Completed", t0 - DAY), ev("Added to Cart", t0)],
        traits: Map::new(),
        scores: vec![0.0, 0.0],
        tiers: vec!["cold".into(), "low".into()],
        segments: vec![false, false],
        aggs: &aggs,
        trigger: None,
    };
    assert!(cart_abandoned.matches(&env));
    assert!(active.matches(&env));
    // Active exactly until 15 minutes after the last event; the cart window until 2 h.
    assert_eq!(active.next_change(&env), Some(t0 + 15 * MIN));
    assert_eq!(cart_abandoned.next_change(&env), Some(t0 + 2 * HOUR));
    env.now = t0 + 15 * MIN;
    assert!(!active.matches(&env));
    env.events.push(ev("Order Completed", t0 + 20 * MIN));
    env.now = t0 + 21 * MIN;
    assert!(!cart_abandoned.matches(&env));
}

#[test]
fn since_trigger_counts_only_what_happened_after_the_campaign_trigger() {
    let src = r#"did("Order Completed", since: trigger)"#;
    // Outside campaign rules there is no trigger to count from.
    assert!(err(src).contains("only for campaign rules"), "{}", err(src));
    let schema = Schema {
        trigger_context: true,
        ..schema()
    };
    let mut aggs = Aggregates::default();
    let exit = compile(src, &schema, &mut aggs).unwrap_or_else(|e| panic!("{e}"));
    let within = compile(
        r#"count("Order Completed", within: 1h, since: trigger) >= 1"#,
        &schema,
        &mut aggs,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t0 = 10 * DAY;
    let ev = |name: &str, ts: i64| Ev {
        name: name.into(),
        ts,
        props: Map::new(),
    };
    let mut env = ListEnv {
        now: t0 + 10 * MIN,
        events: vec![
            ev("Order Completed", t0 - HOUR / 2),
            ev("Added to Cart", t0),
        ],
        traits: Map::new(),
        scores: vec![0.0, 0.0],
        tiers: vec!["cold".into(), "low".into()],
        segments: vec![false, false],
        aggs: &aggs,
        trigger: Some(t0),
    };
    // The order before the trigger does not count; without a trigger the whole window does.
    assert!(!exit.matches(&env));
    assert!(!within.matches(&env));
    env.trigger = None;
    assert!(exit.matches(&env));
    assert!(within.matches(&env));
    env.trigger = Some(t0);
    env.events.push(ev("Order Completed", t0 + 5 * MIN));
    assert!(exit.matches(&env));
    assert!(within.matches(&env));
    // At t0 + 1h the `within` edge overtakes the trigger as the window's start: a re-check.
    assert_eq!(within.next_change(&env), Some(t0 + HOUR));
}

/// Found by the fuzzer: strings print with JSON escapes (`\u0000`), which must parse back.
#[test]
fn regression_control_characters_survive_printing_and_parsing() {
    for src in [
        "traits.x == \"O\u{0}rleted\"",
        "traits.x == \"tab\there \u{1f} \u{7f} é 😀\"",
        "traits.x == \"\\ud83d\\ude00\"",
    ] {
        let a = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let printed = a.to_string();
        let b = parse(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
        assert_eq!(a.without_positions(), b.without_positions());
    }
    assert!(err("traits.x == \"\\u12\"").contains("invalid \\u escape"));
    assert!(err("traits.x == \"\\ud83d\"").contains("invalid \\u escape"));
}

/// Found by the fuzzer: a literal too large for f64 became infinity, which prints as `inf`.
#[test]
fn regression_number_literals_that_overflow_are_refused() {
    assert_eq!(err("orders > 1e999"), "1:10: number out of range");
}
