//! Recursive descent over CEL's grammar, with the legacy words slotted in where a person
//! would expect them:
//!
//! ```text
//! Expr      = Or [ "?" Or ":" Expr ]
//! Or        = And { ("||" | "or") And }
//! And       = Not { ("&&" | "and") Not }
//! Not       = "not" Not | Relation                    (legacy; looser than comparisons)
//! Relation  = Add { RelOp Add }
//! RelOp     = "==" "!=" "<" "<=" ">" ">=" "in" | contains startsWith endsWith matches (infix)
//! Add       = Mul { ("+" | "-") Mul }
//! Mul       = Unary { ("*" | "/" | "%") Unary }
//! Unary     = "!" Unary | "-" Unary | Member
//! Member    = Primary { "." IDENT [ "(" args ")" ] | "[" Expr "]" }
//! Primary   = IDENT [ "(" args ")" ] | "(" Expr ")" | "[" args "]" | literal
//! ```

use crate::{
    ast::{BinaryOp, Expr, ExprKind, Literal, UnaryOp},
    error::{Detail, KflError, Result, Span},
    lexer::{Tok, tokenize},
};

/// Deepest nesting accepted; deeper filters are refused rather than overflowing the stack.
const MAX_DEPTH: usize = 100;

/// The legacy infix string predicates, which become method calls.
const INFIX_METHODS: [&str; 4] = ["contains", "startsWith", "endsWith", "matches"];

