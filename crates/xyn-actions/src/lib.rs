//! The action port of Xyn, the registry and the built-in actions.
//!
//! An [`Action`] has a name, an input and an output JSON Schema, redaction rules and an
//! `execute` function. The [`Registry`] checks input against the schema before executing and
//! applies the redaction rules to what is recorded. Actions reach the rest of the platform
//! only through the [`ActionContext`]: its [`Platform`] port (drafts, blueprints) and its
//! [`ArtifactSink`] (content-addressed artifacts attached to the step).

pub mod builtin;
pub mod http;
pub mod net;
pub mod ssh;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use xyn_core::records::Artifact;
use xyn_core::{RunId, StepId, XynError};

/// Where an action puts artifacts. The engine attaches them to the step when it records
/// the step's result.
#[async_trait]
pub trait ArtifactSink: Send + Sync {
    async fn put(
        &self,
        name: &str,
        kind: &str,
        content_type: &str,
        bytes: Vec<u8>,
        metadata: Value,
    ) -> Result<Artifact, XynError>;
}

/// The platform operations built-in actions call (implemented by the engine, so the API and
/// the actions share one code path).
#[async_trait]
pub trait Platform: Send + Sync {
    /// `drafts.save`.
    async fn save_draft(&self, input: Value, actor: &str) -> Result<Value, XynError>;
    /// `blueprints.validate`.
    async fn validate_draft(&self, input: Value, actor: &str) -> Result<Value, XynError>;
    /// `blueprints.promote`.
    async fn promote_draft(&self, input: Value, actor: &str) -> Result<Value, XynError>;
    /// `events.emit`: appends an event (and starts the runs it triggers) as
    /// `POST /api/v1/events` does, without a round trip over HTTP: it works on any port
    /// and with auth on. Answers `{event_id, seq}`.
    async fn emit_event(
        &self,
        event_name: &str,
        data: Value,
        actor: &str,
        correlation_id: &str,
    ) -> Result<Value, XynError>;
}

/// What an action sees of the run it is part of.
#[derive(Clone)]
pub struct ActionContext {
    pub run_id: Option<RunId>,
    pub step_id: Option<StepId>,
    pub attempt: u32,
    /// `run_id:step_id`: the same for every attempt of a step (a call repeated after a crash
    /// or a retry carries the key of the first), so a receiver can deduplicate; the attempt
    /// number travels separately (`attempt`, sent by `http.call` as `Idempotency-Attempt`).
    pub idempotency_key: String,
    pub correlation_id: String,
    pub actor: String,
    /// How long the action may take (the step timeout), if limited.
    pub timeout: Option<Duration>,
    pub platform: Arc<dyn Platform>,
    pub artifacts: Arc<dyn ArtifactSink>,
    pub http: reqwest::Client,
    /// The node's egress (its listeners, the clients that apply the destination policy).
    pub egress: Arc<net::Egress>,
    /// Where `http.call` may connect (`[actions.http]`).
    pub destinations: net::Destinations,
}

/// What an action returns.
#[derive(Clone, Debug, Default)]
pub struct ActionOutput {
    pub output: Value,
    /// Bytes received from outside (e.g. an HTTP response body).
    pub bytes_in: u64,
    /// Bytes sent outside (e.g. an HTTP request body).
    pub bytes_out: u64,
    /// Further footprints and audit events the engine writes with the step's result.
    pub records: Vec<Record>,
}

/// Something an action asks the engine to record with its step, in the same batch as the
/// step's result (so a sandboxed action's capability counts and refusals are never lost).
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A footprint of the step (`source_kind` `action`, `source_ref` the action's name).
    Footprint {
        metric: String,
        quantity: f64,
        unit: String,
        dims: Value,
    },
    /// An audit event about the step, e.g. `xyn.cap.denied`.
    Event { name: String, data: Value },
}

