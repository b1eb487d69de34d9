//! `xyn backup` and `xyn restore` for a node on SQLite: an online, consistent copy of a data
//! directory, and a restore into a new one that is checked before it is accepted.
//!
//! Backup takes a snapshot of the database with `VACUUM INTO` on a read-only connection (one
//! read transaction, so the copy is the database as of one commit while the node keeps
//! writing), then copies the rest of the data dir: artifact blobs (content-addressed and
//! written before the commit that references them, so every blob the snapshot names is
//! there), installed packs and actions, keys, the trust store, the cursor key. The lock file,
//! the WAL and interrupted pack installs are left out, and so is the secret store's key file
//! (`secrets.key`) unless asked for: the database holds secrets encrypted, so a backup without
//! the key carries them as ciphertext only (the key is kept apart and put back by hand; a store
//! locked by a passphrase has no key file and opens with the same passphrase). A `backup.json` lists every file with
//! its sha256; restore checks them, copies into an empty data dir and verifies the event
//! chain before it says yes.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MANIFEST: &str = "backup.json";
const DB: &str = "xyn.db";

fn skip(rel: &str) -> bool {
    rel == crate::datadir::LOCK_FILE
        || rel.starts_with("xyn.db")
        || rel == MANIFEST
        || rel.starts_with("packs/.")
}

fn files_under(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let e = e?;
            let ft = e.file_type()?;
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn sha256_file(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(from)?.permissions().mode();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// `xyn backup --data-dir D --to DIR [--with-secret-key]`.
pub fn backup(data_dir: &Path, to: &Path, with_secret_key: bool) -> Result<ExitCode> {
    let db = data_dir.join(DB);
    if !db.is_file() {
        bail!(
            "{} has no {DB}: not a node data directory on SQLite",
            data_dir.display()
        );
    }
    if to.exists() && std::fs::read_dir(to)?.next().is_some() {
        bail!(
            "{} is not empty; back up into a new directory",
            to.display()
        );
    }
    std::fs::create_dir_all(to)?;
    let started = std::time::Instant::now();
    // The snapshot: one read transaction on a read-only connection; the node keeps writing.
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let target = to.join(DB);
    conn.execute("VACUUM INTO ?1", [target.to_string_lossy().as_ref()])
        .context("cannot snapshot the database")?;
    let (events, head): (i64, Option<String>) = {
        let snap = rusqlite::Connection::open_with_flags(
            &target,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        snap.query_row(
            "SELECT count(*), (SELECT hash FROM events ORDER BY seq DESC LIMIT 1) FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or((0, None))
    };
    drop(conn);
    let key_file = xyn_secrets::local::KEY_FILE;
    let has_key = data_dir.join(key_file).is_file();
    for rel in files_under(data_dir)? {
        if !skip(&rel) && (rel != key_file || with_secret_key) {
            copy_file(&data_dir.join(&rel), &to.join(&rel))?;
        }
    }
    let secret_key = match (has_key, with_secret_key) {
        (false, _) => "none",
        (true, true) => "included",
        (true, false) => "left out",
    };
    let mut files = Vec::new();
    for rel in files_under(to)? {
        if rel != MANIFEST {
            files.push(json!({"path": rel, "sha256": sha256_file(&to.join(&rel))?}));
        }
    }
    let manifest = json!({
        "format": "xyn-backup/1",
        "xyn": env!("CARGO_PKG_VERSION"),
        "source": data_dir.display().to_string(),
        "taken_at": chrono::Utc::now().to_rfc3339(),
        "events": events,
        "chain_head": head,
        "secret_key": secret_key,
        "files": files,
    });
    std::fs::write(to.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)?;
    println!(
        "backup of {} in {}: {events} events, {} files, {:.2} s",
        data_dir.display(),
        to.display(),
        files.len(),
        started.elapsed().as_secs_f64()
    );
    if secret_key == "left out" {
        println!(
            "the secret store's key file ({key_file}) was left out: the backup holds secrets as \
             ciphertext only. Keep {} apart; copy it into the restored data dir before starting \
             the node (or back up with --with-secret-key)",
            data_dir.join(key_file).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `xyn restore DIR --data-dir NEW`.
pub fn restore(from: &Path, data_dir: &Path) -> Result<ExitCode> {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(from.join(MANIFEST))
            .with_context(|| format!("{} has no {MANIFEST}: not a backup", from.display()))?,
    )
    .context("backup.json is not valid JSON")?;
    if manifest["format"] != "xyn-backup/1" {
        bail!(
            "{}: unknown backup format {}",
            from.display(),
            manifest["format"]
        );
    }
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        bail!(
            "{} is not empty; restore into a new data directory",
            data_dir.display()
        );
    }
    let files = manifest["files"].as_array().cloned().unwrap_or_default();
    // Every file first: a damaged backup restores nothing.
    for f in &files {
        let rel = f["path"].as_str().unwrap_or_default();
        if rel.is_empty()
            || rel.starts_with('/')
            || rel.split('/').any(|c| c == ".." || c.is_empty())
        {
            bail!("backup.json names an unsafe path {rel:?}");
        }
        let got = sha256_file(&from.join(rel))?;
        if f["sha256"] != got.as_str() {
            bail!("{rel} in the backup does not match its sha256 in backup.json");
        }
    }
    // Copied next to the target and renamed into place: a failed restore leaves no data dir.
    let tmp: PathBuf = {
        let name = data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        data_dir.with_file_name(format!(".{name}.restoring-{}", uuid::Uuid::now_v7()))
    };
    let r = (|| -> Result<()> {
        for f in &files {
            let rel = f["path"].as_str().unwrap_or_default();
            copy_file(&from.join(rel), &tmp.join(rel))?;
        }
        let conn = rusqlite::Connection::open(tmp.join(DB))?;
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            bail!("the database in the backup is damaged: {check}");
        }
        Ok(())
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if data_dir.exists() {
        std::fs::remove_dir(data_dir)?;
    }
    std::fs::rename(&tmp, data_dir)
        .with_context(|| format!("cannot move the restore into {}", data_dir.display()))?;
    println!(
        "restored {} events into {}; check it with: xyn audit verify --data-dir {}",
        manifest["events"],
        data_dir.display(),
        data_dir.display()
    );
    if manifest["secret_key"] == "left out" {
        println!(
            "the backup carries secrets as ciphertext only: copy the original node's {} into {} \
             before starting it (until then, reading a secret fails with secret.key_file_missing)",
            xyn_secrets::local::KEY_FILE,
            data_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
