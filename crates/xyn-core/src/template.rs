//! The one template syntax of Xyn: `{{ path }}` with an optional `| json` or `| default(<json>)`.
//!
//! Roots: `inputs.<name>`, `event.<field>` (`event.data.x`, `event.event_id`, …),
//! `steps.<id>.outputs.<path>` (also `steps.<id>.status`), `secrets.<ref>` and `run.<field>`;
//! `secret "<path>"` names a secret of the secret store by its path.
//! Paths use `.key` and `[index]`.
//!
//! A string that is exactly one `{{ … }}` renders to the referenced JSON value itself (so
//! `"{{inputs.count}}"` stays a number); anything else renders to a string.
//!
//! Written by hand rather than taken from a template engine because validation must see every
//! reference statically (unknown inputs, later steps, self references), and because secrets
//! must be maskable at render time; general-purpose engines offer neither.

use std::fmt;

use serde_json::{Map, Value};

/// The root a template path starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    Inputs,
    Event,
    Steps,
    Secrets,
    Run,
}

impl Root {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "inputs" => Root::Inputs,
            "event" => Root::Event,
            "steps" => Root::Steps,
            "secrets" => Root::Secrets,
            "run" => Root::Run,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Root::Inputs => "inputs",
            Root::Event => "event",
            Root::Steps => "steps",
            Root::Secrets => "secrets",
            Root::Run => "run",
        }
    }
}

/// One segment of a path after its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A filter applied to the looked-up value.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// Renders the value as JSON text.
    Json,
    /// Uses the given value when the lookup gives `null`.
    Default(Value),
}

/// One `{{ … }}` expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub root: Root,
    pub path: Vec<Seg>,
    pub filters: Vec<Filter>,
    /// The text between the braces, trimmed.
    pub text: String,
}

impl Expr {
    /// The first key after the root (`host` in `inputs.host`, `analyze` in `steps.analyze…`).
    pub fn first_key(&self) -> Option<&str> {
        match self.path.first() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The second key after the root (`outputs` in `steps.analyze.outputs.text`).
    pub fn second_key(&self) -> Option<&str> {
        match self.path.get(1) {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Lit(String),
    Expr(Expr),
}

/// A parsed template string.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A template that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at offset {offset})")]
pub struct TemplateError {
    pub message: String,
    pub offset: usize,
}

impl Template {
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = s;
        let mut base = 0usize;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| TemplateError {
                message: "unclosed '{{'".into(),
                offset: base + open,
            })?;
            let inner = &after[..close];
            let expr = parse_expr(inner).map_err(|message| TemplateError {
                message,
                offset: base + open,
            })?;
            parts.push(Part::Expr(expr));
            let consumed = open + 2 + close + 2;
            base += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            if rest.contains("}}") {
                // A stray closing brace pair is almost always a typo for an expression.
                return Err(TemplateError {
                    message: "'}}' without a matching '{{'".into(),
                    offset: base + rest.find("}}").unwrap_or(0),
                });
            }
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// True when the string contains no expression at all.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Every expression in the template.
    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e) => Some(e),
            Part::Lit(_) => None,
        })
    }

    /// Renders against `ctx` (an object with `inputs`, `event`, `steps`, `run`).
    pub fn render(
        &self,
        ctx: &Value,
        secrets: &mut SecretAccess<'_>,
    ) -> Result<Value, RenderError> {
        if let [Part::Expr(e)] = self.parts.as_slice() {
            return eval(e, ctx, secrets);
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Expr(e) => {
                    let v = eval(e, ctx, secrets)?;
                    push_as_text(&mut out, &v);
                }
            }
        }
        Ok(Value::String(out))
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Lit(s) => f.write_str(s)?,
                Part::Expr(e) => write!(f, "{{{{{}}}}}", e.text)?,
            }
        }
        Ok(())
    }
}

fn push_as_text(out: &mut String, v: &Value) {
    match v {
        Value::Null => {}
        Value::String(s) => out.push_str(s),
        other => out.push_str(&other.to_string()),
    }
}

