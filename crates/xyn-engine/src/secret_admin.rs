//! Managing the secret store through the node (the API's `/api/v1/secrets`): list metadata,
//! write a new version, remove. Values go in, never out; every change is an audit event.

use serde_json::json;
use xyn_core::event::Resource;
use xyn_core::{ErrorKind, XynError};
use xyn_secrets::{SecretMeta, SecretPath, SecretStore, SecretValue};

use crate::Node;

impl Node {
    fn secrets_or_unavailable(&self) -> Result<&xyn_secrets::Secrets, XynError> {
        self.inner().secret_store.as_ref().ok_or_else(|| {
            XynError::new(
                ErrorKind::Unavailable,
                "secret.store_unavailable",
                "this node has no secret store",
            )
        })
    }

    /// Metadata of the locally stored secrets under `prefix`.
    pub async fn list_secrets(&self, prefix: &str) -> Result<Vec<SecretMeta>, XynError> {
        self.secrets_or_unavailable()?.local.list(prefix).await
    }

    /// Stores a new version of `path`, recording `xyn.secret.written`.
    pub async fn put_secret(
        &self,
        path: &SecretPath,
        value: SecretValue,
        actor: &str,
        correlation_id: Option<String>,
    ) -> Result<SecretMeta, XynError> {
        let meta = self
            .secrets_or_unavailable()?
            .local
            .put(path, &value, actor)
            .await?;
        self.record_audit(
            xyn_secrets::SECRET_WRITTEN,
            actor,
            correlation_id,
            Some(resource(path)),
            xyn_secrets::audit_data(path, meta.version, "local", actor),
        )
        .await?;
        Ok(meta)
    }

    /// Removes every version of `path`, recording `xyn.secret.deleted`.
    pub async fn delete_secret(
        &self,
        path: &SecretPath,
        actor: &str,
        correlation_id: Option<String>,
    ) -> Result<(), XynError> {
        if !self.secrets_or_unavailable()?.local.delete(path).await? {
            return Err(XynError::not_found(
                xyn_secrets::codes::NOT_FOUND,
                format!("no secret at {path}"),
            ));
        }
        self.record_audit(
            xyn_secrets::SECRET_DELETED,
            actor,
            correlation_id,
            Some(resource(path)),
            json!({"path": path.as_str(), "actor": actor}),
        )
        .await?;
        Ok(())
    }
}

fn resource(path: &SecretPath) -> Resource {
    Resource {
        kind: "secret".into(),
        id: path.as_str().into(),
    }
}
