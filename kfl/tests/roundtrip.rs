//! Property: printing any syntax tree as KFL and parsing it back gives the same tree.

use proptest::prelude::*;
use remora_kfl::{
    Span,
    ast::{BinaryOp, Expr, ExprKind, Literal, UnaryOp},
    parse,
};

fn e(kind: ExprKind) -> Expr {
    Expr::new(kind, Span::default())
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        prop::sample::select(vec![
            "http",
            "status_code",
            "src.pod.name",
            "request.headers",
            "dns_questions",
            "x",
            "response.status",
            "_a1",
        ])
        .prop_map(|n| e(ExprKind::Ident(n.to_owned()))),
        (i64::MIN + 1..i64::MAX).prop_map(|i| e(ExprKind::Lit(Literal::Int(i)))),
        any::<bool>().prop_map(|b| e(ExprKind::Lit(Literal::Bool(b)))),
        (-1e12f64..1e12).prop_map(|d| e(ExprKind::Lit(Literal::Double(d)))),
        any::<String>().prop_map(|s| e(ExprKind::Lit(Literal::Str(s)))),
        Just(e(ExprKind::Lit(Literal::Null))),
    ]
}

fn binary_op() -> impl Strategy<Value = BinaryOp> {
    prop::sample::select(vec![
        BinaryOp::Or,
        BinaryOp::And,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::In,
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Rem,
    ])
}

fn tree() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 64, 4, |inner| {
        let name = prop::sample::select(vec!["contains", "startsWith", "size", "map_get", "f"]);
        prop_oneof![
            (
                prop::sample::select(vec![UnaryOp::Not, UnaryOp::Neg]),
                inner.clone()
            )
                .prop_map(|(op, x)| e(ExprKind::Unary(op, Box::new(x)))),
            (binary_op(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| e(ExprKind::Binary(
                op,
                Box::new(l),
                Box::new(r)
            ))),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, t, f)| e(ExprKind::Ternary(Box::new(c), Box::new(t), Box::new(f)))),
            (
                prop::option::of(inner.clone()),
                name,
                prop::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(target, name, args)| e(ExprKind::Call {
                    target: target.map(Box::new),
                    name: name.to_owned(),
                    args,
                })),
            (inner.clone(), inner.clone())
                .prop_map(|(t, i)| e(ExprKind::Index(Box::new(t), Box::new(i)))),
            prop::collection::vec(inner, 0..4).prop_map(|items| e(ExprKind::List(items))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_gives_the_same_tree(ast in tree()) {
        let text = ast.to_string();
        let parsed = parse(&text);
        prop_assert!(parsed.is_ok(), "{text} does not parse: {parsed:?}");
        let parsed = parsed.ok().flatten().map(|p| p.without_spans());
        prop_assert_eq!(parsed, Some(ast), "printed as {}", text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
        let _ = parse(&text);
    }
}