fn parse_expr(inner: &str) -> Result<Expr, String> {
    let text = inner.trim().to_string();
    let mut pieces = split_filters(&text).into_iter();
    let path_text = pieces.next().unwrap_or_default();
    let path_text = path_text.trim();
    if path_text.is_empty() {
        return Err("empty expression".into());
    }
    let (root, path) = match path_text.strip_prefix("secret") {
        // `{{secret "sys/prod/providers/openai"}}`: a reference to the secret store by path.
        Some(rest) if rest.starts_with(|c: char| c.is_whitespace() || c == '"') => {
            let lit = rest.trim();
            let p: String = serde_json::from_str(lit).map_err(|_| {
                format!(
                    "secret needs a quoted path, like secret \"team/<team_id>/<name>\", got {lit:?}"
                )
            })?;
            if p.is_empty()
                || p.contains(|c: char| c.is_whitespace() || c.is_control())
                || !p.contains('/')
            {
                return Err(format!(
                    "{p:?} is not a secret path (like team/<team_id>/<name>)"
                ));
            }
            (Root::Secrets, vec![Seg::Key(p)])
        }
        _ => parse_path(path_text)?,
    };
    let mut filters = Vec::new();
    for f in pieces {
        let f = f.trim();
        if f == "json" {
            filters.push(Filter::Json);
        } else if let Some(arg) = f.strip_prefix("default(").and_then(|r| r.strip_suffix(')')) {
            let v: Value = serde_json::from_str(arg.trim())
                .map_err(|_| format!("default(...) needs a JSON value, got {:?}", arg.trim()))?;
            filters.push(Filter::Default(v));
        } else {
            return Err(format!(
                "unknown filter {f:?} (known: json, default(<json>))"
            ));
        }
    }
    Ok(Expr {
        root,
        path,
        filters,
        text,
    })
}

/// Splits on `|` outside of double-quoted strings.
fn split_filters(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_str = false;
    let mut escaped = false;
    for c in s.chars() {
        if in_str {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                cur.push(c);
            }
            '|' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn parse_path(s: &str) -> Result<(Root, Vec<Seg>), String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let ident = |i: &mut usize| -> Result<String, String> {
        let start = *i;
        while *i < chars.len() && is_ident_char(chars[*i]) {
            *i += 1;
        }
        if start == *i {
            return Err(format!("expected a name in {s:?}"));
        }
        Ok(chars[start..*i].iter().collect())
    };
    let root_name = ident(&mut i)?;
    let root = Root::parse(&root_name).ok_or_else(|| {
        format!("unknown root {root_name:?} (use inputs, event, steps, secrets or run)")
    })?;
    let mut path = Vec::new();
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                path.push(Seg::Key(ident(&mut i)?));
            }
            '[' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let n: usize = chars[start..i]
                    .iter()
                    .collect::<String>()
                    .parse()
                    .map_err(|_| format!("expected an index in {s:?}"))?;
                if i >= chars.len() || chars[i] != ']' {
                    return Err(format!("expected ']' in {s:?}"));
                }
                i += 1;
                path.push(Seg::Index(n));
            }
            c => return Err(format!("unexpected {c:?} in {s:?}")),
        }
    }
    Ok((root, path))
}

/// How `{{secrets.x}}` is treated while rendering.
pub enum SecretAccess<'a> {
    /// Secrets become the placeholder `[secret:<ref>]`; what is stored or shown.
    Mask,
    /// Secrets are looked up; the values used are collected so they can be redacted afterwards.
    Resolve {
        lookup: &'a (dyn Fn(&str) -> Option<String> + Sync),
        used: Vec<String>,
    },
}

impl<'a> SecretAccess<'a> {
    pub fn resolve(lookup: &'a (dyn Fn(&str) -> Option<String> + Sync)) -> Self {
        SecretAccess::Resolve {
            lookup,
            used: Vec::new(),
        }
    }

    /// The secret values looked up so far.
    pub fn used(&self) -> &[String] {
        match self {
            SecretAccess::Mask => &[],
            SecretAccess::Resolve { used, .. } => used,
        }
    }
}

/// A template that could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("secret {0:?} is not set")]
    MissingSecret(String),
    #[error("secret reference {0:?} must be a single name, like secrets.api_token")]
    BadSecretRef(String),
}

fn eval(e: &Expr, ctx: &Value, secrets: &mut SecretAccess<'_>) -> Result<Value, RenderError> {
    let mut v = if e.root == Root::Secrets {
        let name = match (e.path.as_slice(), e.first_key()) {
            ([_], Some(k)) => k.to_string(),
            _ => return Err(RenderError::BadSecretRef(e.text.clone())),
        };
        match secrets {
            SecretAccess::Mask => Value::String(format!("[secret:{name}]")),
            SecretAccess::Resolve { lookup, used } => {
                let val = lookup(&name).ok_or(RenderError::MissingSecret(name))?;
                used.push(val.clone());
                Value::String(val)
            }
        }
    } else {
        lookup(ctx.get(e.root.as_str()), &e.path)
    };
    for f in &e.filters {
        v = match f {
            Filter::Json => Value::String(v.to_string()),
            Filter::Default(d) => {
                if v.is_null() {
                    d.clone()
                } else {
                    v
                }
            }
        };
    }
    Ok(v)
}

