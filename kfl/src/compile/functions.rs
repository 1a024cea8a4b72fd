//! Functions and methods: string predicates, `size`, `timestamp`, `duration`, `now`,
//! `map_get`, conversions, and the list macros `exists` / `all` / `exists_one`.

use datafusion::{
    arrow::datatypes::DataType,
    functions::expr_fn as fx,
    functions_nested::expr_fn as nx,
    logical_expr::{BinaryExpr, Expr as Df, Operator, ScalarUDF, cast, lit},
};

use crate::{
    ast::{Expr, ExprKind},
    error::{Detail, KflError, Result, Span},
    time,
};

use super::{
    lower::Lower,
    value::{Const, Ty, Val},
};

const METHODS: [&str; 10] = [
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "size",
    "lowerAscii",
    "upperAscii",
    "exists",
    "all",
    "exists_one",
];
const FUNCTIONS: [&str; 8] = [
    "size",
    "timestamp",
    "duration",
    "now",
    "map_get",
    "int",
    "string",
    "double",
];

fn arity(c: &impl Lower, name: &str, args: &[Expr], n: usize, span: Span) -> Result<()> {
    if args.len() == n {
        return Ok(());
    }
    Err(c.type_error(
        span,
        format!(
            "`{name}` takes {n} argument{}, but {} were given",
            if n == 1 { "" } else { "s" },
            args.len()
        ),
    ))
}

/// Translates `target.name(args)` (method) or `name(args)` (function).
pub(crate) fn call(
    c: &impl Lower,
    target: Option<&Expr>,
    name: &str,
    args: &[Expr],
    span: Span,
) -> Result<Val> {
    match target {
        Some(t) => method(c, t, name, args, span),
        None => function(c, name, args, span),
    }
}

fn unknown(c: &impl Lower, name: &str, known: &[&str], span: Span) -> KflError {
    KflError::UnknownFunction(Detail::new(
        c.src(),
        span,
        format!("unknown function `{name}`; KFL has {}", known.join(", ")),
    ))
}

/// A LIKE pattern for a literal, when the literal has no LIKE metacharacters.
fn like_pattern(prefix: &str, s: &str, suffix: &str) -> Option<String> {
    (!s.contains(['%', '_', '\\'])).then(|| format!("{prefix}{s}{suffix}"))
}

