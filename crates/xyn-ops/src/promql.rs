//! The PromQL subset SLIs use, parsed by `promql-parser` and evaluated over one scrape of a
//! node's `/metrics`: selectors with label matchers, `sum` (with `by` / `without`),
//! `rate` / `increase` over a range, `vector(n)`, `or`, arithmetic (`+ - * /`) and numbers.
//!
//! One scrape has no history: a counter's value is what the process counted since it
//! started, so `increase(c[w])` is the counter's value and `rate(c[w])` that value divided
//! by the window (the window is then the process's lifetime, at most `w`). Against a
//! Prometheus server (`--prometheus`) the query runs there instead, with its ranges set to
//! the evaluation window ([`with_range`]).

use std::collections::BTreeMap;
use std::time::Duration;

use promql_parser::parser::{self, Expr};

use crate::{OpsError, codes};

/// Labels of one series (without `__name__`).
pub type Labels = BTreeMap<String, String>;

/// One scrape: every sample by metric name.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub series: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Snapshot {
    /// Reads the Prometheus text format.
    pub fn parse(text: &str) -> Result<Self, OpsError> {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines)
            .map_err(|e| OpsError::new(codes::METRICS_UNREADABLE, e.to_string()))?;
        let mut s = Snapshot::default();
        for sample in scrape.samples {
            let labels: Labels = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => {
                    s.series.entry(sample.metric).or_default().push((labels, v));
                }
                prometheus_parse::Value::Histogram(buckets) => {
                    let name = format!("{}_bucket", sample.metric);
                    for b in buckets {
                        let mut l = labels.clone();
                        let le = if b.less_than.is_infinite() {
                            "+Inf".to_string()
                        } else {
                            b.less_than.to_string()
                        };
                        l.insert("le".into(), le);
                        s.series.entry(name.clone()).or_default().push((l, b.count));
                    }
                }
                prometheus_parse::Value::Summary(_) => {}
            }
        }
        Ok(s)
    }
}

/// An instant vector, or a scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Vector(Vec<(Labels, f64)>),
    Scalar(f64),
}

impl Value {
    /// The single value of a one-element vector or a scalar; `None` for an empty vector.
    pub fn single(&self) -> Result<Option<f64>, OpsError> {
        match self {
            Value::Scalar(v) => Ok(Some(*v)),
            Value::Vector(v) if v.is_empty() => Ok(None),
            Value::Vector(v) if v.len() == 1 => Ok(Some(v[0].1)),
            Value::Vector(v) => Err(OpsError::new(
                codes::PROMQL_UNSUPPORTED,
                format!(
                    "the query returns {} series; aggregate it to one (sum)",
                    v.len()
                ),
            )),
        }
    }
}

pub fn parse(query: &str) -> Result<Expr, OpsError> {
    parser::parse(query).map_err(|e| OpsError::new(codes::PROMQL_INVALID, e))
}

fn unsupported(what: impl std::fmt::Display) -> OpsError {
    OpsError::new(
        codes::PROMQL_UNSUPPORTED,
        format!(
            "{what} is not in the supported PromQL subset (selectors, sum, rate, increase, vector, or, + - * /)"
        ),
    )
}

