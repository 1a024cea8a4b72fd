//! Masking secrets before they reach a model: values of credential headers, wherever they
//! appear in a result (header maps of calls, nested objects).

use serde_json::Value;

/// Header names whose values are masked.
pub const REDACTED_HEADERS: [&str; 5] = [
    "authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "proxy-authorization",
];

/// Replaces the value of every credential header key in `value` with `[REDACTED]`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if REDACTED_HEADERS.iter().any(|h| k.eq_ignore_ascii_case(h)) && !v.is_null() {
                    *v = Value::String("[REDACTED]".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn credentials_are_masked_everywhere() {
        let mut v = json!({"calls": [{"request.headers": {"Authorization": "Bearer x", "accept": "*/*"},
                                        "response.headers": {"set-cookie": "s=1"}}]});
        super::redact(&mut v);
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
}
