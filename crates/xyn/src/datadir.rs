//! The lock on a node's data directory: one `xyn serve` per SQLite data directory.
//!
//! `xyn serve` takes an exclusive advisory lock (`flock`) on `<data-dir>/xyn.lock` before it
//! reads anything there, and writes its pid into the file. A second process finds the lock
//! held and stops with an error naming the holder's pid. The kernel releases the lock when
//! the process exits, however it exits, so a lock left by a crashed node is stale at once and
//! never needs cleaning up.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "xyn.lock";

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates the data directory if needed and locks it, or fails naming the holder.
    pub fn acquire(dir: &Path) -> Result<DataDirLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut held = String::new();
                let _ = file.read_to_string(&mut held);
                let pid = held
                    .lines()
                    .find_map(|l| l.strip_prefix("pid "))
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .unwrap_or("unknown");
                bail!(
                    "the data directory {} is in use by another xyn process (pid {pid}); \
                     stop that process or choose another --data-dir",
                    dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "pid {}", std::process::id())?;
        file.sync_data()?;
        Ok(DataDirLock { _file: file })
    }
}

/// The file in the data directory that holds the key list cursors are signed with.
pub const CURSOR_KEY_FILE: &str = "cursor.key";

/// The key the node signs list cursors with: `XYN_CURSOR_KEY` when set (give API nodes behind
/// one load balancer the same), else the key kept in `<data-dir>/cursor.key`, created (0600,
/// 32 random bytes, hex) on first use, so cursors a client holds survive a restart.
pub fn cursor_key(dir: &Path) -> Result<Vec<u8>> {
    if let Ok(k) = std::env::var("XYN_CURSOR_KEY")
        && !k.is_empty()
    {
        return Ok(k.into_bytes());
    }
    let path = dir.join(CURSOR_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => return Ok(k.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    // 244 random bits from the OS generator (two v4 UUIDs).
    let key = xyn_web::auth::random_token();
    // Written to a temporary file and renamed, so a crash never leaves a half-written key.
    let tmp = dir.join(format!("{CURSOR_KEY_FILE}.tmp"));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(key.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_lock_is_free() {
        let dir = std::env::temp_dir().join(format!("xyn-lock-{}", uuid::Uuid::now_v7()));
        let first = DataDirLock::acquire(&dir).unwrap();
        let err = DataDirLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = DataDirLock::acquire(&dir).unwrap();
        assert!(dir.join(LOCK_FILE).is_file());
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
