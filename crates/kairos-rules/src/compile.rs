//! Type checking and compilation of a parsed expression into a [`Program`]: names resolved
//! to indices, event aggregates registered once, constants folded into nodes. A program is
//! built when a definition is saved and evaluated on every event without re-parsing.

use crate::ast::{Arg, BinOp, Expr, Lit, UnOp};
use crate::error::{Pos, RuleError, Warning};
use crate::schema::{Field, Schema, Type};
use std::sync::Arc;

/// Index of an aggregate in an [`Aggregates`] registry.
pub type AggId = usize;

/// One kind of event the host must keep windowed counts (and sums) of.
#[derive(Clone, Debug)]
pub struct AggSpec {
    pub event: String,
    /// Only events whose properties match.
    pub filter: Option<Arc<Filter>>,
    /// Sum this property (a dotted path into the event's properties).
    pub property: Option<Vec<String>>,
    /// Canonical text of the spec; equal specs share one aggregate.
    pub key: String,
}

impl AggSpec {
    /// Plain "events named X": answerable from per-name activity counters.
    pub fn is_plain(&self) -> bool {
        self.filter.is_none() && self.property.is_none()
    }
}

/// Every aggregate any compiled rule needs; shared by all programs of one configuration.
#[derive(Clone, Debug, Default)]
pub struct Aggregates {
    pub specs: Vec<AggSpec>,
}

impl Aggregates {
    fn intern(&mut self, spec: AggSpec) -> AggId {
        if let Some(i) = self.specs.iter().position(|s| s.key == spec.key) {
            return i;
        }
        self.specs.push(spec);
        self.specs.len() - 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Lower,
    Upper,
    Contains,
    StartsWith,
    EndsWith,
    Abs,
    Min,
    Max,
}

/// A literal, owned by the program.
#[derive(Clone, Debug, PartialEq)]
pub enum Const {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Dur(i64),
}

/// The window of an aggregate query: events in `(from, now]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub within: Option<i64>,
    /// Only events after the newest event of this aggregate (`since: "Added to Cart"`).
    pub since: Option<AggId>,
    /// Only events after the campaign trigger (`since: trigger`, in campaign rules).
    pub since_trigger: bool,
}