/// Parses a filter; `Ok(None)` for an empty (or blank) one, which selects every row.
pub fn parse(src: &str) -> Result<Option<Expr>> {
    let toks = tokenize(src)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if let Some((t, span)) = p.toks.get(p.pos) {
        let hint = match t {
            Tok::Ident(_) | Tok::Str(_) | Tok::Int(_) => {
                " (join conditions with `&&`/`and` or `||`/`or`)"
            }
            Tok::Op(")") => " (unbalanced parenthesis)",
            _ => "",
        };
        return Err(KflError::Parse(Detail::new(
            src,
            *span,
            format!("unexpected {t} after a complete expression{hint}"),
        )));
    }
    Ok(Some(e))
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, Span)>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|(t, _)| t)
    }

    fn span(&self) -> Span {
        match self.toks.get(self.pos) {
            Some((_, s)) => *s,
            None => Span::new(self.src.len(), self.src.len()),
        }
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == w)
    }

    fn error(&self, message: String) -> KflError {
        KflError::Parse(Detail::new(self.src, self.span(), message))
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(t) => format!("found {t}"),
            None => "the filter ends".to_owned(),
        }
    }

    fn expect_op(&mut self, op: &str, context: &str) -> Result<Span> {
        if self.is_op(op) {
            let s = self.span();
            self.pos += 1;
            Ok(s)
        } else {
            Err(self.error(format!("expected `{op}` {context}, but {}", self.found())))
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!(
                "the filter is nested more than {MAX_DEPTH} levels deep; simplify it"
            )));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr> {
        self.enter()?;
        let cond = self.or()?;
        let out = if self.is_op("?") {
            self.pos += 1;
            let then = self.or()?;
            self.expect_op(":", "in a conditional `c ? a : b`")?;
            let otherwise = self.expr()?;
            let span = cond.span.join(otherwise.span);
            Expr::new(
                ExprKind::Ternary(Box::new(cond), Box::new(then), Box::new(otherwise)),
                span,
            )
        } else {
            cond
        };
        self.depth -= 1;
        Ok(out)
    }

    fn binary(op: BinaryOp, l: Expr, r: Expr) -> Expr {
        let span = l.span.join(r.span);
        Expr::new(ExprKind::Binary(op, Box::new(l), Box::new(r)), span)
    }

    fn or(&mut self) -> Result<Expr> {
        let mut l = self.and()?;
        while self.is_op("||") || self.is_word("or") {
            self.pos += 1;
            let r = self.and()?;
            l = Self::binary(BinaryOp::Or, l, r);
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr> {
        let mut l = self.not()?;
        while self.is_op("&&") || self.is_word("and") {
            self.pos += 1;
            let r = self.not()?;
            l = Self::binary(BinaryOp::And, l, r);
        }
        Ok(l)
    }

    fn not(&mut self) -> Result<Expr> {
        if self.is_word("not") {
            let start = self.span();
            self.pos += 1;
            self.enter()?;
            let e = self.not()?;
            self.depth -= 1;
            let span = start.join(e.span);
            return Ok(Expr::new(ExprKind::Unary(UnaryOp::Not, Box::new(e)), span));
        }
        self.relation()
    }

    fn relation(&mut self) -> Result<Expr> {
        let mut l = self.addition()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op("==")) => BinaryOp::Eq,
                Some(Tok::Op("!=")) => BinaryOp::Ne,
                Some(Tok::Op("<")) => BinaryOp::Lt,
                Some(Tok::Op("<=")) => BinaryOp::Le,
                Some(Tok::Op(">")) => BinaryOp::Gt,
                Some(Tok::Op(">=")) => BinaryOp::Ge,
                Some(Tok::Ident(w)) if w == "in" => BinaryOp::In,
                Some(Tok::Ident(w)) if INFIX_METHODS.contains(&w.as_str()) => {
                    let name = w.clone();
                    self.pos += 1;
                    let arg = self.addition()?;
                    let span = l.span.join(arg.span);
                    l = Expr::new(
                        ExprKind::Call {
                            target: Some(Box::new(l)),
                            name,
                            args: vec![arg],
                        },
                        span,
                    );
                    continue;
                }
                _ => return Ok(l),
            };
            self.pos += 1;
            let r = self.addition()?;
            l = Self::binary(op, l, r);
        }
    }

    fn addition(&mut self) -> Result<Expr> {
        let mut l = self.multiplication()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op("+")) => BinaryOp::Add,
                Some(Tok::Op("-")) => BinaryOp::Sub,
                _ => return Ok(l),
            };
            self.pos += 1;
            let r = self.multiplication()?;
            l = Self::binary(op, l, r);
        }
    }

    fn multiplication(&mut self) -> Result<Expr> {
        let mut l = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op("*")) => BinaryOp::Mul,
                Some(Tok::Op("/")) => BinaryOp::Div,
                Some(Tok::Op("%")) => BinaryOp::Rem,
                _ => return Ok(l),
            };
            self.pos += 1;
            let r = self.unary()?;
            l = Self::binary(op, l, r);
        }
    }

    fn unary(&mut self) -> Result<Expr> {
        let start = self.span();
        let op = if self.is_op("!") {
            UnaryOp::Not
        } else if self.is_op("-") {
            // A minus written against a number is part of the literal, so that the most
            // negative integer can be written and printing round-trips.
            match self.peek_at(1).cloned() {
                Some(Tok::Int(i)) => {
                    let span = start.join(self.toks[self.pos + 1].1);
                    self.pos += 2;
                    return self.member(Expr::new(ExprKind::Lit(Literal::Int(-i)), span));
                }
                Some(Tok::Double(d)) => {
                    let span = start.join(self.toks[self.pos + 1].1);
                    self.pos += 2;
                    return self.member(Expr::new(ExprKind::Lit(Literal::Double(-d)), span));
                }
                _ => UnaryOp::Neg,
            }
        } else {
            let p = self.primary()?;
            return self.member(p);
        };
        self.pos += 1;
        self.enter()?;
        let e = self.unary()?;
        self.depth -= 1;
        let span = start.join(e.span);
        Ok(Expr::new(ExprKind::Unary(op, Box::new(e)), span))
    }

    fn args(&mut self, close: &str, context: &str) -> Result<(Vec<Expr>, Span)> {
        let mut args = Vec::new();
        loop {
            if self.is_op(close) {
                break;
            }
            args.push(self.expr()?);
            if self.is_op(",") {
                self.pos += 1;
                continue;
            }
            break;
        }
        let end = self.expect_op(close, context)?;
        Ok((args, end))
    }

    fn member(&mut self, mut e: Expr) -> Result<Expr> {
        loop {
            if self.is_op(".") {
                self.pos += 1;
                let name_span = self.span();
                let Some(Tok::Ident(name)) = self.peek().cloned() else {
                    return Err(self.error(format!(
                        "expected a field or method name after `.`, but {}",
                        self.found()
                    )));
                };
                self.pos += 1;
                if self.is_op("(") {
                    self.pos += 1;
                    let (args, end) =
                        self.args(")", &format!("to close the arguments of `{name}(`"))?;
                    let span = e.span.join(end);
                    e = Expr::new(
                        ExprKind::Call {
                            target: Some(Box::new(e)),
                            name,
                            args,
                        },
                        span,
                    );
                } else if let ExprKind::Ident(base) = &mut e.kind {
                    base.push('.');
                    base.push_str(&name);
                    e.span = e.span.join(name_span);
                } else {
                    return Err(KflError::Unsupported(Detail::new(
                        self.src,
                        name_span,
                        format!(
                            "`.{name}` can only follow a field name; use a map index `[\"{name}\"]` for map keys"
                        ),
                    )));
                }
            } else if self.is_op("[") {
                self.pos += 1;
                self.enter()?;
                let index = self.expr()?;
                self.depth -= 1;
                let end = self.expect_op("]", "to close the index")?;
                let span = e.span.join(end);
                e = Expr::new(ExprKind::Index(Box::new(e), Box::new(index)), span);
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr> {
        let span = self.span();
        let Some(tok) = self.peek().cloned() else {
            return Err(self.error("expected a value, but the filter ends".to_owned()));
        };
        let lit = |l| Ok(Expr::new(ExprKind::Lit(l), span));
        match tok {
            Tok::Int(i) => {
                self.pos += 1;
                lit(Literal::Int(i))
            }
            Tok::Double(d) => {
                self.pos += 1;
                lit(Literal::Double(d))
            }
            Tok::Str(s) => {
                self.pos += 1;
                lit(Literal::Str(s))
            }
            Tok::Bool(b) => {
                self.pos += 1;
                lit(Literal::Bool(b))
            }
            Tok::Null => {
                self.pos += 1;
                lit(Literal::Null)
            }
            Tok::Ident(name) => {
                if matches!(name.as_str(), "and" | "or" | "in")
                    || INFIX_METHODS.contains(&name.as_str()) && !self.is_call_next()
                {
                    return Err(
                        self.error(format!("expected a value, but found the operator `{name}`"))
                    );
                }
                self.pos += 1;
                if self.is_op("(") {
                    self.pos += 1;
                    let (args, end) =
                        self.args(")", &format!("to close the arguments of `{name}(`"))?;
                    return Ok(Expr::new(
                        ExprKind::Call {
                            target: None,
                            name,
                            args,
                        },
                        span.join(end),
                    ));
                }
                Ok(Expr::new(ExprKind::Ident(name), span))
            }
            Tok::Op("(") => {
                self.pos += 1;
                self.enter()?;
                let mut e = self.expr()?;
                self.depth -= 1;
                let end = self.expect_op(")", "to close the parenthesis")?;
                e.span = span.join(end);
                Ok(e)
            }
            Tok::Op("[") => {
                self.pos += 1;
                self.enter()?;
                let (items, end) = self.args("]", "to close the list")?;
                self.depth -= 1;
                Ok(Expr::new(ExprKind::List(items), span.join(end)))
            }
            Tok::Op("{") => Err(KflError::Unsupported(Detail::new(
                self.src,
                span,
                "map literals are not supported; test keys with `\"k\" in map` or `map[\"k\"]`",
            ))),
            Tok::Op(o) => Err(self.error(format!("expected a value, but found `{o}`"))),
        }
    }

    fn is_call_next(&self) -> bool {
        matches!(self.peek_at(1), Some(Tok::Op("(")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        match parse(s) {
            Ok(Some(e)) => e.to_string(),
            Ok(None) => "<all>".into(),
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn precedence_follows_cel() {
        assert_eq!(canon("a || b && c"), "(a || (b && c))");
        assert_eq!(canon("!a && b"), "(!(a) && b)");
        assert_eq!(
            canon("a == 1 && b < 2 + 3 * 4"),
            "((a == 1) && (b < (2 + (3 * 4))))"
        );
        assert_eq!(canon("a ? b : c ? d : e"), "(a ? b : (c ? d : e))");
        assert_eq!(canon("x in [1, 2] || y"), "((x in [1, 2]) || y)");
    }

    #[test]
    fn legacy_words() {
        assert_eq!(
            canon("request.path==\"/api/v1/checkout\" and response.status==503"),
            "((request.path == \"/api/v1/checkout\") && (response.status == 503))"
        );
        assert_eq!(
            canon("src.pod contains \"frontend\""),
            "(src.pod).contains(\"frontend\")"
        );
        assert_eq!(canon("not a == 1 and b or c"), "((!((a == 1)) && b) || c)");
        assert_eq!(
            canon("!request.path.startsWith(\"/health\") and http"),
            "(!((request.path).startsWith(\"/health\")) && http)"
        );
    }

    #[test]
    fn members_and_calls() {
        assert_eq!(
            canon("request.headers[\"x-id\"].contains('a')"),
            "((request.headers)[\"x-id\"]).contains(\"a\")"
        );
        assert_eq!(canon("map_get(m, \"k\", \"\")"), "map_get(m, \"k\", \"\")");
        assert_eq!(canon("size(x) > 0"), "(size(x) > 0)");
        assert_eq!(canon("-5 < -x"), "((-5) < -(x))");
    }

    #[test]
    fn empty_is_all_rows() {
        assert_eq!(canon("   "), "<all>");
        assert_eq!(canon("// nothing"), "<all>");
    }

    #[test]
    fn errors_are_located_and_helpful() {
        let e = canon("status_code == ");
        assert!(e.contains("expected a value, but the filter ends"), "{e}");
        let e = canon("(a == 1");
        assert!(e.contains("expected `)` to close the parenthesis"), "{e}");
        let e = canon("a == 1 b == 2");
        assert!(e.contains("join conditions"), "{e}");
        let e = canon("a == 1 and and b");
        assert!(e.contains("found the operator `and`"), "{e}");
        let deep = format!("{}a{}", "(".repeat(500), ")".repeat(500));
        assert!(canon(&deep).contains("nested more than"));
        let deep = format!("{}a", "!".repeat(5000));
        assert!(canon(&deep).contains("nested more than"));
    }
}
