//! Event-name patterns for triggers.
//!
//! Names are dot-separated segments. In a pattern, `*` matches any run of characters inside
//! one segment (`checkmk.*` matches `checkmk.alert`, `check*.alert` matches `checkmk.alert`),
//! and a final `**` segment matches one or more remaining segments (`checkmk.**` matches
//! `checkmk.alert` and `checkmk.alert.crit`). Anything else matches itself.
//! Hand-written: NATS-style segment semantics are not what general glob crates implement.

/// True when `pattern` contains a wildcard.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains('*')
}

/// True when `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut p = pattern.split('.');
    let mut n = name.split('.');
    loop {
        match (p.next(), n.next()) {
            (Some("**"), Some(_)) => return p.next().is_none(),
            (Some(ps), Some(ns)) => {
                if !segment_matches(ps.as_bytes(), ns.as_bytes()) {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn segment_matches(p: &[u8], s: &[u8]) -> bool {
    // Classic iterative wildcard match with backtracking on the last '*'.
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Checks the syntax of a trigger pattern; returns why it is wrong.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("must not be empty".into());
    }
    let segs: Vec<&str> = pattern.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        if seg.is_empty() {
            return Err(format!("has an empty segment in {pattern:?}"));
        }
        if *seg == "**" {
            if i + 1 != segs.len() {
                return Err("'**' may only be the last segment".into());
            }
            continue;
        }
        if seg.contains("**") {
            return Err("'**' must be a whole segment".into());
        }
        if !seg.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'*'
        }) {
            return Err(format!(
                "may contain only lowercase letters, digits, '_', '-', '*' and dots (got {pattern:?})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_wildcards() {
        assert!(matches("checkmk.alert", "checkmk.alert"));
        assert!(!matches("checkmk.alert", "checkmk.alerts"));
        assert!(matches("checkmk.*", "checkmk.alert"));
        assert!(!matches("checkmk.*", "checkmk.alert.crit"));
        assert!(!matches("checkmk.*", "checkmk"));
        assert!(matches("check*.alert", "checkmk.alert"));
        assert!(matches("*.alert", "zabbix.alert"));
        assert!(matches("a*b*c.x", "aXXbYYc.x"));
        assert!(!matches("a*b*c.x", "aXXbYY.x"));
    }

    #[test]
    fn tail_wildcard() {
        assert!(matches("checkmk.**", "checkmk.alert"));
        assert!(matches("checkmk.**", "checkmk.alert.crit"));
        assert!(!matches("checkmk.**", "checkmk"));
        assert!(!matches("checkmk.**", "zabbix.alert"));
    }

    #[test]
    fn validation() {
        assert!(validate_pattern("checkmk.*").is_ok());
        assert!(validate_pattern("checkmk.**").is_ok());
        assert!(validate_pattern("a.**.b").is_err());
        assert!(validate_pattern("a..b").is_err());
        assert!(validate_pattern("A.b").is_err());
        assert!(validate_pattern("").is_err());
    }
}
