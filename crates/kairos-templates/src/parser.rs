//! Builds the AST from tokens.
//!
//! Tags are parsed by hand-written recursive descent; blocks nest at most [`MAX_DEPTH`] deep so
//! hostile input cannot overflow the stack.

use crate::ast::*;
use crate::error::{line_col, ParseError};
use crate::filters::Filter;
use crate::lexer::{is_ws, syntax_error, tokenize_expr, tokenize_liquid_tag, ExprToken, Tk, Token};

/// Maximum nesting of blocks (and of brackets / ranges inside one expression).
pub(crate) const MAX_DEPTH: usize = 100;

/// Tags that can close or continue a block; meeting one out of place is an "unexpected" tag
/// rather than an "unknown" one.
const DELIMITERS: &[&str] = &[
    "else",
    "elsif",
    "when",
    "endif",
    "endunless",
    "endcase",
    "endfor",
    "endtablerow",
    "endcapture",
    "endifchanged",
    "endcomment",
    "endraw",
    "enddoc",
];

pub(crate) struct Parser<'s> {
    source: &'s str,
    depth: usize,
}

/// Where a body stopped.
enum Stop<'s> {
    Eof,
    Tag {
        name: &'s str,
        markup: &'s str,
        pos: usize,
        offset: usize,
    },
}

struct Body<'s> {
    nodes: Vec<Node>,
    blank: bool,
    stop: Stop<'s>,
}

pub(crate) fn parse_template(source: &str) -> Result<Vec<Node>, ParseError> {
    let tokens = crate::lexer::tokenize(source)?;
    let mut parser = Parser { source, depth: 0 };
    let mut cursor = 0;
    let body = parser.parse_body(&tokens, &mut cursor, &[], None)?;
    Ok(body.nodes)
}

fn is_blank_text(text: &str) -> bool {
    text.chars().all(is_ws)
}

/// Ruby drops the whitespace-only text of `if`/`unless`/`case`/`for` blocks whose every branch
/// is blank (only whitespace, assignments and comments), so layout-only blocks render nothing.
fn strip_blank_text(nodes: &mut Vec<Node>) {
    nodes.retain(|n| !matches!(n, Node::Text(_)));
}

impl<'s> Parser<'s> {
    fn err(&self, offset: usize, message: impl Into<String>) -> ParseError {
        syntax_error(self.source, offset, message)
    }

    fn unknown_tag(&self, pos: usize, tag: &str, message: String) -> ParseError {
        let (line, column) = line_col(self.source, pos);
        ParseError::UnknownTag {
            line,
            column,
            tag: tag.to_string(),
            message,
        }
    }

    /// Parses nodes until one of `stop_at` (returned) or the end of the tokens. `closing`
    /// names the tag that would close the enclosing block, for error messages.
    fn parse_body(
        &mut self,
        tokens: &[Token<'s>],
        cursor: &mut usize,
        stop_at: &[&str],
        closing: Option<&str>,
    ) -> Result<Body<'s>, ParseError> {
        let mut nodes = Vec::new();
        let mut blank = true;
        while let Some(token) = tokens.get(*cursor) {
            *cursor += 1;
            match *token {
                Token::Text(text) => {
                    blank &= is_blank_text(text);
                    nodes.push(Node::Text(text.into()));
                }
                Token::Raw(text) => {
                    blank &= text.is_empty();
                    if !text.is_empty() {
                        nodes.push(Node::Text(text.into()));
                    }
                }
                Token::Nothing { blank: b } => blank &= b,
                Token::Output { expr, offset } => {
                    blank = false;
                    let value = self.parse_output_expr(expr, offset)?;
                    nodes.push(Node::Output(Box::new(value)));
                }
                Token::Tag {
                    name,
                    markup,
                    pos,
                    offset,
                } => {
                    if stop_at.contains(&name) {
                        return Ok(Body {
                            nodes,
                            blank,
                            stop: Stop::Tag {
                                name,
                                markup,
                                pos,
                                offset,
                            },
                        });
                    }
                    let tag_blank = self.parse_tag(
                        tokens, cursor, name, markup, pos, offset, closing, &mut nodes,
                    )?;
                    blank &= tag_blank;
                }
            }
        }
        Ok(Body {
            nodes,
            blank,
            stop: Stop::Eof,
        })
    }

