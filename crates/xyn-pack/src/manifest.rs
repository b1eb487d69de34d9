//! `xyn-pack.toml`: what a pack is, which Xyn versions it runs on, and what it needs.
//!
//! ```toml
//! id = "acme.hello"            # ns.name: lower-case segments joined by dots
//! version = "1.2.0"            # semver
//! xyn = ">=0.1, <0.2"          # the Xyn versions it runs on (a semver range)
//! description = "Says hello"
//!
//! [depends]                    # other packs, each with a version range
//! "acme.base" = "^1.0"
//! ```

use std::collections::BTreeMap;

use semver::{Version, VersionReq};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{PackError, Result};

/// The manifest's file name at the root of a pack.
pub const MANIFEST_FILE: &str = "xyn-pack.toml";

/// The folders a pack may hold besides its manifest.
pub const FOLDERS: &[&str] = &[
    "blueprints",
    "actions",
    "apps",
    "policies",
    "migrations",
    "specs",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: String,
    version: String,
    xyn: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    depends: BTreeMap<String, String>,
}

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackManifest {
    pub id: String,
    pub version: Version,
    pub xyn: VersionReq,
    pub description: String,
    pub depends: BTreeMap<String, VersionReq>,
}

/// Checks a pack id: `ns.name`, two or more segments of `[a-z][a-z0-9_-]*`, at most 128
/// characters.
pub fn check_id(id: &str) -> Result<()> {
    let seg_ok = |s: &str| {
        let mut cs = s.chars();
        matches!(cs.next(), Some('a'..='z'))
            && cs.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    };
    let segs: Vec<&str> = id.split('.').collect();
    if id.len() > 128 || segs.len() < 2 || !segs.iter().all(|s| seg_ok(s)) {
        return Err(PackError::invalid(format!(
            "pack id {id:?} must be ns.name: two or more lower-case segments \
             ([a-z][a-z0-9_-]*) joined by dots, at most 128 characters"
        ))
        .with_file(MANIFEST_FILE));
    }
    Ok(())
}

impl PackManifest {
    /// Parses and validates `xyn-pack.toml`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |m: String| PackError::invalid(m).with_file(MANIFEST_FILE);
        let raw: Raw =
            toml::from_str(text).map_err(|e| bad(format!("{MANIFEST_FILE} is not valid: {e}")))?;
        check_id(&raw.id)?;
        let version = Version::parse(&raw.version)
            .map_err(|e| bad(format!("version {:?} is not semver: {e}", raw.version)))?;
        let xyn = VersionReq::parse(&raw.xyn)
            .map_err(|e| bad(format!("xyn {:?} is not a semver range: {e}", raw.xyn)))?;
        let mut depends = BTreeMap::new();
        for (id, range) in raw.depends {
            check_id(&id)?;
            if id == raw.id {
                return Err(bad(format!("pack {id} depends on itself")));
            }
            let req = VersionReq::parse(&range).map_err(|e| {
                bad(format!(
                    "depends.{id} = {range:?} is not a semver range: {e}"
                ))
            })?;
            depends.insert(id, req);
        }
        Ok(Self {
            id: raw.id,
            version,
            xyn,
            description: raw.description,
            depends,
        })
    }

    /// Whether this pack runs on Xyn `version`; `pack.incompatible` when not.
    pub fn check_compatible(&self, xyn_version: &str) -> Result<()> {
        let v = Version::parse(xyn_version).map_err(|e| {
            PackError::new(
                crate::codes::INCOMPATIBLE,
                format!("Xyn version {xyn_version:?} is not semver: {e}"),
            )
        })?;
        if !self.xyn.matches(&v) {
            return Err(PackError::new(
                crate::codes::INCOMPATIBLE,
                format!(
                    "pack {}@{} needs Xyn {}, this is {xyn_version}",
                    self.id, self.version, self.xyn
                ),
            ));
        }
        Ok(())
    }

    /// Checks the dependencies against the installed packs (id → version);
    /// `pack.missing_dependency` naming the first one missing or out of range.
    pub fn check_dependencies(&self, installed: &BTreeMap<String, Version>) -> Result<()> {
        for (id, req) in &self.depends {
            match installed.get(id) {
                Some(v) if req.matches(v) => {}
                Some(v) => {
                    return Err(PackError::new(
                        crate::codes::MISSING_DEPENDENCY,
                        format!(
                            "pack {} needs {id} {req}, but {id} {v} is installed",
                            self.id
                        ),
                    ));
                }
                None => {
                    return Err(PackError::new(
                        crate::codes::MISSING_DEPENDENCY,
                        format!("pack {} needs {id} {req}, which is not installed", self.id),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The manifest as JSON (the provenance's external parameters, `inspect`, the API).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "version": self.version.to_string(),
            "xyn": self.xyn.to_string(),
            "description": self.description,
            "depends": self.depends.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "acme.hello"
version = "1.2.0"
xyn = ">=0.1, <0.2"
description = "Says hello"
[depends]
"acme.base" = "^1.0"
"#;

    #[test]
    fn a_good_manifest_parses_with_its_ranges() {
        let m = PackManifest::parse(GOOD).unwrap();
        assert_eq!(m.id, "acme.hello");
        assert_eq!(m.version, Version::new(1, 2, 0));
        assert!(m.check_compatible("0.1.7").is_ok());
        assert_eq!(
            m.check_compatible("0.2.0").unwrap_err().code,
            crate::codes::INCOMPATIBLE
        );
        let mut installed = BTreeMap::new();
        let e = m.check_dependencies(&installed).unwrap_err();
        assert_eq!(e.code, crate::codes::MISSING_DEPENDENCY);
        installed.insert("acme.base".to_string(), Version::new(2, 0, 0));
        let e = m.check_dependencies(&installed).unwrap_err();
        assert_eq!(e.code, crate::codes::MISSING_DEPENDENCY);
        installed.insert("acme.base".to_string(), Version::new(1, 4, 0));
        assert!(m.check_dependencies(&installed).is_ok());
        assert_eq!(m.to_json()["depends"]["acme.base"], "^1.0");
    }

    #[test]
    fn bad_manifests_are_refused_with_pack_invalid() {
        for bad in [
            GOOD.replace("acme.hello", "hello"),
            GOOD.replace("acme.hello", "Acme.hello"),
            GOOD.replace("acme.hello", "acme..hello"),
            GOOD.replace("\"1.2.0\"", "\"1.2\""),
            GOOD.replace(">=0.1, <0.2", "newest"),
            GOOD.replace("^1.0", "one"),
            GOOD.replace("\"acme.base\"", "\"acme.hello\""),
            format!("{GOOD}\nextra = 1\n").replace("[depends]", "colour = \"red\"\n[depends]"),
            "id = \"acme.x\"".to_string(),
        ] {
            let e = PackManifest::parse(&bad).unwrap_err();
            assert_eq!(e.code, crate::codes::INVALID, "{bad}");
            assert_eq!(e.file.as_deref(), Some(MANIFEST_FILE));
        }
    }
}
