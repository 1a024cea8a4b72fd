//! Type checking and translation: a KFL tree → one boolean DataFusion logical [`Expr`] over
//! the Parquet columns of a table.
//!
//! Semantics carried over from KFL2: an absent field reads as its zero value (nullable columns
//! are coalesced, columns missing from the file become literals), comparisons never fail at
//! run time (division by zero gives 0), time is UTC, `now()` is fixed when the filter is
//! compiled. Constant subexpressions (`now() - duration("5m")`) are folded here so that the
//! scan sees plain literals it can prune row groups with.
//!
//! Imports go one way: this module walks the tree and calls the helpers (`compare`, `arith`,
//! `functions`, `macros`); they see the walk only through the [`Lower`] trait and share the
//! value types of `value`.

use datafusion::{
    arrow::datatypes::{DataType, Schema},
    common::{Column, ScalarValue},
    functions::expr_fn as fx,
    functions_nested::expr_fn as nx,
    logical_expr::{Expr as Df, cast, lit, not, when},
};

mod arith;
mod compare;
mod functions;
mod lower;
mod macros;
mod value;

pub use lower::CompileOptions;

use crate::{
    ast::{BinaryOp, Expr, ExprKind, Literal, UnaryOp},
    catalog::{self, Field, FieldType, Source, Table},
    error::{Detail, KflError, Result, Span},
};
use compare::Compare as _;
use lower::Lower;
use value::{Const, Ty, Val};

/// Compiles a parsed filter against `table` as stored with `schema`.
pub fn compile(
    src: &str,
    ast: &Expr,
    table: Table,
    schema: &Schema,
    options: &CompileOptions,
) -> Result<Df> {
    let c = Compiler {
        src,
        table,
        schema,
        options,
        vars: Vec::new(),
    };
    let v = c.expr(ast)?;
    if v.ty != Ty::Bool {
        return Err(c.type_error(
            ast.span,
            format!(
                "a filter must be a condition (bool), but this is {}; compare it, e.g. `{} == ...`",
                v.ty.name(),
                &src[ast.span.start..ast.span.end]
            ),
        ));
    }
    Ok(v.expr)
}

/// The walk over a filter's tree; the helper modules reach it through [`Lower`].
struct Compiler<'a> {
    src: &'a str,
    table: Table,
    schema: &'a Schema,
    options: &'a CompileOptions,
    /// Bound variables of `exists`-style macros: name and the element they stand for.
    vars: Vec<(String, Df)>,
}

impl Lower for Compiler<'_> {
    fn src(&self) -> &str {
        self.src
    }

    fn options(&self) -> &CompileOptions {
        self.options
    }

    fn expr(&self, e: &Expr) -> Result<Val> {
        match &e.kind {
            ExprKind::Lit(l) => self.literal(l, e.span),
            ExprKind::Ident(name) => self.ident(name, e.span),
            ExprKind::List(_) => Err(self.type_error(
                e.span,
                "a list literal can only follow `in`, as in `status_code in [500, 503]`",
            )),
            ExprKind::Unary(op, inner) => self.unary(*op, inner, e.span),
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r, e.span),
            ExprKind::Ternary(c, t, f) => self.ternary(c, t, f),
            ExprKind::Call { target, name, args } => {
                functions::call(self, target.as_deref(), name, args, e.span)
            }
            ExprKind::Index(t, i) => self.index(t, i, e.span),
        }
    }
}

