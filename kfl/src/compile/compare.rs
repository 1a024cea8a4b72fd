//! Comparisons and membership: operand types unified (ints with doubles, timestamps with
//! legacy unix milliseconds, bytes with strings), constants folded, and nullable columns
//! compared bare whenever their zero value could not match, so that the scan can prune.

use datafusion::{
    common::ScalarValue,
    functions::expr_fn as fx,
    functions_nested::expr_fn as nx,
    logical_expr::{BinaryExpr, Expr as Df, Operator, lit},
};

use crate::{
    ast::{BinaryOp, Expr, ExprKind, Literal},
    error::{Result, Span},
};

use super::{
    lower::Lower,
    value::{Const, Ty, Val},
};

/// Comparisons, written against [`Lower`] so the compiler can call them as its own methods.
pub(crate) trait Compare: Lower {
    /// Brings two operands to comparable forms, or says why they are not.
    fn unify(
        &self,
        op: BinaryOp,
        lv: Val,
        rv: Val,
        l: &Expr,
        r: &Expr,
        span: Span,
    ) -> Result<(Val, Val)> {
        let ok = match (&lv.ty, &rv.ty) {
            (a, b) if a == b => !matches!(a, Ty::List(_) | Ty::Map),
            (a, b) if a.numeric() && b.numeric() => true,
            // Legacy: timestamps compared with unix milliseconds.
            (Ty::Timestamp, Ty::Int) | (Ty::Int, Ty::Timestamp) => {
                let (ts_left, k) = if lv.ty == Ty::Timestamp {
                    (true, &rv.konst)
                } else {
                    (false, &lv.konst)
                };
                if let Some(Const::Int(ms)) = k {
                    let ns = ms
                        .checked_mul(1_000_000)
                        .ok_or_else(|| self.value_error(span, "timestamp out of range"))?;
                    return Ok(if ts_left {
                        (lv, Val::konst(Const::Ts(ns)))
                    } else {
                        (Val::konst(Const::Ts(ns)), rv)
                    });
                }
                false
            }
            (Ty::Bytes, Ty::Str) | (Ty::Str, Ty::Bytes) => {
                let str_const = |v: &Val| matches!(v.konst, Some(Const::Str(_)));
                if matches!(op, BinaryOp::Eq | BinaryOp::Ne) && (str_const(&lv) || str_const(&rv)) {
                    let bytes = |v: Val| match &v.konst {
                        Some(Const::Str(s)) => Val::of(
                            lit(ScalarValue::Binary(Some(s.clone().into_bytes()))),
                            Ty::Bytes,
                        ),
                        _ => v,
                    };
                    return Ok((bytes(lv), bytes(rv)));
                }
                false
            }
            _ => false,
        };
        if ok {
            return Ok((lv, rv));
        }
        let hint = match (&lv.ty, &rv.ty) {
            (Ty::Timestamp, Ty::Str) | (Ty::Str, Ty::Timestamp) => {
                "; write times as timestamp(\"2026-11-24T10:00:00Z\") or now() - duration(\"5m\")"
            }
            (Ty::Int, Ty::Str) | (Ty::Str, Ty::Int) => {
                "; numbers are written without quotes (status_code == 503)"
            }
            (Ty::List(_), _) | (_, Ty::List(_)) => "; test list elements with `\"x\" in list`",
            (Ty::Map, _) | (_, Ty::Map) => "; read map values with map[\"key\"]",
            (Ty::Int, Ty::Duration) | (Ty::Duration, Ty::Int) => {
                "; elapsed_time is an int in microseconds (5 s = 5000000)"
            }
            _ => "",
        };
        Err(self.type_error(
            span,
            format!(
                "cannot apply `{}` to `{}` ({}) and `{}` ({}){hint}",
                op.symbol(),
                self.text(l),
                lv.ty.name(),
                self.text(r),
                rv.ty.name()
            ),
        ))
    }

    fn compare(
        &self,
        op: BinaryOp,
        lv: Val,
        rv: Val,
        l: &Expr,
        r: &Expr,
        span: Span,
    ) -> Result<Val> {
        if matches!(lv.ty, Ty::Bool)
            && !matches!(op, BinaryOp::Eq | BinaryOp::Ne)
            && rv.ty == Ty::Bool
        {
            return Err(self.type_error(span, "booleans are compared with == and != only"));
        }
        let (lv, rv) = self.unify(op, lv, rv, l, r, span)?;
        let dfop = match op {
            BinaryOp::Eq => Operator::Eq,
            BinaryOp::Ne => Operator::NotEq,
            BinaryOp::Lt => Operator::Lt,
            BinaryOp::Le => Operator::LtEq,
            BinaryOp::Gt => Operator::Gt,
            _ => Operator::GtEq,
        };
        if let (Some(a), Some(b)) = (&lv.konst, &rv.konst)
            && let Some(res) = const_cmp(op, a, b)
        {
            return Ok(Val::konst(Const::Bool(res)));
        }
        // A nullable column against a constant its zero value does not satisfy: compare the
        // bare column, which the scan can prune row groups with.
        let pick = |v: Val, other: &Val, flipped: bool| -> Df {
            match (&v.bare, &other.konst) {
                (Some((bare, zero)), Some(k)) => {
                    let holds = if flipped {
                        const_cmp(op, k, zero)
                    } else {
                        const_cmp(op, zero, k)
                    };
                    if holds == Some(false) {
                        bare.clone()
                    } else {
                        v.expr
                    }
                }
                _ => v.expr,
            }
        };
        let le = pick(lv.clone(), &rv, false);
        let re = pick(rv, &lv, true);
        Ok(Val::of(
            Df::BinaryExpr(BinaryExpr::new(Box::new(le), dfop, Box::new(re))),
            Ty::Bool,
        ))
    }

