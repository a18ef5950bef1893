//! Tokenizers: the template level (text, `{{ }}`, `{% %}`) and the expression level (inside
//! the delimiters).
//!
//! A tag or output ends at the first `%}` / `}}`, like the reference implementation. `raw`,
//! `comment` and `doc` bodies are consumed here since they are not tokenized as Liquid.
//! Whitespace control (`{%-`, `-%}`, `{{-`, `-}}`) is applied to the neighbouring text here
//! so the parser only sees final text.

use crate::ast::CmpOp;
use crate::error::{line_col, ParseError};

#[derive(Debug, Clone)]
pub(crate) enum Token<'s> {
    Text(&'s str),
    /// Verbatim text from `raw`; never whitespace-stripped.
    Raw(&'s str),
    Output {
        expr: &'s str,
        offset: usize,
    },
    Tag {
        name: &'s str,
        markup: &'s str,
        /// Offset of the tag name (error position for the tag itself).
        pos: usize,
        /// Offset of `markup` in the source.
        offset: usize,
    },
    /// A comment or doc: renders nothing, but `blank` decides whitespace suppression.
    Nothing {
        blank: bool,
    },
}

pub(crate) fn syntax_error(source: &str, offset: usize, message: impl Into<String>) -> ParseError {
    let (line, column) = line_col(source, offset);
    ParseError::Syntax {
        line,
        column,
        message: message.into(),
    }
}

/// Ruby's `lstrip` / `rstrip` whitespace.
pub(crate) fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

pub(crate) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Finds the next `{{` or `{%` at or after `from`.
fn next_open(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < bytes.len() {
        if bytes[i] == b'{' && (bytes[i + 1] == b'{' || bytes[i + 1] == b'%') {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn find_from(source: &str, from: usize, needle: &str) -> Option<usize> {
    source.get(from..)?.find(needle).map(|i| i + from)
}

/// A `{% ... %}` split into its parts.
struct TagParts<'s> {
    name: &'s str,
    name_pos: usize,
    markup: &'s str,
    markup_offset: usize,
    trim_right: bool,
    /// Offset just past `%}`.
    end: usize,
}

/// Parses the tag starting at `start` (which holds `{%`). `None` when there is no `%}`.
fn split_tag(source: &str, start: usize) -> Option<TagParts<'_>> {
    let close = find_from(source, start + 2, "%}")?;
    let mut inner_start = start + 2;
    let mut inner_end = close;
    let trim_left = source.as_bytes().get(inner_start) == Some(&b'-');
    if trim_left {
        inner_start += 1;
    }
    let trim_right = inner_end > inner_start && source.as_bytes()[inner_end - 1] == b'-';
    if trim_right {
        inner_end -= 1;
    }
    let inner = &source[inner_start..inner_end];
    let lead = inner.len() - inner.trim_start_matches(is_ws).len();
    let name_pos = inner_start + lead;
    let after_ws = &inner[lead..];
    let name_len = if after_ws.starts_with('#') {
        1
    } else {
        after_ws
            .char_indices()
            .find(|&(_, c)| !is_word_char(c))
            .map_or(after_ws.len(), |(i, _)| i)
    };
    let name = &after_ws[..name_len];
    let rest = &after_ws[name_len..];
    let rest_lead = rest.len() - rest.trim_start_matches(is_ws).len();
    let markup = rest[rest_lead..].trim_end_matches(is_ws);
    Some(TagParts {
        name,
        name_pos,
        markup,
        markup_offset: name_pos + name_len + rest_lead,
        trim_right,
        end: close + 2,
    })
}

/// Finds the closing `{% endNAME %}` of a `raw` or `doc` body starting at `from`.
fn find_end_tag<'s>(source: &'s str, from: usize, end_name: &str) -> Option<(usize, TagParts<'s>)> {
    let bytes = source.as_bytes();
    let mut i = from;
    while let Some(open) = next_open(bytes, i) {
        if bytes[open + 1] == b'%' {
            // No `%}` after this point means no end tag either (and stops a quadratic scan).
            let parts = split_tag(source, open)?;
            if parts.name == end_name && parts.markup.is_empty() {
                return Some((open, parts));
            }
        }
        i = open + 1;
    }
    None
}

/// Splits a template into tokens.
pub(crate) fn tokenize(source: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    let mut lstrip_next = false;
    loop {
        let open = next_open(bytes, pos);
        let text_end = open.unwrap_or(source.len());
        let rstrip = open.is_some_and(|o| bytes.get(o + 2) == Some(&b'-'));
        let mut text = &source[pos..text_end];
        if lstrip_next {
            text = text.trim_start_matches(is_ws);
        }
        if rstrip {
            text = text.trim_end_matches(is_ws);
        }
        if !text.is_empty() {
            tokens.push(Token::Text(text));
        }
        let Some(open) = open else { break };

        if bytes[open + 1] == b'{' {
            let Some(close) = find_from(source, open + 2, "}}") else {
                return Err(syntax_error(
                    source,
                    open,
                    "output not closed: expected `}}`",
                ));
            };
            let mut start = open + 2;
            let mut end = close;
            if bytes.get(start) == Some(&b'-') {
                start += 1;
            }
            lstrip_next = end > start && bytes[end - 1] == b'-';
            if lstrip_next {
                end -= 1;
            }
            tokens.push(Token::Output {
                expr: &source[start..end],
                offset: start,
            });
            pos = close + 2;
            continue;
        }

        let Some(tag) = split_tag(source, open) else {
            return Err(syntax_error(source, open, "tag not closed: expected `%}`"));
        };
        match tag.name {
            "raw" => {
                if !tag.markup.is_empty() {
                    return Err(syntax_error(
                        source,
                        tag.markup_offset,
                        "`raw` takes no arguments",
                    ));
                }
                let Some((body_end, close)) = find_end_tag(source, tag.end, "endraw") else {
                    return Err(syntax_error(
                        source,
                        tag.name_pos,
                        "`raw` is never closed: expected `endraw`",
                    ));
                };
                tokens.push(Token::Raw(&source[tag.end..body_end]));
                lstrip_next = close.trim_right;
                pos = close.end;
            }
            "doc" => {
                if !tag.markup.is_empty() {
                    return Err(syntax_error(
                        source,
                        tag.markup_offset,
                        "`doc` takes no arguments",
                    ));
                }
                let Some((body_end, close)) = find_end_tag(source, tag.end, "enddoc") else {
                    return Err(syntax_error(
                        source,
                        tag.name_pos,
                        "`doc` is never closed: expected `enddoc`",
                    ));
                };
                tokens.push(Token::Nothing {
                    blank: body_end == tag.end,
                });
                lstrip_next = close.trim_right;
                pos = close.end;
            }
            "comment" => {
                let (end, trim_right) = skip_comment(source, tag.end).ok_or_else(|| {
                    syntax_error(
                        source,
                        tag.name_pos,
                        "`comment` is never closed: expected `endcomment`",
                    )
                })?;
                tokens.push(Token::Nothing { blank: true });
                lstrip_next = trim_right;
                pos = end;
            }
            _ => {
                tokens.push(Token::Tag {
                    name: tag.name,
                    markup: tag.markup,
                    pos: tag.name_pos,
                    offset: tag.markup_offset,
                });
                lstrip_next = tag.trim_right;
                pos = tag.end;
            }
        }
    }
    Ok(tokens)
}

/// Skips a (possibly nested) comment body. Returns the offset after the closing
/// `endcomment` and whether it trims the following whitespace.
fn skip_comment(source: &str, from: usize) -> Option<(usize, bool)> {
    let bytes = source.as_bytes();
    let mut depth = 1usize;
    let mut i = from;
    while let Some(open) = next_open(bytes, i) {
        if bytes[open + 1] == b'{' {
            // A complete output is skipped whole, like the reference lexer.
            i = find_from(source, open + 2, "}}").map_or(open + 1, |c| c + 2);
            continue;
        }
        let tag = split_tag(source, open)?;
        match tag.name {
            "raw" => {
                // A raw block inside a comment hides its contents, even `endcomment`.
                i = match find_end_tag(source, tag.end, "endraw") {
                    Some((_, close)) => close.end,
                    None => tag.end,
                };
            }
            "comment" => {
                depth += 1;
                i = tag.end;
            }
            "endcomment" => {
                depth -= 1;
                if depth == 0 {
                    return Some((tag.end, tag.trim_right));
                }
                i = tag.end;
            }
            _ => i = tag.end,
        }
    }
    None
}

/// Splits the markup of a `liquid` tag into one tag token per line. Comment blocks are
/// dropped here, as they are not tokenized as Liquid.
pub(crate) fn tokenize_liquid_tag<'s>(
    source: &'s str,
    markup: &'s str,
    offset: usize,
    tokens: &mut Vec<Token<'s>>,
) -> Result<(), ParseError> {
    let mut comment_depth = 0usize;
    let mut line_start = 0usize;
    for line in markup.split('\n') {
        let this_start = line_start;
        line_start += line.len() + 1;
        let lead = line.len() - line.trim_start_matches(is_ws).len();
        let trimmed = line[lead..].trim_end_matches(is_ws);
        if trimmed.is_empty() {
            continue;
        }
        let name_pos = offset + this_start + lead;
        if trimmed.starts_with('#') {
            continue;
        }
        let name_len = trimmed
            .char_indices()
            .find(|&(_, c)| !is_word_char(c))
            .map_or(trimmed.len(), |(i, _)| i);
        let name = &trimmed[..name_len];
        let rest = &trimmed[name_len..];
        let rest_lead = rest.len() - rest.trim_start_matches(is_ws).len();
        let rest_markup = &rest[rest_lead..];
        let rest_offset = name_pos + name_len + rest_lead;
        if comment_depth > 0 {
            match name {
                "comment" => comment_depth += 1,
                "endcomment" => comment_depth -= 1,
                _ => {}
            }
            continue;
        }
        if name.is_empty() {
            return Err(syntax_error(
                source,
                name_pos,
                format!("expected a tag name in `liquid`, found `{trimmed}`"),
            ));
        }
        match name {
            "comment" => comment_depth = 1,
            "liquid" => tokenize_liquid_tag(source, rest_markup, rest_offset, tokens)?,
            "raw" | "doc" => {
                return Err(syntax_error(
                    source,
                    name_pos,
                    format!("`{name}` is not allowed inside `liquid`"),
                ));
            }
            _ => tokens.push(Token::Tag {
                name,
                markup: rest_markup,
                pos: name_pos,
                offset: rest_offset,
            }),
        }
    }
    if comment_depth > 0 {
        return Err(syntax_error(
            source,
            offset,
            "`comment` is never closed: expected `endcomment`",
        ));
    }
    Ok(())
}