fn method(c: &impl Lower, t: &Expr, name: &str, args: &[Expr], span: Span) -> Result<Val> {
    if matches!(name, "exists" | "all" | "exists_one") {
        return super::macros::list_macro(c, t, name, args, span);
    }
    let tv = c.expr(t)?;
    match name {
        "contains" | "startsWith" | "endsWith" => {
            arity(c, name, args, 1, span)?;
            if let Ty::List(_) = tv.ty {
                return Err(c.type_error(
                    span,
                    format!(
                        "lists have no .{name}(); test membership with `{} in {}`",
                        args.first().map_or("\"x\"", |a| c.text(a)),
                        c.text(t)
                    ),
                ));
            }
            if tv.ty != Ty::Str {
                return Err(c.type_error(
                    t.span,
                    format!(
                        ".{name}() needs a string, but `{}` is {}",
                        c.text(t),
                        tv.ty.name()
                    ),
                ));
            }
            let av = c.expect(&args[0], &Ty::Str, &format!("the argument of .{name}()"))?;
            if let (Some(Const::Str(s)), Some(Const::Str(p))) = (&tv.konst, &av.konst) {
                let v = match name {
                    "contains" => s.contains(p.as_str()),
                    "startsWith" => s.starts_with(p.as_str()),
                    _ => s.ends_with(p.as_str()),
                };
                return Ok(Val::konst(Const::Bool(v)));
            }
            // The zero value "" only matches the empty pattern: test the bare column otherwise.
            let subject = match (&tv.bare, &av.konst) {
                (Some((bare, _)), Some(Const::Str(p))) if !p.is_empty() => bare.clone(),
                _ => tv.expr,
            };
            let pattern = match &av.konst {
                Some(Const::Str(p)) => match name {
                    "contains" => like_pattern("%", p, "%"),
                    "startsWith" => like_pattern("", p, "%"),
                    _ => like_pattern("%", p, ""),
                },
                _ => None,
            };
            let expr = match (pattern, name) {
                (Some(p), _) => subject.like(lit(p)),
                (None, "contains") => fx::contains(subject, av.expr),
                (None, "startsWith") => fx::starts_with(subject, av.expr),
                (None, _) => fx::ends_with(subject, av.expr),
            };
            Ok(Val::of(expr, Ty::Bool))
        }
        "matches" => {
            arity(c, name, args, 1, span)?;
            if tv.ty != Ty::Str {
                return Err(c.type_error(
                    t.span,
                    format!(
                        ".matches() needs a string, but `{}` is {}",
                        c.text(t),
                        tv.ty.name()
                    ),
                ));
            }
            let av = c.expect(&args[0], &Ty::Str, "the pattern of .matches()")?;
            if let Some(Const::Str(re)) = &av.konst {
                let compiled = regex::Regex::new(re).map_err(|e| {
                    KflError::Regex(Detail::new(
                        c.src(),
                        args[0].span,
                        format!(
                            "`{re}` is not a valid RE2 pattern: {}",
                            first_line(&e.to_string())
                        ),
                    ))
                })?;
                if let Some(Const::Str(s)) = &tv.konst {
                    return Ok(Val::konst(Const::Bool(compiled.is_match(s))));
                }
            }
            let subject = match (&tv.bare, &av.konst) {
                (Some((bare, _)), Some(Const::Str(re)))
                    if regex::Regex::new(re).is_ok_and(|r| !r.is_match("")) =>
                {
                    bare.clone()
                }
                _ => tv.expr,
            };
            Ok(Val::of(
                Df::BinaryExpr(BinaryExpr::new(
                    Box::new(subject),
                    Operator::RegexMatch,
                    Box::new(av.expr),
                )),
                Ty::Bool,
            ))
        }
        "size" => {
            arity(c, name, args, 0, span)?;
            size(c, tv, t)
        }
        "lowerAscii" | "upperAscii" => {
            arity(c, name, args, 0, span)?;
            if tv.ty != Ty::Str {
                return Err(c.type_error(t.span, format!(".{name}() needs a string")));
            }
            if let Some(Const::Str(s)) = &tv.konst {
                return Ok(Val::konst(Const::Str(if name == "lowerAscii" {
                    s.to_ascii_lowercase()
                } else {
                    s.to_ascii_uppercase()
                })));
            }
            let e = if name == "lowerAscii" {
                fx::lower(tv.expr)
            } else {
                fx::upper(tv.expr)
            };
            Ok(Val::of(e, Ty::Str))
        }
        _ => Err(unknown(c, &format!(".{name}()"), &METHODS, span)),
    }
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_owned()
}

fn size(c: &impl Lower, v: Val, e: &Expr) -> Result<Val> {
    if v.absent {
        return Ok(Val::konst(Const::Int(0)));
    }
    if let Some(Const::Str(s)) = &v.konst {
        return Ok(Val::konst(Const::Int(s.chars().count() as i64)));
    }
    let expr = match v.ty {
        Ty::Str => fx::character_length(v.expr),
        Ty::Bytes => ScalarUDF::new_from_impl(crate::udf::ByteLength::default()).call(vec![v.expr]),
        Ty::List(_) | Ty::Map => nx::cardinality(v.expr),
        ref other => {
            return Err(c.type_error(
                e.span,
                format!(
                    "size() needs a string, bytes, list or map, but `{}` is {}",
                    c.text(e),
                    other.name()
                ),
            ));
        }
    };
    Ok(Val::of(
        fx::coalesce(vec![cast(expr, DataType::Int64), lit(0i64)]),
        Ty::Int,
    ))
}

fn const_str(c: &impl Lower, e: &Expr, what: &str) -> Result<String> {
    match &e.kind {
        ExprKind::Lit(crate::ast::Literal::Str(s)) => Ok(s.clone()),
        _ => Err(c.type_error(e.span, format!("{what} takes a string literal"))),
    }
}

