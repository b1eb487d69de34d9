//! Human durations in blueprints: `250ms`, `30s`, `5m`, `2h`, `1d`, or combinations like `1m30s`.

/// Parses a duration into milliseconds. Returns `None` on anything it does not understand.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: u64 = s[start..i].parse().ok()?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult: u64 = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(total)
}

/// Renders milliseconds the way a person would write them (`1m30s`, `250ms`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0ms".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let s = ms as f64 / 1000.0;
        return if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{s:.2}s")
        };
    }
    let total_s = ms / 1000;
    let (h, m, s) = (total_s / 3600, (total_s % 3600) / 60, total_s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("30s"), Some(30_000));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("1d"), Some(86_400_000));
        assert_eq!(parse_duration_ms(""), None);
        assert_eq!(parse_duration_ms("10"), None);
        assert_eq!(parse_duration_ms("ten s"), None);
        assert_eq!(parse_duration_ms("5y"), None);
    }

    #[test]
    fn formats_round_trip_readably() {
        assert_eq!(format_duration_ms(250), "250ms");
        assert_eq!(format_duration_ms(1500), "1.50s");
        assert_eq!(format_duration_ms(90_000), "1m30s");
    }
}