    /// Parses one tag (and, for blocks, its bodies) into `nodes`. Returns whether it is blank.
    #[allow(clippy::too_many_arguments)]
    fn parse_tag(
        &mut self,
        tokens: &[Token<'s>],
        cursor: &mut usize,
        name: &'s str,
        markup: &'s str,
        pos: usize,
        offset: usize,
        closing: Option<&str>,
        nodes: &mut Vec<Node>,
    ) -> Result<bool, ParseError> {
        match name {
            "#" => {
                self.check_inline_comment(markup, offset)?;
                Ok(true)
            }
            "assign" => {
                nodes.push(self.parse_assign(markup, offset)?);
                Ok(true)
            }
            "echo" => {
                let value = if markup.is_empty() {
                    FilteredExpr {
                        base: Expr::Nil,
                        filters: Vec::new(),
                    }
                } else {
                    self.parse_output_expr(markup, offset)?
                };
                nodes.push(Node::Output(Box::new(value)));
                Ok(false)
            }
            "increment" | "decrement" => {
                let mut p = self.expr_parser(markup, offset)?;
                let var = p.identifier(true)?;
                p.expect_eof()?;
                nodes.push(if name == "increment" {
                    Node::Increment(var)
                } else {
                    Node::Decrement(var)
                });
                Ok(false)
            }
            "break" => {
                nodes.push(Node::Break);
                Ok(false)
            }
            "continue" => {
                nodes.push(Node::Continue);
                Ok(false)
            }
            "cycle" => {
                nodes.push(self.parse_cycle(markup, offset)?);
                Ok(false)
            }
            "include" | "render" => {
                let partial = self.parse_partial(name, markup, offset, pos)?;
                nodes.push(if name == "include" {
                    Node::Include(Box::new(partial))
                } else {
                    Node::Render(Box::new(partial))
                });
                Ok(false)
            }
            "liquid" => {
                let mut line_tokens = Vec::new();
                tokenize_liquid_tag(self.source, markup, offset, &mut line_tokens)?;
                let mut inner = 0;
                let body = self.parse_body(&line_tokens, &mut inner, &[], None)?;
                nodes.extend(body.nodes);
                Ok(body.blank)
            }
            "if" | "unless" => self.enter(pos, |p| {
                p.parse_if(tokens, cursor, name, markup, pos, offset, nodes)
            }),
            "case" => self.enter(pos, |p| {
                p.parse_case(tokens, cursor, markup, pos, offset, nodes)
            }),
            "for" => self.enter(pos, |p| {
                p.parse_for(tokens, cursor, markup, pos, offset, nodes)
            }),
            "tablerow" => self.enter(pos, |p| {
                p.parse_tablerow(tokens, cursor, markup, pos, offset, nodes)
            }),
            "capture" => self.enter(pos, |p| {
                let mut ep = p.expr_parser(markup, offset)?;
                let var = match ep.peek() {
                    Tk::Str(s) => {
                        ep.advance();
                        s.into()
                    }
                    _ => ep.identifier(false)?,
                };
                ep.expect_eof()?;
                let body = p.block_body(tokens, cursor, &["endcapture"], "capture", pos)?;
                nodes.push(Node::Capture(Box::new(Capture {
                    name: var,
                    body: body.nodes,
                })));
                Ok(true)
            }),
            "ifchanged" => self.enter(pos, |p| {
                let body = p.block_body(tokens, cursor, &["endifchanged"], "ifchanged", pos)?;
                nodes.push(Node::IfChanged(body.nodes));
                Ok(body.blank)
            }),
            _ => {
                let message = if DELIMITERS.contains(&name) || name.starts_with("end") {
                    match closing {
                        Some(close) if !DELIMITERS.contains(&name) => {
                            format!("unknown tag `{name}`, expected `{close}`")
                        }
                        Some(close) => format!("unexpected tag `{name}`, expected `{close}`"),
                        None => format!("unexpected tag `{name}`"),
                    }
                } else if name.is_empty() {
                    "missing tag name".to_string()
                } else {
                    format!("unknown tag `{name}`")
                };
                Err(self.unknown_tag(pos, name, message))
            }
        }
    }

    fn enter<T>(
        &mut self,
        pos: usize,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if self.depth >= MAX_DEPTH {
            let (line, column) = line_col(self.source, pos);
            return Err(ParseError::TooDeep {
                line,
                column,
                limit: MAX_DEPTH,
            });
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// A body that must end with one of `stop_at`; the end of input means the block was never
    /// closed.
    fn block_body(
        &mut self,
        tokens: &[Token<'s>],
        cursor: &mut usize,
        stop_at: &[&str],
        block: &str,
        pos: usize,
    ) -> Result<Body<'s>, ParseError> {
        let closing = stop_at.last().copied().unwrap_or_default();
        let body = self.parse_body(tokens, cursor, stop_at, Some(closing))?;
        if let Stop::Eof = body.stop {
            return Err(self.err(
                pos,
                format!("`{block}` is never closed: expected `{closing}`"),
            ));
        }
        Ok(body)
    }

    #[allow(clippy::too_many_arguments)]
    fn parse_if(
        &mut self,
        tokens: &[Token<'s>],
        cursor: &mut usize,
        tag: &str,
        markup: &'s str,
        pos: usize,
        offset: usize,
        nodes: &mut Vec<Node>,
    ) -> Result<bool, ParseError> {
        let end = if tag == "if" { "endif" } else { "endunless" };
        let stops = ["elsif", "else", end];
        let mut branches = Vec::new();
        let mut condition = Some(self.parse_condition(markup, offset)?);
        let mut negate = tag == "unless";
        let mut blank = true;
        loop {
            let body = self.block_body(tokens, cursor, &stops, tag, pos)?;
            blank &= body.blank;
            branches.push(Branch {
                condition: condition.take(),
                negate,
                body: body.nodes,
            });
            negate = false;
            match body.stop {
                Stop::Tag {
                    name: "elsif",
                    markup,
                    offset,
                    ..
                } => {
                    condition = Some(self.parse_condition(markup, offset)?);
                }
                // `else` ignores any markup, like the reference implementation.
                Stop::Tag { name: "else", .. } => condition = None,
                _ => break,
            }
        }
        if blank {
            for b in &mut branches {
                strip_blank_text(&mut b.body);
            }
        }
        nodes.push(Node::If(Box::new(If { branches })));
        Ok(blank)
    }

    fn parse_case(
        &mut self,
        tokens: &[Token<'s>],
        cursor: &mut usize,
        markup: &'s str,
        pos: usize,
        offset: usize,
        nodes: &mut Vec<Node>,
    ) -> Result<bool, ParseError> {
        let mut p = self.expr_parser(markup, offset)?;
        let subject = p.primitive()?;
        p.expect_eof()?;
        let stops = ["when", "else", "endcase"];
        // Anything before the first `when` is parsed (so it must be valid) and dropped.
        let mut body = self.block_body(tokens, cursor, &stops, "case", pos)?;
        let mut blank = body.blank;
        let mut arms = Vec::new();
        loop {
            let arm_kind = match body.stop {
                Stop::Tag {
                    name: "when",
                    markup,
                    offset,
                    pos,
                } => {
                    if markup.is_empty() {
                        return Err(self.err(pos, "`when` expects a value"));
                    }
                    let mut p = self.expr_parser(markup, offset)?;
                    let mut values = vec![p.primitive()?];
                    loop {
                        match p.peek() {
                            Tk::Comma => p.advance(),
                            Tk::Word("or") => p.advance(),
                            Tk::Eof => break,
                            other => return Err(p.unexpected(other)),
                        }
                        values.push(p.primitive()?);
                    }
                    Some(values)
                }
                Stop::Tag { name: "else", .. } => None,
                _ => break,
            };
            body = self.block_body(tokens, cursor, &stops, "case", pos)?;
            blank &= body.blank;
            arms.push(match arm_kind {
                Some(values) => CaseArm::When(values, body.nodes),
                None => CaseArm::Else(body.nodes),
            });
            body.nodes = Vec::new();
        }
        if blank {
            for arm in &mut arms {
                match arm {
                    CaseArm::When(_, b) | CaseArm::Else(b) => strip_blank_text(b),
                }
            }
        }
        nodes.push(Node::Case(Box::new(Case { subject, arms })));
        Ok(blank)
    }

    fn parse_for(
        &mut self,
        tokens: &[Token<'s>],
        cursor: &mut usize,
        markup: &'s str,
        pos: usize,
        offset: usize,
        nodes: &mut Vec<Node>,
    ) -> Result<bool, ParseError> {
        let head = self.parse_loop_head(markup, offset, false)?;
        let body = self.block_body(tokens, cursor, &["else", "endfor"], "for", pos)?;
        let mut blank = body.blank;
        let mut for_body = body.nodes;
        let mut else_body = None;
        if let Stop::Tag { name: "else", .. } = body.stop {
            let body = self.block_body(tokens, cursor, &["endfor"], "for", pos)?;
            blank &= body.blank;
            else_body = Some(body.nodes);
        }
        if blank {
            strip_blank_text(&mut for_body);
            if let Some(b) = else_body.as_mut() {
                strip_blank_text(b);
            }
        }
        nodes.push(Node::For(Box::new(For {
            name: format!("{}-{}", head.var, head.iterable_src).into(),
            var: head.var,
            iterable: head.iterable,
            limit: head.limit,
            offset: head.offset,
            reversed: head.reversed,
            body: for_body,
            else_body,
            pos: pos_u32(pos),
        })));
        Ok(blank)
    }

    fn parse_tablerow(
        &mut self,
        tokens: &[Token<'s>],
        cursor: &mut usize,
        markup: &'s str,
        pos: usize,
        offset: usize,
        nodes: &mut Vec<Node>,
    ) -> Result<bool, ParseError> {
        let head = self.parse_loop_head(markup, offset, true)?;
        let body = self.block_body(tokens, cursor, &["endtablerow"], "tablerow", pos)?;
        let offset = match head.offset {
            Offset::Expr(e) => Some(e),
            Offset::None => None,
            Offset::Continue => {
                return Err(self.err(offset, "`tablerow` does not support `offset: continue`"))
            }
        };
        nodes.push(Node::Tablerow(Box::new(Tablerow {
            var: head.var,
            iterable: head.iterable,
            limit: head.limit,
            offset,
            cols: head.cols,
            body: body.nodes,
            pos: pos_u32(pos),
        })));
        Ok(body.blank)
    }

    fn parse_loop_head(
        &self,
        markup: &'s str,
        offset: usize,
        tablerow: bool,
    ) -> Result<LoopHead, ParseError> {
        let mut p = self.expr_parser(markup, offset)?;
        let var = p.identifier(true)?;
        if p.peek() != Tk::Word("in") {
            return Err(p.expected("`in`"));
        }
        p.advance();
        let start = p.current_start();
        let iterable = p.primitive()?;
        let iterable_src = self
            .source
            .get(start..p.previous_end())
            .unwrap_or_default()
            .to_string();
        let mut head = LoopHead {
            var,
            iterable,
            iterable_src,
            limit: None,
            offset: Offset::None,
            reversed: false,
            cols: None,
        };
        loop {
            match p.peek() {
                Tk::Eof => break,
                Tk::Comma => p.advance(),
                Tk::Word("reversed") => {
                    p.advance();
                    head.reversed = true;
                }
                Tk::Word(attr @ ("limit" | "offset" | "cols")) if attr != "cols" || tablerow => {
                    p.advance();
                    p.expect(Tk::Colon)?;
                    match attr {
                        "limit" => head.limit = Some(p.primitive()?),
                        "cols" => head.cols = Some(p.primitive()?),
                        _ => {
                            if p.peek() == Tk::Word("continue") {
                                p.advance();
                                head.offset = Offset::Continue;
                            } else {
                                head.offset = Offset::Expr(p.primitive()?);
                            }
                        }
                    }
                }
                other => return Err(p.unexpected(other)),
            }
        }
        Ok(head)
    }

    fn parse_cycle(&self, markup: &'s str, offset: usize) -> Result<Node, ParseError> {
        let mut p = self.expr_parser(markup, offset)?;
        let first = p.primitive()?;
        let (group, mut values, key_start) = if p.peek() == Tk::Colon {
            p.advance();
            let start = p.current_start();
            (Some(first), vec![p.primitive()?], start)
        } else {
            (None, vec![first], offset)
        };
        while p.peek() == Tk::Comma {
            p.advance();
            values.push(p.primitive()?);
        }
        p.expect_eof()?;
        let key = self
            .source
            .get(key_start..offset + markup.len())
            .unwrap_or_default();
        Ok(Node::Cycle(Box::new(Cycle {
            group,
            key: key.into(),
            values,
        })))
    }

    fn parse_partial(
        &self,
        tag: &str,
        markup: &'s str,
        offset: usize,
        pos: usize,
    ) -> Result<Partial, ParseError> {
        let mut p = self.expr_parser(markup, offset)?;
        let name = match p.peek() {
            Tk::Str(s) => {
                p.advance();
                Expr::Str(s.into())
            }
            _ if tag == "render" => return Err(p.expected("a quoted template name")),
            _ => p.primitive()?,
        };
        let mut partial = Partial {
            name,
            bound: None,
            bound_is_for: false,
            alias: None,
            args: Vec::new(),
            pos: pos_u32(pos),
        };
        if let Tk::Word(kw @ ("with" | "for")) = p.peek() {
            if p.peek_at(1) != Tk::Colon {
                p.advance();
                partial.bound_is_for = kw == "for";
                partial.bound = Some(p.primitive()?);
                if p.peek() == Tk::Word("as") && p.peek_at(1) != Tk::Colon {
                    p.advance();
                    partial.alias = Some(p.identifier(true)?);
                }
            }
        }
        loop {
            match p.peek() {
                Tk::Eof => break,
                Tk::Comma => p.advance(),
                Tk::Word(key) if p.peek_at(1) == Tk::Colon => {
                    p.advance();
                    p.advance();
                    partial.args.push((key.into(), p.primitive()?));
                }
                other => return Err(p.unexpected(other)),
            }
        }
        Ok(partial)
    }

    fn parse_assign(&self, markup: &'s str, offset: usize) -> Result<Node, ParseError> {
        let mut p = self.expr_parser(markup, offset)?;
        let name = p.identifier(false)?;
        p.expect(Tk::Assign)?;
        let value = p.filtered()?;
        Ok(Node::Assign(Box::new(Assign { name, value })))
    }

    fn check_inline_comment(&self, markup: &str, offset: usize) -> Result<(), ParseError> {
        let mut line_offset = 0;
        for (i, line) in markup.split('\n').enumerate() {
            let trimmed = line.trim_start_matches(is_ws);
            if i > 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
                let at = offset + line_offset + (line.len() - trimmed.len());
                return Err(self.err(at, "every line of an inline comment must start with `#`"));
            }
            line_offset += line.len() + 1;
        }
        Ok(())
    }

    fn parse_output_expr(&self, expr: &'s str, offset: usize) -> Result<FilteredExpr, ParseError> {
        let mut p = self.expr_parser(expr, offset)?;
        if p.peek() == Tk::Eof {
            return Ok(FilteredExpr {
                base: Expr::Nil,
                filters: Vec::new(),
            });
        }
        p.filtered()
    }

    fn parse_condition(&self, markup: &'s str, offset: usize) -> Result<Condition, ParseError> {
        let mut p = self.expr_parser(markup, offset)?;
        if p.peek() == Tk::Eof {
            return Err(p.expected("a condition"));
        }
        let mut terms = vec![p.comparison()?];
        let mut ops = Vec::new();
        loop {
            match p.peek() {
                Tk::Word("and") => ops.push(Logic::And),
                Tk::Word("or") => ops.push(Logic::Or),
                Tk::Eof => break,
                other => return Err(p.unexpected(other)),
            }
            p.advance();
            terms.push(p.comparison()?);
        }
        Ok(Condition { terms, ops })
    }

    fn expr_parser(&self, expr: &'s str, offset: usize) -> Result<ExprParser<'s>, ParseError> {
        Ok(ExprParser {
            source: self.source,
            tokens: tokenize_expr(self.source, expr, offset)?,
            i: 0,
            depth: 0,
        })
    }
}

struct LoopHead {
    var: Box<str>,
    iterable: Expr,
    iterable_src: String,
    limit: Option<Expr>,
    offset: Offset,
    reversed: bool,
    cols: Option<Expr>,
}

fn pos_u32(pos: usize) -> Pos {
    u32::try_from(pos).unwrap_or(u32::MAX)
}

/// Parser over the tokens of one expression.
struct ExprParser<'s> {
    source: &'s str,
    tokens: Vec<ExprToken<'s>>,
    i: usize,
    depth: usize,
}

const KEYWORD_LITERALS: &[&str] = &["true", "false", "nil", "null", "empty", "blank"];

impl<'s> ExprParser<'s> {
    fn peek(&self) -> Tk<'s> {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> Tk<'s> {
        self.tokens.get(self.i + n).map_or(Tk::Eof, |t| t.tk)
    }

    fn current_start(&self) -> usize {
        self.tokens
            .get(self.i)
            .map_or(self.source.len(), |t| t.start)
    }

    fn previous_end(&self) -> usize {
        self.i
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map_or(self.current_start(), |t| t.end)
    }

    fn advance(&mut self) {
        if self.i + 1 < self.tokens.len() {
            self.i += 1;
        }
    }

    fn err(&self, message: impl Into<String>) -> ParseError {
        syntax_error(self.source, self.current_start(), message)
    }

    fn unexpected(&self, tk: Tk<'_>) -> ParseError {
        self.err(format!("unexpected {}", tk.describe()))
    }

    fn expected(&self, what: &str) -> ParseError {
        self.err(format!("expected {what}, found {}", self.peek().describe()))
    }

    fn expect(&mut self, tk: Tk<'_>) -> Result<(), ParseError> {
        if self.peek() == tk {
            self.advance();
            Ok(())
        } else {
            Err(self.expected(&tk.describe()))
        }
    }

    fn expect_eof(&self) -> Result<(), ParseError> {
        match self.peek() {
            Tk::Eof => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// A variable name: `\w[\w-]*` (plus a trailing `?` where allowed) or digits.
    fn identifier(&mut self, allow_question: bool) -> Result<Box<str>, ParseError> {
        let token = self.tokens.get(self.i).copied();
        match token.map(|t| t.tk) {
            Some(Tk::Word(w)) if allow_question || !w.ends_with('?') => {
                self.advance();
                Ok(w.into())
            }
            Some(Tk::Int(n)) if n >= 0 => {
                self.advance();
                Ok(n.to_string().into())
            }
            _ => Err(self.expected("a variable name")),
        }
    }

    /// `value | filter: arg, key: arg | ...`
    fn filtered(&mut self) -> Result<FilteredExpr, ParseError> {
        let base = self.primitive()?;
        let mut filters = Vec::new();
        while self.peek() == Tk::Pipe {
            self.advance();
            filters.push(self.filter_call()?);
        }
        self.expect_eof()?;
        Ok(FilteredExpr { base, filters })
    }

    fn filter_call(&mut self) -> Result<FilterCall, ParseError> {
        let pos = self.current_start();
        let Tk::Word(name) = self.peek() else {
            return Err(self.expected("a filter name"));
        };
        let Some(filter) = Filter::from_name(name) else {
            let (line, column) = line_col(self.source, pos);
            return Err(ParseError::UnknownFilter {
                line,
                column,
                filter: name.to_string(),
            });
        };
        self.advance();
        let mut args = Vec::new();
        let mut allow_false = None;
        if self.peek() == Tk::Colon {
            self.advance();
            loop {
                if let (Tk::Word(key), Tk::Colon) = (self.peek(), self.peek_at(1)) {
                    let key_pos = self.current_start();
                    self.advance();
                    self.advance();
                    let value = self.primitive()?;
                    if filter == Filter::Default && key == "allow_false" {
                        allow_false = Some(value);
                    } else {
                        return Err(filter_args_error(
                            self.source,
                            key_pos,
                            name,
                            format!("unexpected keyword argument `{key}`"),
                        ));
                    }
                } else {
                    args.push(self.primitive()?);
                }
                if self.peek() == Tk::Comma {
                    self.advance();
                } else {
                    break;
                }
            }
        }
        let (min, max) = filter.arity();
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(filter_args_error(
                self.source,
                pos,
                name,
                format!("expected {expected} argument(s), got {}", args.len()),
            ));
        }
        Ok(FilterCall {
            filter,
            args,
            allow_false,
            pos: pos_u32(pos),
        })
    }

    /// `left` or `left op right`.
    fn comparison(&mut self) -> Result<Comparison, ParseError> {
        let pos = pos_u32(self.current_start());
        let left = self.primitive()?;
        let op = match self.peek() {
            Tk::Op(op) => Some(op),
            Tk::Word("contains") => Some(CmpOp::Contains),
            _ => None,
        };
        let op = match op {
            Some(op) => {
                self.advance();
                Some((op, self.primitive()?))
            }
            None => None,
        };
        Ok(Comparison { left, op, pos })
    }

    /// A literal, a range or a variable path.
    fn primitive(&mut self) -> Result<Expr, ParseError> {
        if self.depth >= 32 {
            let (line, column) = line_col(self.source, self.current_start());
            return Err(ParseError::TooDeep {
                line,
                column,
                limit: 32,
            });
        }
        self.depth += 1;
        let result = self.primitive_inner();
        self.depth -= 1;
        result
    }

    fn primitive_inner(&mut self) -> Result<Expr, ParseError> {
        let expr = match self.peek() {
            Tk::Str(s) => Expr::Str(s.into()),
            Tk::Int(n) => Expr::Int(n),
            Tk::Float(f) => Expr::Float(f),
            Tk::Word(w)
                if KEYWORD_LITERALS.contains(&w)
                    && !matches!(self.peek_at(1), Tk::Dot | Tk::LBracket) =>
            {
                match w {
                    "true" => Expr::Bool(true),
                    "false" => Expr::Bool(false),
                    "empty" => Expr::Empty,
                    "blank" => Expr::Blank,
                    _ => Expr::Nil,
                }
            }
            Tk::Word(_) | Tk::LBracket => return self.path(),
            Tk::LParen => {
                self.advance();
                let start = self.primitive()?;
                self.expect(Tk::DotDot)?;
                let end = self.primitive()?;
                self.expect(Tk::RParen)?;
                return Ok(Expr::Range(Box::new((start, end))));
            }
            _ => return Err(self.expected("a value")),
        };
        self.advance();
        Ok(expr)
    }

    fn path(&mut self) -> Result<Expr, ParseError> {
        let mut segments = Vec::new();
        match self.peek() {
            Tk::Word(w) => {
                self.advance();
                segments.push(Segment::Key(w.into()));
            }
            _ => segments.push(self.bracket()?),
        }
        loop {
            match self.peek() {
                Tk::Dot => {
                    self.advance();
                    match self.peek() {
                        Tk::Word(w) => {
                            self.advance();
                            segments.push(Segment::Key(w.into()));
                        }
                        _ => return Err(self.expected("a property name after `.`")),
                    }
                }
                Tk::LBracket => segments.push(self.bracket()?),
                _ => break,
            }
        }
        Ok(Expr::Path(Box::new(Path { segments })))
    }

    /// `[ 'key' ]`, `[ 0 ]` or `[ path ]`.
    fn bracket(&mut self) -> Result<Segment, ParseError> {
        self.expect(Tk::LBracket)?;
        let seg = match self.primitive()? {
            Expr::Str(s) => Segment::Key(s),
            Expr::Int(n) => Segment::Index(n),
            other => Segment::Dynamic(other),
        };
        self.expect(Tk::RBracket)?;
        Ok(seg)
    }
}

fn filter_args_error(source: &str, pos: usize, filter: &str, message: String) -> ParseError {
    let (line, column) = line_col(source, pos);
    ParseError::FilterArguments {
        line,
        column,
        filter: filter.to_string(),
        message,
    }
}
