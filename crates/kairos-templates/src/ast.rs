//! The parsed form of a template. Byte offsets (`pos`) point into the template source so render
//! errors can report a line and column without storing them for every node.

use crate::filters::Filter;

/// Byte offset into the template source.
pub(crate) type Pos = u32;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(Box<str>),
    Output(Box<FilteredExpr>),
    Assign(Box<Assign>),
    Capture(Box<Capture>),
    If(Box<If>),
    Case(Box<Case>),
    For(Box<For>),
    Tablerow(Box<Tablerow>),
    Cycle(Box<Cycle>),
    Increment(Box<str>),
    Decrement(Box<str>),
    Break,
    Continue,
    Include(Box<Partial>),
    Render(Box<Partial>),
    IfChanged(Vec<Node>),
}

#[derive(Debug, Clone)]
pub(crate) struct Assign {
    pub name: Box<str>,
    pub value: FilteredExpr,
}

#[derive(Debug, Clone)]
pub(crate) struct Capture {
    pub name: Box<str>,
    pub body: Vec<Node>,
}

/// `if` / `unless`: the first branch whose condition holds renders; `else` has no condition.
#[derive(Debug, Clone)]
pub(crate) struct If {
    pub branches: Vec<Branch>,
}

#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub condition: Option<Condition>,
    /// The first branch of `unless` renders when its condition does not hold.
    pub negate: bool,
    pub body: Vec<Node>,
}

#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub subject: Expr,
    pub arms: Vec<CaseArm>,
}

#[derive(Debug, Clone)]
pub(crate) enum CaseArm {
    When(Vec<Expr>, Vec<Node>),
    Else(Vec<Node>),
}

#[derive(Debug, Clone)]
pub(crate) enum Offset {
    None,
    Continue,
    Expr(Expr),
}

#[derive(Debug, Clone)]
pub(crate) struct For {
    pub var: Box<str>,
    pub iterable: Expr,
    /// `var-collection source`, Ruby's key for `forloop.name` and `offset: continue`.
    pub name: Box<str>,
    pub limit: Option<Expr>,
    pub offset: Offset,
    pub reversed: bool,
    pub body: Vec<Node>,
    pub else_body: Option<Vec<Node>>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub(crate) struct Tablerow {
    pub var: Box<str>,
    pub iterable: Expr,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
    pub cols: Option<Expr>,
    pub body: Vec<Node>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub(crate) struct Cycle {
    /// `cycle group: a, b`; the group is an expression evaluated at render time.
    pub group: Option<Expr>,
    /// Key of an unnamed cycle: its argument list as written.
    pub key: Box<str>,
    pub values: Vec<Expr>,
}

/// `include` and `render`.
#[derive(Debug, Clone)]
pub(crate) struct Partial {
    pub name: Expr,
    pub bound: Option<Expr>,
    pub bound_is_for: bool,
    pub alias: Option<Box<str>>,
    pub args: Vec<(Box<str>, Expr)>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub(crate) struct FilteredExpr {
    pub base: Expr,
    pub filters: Vec<FilterCall>,
}

#[derive(Debug, Clone)]
pub(crate) struct FilterCall {
    pub filter: Filter,
    pub args: Vec<Expr>,
    /// `allow_false:` of `default`, the only standard keyword argument.
    pub allow_false: Option<Expr>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
    Empty,
    Blank,
    Range(Box<(Expr, Expr)>),
    Path(Box<Path>),
}

#[derive(Debug, Clone)]
pub(crate) struct Path {
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
pub(crate) enum Segment {
    Key(Box<str>),
    Index(i64),
    Dynamic(Expr),
}

/// `a and b or c`: Liquid's `and` / `or` have equal precedence and group from the right, so
/// a flat list evaluated left to right with short-circuiting gives the same answer without
/// recursion (deep recursion would be a stack overflow on hostile input).
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub terms: Vec<Comparison>,
    /// `ops[i]` joins `terms[i]` and the rest of the condition.
    pub ops: Vec<Logic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Logic {
    And,
    Or,
}

#[derive(Debug, Clone)]
pub(crate) struct Comparison {
    pub left: Expr,
    pub op: Option<(CmpOp, Expr)>,
    pub pos: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Contains,
}

impl Path {
    /// The path as written, for the `missing` report: `a.b[0]["x y"][c.d]`.
    pub(crate) fn display(&self) -> String {
        let mut out = String::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Key(k) if is_plain_identifier(k) => {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Segment::Key(k) => {
                    out.push_str("[\"");
                    out.push_str(k);
                    out.push_str("\"]");
                }
                Segment::Index(n) => {
                    out.push('[');
                    out.push_str(&n.to_string());
                    out.push(']');
                }
                Segment::Dynamic(e) => {
                    out.push('[');
                    match e {
                        Expr::Path(p) => out.push_str(&p.display()),
                        other => out.push_str(&format!("{other:?}")),
                    }
                    out.push(']');
                }
            }
        }
        out
    }
}

fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphanumeric() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '?')
}
