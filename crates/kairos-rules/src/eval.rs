//! Evaluation of compiled programs against an [`Env`], the host's view of one profile.
//!
//! Semantics, briefly: a missing value is `null`; comparisons involving `null` (other than
//! `== null` / `!= null`) are false; values of different kinds are never equal (the string
//! "3" is not the number 3); arithmetic on anything but numbers, and division by zero, give
//! `null`; only `true` is true.

use crate::compile::{AggId, ArithOp, CmpOp, Const, Filter, Func, Node, Program, Window};
use crate::schema::Field;
use serde_json::{Map, Value as Json};
use std::borrow::Cow;

/// A run-time value.
#[derive(Clone, Debug, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Dur(i64),
    Time(i64),
    /// A JSON array (a list-valued trait or property).
    Arr(&'a [Json]),
}

impl<'a> Val<'a> {
    /// A JSON value as a rule sees it; objects are not comparable and read as null.
    pub fn from_json(v: &'a Json) -> Val<'a> {
        match v {
            Json::Null | Json::Object(_) => Val::Null,
            Json::Bool(b) => Val::Bool(*b),
            Json::Number(n) => n.as_f64().map_or(Val::Null, Val::Num),
            Json::String(s) => Val::Str(Cow::Borrowed(s)),
            Json::Array(a) => Val::Arr(a),
        }
    }

    fn from_const(c: &'a Const) -> Val<'a> {
        match c {
            Const::Null => Val::Null,
            Const::Bool(b) => Val::Bool(*b),
            Const::Num(n) => Val::Num(*n),
            Const::Str(s) => Val::Str(Cow::Borrowed(s)),
            Const::Dur(d) => Val::Dur(*d),
        }
    }

    pub fn is_true(&self) -> bool {
        matches!(self, Val::Bool(true))
    }

    fn num(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            _ => None,
        }
    }

    /// A number or a time as a JSON value (for explanations and previews).
    pub fn to_json(&self) -> Json {
        match self {
            Val::Null => Json::Null,
            Val::Bool(b) => Json::Bool(*b),
            Val::Num(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
            Val::Str(s) => Json::String(s.to_string()),
            Val::Dur(d) | Val::Time(d) => Json::from(*d),
            Val::Arr(a) => Json::Array(a.to_vec()),
        }
    }
}

/// The incoming event, for rules that read `event.*` and for `where` filters.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    pub name: Option<&'a str>,
    pub kind: &'a str,
    pub timestamp: i64,
    pub properties: &'a Map<String, Json>,
}

/// A property by dotted path.
pub fn lookup<'a>(map: &'a Map<String, Json>, path: &[String]) -> Option<&'a Json> {
    let (first, rest) = path.split_first()?;
    lookup_in(map.get(first)?, rest)
}

