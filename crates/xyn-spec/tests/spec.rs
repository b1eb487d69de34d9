use serde_json::{Value, json};
use xyn_spec::lint::{lint_examples, lint_spec, parse_examples};
use xyn_spec::verify::{Verdict, verify};
use xyn_spec::{Spec, fmt, run};

fn clamp_spec(transform: &str) -> Value {
    json!({
        "id": "clamp",
        "subject": format!("jq:{transform}"),
        "operations": [{
            "name": "clamp",
            "params": {"type": "object", "required": ["x", "mode"], "properties": {
                "x": {"type": "integer", "minimum": -50, "maximum": 50},
                "mode": {"enum": ["low", "high"]}}},
            "result": {"type": "integer"},
            "ensures": [".output >= 0", ".output <= 10"],
            "errors": ["bad.input"]
        }]
    })
}

#[test]
fn lint_reports_json_paths() {
    let mut s = clamp_spec(".x");
    s["operations"][0]["ensures"][1] = json!(".output <=");
    s["operations"][0]["params"] = json!({"type": 12});
    s["extra"] = json!(1);
    let d: Vec<String> = lint_spec(&s).iter().map(|d| d.path.clone()).collect();
    assert!(
        d.contains(&"$.operations[0].ensures[1]".to_string()),
        "{d:?}"
    );
    assert!(
        d.iter().any(|p| p.starts_with("$.operations[0].params")),
        "{d:?}"
    );
    assert!(d.contains(&"$.extra".to_string()), "{d:?}");
    assert!(lint_spec(&clamp_spec("[.x, 0] | max | [., 10] | min")).is_empty());
}

#[test]
fn examples_lint_against_params() {
    let spec = Spec::from_value(&clamp_spec(".x"));
    let (ex, d) = parse_examples(
        "{\"input\":{\"x\":1,\"mode\":\"low\"},\"output\":1}\n\n{\"input\":{\"x\":\"no\",\"mode\":\"low\"},\"output\":1}\n{\"input\":{}}\n{\"input\":{\"x\":1,\"mode\":\"low\"},\"error\":\"nope\"}\n",
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].path, "examples:4");
    let d = lint_examples(&spec, &ex);
    let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        ["examples:3 $.input.x", "examples:5 $.error"],
        "{d:?}"
    );
}

#[test]
fn fmt_round_trips_and_is_stable() {
    let text = "{\"subject\":\"jq:.x\",\"id\":\"a\",\"operations\":[{\"result\":{},\"name\":\"n\",\"params\":{}}]}";
    let once = fmt::format_spec(text).unwrap();
    assert_eq!(fmt::format_spec(&once).unwrap(), once);
    assert!(once.find("\"id\"").unwrap() < once.find("\"subject\"").unwrap());
    let v1: Value = serde_json::from_str(text).unwrap();
    let v2: Value = serde_json::from_str(&once).unwrap();
    assert_eq!(v1, v2);
    let ex = fmt::format_examples("{ \"output\": 1, \"input\": {\"b\":1, \"a\":2} }\n\n").unwrap();
    assert_eq!(ex, "{\"input\":{\"a\":2,\"b\":1},\"output\":1}\n");
}

#[test]
fn verify_proves_correct_and_falsifies_wrong() {
    let good = Spec::from_value(&clamp_spec("[.x, 0] | max | [., 10] | min"));
    assert_eq!(
        verify(&good.operations[0], good.subject_transform(), 100_000),
        Verdict::Proved { inputs: 202 }
    );
    let bad = Spec::from_value(&clamp_spec("[.x, 0] | max | [., 11] | min"));
    match verify(&bad.operations[0], bad.subject_transform(), 100_000) {
        Verdict::Falsified { input, output, .. } => {
            assert_eq!(input["x"], json!(11));
            assert_eq!(output, json!(11));
        }
        v => panic!("{v:?}"),
    }
    let mut unb = clamp_spec(".x");
    unb["operations"][0]["params"]["properties"]["x"] = json!({"type": "integer"});
    let unb = Spec::from_value(&unb);
    assert!(matches!(
        verify(&unb.operations[0], unb.subject_transform(), 100_000),
        Verdict::NotBounded { .. }
    ));
}

#[test]
fn examples_fail_with_diff_and_property_shrinks() {
    let mut s = clamp_spec("if .x > 7 then .x else [.x, 0] | max end");
    s["operations"][0]["params"]["properties"]["x"] = json!({"type": "integer"});
    let spec = Spec::from_value(&s);
    let (ex, _) = parse_examples(
        "{\"input\":{\"x\":3,\"mode\":\"low\"},\"output\":3}\n{\"input\":{\"x\":-4,\"mode\":\"low\"},\"output\":1}\n",
    );
    let r = run::run(&spec, &ex, 42, 1000).unwrap();
    assert_eq!(r.examples_passed, 1);
    assert_eq!(r.failures[0].case, "line 2");
    assert!(
        r.failures[0].message.contains(" - 1\n + 0"),
        "{}",
        r.failures[0].message
    );
    let p = &r.failures[1];
    assert_eq!(p.seed, Some(42));
    // The minimal counterexample of `output <= 10` is x = 11.
    assert_eq!(p.input["x"], json!(11), "{p:?}");
    // The same seed reproduces the same counterexample.
    let again = run::run(&spec, &ex, 42, 1000).unwrap();
    assert_eq!(again.failures[1].input, p.input);
}
