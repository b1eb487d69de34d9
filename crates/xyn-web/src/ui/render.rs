//! Rendering what steps produce: Markdown from LLMs, JSON with links, errors people can read.
//!
//! *Trust boundary:* step outputs are untrusted text (an LLM answer, an HTTP body). Markdown is
//! rendered by `pulldown-cmark` and the HTML it makes goes through `ammonia`'s allow-list, which
//! drops scripts, event-handler attributes, `javascript:` and other non-web URLs, and styles;
//! raw HTML in the Markdown is escaped before that, so it is shown, never run. JSON is escaped
//! by construction: only ids this code recognises become links.

use std::fmt::Write as _;

use pulldown_cmark::{Event, Options, Parser, html};
use serde_json::Value;

/// Markdown as sanitised HTML.
pub fn markdown(text: &str) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    opts.insert(Options::ENABLE_TASKLISTS);
    // Raw HTML in the answer is shown as text: it is data, not markup.
    let events = Parser::new_ext(text, opts).map(|e| match e {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        other => other,
    });
    let mut out = String::new();
    html::push_html(&mut out, events);
    ammonia::Builder::default()
        .url_schemes(["http", "https", "mailto"].into())
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&out)
        .to_string()
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Where an id under `key` leads in the UI, if it is one.
fn link_for(key: &str, v: &str) -> Option<String> {
    let u = uuid::Uuid::parse_str(v).ok()?;
    let k = key.to_ascii_lowercase();
    let base = if k.contains("artifact") {
        "/ui/artifacts/"
    } else if k == "run_id" || k.ends_with("_run_id") {
        "/ui/runs/"
    } else if k == "event_id" || k.ends_with("_event_id") {
        "/ui/events/"
    } else {
        return None;
    };
    Some(format!("{base}{}", u.hyphenated()))
}

/// Pretty JSON as HTML: escaped, with artifact, run and event ids as links.
pub fn json_html(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, "", 0, &mut out);
    out
}

fn indent(n: usize, out: &mut String) {
    for _ in 0..n {
        out.push_str("  ");
    }
}

fn write_string(key: &str, s: &str, out: &mut String) {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    match link_for(key, s) {
        Some(href) => {
            let _ = write!(out, "<a href=\"{href}\" data-testid=\"json-link\">");
            escape(&quoted, out);
            out.push_str("</a>");
        }
        None => escape(&quoted, out),
    }
}

fn write_json(v: &Value, key: &str, depth: usize, out: &mut String) {
    match v {
        Value::String(s) => write_string(key, s, out),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                indent(depth + 1, out);
                // Items of a list inherit its key: `"artifacts": ["…"]` links each.
                write_json(x, key, depth + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            indent(depth, out);
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("{\n");
            for (i, (k, x)) in m.iter().enumerate() {
                indent(depth + 1, out);
                escape(&serde_json::to_string(k).unwrap_or_default(), out);
                out.push_str(": ");
                write_json(x, k, depth + 1, out);
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            indent(depth, out);
            out.push('}');
        }
        other => escape(&other.to_string(), out),
    }
}

/// The parts of an error value worth reading, besides its code and message: short scalar
/// fields (an HTTP status, a path, a provider's code), never headers or bodies.
pub fn error_details(v: &Value) -> Vec<(String, String)> {
    const SKIP: &[&str] = &[
        "code",
        "message",
        "retryable",
        "headers",
        "body",
        "text",
        "raw",
    ];
    let Some(m) = v.as_object() else {
        return vec![];
    };
    m.iter()
        .filter(|(k, _)| !SKIP.contains(&k.as_str()))
        .filter_map(|(k, x)| {
            let text = match x {
                Value::String(s) if s.chars().count() <= 200 => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.replace('_', " "), text))
        })
        .take(6)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The attack: an LLM answer (or any step output) carrying markup that would run.
    const ATTACK: &str = "# Plan\n\n1. **restart** the `disk` service\n\n<script>alert(1)</script>\n\n\
        <img src=x onerror=alert(2)>\n\n[click](javascript:alert(3)) and \
        [ok](https://example.com/x)\n\n<a href=\"javascript:alert(4)\">raw</a> \
        <iframe src=\"https://evil.example\"></iframe> <svg onload=alert(5)></svg>\n\n\
        [data](data:text/html;base64,PHNjcmlwdD4=) ![img](javascript:alert(6))";

    #[test]
    fn markdown_renders_and_attacks_are_inert() {
        let html = markdown(ATTACK);
        assert!(html.contains("<h1>Plan</h1>"), "{html}");
        assert!(html.contains("<strong>restart</strong>"), "{html}");
        assert!(html.contains("<code>disk</code>"), "{html}");
        assert!(html.contains("href=\"https://example.com/x\""), "{html}");
        // Every real tag (text is escaped, so a raw `<` only opens a tag) is harmless.
        let tags: Vec<String> = html
            .split('<')
            .skip(1)
            .filter_map(|t| t.split_once('>').map(|(tag, _)| tag.to_ascii_lowercase()))
            .collect();
        for tag in &tags {
            let name = tag
                .trim_start_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or("");
            assert!(
                !["script", "iframe", "svg", "object", "embed", "style"].contains(&name),
                "<{tag}> survived: {html}"
            );
            assert!(!tag.contains(" on"), "an event handler survived: <{tag}>");
            assert!(
                !tag.contains("javascript:"),
                "a script URL survived: <{tag}>"
            );
            assert!(!tag.contains("data:"), "a data URL survived: <{tag}>");
        }
        assert!(
            tags.iter()
                .any(|t| t.starts_with("a href=\"https://example.com/x\""))
        );
        // Raw HTML is shown as text, escaped.
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
    }

    #[test]
    fn json_is_escaped_and_ids_become_links() {
        let a = "019ae6b2-1c3d-7a10-8f00-1234abcd5678";
        let v = json!({
            "artifacts": [a], "run_id": a, "text": "<b>x</b>", "note_id": a,
            "artifact_id": "not-an-id\"><script>",
        });
        let h = json_html(&v);
        assert!(h.contains(&format!("<a href=\"/ui/artifacts/{a}\"")), "{h}");
        assert!(h.contains(&format!("<a href=\"/ui/runs/{a}\"")), "{h}");
        assert_eq!(h.matches("<a ").count(), 2, "{h}");
        assert!(h.contains("&lt;b&gt;x&lt;/b&gt;"), "{h}");
        assert!(!h.contains("<script>"), "{h}");
        assert!(!h.contains("<b>"), "{h}");
    }

    #[test]
    fn error_details_leave_out_headers_and_bodies() {
        let e = json!({"code": "action.failed", "message": "HTTP 500", "status": 500,
            "headers": {"server": "x"}, "body": "<html>", "provider_code": "overloaded"});
        assert_eq!(
            error_details(&e),
            vec![
                ("provider code".to_string(), "overloaded".to_string()),
                ("status".to_string(), "500".to_string())
            ]
        );
    }
}