impl Compiler<'_> {
    fn literal(&self, l: &Literal, span: Span) -> Result<Val> {
        Ok(Val::konst(match l {
            Literal::Bool(b) => Const::Bool(*b),
            Literal::Int(i) => Const::Int(*i),
            Literal::Double(d) => Const::Double(*d),
            Literal::Str(s) => Const::Str(s.clone()),
            Literal::Null => {
                return Err(self.type_error(
                    span,
                    "KFL fields are never null: an absent field reads as its zero value, so compare with \"\", 0, false or test size(x) == 0",
                ));
            }
        }))
    }

    fn ident(&self, name: &str, span: Span) -> Result<Val> {
        if let Some((_, e)) = self.vars.iter().rev().find(|(v, _)| v == name) {
            return Ok(Val::of(e.clone(), Ty::Str));
        }
        let Some(field) = catalog::lookup(self.table, name) else {
            let suggestions = catalog::suggest(self.table, name);
            let hint = match suggestions.as_slice() {
                [] => "; describe_fields (GET /mcp/fields) lists every field".to_owned(),
                many => format!("; did you mean {}?", many.join(", ")),
            };
            return Err(KflError::UnknownField {
                detail: Detail::new(
                    self.src,
                    span,
                    format!("unknown field `{name}` in {}{hint}", self.table.name()),
                ),
                suggestions,
            });
        };
        Ok(self.field(field))
    }

    fn column(&self, name: &str) -> Option<(Df, DataType, bool)> {
        let f = self.schema.field_with_name(name).ok()?;
        Some((
            Df::Column(Column::from_name(name)),
            f.data_type().clone(),
            f.is_nullable(),
        ))
    }

    fn zero(ty: FieldType) -> Const {
        match ty {
            FieldType::Bool => Const::Bool(false),
            FieldType::Int => Const::Int(0),
            FieldType::Timestamp => Const::Ts(0),
            _ => Const::Str(String::new()),
        }
    }

    fn ty_of(ty: FieldType) -> Ty {
        match ty {
            FieldType::Bool => Ty::Bool,
            FieldType::Int => Ty::Int,
            FieldType::String => Ty::Str,
            FieldType::Bytes => Ty::Bytes,
            FieldType::Timestamp => Ty::Timestamp,
            FieldType::StringList => Ty::List(Box::new(Ty::Str)),
            FieldType::StringMap => Ty::Map,
        }
    }

    /// A string column compared by value, zero-valued when absent.
    fn str_col(&self, name: &str) -> Df {
        match self.column(name) {
            Some((c, _, true)) => fx::coalesce(vec![c, lit("")]),
            Some((c, _, false)) => c,
            None => lit(""),
        }
    }

    fn field(&self, field: &Field) -> Val {
        let ty = Self::ty_of(field.ty);
        match field.source {
            Source::Column(name) => self.stored(name, field.ty, ty),
            Source::Protocols(list) => {
                let col = self.str_col(catalog::protocol_column(self.table));
                let expr = match list {
                    [one] => col.eq(lit(*one)),
                    many => col.in_list(many.iter().map(|p| lit(*p)).collect(), false),
                };
                Val::of(expr, Ty::Bool)
            }
            Source::Const(b) => Val::konst(Const::Bool(b)),
            Source::Equals(name, value) => Val::of(self.str_col(name).eq(lit(value)), Ty::Bool),
            Source::NotEmpty(name) => Val::of(self.str_col(name).not_eq(lit("")), Ty::Bool),
            Source::DnsAnd(name) => {
                let flag = match self.column(name) {
                    Some((c, _, true)) => fx::coalesce(vec![c, lit(false)]),
                    Some((c, _, false)) => c,
                    None => lit(false),
                };
                Val::of(self.str_col("protocol").eq(lit("DNS")).and(flag), Ty::Bool)
            }
            Source::Millis(name) => {
                let us = match self.column(name) {
                    Some((c, _, _)) => fx::coalesce(vec![cast(c, DataType::Int64), lit(0i64)]),
                    None => lit(0i64),
                };
                Val::of(us / lit(1000i64), Ty::Int)
            }
        }
    }

    /// A stored column; absent ones read as the zero value, nullable ones are coalesced.
    fn stored(&self, name: &str, fty: FieldType, ty: Ty) -> Val {
        let headers = name.ends_with("_headers");
        let Some((c, dt, nullable)) = self.column(name) else {
            return match fty {
                FieldType::StringList | FieldType::StringMap => Val {
                    absent: true,
                    ..Val::of(lit(ScalarValue::Null), ty)
                },
                FieldType::Bytes => Val::of(lit(ScalarValue::Binary(Some(Vec::new()))), ty),
                _ => Val {
                    ty,
                    ..Val::konst(Self::zero(fty))
                },
            };
        };
        if !nullable || matches!(fty, FieldType::StringList | FieldType::StringMap) {
            return Val {
                headers,
                ..Val::of(c, ty)
            };
        }
        let zero = Self::zero(fty);
        let zero_expr = match fty {
            FieldType::Int => {
                lit(ScalarValue::new_zero(&dt).unwrap_or(ScalarValue::Int64(Some(0))))
            }
            FieldType::Bytes => lit(ScalarValue::Binary(Some(Vec::new()))),
            _ => Val::konst(zero.clone()).expr,
        };
        Val {
            bare: Some((c.clone(), zero)),
            headers,
            ..Val::of(fx::coalesce(vec![c, zero_expr]), ty)
        }
    }

    fn unary(&self, op: UnaryOp, inner: &Expr, span: Span) -> Result<Val> {
        let v = self.expr(inner)?;
        match op {
            UnaryOp::Not => {
                if v.ty != Ty::Bool {
                    return Err(self.type_error(
                        span,
                        format!(
                            "`!`/`not` needs a bool, but `{}` is {}",
                            self.text(inner),
                            v.ty.name()
                        ),
                    ));
                }
                Ok(match v.konst {
                    Some(Const::Bool(b)) => Val::konst(Const::Bool(!b)),
                    _ => Val::of(not(v.expr), Ty::Bool),
                })
            }
            UnaryOp::Neg => match (&v.ty, &v.konst) {
                (Ty::Int, Some(Const::Int(i))) => i
                    .checked_neg()
                    .map(|n| Val::konst(Const::Int(n)))
                    .ok_or_else(|| self.value_error(span, "integer overflow")),
                (Ty::Double, Some(Const::Double(d))) => Ok(Val::konst(Const::Double(-d))),
                (Ty::Duration, Some(Const::Dur(d))) => Ok(Val::konst(Const::Dur(-d))),
                (Ty::Int, None) => Ok(Val::of(
                    Df::Negative(Box::new(cast(v.expr, DataType::Int64))),
                    Ty::Int,
                )),
                (Ty::Double, None) => Ok(Val::of(Df::Negative(Box::new(v.expr)), Ty::Double)),
                _ => Err(self.type_error(
                    span,
                    format!(
                        "`-` needs a number, but `{}` is {}",
                        self.text(inner),
                        v.ty.name()
                    ),
                )),
            },
        }
    }

    fn binary(&self, op: BinaryOp, l: &Expr, r: &Expr, span: Span) -> Result<Val> {
        match op {
            BinaryOp::And | BinaryOp::Or => {
                let lv = self.expr(l)?;
                let rv = self.expr(r)?;
                for (e, v) in [(l, &lv), (r, &rv)] {
                    if v.ty != Ty::Bool {
                        return Err(self.type_error(
                            e.span,
                            format!(
                                "`{}` needs conditions on both sides, but `{}` is {}; compare it, e.g. `{} == ...`",
                                op.symbol(),
                                self.text(e),
                                v.ty.name(),
                                self.text(e)
                            ),
                        ));
                    }
                }
                let and = op == BinaryOp::And;
                let (lk, rk) = (lv.konst.clone(), rv.konst.clone());
                Ok(match (lk, rk) {
                    (Some(Const::Bool(a)), Some(Const::Bool(b))) => {
                        Val::konst(Const::Bool(if and { a && b } else { a || b }))
                    }
                    (Some(Const::Bool(k)), _) | (_, Some(Const::Bool(k))) => {
                        let other = if lv.konst.is_some() { rv } else { lv };
                        match (and, k) {
                            (true, true) | (false, false) => other,
                            (true, false) => Val::konst(Const::Bool(false)),
                            (false, true) => Val::konst(Const::Bool(true)),
                        }
                    }
                    _ if and => Val::of(lv.expr.and(rv.expr), Ty::Bool),
                    _ => Val::of(lv.expr.or(rv.expr), Ty::Bool),
                })
            }
            BinaryOp::In => self.membership(l, r, span),
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => {
                let lv = self.expr(l)?;
                let rv = self.expr(r)?;
                self.compare(op, lv, rv, l, r, span)
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => {
                let lv = self.expr(l)?;
                let rv = self.expr(r)?;
                arith::arith(self, op, lv, rv, span)
            }
        }
    }

    fn ternary(&self, c: &Expr, t: &Expr, f: &Expr) -> Result<Val> {
        let cv = self.expect(c, &Ty::Bool, "the condition of `? :`")?;
        let tv = self.expr(t)?;
        let fv = self.expr(f)?;
        let same = tv.ty == fv.ty || (tv.ty.numeric() && fv.ty.numeric());
        if !same || matches!(tv.ty, Ty::List(_) | Ty::Map) {
            return Err(self.type_error(
                t.span.join(f.span),
                format!(
                    "both branches of `? :` must have the same scalar type, but they are {} and {}",
                    tv.ty.name(),
                    fv.ty.name()
                ),
            ));
        }
        if let Some(Const::Bool(b)) = cv.konst {
            return Ok(if b { tv } else { fv });
        }
        let ty = if tv.ty == Ty::Int && fv.ty == Ty::Double {
            Ty::Double
        } else {
            tv.ty.clone()
        };
        let expr = when(cv.expr, tv.expr)
            .otherwise(fv.expr)
            .map_err(|e| KflError::Internal(e.to_string()))?;
        Ok(Val::of(expr, ty))
    }

    fn index(&self, t: &Expr, i: &Expr, span: Span) -> Result<Val> {
        let tv = self.expr(t)?;
        match &tv.ty {
            Ty::Map => {
                let kv = self.expect(i, &Ty::Str, "a map key")?;
                if tv.absent {
                    return Ok(Val::konst(Const::Str(String::new())));
                }
                let value = match (kv.konst, tv.headers) {
                    (Some(Const::Str(k)), headers) => {
                        let k = if headers { k.to_ascii_lowercase() } else { k };
                        fx::get_field(tv.expr, k)
                    }
                    (_, headers) => {
                        let k = if headers { fx::lower(kv.expr) } else { kv.expr };
                        nx::array_element(nx::map_extract(tv.expr, k), lit(1i64))
                    }
                };
                Ok(Val {
                    bare: Some((value.clone(), Const::Str(String::new()))),
                    ..Val::of(fx::coalesce(vec![value, lit("")]), Ty::Str)
                })
            }
            Ty::List(_) => {
                let iv = self.expect(i, &Ty::Int, "a list index")?;
                if tv.absent {
                    return Ok(Val::konst(Const::Str(String::new())));
                }
                // CEL counts from 0, DataFusion from 1.
                let at = match iv.konst {
                    Some(Const::Int(n)) => lit(n.saturating_add(1)),
                    _ => cast(iv.expr, DataType::Int64) + lit(1i64),
                };
                let value = nx::array_element(tv.expr, at);
                Ok(Val::of(fx::coalesce(vec![value, lit("")]), Ty::Str))
            }
            other => Err(self.type_error(
                span,
                format!(
                    "only maps and lists can be indexed, but `{}` is {}",
                    self.text(t),
                    other.name()
                ),
            )),
        }
    }
}