/// A failed action: a stable code, a sentence, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ActionError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub details: Option<Value>,
    /// Footprints and audit events recorded even though the action failed.
    pub records: Vec<Record>,
}

impl ActionError {
    pub fn new(code: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable,
            details: None,
            records: Vec::new(),
        }
    }

    pub fn with_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }

    pub fn with_records(mut self, r: Vec<Record>) -> Self {
        self.records = r;
        self
    }

    /// The error as recorded on a step.
    pub fn to_value(&self) -> Value {
        let mut v =
            json!({"code": self.code, "message": self.message, "retryable": self.retryable});
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl From<XynError> for ActionError {
    fn from(e: XynError) -> Self {
        let retryable = matches!(e.kind, xyn_core::ErrorKind::Unavailable);
        ActionError {
            code: e.code.to_string(),
            message: e.message,
            retryable,
            details: e.details,
            records: Vec::new(),
        }
    }
}

/// Which parts of an action's input and output are masked when recorded.
#[derive(Clone, Debug, Default)]
pub struct Redaction {
    /// JSON pointers whose values are masked; `*` matches any one segment.
    pub pointers: Vec<&'static str>,
    /// Also mask the value of any object key that looks sensitive (authorization, token,
    /// password, secret, api key, cookie).
    pub sensitive_keys: bool,
}

impl Redaction {
    /// Masks in place.
    pub fn apply(&self, v: &mut Value) {
        for p in &self.pointers {
            let segs: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            mask_pointer(v, &segs);
        }
        if self.sensitive_keys {
            mask_sensitive(v);
        }
    }
}

fn mask_pointer(v: &mut Value, segs: &[&str]) {
    let Some((first, rest)) = segs.split_first() else {
        *v = Value::String(xyn_core::redact::REDACTED.into());
        return;
    };
    match v {
        Value::Object(m) => {
            if *first == "*" {
                for x in m.values_mut() {
                    mask_pointer(x, rest);
                }
            } else if let Some(x) = m.get_mut(*first) {
                mask_pointer(x, rest);
            }
        }
        Value::Array(a) => {
            if *first == "*" {
                for x in a.iter_mut() {
                    mask_pointer(x, rest);
                }
            } else if let Some(x) = first.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                mask_pointer(x, rest);
            }
        }
        _ => {}
    }
}

fn is_sensitive_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase().replace('-', "_");
    xyn_core::redact::is_sensitive_header(&k)
        || k.contains("api_key")
        || k.contains("apikey")
        || k == "authorization"
}

fn mask_sensitive(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if is_sensitive_key(k) && (x.is_string() || x.is_number()) {
                    *x = Value::String(xyn_core::redact::REDACTED.into());
                } else {
                    mask_sensitive(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_sensitive),
        _ => {}
    }
}

/// An action.
#[async_trait]
pub trait Action: Send + Sync {
    /// `<namespace>.<name>`, e.g. `http.call`.
    fn name(&self) -> &str;
    /// One sentence for listings.
    fn description(&self) -> &str;
    /// JSON Schema of the input.
    fn input_schema(&self) -> Value;
    /// JSON Schema of the output.
    fn output_schema(&self) -> Value;
    /// What to mask when recording input and output.
    fn redaction(&self) -> Redaction {
        Redaction::default()
    }
    async fn execute(&self, ctx: &ActionContext, input: Value)
    -> Result<ActionOutput, ActionError>;
}

#[derive(Clone)]
struct Entry {
    action: Arc<dyn Action>,
    validator: Arc<jsonschema::Validator>,
}

/// The actions a node can run, by name. Cloning is cheap (the actions are shared), so a
/// node can build a changed copy and swap it in.
#[derive(Default, Clone)]
pub struct Registry {
    actions: BTreeMap<String, Entry>,
}