/// A value inside a JSON value by dotted path (object keys, array indices).
pub fn lookup_in<'a>(mut v: &'a Json, path: &[String]) -> Option<&'a Json> {
    for p in path {
        v = match v {
            Json::Object(m) => m.get(p)?,
            Json::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// What a program reads of a profile. Implemented by the host over its profile state.
///
/// Aggregate windows are `(from, now]`; `from` is `i64::MIN` for all time.
pub trait Env {
    fn now(&self) -> i64;
    fn field(&self, f: Field) -> Val<'_>;
    fn trait_value(&self, path: &[String]) -> Option<&Json>;
    fn score(&self, index: usize) -> Option<f64>;
    fn tier(&self, index: usize) -> Option<&str>;
    fn in_segment(&self, index: usize) -> bool;
    fn subscribed(&self, list: &str) -> bool;
    fn consented(&self, purpose: &str) -> bool;
    fn event(&self) -> Option<EventRef<'_>>;
    fn count(&self, agg: AggId, from: i64) -> f64;
    fn sum(&self, agg: AggId, from: i64) -> f64;
    fn last(&self, agg: AggId) -> Option<i64>;
    fn first(&self, agg: AggId) -> Option<i64>;
    /// The first instant after now at which `count(agg, now' - (now - from))` can change
    /// without a new event (the oldest counted event leaving the window), if any.
    fn window_expiry(&self, agg: AggId, from: i64) -> Option<i64>;
    /// When the campaign trigger happened, for `since: trigger` (campaign rules only).
    fn trigger_time(&self) -> Option<i64> {
        None
    }
    /// The first instant after now at which `test` (a count or sum over the last
    /// `within`, compared with a number) differs from what it is now with no new event;
    /// `None` if it never does. Rules like `count(x, within: 24h) >= 3` then wake once,
    /// when the count really falls below three. The default is the window's next expiry,
    /// which is conservative: the comparison is checked again there.
    ///
    /// A host that can [`Env::probe`] should answer this and [`Env::local_turns`] exactly:
    /// a rule that is one such comparison is not probed.
    fn window_turns(&self, test: WindowTest) -> Option<i64> {
        self.window_expiry(test.agg, self.now().saturating_sub(test.within))
    }
    /// The first instant after now at which score `index`, decaying with time and no new
    /// event, reaches `value` (for `score.x >= 70`), if it ever does.
    fn score_reaches(&self, _index: usize, _value: f64) -> Option<i64> {
        None
    }
    /// The first instant after now at which the tier of score `index` changes with no new
    /// event, if it does.
    fn tier_change(&self, _index: usize) -> Option<i64> {
        None
    }
    /// The next instant after now at which the local hour (`daily`: the local date)
    /// changes in the person's time zone. The default re-checks every quarter hour, which is
    /// right for every zone offset in use.
    fn local_change(&self, daily: bool) -> Option<i64> {
        let _ = daily;
        let q = HOUR / 4;
        Some((self.now().div_euclid(q) + 1) * q)
    }
    /// The first instant after now at which the local hour (`daily`: the weekday) passes
    /// `threshold` differently from now; `None` if it never does. The default is the next
    /// [`Env::local_change`], which is conservative.
    fn local_turns(&self, daily: bool, threshold: Threshold) -> Option<i64> {
        let _ = threshold;
        self.local_change(daily)
    }
    /// Calls `f` with this view as it will be at `t > now` if no event comes, for
    /// [`Program::next_flip`]; returns false (the default) when the host cannot. Only what
    /// time alone moves need be right there: windows, ages, the local clock.
    fn probe(&self, t: i64, f: &mut dyn FnMut(&dyn Env)) -> bool {
        let _ = (t, f);
        false
    }
    /// This view as it will be at `t > now` if no event comes (what [`Env::probe`]
    /// passes on), for hosts that evaluate with a concrete environment and so without a
    /// dynamic call per node. `None` (the default) falls back to [`Env::probe`].
    fn later(&self, t: i64) -> Option<Self>
    where
        Self: Sized,
    {
        let _ = t;
        None
    }
}

/// Which events can make a rule true: an event whose name is in `names` or whose call type
/// is in `kinds`. Conservative: the rule is still evaluated on such events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventGuard {
    pub names: Vec<String>,
    pub kinds: Vec<String>,
}

impl EventGuard {
    fn union(mut self, other: EventGuard) -> EventGuard {
        self.names.extend(other.names);
        self.kinds.extend(other.kinds);
        self
    }

    fn len(&self) -> usize {
        self.names.len() + self.kinds.len()
    }
}

fn guard_of(node: &Node) -> Option<EventGuard> {
    let strs = |items: &[Const]| -> Option<Vec<String>> {
        items
            .iter()
            .map(|c| match c {
                Const::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    };
    match node {
        Node::Cmp(CmpOp::Eq, a, b) => match (a.as_ref(), b.as_ref()) {
            (Node::EventName, Node::Const(Const::Str(s)))
            | (Node::Const(Const::Str(s)), Node::EventName) => Some(EventGuard {
                names: vec![s.clone()],
                kinds: vec![],
            }),
            (Node::EventType, Node::Const(Const::Str(s)))
            | (Node::Const(Const::Str(s)), Node::EventType) => Some(EventGuard {
                names: vec![],
                kinds: vec![s.clone()],
            }),
            _ => None,
        },
        Node::InList(n, items) => match n.as_ref() {
            Node::EventName => Some(EventGuard {
                names: strs(items)?,
                kinds: vec![],
            }),
            Node::EventType => Some(EventGuard {
                names: vec![],
                kinds: strs(items)?,
            }),
            _ => None,
        },
        // Both must hold: either side's guard alone is a sound filter; take the narrower.
        Node::And(a, b) => match (guard_of(a), guard_of(b)) {
            (Some(x), Some(y)) => Some(if x.len() <= y.len() { x } else { y }),
            (x, y) => x.or(y),
        },
        Node::Or(a, b) => Some(guard_of(a)?.union(guard_of(b)?)),
        _ => None,
    }
}

impl Program {
    /// Evaluates a boolean rule. Generic so that a host's concrete environment is called
    /// directly (and inlined) rather than through a vtable at every node.
    pub fn matches<E: Env + ?Sized>(&self, env: &E) -> bool {
        eval(&self.root, env).is_true()
    }

    /// Evaluates to a value (for numeric expressions and previews).
    pub fn value<'e, E: Env + ?Sized>(&'e self, env: &'e E) -> Val<'e> {
        eval(&self.root, env)
    }

    /// Which incoming events can make this rule true, when the rule says (`event.name ==
    /// "X" and ...`); `None` when any event might.
    pub fn event_guard(&self) -> Option<EventGuard> {
        guard_of(&self.root)
    }

    /// The earliest instant after `env.now()` at which the result may change with no new
    /// event (a window expiring, an age crossing its bound, the local hour turning), or
    /// `None` if only events can change it. Conservative: at that instant re-evaluate.
    /// A window or the local clock compared with a number contributes the instant that
    /// comparison turns ([`Env::window_turns`], [`Env::local_turns`]), not every edge.
    pub fn next_change<E: Env + ?Sized>(&self, env: &E) -> Option<i64> {
        let mut best: Option<i64> = None;
        next_change(&self.root, env, &mut best);
        best
    }

    /// The earliest instant after `env.now()` at which the result, now `current`, may turn
    /// with no new event. Where it can ([`Env::probe`]), it checks the instants of
    /// [`Program::next_change`] in turn (a window's oldest bucket leaving, an age bound) and
    /// returns the first at which the result really differs: "three views in 24 hours"
    /// with ten views then wakes once, when the count falls below three, not at every
    /// view's expiry.
    ///
    /// When `max_probes` instants pass unchanged it returns the first of them, so that the
    /// answer is the same from any instant before that one (a host that evaluates only
    /// what is due gets the timers of one that evaluates everything).
    pub fn next_flip<E: Env>(&self, env: &E, current: bool, max_probes: usize) -> Option<i64> {
        let first = self.next_change(env)?;
        if !self.probe {
            return Some(first);
        }
        let mut t = first;
        for _ in 0..max_probes {
            // (turned at t, the next instant after t); `None` when the host cannot probe.
            let seen = match env.later(t) {
                Some(later) => Some(self.probe_at(&later, current)),
                None => {
                    let mut seen = None;
                    env.probe(t, &mut |later| seen = Some(self.probe_at(later, current)));
                    seen
                }
            };
            match seen {
                Some((true, _)) => return Some(t),
                // Nothing left that time alone can change.
                Some((false, None)) => return None,
                Some((false, Some(next))) if next > t => t = next,
                _ => return Some(first),
            }
        }
        Some(first)
    }

    /// Whether the result differs from `current` in `later`, and if not, the next instant
    /// after that at which it may.
    fn probe_at<E: Env + ?Sized>(&self, later: &E, current: bool) -> (bool, Option<i64>) {
        let is = eval(&self.root, later).is_true();
        let next = if is == current {
            self.next_change(later)
        } else {
            None
        };
        (is != current, next)
    }
}

impl Filter {
    /// Whether an event's properties pass this `where` filter.
    pub fn matches(&self, event: EventRef<'_>) -> bool {
        struct Only<'a>(EventRef<'a>);
        impl Env for Only<'_> {
            fn now(&self) -> i64 {
                self.0.timestamp
            }
            fn field(&self, _: Field) -> Val<'_> {
                Val::Null
            }
            fn trait_value(&self, _: &[String]) -> Option<&Json> {
                None
            }
            fn score(&self, _: usize) -> Option<f64> {
                None
            }
            fn tier(&self, _: usize) -> Option<&str> {
                None
            }
            fn in_segment(&self, _: usize) -> bool {
                false
            }
            fn subscribed(&self, _: &str) -> bool {
                false
            }
            fn consented(&self, _: &str) -> bool {
                false
            }
            fn event(&self) -> Option<EventRef<'_>> {
                Some(self.0)
            }
            fn count(&self, _: AggId, _: i64) -> f64 {
                0.0
            }
            fn sum(&self, _: AggId, _: i64) -> f64 {
                0.0
            }
            fn last(&self, _: AggId) -> Option<i64> {
                None
            }
            fn first(&self, _: AggId) -> Option<i64> {
                None
            }
            fn window_expiry(&self, _: AggId, _: i64) -> Option<i64> {
                None
            }
        }
        eval(&self.node, &Only(event)).is_true()
    }
}

