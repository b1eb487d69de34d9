//! `xyn secret set|get|list|rm|rotate-master`: the encrypted secret store of a data directory
//! (or of the shared PostgreSQL store), opened directly. On SQLite the data directory's lock is
//! taken, so these commands run while the node is stopped; a running node takes secrets
//! through `PUT /api/v1/secrets/{path}`.
#![allow(clippy::print_stdout)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use xyn_secrets::local::{KeySource, LocalSecretStore, PASSPHRASE_VAR};
use xyn_secrets::{ReadContext, SecretPath, SecretStore, SecretValue};
use xyn_store::{Store, WriteBatch};
use zeroize::Zeroizing;

use crate::cli::StoreArgs;

/// The variable a new passphrase is read from by `rotate-master --to-passphrase`.
pub const NEW_PASSPHRASE_VAR: &str = "XYN_SECRET_NEW_PASSPHRASE";

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Store a new version of a secret. Give the value on standard input (--value-stdin, the
    /// safe way), from a file (--from-file) or as VALUE (visible in the process list and the
    /// shell history; a warning says so).
    Set {
        /// sys/<env_id>/providers/<name>, sys/<env_id>/integrations/<name> or team/<team_id>/<name>.
        path: String,
        /// The value on the command line (prefer --value-stdin).
        value: Option<String>,
        /// Read the value from standard input (one trailing newline is dropped).
        #[arg(long, conflicts_with_all = ["value", "from_file"])]
        value_stdin: bool,
        /// Read the value from a file (one trailing newline is dropped).
        #[arg(long, conflicts_with = "value")]
        from_file: Option<PathBuf>,
        #[command(flatten)]
        at: SecretArgs,
    },
    /// Print a secret's value (the latest version, or --version). The read is recorded as an
    /// `xyn.secret.read` audit event.
    Get {
        /// The secret's path, e.g. sys/<env_id>/providers/openai.
        path: String,
        /// A version to read instead of the latest.
        #[arg(long)]
        version: Option<i64>,
        #[command(flatten)]
        at: SecretArgs,
    },
    /// List secrets under PREFIX: paths, versions, who changed them and when; never values.
    List {
        /// Only paths starting with this (e.g. team/ops/); all when left out.
        prefix: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: SecretArgs,
    },
    /// Remove a secret and all its versions.
    Rm {
        /// The secret's path.
        path: String,
        #[command(flatten)]
        at: SecretArgs,
    },
    /// Replace the master key: every data key is rewrapped in one transaction (values are not
    /// re-encrypted). By default a new key file; with --to-passphrase, the passphrase in
    /// XYN_SECRET_NEW_PASSPHRASE (or on standard input with --new-passphrase-stdin).
    RotateMaster {
        /// Move to (or change) a passphrase instead of a key file.
        #[arg(long)]
        to_passphrase: bool,
        /// Read the new passphrase from standard input.
        #[arg(long, requires = "to_passphrase")]
        new_passphrase_stdin: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: SecretArgs,
    },
}

/// Which store the command works on.
#[derive(Args, Debug, Clone)]
pub struct SecretArgs {
    /// The node's data directory (its database and its secrets.key).
    #[arg(long, env = "XYN_DATA_DIR", default_value = "./xyn-data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn xe(e: xyn_core::XynError) -> anyhow::Error {
    anyhow!("{e}")
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

fn read_value(value: Option<String>, stdin: bool, file: Option<PathBuf>) -> Result<SecretValue> {
    let text = match (value, stdin, file) {
        (Some(v), false, None) => {
            eprintln!(
                "warning: a value given on the command line is visible in the process list and the \
                 shell history; prefer --value-stdin"
            );
            v
        }
        (None, true, None) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the value from standard input")?;
            strip_newline(s)
        }
        (None, false, Some(f)) => strip_newline(
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?,
        ),
        (None, false, None) => {
            bail!(
                "give the value on standard input (--value-stdin), from a file (--from-file FILE) or as VALUE"
            )
        }
        _ => bail!("give the value one way only"),
    };
    SecretValue::new(text).map_err(xe)
}

pub fn run(cmd: SecretCmd) -> Result<ExitCode> {
    let at = match &cmd {
        SecretCmd::Set { at, .. }
        | SecretCmd::Get { at, .. }
        | SecretCmd::List { at, .. }
        | SecretCmd::Rm { at, .. }
        | SecretCmd::RotateMaster { at, .. } => at.clone(),
    };
    // A SQLite data dir a node is serving is refused (its lock names the node's pid): the
    // node's log and cached key must not change under it.
    let env_id = crate::config::load(None)?.node.env_id;
    crate::serve::with_offline_store(&at.data_dir, &at.store, false, async |store| {
        exec(cmd, &at, store, &env_id).await
    })
}

