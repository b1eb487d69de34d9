//! `xyn-action.toml`: what an action package is and which capabilities it asks for.
//!
//! ```toml
//! name = "demo.notes"            # <namespace>.<name>
//! runtime = "lua"                # wasm | lua | js
//! entry = "main.lua"             # for wasm: a .wasm binary or a .wat text module
//! input_schema = "input.json"    # optional JSON Schema files
//! output_schema = "output.json"
//!
//! [capabilities]
//! fs_read = ["inbox"]            # relative to the action's data dir
//! fs_write = ["outbox"]
//! http_hosts = ["api.example.com", "127.0.0.1:8080", "*.example.org"]
//! env = ["TZ"]                   # at most 32 names
//! db = true                      # its own SQLite database
//!
//! [capabilities.secrets.API_TOKEN] # a node secret it may refer to, never read
//! hosts = ["api.example.com"]    # the only hosts it is ever sent to
//!
//! [limits]
//! timeout_ms = 2000
//! memory_mb = 64
//! fuel = 200000000
//! max_output_bytes = 1048576
//! ```
//!
//! Unknown keys are refused (a typo in a capability must not silently widen or narrow
//! it). `version`, `description` and a `[signature]` table are accepted so the shape is
//! ready for signed packs.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;
pub use xyn_actions::net::{HostPattern, HostRule};

/// The manifest file name in a package directory.
pub const MANIFEST_FILE: &str = "xyn-action.toml";
/// The manifest file of an app (a web app run by the same runtimes, see `xyn-apps`).
pub const APP_MANIFEST_FILE: &str = "xyn-app.toml";
/// Most environment variable names an action may ask for.
pub const MAX_ENV: usize = 32;

/// Which interpreter runs the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Wasm,
    Lua,
    Js,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Wasm => "wasm",
            RuntimeKind::Lua => "lua",
            RuntimeKind::Js => "js",
        }
    }
}

/// A parsed, validated manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub runtime: RuntimeKind,
    pub entry: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub limits: ManifestLimits,
    /// Reserved for signed packs (a later issue); carried, not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<toml::Table>,
}

/// What the action may touch. Everything not named here is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Files or directories it may read, relative to its data dir.
    #[serde(default)]
    pub fs_read: Vec<String>,
    /// Files or directories it may write (and read), relative to its data dir.
    #[serde(default)]
    pub fs_write: Vec<String>,
    /// Outbound HTTP: `host` (ports 80/443), `host:port`, `*.suffix` (any subdomain,
    /// never the suffix itself), IP literals.
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// Environment variables it may read (at most 32).
    #[serde(default)]
    pub env: Vec<String>,
    /// Its own SQLite database.
    #[serde(default)]
    pub db: bool,
    /// Wall clock and monotonic time (on unless set to false).
    #[serde(default = "yes")]
    pub time: bool,
    /// Hashes, HMAC, Ed25519, random bytes, password hashing (on unless set to false).
    #[serde(default = "yes")]
    pub crypto: bool,
    /// Node secrets it may *refer to* (in HTTP headers, as signing keys), each bound to
    /// the hosts it may be sent to; the guest never reads their values.
    #[serde(default, deserialize_with = "secret_grants")]
    pub secrets: BTreeMap<String, SecretGrant>,
}

/// One secret an action may refer to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGrant {
    /// The only hosts (`host`, `host:port`, `*.suffix`, IP literals) the secret is sent
    /// to; empty: never sent over HTTP (signing keys).
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// `[capabilities.secrets.NAME] hosts = [...]`; the old list form is refused with the
/// way to migrate (a secret without hosts would be sendable anywhere).
fn secret_grants<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SecretGrant>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Table(BTreeMap<String, SecretGrant>),
        List(Vec<String>),
    }
    match Form::deserialize(d)? {
        Form::Table(t) => Ok(t),
        Form::List(names) => Err(serde::de::Error::custom(format!(
            "capabilities.secrets is a table now: bind each secret to the hosts it may be sent to, e.g. [capabilities.secrets.{}] hosts = [\"api.example.com\"]",
            names.first().map_or("NAME", String::as_str)
        ))),
    }
}

fn yes() -> bool {
    true
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            fs_read: Vec::new(),
            fs_write: Vec::new(),
            http_hosts: Vec::new(),
            env: Vec::new(),
            db: false,
            time: true,
            crypto: true,
            secrets: BTreeMap::new(),
        }
    }
}

/// Per-action budget overrides; unset ones come from the deployment defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    pub fuel: Option<u64>,
    pub max_output_bytes: Option<u64>,
    /// wasm tables: most elements.
    pub table_elements: Option<u64>,
}

/// A relative path inside a root: no absolute paths, no `..`, no empty or `.` parts.
/// Returns the normal components. This checks form only; containment is enforced by
/// resolving under a directory handle.
pub fn relative_components(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.contains('\0') {
        return Err("path contains NUL".into());
    }
    if p.starts_with('/') || p.starts_with('\\') {
        return Err("absolute paths are not allowed".into());
    }
    let mut out = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) if !s.contains('\\') => out.push(s.to_string()),
                _ => return Err("path is not plain UTF-8".into()),
            },
            Component::CurDir => {}
            Component::ParentDir => return Err("'..' is not allowed".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed".into());
            }
        }
    }
    if out.is_empty() {
        return Err("path names no file".into());
    }
    Ok(out)
}

