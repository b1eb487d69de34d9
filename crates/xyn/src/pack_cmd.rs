//! `xyn key`, `xyn trust` and `xyn pack`: signing keys, the node's trusted publishers, and
//! building, signing, verifying, inspecting, installing and removing packs. The format and
//! the checks live in `xyn-pack`; this module prints, exits with the codes, and records trust
//! changes in the node's event log (through `pack_install::record_event`, the one place that
//! opens the store).
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};
use xyn_pack::PackError;
use xyn_pack::keys::{self, TrustChange, TrustStore};
use xyn_pack::verify::{KeyPolicy, read_envelope, sig_path, verify_pack};

use crate::cli::StoreArgs;
use crate::pack_install;

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create an Ed25519 signing key (private key file mode 0600 in <data-dir>/keys/, or at
    /// --out); prints its public key as ed25519:<base64>.
    New {
        /// The key's name (its file in <data-dir>/keys/).
        name: String,
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Write the private key to this file instead of the data dir.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the signing keys in the data dir with their public keys.
    List {
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Print JSON instead of a human summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrustCmd {
    /// Trust a publisher's public key (ed25519:<base64>) under a name; an audit event.
    Add {
        /// A name for the publisher.
        name: String,
        /// The publisher's public key, ed25519:<base64>.
        public_key: String,
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the trusted publishers.
    List {
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Print JSON instead of a human summary.
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a publisher; an audit event.
    Remove {
        /// The publisher's name.
        name: String,
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum PackCmd {
    /// Build a reproducible pack archive from a directory with xyn-pack.toml.
    Build {
        /// The directory holding xyn-pack.toml.
        dir: PathBuf,
        /// Where to write the archive.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Sign a pack archive: writes FILE.sig.json (a DSSE envelope over in-toto/SLSA
    /// provenance).
    Sign {
        /// The pack archive.
        file: PathBuf,
        /// The key's name in the data dir (or a path to a key file).
        #[arg(long)]
        key: String,
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
    },
    /// Check every digest and the signature(s). Exit 0, or 1 with the code on stderr.
    Verify {
        /// The pack archive.
        file: PathBuf,
        /// Require a signature by this key (ed25519:<base64>).
        #[arg(long)]
        key: Option<String>,
        /// The envelope (default: FILE.sig.json).
        #[arg(long)]
        sig: Option<PathBuf>,
        /// Whose trust store names the signers.
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Print JSON instead of a human summary.
        #[arg(long)]
        json: bool,
    },
    /// Show a pack's manifest, files, digests, signers and required capabilities.
    Inspect {
        /// The pack archive.
        file: PathBuf,
        /// The envelope (default: FILE.sig.json).
        #[arg(long)]
        sig: Option<PathBuf>,
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Print JSON instead of a human summary.
        #[arg(long)]
        json: bool,
    },
    /// Install a pack: digests, a signature by a trusted key, the Xyn range and
    /// dependencies are checked before anything changes. Exit 0, or 1 with the code.
    Install {
        /// The pack archive.
        file: PathBuf,
        /// The envelope (default: FILE.sig.json).
        #[arg(long)]
        sig: Option<PathBuf>,
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Install without a trusted signature (recorded in the audit log).
        #[arg(long)]
        allow_unsigned: bool,
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a human summary.
        #[arg(long)]
        json: bool,
    },
    /// List the installed packs (first finishing or undoing an install a crash interrupted).
    List {
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        /// Print JSON instead of a human summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an installed pack (its actions go; its blueprint versions stay, as versions
    /// always do, for runs that use them).
    Remove {
        /// The pack's id.
        id: String,
        /// The node's data directory (default ./xyn-data).
        #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Prints `code: message` on stderr and exits 1.
pub fn fail(e: &PackError) -> Result<ExitCode> {
    eprintln!("{}: {}", e.code, e.message);
    Ok(ExitCode::from(1))
}

pub fn key(cmd: KeyCmd) -> Result<ExitCode> {
    match cmd {
        KeyCmd::New {
            name,
            data_dir,
            out,
        } => {
            let made = match &out {
                Some(p) => keys::check_name(&name).and_then(|_| keys::new_key_at(p)),
                None => keys::new_key(&data_dir, &name),
            };
            match made {
                Ok(k) => {
                    let path = match out {
                        Some(p) => p,
                        None => keys::key_path(&data_dir, &name)?,
                    };
                    eprintln!("key {name} written to {} (keep it private)", path.display());
                    println!("{}", keys::public_key_string(&k.verifying_key()));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => fail(&e),
            }
        }
        KeyCmd::List { data_dir, json } => {
            let rows: Vec<Value> = match keys::list_keys(&data_dir) {
                Ok(l) => l
                    .into_iter()
                    .map(|(name, pk)| match pk {
                        Ok(pk) => json!({"name": name, "public_key": pk}),
                        Err(e) => {
                            json!({"name": name, "error": {"code": e.code, "message": e.message}})
                        }
                    })
                    .collect(),
                Err(e) => return fail(&e),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no keys in {}", keys::keys_dir(&data_dir).display());
            } else {
                for r in rows {
                    println!(
                        "{:<24} {}",
                        r["name"].as_str().unwrap_or_default(),
                        r["public_key"]
                            .as_str()
                            .unwrap_or_else(|| r["error"]["message"].as_str().unwrap_or("?"))
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn trust(cmd: TrustCmd) -> Result<ExitCode> {
    match cmd {
        TrustCmd::Add {
            name,
            public_key,
            data_dir,
            store,
        } => match TrustStore::add(&data_dir, &name, &public_key) {
            Ok((TrustChange::Unchanged, key)) => {
                println!("{name} already trusts {key}");
                Ok(ExitCode::SUCCESS)
            }
            Ok((_, key)) => {
                // A change that cannot be audited is undone.
                if let Err(e) = pack_install::record_event(
                    &data_dir,
                    &store,
                    pack_install::TRUST_ADDED,
                    ("trust", &name),
                    json!({"name": name, "public_key": key}),
                ) {
                    let _ = TrustStore::remove(&data_dir, &name);
                    return Err(e.context("the trust change was undone"));
                }
                println!("trusted {name} = {key}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => fail(&e),
        },
        TrustCmd::List { data_dir, json } => {
            let t = match TrustStore::load(&data_dir) {
                Ok(t) => t,
                Err(e) => return fail(&e),
            };
            if json {
                let rows: Vec<Value> = t
                    .keys
                    .iter()
                    .map(|(n, k)| json!({"name": n, "public_key": k}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if t.keys.is_empty() {
                println!(
                    "no trusted keys in {}",
                    TrustStore::path(&data_dir).display()
                );
            } else {
                for (n, k) in &t.keys {
                    println!("{n:<24} {k}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TrustCmd::Remove {
            name,
            data_dir,
            store,
        } => match TrustStore::remove(&data_dir, &name) {
            Ok(key) => {
                if let Err(e) = pack_install::record_event(
                    &data_dir,
                    &store,
                    pack_install::TRUST_REMOVED,
                    ("trust", &name),
                    json!({"name": name, "public_key": key}),
                ) {
                    let _ = TrustStore::add(&data_dir, &name, &key);
                    return Err(e.context("the trust change was undone"));
                }
                println!("no longer trusted: {name} ({key})");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => fail(&e),
        },
    }
}

fn envelope_for(file: &Path, sig: Option<&Path>) -> Result<Option<Vec<u8>>, PackError> {
    read_envelope(&sig.map_or_else(|| sig_path(file), Path::to_path_buf))
}

/// The capabilities the pack's actions ask for, by action (from their xyn-action.toml).
pub fn required_capabilities(pack: &xyn_pack::Pack) -> Value {
    let mut out = serde_json::Map::new();
    for (path, bytes) in &pack.files {
        let Some(name) = path
            .strip_prefix("actions/")
            .and_then(|r| r.strip_suffix("/xyn-action.toml"))
            .filter(|n| !n.contains('/'))
        else {
            continue;
        };
        let v = match std::str::from_utf8(bytes)
            .ok()
            .map(xyn_sandbox::Manifest::parse)
        {
            Some(Ok(m)) => json!(m.capabilities),
            Some(Err(e)) => json!({"error": e.to_value()}),
            None => json!({"error": "not UTF-8"}),
        };
        out.insert(name.to_string(), v);
    }
    Value::Object(out)
}

pub fn pack(cmd: PackCmd) -> Result<ExitCode> {
    match cmd {
        PackCmd::Build { dir, out } => match xyn_pack::build(&dir, &out) {
            Ok((m, list)) => {
                let (sha, size) = xyn_pack::archive::file_sha256(&out)?;
                println!(
                    "built {} {} ({} files, {size} bytes) -> {}\nsha256 {sha}\ntree   {}",
                    m.id,
                    m.version,
                    list.files.len(),
                    out.display(),
                    list.tree
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => fail(&e),
        },
        PackCmd::Sign {
            file,
            key,
            data_dir,
        } => {
            let signed =
                keys::load_key(&data_dir, &key).and_then(|k| xyn_pack::verify::sign(&file, &k));
            match signed {
                Ok((path, env)) => {
                    println!(
                        "signed {} -> {} ({} signature{})",
                        file.display(),
                        path.display(),
                        env.signatures.len(),
                        if env.signatures.len() == 1 { "" } else { "s" }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => fail(&e),
            }
        }
        PackCmd::Verify {
            file,
            key,
            sig,
            data_dir,
            json,
        } => {
            let policy = match key.as_deref().map(keys::parse_public_key) {
                Some(Ok(k)) => KeyPolicy::Only(k),
                Some(Err(e)) => return fail(&e),
                None => match TrustStore::load(&data_dir) {
                    Ok(t) => KeyPolicy::Report(t),
                    Err(e) => return fail(&e),
                },
            };
            let env = match envelope_for(&file, sig.as_deref()) {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            match verify_pack(&file, env.as_deref(), &policy, false) {
                Ok(v) => {
                    let m = &v.pack.manifest;
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&json!({
                                "id": m.id, "version": m.version.to_string(),
                                "sha256": v.pack.archive_sha256, "tree": v.pack.digests.tree,
                                "files": v.pack.digests.files.len(),
                                "builder": v.builder_id, "signers": v.signers,
                            }))?
                        );
                    } else {
                        println!(
                            "verified {} {}: {} files, sha256 {}",
                            m.id,
                            m.version,
                            v.pack.digests.files.len(),
                            v.pack.archive_sha256
                        );
                        for s in &v.signers {
                            println!(
                                "signed by {}{}",
                                s.public_key,
                                s.trusted_as
                                    .as_ref()
                                    .map(|n| format!(" (trusted as {n})"))
                                    .unwrap_or_else(|| " (not in the trust store)".into())
                            );
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => fail(&e),
            }
        }
        PackCmd::Inspect {
            file,
            sig,
            data_dir,
            json,
        } => inspect(&file, sig.as_deref(), &data_dir, json),
        PackCmd::Install {
            file,
            sig,
            data_dir,
            allow_unsigned,
            store,
            json,
        } => {
            let env = match envelope_for(&file, sig.as_deref()) {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            pack_install::recover_offline(&data_dir, &store)?;
            match pack_install::install(
                &file,
                env.as_deref(),
                &data_dir,
                pack_install::Target::Offline(&store),
                allow_unsigned,
            )
            .map_err(|e| {
                if format!("{e:#}").contains("in use by another xyn process") {
                    e.context("a running node installs packs uploaded to POST /api/v1/packs")
                } else {
                    e
                }
            })? {
                Ok(r) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&r)?);
                    } else {
                        println!(
                            "installed {} {} ({} blueprints, {} actions){}",
                            r["id"].as_str().unwrap_or_default(),
                            r["version"].as_str().unwrap_or_default(),
                            r["blueprints"].as_array().map_or(0, Vec::len),
                            r["actions"].as_array().map_or(0, Vec::len),
                            if r["allow_unsigned"] == true {
                                " without a trusted signature (--allow-unsigned)"
                            } else {
                                ""
                            }
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => fail(&e),
            }
        }
        PackCmd::List {
            data_dir,
            json,
            store,
        } => {
            pack_install::recover_offline(&data_dir, &store)?;
            let rows = match pack_install::installed(&data_dir) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no packs installed");
            } else {
                for r in &rows {
                    println!(
                        "{:<32} {:<12} {}",
                        r["id"].as_str().unwrap_or_default(),
                        r["version"].as_str().unwrap_or_default(),
                        r["signers"][0]["public_key"].as_str().unwrap_or("unsigned")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PackCmd::Remove {
            id,
            data_dir,
            store,
        } => {
            pack_install::recover_offline(&data_dir, &store)?;
            match pack_install::remove(&id, &data_dir, pack_install::Target::Offline(&store))? {
                Ok(()) => {
                    println!("removed {id}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn inspect(file: &Path, sig: Option<&Path>, data_dir: &Path, json: bool) -> Result<ExitCode> {
    let pack = match xyn_pack::Pack::read(file, true) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let trust = TrustStore::load(data_dir).unwrap_or_default();
    let signature = match envelope_for(file, sig) {
        Ok(env) => match verify_pack(file, env.as_deref(), &KeyPolicy::Report(trust), false) {
            Ok(v) => json!({"status": "valid", "signers": v.signers, "builder": v.builder_id}),
            Err(e) => json!({"status": e.code, "message": e.message}),
        },
        Err(e) => json!({"status": e.code, "message": e.message}),
    };
    let caps = required_capabilities(&pack);
    let report = json!({
        "manifest": pack.manifest.to_json(),
        "sha256": pack.archive_sha256,
        "size": pack.archive_size,
        "tree": pack.digests.tree,
        "files": pack.digests.files,
        "signature": signature,
        "capabilities": caps,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let m = &pack.manifest;
    println!("{} {}  (xyn {})", m.id, m.version, m.xyn);
    if !m.description.is_empty() {
        println!("  {}", m.description);
    }
    for (d, r) in &m.depends {
        println!("  depends on {d} {r}");
    }
    println!(
        "sha256 {}\ntree   {}",
        pack.archive_sha256, pack.digests.tree
    );
    println!("files:");
    for f in &pack.digests.files {
        println!("  {}  {:>9}  {}", f.sha256, f.size, f.path);
    }
    match signature["status"].as_str() {
        Some("valid") => {
            for s in signature["signers"].as_array().into_iter().flatten() {
                println!(
                    "signed by {}{}",
                    s["public_key"].as_str().unwrap_or_default(),
                    s["trusted_as"]
                        .as_str()
                        .map(|n| format!(" (trusted as {n})"))
                        .unwrap_or_default()
                );
            }
        }
        Some(code) => println!(
            "signature: {code}: {}",
            signature["message"].as_str().unwrap_or_default()
        ),
        None => {}
    }
    if let Some(c) = caps.as_object().filter(|c| !c.is_empty()) {
        println!("capabilities:");
        for (a, v) in c {
            println!("  {a}: {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
