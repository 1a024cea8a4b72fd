//! The CEL list macros `exists`, `all` and `exists_one` (`tlsx_cipher_suites.exists(s,
//! s.contains("RC4"))`). SQL has no lambdas, so the predicate — string tests on the element,
//! joined with `||` — becomes one regular expression, and a small scalar function counts the
//! elements it matches.

use datafusion::{
    arrow::datatypes::DataType,
    functions_nested::expr_fn as nx,
    logical_expr::{Expr as Df, ScalarUDF, lit},
};

use crate::{
    ast::{BinaryOp, Expr, ExprKind, Literal},
    error::{Detail, KflError, Result, Span},
    udf::CountMatches,
};

use super::{
    lower::Lower,
    value::{Const, Ty, Val},
};

fn count_matches(list: Df, pattern: String) -> Df {
    ScalarUDF::new_from_impl(CountMatches::default()).call(vec![list, lit(pattern)])
}

/// The regex equivalent of `pred` over the element named `var`, when it has one.
fn predicate_regex(c: &impl Lower, pred: &Expr, var: &str) -> Result<String> {
    let is_var = |e: &Expr| matches!(&e.kind, ExprKind::Ident(n) if n == var);
    let str_lit = |e: &Expr| match &e.kind {
        ExprKind::Lit(Literal::Str(s)) => Some(s.clone()),
        _ => None,
    };
    match &pred.kind {
        ExprKind::Call {
            target: Some(t),
            name,
            args,
        } if is_var(t) && args.len() == 1 => {
            if let Some(s) = str_lit(&args[0]) {
                let e = regex::escape(&s);
                match name.as_str() {
                    "contains" => return Ok(e),
                    "startsWith" => return Ok(format!("^{e}")),
                    "endsWith" => return Ok(format!("{e}$")),
                    "matches" => {
                        regex::Regex::new(&s).map_err(|err| {
                            KflError::Regex(Detail::new(
                                c.src(),
                                args[0].span,
                                format!("`{s}` is not a valid RE2 pattern: {err}"),
                            ))
                        })?;
                        return Ok(s);
                    }
                    _ => {}
                }
            }
        }
        ExprKind::Binary(BinaryOp::Eq, l, r) => {
            let lit_side = if is_var(l) {
                str_lit(r)
            } else if is_var(r) {
                str_lit(l)
            } else {
                None
            };
            if let Some(s) = lit_side {
                return Ok(format!("^{}$", regex::escape(&s)));
            }
        }
        ExprKind::Binary(BinaryOp::Or, l, r) => {
            let (a, b) = (predicate_regex(c, l, var)?, predicate_regex(c, r, var)?);
            return Ok(format!("(?:{a})|(?:{b})"));
        }
        _ => {}
    }
    Err(c.unsupported(
        pred.span,
        format!(
            "inside a list macro KFL supports {var} == \"v\" and {var}.contains/startsWith/endsWith/matches(\"…\"), joined with ||"
        ),
    ))
}

/// `list.exists(x, p)`, `list.all(x, p)`, `list.exists_one(x, p)`.
pub(crate) fn list_macro(
    c: &impl Lower,
    t: &Expr,
    name: &str,
    args: &[Expr],
    span: Span,
) -> Result<Val> {
    let [var, pred] = args else {
        return Err(c.type_error(
            span,
            format!("`{name}` takes a variable and a condition: list.{name}(x, x.contains(\"…\"))"),
        ));
    };
    let ExprKind::Ident(var) = &var.kind else {
        return Err(c.type_error(
            var.span,
            format!("the first argument of `{name}` is a variable name"),
        ));
    };
    let tv = c.expr(t)?;
    if !matches!(tv.ty, Ty::List(_)) {
        return Err(c.type_error(
            t.span,
            format!(
                "`{name}` needs a list, but `{}` is {}",
                c.text(t),
                tv.ty.name()
            ),
        ));
    }
    let re = predicate_regex(c, pred, var)?;
    if tv.absent {
        return Ok(Val::konst(Const::Bool(name == "all")));
    }
    let n = count_matches(tv.expr.clone(), re);
    let expr = match name {
        "exists" => n.gt(lit(0i64)),
        "exists_one" => n.eq(lit(1i64)),
        _ => n.eq(datafusion::logical_expr::cast(
            nx::cardinality(tv.expr),
            DataType::Int64,
        )),
    };
    Ok(Val::of(expr, Ty::Bool))
}