fn window_from<E: Env + ?Sized>(w: &Window, env: &E) -> i64 {
    let mut from = match w.within {
        Some(d) => env.now().saturating_sub(d),
        None => i64::MIN,
    };
    if let Some(anchor) = w.since {
        // Since an event that never happened: all of the window.
        if let Some(t) = env.last(anchor) {
            from = from.max(t);
        }
    }
    if w.since_trigger {
        if let Some(t) = env.trigger_time() {
            from = from.max(t);
        }
    }
    from
}

fn equal(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Null, Val::Null) => true,
        (Val::Dur(x), Val::Dur(y)) | (Val::Time(x), Val::Time(y)) => x == y,
        (Val::Arr(x), Val::Arr(y)) => x == y,
        _ => false,
    }
}

fn order(a: &Val, b: &Val) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Dur(x), Val::Dur(y)) | (Val::Time(x), Val::Time(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn compare(op: CmpOp, a: &Val, b: &Val) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => equal(a, b),
        CmpOp::Ne => !equal(a, b),
        _ => match order(a, b) {
            None => false,
            Some(o) => match op {
                CmpOp::Lt => o == Less,
                CmpOp::Le => o != Greater,
                CmpOp::Gt => o == Greater,
                _ => o != Less,
            },
        },
    }
}

