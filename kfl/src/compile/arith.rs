//! `+ - * / %` over ints, doubles, strings, timestamps and durations. Constants fold here;
//! column arithmetic is done in signed 64 bits (the catalog's `int`), and division by zero
//! yields 0 instead of failing the query.

use datafusion::{
    arrow::datatypes::DataType,
    common::ScalarValue,
    functions::expr_fn as fx,
    logical_expr::{BinaryExpr, Expr as Df, Operator, cast, lit},
};

use crate::{
    ast::BinaryOp,
    error::{Result, Span},
};

use super::{
    lower::Lower,
    value::{Const, Ty, Val},
};

fn int64(v: Val) -> Df {
    if v.konst.is_some() {
        v.expr
    } else {
        cast(v.expr, DataType::Int64)
    }
}

fn df_op(op: BinaryOp) -> Operator {
    match op {
        BinaryOp::Add => Operator::Plus,
        BinaryOp::Sub => Operator::Minus,
        BinaryOp::Mul => Operator::Multiply,
        BinaryOp::Div => Operator::Divide,
        _ => Operator::Modulo,
    }
}

fn bin(l: Df, op: Operator, r: Df) -> Df {
    Df::BinaryExpr(BinaryExpr::new(Box::new(l), op, Box::new(r)))
}

/// Division and remainder that give 0 where SQL would fail (divisor 0).
fn guarded(l: Df, op: BinaryOp, r: Val, zero: Df) -> Df {
    let nonzero_const = match &r.konst {
        Some(Const::Int(n)) => *n != 0,
        Some(Const::Double(d)) => *d != 0.0,
        _ => false,
    };
    if matches!(op, BinaryOp::Div | BinaryOp::Rem) && !nonzero_const {
        let r = fx::nullif(r.expr, zero.clone());
        return fx::coalesce(vec![bin(l, df_op(op), r), zero]);
    }
    bin(l, df_op(op), r.expr)
}

/// Type checks and translates `l op r`.
pub(crate) fn arith(c: &impl Lower, op: BinaryOp, l: Val, r: Val, span: Span) -> Result<Val> {
    let overflow = || c.value_error(span, "integer overflow in a constant");
    match (&l.ty, &r.ty) {
        (Ty::Int, Ty::Int) => {
            if let (Some(Const::Int(a)), Some(Const::Int(b))) = (&l.konst, &r.konst) {
                let (a, b) = (*a, *b);
                let v = match op {
                    BinaryOp::Add => a.checked_add(b),
                    BinaryOp::Sub => a.checked_sub(b),
                    BinaryOp::Mul => a.checked_mul(b),
                    // CEL fails on division by zero; KFL reads it as 0, like columns do.
                    BinaryOp::Div => Some(a.checked_div(b).unwrap_or(0)),
                    _ => Some(a.checked_rem(b).unwrap_or(0)),
                };
                return v.map(|v| Val::konst(Const::Int(v))).ok_or_else(overflow);
            }
            let le = int64(l);
            let rk = r.konst.clone();
            let r = Val {
                expr: int64(r.clone()),
                konst: rk,
                ..r
            };
            Ok(Val::of(guarded(le, op, r, lit(0i64)), Ty::Int))
        }
        (a, b) if a.numeric() && b.numeric() => {
            let f = |v: &Val| match &v.konst {
                Some(Const::Int(i)) => Some(*i as f64),
                Some(Const::Double(d)) => Some(*d),
                _ => None,
            };
            if let (Some(a), Some(b)) = (f(&l), f(&r)) {
                let v = match op {
                    BinaryOp::Add => a + b,
                    BinaryOp::Sub => a - b,
                    BinaryOp::Mul => a * b,
                    BinaryOp::Div if b != 0.0 => a / b,
                    BinaryOp::Rem if b != 0.0 => a % b,
                    _ => 0.0,
                };
                return Ok(Val::konst(Const::Double(v)));
            }
            let le = cast(l.expr, DataType::Float64);
            let rv = Val {
                expr: cast(r.expr.clone(), DataType::Float64),
                ..r
            };
            Ok(Val::of(guarded(le, op, rv, lit(0f64)), Ty::Double))
        }
        (Ty::Str, Ty::Str) if op == BinaryOp::Add => {
            if let (Some(Const::Str(a)), Some(Const::Str(b))) = (&l.konst, &r.konst) {
                return Ok(Val::konst(Const::Str(format!("{a}{b}"))));
            }
            Ok(Val::of(fx::concat(vec![l.expr, r.expr]), Ty::Str))
        }
        (Ty::Timestamp, Ty::Duration) | (Ty::Duration, Ty::Timestamp)
            if op == BinaryOp::Add || (op == BinaryOp::Sub && l.ty == Ty::Timestamp) =>
        {
            let (ts, dur) = if l.ty == Ty::Timestamp {
                (l, r)
            } else {
                (r, l)
            };
            match (&ts.konst, &dur.konst) {
                (Some(Const::Ts(t)), Some(Const::Dur(d))) => {
                    let v = if op == BinaryOp::Add { t.checked_add(*d) } else { t.checked_sub(*d) };
                    v.map(|v| Val::konst(Const::Ts(v))).ok_or_else(overflow)
                }
                (_, Some(Const::Dur(d))) => {
                    let d = if op == BinaryOp::Add { *d } else { -*d };
                    let interval = lit(ScalarValue::new_interval_mdn(0, 0, d));
                    Ok(Val::of(bin(ts.expr, Operator::Plus, interval), Ty::Timestamp))
                }
                _ => Err(c.unsupported(
                    span,
                    "a timestamp can be shifted by a constant duration only, e.g. timestamp - duration(\"5m\")",
                )),
            }
        }
        (Ty::Timestamp, Ty::Timestamp) if op == BinaryOp::Sub => {
            if let (Some(Const::Ts(a)), Some(Const::Ts(b))) = (&l.konst, &r.konst) {
                return a
                    .checked_sub(*b)
                    .map(|v| Val::konst(Const::Dur(v)))
                    .ok_or_else(overflow);
            }
            // Durations are nanoseconds in Int64 inside expressions.
            let ns = |v: Val| cast(v.expr, DataType::Int64);
            Ok(Val::of(bin(ns(l), Operator::Minus, ns(r)), Ty::Duration))
        }
        (Ty::Duration, Ty::Duration) if matches!(op, BinaryOp::Add | BinaryOp::Sub) => {
            if let (Some(Const::Dur(a)), Some(Const::Dur(b))) = (&l.konst, &r.konst) {
                let v = if op == BinaryOp::Add {
                    a.checked_add(*b)
                } else {
                    a.checked_sub(*b)
                };
                return v.map(|v| Val::konst(Const::Dur(v))).ok_or_else(overflow);
            }
            Ok(Val::of(bin(l.expr, df_op(op), r.expr), Ty::Duration))
        }
        _ => Err(c.type_error(
            span,
            format!(
                "cannot apply `{}` to {} and {}",
                op.symbol(),
                l.ty.name(),
                r.ty.name()
            ),
        )),
    }
}
