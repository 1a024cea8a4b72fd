//! Masking secrets before they reach a model: values of credential headers wherever they appear
//! in a result, and text matching configured patterns (bodies, URLs, anything) in every string.

use regex::Regex;
use serde_json::Value;

/// Header names whose values are always masked.
pub const REDACTED_HEADERS: [&str; 5] = [
    "authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "proxy-authorization",
];

const MASK: &str = "[REDACTED]";

/// What to mask: header names (the defaults plus configured ones) and value patterns.
#[derive(Debug, Clone)]
pub struct Redactor {
    headers: Vec<String>,
    patterns: Vec<Regex>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self {
            headers: REDACTED_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            patterns: Vec::new(),
        }
    }
}

impl Redactor {
    /// The defaults plus `headers` (names, any case) and `patterns` (RE2 syntax); a bad pattern is
    /// an error naming it.
    pub fn new(headers: &[String], patterns: &[String]) -> Result<Self, String> {
        let mut r = Self::default();
        r.headers
            .extend(headers.iter().map(|h| h.to_ascii_lowercase()));
        for p in patterns {
            r.patterns
                .push(Regex::new(p).map_err(|e| format!("redaction pattern `{p}`: {e}"))?);
        }
        Ok(r)
    }

    /// Masks `value` in place.
    pub fn apply(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if self.headers.iter().any(|h| k.eq_ignore_ascii_case(h)) && !v.is_null() {
                        *v = Value::String(MASK.into());
                    } else {
                        self.apply(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.apply(v)),
            Value::String(s) => {
                for p in &self.patterns {
                    if p.is_match(s) {
                        *s = p.replace_all(s, MASK).into_owned();
                    }
                }
            }
            _ => {}
        }
    }
}

/// Masks the default credential headers in `value`.
pub fn redact(value: &mut Value) {
    Redactor::default().apply(value);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn credentials_are_masked_everywhere() {
        let mut v = json!({"calls": [{"request.headers": {"Authorization": "Bearer x", "accept": "*/*"},
                                        "response.headers": {"set-cookie": "s=1"}}]});
        redact(&mut v);
        assert_eq!(
            v["calls"][0]["request.headers"]["Authorization"],
            "[REDACTED]"
        );
        assert_eq!(v["calls"][0]["request.headers"]["accept"], "*/*");
        assert_eq!(
            v["calls"][0]["response.headers"]["set-cookie"],
            "[REDACTED]"
        );
    }

    #[test]
    fn configured_headers_and_patterns() {
        let r = Redactor::new(&["X-Session".into()], &[r"card=\d+".into()]).unwrap_or_default();
        let mut v = json!({"request.headers": {"x-session": "abc"}, "url": "/pay?card=4111&x=1"});
        r.apply(&mut v);
        assert_eq!(v["request.headers"]["x-session"], "[REDACTED]");
        assert_eq!(v["url"], "/pay?[REDACTED]&x=1");
        assert!(Redactor::new(&[], &["(".into()]).is_err());
    }
}