fn eval<'e, E: Env + ?Sized>(node: &'e Node, env: &'e E) -> Val<'e> {
    match node {
        Node::Const(c) => Val::from_const(c),
        Node::Field(f) => env.field(*f),
        Node::Trait(path) => env.trait_value(path).map_or(Val::Null, Val::from_json),
        Node::Score(i) => env.score(*i).map_or(Val::Null, Val::Num),
        Node::Tier(i) => env
            .tier(*i)
            .map_or(Val::Null, |t| Val::Str(Cow::Borrowed(t))),
        Node::EventName => env
            .event()
            .and_then(|e| e.name)
            .map_or(Val::Null, |n| Val::Str(Cow::Borrowed(n))),
        Node::EventType => env
            .event()
            .map_or(Val::Null, |e| Val::Str(Cow::Borrowed(e.kind))),
        Node::EventTime => env.event().map_or(Val::Null, |e| Val::Time(e.timestamp)),
        Node::EventProp(path) => env
            .event()
            .and_then(|e| lookup(e.properties, path))
            .map_or(Val::Null, Val::from_json),
        Node::Count(agg, w) => Val::Num(env.count(*agg, window_from(w, env))),
        Node::Sum(agg, w) => Val::Num(env.sum(*agg, window_from(w, env))),
        Node::Last(agg) => env.last(*agg).map_or(Val::Null, Val::Time),
        Node::First(agg) => env.first(*agg).map_or(Val::Null, Val::Time),
        Node::InSegment(i) => Val::Bool(env.in_segment(*i)),
        Node::Subscribed(l) => Val::Bool(env.subscribed(l)),
        Node::Consented(p) => Val::Bool(env.consented(p)),
        Node::Exists(n) => Val::Bool(!matches!(eval(n, env), Val::Null)),
        Node::Not(n) => Val::Bool(!eval(n, env).is_true()),
        Node::Neg(n) => eval(n, env).num().map_or(Val::Null, |x| Val::Num(-x)),
        Node::And(a, b) => Val::Bool(eval(a, env).is_true() && eval(b, env).is_true()),
        Node::Or(a, b) => Val::Bool(eval(a, env).is_true() || eval(b, env).is_true()),
        Node::Cmp(op, a, b) => Val::Bool(compare(*op, &eval(a, env), &eval(b, env))),
        Node::Age(op, t, d) => match (eval(t, env), eval(d, env)) {
            (Val::Time(t), Val::Dur(d)) => Val::Bool(compare(
                *op,
                &Val::Dur(env.now().saturating_sub(t)),
                &Val::Dur(d),
            )),
            _ => Val::Bool(false),
        },
        Node::InList(n, items) => {
            let v = eval(n, env);
            Val::Bool(items.iter().any(|c| equal(&v, &Val::from_const(c))))
        }
        Node::InValue(n, list) => {
            let v = eval(n, env);
            Val::Bool(match eval(list, env) {
                Val::Arr(items) => items.iter().any(|j| equal(&v, &Val::from_json(j))),
                _ => false,
            })
        }
        Node::Arith(op, a, b) => match (eval(a, env).num(), eval(b, env).num()) {
            (Some(x), Some(y)) => {
                let r = match op {
                    ArithOp::Add => x + y,
                    ArithOp::Sub => x - y,
                    ArithOp::Mul => x * y,
                    ArithOp::Div => x / y,
                };
                if r.is_finite() {
                    Val::Num(r)
                } else {
                    Val::Null
                }
            }
            _ => Val::Null,
        },
        Node::Call(f, args) => call(*f, args, env),
    }
}