fn function(c: &impl Lower, name: &str, args: &[Expr], span: Span) -> Result<Val> {
    match name {
        "size" => {
            arity(c, name, args, 1, span)?;
            let v = c.expr(&args[0])?;
            size(c, v, &args[0])
        }
        "now" => {
            arity(c, name, args, 0, span)?;
            Ok(Val::konst(Const::Ts(c.options().now_ns)))
        }
        "timestamp" => {
            arity(c, name, args, 1, span)?;
            if let ExprKind::Lit(crate::ast::Literal::Int(secs)) = args[0].kind {
                return secs
                    .checked_mul(1_000_000_000)
                    .map(|ns| Val::konst(Const::Ts(ns)))
                    .ok_or_else(|| c.value_error(args[0].span, "timestamp out of range"));
            }
            let s = const_str(c, &args[0], "timestamp()")?;
            time::parse_timestamp(&s)
                .map(|ns| Val::konst(Const::Ts(ns)))
                .map_err(|m| c.value_error(args[0].span, m))
        }
        "duration" => {
            arity(c, name, args, 1, span)?;
            let s = const_str(c, &args[0], "duration()")?;
            time::parse_duration(&s)
                .map(|ns| Val::konst(Const::Dur(ns)))
                .map_err(|m| c.value_error(args[0].span, m))
        }
        "map_get" => {
            arity(c, name, args, 3, span)?;
            let m = c.expr(&args[0])?;
            if m.ty != Ty::Map {
                return Err(c.type_error(
                    args[0].span,
                    format!(
                        "map_get() needs a map first, but `{}` is {}",
                        c.text(&args[0]),
                        m.ty.name()
                    ),
                ));
            }
            let k = c.expect(&args[1], &Ty::Str, "the key of map_get()")?;
            let d = c.expect(&args[2], &Ty::Str, "the default of map_get()")?;
            if m.absent {
                return Ok(d);
            }
            let value = match k.konst {
                Some(Const::Str(key)) => fx::get_field(
                    m.expr,
                    if m.headers {
                        key.to_ascii_lowercase()
                    } else {
                        key
                    },
                ),
                _ => nx::array_element(nx::map_extract(m.expr, k.expr), lit(1i64)),
            };
            Ok(Val::of(fx::coalesce(vec![value, d.expr]), Ty::Str))
        }
        "int" => {
            arity(c, name, args, 1, span)?;
            let v = c.expr(&args[0])?;
            match (&v.ty, &v.konst) {
                (Ty::Int, _) => Ok(v),
                (Ty::Double, Some(Const::Double(d))) => {
                    Ok(Val::konst(Const::Int(d.trunc() as i64)))
                }
                (Ty::Double, _) => Ok(Val::of(cast(v.expr, DataType::Int64), Ty::Int)),
                (Ty::Timestamp, Some(Const::Ts(ns))) => {
                    Ok(Val::konst(Const::Int(ns.div_euclid(1_000_000_000))))
                }
                (Ty::Timestamp, _) => Ok(Val::of(
                    cast(v.expr, DataType::Int64) / lit(1_000_000_000i64),
                    Ty::Int,
                )),
                (Ty::Str, Some(Const::Str(s))) => s
                    .trim()
                    .parse::<i64>()
                    .map(|i| Val::konst(Const::Int(i)))
                    .map_err(|_| c.value_error(args[0].span, format!("`{s}` is not an integer"))),
                (Ty::Str, _) => Ok(Val::of(
                    fx::coalesce(vec![
                        Df::TryCast(datafusion::logical_expr::TryCast::new(
                            Box::new(v.expr),
                            DataType::Int64,
                        )),
                        lit(0i64),
                    ]),
                    Ty::Int,
                )),
                (other, _) => Err(c.type_error(
                    args[0].span,
                    format!("int() cannot convert {}", other.name()),
                )),
            }
        }
        "double" => {
            arity(c, name, args, 1, span)?;
            let v = c.expr(&args[0])?;
            match (&v.ty, &v.konst) {
                (Ty::Double, _) => Ok(v),
                (Ty::Int, Some(Const::Int(i))) => Ok(Val::konst(Const::Double(*i as f64))),
                (Ty::Int, _) => Ok(Val::of(cast(v.expr, DataType::Float64), Ty::Double)),
                (other, _) => Err(c.type_error(
                    args[0].span,
                    format!("double() cannot convert {}", other.name()),
                )),
            }
        }
        "string" => {
            arity(c, name, args, 1, span)?;
            let v = c.expr(&args[0])?;
            match (&v.ty, &v.konst) {
                (Ty::Str, _) => Ok(v),
                (Ty::Int, Some(Const::Int(i))) => Ok(Val::konst(Const::Str(i.to_string()))),
                (Ty::Int | Ty::Bool, _) => Ok(Val::of(cast(v.expr, DataType::Utf8), Ty::Str)),
                (other, _) => Err(c.type_error(
                    args[0].span,
                    format!("string() cannot convert {}", other.name()),
                )),
            }
        }
        _ if METHODS.contains(&name) => {
            Err(c.type_error(span, format!("`{name}` is a method: write `x.{name}(...)`")))
        }
        _ => Err(unknown(c, name, &FUNCTIONS, span)),
    }
}
