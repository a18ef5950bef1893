//! The tree-walking interpreter. It writes into one `String`, borrows every value it can from
//! the context and the template, and counts steps so a hostile template cannot run forever.

use std::borrow::Cow;
use std::rc::Rc;

use serde_json::{Map, Value as Json};

use crate::ast::*;
use crate::error::{line_col, LimitKind, RenderError};
use crate::filters::{self, to_integer, FilterError, FilterLimits};
use crate::number::{ruby_to_i, Num};
use crate::value::{liquid_eq, Forloop, Tablerowloop, Value};
use crate::{Limits, PartialLoader, Template};

/// How a block finished: normally, or interrupted by `break` / `continue` which unwind to the
/// nearest loop (through `include`, like the reference implementation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

type Name<'a> = Cow<'a, str>;

#[derive(Debug, PartialEq)]
enum CycleKey<'a> {
    Named(Option<String>),
    Unnamed(&'a str),
}

/// Variables and registers of one Liquid context. `render` gets a fresh one (isolation),
/// `include` shares its caller's.
#[derive(Default)]
struct Frame<'a> {
    /// `assign` / `capture` targets: the outermost scope.
    root: Vec<(Name<'a>, Value<'a>)>,
    /// Scopes pushed by loops and `include` arguments, innermost last.
    stack: Vec<(Name<'a>, Value<'a>)>,
    counters: Vec<(&'a str, i64)>,
    cycles: Vec<(CycleKey<'a>, usize)>,
    /// Where `offset: continue` resumes, per `forloop.name`.
    offsets: Vec<(&'a str, i64)>,
    ifchanged: Option<String>,
    for_stack: Vec<Rc<Forloop<'a>>>,
}

pub(crate) struct Renderer<'a> {
    /// The buffer being written: the caller's output, or a temporary one for `capture`.
    out: String,
    missing: Vec<String>,
    steps: u64,
    limits: Limits,
    filter_limits: FilterLimits,
    partials: Option<&'a dyn PartialLoader>,
    globals: &'a Map<String, Json>,
    frame: Frame<'a>,
    depth: usize,
    nesting: usize,
    template: &'a Template,
    partial_name: Option<Rc<str>>,
}

/// Most distinct missing paths reported; the list is for a preview, not an audit.
const MAX_MISSING: usize = 256;

/// Deepest nesting of block bodies across partials.
const MAX_NESTING: usize = 256;

impl<'a> Renderer<'a> {
    pub(crate) fn new(
        template: &'a Template,
        globals: &'a Map<String, Json>,
        partials: Option<&'a dyn PartialLoader>,
        limits: Limits,
    ) -> Self {
        Renderer {
            out: String::new(),
            missing: Vec::new(),
            steps: 0,
            filter_limits: FilterLimits {
                max_string_bytes: limits.max_output_bytes,
                max_items: limits.max_collection_len,
            },
            limits,
            partials,
            globals,
            frame: Frame::default(),
            depth: 0,
            nesting: 0,
            template,
            partial_name: None,
        }
    }

    /// Renders into `out` (which the caller cleared) and returns the missing paths.
    pub(crate) fn run(mut self, out: &mut String) -> Result<Vec<String>, RenderError> {
        std::mem::swap(&mut self.out, out);
        // `break` outside a loop stops the template, like the reference implementation.
        let result = self.render_nodes(&self.template.nodes);
        std::mem::swap(&mut self.out, out);
        result.map(|_| self.missing)
    }

    fn step(&mut self) -> Result<(), RenderError> {
        self.steps += 1;
        if self.steps > self.limits.max_steps {
            return Err(RenderError::LimitExceeded {
                kind: LimitKind::Steps,
                limit: self.limits.max_steps,
            });
        }
        Ok(())
    }

    fn check_output(&self) -> Result<(), RenderError> {
        if self.out.len() > self.limits.max_output_bytes {
            return Err(RenderError::LimitExceeded {
                kind: LimitKind::OutputSize,
                limit: self.limits.max_output_bytes as u64,
            });
        }
        Ok(())
    }

    fn position(&self, pos: Pos) -> (u32, u32) {
        line_col(&self.template.source, pos as usize)
    }

    fn type_error(&self, pos: Pos, message: impl Into<String>) -> RenderError {
        let (line, column) = self.position(pos);
        RenderError::Type {
            partial: self.partial_name.as_deref().map(str::to_string),
            line,
            column,
            message: message.into(),
        }
    }

    fn filter_error(&self, call: &FilterCall, err: FilterError) -> RenderError {
        match err {
            FilterError::Limit(kind, limit) => RenderError::LimitExceeded { kind, limit },
            FilterError::Message(message) => {
                let (line, column) = self.position(call.pos);
                RenderError::Filter {
                    partial: self.partial_name.as_deref().map(str::to_string),
                    line,
                    column,
                    filter: call.filter.name().to_string(),
                    message,
                }
            }
        }
    }

    fn render_nodes(&mut self, nodes: &'a [Node]) -> Result<Flow, RenderError> {
        // Blocks nest at most 100 deep per template, but partials stack them; bound the total
        // so recursion cannot exhaust the thread's stack.
        if self.nesting >= MAX_NESTING {
            return Err(RenderError::LimitExceeded {
                kind: LimitKind::Nesting,
                limit: MAX_NESTING as u64,
            });
        }
        self.nesting += 1;
        let flow = self.render_body(nodes);
        self.nesting -= 1;
        flow
    }

    fn render_body(&mut self, nodes: &'a [Node]) -> Result<Flow, RenderError> {
        for node in nodes {
            self.step()?;
            let flow = self.render_node(node)?;
            self.check_output()?;
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn render_node(&mut self, node: &'a Node) -> Result<Flow, RenderError> {
        match node {
            Node::Text(text) => self.out.push_str(text),
            Node::Output(expr) => self.render_output(expr)?,
            Node::Assign(assign) => {
                let value = self.eval_filtered(&assign.value)?;
                self.assign(Cow::Borrowed(&assign.name), value);
            }
            Node::Capture(capture) => {
                let saved = std::mem::take(&mut self.out);
                let flow = self.render_nodes(&capture.body);
                let captured = std::mem::replace(&mut self.out, saved);
                let flow = flow?;
                self.assign(Cow::Borrowed(&capture.name), Value::string(captured));
                return Ok(flow);
            }
            Node::If(node) => {
                for branch in &node.branches {
                    let holds = match &branch.condition {
                        None => true,
                        Some(c) => self.eval_condition(c)? != branch.negate,
                    };
                    if holds {
                        return self.render_nodes(&branch.body);
                    }
                }
            }
            Node::Case(node) => {
                let subject = self.eval(&node.subject)?;
                let mut matched = false;
                for arm in &node.arms {
                    match arm {
                        // Ruby makes one block per `when` value, so a body renders once for
                        // every value that matches.
                        CaseArm::When(values, body) => {
                            for v in values {
                                if liquid_eq(&subject, &self.eval(v)?) {
                                    matched = true;
                                    let flow = self.render_nodes(body)?;
                                    if flow != Flow::Normal {
                                        return Ok(flow);
                                    }
                                }
                            }
                        }
                        CaseArm::Else(body) if !matched => {
                            let flow = self.render_nodes(body)?;
                            if flow != Flow::Normal {
                                return Ok(flow);
                            }
                        }
                        CaseArm::Else(_) => {}
                    }
                }
            }
            Node::For(node) => return self.render_for(node),
            Node::Tablerow(node) => return self.render_tablerow(node),
            Node::Cycle(node) => self.render_cycle(node)?,
            Node::Increment(name) | Node::Decrement(name) => {
                let increment = matches!(node, Node::Increment(_));
                let slot = match self.frame.counters.iter().position(|(k, _)| *k == &**name) {
                    Some(i) => i,
                    None => {
                        self.frame.counters.push((name, 0));
                        self.frame.counters.len() - 1
                    }
                };
                let counter = &mut self.frame.counters[slot].1;
                let shown = if increment {
                    let v = *counter;
                    *counter = v.saturating_add(1);
                    v
                } else {
                    *counter = counter.saturating_sub(1);
                    *counter
                };
                Value::Int(shown).write_output(&mut self.out);
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
            Node::Include(partial) => return self.render_include(partial),
            Node::Render(partial) => return self.render_render(partial),
            Node::IfChanged(body) => {
                let saved = std::mem::take(&mut self.out);
                let flow = self.render_nodes(body);
                let captured = std::mem::replace(&mut self.out, saved);
                let flow = flow?;
                if self.frame.ifchanged.as_deref() != Some(captured.as_str()) {
                    self.out.push_str(&captured);
                    self.frame.ifchanged = Some(captured);
                }
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn assign(&mut self, name: Name<'a>, value: Value<'a>) {
        match self.frame.root.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.frame.root.push((name, value)),
        }
    }

    fn lookup_var(&self, name: &str) -> Option<Value<'a>> {
        if let Some((_, v)) = self.frame.stack.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        if let Some((_, v)) = self.frame.root.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        if let Some((_, n)) = self.frame.counters.iter().find(|(k, _)| *k == name) {
            return Some(Value::Int(*n));
        }
        self.globals.get(name).map(Value::from_json)
    }

    fn note_missing(&mut self, path: &Path) {
        if self.missing.len() >= MAX_MISSING {
            return;
        }
        let shown = path.display();
        if !self.missing.contains(&shown) {
            self.missing.push(shown);
        }
    }

    fn lookup_path(&mut self, path: &'a Path) -> Result<Value<'a>, RenderError> {
        let mut segments = path.segments.iter();
        let mut current = match segments.next() {
            Some(Segment::Key(name)) => self.lookup_var(name),
            Some(Segment::Dynamic(expr)) => {
                let key = self.eval(expr)?;
                key.as_str().and_then(|k| self.lookup_var(k))
            }
            _ => None,
        };
        for segment in segments {
            let Some(value) = current else { break };
            current = match segment {
                Segment::Key(k) => value.get_key(k),
                Segment::Index(i) => value.get_index(*i),
                Segment::Dynamic(expr) => {
                    let key = self.eval(expr)?;
                    value.get_dynamic(&key)
                }
            };
        }
        match current {
            Some(v) => Ok(v),
            None => {
                self.note_missing(path);
                Ok(Value::Nil)
            }
        }
    }

    fn eval(&mut self, expr: &'a Expr) -> Result<Value<'a>, RenderError> {
        Ok(match expr {
            Expr::Nil => Value::Nil,
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Int(i) => Value::Int(*i),
            Expr::Float(f) => Value::Float(*f),
            Expr::Str(s) => Value::Str(s),
            Expr::Empty => Value::Empty,
            Expr::Blank => Value::Blank,
            Expr::Range(bounds) => {
                let start = range_bound(&self.eval(&bounds.0)?);
                let end = range_bound(&self.eval(&bounds.1)?);
                Value::Range(start, end)
            }
            Expr::Path(path) => return self.lookup_path(path),
        })
    }

    fn render_output(&mut self, expr: &'a FilteredExpr) -> Result<(), RenderError> {
        let Some((last, init)) = expr.filters.split_last() else {
            let value = self.eval(&expr.base)?;
            value.write_output(&mut self.out);
            return Ok(());
        };
        let mut value = self.eval(&expr.base)?;
        for call in init {
            value = self.apply_filter(call, value)?;
        }
        // The last filter of an output writes straight into the output when it can.
        self.step()?;
        let mut args = [Value::Nil, Value::Nil];
        let n = self.eval_args(last, &mut args)?;
        let written = filters::write_last(
            last.filter,
            &value,
            &args[..n],
            &mut self.out,
            &self.filter_limits,
        )
        .map_err(|e| self.filter_error(last, e))?;
        if !written {
            let allow_false = self.allow_false(last)?;
            let value = filters::apply(
                last.filter,
                value,
                &args[..n],
                allow_false,
                &self.filter_limits,
            )
            .map_err(|e| self.filter_error(last, e))?;
            value.write_output(&mut self.out);
        }
        Ok(())
    }

    fn eval_args(
        &mut self,
        call: &'a FilterCall,
        args: &mut [Value<'a>; 2],
    ) -> Result<usize, RenderError> {
        for (slot, arg) in args.iter_mut().zip(&call.args) {
            *slot = self.eval(arg)?;
        }
        Ok(call.args.len().min(args.len()))
    }

    fn allow_false(&mut self, call: &'a FilterCall) -> Result<bool, RenderError> {
        Ok(match &call.allow_false {
            Some(e) => self.eval(e)?.is_truthy(),
            None => false,
        })
    }

    fn apply_filter(
        &mut self,
        call: &'a FilterCall,
        value: Value<'a>,
    ) -> Result<Value<'a>, RenderError> {
        self.step()?;
        let mut args = [Value::Nil, Value::Nil];
        let n = self.eval_args(call, &mut args)?;
        let allow_false = self.allow_false(call)?;
        filters::apply(
            call.filter,
            value,
            &args[..n],
            allow_false,
            &self.filter_limits,
        )
        .map_err(|e| self.filter_error(call, e))
    }

    fn eval_filtered(&mut self, expr: &'a FilteredExpr) -> Result<Value<'a>, RenderError> {
        let mut value = self.eval(&expr.base)?;
        for call in &expr.filters {
            value = self.apply_filter(call, value)?;
        }
        Ok(value)
    }

    fn eval_condition(&mut self, condition: &'a Condition) -> Result<bool, RenderError> {
        for (i, term) in condition.terms.iter().enumerate() {
            let holds = self.eval_comparison(term)?;
            match condition.ops.get(i) {
                None => return Ok(holds),
                Some(Logic::And) if !holds => return Ok(false),
                Some(Logic::Or) if holds => return Ok(true),
                Some(_) => {}
            }
        }
        Ok(false)
    }

    fn eval_comparison(&mut self, cmp: &'a Comparison) -> Result<bool, RenderError> {
        let left = self.eval(&cmp.left)?;
        let Some((op, right)) = &cmp.op else {
            return Ok(left.is_truthy());
        };
        let right = self.eval(right)?;
        Ok(match op {
            CmpOp::Eq => liquid_eq(&left, &right),
            CmpOp::Ne => !liquid_eq(&left, &right),
            CmpOp::Contains => contains(&left, &right),
            CmpOp::Lt | CmpOp::Gt | CmpOp::Le | CmpOp::Ge => {
                let ord = match (&left, &right) {
                    (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                        left.to_num().cmp_num(&right.to_num())
                    }
                    (Value::Str(_) | Value::String(_), Value::Str(_) | Value::String(_)) => {
                        Some(left.as_str().cmp(&right.as_str()))
                    }
                    (Value::Str(_) | Value::String(_), Value::Int(_) | Value::Float(_))
                    | (Value::Int(_) | Value::Float(_), Value::Str(_) | Value::String(_)) => {
                        return Err(self.type_error(
                            cmp.pos,
                            format!(
                                "comparison of {} with {} failed",
                                left.type_name(),
                                right.type_name()
                            ),
                        ));
                    }
                    // Values without an ordering (nil, booleans, arrays, blank) compare false.
                    _ => None,
                };
                match ord {
                    None => false,
                    Some(o) => match op {
                        CmpOp::Lt => o.is_lt(),
                        CmpOp::Gt => o.is_gt(),
                        CmpOp::Le => o.is_le(),
                        _ => o.is_ge(),
                    },
                }
            }
        })
    }

    fn integer_arg(&self, value: &Value<'_>, pos: Pos, what: &str) -> Result<i64, RenderError> {
        to_integer(value).map_err(|_| {
            self.type_error(
                pos,
                format!("`{what}` expects an integer, got {}", value.type_name()),
            )
        })
    }

    fn render_for(&mut self, node: &'a For) -> Result<Flow, RenderError> {
        let from = match &node.offset {
            Offset::None => 0,
            Offset::Continue => self
                .frame
                .offsets
                .iter()
                .find(|(k, _)| *k == &*node.name)
                .map_or(0, |(_, v)| *v),
            Offset::Expr(e) => {
                let v = self.eval(e)?;
                if v.is_nil() {
                    0
                } else {
                    self.integer_arg(&v, node.pos, "offset")?
                }
            }
        };
        let collection = self.eval(&node.iterable)?;
        let limit = match &node.limit {
            None => None,
            Some(e) => {
                let v = self.eval(e)?;
                if v.is_nil() {
                    None
                } else {
                    Some(self.integer_arg(&v, node.pos, "limit")?)
                }
            }
        };
        let seq = LoopSlice::new(collection, from, limit.map(|l| from.saturating_add(l)));
        let stop = from.saturating_add(i64::try_from(seq.len()).unwrap_or(i64::MAX));
        match self
            .frame
            .offsets
            .iter_mut()
            .find(|(k, _)| *k == &*node.name)
        {
            Some(slot) => slot.1 = stop,
            None => self.frame.offsets.push((&node.name, stop)),
        }
        if seq.len() == 0 {
            return match &node.else_body {
                Some(body) => self.render_nodes(body),
                None => Ok(Flow::Normal),
            };
        }
        let forloop = Rc::new(Forloop {
            name: Cow::Borrowed(&node.name),
            length: seq.len(),
            index0: std::cell::Cell::new(0),
            parent: self.frame.for_stack.last().cloned(),
        });
        self.frame.for_stack.push(Rc::clone(&forloop));
        let scope = self.frame.stack.len();
        self.frame.stack.push((
            Cow::Borrowed("forloop"),
            Value::Forloop(Rc::clone(&forloop)),
        ));
        self.frame
            .stack
            .push((Cow::Borrowed(&node.var), Value::Nil));
        let slot = scope + 1;
        for k in 0..seq.len() {
            self.step()?;
            let idx = if node.reversed { seq.len() - 1 - k } else { k };
            self.frame.stack[slot].1 = seq.get(idx);
            let flow = self.render_nodes(&node.body)?;
            forloop.index0.set(k + 1);
            if flow == Flow::Break {
                break;
            }
        }
        self.frame.stack.truncate(scope);
        self.frame.for_stack.pop();
        Ok(Flow::Normal)
    }

    /// Ruby's `to_i` used by `tablerow` attributes.
    fn to_i(&self, value: &Value<'_>, pos: Pos) -> Result<i64, RenderError> {
        Ok(match value {
            Value::Nil => 0,
            Value::Int(i) => *i,
            Value::Float(f) => crate::number::float_to_i64(*f),
            Value::Str(_) | Value::String(_) => match ruby_to_i(value.as_str().unwrap_or_default())
            {
                Num::Int(i) => i,
                Num::Float(f) => crate::number::float_to_i64(f),
            },
            other => {
                return Err(self.type_error(pos, format!("invalid integer: {}", other.type_name())))
            }
        })
    }

    fn render_tablerow(&mut self, node: &'a Tablerow) -> Result<Flow, RenderError> {
        let collection = self.eval(&node.iterable)?;
        if !collection.is_truthy() {
            return Ok(Flow::Normal);
        }
        let from = match &node.offset {
            Some(e) => {
                let v = self.eval(e)?;
                self.to_i(&v, node.pos)?
            }
            None => 0,
        };
        let to = match &node.limit {
            Some(e) => {
                let v = self.eval(e)?;
                Some(from.saturating_add(self.to_i(&v, node.pos)?))
            }
            None => None,
        };
        let seq = LoopSlice::new(collection, from, to);
        let length = seq.len();
        let cols = match &node.cols {
            Some(e) => {
                let v = self.eval(e)?;
                self.to_i(&v, node.pos)?
            }
            None => i64::try_from(length).unwrap_or(i64::MAX),
        };
        self.out.push_str("<tr class=\"row1\">\n");
        let state = Rc::new(Tablerowloop {
            length,
            cols,
            index0: std::cell::Cell::new(0),
            col: std::cell::Cell::new(1),
            row: std::cell::Cell::new(1),
        });
        let scope = self.frame.stack.len();
        self.frame.stack.push((
            Cow::Borrowed("tablerowloop"),
            Value::Tablerowloop(Rc::clone(&state)),
        ));
        self.frame
            .stack
            .push((Cow::Borrowed(&node.var), Value::Nil));
        for k in 0..length {
            self.step()?;
            self.frame.stack[scope + 1].1 = seq.get(k);
            self.out.push_str("<td class=\"col");
            self.out.push_str(&state.col.get().to_string());
            self.out.push_str("\">");
            let flow = self.render_nodes(&node.body)?;
            self.out.push_str("</td>");
            if flow == Flow::Break {
                break;
            }
            let col = state.col.get();
            if col == cols && k + 1 != length {
                self.out.push_str("</tr>\n<tr class=\"row");
                self.out.push_str(&(state.row.get() + 1).to_string());
                self.out.push_str("\">");
            }
            state.index0.set(k + 1);
            if col == cols {
                state.col.set(1);
                state.row.set(state.row.get() + 1);
            } else {
                state.col.set(col + 1);
            }
        }
        self.frame.stack.truncate(scope);
        self.out.push_str("</tr>\n");
        Ok(Flow::Normal)
    }

    fn render_cycle(&mut self, node: &'a Cycle) -> Result<(), RenderError> {
        let key = match &node.group {
            Some(e) => {
                let v = self.eval(e)?;
                CycleKey::Named((!v.is_nil()).then(|| v.to_str().into_owned()))
            }
            None => CycleKey::Unnamed(&node.key),
        };
        let slot = match self.frame.cycles.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.frame.cycles.push((key, 0));
                self.frame.cycles.len() - 1
            }
        };
        let iteration = self.frame.cycles[slot].1;
        if let Some(expr) = node.values.get(iteration) {
            let v = self.eval(expr)?;
            v.write_output(&mut self.out);
        }
        let next = iteration + 1;
        self.frame.cycles[slot].1 = if next >= node.values.len() { 0 } else { next };
        Ok(())
    }

    fn load_partial(&self, name: &str, pos: Pos) -> Result<&'a Template, RenderError> {
        if self.depth >= self.limits.max_partial_depth {
            return Err(RenderError::LimitExceeded {
                kind: LimitKind::PartialDepth,
                limit: self.limits.max_partial_depth as u64,
            });
        }
        match self.partials.and_then(|p| p.load(name)) {
            Some(t) => Ok(t),
            None => {
                let (line, column) = self.position(pos);
                Err(RenderError::PartialNotFound {
                    partial: self.partial_name.as_deref().map(str::to_string),
                    line,
                    column,
                    name: name.to_string(),
                })
            }
        }
    }

    /// Renders `nodes` of `template` as the current template (for error positions).
    fn with_template(
        &mut self,
        template: &'a Template,
        name: &str,
        nodes: &'a [Node],
    ) -> Result<Flow, RenderError> {
        let saved_template = std::mem::replace(&mut self.template, template);
        let saved_name = self.partial_name.replace(Rc::from(name));
        self.depth += 1;
        let result = self.render_nodes(nodes);
        self.depth -= 1;
        self.template = saved_template;
        self.partial_name = saved_name;
        result
    }

    fn render_include(&mut self, node: &'a Partial) -> Result<Flow, RenderError> {
        let name_value = self.eval(&node.name)?;
        let name: Name<'a> = match name_value {
            Value::Str(s) => Cow::Borrowed(s),
            Value::String(s) => Cow::Owned(s.to_string()),
            other => {
                return Err(self.type_error(
                    node.pos,
                    format!(
                        "`include` expects a template name string, got {}",
                        other.type_name()
                    ),
                ))
            }
        };
        let template = self.load_partial(&name, node.pos)?;
        let variable = match &node.bound {
            Some(e) => self.eval(e)?,
            None => self.lookup_var(&name).unwrap_or(Value::Nil),
        };
        let var_name: Name<'a> = match (&node.alias, &name) {
            (Some(alias), _) => Cow::Borrowed(alias),
            (None, Cow::Borrowed(n)) => Cow::Borrowed(n.rsplit('/').next().unwrap_or(n)),
            (None, Cow::Owned(n)) => Cow::Owned(n.rsplit('/').next().unwrap_or(n).to_string()),
        };
        let scope = self.frame.stack.len();
        for (key, expr) in &node.args {
            let v = self.eval(expr)?;
            self.frame.stack.push((Cow::Borrowed(key), v));
        }
        let slot = self.frame.stack.len();
        self.frame.stack.push((var_name, Value::Nil));
        let mut flow = Flow::Normal;
        if matches!(variable, Value::Array(_) | Value::List(_)) {
            let n = variable.seq_len().unwrap_or(0);
            for i in 0..n {
                self.frame.stack[slot].1 = variable.seq_get(i).unwrap_or(Value::Nil);
                flow = self.with_template(template, &name, &template.nodes)?;
                if flow != Flow::Normal {
                    break;
                }
            }
        } else {
            self.frame.stack[slot].1 = variable;
            flow = self.with_template(template, &name, &template.nodes)?;
        }
        self.frame.stack.truncate(scope);
        Ok(flow)
    }

    fn render_render(&mut self, node: &'a Partial) -> Result<Flow, RenderError> {
        let Expr::Str(name) = &node.name else {
            return Err(self.type_error(node.pos, "`render` expects a quoted template name"));
        };
        let name: &'a str = name;
        let template = self.load_partial(name, node.pos)?;
        let mut args = Vec::with_capacity(node.args.len());
        for (key, expr) in &node.args {
            args.push((Cow::Borrowed(&**key), self.eval(expr)?));
        }
        let variable = match &node.bound {
            Some(e) => Some(self.eval(e)?),
            None => None,
        };
        let var_name: &'a str = match &node.alias {
            Some(alias) => alias,
            None => name.rsplit('/').next().unwrap_or(name),
        };
        let seq = match &variable {
            Some(v)
                if node.bound_is_for && (v.is_array_like() || matches!(v, Value::Object(_))) =>
            {
                Some(LoopSlice::new(v.clone(), 0, None))
            }
            _ => None,
        };
        let outer = std::mem::take(&mut self.frame);
        let result = match seq {
            Some(seq) => {
                let forloop = Rc::new(Forloop {
                    name: Cow::Borrowed(name),
                    length: seq.len(),
                    index0: std::cell::Cell::new(0),
                    parent: None,
                });
                let mut result = Ok(Flow::Normal);
                for i in 0..seq.len() {
                    if let Err(e) = self.step() {
                        result = Err(e);
                        break;
                    }
                    let item = seq.get(i);
                    let mut frame = Frame::default();
                    frame.root.push((
                        Cow::Borrowed("forloop"),
                        Value::Forloop(Rc::clone(&forloop)),
                    ));
                    frame.root.extend(args.iter().cloned());
                    if !item.is_nil() {
                        frame.root.push((Cow::Borrowed(var_name), item));
                    }
                    self.frame = frame;
                    result = self.with_template(template, name, &template.nodes);
                    forloop.index0.set(i + 1);
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
            None => {
                let mut frame = Frame::default();
                frame.root.extend(args);
                if let Some(v) = variable.filter(|v| !v.is_nil()) {
                    frame.root.push((Cow::Borrowed(var_name), v));
                }
                self.frame = frame;
                self.with_template(template, name, &template.nodes)
            }
        };
        self.frame = outer;
        // `break` inside a rendered partial stops only that partial.
        result.map(|_| Flow::Normal)
    }
}

/// The slice of a collection a loop iterates (Ruby's `slice_collection`).
struct LoopSlice<'a> {
    source: Source<'a>,
    start: usize,
    len: usize,
}

enum Source<'a> {
    Seq(Value<'a>),
    Pairs(Vec<(&'a String, &'a Json)>),
    Single(Value<'a>),
    Nothing,
}

impl<'a> LoopSlice<'a> {
    fn new(collection: Value<'a>, from: i64, to: Option<i64>) -> Self {
        let (source, total) = match collection {
            Value::Array(_) | Value::List(_) | Value::Range(..) => {
                let n = collection.seq_len().unwrap_or(0);
                (Source::Seq(collection), n)
            }
            Value::Object(o) => (Source::Pairs(o.iter().collect()), o.len()),
            // Strings iterate as one item, whatever the offset and limit.
            Value::Str(_) | Value::String(_) => {
                let empty = collection.as_str().is_none_or(str::is_empty);
                return LoopSlice {
                    source: if empty {
                        Source::Nothing
                    } else {
                        Source::Single(collection)
                    },
                    start: 0,
                    len: usize::from(!empty),
                };
            }
            _ => (Source::Nothing, 0),
        };
        let total_i = i64::try_from(total).unwrap_or(i64::MAX);
        let start = from.clamp(0, total_i);
        let end = to.map_or(total_i, |t| t.min(total_i)).max(start);
        LoopSlice {
            source,
            start: usize::try_from(start).unwrap_or(0),
            len: usize::try_from(end - start).unwrap_or(0),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> Value<'a> {
        let idx = self.start + i;
        match &self.source {
            Source::Seq(v) => v.seq_get(idx).unwrap_or(Value::Nil),
            Source::Pairs(pairs) => match pairs.get(idx) {
                Some((k, v)) => Value::list(vec![Value::Str(k), Value::from_json(v)]),
                None => Value::Nil,
            },
            Source::Single(v) => v.clone(),
            Source::Nothing => Value::Nil,
        }
    }
}

/// A range bound: numbers truncate, numeric strings parse, anything else is 0.
fn range_bound(v: &Value<'_>) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) => crate::number::float_to_i64(*f),
        Value::Str(_) | Value::String(_) => match Num::parse_ruby(v.as_str().unwrap_or_default()) {
            Num::Int(i) => i,
            Num::Float(f) => crate::number::float_to_i64(f),
        },
        _ => 0,
    }
}

/// Liquid's `contains`: substring for strings, membership for arrays, key for objects.
fn contains(left: &Value<'_>, right: &Value<'_>) -> bool {
    if !left.is_truthy() || !right.is_truthy() {
        return false;
    }
    match left {
        Value::Str(_) | Value::String(_) => {
            left.as_str().unwrap_or_default().contains(&*right.to_str())
        }
        // Ranges answer arithmetically: iterating a huge range would bypass the step limit.
        Value::Range(a, b) => match right {
            Value::Int(i) => a <= i && i <= b,
            Value::Float(f) => f.fract() == 0.0 && (*a as f64) <= *f && *f <= (*b as f64),
            _ => false,
        },
        Value::Array(_) | Value::List(_) => {
            let n = left.seq_len().unwrap_or(0);
            (0..n).any(|i| left.seq_get(i).is_some_and(|v| liquid_eq(&v, right)))
        }
        Value::Object(o) => right.as_str().is_some_and(|k| o.contains_key(k)),
        _ => false,
    }
}
