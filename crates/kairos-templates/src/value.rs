//! Runtime values. They borrow from the render context and the template (`'a`) so looking up
//! `profile.first_name` copies a pointer, not a string; values made by filters are reference
//! counted so assigning them is cheap.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::rc::Rc;

use serde_json::{Map, Value as Json};

use crate::number::{write_float, Num};

#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    String(Rc<str>),
    Array(&'a [Json]),
    Object(&'a Map<String, Json>),
    List(Rc<[Value<'a>]>),
    /// Inclusive integer range `(a..b)`.
    Range(i64, i64),
    Empty,
    Blank,
    Forloop(Rc<Forloop<'a>>),
    Tablerowloop(Rc<Tablerowloop>),
}

/// `forloop`: Ruby mutates one drop per loop, so does this (through cells).
#[derive(Debug)]
pub(crate) struct Forloop<'a> {
    pub name: Cow<'a, str>,
    pub length: usize,
    pub index0: Cell<usize>,
    pub parent: Option<Rc<Forloop<'a>>>,
}

#[derive(Debug)]
pub(crate) struct Tablerowloop {
    pub length: usize,
    pub cols: i64,
    pub index0: Cell<usize>,
    pub col: Cell<i64>,
    pub row: Cell<i64>,
}

impl<'a> Value<'a> {
    pub(crate) fn from_json(json: &'a Json) -> Value<'a> {
        match json {
            Json::Null => Value::Nil,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            Json::String(s) => Value::Str(s),
            Json::Array(a) => Value::Array(a),
            Json::Object(o) => Value::Object(o),
        }
    }

    pub(crate) fn string(s: String) -> Value<'a> {
        Value::String(Rc::from(s))
    }

    pub(crate) fn list(items: Vec<Value<'a>>) -> Value<'a> {
        Value::List(Rc::from(items))
    }

    pub(crate) fn is_truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    pub(crate) fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_array_like(&self) -> bool {
        matches!(self, Value::Array(_) | Value::List(_) | Value::Range(..))
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) | Value::String(_) => "string",
            Value::Array(_) | Value::List(_) => "array",
            Value::Object(_) | Value::Forloop(_) | Value::Tablerowloop(_) => "object",
            Value::Range(..) => "range",
            Value::Empty => "empty",
            Value::Blank => "blank",
        }
    }

    /// Liquid's `empty?`: empty strings, arrays and objects.
    pub(crate) fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(s) => s.is_empty(),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::List(l) => l.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Range(a, b) => a > b,
            Value::Empty | Value::Blank => true,
            _ => false,
        }
    }

    fn is_blank(&self) -> bool {
        match self {
            Value::Nil | Value::Bool(false) | Value::Blank | Value::Empty => true,
            Value::Str(s) => s.chars().all(char::is_whitespace),
            Value::String(s) => s.chars().all(char::is_whitespace),
            other => other.is_empty_collection(),
        }
    }

    /// Number of items of an array-like value.
    pub(crate) fn seq_len(&self) -> Option<usize> {
        match self {
            Value::Array(a) => Some(a.len()),
            Value::List(l) => Some(l.len()),
            Value::Range(a, b) => Some(range_len(*a, *b)),
            _ => None,
        }
    }

    /// Item `i` of an array-like value.
    pub(crate) fn seq_get(&self, i: usize) -> Option<Value<'a>> {
        match self {
            Value::Array(a) => a.get(i).map(Value::from_json),
            Value::List(l) => l.get(i).cloned(),
            Value::Range(a, b) => {
                let i = i64::try_from(i).ok()?;
                let v = a.checked_add(i)?;
                (v <= *b).then_some(Value::Int(v))
            }
            _ => None,
        }
    }

    /// Property access: `value.key`. `None` means undefined.
    pub(crate) fn get_key(&self, key: &str) -> Option<Value<'a>> {
        match self {
            Value::Object(o) => match o.get(key) {
                Some(v) => Some(Value::from_json(v)),
                None => match key {
                    "size" => Some(int_len(o.len())),
                    "first" => o
                        .iter()
                        .next()
                        .map(|(k, v)| Value::list(vec![Value::Str(k), Value::from_json(v)])),
                    _ => None,
                },
            },
            Value::Array(_) | Value::List(_) | Value::Range(..) => match key {
                "size" => self.seq_len().map(int_len),
                "first" => Some(self.seq_get(0).unwrap_or(Value::Nil)),
                "last" => {
                    let len = self.seq_len().unwrap_or(0);
                    Some(
                        len.checked_sub(1)
                            .and_then(|i| self.seq_get(i))
                            .unwrap_or(Value::Nil),
                    )
                }
                _ => None,
            },
            Value::Str(_) | Value::String(_) => match key {
                "size" => self.as_str().map(|s| int_len(s.chars().count())),
                // Ruby strings have no `first` / `last`.
                "first" | "last" => Some(Value::Nil),
                _ => None,
            },
            Value::Forloop(f) => f.get(key),
            Value::Tablerowloop(t) => t.get(key),
            _ => None,
        }
    }

    /// Index access: `value[i]`, negative from the end.
    pub(crate) fn get_index(&self, i: i64) -> Option<Value<'a>> {
        let len = self.seq_len()?;
        let idx = if i < 0 {
            let back = usize::try_from(i.unsigned_abs()).ok()?;
            len.checked_sub(back)?
        } else {
            usize::try_from(i).ok()?
        };
        self.seq_get(idx)
    }

    /// `value[expr]` with a computed key.
    pub(crate) fn get_dynamic(&self, key: &Value<'_>) -> Option<Value<'a>> {
        match key {
            Value::Int(i) => self.get_index(*i),
            Value::Float(f) if f.is_finite() => self.get_index(*f as i64),
            other => other.as_str().and_then(|k| self.get_key(k)),
        }
    }

    /// Appends the value as Liquid outputs it: nil is empty, arrays are concatenated.
    pub(crate) fn write_output(&self, out: &mut String) {
        match self {
            Value::Nil | Value::Empty | Value::Blank => {}
            Value::Str(s) => out.push_str(s),
            Value::String(s) => out.push_str(s),
            Value::Array(a) => {
                for item in a.iter() {
                    Value::from_json(item).write_output(out);
                }
            }
            Value::List(l) => {
                for item in l.iter() {
                    item.write_output(out);
                }
            }
            Value::Range(a, b) => {
                let _ = write!(out, "{a}..{b}");
            }
            other => other.write_to_s(out),
        }
    }

    /// Appends Ruby's `to_s` of the value (arrays and hashes as `inspect`).
    pub(crate) fn write_to_s(&self, out: &mut String) {
        match self {
            Value::Nil | Value::Empty | Value::Blank => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => write_float(out, *f),
            Value::Str(s) => out.push_str(s),
            Value::String(s) => out.push_str(s),
            Value::Range(a, b) => {
                let _ = write!(out, "{a}..{b}");
            }
            other => other.write_inspect(out),
        }
    }

    /// Ruby's `inspect`: `["a", 1, nil]`, `{"k"=>"v"}`.
    fn write_inspect(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("nil"),
            Value::Str(_) | Value::String(_) => {
                let _ = write!(out, "{:?}", self.as_str().unwrap_or_default());
            }
            Value::Array(_) | Value::List(_) => {
                out.push('[');
                let len = self.seq_len().unwrap_or(0);
                for i in 0..len {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    if let Some(v) = self.seq_get(i) {
                        v.write_inspect(out);
                    }
                }
                out.push(']');
            }
            Value::Object(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{k:?}=>");
                    Value::from_json(v).write_inspect(out);
                }
                out.push('}');
            }
            Value::Forloop(_) | Value::Tablerowloop(_) => out.push_str("{}"),
            Value::Empty | Value::Blank => out.push_str("\"\""),
            other => other.write_to_s(out),
        }
    }

    /// Ruby's `to_s`, borrowing when the value already is a string.
    pub(crate) fn to_str(&self) -> Cow<'_, str> {
        match self {
            Value::Str(s) => Cow::Borrowed(s),
            Value::String(s) => Cow::Borrowed(s),
            Value::Nil | Value::Empty | Value::Blank => Cow::Borrowed(""),
            other => {
                let mut s = String::new();
                other.write_to_s(&mut s);
                Cow::Owned(s)
            }
        }
    }

    /// Ruby's `Utils.to_number`: numeric strings parse, everything else is 0.
    pub(crate) fn to_num(&self) -> Num {
        match self {
            Value::Int(i) => Num::Int(*i),
            Value::Float(f) => Num::Float(*f),
            Value::Str(_) | Value::String(_) => Num::parse_ruby(self.as_str().unwrap_or_default()),
            _ => Num::Int(0),
        }
    }
}