impl Registry {
    /// A registry with the built-in actions.
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for a in builtin::all() {
            // The built-in schemas are ours and valid; a bad one is a bug caught by tests.
            if let Err(e) = r.register(a) {
                tracing::error!(error = %e, "built-in action refused");
            }
        }
        r
    }

    /// Adds an action; its input schema must be a valid JSON Schema.
    pub fn register(&mut self, action: Arc<dyn Action>) -> Result<(), XynError> {
        let schema = action.input_schema();
        let validator = jsonschema::validator_for(&schema).map_err(|e| {
            XynError::invalid(
                "action.bad_schema",
                format!("input schema of {} is not valid: {e}", action.name()),
            )
        })?;
        self.actions.insert(
            action.name().to_string(),
            Entry {
                action,
                validator: Arc::new(validator),
            },
        );
        Ok(())
    }

    /// Removes an action (a pack removed or replaced it); `true` if it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        self.actions.remove(name).is_some()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.actions.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Action>> {
        self.actions.get(name).map(|e| e.action.clone())
    }

    pub fn names(&self) -> Vec<String> {
        self.actions.keys().cloned().collect()
    }

    /// Every problem of `input` against the action's schema.
    pub fn check_input(&self, name: &str, input: &Value) -> Result<(), ActionError> {
        let entry = self.actions.get(name).ok_or_else(|| {
            ActionError::new(
                xyn_core::codes::ACTION_UNKNOWN,
                format!("no action named {name:?}"),
                false,
            )
        })?;
        let problems: Vec<Value> = entry
            .validator
            .iter_errors(input)
            .map(|e| json!({"path": e.instance_path().to_string(), "message": e.to_string()}))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            let first = problems[0]["message"].as_str().unwrap_or("").to_string();
            Err(ActionError::new(
                xyn_core::codes::ACTION_INPUT_INVALID,
                format!("input of {name} does not match its schema: {first}"),
                false,
            )
            .with_details(json!({"problems": problems})))
        }
    }

    /// Checks the input, then executes.
    pub async fn execute(
        &self,
        name: &str,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        self.check_input(name, &input)?;
        let action = self.get(name).ok_or_else(|| {
            ActionError::new(
                xyn_core::codes::ACTION_UNKNOWN,
                format!("no action named {name:?}"),
                false,
            )
        })?;
        action.execute(ctx, input).await
    }

    /// Masks what `name`'s redaction rules say to mask.
    pub fn redact(&self, name: &str, v: &mut Value) {
        if let Some(e) = self.actions.get(name) {
            e.action.redaction().apply(v);
        }
    }
}

/// An HTTP client for actions and agents: rustls with the `ring` provider, no cookies,
/// connection pooling.
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("xyn/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Installs rustls's `ring` crypto provider for the process (once; later calls are no-ops).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_by_pointer_and_key() {
        let r = Redaction {
            pointers: vec!["/headers/*", "/list/*/pw"],
            sensitive_keys: true,
        };
        let mut v = json!({
            "headers": {"a": "1", "b": "2"},
            "list": [{"pw": "x", "ok": 1}],
            "nested": {"Authorization": "Bearer t", "X-Api-Key": "k", "plain": "p"}
        });
        r.apply(&mut v);
        assert_eq!(
            v,
            json!({
                "headers": {"a": "[REDACTED]", "b": "[REDACTED]"},
                "list": [{"pw": "[REDACTED]", "ok": 1}],
                "nested": {"Authorization": "[REDACTED]", "X-Api-Key": "[REDACTED]", "plain": "p"}
            })
        );
    }

    #[test]
    fn builtins_register_with_valid_schemas() {
        let r = Registry::with_builtins();
        for n in [
            "http.call",
            "events.emit",
            "drafts.save",
            "blueprints.validate",
            "blueprints.promote",
        ] {
            assert!(r.contains(n), "{n}");
        }
        let err = r
            .check_input("http.call", &json!({"method": "GET"}))
            .unwrap_err();
        assert_eq!(err.code, "action.input_invalid");
        assert!(
            r.check_input("http.call", &json!({"url": "http://x"}))
                .is_ok()
        );
    }
}
