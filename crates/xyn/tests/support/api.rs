//! Requests against the API of a test node, their answers, and the blueprints and tokens the
//! API tests share (`tests/api.rs`, `tests/api_edge.rs`).

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{Node, client};

/// A blueprint with a manual gate.
pub const GATE_BP: &str = r#"
id: bp.t.gate
name: Gate test
trigger:
  event_type: demo.gate
inputs:
  - name: who
    type: string
    default: world
plan:
  - kind: transform
    id: greet
    template:
      message: "hello {{inputs.who}}"
  - kind: gate
    id: approve
    mode: manual
    message: "Approve {{inputs.who}}?"
  - kind: transform
    id: done
    expr: '"done"'
outputs:
  - name: message
    value: "{{steps.greet.outputs.message}}"
"#;

pub const OP: &str = "op-token-0123456789abcdef";
pub const OWNER: &str = "owner-token-0123456789abcdef";

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn call(
    node: &Node,
    m: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut r = client().request(m, format!("{}{path}", node.url));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

pub async fn get(node: &Node, path: &str) -> Resp {
    call(node, Method::GET, path, None, &[]).await
}

pub async fn post(node: &Node, path: &str, body: Value) -> Resp {
    call(node, Method::POST, path, Some(body), &[]).await
}

/// Asserts the standard error shape with this status and code.
#[track_caller]
pub fn err(r: &Resp, status: u16, code: &str) {
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (status, Some(code)),
        "{}",
        r.text
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
    assert!(
        r.body["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{}",
        r.text
    );
}

/// Walks every page of a list with `limit`, returning the items in order.
pub async fn all_pages(node: &Node, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let r = get(node, &url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        let page = r.body["items"].as_array().unwrap().clone();
        assert!(page.len() <= limit);
        pages += 1;
        items.extend(page);
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 1000);
    }
    (items, pages)
}

pub fn head_seq(v: &Resp) -> i64 {
    v.body["items"][0]["seq"].as_i64().unwrap_or(0)
}

/// A client that does not follow redirects, to see the 303 that answers a form post.
pub fn nofollow() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the cookie `name` that a response sets, if it sets one.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(prefix.as_str()))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
}
