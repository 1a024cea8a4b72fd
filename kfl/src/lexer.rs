//! Tokens of KFL: CEL's lexical grammar (strings with all its escapes, raw and triple-quoted
//! strings, hex and unsigned integers, doubles) plus nothing else; the legacy keywords `and`,
//! `or`, `not`, `contains`, ... are identifiers that the parser reads by position.

use crate::error::{Detail, KflError, Result, Span};

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name (`status_code`, `and`, `contains`, ...).
    Ident(String),
    /// An integer (also `u`-suffixed ones, which KFL treats as integers).
    Int(i64),
    /// A floating point number.
    Double(f64),
    /// A string (or bytes) literal, escapes resolved.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// Punctuation and operators: `&& || ! == != < <= > >= + - * / % ? : . , ( ) [ ] { }`.
    Op(&'static str),
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Int(i) => write!(f, "{i}"),
            Tok::Double(d) => write!(f, "{d}"),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Bool(b) => write!(f, "{b}"),
            Tok::Null => f.write_str("null"),
            Tok::Op(o) => write!(f, "`{o}`"),
        }
    }
}

const OPS: [&str; 24] = [
    "&&", "||", "==", "!=", "<=", ">=", "!", "<", ">", "+", "-", "*", "/", "%", "?", ":", ".", ",",
    "(", ")", "[", "]", "{", "}",
];

/// Splits `src` into tokens with their spans.
pub fn tokenize(src: &str) -> Result<Vec<(Tok, Span)>> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // CEL line comments.
        if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(b.len(), |n| i + n);
            continue;
        }
        let start = i;
        // String prefixes: r / R (raw), b / B (bytes), in either order.
        let mut j = i;
        let (mut raw, mut bytes) = (false, false);
        while j < b.len() && j - i < 2 {
            match b[j] {
                b'r' | b'R' if !raw => raw = true,
                b'b' | b'B' if !bytes => bytes = true,
                _ => break,
            }
            j += 1;
        }
        if j < b.len() && (b[j] == b'"' || b[j] == b'\'') && (raw || bytes || j == i) {
            let (s, end) = lex_string(src, start, j, raw)?;
            out.push((Tok::Str(s), Span::new(start, end)));
            i = end;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &src[start..i];
            let tok = match word {
                "true" => Tok::Bool(true),
                "false" => Tok::Bool(false),
                "null" => Tok::Null,
                _ => Tok::Ident(word.to_owned()),
            };
            out.push((tok, Span::new(start, i)));
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let (tok, end) = lex_number(src, start)?;
            out.push((tok, Span::new(start, end)));
            i = end;
            continue;
        }
        if let Some(op) = OPS.iter().find(|op| src[i..].starts_with(**op)) {
            i += op.len();
            out.push((Tok::Op(op), Span::new(start, i)));
            continue;
        }
        let ch = src[i..].chars().next().unwrap_or('?');
        let hint = match ch {
            '=' => " (comparison is `==`)",
            '&' => " (logical and is `&&` or `and`)",
            '|' => " (logical or is `||` or `or`)",
            _ => "",
        };
        return Err(KflError::Parse(Detail::new(
            src,
            Span::new(start, start + ch.len_utf8()),
            format!("unexpected character `{ch}`{hint}"),
        )));
    }
    Ok(out)
}

fn lex_number(src: &str, start: usize) -> Result<(Tok, usize)> {
    let b = src.as_bytes();
    let err = |end: usize, msg: &str| {
        KflError::Parse(Detail::new(src, Span::new(start, end), msg.to_owned()))
    };
    let mut i = start;
    if src[i..].starts_with("0x") || src[i..].starts_with("0X") {
        i += 2;
        let digits = i;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        let v = u64::from_str_radix(&src[digits..i], 16)
            .map_err(|_| err(i, "invalid hexadecimal number"))?;
        if i < b.len() && (b[i] == b'u' || b[i] == b'U') {
            i += 1;
        }
        let v = i64::try_from(v).map_err(|_| err(i, "integer out of range (64-bit signed)"))?;
        return Ok((Tok::Int(v), i));
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut double = false;
    if i < b.len() && b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        double = true;
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut k = i + 1;
        if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
            k += 1;
        }
        if k < b.len() && b[k].is_ascii_digit() {
            double = true;
            i = k;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    let text = &src[start..i];
    if double {
        let v: f64 = text.parse().map_err(|_| err(i, "invalid number"))?;
        return Ok((Tok::Double(v), i));
    }
    let v: i64 = text
        .parse()
        .map_err(|_| err(i, "integer out of range (64-bit signed)"))?;
    if i < b.len() && (b[i] == b'u' || b[i] == b'U') {
        i += 1;
    }
    if i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'_') {
        return Err(err(
            i + 1,
            "a number runs into a name; add a space or an operator",
        ));
    }
    Ok((Tok::Int(v), i))
}