pub(crate) fn int_len(n: usize) -> Value<'static> {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

pub(crate) fn range_len(a: i64, b: i64) -> usize {
    if a > b {
        0
    } else {
        usize::try_from(b.abs_diff(a)).map_or(usize::MAX, |d| d.saturating_add(1))
    }
}

impl<'a> Forloop<'a> {
    fn get(&self, key: &str) -> Option<Value<'a>> {
        let i = self.index0.get();
        let len = self.length;
        Some(match key {
            "name" => match &self.name {
                Cow::Borrowed(s) => Value::Str(s),
                Cow::Owned(s) => Value::String(Rc::from(s.as_str())),
            },
            "length" => int_len(len),
            "index" => int_len(i + 1),
            "index0" => int_len(i),
            "rindex" => int_len(len.saturating_sub(i)),
            "rindex0" => int_len(len.saturating_sub(i + 1)),
            "first" => Value::Bool(i == 0),
            "last" => Value::Bool(i + 1 == len),
            "parentloop" => return self.parent.as_ref().map(|p| Value::Forloop(Rc::clone(p))),
            _ => return None,
        })
    }
}

impl Tablerowloop {
    fn get(&self, key: &str) -> Option<Value<'static>> {
        let i = self.index0.get();
        let len = self.length;
        let col = self.col.get();
        Some(match key {
            "length" => int_len(len),
            "index" => int_len(i + 1),
            "index0" => int_len(i),
            "rindex" => int_len(len.saturating_sub(i)),
            "rindex0" => int_len(len.saturating_sub(i + 1)),
            "first" => Value::Bool(i == 0),
            "last" => Value::Bool(i + 1 == len),
            "col" => Value::Int(col),
            "col0" => Value::Int(col - 1),
            "col_first" => Value::Bool(col == 1),
            "col_last" => Value::Bool(col == self.cols),
            "row" => Value::Int(self.row.get()),
            _ => return None,
        })
    }
}