/// Expression tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Tk<'s> {
    Word(&'s str),
    Str(&'s str),
    Int(i64),
    Float(f64),
    Dot,
    DotDot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Colon,
    Comma,
    Pipe,
    Op(CmpOp),
    Assign,
    Eof,
}

impl Tk<'_> {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tk::Word(w) => format!("`{w}`"),
            Tk::Str(s) => format!("string '{s}'"),
            Tk::Int(n) => format!("number {n}"),
            Tk::Float(f) => format!("number {f}"),
            Tk::Dot => "`.`".into(),
            Tk::DotDot => "`..`".into(),
            Tk::LParen => "`(`".into(),
            Tk::RParen => "`)`".into(),
            Tk::LBracket => "`[`".into(),
            Tk::RBracket => "`]`".into(),
            Tk::Colon => "`:`".into(),
            Tk::Comma => "`,`".into(),
            Tk::Pipe => "`|`".into(),
            Tk::Op(op) => format!("`{}`", op_str(*op)),
            Tk::Assign => "`=`".into(),
            Tk::Eof => "end of expression".into(),
        }
    }
}

fn op_str(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "==",
        CmpOp::Ne => "!=",
        CmpOp::Lt => "<",
        CmpOp::Gt => ">",
        CmpOp::Le => "<=",
        CmpOp::Ge => ">=",
        CmpOp::Contains => "contains",
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ExprToken<'s> {
    pub tk: Tk<'s>,
    /// Byte offsets in the template source.
    pub start: usize,
    pub end: usize,
}

