//! Seeded generation of inputs from a JSON Schema, and shrinking toward smaller values.
//! The generator is a SplitMix64 stream so a seed reproduces the same cases everywhere.

use serde_json::{Map, Value};

/// A reproducible random stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (self.next_u64() as u128 % span) as i128) as i64
    }
}

/// One input satisfying the (supported subset of the) schema.
pub fn generate(schema: &Value, rng: &mut Rng, depth: usize) -> Value {
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.is_empty()
    {
        return e[rng.range(0, e.len() as i64 - 1) as usize].clone();
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("boolean") => Value::Bool(rng.next_u64() & 1 == 1),
        Some("integer") => {
            let lo = schema
                .get("minimum")
                .and_then(Value::as_i64)
                .unwrap_or(-1000);
            let hi = schema
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(1000);
            Value::from(rng.range(lo, hi))
        }
        Some("number") => {
            let lo = schema
                .get("minimum")
                .and_then(Value::as_f64)
                .unwrap_or(-1000.0);
            let hi = schema
                .get("maximum")
                .and_then(Value::as_f64)
                .unwrap_or(1000.0);
            let f = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            serde_json::Number::from_f64(lo + f * (hi - lo)).map_or(Value::Null, Value::Number)
        }
        Some("string") => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as i64;
            let max = schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .unwrap_or(12) as i64;
            let n = rng.range(min, max.max(min));
            let s: String = (0..n)
                .map(|_| char::from(b'a' + rng.range(0, 25) as u8))
                .collect();
            Value::String(s)
        }
        Some("array") => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0) as i64;
            let max = schema.get("maxItems").and_then(Value::as_u64).unwrap_or(6) as i64;
            let n = if depth > 4 {
                min
            } else {
                rng.range(min, max.max(min))
            };
            let item = schema.get("items").cloned().unwrap_or(Value::Bool(true));
            Value::Array((0..n).map(|_| generate(&item, rng, depth + 1)).collect())
        }
        Some("object") => {
            let mut m = Map::new();
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if required.contains(&k.as_str()) || rng.next_u64() & 1 == 1 {
                        m.insert(k.clone(), generate(s, rng, depth + 1));
                    }
                }
            }
            Value::Object(m)
        }
        _ => Value::Null,
    }
}

/// Smaller candidates for a value (tried in order; the first that still fails is kept).
pub fn shrink(v: &Value) -> Vec<Value> {
    match v {
        Value::Bool(true) => vec![Value::Bool(false)],
        Value::Number(n) => match n.as_i64() {
            Some(0) | None => vec![],
            Some(i) => {
                let mut c = vec![Value::from(0), Value::from(i / 2)];
                if i < 0 {
                    c.push(Value::from(-i));
                }
                c.push(Value::from(i - i.signum()));
                c
            }
        },
        Value::String(s) if !s.is_empty() => {
            let mut c = vec![Value::String(String::new())];
            c.push(Value::String(s[..s.len() / 2].to_owned()));
            c.push(Value::String(s[1..].to_owned()));
            c.push(Value::String(s.replace(|ch: char| ch != 'a', "a")));
            c.retain(|x| x != v);
            c
        }
        Value::Array(a) if !a.is_empty() => {
            let mut c = vec![Value::Array(vec![])];
            for i in 0..a.len() {
                let mut b = a.clone();
                b.remove(i);
                c.push(Value::Array(b));
            }
            for (i, x) in a.iter().enumerate() {
                for s in shrink(x) {
                    let mut b = a.clone();
                    b[i] = s;
                    c.push(Value::Array(b));
                }
            }
            c
        }
        Value::Object(m) => {
            let mut c = Vec::new();
            for k in m.keys() {
                let mut n = m.clone();
                n.remove(k);
                c.push(Value::Object(n));
            }
            for (k, x) in m {
                for s in shrink(x) {
                    let mut n = m.clone();
                    n.insert(k.clone(), s);
                    c.push(Value::Object(n));
                }
            }
            c
        }
        _ => vec![],
    }
}

/// Shrink `v` while `fails` holds and the candidate is still a valid input (at most `steps`).
pub fn minimize(v: Value, valid: impl Fn(&Value) -> bool, fails: impl Fn(&Value) -> bool) -> Value {
    let mut cur = v;
    let mut steps = 0;
    'outer: while steps < 10_000 {
        for cand in shrink(&cur) {
            steps += 1;
            if valid(&cand) && fails(&cand) {
                cur = cand;
                continue 'outer;
            }
        }
        break;
    }
    cur
}
