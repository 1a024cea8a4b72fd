//! The values of a compilation: KFL types, constants, and translated subexpressions.

use std::sync::Arc;

use datafusion::{
    common::ScalarValue,
    logical_expr::{Expr as Df, lit},
};

/// KFL's value types while checking.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Bool,
    Int,
    Double,
    Str,
    Bytes,
    Timestamp,
    Duration,
    List(Box<Ty>),
    Map,
}

impl Ty {
    pub(crate) fn name(&self) -> String {
        match self {
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Double => "double".into(),
            Ty::Str => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Timestamp => "timestamp".into(),
            Ty::Duration => "duration".into(),
            Ty::List(t) => format!("list<{}>", t.name()),
            Ty::Map => "map<string, string>".into(),
        }
    }

    pub(crate) fn numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Double)
    }
}

/// A constant known at compile time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Const {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Ts(i64),
    Dur(i64),
}

/// A checked, translated subexpression.
#[derive(Debug, Clone)]
pub(crate) struct Val {
    pub(crate) expr: Df,
    pub(crate) ty: Ty,
    pub(crate) konst: Option<Const>,
    /// The bare column of a coalesced nullable field, and the zero it was coalesced with.
    pub(crate) bare: Option<(Df, Const)>,
    /// A list or map column the file does not have (every operation on it is a constant).
    pub(crate) absent: bool,
    /// A header map: keys are compared in lower case.
    pub(crate) headers: bool,
}

impl Val {
    pub(crate) fn of(expr: Df, ty: Ty) -> Self {
        Self {
            expr,
            ty,
            konst: None,
            bare: None,
            absent: false,
            headers: false,
        }
    }

    pub(crate) fn konst(c: Const) -> Self {
        let (expr, ty) = match &c {
            Const::Bool(b) => (lit(*b), Ty::Bool),
            Const::Int(i) => (lit(*i), Ty::Int),
            Const::Double(d) => (lit(*d), Ty::Double),
            Const::Str(s) => (lit(s.clone()), Ty::Str),
            Const::Ts(ns) => (ts_lit(*ns), Ty::Timestamp),
            // Durations are nanoseconds as Int64 inside expressions (see `arith`).
            Const::Dur(ns) => (lit(*ns), Ty::Duration),
        };
        Self {
            konst: Some(c),
            ..Self::of(expr, ty)
        }
    }
}

/// A UTC timestamp literal.
pub(crate) fn ts_lit(ns: i64) -> Df {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some(Arc::from("UTC")),
    ))
}
