//! The standard Liquid filters, with the semantics of Shopify's reference implementation
//! (`standardfilters.rb`): lax coercions, and errors only where Ruby raises.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::date;
use crate::error::LimitKind;
use crate::number::Num;
use crate::value::{int_len, liquid_eq, Value};

macro_rules! filters {
    ($($variant:ident => $name:literal, $min:literal, $max:literal;)*) => {
        /// A standard filter, resolved at parse time.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Filter {
            $($variant,)*
        }

        impl Filter {
            pub(crate) fn from_name(name: &str) -> Option<Filter> {
                match name {
                    $($name => Some(Filter::$variant),)*
                    "h" => Some(Filter::Escape),
                    _ => None,
                }
            }

            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Filter::$variant => $name,)*
                }
            }

            /// Minimum and maximum number of positional arguments.
            pub(crate) fn arity(self) -> (usize, usize) {
                match self {
                    $(Filter::$variant => ($min, $max),)*
                }
            }
        }
    };
}

filters! {
    Abs => "abs", 0, 0;
    Append => "append", 1, 1;
    AtLeast => "at_least", 1, 1;
    AtMost => "at_most", 1, 1;
    Base64Decode => "base64_decode", 0, 0;
    Base64Encode => "base64_encode", 0, 0;
    Base64UrlSafeDecode => "base64_url_safe_decode", 0, 0;
    Base64UrlSafeEncode => "base64_url_safe_encode", 0, 0;
    Capitalize => "capitalize", 0, 0;
    Ceil => "ceil", 0, 0;
    Compact => "compact", 0, 1;
    Concat => "concat", 1, 1;
    Date => "date", 1, 1;
    Default => "default", 0, 1;
    DividedBy => "divided_by", 1, 1;
    Downcase => "downcase", 0, 0;
    Escape => "escape", 0, 0;
    EscapeOnce => "escape_once", 0, 0;
    Find => "find", 1, 2;
    FindIndex => "find_index", 1, 2;
    First => "first", 0, 0;
    Floor => "floor", 0, 0;
    Has => "has", 1, 2;
    Join => "join", 0, 1;
    Last => "last", 0, 0;
    Lstrip => "lstrip", 0, 0;
    Map => "map", 1, 1;
    Minus => "minus", 1, 1;
    Modulo => "modulo", 1, 1;
    NewlineToBr => "newline_to_br", 0, 0;
    Plus => "plus", 1, 1;
    Prepend => "prepend", 1, 1;
    Reject => "reject", 1, 2;
    Remove => "remove", 1, 1;
    RemoveFirst => "remove_first", 1, 1;
    RemoveLast => "remove_last", 1, 1;
    Replace => "replace", 1, 2;
    ReplaceFirst => "replace_first", 1, 2;
    ReplaceLast => "replace_last", 2, 2;
    Reverse => "reverse", 0, 0;
    Round => "round", 0, 1;
    Rstrip => "rstrip", 0, 0;
    Size => "size", 0, 0;
    Slice => "slice", 1, 2;
    Sort => "sort", 0, 1;
    SortNatural => "sort_natural", 0, 1;
    Split => "split", 1, 1;
    Squish => "squish", 0, 0;
    Strip => "strip", 0, 0;
    StripHtml => "strip_html", 0, 0;
    StripNewlines => "strip_newlines", 0, 0;
    Sum => "sum", 0, 1;
    Times => "times", 1, 1;
    Truncate => "truncate", 0, 2;
    Truncatewords => "truncatewords", 0, 2;
    Uniq => "uniq", 0, 1;
    Upcase => "upcase", 0, 0;
    UrlDecode => "url_decode", 0, 0;
    UrlEncode => "url_encode", 0, 0;
    Where => "where", 1, 2;
}

/// Why a filter failed.
#[derive(Debug)]
pub(crate) enum FilterError {
    Message(String),
    Limit(LimitKind, u64),
}

type FResult<'a> = Result<Value<'a>, FilterError>;

fn fail<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError::Message(message.into()))
}

/// Size limits that filters building strings and arrays must respect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FilterLimits {
    pub max_string_bytes: usize,
    pub max_items: usize,
}

impl FilterLimits {
    fn string<'a>(&self, s: String) -> FResult<'a> {
        if s.len() > self.max_string_bytes {
            return Err(FilterError::Limit(
                LimitKind::OutputSize,
                self.max_string_bytes as u64,
            ));
        }
        Ok(Value::string(s))
    }

    fn check_len(&self, n: usize) -> Result<(), FilterError> {
        if n > self.max_items {
            return Err(FilterError::Limit(
                LimitKind::CollectionSize,
                self.max_items as u64,
            ));
        }
        Ok(())
    }

