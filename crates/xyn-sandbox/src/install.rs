//! Where action packages live in a node's data directory, and installing them.
//!
//! ```text
//! <data-dir>/actions/<name>/          the installed package (read-only to the worker)
//! <data-dir>/actions/<name>/.xyn/     compiled .wat entry, install record
//! <data-dir>/action-data/<name>/      the action's files (fs_read / fs_write resolve here)
//! <data-dir>/action-db/<name>/db.sqlite   the action's own database (and its journal)
//! <data-dir>/action-cache/<name>/     its precompiled wasm modules and components, by
//!                                     content hash
//! ```
//!
//! Each action's worker is sealed to its own package, data, database and cache
//! directories ([`Layout::roots`]). A database of the older layout
//! (`action-db/<name>.sqlite`) is moved into its directory on first use.
//!
//! A package's `data/` directory seeds its data dir at install (existing files are kept).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{SandboxError, codes};
use crate::limits::DeploymentLimits;
use crate::manifest::{MANIFEST_FILE, Manifest, RuntimeKind, relative_components};
use crate::sandbox::{COMPILED_WASM, Package};
use crate::worker::WorkerArgs;

/// The sandbox directories of a node.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        // Absolute, so the worker (started in `/`) and Landlock see the same paths.
        let root = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        Self { root }
    }
    pub fn packages(&self) -> PathBuf {
        self.root.join("actions")
    }
    pub fn package(&self, name: &str) -> PathBuf {
        self.packages().join(name)
    }
    pub fn data_root(&self) -> PathBuf {
        self.root.join("action-data")
    }
    pub fn data(&self, name: &str) -> PathBuf {
        self.data_root().join(name)
    }
    pub fn db_root(&self) -> PathBuf {
        self.root.join("action-db")
    }
    /// The directory of an action's database (the worker may create its journal there).
    pub fn db_dir(&self, name: &str) -> PathBuf {
        self.db_root().join(name)
    }
    pub fn db(&self, name: &str) -> PathBuf {
        self.db_dir(name).join("db.sqlite")
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("action-cache")
    }
    /// An action's own cache of precompiled modules.
    pub fn action_cache(&self, name: &str) -> PathBuf {
        self.cache().join(name)
    }

    /// Creates an action's directories (its worker's Landlock rules name them) and moves a
    /// database of the older layout into its directory.
    pub fn prepare_action(&self, name: &str) -> Result<(), SandboxError> {
        for d in [self.data(name), self.db_dir(name), self.action_cache(name)] {
            std::fs::create_dir_all(&d).map_err(|e| {
                SandboxError::new(
                    codes::INSTALL_FAILED,
                    format!("cannot create {}: {e}", d.display()),
                )
            })?;
        }
        let legacy = self.db_root().join(format!("{name}.sqlite"));
        if legacy.is_file() && !self.db(name).exists() {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", legacy.display()));
                if from.exists() {
                    let to = PathBuf::from(format!("{}{suffix}", self.db(name).display()));
                    std::fs::rename(&from, &to).map_err(|e| {
                        SandboxError::new(
                            codes::INSTALL_FAILED,
                            format!("cannot move {} to {}: {e}", from.display(), to.display()),
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    /// What the worker serving action `name` (installed in `package`) is sealed to: its
    /// package read-only; its data dir, database dir and module cache writable.
    pub fn roots(&self, name: &str, package: &Path) -> crate::pool::WorkerRoots {
        crate::pool::WorkerRoots {
            key: name.to_string(),
            read: vec![package.to_path_buf()],
            write: vec![self.data(name), self.db_dir(name), self.action_cache(name)],
            cache_dir: Some(self.action_cache(name)),
            http_policy: None,
            memory_bytes: None,
        }
    }

    /// Creates the directories (the worker's Landlock rules name them, so they must exist).
    pub fn ensure(&self) -> Result<(), SandboxError> {
        for d in [
            self.packages(),
            self.data_root(),
            self.db_root(),
            self.cache(),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| {
                SandboxError::new(
                    codes::INSTALL_FAILED,
                    format!("cannot create {}: {e}", d.display()),
                )
            })?;
        }
        Ok(())
    }

    /// The arguments every worker of this node shares; each worker's roots are those of
    /// the one action it serves ([`Layout::roots`]).
    pub fn worker_args(&self, allow_weak: bool, limits: DeploymentLimits) -> WorkerArgs {
        WorkerArgs {
            allow_weak,
            limits,
            test_no_landlock: crate::seal::test_no_landlock_requested(),
            ..WorkerArgs::default()
        }
    }

    /// The installed packages: (manifest, directory), sorted by name.
    pub fn installed(&self) -> Vec<Result<(Manifest, PathBuf), (PathBuf, SandboxError)>> {
        let Ok(rd) = std::fs::read_dir(self.packages()) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        dirs.sort();
        dirs.into_iter()
            .map(|d| {
                Manifest::load(&d)
                    .map(|m| (m, d.clone()))
                    .map_err(|e| (d, e))
            })
            .collect()
    }
}

fn fail(m: impl Into<String>) -> SandboxError {
    SandboxError::new(codes::INSTALL_FAILED, m)
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dst)
        .map_err(|e| fail(format!("cannot create {}: {e}", dst.display())))?;
    let rd =
        std::fs::read_dir(src).map_err(|e| fail(format!("cannot read {}: {e}", src.display())))?;
    for e in rd {
        let e = e.map_err(|e| fail(e.to_string()))?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = e.file_type().map_err(|e| fail(e.to_string()))?;
        let to = dst.join(&name);
        if ft.is_symlink() {
            return Err(fail(format!(
                "{} is a symlink; packages hold plain files",
                e.path().display()
            )));
        } else if ft.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else if ft.is_file() {
            std::fs::copy(e.path(), &to)
                .map_err(|err| fail(format!("cannot copy {}: {err}", e.path().display())))?;
        }
    }
    Ok(())
}

fn check_schema(dir: &Path, rel: &Option<String>) -> Result<(), SandboxError> {
    if let Some(r) = rel {
        let v = read_schema(dir, r)?;
        jsonschema::validator_for(&v)
            .map_err(|e| fail(format!("{r} is not a valid JSON Schema: {e}")))?;
    }
    Ok(())
}

/// Reads a schema file of a package.
pub fn read_schema(dir: &Path, rel: &str) -> Result<Value, SandboxError> {
    relative_components(rel).map_err(|e| fail(format!("{rel}: {e}")))?;
    let text = std::fs::read_to_string(dir.join(rel))
        .map_err(|e| fail(format!("cannot read {rel}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| fail(format!("{rel} is not JSON: {e}")))
}

/// Installs the package in `src` into `layout`, replacing an older version. A `.wat` entry
/// is compiled to wasm; wasm is compiled once to check it (and precompiled into the cache).
pub fn install(src: &Path, layout: &Layout) -> Result<Manifest, SandboxError> {
    let manifest = Manifest::load(src)?;
    if !src.join(&manifest.entry).is_file() {
        return Err(fail(format!("the entry {} does not exist", manifest.entry)));
    }
    check_schema(src, &manifest.input_schema)?;
    check_schema(src, &manifest.output_schema)?;
    layout.ensure()?;
    let dest = layout.package(&manifest.name);
    let tmp = layout
        .packages()
        .join(format!(".tmp-{}-{}", manifest.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_tree(src, &tmp)?;
    let built = (|| -> Result<String, SandboxError> {
        if manifest.runtime == RuntimeKind::Wasm && manifest.entry.ends_with(".wat") {
            let wasm = wat::parse_file(tmp.join(&manifest.entry))
                .map_err(|e| fail(format!("{}: {e}", manifest.entry)))?;
            let out = tmp.join(COMPILED_WASM);
            if let Some(p) = out.parent() {
                std::fs::create_dir_all(p).map_err(|e| fail(e.to_string()))?;
            }
            std::fs::write(&out, wasm).map_err(|e| fail(e.to_string()))?;
        }
        let pkg = Package::load(&tmp)?;
        if let crate::sandbox::Code::Wasm(bytes) = &pkg.code {
            let cache = layout.action_cache(&manifest.name);
            std::fs::create_dir_all(&cache).map_err(|e| fail(e.to_string()))?;
            let rt =
                crate::runtime::wasm::WasmRuntime::new(&DeploymentLimits::default(), Some(cache))?;
            rt.check_exports(bytes)?;
            rt.precompile(bytes)?;
        }
        Ok(pkg.digest)
    })();
    let digest = match built {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let record =
        json!({"name": manifest.name, "sha256": digest, "source": src.display().to_string()});
    let _ = std::fs::create_dir_all(tmp.join(".xyn"));
    let _ = std::fs::write(tmp.join(".xyn/install.json"), record.to_string());
    // Touch the manifest so caches keyed by its mtime see a new version.
    let _ = std::fs::write(
        tmp.join(MANIFEST_FILE),
        std::fs::read(src.join(MANIFEST_FILE)).unwrap_or_default(),
    );
    let old = layout
        .packages()
        .join(format!(".old-{}-{}", manifest.name, std::process::id()));
    if dest.exists() {
        std::fs::rename(&dest, &old)
            .map_err(|e| fail(format!("cannot replace {}: {e}", dest.display())))?;
    }
    std::fs::rename(&tmp, &dest)
        .map_err(|e| fail(format!("cannot install into {}: {e}", dest.display())))?;
    let _ = std::fs::remove_dir_all(&old);
    layout.prepare_action(&manifest.name)?;
    let data = layout.data(&manifest.name);
    let seed = dest.join("data");
    if seed.is_dir() {
        seed_tree(&seed, &data)?;
    }
    Ok(manifest)
}

/// Copies a package's `data/` into the action's data dir, keeping what is already there.
/// The data dir belongs to the guest, which may have planted symlinks in it: everything is
/// written beneath directory handles (cap-std), each directory opened without following a
/// link (`O_NOFOLLOW`) and each file created with `O_CREAT|O_EXCL` (which never follows
/// one), as the capability layer does. A name already taken — by a file, a directory or
/// a link — is kept as it is.
fn seed_tree(src: &Path, dst: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dst).map_err(|e| fail(e.to_string()))?;
    let dir = cap_std::fs::Dir::open_ambient_dir(dst, cap_std::ambient_authority())
        .map_err(|e| fail(format!("cannot open {}: {e}", dst.display())))?;
    seed_dir(src, &dir)
}

fn seed_dir(src: &Path, dir: &cap_std::fs::Dir) -> Result<(), SandboxError> {
    use cap_fs_ext::DirExt;
    let rd = std::fs::read_dir(src).map_err(|e| fail(e.to_string()))?;
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name();
        let ft = e.file_type().map_err(|e| fail(e.to_string()))?;
        if ft.is_dir() {
            let sub = match dir.open_dir_nofollow(&name) {
                Ok(d) => d,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => dir
                    .create_dir(&name)
                    .and_then(|()| dir.open_dir_nofollow(&name))
                    .map_err(|err| fail(format!("cannot seed {}: {err}", e.path().display())))?,
                // A link or a file where the package has a directory: kept, not followed.
                Err(_) => continue,
            };
            seed_dir(&e.path(), &sub)?;
        } else if ft.is_file() {
            let mut opts = cap_std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            let mut to = match dir.open_with(&name, &opts) {
                Ok(f) => f,
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => {
                    return Err(fail(format!("cannot seed {}: {err}", e.path().display())));
                }
            };
            let mut from = std::fs::File::open(e.path())
                .map_err(|err| fail(format!("cannot read {}: {err}", e.path().display())))?;
            std::io::copy(&mut from, &mut to)
                .map_err(|err| fail(format!("cannot seed {}: {err}", e.path().display())))?;
        }
    }
    Ok(())
}