#[derive(Clone, Debug)]
pub enum Node {
    Const(Const),
    Field(Field),
    Trait(Vec<String>),
    Score(usize),
    Tier(usize),
    EventName,
    EventType,
    EventTime,
    EventProp(Vec<String>),
    Count(AggId, Window),
    Sum(AggId, Window),
    Last(AggId),
    First(AggId),
    InSegment(usize),
    Subscribed(String),
    Consented(String),
    Exists(Box<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    /// The age of a time (now - time) compared with a duration.
    Age(CmpOp, Box<Node>, Box<Node>),
    InList(Box<Node>, Vec<Const>),
    InValue(Box<Node>, Box<Node>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
}

/// A compiled `where` filter over an event's properties.
#[derive(Clone, Debug)]
pub struct Filter {
    pub node: Node,
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct Program {
    pub(crate) root: Node,
    pub source: String,
    pub ty: Type,
    pub warnings: Vec<Warning>,
    /// Indices (into the schema) of the scores, tiers' scores and segments it reads.
    pub scores_used: Vec<usize>,
    pub segments_used: Vec<usize>,
    pub aggregates_used: Vec<AggId>,
    /// Whether it reads `event.*` (then it is only meaningful on an incoming event).
    pub uses_event: bool,
    /// Whether [`Program::next_flip`] may look ahead: the result moves with windows, and
    /// reads nothing (scores, tiers, segments, the event) whose later values a host's view
    /// at a later instant would not have.
    pub(crate) probe: bool,
}

/// What a program reads of the profile besides aggregates, scores and segments (those are
/// in [`Program::aggregates_used`] and friends): for hosts that re-evaluate a rule only when
/// something it reads may have changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reads {
    pub fields: Vec<Field>,
    pub traits: bool,
    /// `subscribed(...)` or `consented(...)`.
    pub subscriptions: bool,
}

impl Node {
    /// Calls `f` on each direct sub-expression (not on aggregate filters, which read past
    /// events' properties, not the profile).
    pub(crate) fn for_each_child(&self, mut f: impl FnMut(&Node)) {
        match self {
            Node::Exists(n) | Node::Not(n) | Node::Neg(n) | Node::InList(n, _) => f(n),
            Node::And(a, b)
            | Node::Or(a, b)
            | Node::Cmp(_, a, b)
            | Node::Age(_, a, b)
            | Node::InValue(a, b)
            | Node::Arith(_, a, b) => {
                f(a);
                f(b);
            }
            Node::Call(_, args) => args.iter().for_each(f),
            _ => {}
        }
    }
}

impl Program {
    pub fn reads(&self) -> Reads {
        fn walk(n: &Node, r: &mut Reads) {
            match n {
                Node::Field(f) if !r.fields.contains(f) => r.fields.push(*f),
                Node::Trait(_) => r.traits = true,
                Node::Subscribed(_) | Node::Consented(_) => r.subscriptions = true,
                _ => n.for_each_child(|c| walk(c, r)),
            }
        }
        let mut r = Reads::default();
        walk(&self.root, &mut r);
        r
    }
}

/// Parses, checks and compiles a boolean rule (a segment condition, a score's `when`).
pub fn compile(src: &str, schema: &Schema, aggs: &mut Aggregates) -> Result<Program, RuleError> {
    compile_as(src, schema, aggs, true)
}

/// Like [`compile`], for an expression of any type (a numeric feature, say).
pub fn compile_value(
    src: &str,
    schema: &Schema,
    aggs: &mut Aggregates,
) -> Result<Program, RuleError> {
    compile_as(src, schema, aggs, false)
}

fn compile_as(
    src: &str,
    schema: &Schema,
    aggs: &mut Aggregates,
    boolean: bool,
) -> Result<Program, RuleError> {
    let ast = crate::parser::parse(src)?;
    let mut c = Compiler {
        src,
        schema,
        aggs,
        warnings: Vec::new(),
        scores_used: Vec::new(),
        segments_used: Vec::new(),
        aggregates_used: Vec::new(),
        uses_event: false,
        in_filter: false,
    };
    let (root, ty) = c.expr(&ast)?;
    if boolean && !matches!(ty, Type::Bool | Type::Any) {
        return Err(c.type_error(
            ast.at(),
            format!(
                "a rule must be true or false, this is {} (compare it: `... > 0`)",
                ty.describe()
            ),
        ));
    }
    let probe = probe_worthy(&root);
    Ok(Program {
        probe,
        root,
        source: src.to_string(),
        ty,
        warnings: c.warnings,
        scores_used: c.scores_used,
        segments_used: c.segments_used,
        aggregates_used: c.aggregates_used,
        uses_event: c.uses_event,
    })
}

/// See [`Program::probe`]. Ages alone are not worth it: their conservative instant is exact;
/// windows and the local clock are. So is a rule that is one comparison of a window or the
/// local clock with a number: the host finds where that comparison turns
/// ([`crate::Env::window_turns`], [`crate::Env::local_turns`]), which is where the rule does.
fn probe_worthy(root: &Node) -> bool {
    let mut atom = root;
    while let Node::Not(n) = atom {
        atom = n;
    }
    if let Node::Cmp(op, a, b) = atom {
        if crate::eval::window_test(*op, a, b).is_some()
            || crate::eval::local_test(*op, a, b).is_some()
        {
            return false;
        }
    }
    fn walk(n: &Node, windows: &mut bool, blocked: &mut bool) {
        match n {
            Node::Score(_)
            | Node::Tier(_)
            | Node::InSegment(_)
            | Node::EventName
            | Node::EventType
            | Node::EventTime
            | Node::EventProp(_) => *blocked = true,
            Node::Count(_, w) | Node::Sum(_, w) if w.within.is_some() => *windows = true,
            // The local clock turns by the hour (by the day for the weekday): looking a day
            // ahead for the hour the result really turns saves a wake-up per hour between
            // a person's sessions.
            Node::Field(Field::LocalHour | Field::LocalWeekday) => *windows = true,
            _ => {}
        }
        n.for_each_child(|c| walk(c, windows, blocked));
    }
    let (mut windows, mut blocked) = (false, false);
    walk(root, &mut windows, &mut blocked);
    windows && !blocked
}

struct Compiler<'a> {
    src: &'a str,
    schema: &'a Schema,
    aggs: &'a mut Aggregates,
    warnings: Vec<Warning>,
    scores_used: Vec<usize>,
    segments_used: Vec<usize>,
    aggregates_used: Vec<AggId>,
    uses_event: bool,
    /// Inside `where`: bare names are event properties, aggregates are not allowed.
    in_filter: bool,
}

fn push_unique(v: &mut Vec<usize>, i: usize) {
    if !v.contains(&i) {
        v.push(i);
    }
}

fn cmp_op(op: BinOp) -> Option<CmpOp> {
    Some(match op {
        BinOp::Eq => CmpOp::Eq,
        BinOp::Ne => CmpOp::Ne,
        BinOp::Lt => CmpOp::Lt,
        BinOp::Le => CmpOp::Le,
        BinOp::Gt => CmpOp::Gt,
        BinOp::Ge => CmpOp::Ge,
        _ => return None,
    })
}

/// `a < b` read from the other side: `b > a`.
fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

fn comparable(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::List(_), _) | (_, Type::List(_)) => false,
        (Type::Any | Type::Null, _) | (_, Type::Any | Type::Null) => true,
        (x, y) => x == y,
    }
}