    fn list<'a>(&self, items: Vec<Value<'a>>) -> FResult<'a> {
        self.check_len(items.len())?;
        Ok(Value::list(items))
    }
}

/// Applies `filter` to `input`. Arity was checked at parse time; missing optional arguments
/// arrive as absent (`args.len()` is smaller), undefined variables as `Nil`.
pub(crate) fn apply<'a>(
    filter: Filter,
    input: Value<'a>,
    args: &[Value<'a>],
    allow_false: bool,
    limits: &FilterLimits,
) -> FResult<'a> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Nil);
    // An undefined (nil) property means "no property" for the filters that take one optionally.
    let property = args.first().filter(|p| !p.is_nil());
    match filter {
        Filter::Abs => Ok(num_value(input.to_num().abs())),
        Filter::Ceil => Ok(num_value(input.to_num().ceil())),
        Filter::Floor => Ok(num_value(input.to_num().floor())),
        Filter::Round => {
            let digits = match args.first() {
                Some(v) => match v.to_num() {
                    Num::Int(i) => i,
                    Num::Float(f) => crate::number::float_to_i64(f),
                },
                None => 0,
            };
            Ok(num_value(input.to_num().round(digits)))
        }
        Filter::Plus => Ok(num_value(input.to_num().plus(arg(0).to_num()))),
        Filter::Minus => Ok(num_value(input.to_num().minus(arg(0).to_num()))),
        Filter::Times => Ok(num_value(input.to_num().times(arg(0).to_num()))),
        Filter::DividedBy => input
            .to_num()
            .divided_by(arg(0).to_num())
            .map(num_value)
            .map_err(FilterError::Message),
        Filter::Modulo => input
            .to_num()
            .modulo(arg(0).to_num())
            .map(num_value)
            .map_err(FilterError::Message),
        Filter::AtLeast | Filter::AtMost => {
            let (a, b) = (input.to_num(), arg(0).to_num());
            let ord = a.cmp_num(&b).unwrap_or(std::cmp::Ordering::Equal);
            let pick_b = if filter == Filter::AtLeast {
                ord == std::cmp::Ordering::Less
            } else {
                ord == std::cmp::Ordering::Greater
            };
            Ok(num_value(if pick_b { b } else { a }))
        }

        Filter::Append => limits.string(concat(&input.to_str(), &arg(0).to_str())),
        Filter::Prepend => limits.string(concat(&arg(0).to_str(), &input.to_str())),
        Filter::Capitalize => {
            let s = input.to_str();
            let mut chars = s.chars();
            let out = match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.as_str().to_lowercase().chars())
                    .collect(),
                None => String::new(),
            };
            limits.string(out)
        }
        Filter::Downcase => limits.string(input.to_str().to_lowercase()),
        Filter::Upcase => limits.string(input.to_str().to_uppercase()),
        Filter::Escape | Filter::EscapeOnce => {
            if input.is_nil() && filter == Filter::Escape {
                return Ok(Value::Nil);
            }
            let once = filter == Filter::EscapeOnce;
            match &input {
                // Nothing to escape: keep the value, no copy.
                Value::Str(_) | Value::String(_)
                    if !needs_escape(input.as_str().unwrap_or_default(), once) =>
                {
                    Ok(input)
                }
                _ => {
                    let mut out = String::new();
                    escape_html_into(&mut out, &input.to_str(), once);
                    limits.string(out)
                }
            }
        }
        Filter::Lstrip => trimmed(input, |s| s.trim_start_matches(is_ruby_space)),
        Filter::Rstrip => trimmed(input, |s| s.trim_end_matches(is_ruby_space)),
        Filter::Strip => trimmed(input, |s| s.trim_matches(is_ruby_space)),
        Filter::Squish => {
            if input.is_nil() {
                return Ok(Value::Nil);
            }
            let s = input.to_str();
            let words: Vec<&str> = s.split(is_ruby_space).filter(|w| !w.is_empty()).collect();
            limits.string(words.join(" "))
        }
        Filter::StripNewlines => {
            limits.string(input.to_str().replace("\r\n", "").replace('\n', ""))
        }
        Filter::NewlineToBr => limits.string(
            input
                .to_str()
                .replace("\r\n", "\n")
                .replace('\n', "<br />\n"),
        ),
        Filter::StripHtml => limits.string(strip_html(&input.to_str())),
        Filter::UrlEncode => {
            if input.is_nil() {
                return Ok(Value::Nil);
            }
            limits.string(url_encode(&input.to_str()))
        }
        Filter::UrlDecode => {
            if input.is_nil() {
                return Ok(Value::Nil);
            }
            match url_decode(&input.to_str()) {
                Some(s) => limits.string(s),
                None => fail("invalid byte sequence"),
            }
        }
        Filter::Base64Encode => limits.string(base64_encode(input.to_str().as_bytes(), false)),
        Filter::Base64UrlSafeEncode => {
            limits.string(base64_encode(input.to_str().as_bytes(), true))
        }
        Filter::Base64Decode => match base64_decode(&input.to_str(), false) {
            Some(bytes) => limits.string(String::from_utf8_lossy(&bytes).into_owned()),
            None => fail("invalid base64 provided to base64_decode"),
        },
        Filter::Base64UrlSafeDecode => match base64_decode(&input.to_str(), true) {
            Some(bytes) => limits.string(String::from_utf8_lossy(&bytes).into_owned()),
            None => fail("invalid base64 provided to base64_url_safe_decode"),
        },
        Filter::Remove => limits.string(input.to_str().replace(&*arg(0).to_str(), "")),
        Filter::RemoveFirst => limits.string(replace_first(&input.to_str(), &arg(0).to_str(), "")),
        Filter::RemoveLast => limits.string(replace_last(&input.to_str(), &arg(0).to_str(), "")),
        Filter::Replace => limits.string(replace_all(
            &input.to_str(),
            &arg(0).to_str(),
            &arg(1).to_str(),
            limits,
        )?),
        Filter::ReplaceFirst => limits.string(replace_first(
            &input.to_str(),
            &arg(0).to_str(),
            &arg(1).to_str(),
        )),
        Filter::ReplaceLast => limits.string(replace_last(
            &input.to_str(),
            &arg(0).to_str(),
            &arg(1).to_str(),
        )),
        Filter::Truncate => truncate(input, args, limits),
        Filter::Truncatewords => truncatewords(input, args, limits),
        Filter::Split => split(input, &arg(0), limits),
        Filter::Slice => slice(input, args, limits),
        Filter::Size => Ok(match &input {
            Value::Str(_) | Value::String(_) => int_len(input.to_str().chars().count()),
            Value::Object(o) => int_len(o.len()),
            other => int_len(other.seq_len().unwrap_or(0)),
        }),
        Filter::Date => date::date_filter(input, &arg(0), limits.max_string_bytes),
        Filter::Default => {
            let use_default = if allow_false {
                input.is_nil()
            } else {
                !input.is_truthy()
            };
            if use_default || input.is_empty_collection() {
                Ok(args.first().cloned().unwrap_or(Value::Str("")))
            } else {
                Ok(input)
            }
        }

        Filter::First => Ok(match &input {
            Value::Object(o) => o
                .iter()
                .next()
                .map(|(k, v)| Value::list(vec![Value::Str(k), Value::from_json(v)]))
                .unwrap_or(Value::Nil),
            other if other.is_array_like() => other.seq_get(0).unwrap_or(Value::Nil),
            _ => Value::Nil,
        }),
        Filter::Last => Ok(match &input {
            other if other.is_array_like() => {
                let len = other.seq_len().unwrap_or(0);
                len.checked_sub(1)
                    .and_then(|i| other.seq_get(i))
                    .unwrap_or(Value::Nil)
            }
            _ => Value::Nil,
        }),
        Filter::Join => {
            let glue = match args.first() {
                Some(g) => g.to_str().into_owned(),
                None => " ".to_string(),
            };
            let items = to_seq(&input, limits)?;
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&glue);
                }
                item.write_to_s(&mut out);
                if out.len() > limits.max_string_bytes {
                    return Err(FilterError::Limit(
                        LimitKind::OutputSize,
                        limits.max_string_bytes as u64,
                    ));
                }
            }
            limits.string(out)
        }
        Filter::Reverse => {
            let mut items = to_seq(&input, limits)?;
            items.reverse();
            limits.list(items)
        }
        Filter::Concat => {
            let extra = match &arg(0) {
                Value::Array(_) | Value::List(_) => {
                    let a = arg(0);
                    let n = a.seq_len().unwrap_or(0);
                    (0..n).filter_map(|i| a.seq_get(i)).collect::<Vec<_>>()
                }
                other => {
                    return fail(format!(
                        "concat expects an array argument, got {}",
                        other.type_name()
                    ))
                }
            };
            let mut items = to_seq(&input, limits)?;
            items.extend(extra);
            limits.list(items)
        }
        Filter::Compact => {
            let items = to_seq(&input, limits)?;
            match property {
                None => limits.list(items.into_iter().filter(|v| !v.is_nil()).collect()),
                Some(prop) => {
                    let mut out = Vec::new();
                    for item in items {
                        match index_item(&item, prop) {
                            Indexed::Found(v) if v.is_nil() => {}
                            Indexed::Found(_) => out.push(item),
                            Indexed::NoMethod => return Ok(Value::Nil),
                            Indexed::TypeError => return property_error(prop),
                        }
                    }
                    limits.list(out)
                }
            }
        }
        Filter::Map => {
            let prop = arg(0);
            let items = to_seq(&input, limits)?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if prop.as_str() == Some("to_liquid") {
                    out.push(item);
                    continue;
                }
                match index_item(&item, &prop) {
                    Indexed::Found(v) => out.push(v),
                    Indexed::NoMethod => out.push(Value::Nil),
                    Indexed::TypeError => return property_error(&prop),
                }
            }
            limits.list(out)
        }
        // Like the reference implementations, rejecting by an undefined property keeps nothing.
        Filter::Reject if property.is_none() => Ok(Value::list(Vec::new())),
        Filter::Where | Filter::Reject | Filter::Find | Filter::FindIndex | Filter::Has => {
            select(filter, &input, &arg(0), &arg(1), limits)
        }
        Filter::Uniq => uniq(&input, property, limits),
        Filter::Sort => sort(&input, property, false, limits),
        Filter::SortNatural => sort(&input, property, true, limits),
        Filter::Sum => sum(&input, property, limits),
    }
}