fn lookup(start: Option<&Value>, path: &[Seg]) -> Value {
    let mut cur = match start {
        Some(v) => v,
        None => return Value::Null,
    };
    for seg in path {
        let next = match (seg, cur) {
            (Seg::Key(k), Value::Object(m)) => m.get(k),
            (Seg::Index(i), Value::Array(a)) => a.get(*i),
            (Seg::Key(k), Value::Array(a)) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return Value::Null,
        }
    }
    cur.clone()
}

/// A JSON value whose strings may be templates, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub enum TemplateValue {
    Lit(Value),
    Tpl(Template),
    Arr(Vec<TemplateValue>),
    Obj(Vec<(String, TemplateValue)>),
}

impl TemplateValue {
    /// Parses every string leaf of `v`. Errors carry the JSON path (relative to `v`) of the leaf.
    pub fn parse(v: &Value) -> Result<Self, Vec<(String, TemplateError)>> {
        let mut errs = Vec::new();
        let t = Self::parse_at(v, "", &mut errs);
        if errs.is_empty() { Ok(t) } else { Err(errs) }
    }

    fn parse_at(v: &Value, path: &str, errs: &mut Vec<(String, TemplateError)>) -> Self {
        match v {
            Value::String(s) => match Template::parse(s) {
                Ok(t) if t.is_literal() => TemplateValue::Lit(v.clone()),
                Ok(t) => TemplateValue::Tpl(t),
                Err(e) => {
                    errs.push((path.to_string(), e));
                    TemplateValue::Lit(v.clone())
                }
            },
            Value::Array(a) => TemplateValue::Arr(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| Self::parse_at(x, &format!("{path}[{i}]"), errs))
                    .collect(),
            ),
            Value::Object(m) => TemplateValue::Obj(
                m.iter()
                    .map(|(k, x)| (k.clone(), Self::parse_at(x, &format!("{path}.{k}"), errs)))
                    .collect(),
            ),
            other => TemplateValue::Lit(other.clone()),
        }
    }

    /// Every expression with the relative JSON path of the string it sits in.
    pub fn exprs(&self) -> Vec<(String, &Expr)> {
        let mut out = Vec::new();
        self.collect("", &mut out);
        out
    }

    fn collect<'s>(&'s self, path: &str, out: &mut Vec<(String, &'s Expr)>) {
        match self {
            TemplateValue::Lit(_) => {}
            TemplateValue::Tpl(t) => out.extend(t.exprs().map(|e| (path.to_string(), e))),
            TemplateValue::Arr(a) => {
                for (i, x) in a.iter().enumerate() {
                    x.collect(&format!("{path}[{i}]"), out);
                }
            }
            TemplateValue::Obj(m) => {
                for (k, x) in m {
                    x.collect(&format!("{path}.{k}"), out);
                }
            }
        }
    }

    pub fn render(
        &self,
        ctx: &Value,
        secrets: &mut SecretAccess<'_>,
    ) -> Result<Value, RenderError> {
        Ok(match self {
            TemplateValue::Lit(v) => v.clone(),
            TemplateValue::Tpl(t) => t.render(ctx, secrets)?,
            TemplateValue::Arr(a) => Value::Array(
                a.iter()
                    .map(|x| x.render(ctx, secrets))
                    .collect::<Result<_, _>>()?,
            ),
            TemplateValue::Obj(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    out.insert(k.clone(), x.render(ctx, secrets)?);
                }
                Value::Object(out)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "inputs": {"host": "web-1", "n": 3, "tags": ["a", "b"]},
            "event": {"data": {"state": "CRIT"}},
            "steps": {"analyze": {"outputs": {"text": "restart it", "plan": {"cmd": "systemctl restart x"}}}},
            "run": {"id": "r-1"}
        })
    }

    fn render(s: &str) -> Value {
        Template::parse(s)
            .unwrap()
            .render(&ctx(), &mut SecretAccess::Mask)
            .unwrap()
    }

    #[test]
    fn whole_expression_keeps_its_type() {
        assert_eq!(render("{{inputs.n}}"), json!(3));
        assert_eq!(render("{{ inputs.tags }}"), json!(["a", "b"]));
        assert_eq!(
            render("{{steps.analyze.outputs.plan}}"),
            json!({"cmd": "systemctl restart x"})
        );
    }

    #[test]
    fn interpolation_gives_text() {
        assert_eq!(
            render("http://x/{{inputs.host}}/{{inputs.tags[1]}}?n={{inputs.n}}"),
            json!("http://x/web-1/b?n=3")
        );
        assert_eq!(render("state={{event.data.state}}"), json!("state=CRIT"));
        assert_eq!(render("missing=[{{inputs.nope}}]"), json!("missing=[]"));
    }

    #[test]
    fn filters() {
        assert_eq!(render("{{inputs.tags | json}}"), json!("[\"a\",\"b\"]"));
        assert_eq!(render("{{inputs.nope | default(\"x|y\")}}"), json!("x|y"));
        assert_eq!(render("{{inputs.nope | default(5)}}"), json!(5));
    }

    #[test]
    fn secrets_are_masked_or_resolved() {
        let t = Template::parse("Bearer {{secrets.token}}").unwrap();
        assert_eq!(
            t.render(&ctx(), &mut SecretAccess::Mask).unwrap(),
            json!("Bearer [secret:token]")
        );
        let lookup = |n: &str| (n == "token").then(|| "s3cr3t".to_string());
        let mut acc = SecretAccess::resolve(&lookup);
        assert_eq!(t.render(&ctx(), &mut acc).unwrap(), json!("Bearer s3cr3t"));
        assert_eq!(acc.used(), ["s3cr3t".to_string()]);
        let t = Template::parse("{{secrets.other}}").unwrap();
        let mut acc = SecretAccess::resolve(&lookup);
        assert_eq!(
            t.render(&ctx(), &mut acc),
            Err(RenderError::MissingSecret("other".into()))
        );
    }

    #[test]
    fn parse_errors() {
        assert!(Template::parse("{{inputs.x").is_err());
        assert!(Template::parse("{{}}").is_err());
        assert!(Template::parse("{{nope.x}}").is_err());
        assert!(Template::parse("{{inputs.x | upper}}").is_err());
        assert!(Template::parse("{{inputs.x[}}").is_err());
        assert!(Template::parse("a }} b").is_err());
    }

    #[test]
    fn template_values_report_paths() {
        let v = json!({"url": "http://{{inputs.host}}", "headers": {"a": ["{{steps.x.outputs.y}}"]}, "n": 1});
        let t = TemplateValue::parse(&v).unwrap();
        let mut paths: Vec<String> = t.exprs().into_iter().map(|(p, _)| p).collect();
        paths.sort();
        assert_eq!(paths, vec![".headers.a[0]".to_string(), ".url".to_string()]);
        let bad = json!({"a": {"b": "{{oops"}});
        let errs = TemplateValue::parse(&bad).unwrap_err();
        assert_eq!(errs[0].0, ".a.b");
    }
}

