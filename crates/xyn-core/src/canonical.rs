//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace,
//! strings and numbers exactly as `serde_json` renders them.
//!
//! Written by hand (about 40 lines) because the hash chain must not depend on whether some
//! dependency turned on `serde_json/preserve_order`, which changes map iteration order.

use serde_json::Value;

/// Appends the canonical rendering of `v` to `out`.
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
    }
}

/// The canonical rendering of `v` as bytes.
pub fn to_canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(v, &mut out);
    out
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is already deterministic (RFC 8259 minimal escaping).
    match serde_json::to_writer(&mut *out, s) {
        Ok(()) => {}
        Err(_) => out.extend_from_slice(b"\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"d": [1, 2, {"z": null, "y": true}], "c": "x\n"}});
        assert_eq!(
            String::from_utf8(to_canonical(&v)).unwrap(),
            r#"{"a":{"c":"x\n","d":[1,2,{"y":true,"z":null}]},"b":1}"#
        );
    }

    #[test]
    fn reparsing_gives_the_same_bytes() {
        let v = json!({"f": 1.5, "n": -3, "u": 18446744073709551615u64, "s": "é\u{1}"});
        let a = to_canonical(&v);
        let back: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(a, to_canonical(&back));
    }
}