/// Writes `filter(input, args)` straight into `out` for the string filters that commonly end
/// an output, saving the intermediate string. `false` when the filter is not one of them.
pub(crate) fn write_last(
    filter: Filter,
    input: &Value<'_>,
    args: &[Value<'_>],
    out: &mut String,
    limits: &FilterLimits,
) -> Result<bool, FilterError> {
    let arg_str = |i: usize| args.get(i).map_or(Cow::Borrowed(""), Value::to_str);
    match filter {
        Filter::Append => {
            input.write_to_s(out);
            out.push_str(&arg_str(0));
        }
        Filter::Prepend => {
            out.push_str(&arg_str(0));
            input.write_to_s(out);
        }
        Filter::Escape | Filter::EscapeOnce => {
            escape_html_into(out, &input.to_str(), filter == Filter::EscapeOnce)
        }
        Filter::Upcase | Filter::Downcase => {
            let s = input.to_str();
            if s.is_ascii() {
                let start = out.len();
                out.push_str(&s);
                if filter == Filter::Upcase {
                    out[start..].make_ascii_uppercase();
                } else {
                    out[start..].make_ascii_lowercase();
                }
            } else if filter == Filter::Upcase {
                out.push_str(&s.to_uppercase());
            } else {
                out.push_str(&s.to_lowercase());
            }
        }
        _ => return Ok(false),
    }
    if out.len() > limits.max_string_bytes {
        return Err(FilterError::Limit(
            LimitKind::OutputSize,
            limits.max_string_bytes as u64,
        ));
    }
    Ok(true)
}

fn num_value(n: Num) -> Value<'static> {
    match n {
        Num::Int(i) => Value::Int(i),
        Num::Float(f) => Value::Float(f),
    }
}

