//! Errors with a line and column, so an API client can point at the mistake.

use std::fmt;

/// 1-based line and column (in characters) of a byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub fn of(src: &str, at: usize) -> Self {
        let at = at.min(src.len());
        let before = src.get(..at).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before
            .get(line_start..)
            .map_or(1, |s| s.chars().count() + 1);
        Self { line, column }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The text is not a well-formed expression.
    #[error("{pos}: {message}")]
    Syntax { pos: Pos, message: String },
    /// Well-formed, but meaningless: unknown name, wrong types, wrong arguments.
    #[error("{pos}: {message}")]
    Type { pos: Pos, message: String },
}

impl RuleError {
    pub fn pos(&self) -> Pos {
        match self {
            RuleError::Syntax { pos, .. } | RuleError::Type { pos, .. } => *pos,
        }
    }
}

/// Something accepted but probably wrong, e.g. an event name never seen.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}
