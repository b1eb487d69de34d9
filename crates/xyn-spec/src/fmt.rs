//! Canonical formatting: keys sorted, two-space indent, one trailing newline; examples one
//! compact object a line with sorted keys.

use serde_json::{Map, Value};

/// Sort every object's keys recursively.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(x) = m.get(k) {
                    out.insert(k.clone(), canonical(x));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The canonical text of a spec file.
pub fn format_spec(text: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut s = serde_json::to_string_pretty(&canonical(&v)).map_err(|e| e.to_string())?;
    s.push('\n');
    Ok(s)
}

/// The canonical text of an examples file (blank lines dropped).
pub fn format_examples(text: &str) -> Result<String, String> {
    let mut s = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", i + 1))?;
        s.push_str(&serde_json::to_string(&canonical(&v)).map_err(|e| e.to_string())?);
        s.push('\n');
    }
    Ok(s)
}