/// Ruby's `strip` whitespace (includes NUL).
fn is_ruby_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\0')
}

/// Strips without copying when the input is a borrowed string.
fn trimmed<'a>(input: Value<'a>, f: impl Fn(&str) -> &str) -> FResult<'a> {
    Ok(match input {
        Value::Str(s) => Value::Str(f(s)),
        other => {
            let s = other.to_str();
            Value::string(f(&s).to_string())
        }
    })
}

fn concat(a: &str, b: &str) -> String {
    let mut out = String::with_capacity(a.len() + b.len());
    out.push_str(a);
    out.push_str(b);
    out
}

fn needs_escape(s: &str, once: bool) -> bool {
    s.char_indices().any(|(i, c)| match c {
        '&' => !(once && is_entity(&s[i + 1..])),
        '<' | '>' | '"' | '\'' => true,
        _ => false,
    })
}

pub(crate) fn escape_html_into(out: &mut String, s: &str, once: bool) {
    out.reserve(s.len() + 8);
    for (i, c) in s.char_indices() {
        match c {
            '&' if once && is_entity(&s[i + 1..]) => out.push('&'),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z]+;` or `#\d+;` at the start of `rest` (an already-escaped entity).
fn is_entity(rest: &str) -> bool {
    let (body, numeric) = match rest.strip_prefix('#') {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let len = body
        .bytes()
        .take_while(|b| {
            if numeric {
                b.is_ascii_digit()
            } else {
                b.is_ascii_alphabetic()
            }
        })
        .count();
    len > 0 && body.as_bytes().get(len) == Some(&b';')
}

fn strip_html(s: &str) -> String {
    // Ruby: remove <script>..</script>, <!-- -->, <style>..</style> blocks, then any <...>.
    let mut first = String::with_capacity(s.len());
    let mut i = 0;
    'outer: while i < s.len() {
        let rest = &s[i..];
        for (open, close) in [
            ("<script", "</script>"),
            ("<!--", "-->"),
            ("<style", "</style>"),
        ] {
            if let Some(after) = rest.strip_prefix(open) {
                if let Some(end) = after.find(close) {
                    i += open.len() + end + close.len();
                    continue 'outer;
                }
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        first.push(c);
        i += c.len_utf8().max(1);
    }
    let mut out = String::with_capacity(first.len());
    let mut rest = first.as_str();
    while let Some(open) = rest.find('<') {
        match rest[open..].find('>') {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(hex_digit(b >> 4));
                out.push(hex_digit(b & 0xf));
            }
        }
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n & 0xf)])
}

fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64_encode(bytes: &[u8], url_safe: bool) -> String {
    let table = if url_safe { B64_URL } else { B64 };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(table[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict decoding (Ruby's `strict_decode64`); the URL-safe variant tolerates missing padding.
fn base64_decode(s: &str, url_safe: bool) -> Option<Vec<u8>> {
    let mut text: Cow<'_, str> = Cow::Borrowed(s);
    if url_safe && !s.ends_with('=') && !s.len().is_multiple_of(4) {
        let padded = s.len().div_ceil(4) * 4;
        text = Cow::Owned(format!("{s}{}", "=".repeat(padded - s.len())));
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let decode = |c: u8| -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' if !url_safe => 62,
            b'/' if !url_safe => 63,
            b'-' if url_safe => 62,
            b'_' if url_safe => 63,
            _ => return None,
        };
        Some(u32::from(v))
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (ci, chunk) in bytes.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && ci + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | decode(c)?;
        }
        n <<= 6 * pad as u32;
        let produced = 3 - pad;
        for k in 0..produced {
            out.push(((n >> (16 - 8 * k)) & 0xff) as u8);
        }
    }
    Some(out)
}

fn replace_all(
    s: &str,
    from: &str,
    to: &str,
    limits: &FilterLimits,
) -> Result<String, FilterError> {
    if from.is_empty() {
        // Ruby's gsub("") inserts the replacement around every character.
        let n = s.chars().count() + 1;
        if n.saturating_mul(to.len()).saturating_add(s.len()) > limits.max_string_bytes {
            return Err(FilterError::Limit(
                LimitKind::OutputSize,
                limits.max_string_bytes as u64,
            ));
        }
        let mut out = String::with_capacity(s.len() + n * to.len());
        out.push_str(to);
        for c in s.chars() {
            out.push(c);
            out.push_str(to);
        }
        return Ok(out);
    }
    let count = s.matches(from).count();
    if count.saturating_mul(to.len()).saturating_add(s.len()) > limits.max_string_bytes {
        return Err(FilterError::Limit(
            LimitKind::OutputSize,
            limits.max_string_bytes as u64,
        ));
    }
    Ok(s.replace(from, to))
}

fn replace_first(s: &str, from: &str, to: &str) -> String {
    s.replacen(from, to, 1)
}

fn replace_last(s: &str, from: &str, to: &str) -> String {
    match s.rfind(from) {
        Some(i) => format!("{}{}{}", &s[..i], to, &s[i + from.len()..]),
        None => s.to_string(),
    }
}

/// Ruby's `Utils.to_integer`: integers, or strings `Integer()` accepts.
pub(crate) fn to_integer(v: &Value<'_>) -> Result<i64, FilterError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Str(_) | Value::String(_) => parse_ruby_integer(v.as_str().unwrap_or_default())
            .ok_or_else(|| {
                FilterError::Message(format!(
                    "invalid integer: {:?}",
                    v.as_str().unwrap_or_default()
                ))
            }),
        other => Err(FilterError::Message(format!(
            "invalid integer: {}",
            other.type_name()
        ))),
    }
}

pub(crate) fn parse_ruby_integer(s: &str) -> Option<i64> {
    let t = s.trim();
    let (negative, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    let n = i64::from_str_radix(&clean, radix).ok()?;
    Some(if negative { -n } else { n })
}

fn truncate<'a>(input: Value<'a>, args: &[Value<'a>], limits: &FilterLimits) -> FResult<'a> {
    if input.is_nil() {
        return Ok(Value::Nil);
    }
    let length = match args.first() {
        Some(v) => to_integer(v)?,
        None => 50,
    };
    let ellipsis = match args.get(1) {
        Some(v) => v.to_str().into_owned(),
        None => "...".to_string(),
    };
    let s = input.to_str();
    let char_count = s.chars().count();
    if i64::try_from(char_count).unwrap_or(i64::MAX) <= length {
        return Ok(match input {
            Value::Str(_) | Value::String(_) => input.clone(),
            _ => Value::string(s.into_owned()),
        });
    }
    let keep = length
        .saturating_sub(i64::try_from(ellipsis.chars().count()).unwrap_or(i64::MAX))
        .max(0);
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    let mut out: String = s.chars().take(keep).collect();
    out.push_str(&ellipsis);
    limits.string(out)
}

fn truncatewords<'a>(input: Value<'a>, args: &[Value<'a>], limits: &FilterLimits) -> FResult<'a> {
    if input.is_nil() {
        return Ok(Value::Nil);
    }
    let words = match args.first() {
        Some(v) => to_integer(v)?,
        None => 15,
    }
    .max(1);
    let ellipsis = match args.get(1) {
        Some(v) => v.to_str().into_owned(),
        None => "...".to_string(),
    };
    let s = input.to_str();
    let mut list = Vec::new();
    let mut rest = s.trim_start_matches(is_awk_space);
    while !rest.is_empty() {
        if i64::try_from(list.len()).unwrap_or(i64::MAX) >= words {
            // Ruby's split(" ", words + 1) leaves the remainder as one more field.
            list.push(rest);
            break;
        }
        let end = rest.find(is_awk_space).unwrap_or(rest.len());
        list.push(&rest[..end]);
        rest = rest[end..].trim_start_matches(is_awk_space);
    }
    if i64::try_from(list.len()).unwrap_or(i64::MAX) <= words {
        return Ok(match input {
            Value::Str(_) | Value::String(_) => input.clone(),
            _ => Value::string(s.into_owned()),
        });
    }
    list.pop();
    let mut out = list.join(" ");
    out.push_str(&ellipsis);
    limits.string(out)
}

/// Whitespace of Ruby's awk-style `split(" ")`.
fn is_awk_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn split<'a>(input: Value<'a>, pattern: &Value<'_>, limits: &FilterLimits) -> FResult<'a> {
    let pattern = pattern.to_str();
    let text = input.to_str();
    let pieces: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else if pattern == " " {
        text.split(is_awk_space).filter(|p| !p.is_empty()).collect()
    } else if pattern.is_empty() {
        text.char_indices()
            .map(|(i, c)| &text[i..i + c.len_utf8()])
            .collect()
    } else {
        let mut v: Vec<&str> = text.split(&*pattern).collect();
        // Ruby drops trailing empty fields.
        while v.last().is_some_and(|p| p.is_empty()) {
            v.pop();
        }
        v
    };
    limits.check_len(pieces.len())?;
    let items = match input {
        // Borrow the pieces from the context string instead of copying them.
        Value::Str(s) => {
            let base = s.as_ptr() as usize;
            pieces
                .iter()
                .map(|p| {
                    let start = p.as_ptr() as usize - base;
                    Value::Str(&s[start..start + p.len()])
                })
                .collect()
        }
        _ => pieces
            .iter()
            .map(|p| Value::string((*p).to_string()))
            .collect(),
    };
    Ok(Value::list(items))
}

fn slice<'a>(input: Value<'a>, args: &[Value<'a>], limits: &FilterLimits) -> FResult<'a> {
    let offset = to_integer(args.first().unwrap_or(&Value::Nil))?;
    let length = match args.get(1) {
        Some(v) if v.is_truthy() => to_integer(v)?,
        _ => 1,
    };
    let bounds = |len: usize| -> Option<(usize, usize)> {
        let len_i = i64::try_from(len).ok()?;
        let start = if offset < 0 {
            offset.checked_add(len_i)?
        } else {
            offset
        };
        if start < 0 || start > len_i || length < 0 {
            return None;
        }
        let end = start.saturating_add(length).min(len_i);
        Some((usize::try_from(start).ok()?, usize::try_from(end).ok()?))
    };
    match &input {
        Value::Array(_) | Value::List(_) => {
            let len = input.seq_len().unwrap_or(0);
            Ok(match bounds(len) {
                Some((s, e)) => Value::list((s..e).filter_map(|i| input.seq_get(i)).collect()),
                None => Value::list(Vec::new()),
            })
        }
        _ => {
            let s = input.to_str();
            let len = s.chars().count();
            match bounds(len) {
                Some((start, end)) => {
                    limits.string(s.chars().skip(start).take(end - start).collect())
                }
                None => Ok(Value::Str("")),
            }
        }
    }
}

/// Ruby's `InputIterator`: arrays are flattened, a hash or scalar becomes a one-item array,
/// nil an empty one.
pub(crate) fn to_seq<'a>(
    input: &Value<'a>,
    limits: &FilterLimits,
) -> Result<Vec<Value<'a>>, FilterError> {
    let mut out = Vec::new();
    match input {
        Value::Nil => {}
        Value::Array(_) | Value::List(_) => flatten_into(input, &mut out, limits)?,
        Value::Range(a, b) => {
            limits.check_len(crate::value::range_len(*a, *b))?;
            out.extend((*a..=*b).map(Value::Int));
        }
        Value::Empty | Value::Blank => out.push(Value::Str("")),
        other => out.push(other.clone()),
    }
    Ok(out)
}

fn flatten_into<'a>(
    v: &Value<'a>,
    out: &mut Vec<Value<'a>>,
    limits: &FilterLimits,
) -> Result<(), FilterError> {
    let len = v.seq_len().unwrap_or(0);
    for i in 0..len {
        let Some(item) = v.seq_get(i) else { continue };
        if matches!(item, Value::Array(_) | Value::List(_)) {
            flatten_into(&item, out, limits)?;
        } else {
            out.push(item);
        }
        limits.check_len(out.len())?;
    }
    Ok(())
}

/// Result of Ruby's `item[property]`.
enum Indexed<'a> {
    Found(Value<'a>),
    /// The item has no `[]` (nil, booleans, floats): Ruby's `NoMethodError`.
    NoMethod,
    /// `[]` exists but rejects the key (e.g. an array indexed by a string).
    TypeError,
}

fn index_item<'a>(item: &Value<'a>, prop: &Value<'_>) -> Indexed<'a> {
    match item {
        Value::Object(o) => match prop.as_str() {
            Some(k) => Indexed::Found(o.get(k).map(Value::from_json).unwrap_or(Value::Nil)),
            None => Indexed::Found(Value::Nil),
        },
        Value::Forloop(_) | Value::Tablerowloop(_) => match prop.as_str() {
            Some(k) => Indexed::Found(item.get_key(k).unwrap_or(Value::Nil)),
            None => Indexed::Found(Value::Nil),
        },
        Value::Array(_) | Value::List(_) => match prop {
            Value::Int(i) => Indexed::Found(item.get_index(*i).unwrap_or(Value::Nil)),
            _ => Indexed::TypeError,
        },
        Value::Str(_) | Value::String(_) => {
            let s = item.as_str().unwrap_or_default();
            match prop {
                Value::Str(_) | Value::String(_) => {
                    let p = prop.as_str().unwrap_or_default();
                    if s.contains(p) {
                        Indexed::Found(Value::string(p.to_string()))
                    } else {
                        Indexed::Found(Value::Nil)
                    }
                }
                Value::Int(i) => {
                    let len = s.chars().count() as i64;
                    let idx = if *i < 0 { i + len } else { *i };
                    match usize::try_from(idx).ok().and_then(|k| s.chars().nth(k)) {
                        Some(c) => Indexed::Found(Value::string(c.to_string())),
                        None => Indexed::Found(Value::Nil),
                    }
                }
                _ => Indexed::TypeError,
            }
        }
        Value::Int(n) => match prop {
            // Ruby's Integer#[] reads a bit.
            Value::Int(bit) => Indexed::Found(Value::Int(if (0..64).contains(bit) {
                (n >> bit) & 1
            } else if *n < 0 {
                1
            } else {
                0
            })),
            _ => Indexed::TypeError,
        },
        _ => Indexed::NoMethod,
    }
}

fn property_error<'a>(prop: &Value<'_>) -> FResult<'a> {
    fail(format!("cannot select the property '{}'", prop.to_str()))
}

/// `where`, `reject`, `find`, `find_index` and `has` (Ruby's `filter_array`).
fn select<'a>(
    filter: Filter,
    input: &Value<'a>,
    prop: &Value<'_>,
    target: &Value<'_>,
    limits: &FilterLimits,
) -> FResult<'a> {
    let items = to_seq(input, limits)?;
    if items.is_empty() {
        return Ok(match filter {
            Filter::Where | Filter::Reject => Value::list(Vec::new()),
            Filter::Has => Value::Bool(false),
            _ => Value::Nil,
        });
    }
    let mut kept = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let matched = match index_item(item, prop) {
            Indexed::Found(v) => {
                if target.is_nil() {
                    v.is_truthy()
                } else {
                    liquid_eq(&v, target)
                }
            }
            Indexed::NoMethod => return Ok(Value::Nil),
            Indexed::TypeError => return property_error(prop),
        };
        match filter {
            Filter::Find if matched => return Ok(item.clone()),
            Filter::FindIndex if matched => return Ok(int_len(i)),
            Filter::Has if matched => return Ok(Value::Bool(true)),
            Filter::Where if matched => kept.push(item.clone()),
            Filter::Reject if !matched => kept.push(item.clone()),
            _ => {}
        }
    }
    Ok(match filter {
        Filter::Where | Filter::Reject => Value::list(kept),
        Filter::Has => Value::Bool(false),
        _ => Value::Nil,
    })
}