async fn audit(
    store: &dyn Store,
    env_id: &str,
    name: &str,
    path: &SecretPath,
    data: serde_json::Value,
) -> Result<()> {
    let ctx = ReadContext {
        actor: actor(),
        ..Default::default()
    };
    let e = xyn_secrets::audit_event(name, env_id, &ctx, path.as_str(), data, xyn_secrets::now());
    store
        .commit(WriteBatch {
            events: vec![e],
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("{e}"))
        .context("cannot record the audit event")?;
    Ok(())
}

async fn exec(
    cmd: SecretCmd,
    at: &SecretArgs,
    store: Arc<dyn Store>,
    env_id: &str,
) -> Result<ExitCode> {
    let source = KeySource::from_env(&at.data_dir, std::env::var(PASSPHRASE_VAR).ok());
    let local = LocalSecretStore::new(store.clone(), source);
    match cmd {
        SecretCmd::Set {
            path,
            value,
            value_stdin,
            from_file,
            ..
        } => {
            let path = SecretPath::parse(&path).map_err(xe)?;
            let value = read_value(value, value_stdin, from_file)?;
            let meta = local.put(&path, &value, &actor()).await.map_err(xe)?;
            audit(
                store.as_ref(),
                env_id,
                xyn_secrets::SECRET_WRITTEN,
                &path,
                xyn_secrets::audit_data(&path, meta.version, "local", &actor()),
            )
            .await?;
            eprintln!("{} is at version {}", meta.path, meta.version);
        }
        SecretCmd::Get { path, version, .. } => {
            let path = SecretPath::parse(&path).map_err(xe)?;
            let got = local.get(&path, version).await.map_err(xe)?;
            let Some(got) = got else {
                return Err(xe(xyn_core::XynError::not_found(
                    xyn_secrets::codes::NOT_FOUND,
                    match version {
                        Some(v) => format!("{path} has no version {v}"),
                        None => format!("no secret at {path}"),
                    },
                )));
            };
            // The read is on record before the value is shown.
            audit(
                store.as_ref(),
                env_id,
                xyn_secrets::SECRET_READ,
                &path,
                xyn_secrets::audit_data(&path, got.version, got.backend, &actor()),
            )
            .await?;
            println!("{}", got.value.expose());
        }
        SecretCmd::List { prefix, json, .. } => {
            let items = local
                .list(prefix.as_deref().unwrap_or(""))
                .await
                .map_err(xe)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if items.is_empty() {
                eprintln!("no secrets");
            } else {
                for m in items {
                    println!(
                        "{}\tv{}\t{}\t{}",
                        m.path, m.version, m.updated_at, m.updated_by
                    );
                }
            }
        }
        SecretCmd::Rm { path, .. } => {
            let path = SecretPath::parse(&path).map_err(xe)?;
            if !local.delete(&path).await.map_err(xe)? {
                return Err(xe(xyn_core::XynError::not_found(
                    xyn_secrets::codes::NOT_FOUND,
                    format!("no secret at {path}"),
                )));
            }
            audit(
                store.as_ref(),
                env_id,
                xyn_secrets::SECRET_DELETED,
                &path,
                json!({"path": path.as_str(), "actor": actor()}),
            )
            .await?;
            eprintln!("removed {path}");
        }
        SecretCmd::RotateMaster {
            to_passphrase,
            new_passphrase_stdin,
            json,
            ..
        } => {
            // The current key must open the store before anything new is made.
            local.unlock().await.map_err(xe)?;
            let new_source = if to_passphrase {
                let p = if new_passphrase_stdin {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("cannot read the new passphrase from standard input")?;
                    strip_newline(s)
                } else {
                    std::env::var(NEW_PASSPHRASE_VAR).map_err(|_| {
                        anyhow!("set {NEW_PASSPHRASE_VAR} to the new passphrase, or pass --new-passphrase-stdin")
                    })?
                };
                if p.chars().count() < 12 {
                    bail!("the new passphrase must be at least 12 characters long");
                }
                KeySource::Passphrase(Zeroizing::new(p))
            } else {
                KeySource::KeyFile(at.data_dir.join(xyn_secrets::local::KEY_FILE))
            };
            let report = local.rotate(new_source).await.map_err(xe)?;
            let ctx = ReadContext {
                actor: actor(),
                ..Default::default()
            };
            let mut e = xyn_secrets::audit_event(
                xyn_secrets::MASTER_ROTATED,
                env_id,
                &ctx,
                "master_key",
                json!({"old_key_id": report.old_key_id, "new_key_id": report.new_key_id, "kind": report.kind, "rewrapped": report.rewrapped}),
                xyn_secrets::now(),
            );
            e.resource = Some(xyn_core::event::Resource {
                kind: "secret_store".into(),
                id: "master_key".into(),
            });
            store
                .commit(WriteBatch {
                    events: vec![e],
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "master key rotated to {} ({}): {} data keys rewrapped",
                    report.new_key_id, report.kind, report.rewrapped
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
