//! Secret references by path (`{{secret "team/payments/db"}}`): read from the node's secret
//! store right before an effect runs, each read recorded as an `xyn.secret.read` event of the
//! step (committed with the step's durable start, so before the value is used). Values live
//! only in memory for the step; what the step leaves behind is scrubbed by value, each
//! occurrence replaced by `[redacted:<path>]`.

use std::collections::HashMap;

use serde_json::{Value, json};
use xyn_core::run::{RunMachine, error_value};
use xyn_core::template::{Expr, Root};
use xyn_secrets::SecretPath;
use zeroize::Zeroizing;

use crate::Node;

/// The secrets a step referenced by path, resolved.
#[derive(Default)]
pub(crate) struct StepSecrets {
    values: HashMap<String, Zeroizing<String>>,
    /// `(path, value)`, for scrubbing by value.
    pub(crate) labelled: Vec<(String, String)>,
}

impl StepSecrets {
    /// The value of a path reference; `None` for any other name.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).map(|v| v.to_string())
    }
}

impl Drop for StepSecrets {
    fn drop(&mut self) {
        for (_, v) in self.labelled.iter_mut() {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

/// Whether an expression references the secret store by path.
fn path_ref(e: &Expr) -> Option<&str> {
    match (e.root, e.path.as_slice(), e.first_key()) {
        (Root::Secrets, [_], Some(k)) if k.contains('/') => Some(k),
        _ => None,
    }
}

impl Node {
    /// Resolves every path reference among `exprs`, recording one `xyn.secret.read` per path.
    /// On failure, the error value to fail the step with (never a value).
    pub(crate) async fn resolve_secret_refs<'e>(
        &self,
        m: &mut RunMachine,
        i: usize,
        exprs: impl IntoIterator<Item = &'e Expr>,
    ) -> Result<StepSecrets, Value> {
        let mut out = StepSecrets::default();
        let paths: Vec<String> = exprs
            .into_iter()
            .filter_map(path_ref)
            .map(str::to_string)
            .collect();
        if paths.is_empty() {
            return Ok(out);
        }
        let inner = self.inner();
        let Some(store) = inner.secret_store.as_ref() else {
            return Err(error_value(
                "secret.store_unavailable",
                "this node has no secret store; secret references by path cannot be resolved",
            ));
        };
        for name in paths {
            if out.values.contains_key(&name) {
                continue;
            }
            let path = SecretPath::parse(&name).map_err(|e| error_value(e.code, e.message))?;
            let got = store
                .resolve(&path)
                .await
                .map_err(|e| error_value(e.code, e.message))?;
            let Some(got) = got else {
                return Err(json!({
                    "code": "secret.missing",
                    "message": format!("no secret at {path} (store one with `xyn secret set {path} --value-stdin`)"),
                }));
            };
            let data = json!({
                "path": path.as_str(),
                "version": got.version,
                "backend": got.backend,
                "actor": m.run.actor,
                "step": m.steps[i].name,
            });
            m.record_step_event(
                inner.ids.as_ref(),
                inner.clock.now(),
                i,
                xyn_secrets::SECRET_READ,
                data,
            );
            let v = got.value.expose().to_string();
            out.labelled.push((name.clone(), v.clone()));
            out.values.insert(name, Zeroizing::new(v));
        }
        Ok(out)
    }
}
