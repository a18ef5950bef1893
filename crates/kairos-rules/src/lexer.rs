//! Tokens with their byte offsets, for error messages that point at the source.

use crate::error::{Pos, RuleError};

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Num(f64),
    /// Milliseconds.
    Dur(i64),
    Str(String),
    Ident(String),
    And,
    Or,
    Not,
    In,
    Where,
    True,
    False,
    Null,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Colon,
    Dot,
    End,
}

impl Tok {
    /// How the token is named in "expected X, found Y".
    pub fn describe(&self) -> String {
        match self {
            Tok::Num(n) => format!("number {n}"),
            Tok::Dur(_) => "a duration".into(),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::End => "end of input".into(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::And => "and",
            Tok::Or => "or",
            Tok::Not => "not",
            Tok::In => "in",
            Tok::Where => "where",
            Tok::True => "true",
            Tok::False => "false",
            Tok::Null => "null",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Dot => ".",
            _ => "?",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub at: usize,
}

/// Milliseconds per duration unit.
pub fn unit_millis(unit: &str) -> Option<i64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    })
}

pub fn tokenize(src: &str) -> Result<Vec<Token>, RuleError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, msg: String| RuleError::Syntax {
        pos: Pos::of(src, at),
        message: msg,
    };
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            // Comment to the end of the line.
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let two = |a: u8, b: u8| c == a && bytes.get(i + 1) == Some(&b);
        let (tok, len) = if two(b'=', b'=') {
            (Tok::Eq, 2)
        } else if two(b'!', b'=') {
            (Tok::Ne, 2)
        } else if two(b'<', b'=') {
            (Tok::Le, 2)
        } else if two(b'>', b'=') {
            (Tok::Ge, 2)
        } else {
            match c {
                b'<' => (Tok::Lt, 1),
                b'>' => (Tok::Gt, 1),
                b'+' => (Tok::Plus, 1),
                b'-' => (Tok::Minus, 1),
                b'*' => (Tok::Star, 1),
                b'/' => (Tok::Slash, 1),
                b'(' => (Tok::LParen, 1),
                b')' => (Tok::RParen, 1),
                b'[' => (Tok::LBracket, 1),
                b']' => (Tok::RBracket, 1),
                b',' => (Tok::Comma, 1),
                b':' => (Tok::Colon, 1),
                b'.' if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => (Tok::Dot, 1),
                b'=' => return Err(err(i, "expected `==`, found `=`".into())),
                b'!' => return Err(err(i, "expected `!=` or `not`, found `!`".into())),
                b'"' | b'\'' => {
                    let (s, len) = string(src, i).map_err(|(at, m)| err(at, m))?;
                    out.push(Token {
                        tok: Tok::Str(s),
                        at: start,
                    });
                    i += len;
                    continue;
                }
                b'0'..=b'9' | b'.' => {
                    let (tok, len) = number(src, i).map_err(|(at, m)| err(at, m))?;
                    out.push(Token { tok, at: start });
                    i += len;
                    continue;
                }
                c if c == b'_' || c.is_ascii_alphabetic() => {
                    let mut j = i;
                    while j < bytes.len() && (bytes[j] == b'_' || bytes[j].is_ascii_alphanumeric())
                    {
                        j += 1;
                    }
                    let word = &src[i..j];
                    let tok = match word {
                        "and" => Tok::And,
                        "or" => Tok::Or,
                        "not" => Tok::Not,
                        "in" => Tok::In,
                        "where" => Tok::Where,
                        "true" => Tok::True,
                        "false" => Tok::False,
                        "null" => Tok::Null,
                        _ => Tok::Ident(word.to_string()),
                    };
                    (tok, j - i)
                }
                _ => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(err(i, format!("unexpected character {ch:?}")));
                }
            }
        };
        out.push(Token { tok, at: start });
        i += len;
    }
    out.push(Token {
        tok: Tok::End,
        at: src.len(),
    });
    Ok(out)
}

/// A quoted string with `\"`, `\\`, `\n`, `\t` escapes; returns (value, bytes consumed).
fn string(src: &str, start: usize) -> Result<(String, usize), (usize, String)> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, ch)) = chars.next() {
        match ch {
            c if c == quote => return Ok((out, off + 2)),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, 'b')) => out.push('\u{8}'),
                Some((_, 'f')) => out.push('\u{c}'),
                Some((at, 'u')) => {
                    // JSON-style \uXXXX, with surrogate pairs.
                    let hex = |chars: &mut std::str::CharIndices| -> Option<u32> {
                        let digits: String =
                            (0..4).filter_map(|_| chars.next().map(|c| c.1)).collect();
                        u32::from_str_radix(&digits, 16)
                            .ok()
                            .filter(|_| digits.len() == 4)
                    };
                    let bad = || {
                        (
                            start + 1 + at,
                            "invalid \\u escape (expected 4 hex digits)".to_string(),
                        )
                    };
                    let hi = hex(&mut chars).ok_or_else(bad)?;
                    let code = if (0xD800..0xDC00).contains(&hi) {
                        let rest = chars.as_str();
                        if !rest.starts_with("\\u") {
                            return Err(bad());
                        }
                        chars.next();
                        chars.next();
                        let lo = hex(&mut chars).ok_or_else(bad)?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return Err(bad());
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        hi
                    };
                    out.push(char::from_u32(code).ok_or_else(bad)?);
                }
                Some((_, c)) => out.push(c),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err((start, "unterminated string".into()))
}

/// A number, or a duration when a unit follows directly (`15m`, `1.5h`).
fn number(src: &str, start: usize) -> Result<(Tok, usize), (usize, String)> {
    let bytes = src.as_bytes();
    let mut j = start;
    while j < bytes.len() && (bytes[j].is_ascii_digit() || bytes[j] == b'_') {
        j += 1;
    }
    if j < bytes.len() && bytes[j] == b'.' && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
    }
    if j < bytes.len() && (bytes[j] == b'e' || bytes[j] == b'E') {
        let mut k = j + 1;
        if k < bytes.len() && (bytes[k] == b'+' || bytes[k] == b'-') {
            k += 1;
        }
        if k < bytes.len() && bytes[k].is_ascii_digit() {
            while k < bytes.len() && bytes[k].is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    let text: String = src[start..j].chars().filter(|c| *c != '_').collect();
    let value: f64 = text
        .parse()
        .map_err(|_| (start, format!("invalid number {:?}", &src[start..j])))?;
    if !value.is_finite() {
        return Err((start, "number out of range".into()));
    }
    let mut u = j;
    while u < bytes.len() && bytes[u].is_ascii_alphabetic() {
        u += 1;
    }
    if u == j {
        if u < bytes.len() && (bytes[u] == b'_' || bytes[u].is_ascii_digit()) {
            return Err((start, format!("invalid number {:?}", &src[start..=u])));
        }
        return Ok((Tok::Num(value), j - start));
    }
    let unit = &src[j..u];
    let ms = unit_millis(unit).ok_or_else(|| {
        (
            j,
            format!("unknown duration unit {unit:?} (expected ms, s, m, h, d or w)"),
        )
    })?;
    let total = value * ms as f64;
    if !total.is_finite() || total.abs() > 1e15 {
        return Err((start, "duration out of range".into()));
    }
    Ok((Tok::Dur(total.round() as i64), u - start))
}
