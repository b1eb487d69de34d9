//! Files, resolved under a directory handle, never by checking a path string and then
//! opening it. Every component is opened relative to the previous directory's descriptor
//! with symlinks not followed (`O_NOFOLLOW`, `openat` beneath the data dir through
//! cap-std), so neither a symlink nor a race can lead outside; files with more than one
//! hard link are refused; only `fs_write` entries are ever opened for writing.

use std::io::{Read, Write};
use std::path::Path;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

use crate::manifest::relative_components;

/// Largest file `fs.read` returns.
pub const MAX_READ: u64 = 16 << 20;

pub enum FsError {
    Denied(String),
    Failed(String),
}

pub struct FsCap {
    /// Opened lazily on first use (the data dir may not exist for actions without fs).
    root: Option<std::path::PathBuf>,
    dir: Option<Dir>,
    read: Vec<Vec<String>>,
    write: Vec<Vec<String>>,
}

const ELOOP: i32 = 40;
const ENOTDIR: i32 = 20;

fn io_err(path: &str, e: &std::io::Error) -> FsError {
    match e.raw_os_error() {
        Some(ELOOP) | Some(ENOTDIR) => {
            FsError::Denied("a symlink or non-directory is on the path".into())
        }
        _ if e.kind() == std::io::ErrorKind::NotFound => {
            FsError::Failed(format!("{path}: not found"))
        }
        _ if e.kind() == std::io::ErrorKind::PermissionDenied => {
            FsError::Denied("outside the action's roots".into())
        }
        _ => FsError::Failed(format!("{path}: {e}")),
    }
}

fn under(comps: &[String], roots: &[Vec<String>]) -> bool {
    roots
        .iter()
        .any(|r| comps.len() >= r.len() && comps[..r.len()] == r[..])
}

impl FsCap {
    pub fn new(root: Option<&Path>, read: &[String], write: &[String]) -> Self {
        let parse = |l: &[String]| -> Vec<Vec<String>> {
            l.iter()
                .filter_map(|p| relative_components(p).ok())
                .collect()
        };
        Self {
            root: root.map(Path::to_path_buf),
            dir: None,
            read: parse(read),
            write: parse(write),
        }
    }

    fn root(&mut self, create: bool) -> Result<&Dir, FsError> {
        if self.dir.is_none() {
            let Some(p) = &self.root else {
                return Err(FsError::Denied("the action has no data directory".into()));
            };
            if create {
                std::fs::create_dir_all(p)
                    .map_err(|e| FsError::Failed(format!("cannot create the data dir: {e}")))?;
            }
            let d = Dir::open_ambient_dir(p, ambient_authority())
                .map_err(|e| io_err("data dir", &e))?;
            self.dir = Some(d);
        }
        self.dir
            .as_ref()
            .ok_or_else(|| FsError::Failed("no data dir".into()))
    }

    /// Opens the directory holding the last component, one component at a time, never
    /// following a symlink; creates missing directories when `create`.
    fn parent(&mut self, path: &str, comps: &[String], create: bool) -> Result<Dir, FsError> {
        let root = self.root(create)?;
        let mut dir = root.try_clone().map_err(|e| io_err(path, &e))?;
        for c in &comps[..comps.len() - 1] {
            dir = match dir.open_dir_nofollow(c) {
                Ok(d) => d,
                Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                    dir.create_dir(c).map_err(|e| io_err(path, &e))?;
                    dir.open_dir_nofollow(c).map_err(|e| io_err(path, &e))?
                }
                Err(e) => return Err(io_err(path, &e)),
            };
        }
        Ok(dir)
    }

    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, FsError> {
        let comps = relative_components(path).map_err(FsError::Denied)?;
        if !under(&comps, &self.read) && !under(&comps, &self.write) {
            return Err(FsError::Denied("not under fs_read or fs_write".into()));
        }
        let dir = self.parent(path, &comps, false)?;
        let mut opts = OpenOptions::new();
        opts.read(true).follow(FollowSymlinks::No);
        let last = &comps[comps.len() - 1];
        let mut f = dir.open_with(last, &opts).map_err(|e| io_err(path, &e))?;
        let meta = f.metadata().map_err(|e| io_err(path, &e))?;
        if !meta.is_file() {
            return Err(FsError::Failed(format!("{path}: not a regular file")));
        }
        if cap_fs_ext::MetadataExt::nlink(&meta) > 1 {
            return Err(FsError::Denied(
                "the file has more than one hard link".into(),
            ));
        }
        if meta.len() > MAX_READ {
            return Err(FsError::Failed(format!(
                "{path}: larger than {MAX_READ} bytes"
            )));
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        (&mut f)
            .take(MAX_READ)
            .read_to_end(&mut buf)
            .map_err(|e| io_err(path, &e))?;
        Ok(buf)
    }

    pub fn write(&mut self, path: &str, data: &[u8]) -> Result<(), FsError> {
        let comps = relative_components(path).map_err(FsError::Denied)?;
        if !under(&comps, &self.write) {
            return Err(FsError::Denied("not under fs_write".into()));
        }
        let dir = self.parent(path, &comps, true)?;
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).follow(FollowSymlinks::No);
        let last = &comps[comps.len() - 1];
        let mut f = dir.open_with(last, &opts).map_err(|e| io_err(path, &e))?;
        let meta = f.metadata().map_err(|e| io_err(path, &e))?;
        if !meta.is_file() {
            return Err(FsError::Failed(format!("{path}: not a regular file")));
        }
        if cap_fs_ext::MetadataExt::nlink(&meta) > 1 {
            return Err(FsError::Denied(
                "the file has more than one hard link".into(),
            ));
        }
        // Truncate only after checking what was opened.
        f.set_len(0).map_err(|e| io_err(path, &e))?;
        f.write_all(data).map_err(|e| io_err(path, &e))?;
        Ok(())
    }
}
