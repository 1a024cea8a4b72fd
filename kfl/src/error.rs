//! KFL errors: one enum, every variant located in the source text so that a person or a model
//! sees where the filter went wrong (line, column, a caret excerpt) and what to write instead.

use serde::Serialize;

/// A byte range of the filter text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Where an error is, for people (line and column, 1-based, in characters) and programs
/// (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Byte offset of the start.
    pub offset: usize,
    /// Length in bytes (at least 1 when the text has room).
    pub length: usize,
}

/// What every error carries besides its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// One sentence saying what is wrong and, where we can tell, what to write instead.
    pub message: String,
    /// Where.
    pub position: Position,
    /// The offending line and a caret line under the span.
    pub excerpt: String,
}

impl Detail {
    /// Locates `span` in `source`.
    pub fn new(source: &str, span: Span, message: impl Into<String>) -> Self {
        // Spans computed in bytes may end inside a multi-byte character (an escape cut short
        // by one): widen them to character boundaries.
        let mut start = span.start.min(source.len());
        while !source.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = span.end.clamp(start, source.len());
        while !source.is_char_boundary(end) {
            end += 1;
        }
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let line = source[..start].matches('\n').count() + 1;
        let column = source[line_start..start].chars().count() + 1;
        let text = &source[line_start..line_end];
        let width = source[start..end.min(line_end)].chars().count().max(1);
        let excerpt = format!("{text}\n{}{}", " ".repeat(column - 1), "^".repeat(width));
        Self {
            message: message.into(),
            position: Position {
                line,
                column,
                offset: start,
                length: (end - start).max(usize::from(start < source.len())),
            },
            excerpt,
        }
    }
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (line {}, column {})\n{}",
            self.message, self.position.line, self.position.column, self.excerpt
        )
    }
}

/// Why a filter was refused. Every variant is the user's to fix (HTTP 400), except
/// [`KflError::Internal`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KflError {
    /// The text is not a KFL expression.
    #[error("syntax error: {0}")]
    Parse(Detail),
    /// A name that is neither a field nor an alias.
    #[error("unknown field: {detail}")]
    UnknownField {
        /// Message and place.
        detail: Detail,
        /// The closest known names, best first.
        suggestions: Vec<String>,
    },
    /// A function or method KFL does not have.
    #[error("unknown function: {0}")]
    UnknownFunction(Detail),
    /// Operands whose types do not fit the operator.
    #[error("type error: {0}")]
    Type(Detail),
    /// A `.matches()` pattern the regex engine refuses.
    #[error("invalid regex: {0}")]
    Regex(Detail),
    /// A literal that cannot be read (`timestamp("yesterday")`, `duration("5 parsecs")`).
    #[error("invalid value: {0}")]
    Value(Detail),
    /// A valid CEL construct KFL does not translate.
    #[error("not supported: {0}")]
    Unsupported(Detail),
    /// A bug on our side (building the DataFusion expression failed).
    #[error("internal error: {0}")]
    Internal(String),
}

impl KflError {
    /// The error's kind as a stable, machine-readable word (`parse`, `unknown_field`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Parse(_) => "parse",
            Self::UnknownField { .. } => "unknown_field",
            Self::UnknownFunction(_) => "unknown_function",
            Self::Type(_) => "type",
            Self::Regex(_) => "regex",
            Self::Value(_) => "value",
            Self::Unsupported(_) => "unsupported",
            Self::Internal(_) => "internal",
        }
    }

    /// Message, position and excerpt, when the error is located.
    pub fn detail(&self) -> Option<&Detail> {
        match self {
            Self::Parse(d)
            | Self::UnknownFunction(d)
            | Self::Type(d)
            | Self::Regex(d)
            | Self::Value(d)
            | Self::Unsupported(d) => Some(d),
            Self::UnknownField { detail, .. } => Some(detail),
            Self::Internal(_) => None,
        }
    }

    /// Whether the filter's author can fix it (everything but internal errors).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Self::Internal(_))
    }

    /// The error as the API returns it inside `{"error": ...}` (HTTP 400 for user errors).
    pub fn body(&self) -> ErrorBody {
        let (message, position, excerpt) = match self.detail() {
            Some(d) => (
                d.message.clone(),
                Some(d.position.clone()),
                Some(d.excerpt.clone()),
            ),
            None => (self.to_string(), None, None),
        };
        ErrorBody {
            kind: self.kind(),
            message,
            position,
            excerpt,
            suggestions: match self {
                Self::UnknownField { suggestions, .. } => suggestions.clone(),
                _ => Vec::new(),
            },
        }
    }
}

/// The wire form of a [`KflError`]: `{kind, message, position, excerpt, suggestions}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    /// `parse`, `unknown_field`, `unknown_function`, `type`, `regex`, `value`, `unsupported`
    /// or `internal`.
    pub kind: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
    /// Where, when located.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// The offending line with a caret line under the problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    /// Closest field names, for unknown fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<String>,
}

/// Shorthand for results of this crate.
pub type Result<T, E = KflError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_points_at_the_span_on_its_line() {
        let src = "http &&\n  status_code == \"x\"";
        let start = src.find("\"x\"").unwrap_or_default();
        let d = Detail::new(src, Span::new(start, start + 3), "boom");
        assert_eq!(d.position.line, 2);
        assert_eq!(d.position.column, 18);
        assert_eq!(d.excerpt, "  status_code == \"x\"\n                 ^^^");
    }

    #[test]
    fn spans_inside_a_character_are_widened() {
        // Found by the fuzzer: an escape cut short by a two-byte character.
        let src = "path == \"\\u006\u{5e3}t\"";
        let e = crate::parse(src)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("malformed escape"), "{e}");
        let d = Detail::new("aé", Span::new(2, 2), "x");
        assert_eq!(d.position.offset, 1);
    }

    #[test]
    fn detail_at_end_of_input_has_a_caret() {
        let d = Detail::new("a ==", Span::new(4, 4), "expected a value");
        assert_eq!(d.position.column, 5);
        assert_eq!(d.excerpt, "a ==\n    ^");
        assert_eq!(d.position.length, 0);
    }
}
