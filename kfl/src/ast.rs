//! The syntax tree both dialects parse into, and its canonical KFL2 printing.
//!
//! Legacy forms leave no trace here: `a and b` is `a && b`, `x contains "y"` is
//! `x.contains("y")`; aliases (`response.status`) stay as written until the checker resolves
//! them, so errors can quote what the user wrote.

use crate::error::Span;

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `true`, `false`.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// A string.
    Str(String),
    /// `null`.
    Null,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `!`, `not`.
    Not,
    /// `-`.
    Neg,
}

/// Binary operators, in CEL's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `||`, `or`.
    Or,
    /// `&&`, `and`.
    And,
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `in` (list or map membership).
    In,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Rem,
}

impl BinaryOp {
    /// The operator as KFL2 writes it.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Or => "||",
            Self::And => "&&",
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::In => "in",
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Rem => "%",
        }
    }
}

/// An expression with its place in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

/// The kinds of expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal.
    Lit(Literal),
    /// A field, flag or alias, dots included (`src.pod.name`).
    Ident(String),
    /// `[a, b, c]`.
    List(Vec<Expr>),
    /// `!x`, `-x`.
    Unary(UnaryOp, Box<Expr>),
    /// `a op b`.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `c ? a : b`.
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `f(args)` when `target` is `None`, else `target.f(args)`.
    Call {
        /// Receiver of a method call.
        target: Option<Box<Expr>>,
        /// Function or method name.
        name: String,
        /// Arguments.
        args: Vec<Expr>,
    },
    /// `target[index]`.
    Index(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// An expression at `span`.
    pub fn new(kind: ExprKind, span: Span) -> Self {
        Self { kind, span }
    }

    /// The same tree with every span zeroed (to compare shapes).
    pub fn without_spans(&self) -> Expr {
        let b = |e: &Expr| Box::new(e.without_spans());
        let kind = match &self.kind {
            ExprKind::Lit(l) => ExprKind::Lit(l.clone()),
            ExprKind::Ident(n) => ExprKind::Ident(n.clone()),
            ExprKind::List(items) => {
                ExprKind::List(items.iter().map(Expr::without_spans).collect())
            }
            ExprKind::Unary(op, e) => ExprKind::Unary(*op, b(e)),
            ExprKind::Binary(op, l, r) => ExprKind::Binary(*op, b(l), b(r)),
            ExprKind::Ternary(c, t, e) => ExprKind::Ternary(b(c), b(t), b(e)),
            ExprKind::Call { target, name, args } => ExprKind::Call {
                target: target.as_deref().map(b),
                name: name.clone(),
                args: args.iter().map(Expr::without_spans).collect(),
            },
            ExprKind::Index(t, i) => ExprKind::Index(b(t), b(i)),
        };
        Expr::new(kind, Span::default())
    }
}

/// Writes a string literal that KFL reads back as the same string.
fn write_str(f: &mut std::fmt::Formatter<'_>, s: &str) -> std::fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// Canonical KFL2, fully parenthesised so that printing and parsing again gives the same tree.
impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ExprKind::Lit(Literal::Bool(b)) => write!(f, "{b}"),
            ExprKind::Lit(Literal::Int(i)) if *i < 0 => write!(f, "({i})"),
            ExprKind::Lit(Literal::Int(i)) => write!(f, "{i}"),
            ExprKind::Lit(Literal::Double(d)) => {
                let text = format!("{d:?}");
                if *d < 0.0 {
                    write!(f, "({text})")
                } else {
                    f.write_str(&text)
                }
            }
            ExprKind::Lit(Literal::Str(s)) => write_str(f, s),
            ExprKind::Lit(Literal::Null) => f.write_str("null"),
            ExprKind::Ident(n) => f.write_str(n),
            ExprKind::List(items) => {
                f.write_str("[")?;
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
            ExprKind::Unary(UnaryOp::Not, e) => write!(f, "!({e})"),
            ExprKind::Unary(UnaryOp::Neg, e) => write!(f, "-({e})"),
            ExprKind::Binary(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
            ExprKind::Ternary(c, t, e) => write!(f, "({c} ? {t} : {e})"),
            ExprKind::Call { target, name, args } => {
                if let Some(t) = target {
                    write!(f, "({t}).")?;
                }
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            ExprKind::Index(t, i) => write!(f, "({t})[{i}]"),
        }
    }
}