/// Lexes a string whose opening quote is at `quote`; returns the value and the end offset.
fn lex_string(src: &str, start: usize, quote: usize, raw: bool) -> Result<(String, usize)> {
    let b = src.as_bytes();
    let q = b[quote];
    let triple = b.get(quote + 1) == Some(&q) && b.get(quote + 2) == Some(&q);
    let delim_len = if triple { 3 } else { 1 };
    let mut i = quote + delim_len;
    let mut out = String::new();
    let unterminated = || {
        KflError::Parse(Detail::new(
            src,
            Span::new(start, src.len()),
            "unterminated string: add the closing quote",
        ))
    };
    loop {
        let Some(ch) = src[i..].chars().next() else {
            return Err(unterminated());
        };
        if triple {
            if b[i] == q && b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q) {
                return Ok((out, i + 3));
            }
        } else if b[i] == q {
            return Ok((out, i + 1));
        } else if ch == '\n' {
            return Err(unterminated());
        }
        if ch == '\\' && !raw {
            let (c, len) = escape(src, i)?;
            out.push(c);
            i += len;
            continue;
        }
        out.push(ch);
        i += ch.len_utf8();
    }
}

/// Reads the escape sequence at `at` (a backslash); returns the character and its length.
fn escape(src: &str, at: usize) -> Result<(char, usize)> {
    let rest = &src[at + 1..];
    let bad = |len: usize, msg: &str| {
        KflError::Parse(Detail::new(
            src,
            Span::new(at, at + 1 + len),
            msg.to_owned(),
        ))
    };
    let Some(c) = rest.chars().next() else {
        return Err(bad(0, "unterminated escape sequence"));
    };
    let simple = match c {
        '\\' => Some('\\'),
        '"' => Some('"'),
        '\'' => Some('\''),
        '`' => Some('`'),
        '?' => Some('?'),
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        _ => None,
    };
    if let Some(s) = simple {
        return Ok((s, 2));
    }
    let (digits, radix, skip) = match c {
        'x' | 'X' => (2, 16, 1),
        'u' => (4, 16, 1),
        'U' => (8, 16, 1),
        '0'..='3' => (3, 8, 0),
        _ => return Err(bad(c.len_utf8(), "unknown escape sequence")),
    };
    let hex = rest.get(skip..skip + digits).unwrap_or("");
    let code = u32::from_str_radix(hex, radix)
        .ok()
        .filter(|_| hex.len() == digits && hex.chars().all(|d| d.is_digit(radix)))
        .ok_or_else(|| bad(skip + digits, "malformed escape sequence"))?;
    let ch = char::from_u32(code).ok_or_else(|| bad(skip + digits, "not a Unicode scalar"))?;
    Ok((ch, 1 + skip + digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s)
            .map(|v| v.into_iter().map(|(t, _)| t).collect())
            .unwrap_or_default()
    }

    #[test]
    fn operators_and_words() {
        assert_eq!(
            toks("a.b>=3&&!c"),
            vec![
                Tok::Ident("a".into()),
                Tok::Op("."),
                Tok::Ident("b".into()),
                Tok::Op(">="),
                Tok::Int(3),
                Tok::Op("&&"),
                Tok::Op("!"),
                Tok::Ident("c".into()),
            ]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(
            toks("0x1F 7u 1.5 2e3 .5"),
            vec![
                Tok::Int(31),
                Tok::Int(7),
                Tok::Double(1.5),
                Tok::Double(2000.0),
                Tok::Double(0.5)
            ]
        );
        assert!(tokenize("99999999999999999999").is_err());
        assert!(tokenize("3abc").is_err());
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            toks(r#""a\"b\n" 'x\x41\u00e9\101' r"\d+" """tri"ple""" b"by""#),
            vec![
                Tok::Str("a\"b\n".into()),
                Tok::Str("xAéA".into()),
                Tok::Str("\\d+".into()),
                Tok::Str("tri\"ple".into()),
                Tok::Str("by".into()),
            ]
        );
        assert!(tokenize(r#""open"#).is_err());
        assert!(tokenize(r#""\q""#).is_err());
        assert!(tokenize(r#""\u12""#).is_err());
    }

    #[test]
    fn single_equals_gets_a_hint() {
        let e = tokenize("a = 1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("comparison is `==`"), "{e}");
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(toks("a // note\n"), vec![Tok::Ident("a".into())]);
    }
}