fn call<'e, E: Env + ?Sized>(f: Func, args: &'e [Node], env: &'e E) -> Val<'e> {
    let arg = |i: usize| args.get(i).map_or(Val::Null, |n| eval(n, env));
    match f {
        Func::Lower | Func::Upper => match arg(0) {
            Val::Str(s) => Val::Str(Cow::Owned(if f == Func::Lower {
                s.to_lowercase()
            } else {
                s.to_uppercase()
            })),
            _ => Val::Null,
        },
        Func::Abs => arg(0).num().map_or(Val::Null, |x| Val::Num(x.abs())),
        Func::Min | Func::Max => match (arg(0).num(), arg(1).num()) {
            (Some(a), Some(b)) => Val::Num(if f == Func::Min { a.min(b) } else { a.max(b) }),
            _ => Val::Null,
        },
        Func::Contains => match (arg(0), arg(1)) {
            (Val::Str(a), Val::Str(b)) => Val::Bool(a.contains(b.as_ref())),
            (Val::Arr(items), v) => Val::Bool(items.iter().any(|j| equal(&v, &Val::from_json(j)))),
            _ => Val::Bool(false),
        },
        Func::StartsWith | Func::EndsWith => match (arg(0), arg(1)) {
            (Val::Str(a), Val::Str(b)) => Val::Bool(if f == Func::StartsWith {
                a.starts_with(b.as_ref())
            } else {
                a.ends_with(b.as_ref())
            }),
            _ => Val::Bool(false),
        },
    }
}

const HOUR: i64 = 3_600_000;

fn keep_min(best: &mut Option<i64>, t: i64) {
    *best = Some(best.map_or(t, |b| b.min(t)));
}

fn next_change<E: Env + ?Sized>(node: &Node, env: &E, best: &mut Option<i64>) {
    let now = env.now();
    match node {
        Node::Count(agg, w) | Node::Sum(agg, w) => {
            if let Some(d) = w.within {
                let from = window_from(w, env);
                // The `since` anchor only moves with events; the `within` edge moves with time.
                if from == now.saturating_sub(d) {
                    if let Some(t) = env.window_expiry(*agg, from) {
                        if t > now {
                            keep_min(best, t);
                        }
                    }
                } else if from.saturating_add(d) > now {
                    // The anchor bounds the window until the `within` edge overtakes it.
                    keep_min(best, from.saturating_add(d));
                }
            }
        }
        Node::Age(op, t, d) => {
            if let (Val::Time(t), Val::Dur(d)) = (eval(t, env), eval(d, env)) {
                // Age reaches d at t + d: `<` and `>=` flip then, `<=` and `>` a millisecond
                // later, `==` and `!=` at both.
                let at = t.saturating_add(d);
                let edges = match op {
                    CmpOp::Lt | CmpOp::Ge => [at, at],
                    CmpOp::Le | CmpOp::Gt => [at.saturating_add(1); 2],
                    CmpOp::Eq | CmpOp::Ne => [at, at.saturating_add(1)],
                };
                for edge in edges {
                    if edge > now {
                        keep_min(best, edge);
                    }
                }
            }
            next_change_children(node, env, best);
        }
        Node::Cmp(op, a, b) => {
            // The constant side never changes: only where the comparison turns matters.
            if let Some(test) = window_test(*op, a, b) {
                if let Some(t) = env.window_turns(test).filter(|t| *t > now) {
                    keep_min(best, t);
                }
                return;
            }
            if let Some((daily, threshold)) = local_test(*op, a, b) {
                if let Some(t) = env.local_turns(daily, threshold).filter(|t| *t > now) {
                    keep_min(best, t);
                }
                return;
            }
            if let (Node::Score(i), Node::Const(Const::Num(c)))
            | (Node::Const(Const::Num(c)), Node::Score(i)) = (a.as_ref(), b.as_ref())
            {
                // `>=`/`<` flip at the instant of equality, `>`/`<=` just after it.
                if let Some(t) = env.score_reaches(*i, *c) {
                    for edge in [t, t.saturating_add(1)] {
                        if edge > now {
                            keep_min(best, edge);
                        }
                    }
                }
            }
            next_change_children(node, env, best);
        }
        Node::Tier(i) => {
            if let Some(t) = env.tier_change(*i).filter(|t| *t > now) {
                keep_min(best, t);
            }
        }
        Node::Field(f @ (Field::LocalHour | Field::LocalWeekday)) => {
            if let Some(t) = env
                .local_change(*f == Field::LocalWeekday)
                .filter(|t| *t > now)
            {
                keep_min(best, t);
            }
        }
        _ => next_change_children(node, env, best),
    }
}