fn valid_name(n: &str) -> bool {
    let Some((ns, name)) = n.split_once('.') else {
        return false;
    };
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    part(ns) && part(name)
}

fn valid_env_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Manifest {
    /// Parses and validates manifest text (paths are checked for form, not existence).
    pub fn parse(text: &str) -> Result<Manifest, SandboxError> {
        let m: Manifest = toml::from_str(text)
            .map_err(|e| SandboxError::manifest(format!("{MANIFEST_FILE}: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// Reads `<dir>/xyn-action.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, SandboxError> {
        let p = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&p)
            .map_err(|e| SandboxError::manifest(format!("cannot read {}: {e}", p.display())))?;
        Manifest::parse(&text)
    }

    pub fn validate(&self) -> Result<(), SandboxError> {
        let bad = |m: String| Err(SandboxError::manifest(m));
        if !valid_name(&self.name) {
            return bad(format!(
                "name {:?} must be <namespace>.<name> (lower case letters, digits, _ and -)",
                self.name
            ));
        }
        let entry = relative_components(&self.entry)
            .map_err(|e| SandboxError::manifest(format!("entry {:?}: {e}", self.entry)))?;
        let ext = entry
            .last()
            .and_then(|f| f.rsplit_once('.').map(|(_, e)| e.to_string()))
            .unwrap_or_default();
        let ok_ext = match self.runtime {
            RuntimeKind::Wasm => ext == "wasm" || ext == "wat",
            RuntimeKind::Lua => ext == "lua",
            RuntimeKind::Js => ext == "js" || ext == "mjs",
        };
        if !ok_ext {
            return bad(format!(
                "entry {:?} does not fit runtime {} (expected {})",
                self.entry,
                self.runtime.as_str(),
                match self.runtime {
                    RuntimeKind::Wasm => ".wasm or .wat",
                    RuntimeKind::Lua => ".lua",
                    RuntimeKind::Js => ".js or .mjs",
                }
            ));
        }
        for s in [&self.input_schema, &self.output_schema]
            .into_iter()
            .flatten()
        {
            relative_components(s)
                .map_err(|e| SandboxError::manifest(format!("schema {s:?}: {e}")))?;
        }
        let c = &self.capabilities;
        for (key, list) in [("fs_read", &c.fs_read), ("fs_write", &c.fs_write)] {
            for p in list {
                relative_components(p).map_err(|e| {
                    SandboxError::manifest(format!("capabilities.{key} {p:?}: {e}"))
                })?;
            }
        }
        for h in &c.http_hosts {
            HostRule::parse(h)
                .map_err(|e| SandboxError::manifest(format!("capabilities.http_hosts: {e}")))?;
        }
        if c.env.len() > MAX_ENV {
            return bad(format!(
                "capabilities.env names {} variables; at most {MAX_ENV} are allowed",
                c.env.len()
            ));
        }
        for (n, g) in &c.secrets {
            for h in &g.hosts {
                HostRule::parse(h).map_err(|e| {
                    SandboxError::manifest(format!("capabilities.secrets.{n}.hosts: {e}"))
                })?;
            }
        }
        for n in c.env.iter().chain(c.secrets.keys()) {
            if !valid_env_name(n) {
                return bad(format!("capabilities: {n:?} is not a valid variable name"));
            }
        }
        let l = &self.limits;
        let range = |key: &str, v: Option<u64>, lo: u64, hi: u64| match v {
            Some(x) if x < lo || x > hi => Err(SandboxError::manifest(format!(
                "limits.{key} = {x} is outside {lo}..={hi}"
            ))),
            _ => Ok(()),
        };
        let r = &crate::limits::MANIFEST_RANGE;
        range("timeout_ms", l.timeout_ms, r.timeout_ms.0, r.timeout_ms.1)?;
        range("memory_mb", l.memory_mb, r.memory_mb.0, r.memory_mb.1)?;
        range("fuel", l.fuel, r.fuel.0, r.fuel.1)?;
        range(
            "max_output_bytes",
            l.max_output_bytes,
            r.max_output_bytes.0,
            r.max_output_bytes.1,
        )?;
        range(
            "table_elements",
            l.table_elements,
            r.table_elements.0,
            r.table_elements.1,
        )?;
        Ok(())
    }

    /// The parsed host rules (valid by construction after `validate`).
    pub fn host_rules(&self) -> Vec<HostRule> {
        self.capabilities
            .http_hosts
            .iter()
            .filter_map(|h| HostRule::parse(h).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_bound_to_hosts_and_the_list_form_is_refused() {
        let head = "name = \"a.b\"\nruntime = \"lua\"\nentry = \"m.lua\"\n";
        let m = Manifest::parse(&format!(
            "{head}[capabilities.secrets.API_TOKEN]\nhosts = [\"api.example.com\"]\n[capabilities.secrets.signing_key]\n"
        ))
        .unwrap();
        assert_eq!(
            m.capabilities.secrets["API_TOKEN"].hosts,
            vec!["api.example.com"]
        );
        assert!(m.capabilities.secrets["signing_key"].hosts.is_empty());
        let old = Manifest::parse(&format!(
            "{head}[capabilities]\nsecrets = [\"API_TOKEN\"]\n"
        ))
        .unwrap_err();
        assert!(
            old.message
                .contains("[capabilities.secrets.API_TOKEN] hosts"),
            "{}",
            old.message
        );
        let bad = Manifest::parse(&format!(
            "{head}[capabilities.secrets.T]\nhosts = [\"http://x.com\"]\n"
        ));
        assert!(bad.is_err());
    }

    #[test]
    fn relative_paths_only() {
        assert_eq!(relative_components("a/./b").unwrap(), vec!["a", "b"]);
        for bad in ["../x", "/etc/passwd", "a/../../b", "", ".", "a/\0"] {
            assert!(relative_components(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn manifest_parses_and_refuses_typos() {
        let m = Manifest::parse(
            r#"
name = "demo.notes"
runtime = "lua"
entry = "main.lua"
[capabilities]
fs_read = ["in"]
fs_write = ["out"]
http_hosts = ["127.0.0.1:8080", "*.example.org"]
env = ["TZ"]
db = true
[limits]
timeout_ms = 500
memory_mb = 16
fuel = 1000
max_output_bytes = 4096
"#,
        )
        .unwrap();
        assert_eq!(m.runtime, RuntimeKind::Lua);
        assert!(m.capabilities.db && m.capabilities.time);
        assert_eq!(m.limits.timeout_ms, Some(500));
        let typo = Manifest::parse(
            "name = \"a.b\"\nruntime = \"lua\"\nentry = \"m.lua\"\n[capabilities]\nfs_reed = [\"x\"]\n",
        );
        assert_eq!(typo.unwrap_err().code, "manifest.invalid");
        let many: Vec<String> = (0..33).map(|i| format!("\"V{i}\"")).collect();
        let too_many = Manifest::parse(&format!(
            "name = \"a.b\"\nruntime = \"lua\"\nentry = \"m.lua\"\n[capabilities]\nenv = [{}]\n",
            many.join(",")
        ));
        assert!(too_many.unwrap_err().message.contains("at most 32"));
        for (name, rt, entry) in [
            ("nodot", "lua", "m.lua"),
            ("a.b", "lua", "m.js"),
            ("a.b", "wasm", "../m.wasm"),
            ("A.b", "js", "m.js"),
        ] {
            let t = format!("name = \"{name}\"\nruntime = \"{rt}\"\nentry = \"{entry}\"\n");
            assert!(Manifest::parse(&t).is_err(), "{t}");
        }
    }
}

/// An app's manifest (`xyn-app.toml`): `name`, `runtime`, `entry`, optional `description`,
/// and the same `[capabilities]` and `[limits]` as an action (limits apply per request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppManifest {
    pub name: String,
    pub runtime: RuntimeKind,
    pub entry: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub limits: ManifestLimits,
}

/// Whether `n` is a valid app name: lower-case letters, digits, `_` and `-`, starting with a
/// letter, at most 64 bytes (it is a URL segment: `/apps/<name>/`).
pub fn valid_app_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.as_bytes()[0].is_ascii_lowercase()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl AppManifest {
    /// Parses and validates `xyn-app.toml` text.
    pub fn parse(text: &str) -> Result<AppManifest, SandboxError> {
        let m: AppManifest = toml::from_str(text)
            .map_err(|e| SandboxError::manifest(format!("{APP_MANIFEST_FILE}: {e}")))?;
        if !valid_app_name(&m.name) {
            return Err(SandboxError::manifest(format!(
                "name {:?} must be lower case letters, digits, _ and - (starting with a letter)",
                m.name
            )));
        }
        if m.runtime == RuntimeKind::Wasm {
            return Err(SandboxError::manifest(
                "runtime \"wasm\" apps are not supported yet (use lua or js)",
            ));
        }
        m.as_action().validate()?;
        Ok(m)
    }

    /// Reads `<dir>/xyn-app.toml`.
    pub fn load(dir: &Path) -> Result<AppManifest, SandboxError> {
        let p = dir.join(APP_MANIFEST_FILE);
        let text = std::fs::read_to_string(&p)
            .map_err(|e| SandboxError::manifest(format!("cannot read {}: {e}", p.display())))?;
        AppManifest::parse(&text)
    }

    /// The action view of the app that the sandbox runs: name `app.<name>`, the same
    /// runtime, entry, capabilities and limits.
    pub fn as_action(&self) -> Manifest {
        Manifest {
            name: format!("app.{}", self.name),
            runtime: self.runtime,
            entry: self.entry.clone(),
            version: None,
            description: self.description.clone(),
            input_schema: None,
            output_schema: None,
            capabilities: self.capabilities.clone(),
            limits: self.limits.clone(),
            signature: None,
        }
    }
}
