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

/// Query-string and form parameters whose values are credentials, masked by default wherever
/// they appear in a string (URLs, paths, bodies): `?access_token=...&x=1` keeps `x`.
pub const REDACTED_PARAMETERS: [&str; 22] = [
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "auth_token",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "session",
    "sessionid",
    "session_id",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
];

/// What to mask: header names (the defaults plus configured ones) and value patterns.
#[derive(Debug, Clone)]
pub struct Redactor {
    headers: Vec<String>,
    patterns: Vec<Regex>,
    /// Built-in credential patterns and what keeps their context (`$1` is the name part).
    credentials: Vec<(Regex, &'static str)>,
}

/// The built-in credential patterns: credential parameters in query strings and forms, and
/// the same names as JSON keys, and the password of `scheme://user:password@host`.
fn credential_patterns() -> Vec<(Regex, &'static str)> {
    let names = REDACTED_PARAMETERS
        .iter()
        .map(|n| regex::escape(n))
        .collect::<Vec<_>>()
        .join("|");
    let mut out = Vec::new();
    // Compiled from constants: an error here is a bug, and masking what it can still helps.
    if let Ok(r) = Regex::new(&format!(r#"(?i)((?:^|[?&;\s"'])(?:{names})=)[^&;#\s"']+"#)) {
        out.push((r, "${1}[REDACTED]"));
    }
    // The same names as JSON keys with string values, in bodies: `"password": "..."`.
    if let Ok(r) = Regex::new(&format!(r#"(?i)("(?:{names})"\s*:\s*")[^"]*"#)) {
        out.push((r, "${1}[REDACTED]"));
    }
    if let Ok(r) = Regex::new(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@") {
        out.push((r, "${1}[REDACTED]@"));
    }
    out
}

impl Default for Redactor {
    fn default() -> Self {
        Self {
            headers: REDACTED_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            patterns: Vec::new(),
            credentials: credential_patterns(),
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
                for (p, keep) in &self.credentials {
                    if p.is_match(s) {
                        *s = p.replace_all(s, *keep).into_owned();
                    }
                }
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

    #[test]
    fn credentials_in_urls_and_query_strings_are_masked_by_default() {
        let mut v = json!({
            "path": "/api/v1/orders?access_token=eyJhbGci.x.y&page=2",
            "url": "https://shop.test/cb?code=1&client_secret=s3cr3t;sig=abc",
            "dsn": "postgres://app:hunter2@db:5432/shop",
            "body": "user=ann&password=pa55&remember=1",
            "plain": "/api/v1/orders?page=2&tokens_left=3",
            "json": r#"{"user": "ann", "password": "pa55", "api_key":"k-1"}"#,
        });
        redact(&mut v);
        assert_eq!(v["path"], "/api/v1/orders?access_token=[REDACTED]&page=2");
        assert_eq!(
            v["url"],
            "https://shop.test/cb?code=1&client_secret=[REDACTED];sig=[REDACTED]"
        );
        assert_eq!(v["dsn"], "postgres://app:[REDACTED]@db:5432/shop");
        assert_eq!(v["body"], "user=ann&password=[REDACTED]&remember=1");
        assert_eq!(v["plain"], "/api/v1/orders?page=2&tokens_left=3");
        assert_eq!(
            v["json"],
            r#"{"user": "ann", "password": "[REDACTED]", "api_key":"[REDACTED]"}"#
        );
    }
}