/// Liquid's `==`.
pub(crate) fn liquid_eq(a: &Value<'_>, b: &Value<'_>) -> bool {
    use Value as V;
    match (a, b) {
        (V::Empty, V::Empty) | (V::Blank, V::Blank) => true,
        (V::Empty, V::Blank) | (V::Blank, V::Empty) => false,
        (V::Empty, other) | (other, V::Empty) => other.is_empty_collection(),
        (V::Blank, other) | (other, V::Blank) => other.is_blank(),
        (V::Nil, V::Nil) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Int(x), V::Int(y)) => x == y,
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => {
            a.to_num().cmp_num(&b.to_num()) == Some(Ordering::Equal)
        }
        (V::Str(_) | V::String(_), V::Str(_) | V::String(_)) => a.as_str() == b.as_str(),
        (V::Range(a1, b1), V::Range(a2, b2)) => a1 == a2 && b1 == b2,
        (V::Array(_) | V::List(_), V::Array(_) | V::List(_)) => {
            let (la, lb) = (a.seq_len().unwrap_or(0), b.seq_len().unwrap_or(0));
            la == lb
                && (0..la).all(|i| match (a.seq_get(i), b.seq_get(i)) {
                    (Some(x), Some(y)) => liquid_eq(&x, &y),
                    _ => false,
                })
        }
        (V::Object(x), V::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.get(k)
                        .is_some_and(|w| liquid_eq(&Value::from_json(v), &Value::from_json(w)))
                })
        }
        (V::Forloop(x), V::Forloop(y)) => Rc::ptr_eq(x, y),
        (V::Tablerowloop(x), V::Tablerowloop(y)) => Rc::ptr_eq(x, y),
        _ => false,
    }
}
