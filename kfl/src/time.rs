//! Reading `timestamp("…")` and `duration("…")` arguments.

/// Now, ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// An RFC 3339 time (`2026-11-24T10:00:00Z`, `2026-11-24T11:00:00.5+01:00`) as ns since the
/// epoch, UTC.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).map_err(|e| {
        format!("`{s}` is not an RFC 3339 time ({e}); write e.g. \"2026-11-24T10:00:00Z\"")
    })?;
    t.timestamp_nanos_opt()
        .ok_or_else(|| format!("`{s}` is outside the years 1678–2262"))
}

/// A Go/CEL duration (`5m`, `1h30m`, `1.5s`, `250ms`, `-10s`) as ns.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = |why: &str| {
        format!(
            "`{s}` is not a duration ({why}); write e.g. \"5m\", \"1h30m\", \"250ms\" (units h, m, s, ms, us, ns)"
        )
    };
    let mut rest = s.trim();
    let negative = rest.starts_with('-');
    rest = rest.trim_start_matches(['-', '+']);
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if rest == "0" {
        return Ok(0);
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("a number without a unit"))?;
        if num_len == 0 {
            return Err(bad("expected a number"));
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad("bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" | "μs" => 1e3,
            "ns" => 1.0,
            other => return Err(bad(&format!("unknown unit `{other}`"))),
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    if total > i64::MAX as f64 {
        return Err(bad("too long"));
    }
    let ns = total.round() as i64;
    Ok(if negative { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(300_000_000_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("-10us"), Ok(-10_000));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert_eq!(
            parse_timestamp("2026-11-24T11:00:00+01:00"),
            parse_timestamp("2026-11-24T10:00:00Z")
        );
        assert!(parse_timestamp("yesterday").is_err());
    }
}