/// Evaluates `expr` over `snap`; `lifetime` is how long the scraped process has counted.
pub fn eval(expr: &Expr, snap: &Snapshot, lifetime: Duration) -> Result<Value, OpsError> {
    match expr {
        Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
        Expr::Paren(p) => eval(&p.expr, snap, lifetime),
        Expr::VectorSelector(vs) => Ok(Value::Vector(select(vs, snap)?)),
        Expr::Call(c) => {
            let arg = c.args.args.first().map(|a| a.as_ref());
            match (c.func.name, arg) {
                ("vector", Some(a)) => match eval(a, snap, lifetime)? {
                    Value::Scalar(v) => Ok(Value::Vector(vec![(Labels::new(), v)])),
                    Value::Vector(_) => Err(unsupported("vector() of a vector")),
                },
                (f @ ("rate" | "increase"), Some(Expr::MatrixSelector(ms))) => {
                    let window = lifetime.min(ms.range).as_secs_f64().max(1.0);
                    let v = select(&ms.vs, snap)?;
                    Ok(Value::Vector(
                        v.into_iter()
                            .map(|(l, x)| (l, if f == "rate" { x / window } else { x }))
                            .collect(),
                    ))
                }
                (name, _) => Err(unsupported(format!("{name}()"))),
            }
        }
        Expr::Aggregate(a) => {
            if a.op.to_string() != "sum" {
                return Err(unsupported(a.op.to_string()));
            }
            let Value::Vector(v) = eval(&a.expr, snap, lifetime)? else {
                return Err(unsupported("sum of a scalar"));
            };
            let mut groups: BTreeMap<Labels, f64> = BTreeMap::new();
            for (l, x) in v {
                let key: Labels = match &a.modifier {
                    None => Labels::new(),
                    Some(parser::LabelModifier::Include(keep)) => l
                        .into_iter()
                        .filter(|(k, _)| keep.labels.contains(k))
                        .collect(),
                    Some(parser::LabelModifier::Exclude(drop)) => l
                        .into_iter()
                        .filter(|(k, _)| !drop.labels.contains(k))
                        .collect(),
                };
                *groups.entry(key).or_default() += x;
            }
            Ok(Value::Vector(groups.into_iter().collect()))
        }
        Expr::Binary(b) => {
            let op = b.op.to_string();
            let l = eval(&b.lhs, snap, lifetime)?;
            let r = eval(&b.rhs, snap, lifetime)?;
            binary(&op, l, r)
        }
        other => Err(unsupported(format!("`{other}`"))),
    }
}

fn arith(op: &str, a: f64, b: f64) -> Result<f64, OpsError> {
    Ok(match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" => a / b,
        _ => return Err(unsupported(format!("the operator {op}"))),
    })
}

fn binary(op: &str, l: Value, r: Value) -> Result<Value, OpsError> {
    match (l, r) {
        (Value::Vector(l), Value::Vector(r)) if op == "or" => {
            let mut out = l.clone();
            for (labels, v) in r {
                if !l.iter().any(|(k, _)| *k == labels) {
                    out.push((labels, v));
                }
            }
            Ok(Value::Vector(out))
        }
        (Value::Scalar(a), Value::Scalar(b)) => Ok(Value::Scalar(arith(op, a, b)?)),
        (Value::Vector(v), Value::Scalar(s)) => Ok(Value::Vector(
            v.into_iter()
                .map(|(l, x)| arith(op, x, s).map(|y| (l, y)))
                .collect::<Result<_, _>>()?,
        )),
        (Value::Scalar(s), Value::Vector(v)) => Ok(Value::Vector(
            v.into_iter()
                .map(|(l, x)| arith(op, s, x).map(|y| (l, y)))
                .collect::<Result<_, _>>()?,
        )),
        (Value::Vector(l), Value::Vector(r)) => {
            // One-to-one matching on identical label sets.
            let mut out = Vec::new();
            for (labels, a) in l {
                if let Some((_, b)) = r.iter().find(|(k, _)| *k == labels) {
                    out.push((labels, arith(op, a, *b)?));
                }
            }
            Ok(Value::Vector(out))
        }
    }
}

fn select(vs: &parser::VectorSelector, snap: &Snapshot) -> Result<Vec<(Labels, f64)>, OpsError> {
    if vs.offset.is_some() || vs.at.is_some() || !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("offset, @ and `or` inside a selector"));
    }
    let name = vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__")
            .map(|m| m.value.clone())
    });
    let Some(name) = name else {
        return Err(unsupported("a selector without a metric name"));
    };
    let Some(series) = snap.series.get(&name) else {
        return Ok(Vec::new());
    };
    Ok(series
        .iter()
        .filter(|(labels, _)| {
            vs.matchers
                .matchers
                .iter()
                .filter(|m| m.name != "__name__")
                .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
        })
        .cloned()
        .collect())
}