/// A number compared with a constant: `x op value`, or `value op x` when `value_first`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub op: CmpOp,
    pub value: f64,
    pub value_first: bool,
}

impl Threshold {
    /// Whether `x` passes, as the rule's comparison would have it (`compare` on two
    /// numbers, without the `Val`s: it runs at every window edge a timer steps over).
    pub fn holds(&self, x: f64) -> bool {
        let (l, r) = if self.value_first {
            (self.value, x)
        } else {
            (x, self.value)
        };
        match self.op {
            CmpOp::Eq => l == r,
            CmpOp::Ne => l != r,
            CmpOp::Lt => l < r,
            CmpOp::Le => l <= r,
            CmpOp::Gt => l > r,
            CmpOp::Ge => l >= r,
        }
    }

    /// `a op b` where one side is a number and the other is `is_x`; the other side.
    fn of<'n>(
        op: CmpOp,
        a: &'n Node,
        b: &'n Node,
        is_x: impl Fn(&Node) -> bool,
    ) -> Option<(Self, &'n Node)> {
        match (a, b) {
            (x, Node::Const(Const::Num(value))) if is_x(x) => Some((
                Threshold {
                    op,
                    value: *value,
                    value_first: false,
                },
                x,
            )),
            (Node::Const(Const::Num(value)), x) if is_x(x) => Some((
                Threshold {
                    op,
                    value: *value,
                    value_first: true,
                },
                x,
            )),
            _ => None,
        }
    }
}

/// `count(...)` or `sum(...)` over a plain `within` window (no `since`) compared with a
/// number, for [`Env::window_turns`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowTest {
    pub agg: AggId,
    pub within: i64,
    /// The sum rather than the count.
    pub sum: bool,
    pub threshold: Threshold,
}

pub(crate) fn window_test(op: CmpOp, a: &Node, b: &Node) -> Option<WindowTest> {
    let plain = |n: &Node| match n {
        Node::Count(_, w) | Node::Sum(_, w) => {
            w.within.is_some() && w.since.is_none() && !w.since_trigger
        }
        _ => false,
    };
    let (threshold, x) = Threshold::of(op, a, b, plain)?;
    let (Node::Count(agg, w) | Node::Sum(agg, w)) = x else {
        return None;
    };
    Some(WindowTest {
        agg: *agg,
        within: w.within?,
        sum: matches!(x, Node::Sum(..)),
        threshold,
    })
}

/// `local_hour` or `local_weekday` compared with a number: (it is the weekday, the test).
pub(crate) fn local_test(op: CmpOp, a: &Node, b: &Node) -> Option<(bool, Threshold)> {
    let clock = |n: &Node| matches!(n, Node::Field(Field::LocalHour | Field::LocalWeekday));
    let (threshold, x) = Threshold::of(op, a, b, clock)?;
    Some((matches!(x, Node::Field(Field::LocalWeekday)), threshold))
}

fn next_change_children<E: Env + ?Sized>(node: &Node, env: &E, best: &mut Option<i64>) {
    node.for_each_child(|c| next_change(c, env, best));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A threshold decides as the rule's own comparison does, NaN and infinities included.
    #[test]
    fn threshold_holds_as_compare_does() {
        let values = [
            f64::NEG_INFINITY,
            -1.5,
            0.0,
            -0.0,
            1.0,
            3.0,
            f64::INFINITY,
            f64::NAN,
        ];
        let ops = [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ];
        for op in ops {
            for value in values {
                for x in values {
                    for value_first in [false, true] {
                        let t = Threshold {
                            op,
                            value,
                            value_first,
                        };
                        let (l, r) = if value_first { (value, x) } else { (x, value) };
                        assert_eq!(
                            t.holds(x),
                            compare(op, &Val::Num(l), &Val::Num(r)),
                            "{op:?} {value} {x} {value_first}"
                        );
                    }
                }
            }
        }
    }
}
