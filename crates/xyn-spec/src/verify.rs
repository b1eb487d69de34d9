//! Bounded verification: when `params` describes a finite domain (enums, consts, booleans,
//! bounded integers, objects of those), every input is run through the transform and every
//! `ensures` clause and the result schema are checked. Never claims more than it checked.

use serde_json::{Map, Value};

use crate::model::{Compiled, Operation};

/// The outcome for one operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every input of the domain (that satisfied `requires`) satisfied the postconditions.
    Proved { inputs: usize },
    /// A counterexample.
    Falsified {
        input: Value,
        output: Value,
        clause: String,
    },
    /// The domain is not finite (or larger than the limit), or there is nothing to run.
    NotBounded { reason: String },
}

/// The finite domain a schema describes, or why it is not one (at most `limit` values).
pub fn domain(schema: &Value, limit: usize) -> Result<Vec<Value>, String> {
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return Ok(e.clone());
    }
    if let Some(c) = schema.get("const") {
        return Ok(vec![c.clone()]);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("boolean") => Ok(vec![Value::Bool(false), Value::Bool(true)]),
        Some("null") => Ok(vec![Value::Null]),
        Some("integer") => {
            let lo = schema.get("minimum").and_then(Value::as_i64);
            let hi = schema.get("maximum").and_then(Value::as_i64);
            match (lo, hi) {
                (Some(lo), Some(hi)) if hi >= lo && ((hi - lo) as u64) < limit as u64 => {
                    Ok((lo..=hi).map(Value::from).collect())
                }
                (Some(_), Some(_)) => Err(format!("integer range larger than {limit}")),
                _ => Err("integer without minimum and maximum".into()),
            }
        }
        Some("object") => {
            let props = schema
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut acc = vec![Map::new()];
            for (k, s) in &props {
                let mut vals: Vec<Option<Value>> = domain(s, limit)
                    .map_err(|e| format!("{k}: {e}"))?
                    .into_iter()
                    .map(Some)
                    .collect();
                if !required.contains(&k.as_str()) {
                    vals.push(None);
                }
                if acc.len().saturating_mul(vals.len()) > limit {
                    return Err(format!("more than {limit} inputs"));
                }
                let mut next = Vec::with_capacity(acc.len() * vals.len());
                for m in &acc {
                    for v in &vals {
                        let mut m = m.clone();
                        if let Some(v) = v {
                            m.insert(k.clone(), v.clone());
                        }
                        next.push(m);
                    }
                }
                acc = next;
            }
            Ok(acc.into_iter().map(Value::Object).collect())
        }
        Some(t) => Err(format!("type {t} is not a finite domain")),
        None => Err("schema without a type, enum or const".into()),
    }
}

/// Verify one operation whose implementation is a jq transform.
pub fn verify(op: &Operation, subject_transform: Option<&str>, limit: usize) -> Verdict {
    let c = match Compiled::new(op, subject_transform) {
        Ok(c) => c,
        Err(e) => return Verdict::NotBounded { reason: e },
    };
    let Some(t) = &c.transform else {
        return Verdict::NotBounded {
            reason: "the operation has no jq transform to run".into(),
        };
    };
    let inputs = match domain(&op.params, limit) {
        Ok(d) => d,
        Err(reason) => return Verdict::NotBounded { reason },
    };
    let mut n = 0;
    for input in inputs {
        if c.failed_requires(&input).is_some() {
            continue;
        }
        n += 1;
        let output = match t.run_one(&input) {
            Ok(o) => o,
            Err(e) => {
                return Verdict::Falsified {
                    input,
                    output: Value::Null,
                    clause: format!("transform failed: {e:?}"),
                };
            }
        };
        if let Some(clause) = c.failed_ensures(&input, &output) {
            return Verdict::Falsified {
                input,
                output,
                clause,
            };
        }
    }
    Verdict::Proved { inputs: n }
}
