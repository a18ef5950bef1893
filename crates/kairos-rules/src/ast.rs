//! The syntax tree, and a printer whose output parses back to the same tree.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Num(f64),
    Str(String),
    /// Milliseconds.
    Dur(i64),
    Bool(bool),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::NotIn => "not in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Not,
    Neg,
}

/// A function argument: positional (`"Product Viewed" where category == "shoes"`) or
/// named (`within: 24h`).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<String>,
    pub value: Expr,
    pub filter: Option<Expr>,
    pub at: usize,
}

/// An expression; `at` is the byte offset where it starts, for error messages.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Lit {
        lit: Lit,
        at: usize,
    },
    List {
        items: Vec<Expr>,
        at: usize,
    },
    Path {
        parts: Vec<String>,
        at: usize,
    },
    Call {
        name: String,
        args: Vec<Arg>,
        at: usize,
    },
    Unary {
        op: UnOp,
        expr: Box<Expr>,
        at: usize,
    },
    Binary {
        op: BinOp,
        left: Box<Expr>,
        right: Box<Expr>,
        at: usize,
    },
}

impl Expr {
    pub fn at(&self) -> usize {
        match self {
            Expr::Lit { at, .. }
            | Expr::List { at, .. }
            | Expr::Path { at, .. }
            | Expr::Call { at, .. }
            | Expr::Unary { at, .. }
            | Expr::Binary { at, .. } => *at,
        }
    }

    /// The same tree with every offset zeroed, for comparing trees parsed from different text.
    pub fn without_positions(&self) -> Expr {
        match self {
            Expr::Lit { lit, .. } => Expr::Lit {
                lit: lit.clone(),
                at: 0,
            },
            Expr::List { items, .. } => Expr::List {
                items: items.iter().map(Expr::without_positions).collect(),
                at: 0,
            },
            Expr::Path { parts, .. } => Expr::Path {
                parts: parts.clone(),
                at: 0,
            },
            Expr::Call { name, args, .. } => Expr::Call {
                name: name.clone(),
                args: args
                    .iter()
                    .map(|a| Arg {
                        name: a.name.clone(),
                        value: a.value.without_positions(),
                        filter: a.filter.as_ref().map(Expr::without_positions),
                        at: 0,
                    })
                    .collect(),
                at: 0,
            },
            Expr::Unary { op, expr, .. } => Expr::Unary {
                op: *op,
                expr: Box::new(expr.without_positions()),
                at: 0,
            },
            Expr::Binary {
                op, left, right, ..
            } => Expr::Binary {
                op: *op,
                left: Box::new(left.without_positions()),
                right: Box::new(right.without_positions()),
                at: 0,
            },
        }
    }
}

/// Durations print in the largest unit that divides them.
pub fn format_duration(ms: i64) -> String {
    for (unit, size) in [
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !matches!(
            s,
            "and" | "or" | "not" | "in" | "where" | "true" | "false" | "null"
        )
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Num(n) => write!(f, "{n:?}"),
            Lit::Str(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
            Lit::Dur(ms) => f.write_str(&format_duration(*ms)),
            Lit::Bool(b) => write!(f, "{b}"),
            Lit::Null => f.write_str("null"),
        }
    }
}

/// Fully parenthesised, so that printing and parsing again gives the same tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Lit { lit, .. } => write!(f, "{lit}"),
            Expr::List { items, .. } => {
                f.write_str("[")?;
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
            Expr::Path { parts, .. } => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_ident(p) {
                        f.write_str(p)?;
                    } else {
                        write!(f, "{}", serde_json::Value::String(p.clone()))?;
                    }
                }
                Ok(())
            }
            Expr::Call { name, args, .. } => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if let Some(n) = &a.name {
                        write!(f, "{n}: ")?;
                    }
                    write!(f, "{}", a.value)?;
                    if let Some(w) = &a.filter {
                        write!(f, " where {w}")?;
                    }
                }
                f.write_str(")")
            }
            Expr::Unary { op, expr, .. } => match op {
                UnOp::Not => write!(f, "(not {expr})"),
                UnOp::Neg => write!(f, "(-{expr})"),
            },
            Expr::Binary {
                op, left, right, ..
            } => write!(f, "({left} {} {right})", op.symbol()),
        }
    }
}