impl Compiler<'_> {
    fn type_error(&self, at: usize, message: String) -> RuleError {
        RuleError::Type {
            pos: Pos::of(self.src, at),
            message,
        }
    }

    fn warn(&mut self, at: usize, message: String) {
        let pos = Pos::of(self.src, at);
        self.warnings.push(Warning {
            line: pos.line,
            column: pos.column,
            message,
        });
    }

    fn expr(&mut self, e: &Expr) -> Result<(Node, Type), RuleError> {
        match e {
            Expr::Lit { lit, .. } => Ok(match lit {
                Lit::Num(n) => (Node::Const(Const::Num(*n)), Type::Num),
                Lit::Str(s) => (Node::Const(Const::Str(s.clone())), Type::Str),
                Lit::Dur(d) => (Node::Const(Const::Dur(*d)), Type::Dur),
                Lit::Bool(b) => (Node::Const(Const::Bool(*b)), Type::Bool),
                Lit::Null => (Node::Const(Const::Null), Type::Null),
            }),
            Expr::List { at, .. } => Err(self.type_error(
                *at,
                "a list can only follow `in` (`traits.country in [\"DE\", \"AT\"]`)".into(),
            )),
            Expr::Path { parts, at } => self.path(parts, *at),
            Expr::Call { name, args, at } => self.call(name, args, *at),
            Expr::Unary { op, expr, at } => {
                let (n, t) = self.expr(expr)?;
                match op {
                    UnOp::Not => {
                        self.need_bool(&t, expr.at(), "`not`")?;
                        Ok((Node::Not(Box::new(n)), Type::Bool))
                    }
                    UnOp::Neg => {
                        if let Node::Const(Const::Num(x)) = n {
                            return Ok((Node::Const(Const::Num(-x)), Type::Num));
                        }
                        if let Node::Const(Const::Dur(x)) = n {
                            return Ok((Node::Const(Const::Dur(-x)), Type::Dur));
                        }
                        if !matches!(t, Type::Num | Type::Any) {
                            return Err(self.type_error(
                                *at,
                                format!("`-` needs a number, found {}", t.describe()),
                            ));
                        }
                        Ok((Node::Neg(Box::new(n)), Type::Num))
                    }
                }
            }
            Expr::Binary {
                op, left, right, ..
            } => self.binary(*op, left, right),
        }
    }

    fn need_bool(&self, t: &Type, at: usize, what: &str) -> Result<(), RuleError> {
        if matches!(t, Type::Bool | Type::Any) {
            Ok(())
        } else {
            Err(self.type_error(
                at,
                format!("{what} needs true/false, found {}", t.describe()),
            ))
        }
    }

    fn binary(&mut self, op: BinOp, left: &Expr, right: &Expr) -> Result<(Node, Type), RuleError> {
        match op {
            BinOp::And | BinOp::Or => {
                let (l, lt) = self.expr(left)?;
                let (r, rt) = self.expr(right)?;
                self.need_bool(&lt, left.at(), &format!("`{}`", op.symbol()))?;
                self.need_bool(&rt, right.at(), &format!("`{}`", op.symbol()))?;
                let node = if op == BinOp::And {
                    Node::And(Box::new(l), Box::new(r))
                } else {
                    Node::Or(Box::new(l), Box::new(r))
                };
                Ok((node, Type::Bool))
            }
            BinOp::In | BinOp::NotIn => {
                let (l, lt) = self.expr(left)?;
                let node = match right {
                    Expr::List { items, .. } => {
                        let mut consts = Vec::new();
                        for item in items {
                            let (n, t) = self.expr(item)?;
                            let Node::Const(c) = n else {
                                return Err(self.type_error(
                                    item.at(),
                                    "list items must be literal values".into(),
                                ));
                            };
                            if !comparable(&lt, &t) {
                                return Err(self.type_error(
                                    item.at(),
                                    format!(
                                        "cannot look for {} in a list holding {}",
                                        lt.describe(),
                                        t.describe()
                                    ),
                                ));
                            }
                            consts.push(c);
                        }
                        Node::InList(Box::new(l), consts)
                    }
                    other => {
                        let (r, rt) = self.expr(other)?;
                        if rt != Type::Any {
                            return Err(self.type_error(
                                other.at(),
                                format!(
                                    "`in` needs a list or a list-valued trait on the right, found {}",
                                    rt.describe()
                                ),
                            ));
                        }
                        Node::InValue(Box::new(l), Box::new(r))
                    }
                };
                let node = if op == BinOp::NotIn {
                    Node::Not(Box::new(node))
                } else {
                    node
                };
                Ok((node, Type::Bool))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                let (l, lt) = self.expr(left)?;
                let (r, rt) = self.expr(right)?;
                for (t, e) in [(&lt, left), (&rt, right)] {
                    if !matches!(t, Type::Num | Type::Any) {
                        return Err(self.type_error(
                            e.at(),
                            format!("`{}` needs numbers, found {}", op.symbol(), t.describe()),
                        ));
                    }
                }
                let aop = match op {
                    BinOp::Add => ArithOp::Add,
                    BinOp::Sub => ArithOp::Sub,
                    BinOp::Mul => ArithOp::Mul,
                    _ => ArithOp::Div,
                };
                Ok((Node::Arith(aop, Box::new(l), Box::new(r)), Type::Num))
            }
            _ => {
                let cop =
                    cmp_op(op).ok_or_else(|| self.type_error(left.at(), "operator".into()))?;
                let (l, lt) = self.expr(left)?;
                let (r, rt) = self.expr(right)?;
                let ordering = !matches!(cop, CmpOp::Eq | CmpOp::Ne);
                match (&lt, &rt) {
                    (Type::Time, Type::Dur) if ordering => {
                        return Ok((Node::Age(cop, Box::new(l), Box::new(r)), Type::Bool))
                    }
                    (Type::Dur, Type::Time) if ordering => {
                        return Ok((Node::Age(flip(cop), Box::new(r), Box::new(l)), Type::Bool))
                    }
                    _ => {}
                }
                if !comparable(&lt, &rt) {
                    let hint = if matches!(
                        (&lt, &rt),
                        (Type::Time, Type::Dur) | (Type::Dur, Type::Time)
                    ) {
                        " (a time compares with a duration only by age: `last_seen < 15m`)"
                    } else {
                        ""
                    };
                    return Err(self.type_error(
                        right.at(),
                        format!(
                            "cannot compare {} with {}{hint}",
                            lt.describe(),
                            rt.describe()
                        ),
                    ));
                }
                if ordering && matches!(lt, Type::Bool) {
                    return Err(self.type_error(
                        left.at(),
                        format!("`{}` does not order true/false", op.symbol()),
                    ));
                }
                self.check_tier_literal(&l, &r, right.at())?;
                self.check_tier_literal(&r, &l, left.at())?;
                Ok((Node::Cmp(cop, Box::new(l), Box::new(r)), Type::Bool))
            }
        }
    }

    /// `tier.engagement == "hott"` is a typo the checker can catch.
    fn check_tier_literal(&self, tier: &Node, lit: &Node, at: usize) -> Result<(), RuleError> {
        if let (Node::Tier(i), Node::Const(Const::Str(s))) = (tier, lit) {
            if let Some(score) = self.schema.scores.get(*i) {
                if !score.tiers.iter().any(|t| t == s) {
                    return Err(self.type_error(
                        at,
                        format!(
                            "score `{}` has no tier {s:?} (tiers: {})",
                            score.name,
                            score.tiers.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn path(&mut self, parts: &[String], at: usize) -> Result<(Node, Type), RuleError> {
        if self.in_filter {
            let props = match parts.first().map(String::as_str) {
                Some("properties") if parts.len() > 1 => parts[1..].to_vec(),
                _ => parts.to_vec(),
            };
            return Ok((Node::EventProp(props), Type::Any));
        }
        let head = parts.first().map(String::as_str).unwrap_or_default();
        match (head, parts.len()) {
            ("traits", n) if n >= 2 => Ok((Node::Trait(parts[1..].to_vec()), Type::Any)),
            ("score", 2) | ("tier", 2) => {
                let name = &parts[1];
                let Some(i) = self.schema.score_index(name) else {
                    let known: Vec<&str> =
                        self.schema.scores.iter().map(|s| s.name.as_str()).collect();
                    return Err(self.type_error(
                        at,
                        format!(
                            "unknown score `{name}` (known: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                };
                push_unique(&mut self.scores_used, i);
                if head == "score" {
                    Ok((Node::Score(i), Type::Num))
                } else {
                    Ok((Node::Tier(i), Type::Str))
                }
            }
            ("event", n) if n >= 2 => {
                if !self.schema.event_context {
                    return Err(self.type_error(
                        at,
                        "`event` is only available in rules evaluated on an incoming event (score rules, triggers); segments see the profile".into(),
                    ));
                }
                self.uses_event = true;
                match (parts[1].as_str(), n) {
                    ("name", 2) => Ok((Node::EventName, Type::Str)),
                    ("type", 2) => Ok((Node::EventType, Type::Str)),
                    ("timestamp", 2) => Ok((Node::EventTime, Type::Time)),
                    ("properties", n) if n >= 3 => {
                        Ok((Node::EventProp(parts[2..].to_vec()), Type::Any))
                    }
                    _ => Err(self.type_error(
                        at,
                        "expected `event.name`, `event.type`, `event.timestamp` or `event.properties.<name>`".into(),
                    )),
                }
            }
            (name, 1) => match Field::by_name(name) {
                Some(f) => Ok((Node::Field(f), f.ty())),
                None => Err(self.type_error(
                    at,
                    format!(
                        "unknown name `{name}` (a trait is `traits.{name}`; built-in fields: {})",
                        Field::ALL
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            },
            _ => Err(self.type_error(
                at,
                format!(
                    "unknown name `{}` (expected traits.<name>, score.<name>, tier.<name>, event.<field> or a built-in field)",
                    parts.join(".")
                ),
            )),
        }
    }

    fn string_arg(&self, a: &Arg, what: &str) -> Result<String, RuleError> {
        match &a.value {
            Expr::Lit {
                lit: Lit::Str(s), ..
            } if a.filter.is_none() => Ok(s.clone()),
            other => {
                Err(self.type_error(other.at(), format!("expected {what} as a string literal")))
            }
        }
    }

    fn event_name(&mut self, a: &Arg) -> Result<String, RuleError> {
        let name = match &a.value {
            Expr::Lit {
                lit: Lit::Str(s), ..
            } => s.clone(),
            other => {
                return Err(self.type_error(
                    other.at(),
                    "expected an event name as a string literal (\"Order Completed\")".into(),
                ))
            }
        };
        if let Some(known) = &self.schema.known_events {
            if !known.contains(&name) {
                self.warn(
                    a.value.at(),
                    format!("no event named {name:?} has been received yet"),
                );
            }
        }
        Ok(name)
    }

    fn aggregate(
        &mut self,
        event_arg: &Arg,
        property: Option<Vec<String>>,
    ) -> Result<AggId, RuleError> {
        let event = self.event_name(event_arg)?;
        let filter = match &event_arg.filter {
            Some(f) => {
                let was = self.in_filter;
                self.in_filter = true;
                let r = self.expr(f);
                self.in_filter = was;
                let (node, ty) = r?;
                self.need_bool(&ty, f.at(), "`where`")?;
                Some((Arc::new(Filter { node }), f.without_positions().to_string()))
            }
            None => None,
        };
        let key = format!(
            "{}|{}|{}",
            serde_json::Value::String(event.clone()),
            filter.as_ref().map(|(_, k)| k.as_str()).unwrap_or(""),
            property.as_ref().map(|p| p.join(".")).unwrap_or_default()
        );
        let id = self.aggs.intern(AggSpec {
            event,
            filter: filter.map(|(f, _)| f),
            property,
            key,
        });
        push_unique(&mut self.aggregates_used, id);
        Ok(id)
    }

    fn window(&mut self, named: &[&Arg], fname: &str) -> Result<Window, RuleError> {
        let mut w = Window {
            within: None,
            since: None,
            since_trigger: false,
        };
        for a in named {
            match a.name.as_deref() {
                Some("within") => match &a.value {
                    Expr::Lit {
                        lit: Lit::Dur(d), ..
                    } if *d > 0 && a.filter.is_none() => w.within = Some(*d),
                    other => {
                        return Err(self.type_error(
                            other.at(),
                            "`within:` needs a positive duration (`30m`, `24h`, `7d`)".into(),
                        ))
                    }
                },
                Some("since") => {
                    if a.filter.is_some() {
                        return Err(self.type_error(
                            a.at,
                            "`since:` takes an event name without `where`".into(),
                        ));
                    }
                    if let Expr::Path { parts, at } = &a.value {
                        if parts.len() == 1 && parts[0] == "trigger" {
                            if !self.schema.trigger_context {
                                return Err(self.type_error(
                                    *at,
                                    "`since: trigger` is only for campaign rules (exit, wait until)"
                                        .into(),
                                ));
                            }
                            w.since_trigger = true;
                            continue;
                        }
                    }
                    let plain = Arg {
                        name: None,
                        value: a.value.clone(),
                        filter: None,
                        at: a.at,
                    };
                    w.since = Some(self.aggregate(&plain, None)?);
                }
                Some(other) => {
                    return Err(self.type_error(
                        a.at,
                        format!(
                        "`{fname}` has no argument `{other}:` (it takes `within:` and `since:`)"
                    ),
                    ))
                }
                None => {}
            }
        }
        Ok(w)
    }

    fn call(&mut self, name: &str, args: &[Arg], at: usize) -> Result<(Node, Type), RuleError> {
        let positional: Vec<&Arg> = args.iter().filter(|a| a.name.is_none()).collect();
        let named: Vec<&Arg> = args.iter().filter(|a| a.name.is_some()).collect();
        let arity = |n: usize| -> Result<(), RuleError> {
            if positional.len() != n {
                return Err(self.type_error(
                    at,
                    format!(
                        "`{name}` takes {n} argument{}, found {}",
                        if n == 1 { "" } else { "s" },
                        positional.len()
                    ),
                ));
            }
            Ok(())
        };
        let no_named = |what: &str| -> Result<(), RuleError> {
            if let Some(a) = named.first() {
                return Err(self.type_error(a.at, format!("`{what}` takes no named arguments")));
            }
            Ok(())
        };
        let no_filter = |c: &Self| -> Result<(), RuleError> {
            if let Some(a) = positional.iter().skip(1).find(|a| a.filter.is_some()) {
                return Err(c.type_error(a.at, "`where` only follows the event name".into()));
            }
            Ok(())
        };
        let aggregates = matches!(name, "count" | "did" | "sum" | "last" | "first");
        if aggregates && self.in_filter {
            return Err(self.type_error(at, format!("`{name}` cannot be used inside `where`")));
        }
        match name {
            "count" | "did" => {
                arity(1)?;
                let agg = self.aggregate(positional[0], None)?;
                let w = self.window(&named, name)?;
                let node = Node::Count(agg, w);
                if name == "did" {
                    let one = Node::Const(Const::Num(1.0));
                    Ok((Node::Cmp(CmpOp::Ge, Box::new(node), Box::new(one)), Type::Bool))
                } else {
                    Ok((node, Type::Num))
                }
            }
            "sum" => {
                arity(2)?;
                no_filter(self)?;
                let prop = self.string_arg(positional[1], "a property name")?;
                let path: Vec<String> = prop.split('.').map(str::to_string).collect();
                let agg = self.aggregate(positional[0], Some(path))?;
                let w = self.window(&named, name)?;
                Ok((Node::Sum(agg, w), Type::Num))
            }
            "last" | "first" => {
                arity(1)?;
                no_named(name)?;
                let agg = self.aggregate(positional[0], None)?;
                let node = if name == "last" {
                    Node::Last(agg)
                } else {
                    Node::First(agg)
                };
                Ok((node, Type::Time))
            }
            "in_segment" => {
                arity(1)?;
                no_named(name)?;
                let seg = self.string_arg(positional[0], "a segment name")?;
                let Some(i) = self.schema.segment_index(&seg) else {
                    return Err(self.type_error(
                        positional[0].value.at(),
                        format!(
                            "unknown segment {seg:?} (known: {})",
                            self.schema.segments.join(", ")
                        ),
                    ));
                };
                push_unique(&mut self.segments_used, i);
                Ok((Node::InSegment(i), Type::Bool))
            }
            "subscribed" | "consented" => {
                no_named(name)?;
                let what = match positional.len() {
                    0 if name == "subscribed" => "marketing".to_string(),
                    1 => self.string_arg(
                        positional[0],
                        if name == "subscribed" {
                            "a list name"
                        } else {
                            "a purpose"
                        },
                    )?,
                    _ => {
                        return Err(self.type_error(
                            at,
                            format!("`{name}` takes one argument, found {}", positional.len()),
                        ))
                    }
                };
                Ok((
                    if name == "subscribed" {
                        Node::Subscribed(what)
                    } else {
                        Node::Consented(what)
                    },
                    Type::Bool,
                ))
            }
            "exists" => {
                arity(1)?;
                no_named(name)?;
                no_filter(self)?;
                let (n, _) = self.expr(&positional[0].value)?;
                if positional[0].filter.is_some() {
                    return Err(self.type_error(at, "`where` only follows an event name".into()));
                }
                Ok((Node::Exists(Box::new(n)), Type::Bool))
            }
            "lower" | "upper" | "abs" => {
                arity(1)?;
                no_named(name)?;
                let (n, t) = self.expr(&positional[0].value)?;
                let (func, want, out) = match name {
                    "lower" => (Func::Lower, Type::Str, Type::Str),
                    "upper" => (Func::Upper, Type::Str, Type::Str),
                    _ => (Func::Abs, Type::Num, Type::Num),
                };
                if t != want && t != Type::Any {
                    return Err(self.type_error(
                        positional[0].value.at(),
                        format!("`{name}` needs {}, found {}", want.describe(), t.describe()),
                    ));
                }
                Ok((Node::Call(func, vec![n]), out))
            }
            "contains" | "starts_with" | "ends_with" | "min" | "max" => {
                arity(2)?;
                no_named(name)?;
                let (a, at_) = self.expr(&positional[0].value)?;
                let (b, bt) = self.expr(&positional[1].value)?;
                let (func, want, out) = match name {
                    "contains" => (Func::Contains, Type::Str, Type::Bool),
                    "starts_with" => (Func::StartsWith, Type::Str, Type::Bool),
                    "ends_with" => (Func::EndsWith, Type::Str, Type::Bool),
                    "min" => (Func::Min, Type::Num, Type::Num),
                    _ => (Func::Max, Type::Num, Type::Num),
                };
                for (t, a) in [(&at_, positional[0]), (&bt, positional[1])] {
                    if *t != want && *t != Type::Any {
                        return Err(self.type_error(
                            a.value.at(),
                            format!("`{name}` needs {}, found {}", want.describe(), t.describe()),
                        ));
                    }
                }
                Ok((Node::Call(func, vec![a, b]), out))
            }
            other => Err(self.type_error(
                at,
                format!(
                    "unknown function `{other}` (functions: count, did, sum, last, first, in_segment, subscribed, consented, exists, lower, upper, contains, starts_with, ends_with, abs, min, max)"
                ),
            )),
        }
    }
}
