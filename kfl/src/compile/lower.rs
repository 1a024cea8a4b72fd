//! What the helper modules may ask of the compiler: compile a subexpression, read the source,
//! and make errors that point into it.

use crate::{
    ast::Expr,
    error::{Detail, KflError, Result, Span},
    time,
};

use super::value::{Ty, Val};

/// Options of one compilation.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// What `now()` means, ns since the epoch (UTC).
    pub now_ns: i64,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            now_ns: time::now_ns(),
        }
    }
}

/// The compiler as the helpers see it.
pub(crate) trait Lower {
    /// The filter's text.
    fn src(&self) -> &str;

    /// This compilation's options.
    fn options(&self) -> &CompileOptions;

    /// Compiles a subexpression.
    fn expr(&self, e: &Expr) -> Result<Val>;

    /// Compiles `e` and requires type `want`.
    fn expect(&self, e: &Expr, want: &Ty, what: &str) -> Result<Val> {
        let v = self.expr(e)?;
        if &v.ty != want && !(want == &Ty::Double && v.ty == Ty::Int) {
            return Err(self.type_error(
                e.span,
                format!(
                    "{what} must be {}, but `{}` is {}",
                    want.name(),
                    self.text(e),
                    v.ty.name()
                ),
            ));
        }
        Ok(v)
    }

    /// The source text of `e`.
    fn text(&self, e: &Expr) -> &str {
        self.src().get(e.span.start..e.span.end).unwrap_or("")
    }

    /// A type error at `span`.
    fn type_error(&self, span: Span, msg: impl Into<String>) -> KflError {
        KflError::Type(Detail::new(self.src(), span, msg))
    }

    /// Something KFL does not support, at `span`.
    fn unsupported(&self, span: Span, msg: impl Into<String>) -> KflError {
        KflError::Unsupported(Detail::new(self.src(), span, msg))
    }

    /// A bad value at `span`.
    fn value_error(&self, span: Span, msg: impl Into<String>) -> KflError {
        KflError::Value(Detail::new(self.src(), span, msg))
    }
}
