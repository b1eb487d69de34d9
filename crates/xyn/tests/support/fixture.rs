//! A programmable HTTP server on 127.0.0.1 for actions to call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// One request the fixture saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

#[derive(Default)]
pub struct Inner {
    pub seen: Mutex<Vec<Seen>>,
    /// `/flaky/<name>` answers 503 this many times, then 200.
    pub fail_first: Mutex<HashMap<String, u32>>,
    pub release: Notify,
    pub released: Mutex<bool>,
}

#[derive(Clone)]
pub struct Fixture {
    pub url: String,
    pub inner: Arc<Inner>,
}

impl Fixture {
    pub async fn start() -> Fixture {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/{*path}", any(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fixture { url, inner }
    }

    pub fn fail_first(&self, name: &str, n: u32) {
        self.inner.fail_first.lock().unwrap().insert(name.into(), n);
    }

    pub fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.inner
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Lets requests to `/block` answer.
    pub fn release(&self) {
        *self.inner.released.lock().unwrap() = true;
        self.inner.release.notify_waiters();
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let h: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = String::from_utf8_lossy(&body).into_owned();
    inner.seen.lock().unwrap().push(Seen {
        path: format!("/{path}"),
        headers: h.clone(),
        body: body.clone(),
    });
    let mut parts = path.split('/');
    match parts.next().unwrap_or("") {
        "flaky" => {
            let name = parts.next().unwrap_or("").to_string();
            let mut m = inner.fail_first.lock().unwrap();
            let left = m.entry(name).or_insert(0);
            if *left > 0 {
                *left -= 1;
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"error": "try again"})),
                );
            }
            (StatusCode::OK, axum::Json(json!({"ok": true})))
        }
        "slow" => {
            let ms: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(5000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (StatusCode::OK, axum::Json(json!({"slept_ms": ms})))
        }
        "block" => {
            loop {
                let notified = inner.release.notified();
                if *inner.released.lock().unwrap() {
                    break;
                }
                notified.await;
            }
            (StatusCode::OK, axum::Json(json!({"released": true})))
        }
        // `/openai/v1/chat/completions`: an OpenAI Chat Completions answer (the documented
        // shape) whose text repeats the Authorization header it got: a provider echoing its
        // key back.
        "openai" => (
            StatusCode::OK,
            axum::Json(json!({
                "id": "chatcmpl-fixture", "object": "chat.completion", "created": 1,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                    "content": format!("you sent {}", h.get("authorization").map_or("nothing", String::as_str))}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
            })),
        ),
        "status" => {
            let code: u16 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(500);
            (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                axum::Json(json!({"status": code})),
            )
        }
        _ => (
            StatusCode::OK,
            axum::Json(json!({"path": format!("/{path}"), "headers": h, "body": body})),
        ),
    }
}