/// Tokenizes an expression found at byte `offset` of `source`.
pub(crate) fn tokenize_expr<'s>(
    source: &'s str,
    expr: &'s str,
    offset: usize,
) -> Result<Vec<ExprToken<'s>>, ParseError> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let tk = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'\'' | b'"' => {
                let Some(close) = expr[i + 1..].find(c as char) else {
                    return Err(syntax_error(
                        source,
                        offset + i,
                        "string literal not closed",
                    ));
                };
                let s = &expr[i + 1..i + 1 + close];
                i += close + 2;
                Tk::Str(s)
            }
            b'.' => {
                if bytes.get(i + 1) == Some(&b'.') {
                    i += 2;
                    Tk::DotDot
                } else {
                    i += 1;
                    Tk::Dot
                }
            }
            b'(' => {
                i += 1;
                Tk::LParen
            }
            b')' => {
                i += 1;
                Tk::RParen
            }
            b'[' => {
                i += 1;
                Tk::LBracket
            }
            b']' => {
                i += 1;
                Tk::RBracket
            }
            b':' => {
                i += 1;
                Tk::Colon
            }
            b',' => {
                i += 1;
                Tk::Comma
            }
            b'|' => {
                if bytes.get(i + 1) == Some(&b'|') {
                    return Err(syntax_error(source, offset + i, "unexpected `||`"));
                }
                i += 1;
                Tk::Pipe
            }
            b'=' | b'!' | b'<' | b'>' => {
                let two = bytes
                    .get(i + 1)
                    .filter(|b| matches!(b, b'=' | b'!' | b'<' | b'>'));
                let (tk, len) = match (c, two) {
                    (b'=', Some(b'=')) => (Some(Tk::Op(CmpOp::Eq)), 2),
                    (b'!', Some(b'=')) => (Some(Tk::Op(CmpOp::Ne)), 2),
                    (b'<', Some(b'>')) => (Some(Tk::Op(CmpOp::Ne)), 2),
                    (b'<', Some(b'=')) => (Some(Tk::Op(CmpOp::Le)), 2),
                    (b'>', Some(b'=')) => (Some(Tk::Op(CmpOp::Ge)), 2),
                    (_, Some(_)) => (None, 2),
                    (b'=', None) => (Some(Tk::Assign), 1),
                    (b'<', None) => (Some(Tk::Op(CmpOp::Lt)), 1),
                    (b'>', None) => (Some(Tk::Op(CmpOp::Gt)), 1),
                    _ => (None, 1),
                };
                let Some(tk) = tk else {
                    return Err(syntax_error(
                        source,
                        offset + i,
                        format!("unknown operator `{}`", &expr[i..i + len]),
                    ));
                };
                i += len;
                tk
            }
            b'-' | b'0'..=b'9' => {
                let digits_start = if c == b'-' { i + 1 } else { i };
                let mut j = digits_start;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                if j == digits_start {
                    return Err(syntax_error(source, offset + i, "unexpected `-`"));
                }
                let next = expr[j..].chars().next();
                if next.is_some_and(is_word_char) {
                    if c == b'-' {
                        return Err(syntax_error(
                            source,
                            offset + i,
                            "identifiers cannot start with `-`",
                        ));
                    }
                    // `123abc` is an identifier, like the reference implementation.
                    i = scan_word(expr, i);
                    Tk::Word(&expr[start..i])
                } else if next == Some('.') && bytes.get(j + 1) != Some(&b'.') {
                    let mut k = j + 1;
                    while k < bytes.len() && bytes[k].is_ascii_digit() {
                        k += 1;
                    }
                    i = k;
                    let text = &expr[start..k];
                    let text = text.strip_suffix('.').unwrap_or(text);
                    Tk::Float(text.parse::<f64>().unwrap_or(0.0))
                } else {
                    i = j;
                    let text = &expr[start..j];
                    match text.parse::<i64>() {
                        Ok(n) => Tk::Int(n),
                        Err(_) => Tk::Float(text.parse::<f64>().unwrap_or(0.0)),
                    }
                }
            }
            _ => {
                let ch = expr[i..].chars().next().unwrap_or('\0');
                if is_word_char(ch) {
                    i = scan_word(expr, i);
                    Tk::Word(&expr[start..i])
                } else {
                    return Err(syntax_error(
                        source,
                        offset + i,
                        format!("unexpected character `{ch}`"),
                    ));
                }
            }
        };
        out.push(ExprToken {
            tk,
            start: offset + start,
            end: offset + i,
        });
    }
    out.push(ExprToken {
        tk: Tk::Eof,
        start: offset + expr.len(),
        end: offset + expr.len(),
    });
    Ok(out)
}

/// Scans `\w[\w-]*\??` from `i`; returns the end offset.
fn scan_word(expr: &str, i: usize) -> usize {
    let mut end = i;
    for (k, c) in expr[i..].char_indices() {
        if is_word_char(c) || (k > 0 && c == '-') {
            end = i + k + c.len_utf8();
        } else {
            break;
        }
    }
    if expr[end..].starts_with('?') {
        end += 1;
    }
    end
}