/// A hashable identity for `uniq` (Ruby's `eql?`).
fn uniq_key(v: &Value<'_>) -> String {
    let mut s = String::from(match v {
        Value::Int(_) => "i",
        Value::Float(_) => "f",
        Value::Str(_) | Value::String(_) => "s",
        _ => "o",
    });
    v.write_inspect_key(&mut s);
    s
}

fn uniq<'a>(input: &Value<'a>, prop: Option<&Value<'_>>, limits: &FilterLimits) -> FResult<'a> {
    let items = to_seq(input, limits)?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in items {
        let key = match prop {
            None => uniq_key(&item),
            Some(p) => match index_item(&item, p) {
                Indexed::Found(v) => uniq_key(&v),
                Indexed::NoMethod => return Ok(Value::Nil),
                Indexed::TypeError => return property_error(p),
            },
        };
        if seen.insert(key) {
            out.push(item);
        }
    }
    limits.list(out)
}

/// A total order for sorting, so a comparator can never be inconsistent.
#[derive(PartialEq, PartialOrd)]
enum SortKey {
    Num(f64),
    Str(String),
    Nil,
}

fn sort<'a>(
    input: &Value<'a>,
    prop: Option<&Value<'_>>,
    natural: bool,
    limits: &FilterLimits,
) -> FResult<'a> {
    let items = to_seq(input, limits)?;
    if items.is_empty() {
        return Ok(Value::list(Vec::new()));
    }
    let mut keyed = Vec::with_capacity(items.len());
    for item in items {
        let key_value = match prop {
            None => item.clone(),
            Some(p) => match index_item(&item, p) {
                Indexed::Found(v) => v,
                Indexed::NoMethod => return Ok(Value::Nil),
                Indexed::TypeError => return property_error(p),
            },
        };
        let key = match &key_value {
            Value::Nil => SortKey::Nil,
            v if natural => SortKey::Str(v.to_str().to_ascii_lowercase()),
            Value::Int(_) | Value::Float(_) => SortKey::Num(key_value.to_num().as_f64()),
            Value::Str(_) | Value::String(_) => SortKey::Str(key_value.to_str().into_owned()),
            _ => return fail("cannot sort values of incompatible types"),
        };
        keyed.push((key, item));
    }
    let kinds = keyed.iter().fold((false, false), |(n, s), (k, _)| match k {
        SortKey::Num(_) => (true, s),
        SortKey::Str(_) => (n, true),
        SortKey::Nil => (n, s),
    });
    if kinds.0 && kinds.1 {
        return fail("cannot sort values of incompatible types");
    }
    keyed.sort_by(|(a, _), (b, _)| match (a, b) {
        (SortKey::Num(x), SortKey::Num(y)) => x.total_cmp(y),
        (SortKey::Str(x), SortKey::Str(y)) => x.cmp(y),
        (SortKey::Nil, SortKey::Nil) => std::cmp::Ordering::Equal,
        (SortKey::Nil, _) => std::cmp::Ordering::Greater,
        (_, SortKey::Nil) => std::cmp::Ordering::Less,
        // Mixed kinds were rejected above; keep the comparator total regardless.
        (SortKey::Num(_), SortKey::Str(_)) => std::cmp::Ordering::Less,
        (SortKey::Str(_), SortKey::Num(_)) => std::cmp::Ordering::Greater,
    });
    Ok(Value::list(keyed.into_iter().map(|(_, v)| v).collect()))
}

