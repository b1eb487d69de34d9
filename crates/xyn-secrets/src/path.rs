//! Canonical secret paths: `sys/<env_id>/providers/<name>`, `sys/<env_id>/integrations/<name>`
//! and `team/<team_id>/<name>`. Anything else is refused before it reaches a backend.

use std::fmt;

use xyn_core::XynError;

use crate::codes;

/// Longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 256;
/// Longest accepted segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 64;

/// Who a path belongs to, which decides who may touch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `sys/<env_id>/…`: operator-managed system secrets.
    System { env_id: String },
    /// `team/<team_id>/…`.
    Team { team_id: String },
}

/// A validated secret path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath(String);

impl SecretPath {
    /// Checks `s` against the canonical shapes.
    pub fn parse(s: &str) -> Result<Self, XynError> {
        let bad = |why: &str| {
            XynError::invalid(
                codes::PATH_INVALID,
                format!(
                    "{why}; a secret path is sys/<env_id>/providers/<name>, \
                     sys/<env_id>/integrations/<name> or team/<team_id>/<name>"
                ),
            )
        };
        if s.len() > MAX_PATH_BYTES {
            return Err(bad(&format!(
                "the path is longer than {MAX_PATH_BYTES} bytes"
            )));
        }
        let segs: Vec<&str> = s.split('/').collect();
        for seg in &segs {
            if seg.is_empty() {
                return Err(bad("the path has an empty segment"));
            }
            if *seg == "." || *seg == ".." {
                return Err(bad("the path has a '.' or '..' segment"));
            }
            if seg.len() > MAX_SEGMENT_BYTES {
                return Err(bad(&format!(
                    "a segment is longer than {MAX_SEGMENT_BYTES} bytes"
                )));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(bad("segments use letters, digits, '-', '_' and '.' only"));
            }
        }
        match segs.as_slice() {
            ["sys", _, "providers" | "integrations", _] | ["team", _, _] => Ok(Self(s.to_string())),
            _ => Err(bad(&format!("{s:?} is not a canonical secret path"))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn scope(&self) -> Scope {
        let mut it = self.0.split('/');
        match (it.next(), it.next()) {
            (Some("sys"), Some(env)) => Scope::System {
                env_id: env.to_string(),
            },
            (_, Some(team)) => Scope::Team {
                team_id: team.to_string(),
            },
            _ => Scope::Team {
                team_id: String::new(),
            },
        }
    }

    /// The environment variable the environment backend reads for this path:
    /// `sys/prod/providers/openai` → `XYN_SECRET_SYS_PROD_PROVIDERS_OPENAI`.
    pub fn env_var(&self) -> String {
        xyn_core::redact::secret_env_var(&self.0)
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a listing prefix: empty, or the start of a canonical path (same characters, no
/// `..`), so a prefix cannot smuggle anything a path could not.
pub fn check_prefix(prefix: &str) -> Result<(), XynError> {
    let ok = prefix.len() <= MAX_PATH_BYTES
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && !prefix.split('/').any(|s| s == "..");
    if ok {
        Ok(())
    } else {
        Err(XynError::invalid(
            codes::PATH_INVALID,
            "a prefix uses letters, digits, '-', '_', '.' and '/' only, without '..'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_are_accepted() {
        for p in [
            "sys/prod/providers/openai",
            "sys/dev-1/integrations/checkmk.token",
            "team/payments/db_password",
        ] {
            let sp = SecretPath::parse(p).unwrap();
            assert_eq!(sp.as_str(), p);
        }
        assert_eq!(
            SecretPath::parse("sys/prod/providers/openai")
                .unwrap()
                .scope(),
            Scope::System {
                env_id: "prod".into()
            }
        );
        assert_eq!(
            SecretPath::parse("team/t1/x").unwrap().scope(),
            Scope::Team {
                team_id: "t1".into()
            }
        );
        assert_eq!(
            SecretPath::parse("sys/prod/providers/open-ai")
                .unwrap()
                .env_var(),
            "XYN_SECRET_SYS_PROD_PROVIDERS_OPEN_AI"
        );
    }

    #[test]
    fn everything_else_is_refused() {
        let long_seg = "a".repeat(65);
        let long_name = format!("team/t1/{long_seg}");
        let long_path = format!("team/{}/{}", "b".repeat(64), "c".repeat(200));
        for p in [
            "",
            "sys",
            "sys/prod/openai",
            "sys/prod/providers",
            "sys/prod/providers/openai/extra",
            "sys/prod/other/openai",
            "team/t1",
            "team/t1/a/b",
            "user/u1/x",
            "/team/t1/x",
            "team/t1/x/",
            "team//x",
            "team/../x",
            "team/t1/..",
            "team/./x",
            "team/t1/a\0b",
            "team/t1/a b",
            "team/t1/ä",
            "team/t1/a\nb",
            "team\\t1\\x",
            long_seg.as_str(),
            long_name.as_str(),
            long_path.as_str(),
        ] {
            let e = SecretPath::parse(p).unwrap_err();
            assert_eq!(e.code, codes::PATH_INVALID, "{p:?}");
        }
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("sys/prod/").is_ok());
        assert!(check_prefix("team/../sys").is_err());
        assert!(check_prefix("team/%").is_err());
        assert!(check_prefix("team/_\0").is_err());
    }
}