#[cfg(test)]
mod secret_path_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_references_by_path_mask_and_resolve() {
        let t = Template::parse("Bearer {{secret \"sys/prod/providers/openai\"}}").unwrap();
        let e = t.exprs().next().unwrap();
        assert_eq!(
            (e.root, e.first_key()),
            (Root::Secrets, Some("sys/prod/providers/openai"))
        );
        assert_eq!(
            t.render(&json!({}), &mut SecretAccess::Mask).unwrap(),
            json!("Bearer [secret:sys/prod/providers/openai]")
        );
        let lookup = |n: &str| (n == "sys/prod/providers/openai").then(|| "sk-123".to_string());
        let mut access = SecretAccess::resolve(&lookup);
        assert_eq!(
            t.render(&json!({}), &mut access).unwrap(),
            json!("Bearer sk-123")
        );
        assert_eq!(access.used(), ["sk-123".to_string()]);
        let missing = Template::parse("{{ secret \"team/t/none\" }}").unwrap();
        assert_eq!(
            missing.render(&json!({}), &mut SecretAccess::resolve(&lookup)),
            Err(RenderError::MissingSecret("team/t/none".into()))
        );
        for bad in [
            "{{secret team/t/x}}",
            "{{secret \"\"}}",
            "{{secret \"a b/c\"}}",
            "{{secret \"plain\"}}",
            "{{secret \"a/\\nb\"}}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        // `secrets.x` still means the named secret.
        assert!(Template::parse("{{secrets.token}}").is_ok());
    }
}
