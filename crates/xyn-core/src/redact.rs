//! Secret redaction: values that were resolved from secrets never leave a step in clear.

use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

/// Replaces every occurrence of any of `secrets` inside the strings of `v` (keys included).
/// Secrets shorter than 4 characters are ignored: replacing them would shred ordinary text.
pub fn redact_value(v: &mut Value, secrets: &[String]) {
    if secrets.iter().all(|s| s.len() < 4) {
        return;
    }
    match v {
        Value::String(s) => {
            if let Some(r) = redact_str(s, secrets) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, secrets)),
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if let Some(mut x) = m.remove(&k) {
                    redact_value(&mut x, secrets);
                    let k2 = redact_str(&k, secrets).unwrap_or(k);
                    m.insert(k2, x);
                }
            }
        }
        _ => {}
    }
}

/// Returns the redacted string, or `None` when nothing had to change.
pub fn redact_str(s: &str, secrets: &[String]) -> Option<String> {
    let mut out: Option<String> = None;
    for sec in secrets.iter().filter(|s| s.len() >= 4) {
        let cur = out.as_deref().unwrap_or(s);
        if cur.contains(sec.as_str()) {
            out = Some(cur.replace(sec.as_str(), REDACTED));
        }
    }
    out
}

/// Replaces every occurrence of each secret value by `[redacted:<label>]` (the label is the
/// secret's path), in the strings of `v` and its keys. Values shorter than 4 characters are
/// ignored, as in [`redact_value`].
pub fn redact_labelled(v: &mut Value, secrets: &[(String, String)]) {
    match v {
        Value::String(s) => {
            if let Some(r) = redact_labelled_str(s, secrets) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact_labelled(x, secrets)),
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if let Some(mut x) = m.remove(&k) {
                    redact_labelled(&mut x, secrets);
                    let k2 = redact_labelled_str(&k, secrets).unwrap_or(k);
                    m.insert(k2, x);
                }
            }
        }
        _ => {}
    }
}

/// The string with every labelled secret replaced, or `None` when nothing had to change.
pub fn redact_labelled_str(s: &str, secrets: &[(String, String)]) -> Option<String> {
    let mut out: Option<String> = None;
    for (label, sec) in secrets.iter().filter(|(_, s)| s.len() >= 4) {
        let cur = out.as_deref().unwrap_or(s);
        if cur.contains(sec.as_str()) {
            out = Some(cur.replace(sec.as_str(), &format!("[redacted:{label}]")));
        }
    }
    out
}

/// Header names whose values are always redacted when recorded.
pub fn is_sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "set-cookie"
            | "x-api-key"
            | "api-key"
            | "x-auth-token"
    ) || n.contains("token")
        || n.contains("secret")
        || n.contains("password")
}

/// The environment variable a secret named `name` is read from (the engine's `{{secrets.x}}`,
/// guests' bound secrets and the secret store's environment backend): every character that is
/// not an ASCII letter or digit becomes `_`, letters are upper-cased, under `XYN_SECRET_`.
/// `sys/prod/providers/openai` → `XYN_SECRET_SYS_PROD_PROVIDERS_OPENAI`.
pub fn secret_env_var(name: &str) -> String {
    let var: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("XYN_SECRET_{var}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_nested_strings_and_keys() {
        let mut v = json!({"a": "Bearer abcd1234", "b": ["x abcd1234 y"], "abcd1234": 1, "n": 5});
        redact_value(&mut v, &["abcd1234".into()]);
        assert_eq!(
            v,
            json!({"a": "Bearer [REDACTED]", "b": ["x [REDACTED] y"], "[REDACTED]": 1, "n": 5})
        );
    }

    #[test]
    fn labelled_redaction_names_the_path() {
        let mut v = json!({"echo": "key=sk-live-123 and sk-live-123", "sk-live-123": ["x"]});
        redact_labelled(
            &mut v,
            &[("sys/p/providers/openai".into(), "sk-live-123".into())],
        );
        assert_eq!(
            v,
            json!({"echo": "key=[redacted:sys/p/providers/openai] and [redacted:sys/p/providers/openai]",
                   "[redacted:sys/p/providers/openai]": ["x"]})
        );
    }

    #[test]
    fn ignores_tiny_secrets() {
        let mut v = json!("a b c");
        redact_value(&mut v, &["a".into()]);
        assert_eq!(v, json!("a b c"));
    }
}