    fn membership(&self, l: &Expr, r: &Expr, span: Span) -> Result<Val> {
        let lv = self.expr(l)?;
        if let ExprKind::List(items) = &r.kind {
            let mut list = Vec::with_capacity(items.len());
            let mut all_const = lv.konst.is_some();
            let mut hit = false;
            for item in items {
                let iv = self.expr(item)?;
                let (a, b) = self.unify(BinaryOp::Eq, lv.clone(), iv, l, item, span)?;
                if let (Some(x), Some(y)) = (&a.konst, &b.konst) {
                    hit |= const_cmp(BinaryOp::Eq, x, y) == Some(true);
                } else {
                    all_const = false;
                }
                list.push(b.expr);
            }
            if all_const || list.is_empty() {
                return Ok(Val::konst(Const::Bool(hit)));
            }
            let target = match &lv.bare {
                Some((bare, zero)) if !self.zero_in(zero, items) => bare.clone(),
                _ => lv.expr,
            };
            return Ok(Val::of(target.in_list(list, false), Ty::Bool));
        }
        let rv = self.expr(r)?;
        let need_str = |what: &str| -> Result<()> {
            if lv.ty == Ty::Str {
                Ok(())
            } else {
                Err(self.type_error(
                    l.span,
                    format!(
                        "{what} hold strings, but `{}` is {}",
                        self.text(l),
                        lv.ty.name()
                    ),
                ))
            }
        };
        match &rv.ty {
            Ty::List(_) => {
                need_str("lists")?;
                if rv.absent {
                    return Ok(Val::konst(Const::Bool(false)));
                }
                Ok(Val::of(nx::array_has(rv.expr, lv.expr), Ty::Bool))
            }
            Ty::Map => {
                need_str("map keys")?;
                if rv.absent {
                    return Ok(Val::konst(Const::Bool(false)));
                }
                let key = match (&lv.konst, rv.headers) {
                    (Some(Const::Str(k)), true) => lit(k.to_ascii_lowercase()),
                    (_, true) => fx::lower(lv.expr),
                    _ => lv.expr,
                };
                Ok(Val::of(nx::array_has(nx::map_keys(rv.expr), key), Ty::Bool))
            }
            Ty::Str => Err(self.type_error(
                span,
                format!(
                    "`in` tests list elements and map keys; for text inside a string write `{}.contains({})`",
                    self.text(r),
                    self.text(l)
                ),
            )),
            other => Err(self.type_error(
                span,
                format!(
                    "`in` needs a list or a map on its right, but `{}` is {}",
                    self.text(r),
                    other.name()
                ),
            )),
        }
    }

    fn zero_in(&self, zero: &Const, items: &[Expr]) -> bool {
        items.iter().any(|i| match &i.kind {
            ExprKind::Lit(Literal::Int(n)) => matches!(zero, Const::Int(z) if z == n),
            ExprKind::Lit(Literal::Str(s)) => matches!(zero, Const::Str(z) if z == s),
            _ => true,
        })
    }
}

impl<T: Lower> Compare for T {}

/// Evaluates a comparison of two constants; `None` when they are not comparable here.
pub(crate) fn const_cmp(op: BinaryOp, a: &Const, b: &Const) -> Option<bool> {
    use std::cmp::Ordering;
    let ord: Ordering = match (a, b) {
        (Const::Int(x), Const::Int(y)) => x.cmp(y),
        (Const::Double(x), Const::Double(y)) => x.partial_cmp(y)?,
        (Const::Int(x), Const::Double(y)) => (*x as f64).partial_cmp(y)?,
        (Const::Double(x), Const::Int(y)) => x.partial_cmp(&(*y as f64))?,
        (Const::Str(x), Const::Str(y)) => x.cmp(y),
        (Const::Bool(x), Const::Bool(y)) => x.cmp(y),
        (Const::Ts(x), Const::Ts(y)) | (Const::Dur(x), Const::Dur(y)) => x.cmp(y),
        _ => return None,
    };
    Some(match op {
        BinaryOp::Eq => ord == Ordering::Equal,
        BinaryOp::Ne => ord != Ordering::Equal,
        BinaryOp::Lt => ord == Ordering::Less,
        BinaryOp::Le => ord != Ordering::Greater,
        BinaryOp::Gt => ord == Ordering::Greater,
        BinaryOp::Ge => ord != Ordering::Less,
        _ => return None,
    })
}
