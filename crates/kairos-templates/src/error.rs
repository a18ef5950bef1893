//! Parse and render errors.
//!
//! Every error that points into a template carries a 1-based line and column (columns count
//! characters, not bytes) so an editor or preview API can highlight the offending spot.

use thiserror::Error;

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Malformed markup: a bad expression, a missing `}}`, an unclosed block, ...
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: u32,
        column: u32,
        message: String,
    },
    /// A tag name that is not part of Liquid, or a block delimiter in the wrong place.
    #[error("line {line}, column {column}: {message}")]
    UnknownTag {
        line: u32,
        column: u32,
        tag: String,
        message: String,
    },
    /// A filter name that is not one of the standard filters.
    #[error("line {line}, column {column}: unknown filter `{filter}`")]
    UnknownFilter {
        line: u32,
        column: u32,
        filter: String,
    },
    /// A known filter called with the wrong number or kind of arguments.
    #[error("line {line}, column {column}: filter `{filter}`: {message}")]
    FilterArguments {
        line: u32,
        column: u32,
        filter: String,
        message: String,
    },
    /// Blocks or brackets nested deeper than the parser allows.
    #[error("line {line}, column {column}: nesting too deep (limit {limit})")]
    TooDeep {
        line: u32,
        column: u32,
        limit: usize,
    },
}

impl ParseError {
    /// 1-based line of the error.
    pub fn line(&self) -> u32 {
        match self {
            Self::Syntax { line, .. }
            | Self::UnknownTag { line, .. }
            | Self::UnknownFilter { line, .. }
            | Self::FilterArguments { line, .. }
            | Self::TooDeep { line, .. } => *line,
        }
    }

    /// 1-based column (in characters) of the error.
    pub fn column(&self) -> u32 {
        match self {
            Self::Syntax { column, .. }
            | Self::UnknownTag { column, .. }
            | Self::UnknownFilter { column, .. }
            | Self::FilterArguments { column, .. }
            | Self::TooDeep { column, .. } => *column,
        }
    }
}

/// Which resource limit a render ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitKind {
    /// Too many render steps (nodes, loop iterations, filter calls).
    Steps,
    /// Output (or a captured / computed string) grew past the byte limit.
    OutputSize,
    /// A filter would build an array longer than the item limit.
    CollectionSize,
    /// `include` / `render` nested too deeply (usually a partial including itself).
    PartialDepth,
    /// Blocks nested too deeply across partials.
    Nesting,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Steps => "render step limit",
            Self::OutputSize => "output size limit",
            Self::CollectionSize => "collection size limit",
            Self::PartialDepth => "partial nesting limit",
            Self::Nesting => "block nesting limit",
        })
    }
}

/// A render that failed. Undefined variables are never an error (see [`crate::Rendered::missing`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A filter raised, e.g. `divided_by: 0` or `map` over numbers.
    #[error("{}line {line}, column {column}: filter `{filter}`: {message}", partial_prefix(.partial))]
    Filter {
        partial: Option<String>,
        line: u32,
        column: u32,
        filter: String,
        message: String,
    },
    /// A tag or operator given values it cannot work with, e.g. `'2' > 1` or `limit: 'x'`.
    #[error("{}line {line}, column {column}: {message}", partial_prefix(.partial))]
    Type {
        partial: Option<String>,
        line: u32,
        column: u32,
        message: String,
    },
    /// `include` / `render` named a partial the loader does not have.
    #[error("{}line {line}, column {column}: partial `{name}` not found", partial_prefix(.partial))]
    PartialNotFound {
        partial: Option<String>,
        line: u32,
        column: u32,
        name: String,
    },
    /// The template hit a resource limit (see [`crate::Limits`]).
    #[error("{kind} exceeded (limit {limit})")]
    LimitExceeded { kind: LimitKind, limit: u64 },
    /// The render context was not a JSON object.
    #[error("render context must be a JSON object, got {found}")]
    InvalidContext { found: &'static str },
}

fn partial_prefix(partial: &Option<String>) -> String {
    match partial {
        Some(name) => format!("in partial `{name}`, "),
        None => String::new(),
    }
}

/// Computes the 1-based line and character column of byte `offset` in `source`.
pub(crate) fn line_col(source: &str, offset: usize) -> (u32, u32) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (to_u32(line), to_u32(column))
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
