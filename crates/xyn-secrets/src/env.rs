//! The environment backend: read-only, `XYN_SECRET_<PATH>` (the path upper-cased, every other
//! character `_`), read from a snapshot of the environment taken when the node starts.

use std::collections::HashMap;

use async_trait::async_trait;
use xyn_core::XynError;
use zeroize::Zeroizing;

use crate::{Resolved, SecretMeta, SecretPath, SecretStore, SecretValue, VersionMeta, codes};

/// Variables that configure the secret store itself: never readable as secrets.
pub const RESERVED_VARS: &[&str] = &[
    "XYN_SECRET_PASSPHRASE",
    "XYN_SECRET_NEW_PASSPHRASE",
    "XYN_SECRETS_PASSPHRASE",
];

/// Environment-provided secrets.
pub struct EnvSecretStore {
    vars: HashMap<String, Zeroizing<String>>,
}

impl EnvSecretStore {
    /// A snapshot of the process's `XYN_SECRET_*` variables.
    pub fn from_process() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// From the given variables (tests never change the process environment).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            vars: vars
                .into_iter()
                .filter(|(k, v)| {
                    k.starts_with("XYN_SECRET_")
                        && !RESERVED_VARS.contains(&k.as_str())
                        && !v.is_empty()
                })
                .map(|(k, v)| (k, Zeroizing::new(v)))
                .collect(),
        }
    }
}

fn read_only() -> XynError {
    XynError::conflict(
        codes::READ_ONLY,
        "environment secrets are read-only; store the secret in the local store instead",
    )
}

#[async_trait]
impl SecretStore for EnvSecretStore {
    fn backend(&self) -> &'static str {
        "env"
    }

    async fn put(&self, _: &SecretPath, _: &SecretValue, _: &str) -> Result<SecretMeta, XynError> {
        Err(read_only())
    }

    async fn get(
        &self,
        path: &SecretPath,
        version: Option<i64>,
    ) -> Result<Option<Resolved>, XynError> {
        if version.is_some_and(|v| v != 0) {
            return Ok(None);
        }
        Ok(self.vars.get(&path.env_var()).map(|v| Resolved {
            value: SecretValue::stored(v.clone()),
            version: 0,
            backend: "env",
        }))
    }

    async fn list(&self, _: &str) -> Result<Vec<SecretMeta>, XynError> {
        // Variable names do not map back to paths unambiguously: nothing is listed.
        Ok(Vec::new())
    }

    async fn versions(&self, _: &SecretPath) -> Result<Vec<VersionMeta>, XynError> {
        Ok(Vec::new())
    }

    async fn delete(&self, _: &SecretPath) -> Result<bool, XynError> {
        Err(read_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_only_its_prefix_and_never_the_passphrase() {
        let s = EnvSecretStore::from_vars([
            ("XYN_SECRET_TEAM_T1_DB".to_string(), "pw-1234".to_string()),
            ("OPENAI_API_KEY".to_string(), "sk-zzz".to_string()),
            (
                "XYN_SECRET_PASSPHRASE".to_string(),
                "master-pass".to_string(),
            ),
        ]);
        let p = SecretPath::parse("team/t1/db").unwrap();
        let r = s.get(&p, None).await.unwrap().unwrap();
        assert_eq!(
            (r.value.expose(), r.version, r.backend),
            ("pw-1234", 0, "env")
        );
        assert!(s.get(&p, Some(2)).await.unwrap().is_none());
        // `team/t1/x` cannot name OPENAI_API_KEY, and no path names the passphrase.
        assert!(s.vars.keys().all(|k| k != "XYN_SECRET_PASSPHRASE"));
        assert_eq!(
            s.put(&p, &SecretValue::new("v".into()).unwrap(), "a")
                .await
                .unwrap_err()
                .code,
            codes::READ_ONLY
        );
        assert_eq!(s.delete(&p).await.unwrap_err().code, codes::READ_ONLY);
    }
}
