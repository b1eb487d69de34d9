//! The statement a pack's signature carries: an in-toto Statement v1 whose subject is the
//! archive (with its sha256) and whose predicate is SLSA provenance v1 — the builder
//! `xyn/<version>`, the manifest as external parameters, and every file of the pack with its
//! digest as resolved dependencies (the tree digest as a byproduct).

use serde_json::{Value, json};

use crate::archive::{DIGESTS_FILE, DigestList};
use crate::manifest::PackManifest;
use crate::{PackError, Result, XYN_VERSION, codes};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
pub const BUILD_TYPE: &str = "https://xyn.dev/pack/build/v1";
/// The byproduct naming the tree digest.
pub const TREE_BYPRODUCT: &str = "xyn-pack.tree";

/// The statement for an archive.
pub fn statement(
    subject_name: &str,
    archive_sha256: &str,
    manifest: &PackManifest,
    digests: &DigestList,
) -> Value {
    let deps: Vec<Value> = digests
        .files
        .iter()
        .map(|f| json!({"name": f.path, "digest": {"sha256": f.sha256}}))
        .collect();
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": archive_sha256}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"manifest": manifest.to_json()},
                "internalParameters": {},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": format!("xyn/{XYN_VERSION}")},
                "metadata": {},
                "byproducts": [{"name": TREE_BYPRODUCT, "digest": {"sha256": digests.tree}}],
            },
        },
    })
}

/// What a statement claims, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub subject_sha256: String,
    pub builder_id: String,
    /// path → sha256
    pub files: Vec<(String, String)>,
    pub tree: String,
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Result<&'a str> {
    v.pointer(ptr).and_then(Value::as_str).ok_or_else(|| {
        PackError::new(
            codes::SIGNATURE_INVALID,
            format!("the signed statement has no {ptr}"),
        )
    })
}

/// Reads the claims of a signed statement; a statement of another kind is
/// `pack.signature_invalid`.
pub fn claims(v: &Value) -> Result<Claims> {
    let ty = str_at(v, "/_type")?;
    let pt = str_at(v, "/predicateType")?;
    if ty != STATEMENT_TYPE || pt != SLSA_PROVENANCE_V1 {
        return Err(PackError::new(
            codes::SIGNATURE_INVALID,
            format!("the signed statement is {ty} / {pt}, not an in-toto v1 SLSA provenance"),
        ));
    }
    let subjects = v
        .pointer("/subject")
        .and_then(Value::as_array)
        .filter(|s| s.len() == 1)
        .ok_or_else(|| {
            PackError::new(
                codes::SIGNATURE_INVALID,
                "the signed statement must have exactly one subject",
            )
        })?;
    let subject_sha256 = str_at(&subjects[0], "/digest/sha256")?.to_string();
    let builder_id = str_at(v, "/predicate/runDetails/builder/id")?.to_string();
    let deps = v
        .pointer("/predicate/buildDefinition/resolvedDependencies")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            PackError::new(
                codes::SIGNATURE_INVALID,
                "the signed statement has no resolvedDependencies",
            )
        })?;
    let mut files = Vec::with_capacity(deps.len());
    for d in deps {
        files.push((
            str_at(d, "/name")?.to_string(),
            str_at(d, "/digest/sha256")?.to_string(),
        ));
    }
    let tree = v
        .pointer("/predicate/runDetails/byproducts")
        .and_then(Value::as_array)
        .and_then(|b| {
            b.iter()
                .find(|x| x.get("name").and_then(Value::as_str) == Some(TREE_BYPRODUCT))
        })
        .and_then(|x| x.pointer("/digest/sha256"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            PackError::new(
                codes::SIGNATURE_INVALID,
                format!("the signed statement has no {TREE_BYPRODUCT} byproduct"),
            )
        })?
        .to_string();
    Ok(Claims {
        subject_sha256,
        builder_id,
        files,
        tree,
    })
}

/// Checks the (authenticated) claims against the archive: every file's digest first (so a
/// changed file is named), then the tree digest, then the archive's own digest.
pub fn check_claims(
    c: &Claims,
    archive_name: &str,
    archive_sha256: &str,
    list: &DigestList,
) -> Result<()> {
    let mismatch = |file: &str, why: String| {
        Err(PackError::new(codes::DIGEST_MISMATCH, format!("{file}: {why}")).with_file(file))
    };
    let signed: std::collections::BTreeMap<&str, &str> = c
        .files
        .iter()
        .map(|(p, s)| (p.as_str(), s.as_str()))
        .collect();
    for f in &list.files {
        match signed.get(f.path.as_str()) {
            Some(s) if *s == f.sha256 => {}
            Some(s) => {
                return mismatch(
                    &f.path,
                    format!("sha256 {} differs from the signed {s}", f.sha256),
                );
            }
            None => return mismatch(&f.path, "not among the signed files".into()),
        }
    }
    if signed.len() != list.files.len() {
        let listed: std::collections::BTreeSet<&str> =
            list.files.iter().map(|f| f.path.as_str()).collect();
        let missing = signed
            .keys()
            .find(|p| !listed.contains(*p))
            .copied()
            .unwrap_or(DIGESTS_FILE);
        return mismatch(missing, "signed but not in the pack".into());
    }
    if c.tree != list.tree {
        return mismatch(
            DIGESTS_FILE,
            format!(
                "tree digest {} differs from the signed {}",
                list.tree, c.tree
            ),
        );
    }
    if c.subject_sha256 != archive_sha256 {
        return mismatch(
            archive_name,
            format!(
                "the archive's sha256 {archive_sha256} differs from the signed {}",
                c.subject_sha256
            ),
        );
    }
    Ok(())
}