/// The query with every range (`[5m]`) set to `window`, for a Prometheus server.
pub fn with_range(expr: &Expr, window: Duration) -> Expr {
    let mut e = expr.clone();
    set_range(&mut e, window);
    e
}

fn set_range(e: &mut Expr, window: Duration) {
    match e {
        Expr::MatrixSelector(ms) => ms.range = window,
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| set_range(a, window)),
        Expr::Aggregate(a) => set_range(&mut a.expr, window),
        Expr::Binary(b) => {
            set_range(&mut b.lhs, window);
            set_range(&mut b.rhs, window);
        }
        Expr::Paren(p) => set_range(&mut p.expr, window),
        Expr::Unary(u) => set_range(&mut u.expr, window),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE xyn_runs_total counter\n\
        xyn_runs_total{blueprint=\"a\",status=\"completed\"} 90\n\
        xyn_runs_total{blueprint=\"a\",status=\"failed\"} 10\n\
        xyn_runs_total{blueprint=\"b\",status=\"completed\"} 5\n";

    fn run(q: &str) -> Value {
        let snap = Snapshot::parse(TEXT).unwrap();
        eval(&parse(q).unwrap(), &snap, Duration::from_secs(100)).unwrap()
    }

    #[test]
    fn the_subset_evaluates() {
        assert_eq!(
            run("sum(increase(xyn_runs_total{blueprint=\"a\"}[1h]))")
                .single()
                .unwrap(),
            Some(100.0)
        );
        assert_eq!(
            run("sum(rate(xyn_runs_total{blueprint=\"a\",status=\"completed\"}[5m]))")
                .single()
                .unwrap(),
            Some(0.9)
        );
        assert_eq!(
            run("sum(xyn_runs_total{status=~\"fail.*\"}) or vector(0)")
                .single()
                .unwrap(),
            Some(10.0)
        );
        assert_eq!(
            run("sum(xyn_runs_total{blueprint=\"zzz\"}) or vector(0)")
                .single()
                .unwrap(),
            Some(0.0)
        );
        assert_eq!(
            run("sum(xyn_runs_total{status=\"completed\"}) / sum(xyn_runs_total)")
                .single()
                .unwrap(),
            Some(95.0 / 105.0)
        );
        assert_eq!(
            run("1 - sum(xyn_runs_total{status!=\"completed\"}) / 100")
                .single()
                .unwrap(),
            Some(0.9)
        );
        let by = run("sum by (blueprint) (xyn_runs_total)");
        assert!(matches!(by, Value::Vector(ref v) if v.len() == 2));
        assert!(by.single().is_err());
    }

    #[test]
    fn outside_the_subset_is_refused_with_a_code() {
        let snap = Snapshot::parse(TEXT).unwrap();
        for q in [
            "max(xyn_runs_total)",
            "histogram_quantile(0.9, xyn_runs_total)",
            "xyn_runs_total offset 5m",
        ] {
            let e = eval(&parse(q).unwrap(), &snap, Duration::from_secs(1)).unwrap_err();
            assert_eq!(e.code, codes::PROMQL_UNSUPPORTED, "{q}");
        }
        assert_eq!(parse("sum(").unwrap_err().code, codes::PROMQL_INVALID);
    }

    #[test]
    fn ranges_are_set_to_the_window() {
        let e = with_range(
            &parse("sum(rate(x[5m])) / sum(increase(y{a=\"b\"}[1m]))").unwrap(),
            Duration::from_secs(3600),
        );
        let s = e.to_string();
        assert!(s.contains("x[1h]") && s.contains("y{a=\"b\"}[1h]"), "{s}");
    }
}