fn sum<'a>(input: &Value<'a>, prop: Option<&Value<'_>>, limits: &FilterLimits) -> FResult<'a> {
    let items = to_seq(input, limits)?;
    let mut total = Num::Int(0);
    for item in items {
        let v = match prop {
            None => item,
            Some(p) => match index_item(&item, p) {
                Indexed::Found(v) => v,
                Indexed::NoMethod => Value::Int(0),
                Indexed::TypeError => return property_error(p),
            },
        };
        total = total.plus(v.to_num());
    }
    Ok(num_value(total))
}

impl Value<'_> {
    /// Like `inspect`, used only as a hash key.
    fn write_inspect_key(&self, out: &mut String) {
        match self {
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Float(f) => out.push_str(&f.to_bits().to_string()),
            Value::Str(_) | Value::String(_) => out.push_str(self.as_str().unwrap_or_default()),
            Value::Array(_) | Value::List(_) => {
                out.push('[');
                let len = self.seq_len().unwrap_or(0);
                for i in 0..len {
                    if let Some(v) = self.seq_get(i) {
                        out.push_str(&uniq_key(&v));
                        out.push(',');
                    }
                }
                out.push(']');
            }
            Value::Object(o) => {
                out.push('{');
                for (k, v) in o.iter() {
                    out.push_str(&format!("{k:?}:"));
                    out.push_str(&uniq_key(&Value::from_json(v)));
                    out.push(',');
                }
                out.push('}');
            }
            other => other.write_to_s(out),
        }
    }
}
