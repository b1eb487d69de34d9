//! The pack archive: a reproducible `tar.gz`.
//!
//! `build` walks a pack directory in sorted order and writes one regular-file entry per file
//! (mode 0644, uid/gid 0, no owner names, mtime 0), then the digest list
//! `xyn-pack.digests.json` as the last entry; the gzip header has mtime 0 and no file name,
//! and deflate runs at a fixed level with the pure-Rust backend. The same directory therefore
//! always gives the same bytes. `Pack::read` takes an archive apart again, refusing anything
//! that is not a regular file or directory, any absolute, empty, `.` or `..` path component,
//! duplicates and entries beyond the size caps, then checks every file against the digest
//! list and the list's tree digest.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::{FILE_MAX, MANIFEST_MAX};
use crate::manifest::{FOLDERS, MANIFEST_FILE, PackManifest};
use crate::{PackError, Result, codes};

/// The digest list's file name inside an archive.
pub const DIGESTS_FILE: &str = "xyn-pack.digests.json";
/// At most this many files in a pack.
pub const MAX_FILES: usize = 10_000;
/// At most this many bytes in all files of a pack together (unpacked).
pub const TOTAL_MAX: u64 = 1024 * 1024 * 1024;
/// The deflate level (fixed: part of what makes builds reproducible).
const LEVEL: u32 = 6;

/// One file's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// The digest list: every file (sorted by path) and the tree digest over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestList {
    pub files: Vec<FileDigest>,
    /// sha256 over the lines `<sha256>  <path>\n` of the sorted files (`sha256sum` format).
    pub tree: String,
}

impl DigestList {
    /// Builds the list (sorting the files) and its tree digest.
    pub fn new(mut files: Vec<FileDigest>) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let tree = tree_digest(&files);
        Self { files, tree }
    }
}

/// The tree digest of a sorted list of files.
pub fn tree_digest(files: &[FileDigest]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.sha256.as_bytes());
        h.update(b"  ");
        h.update(f.path.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// A pack read from its archive, checked against its digest list.
#[derive(Debug, Clone)]
pub struct Pack {
    pub manifest: PackManifest,
    /// The manifest's text as it is in the archive.
    pub manifest_text: String,
    pub digests: DigestList,
    /// The files' contents by path (empty when read without contents).
    pub files: BTreeMap<String, Vec<u8>>,
    /// sha256 of the archive file itself.
    pub archive_sha256: String,
    pub archive_size: u64,
}

/// Checks one relative path of a pack: `/`-separated normal components, UTF-8, no empty,
/// `.` or `..` components, not absolute, no backslashes or NULs; the first component is the
/// manifest, the digest list or one of the pack folders.
pub fn check_entry_path(path: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(PackError::invalid(format!("entry {path:?} is refused: {why}")).with_file(path))
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') {
        return bad("absolute path");
    }
    if path.contains('\\') || path.contains('\0') {
        return bad("backslash or NUL in the path");
    }
    if path.len() > 1024 {
        return bad("path longer than 1024 bytes");
    }
    let parts: Vec<&str> = path.split('/').collect();
    for p in &parts {
        match *p {
            "" => return bad("empty path component"),
            "." | ".." => return bad("`.` or `..` component"),
            _ => {}
        }
    }
    let top = parts[0];
    let ok = if parts.len() == 1 {
        top == MANIFEST_FILE || top == DIGESTS_FILE
    } else {
        FOLDERS.contains(&top)
    };
    if !ok {
        return bad(&format!(
            "a pack holds {MANIFEST_FILE} and the folders {}",
            FOLDERS.join("/, ") + "/"
        ));
    }
    Ok(())
}

fn cap_for(path: &str) -> u64 {
    if path == MANIFEST_FILE || path == DIGESTS_FILE {
        MANIFEST_MAX
    } else {
        FILE_MAX
    }
}

fn too_large(path: &str, size: u64) -> PackError {
    PackError::new(
        codes::TOO_LARGE,
        format!(
            "{path} is {size} bytes, more than the {} bytes a {} may have",
            cap_for(path),
            if cap_for(path) == MANIFEST_MAX {
                "manifest or digest list"
            } else {
                "file in a pack"
            }
        ),
    )
    .with_file(path)
}

/// Collects the files of a pack directory (sorted by relative path), refusing symlinks,
/// special files, unexpected top-level entries and files beyond the caps.
fn collect(dir: &Path) -> Result<Vec<(String, PathBuf, u64)>> {
    let mut out = Vec::new();
    let top = std::fs::read_dir(dir).map_err(|e| PackError::io(dir.display(), e))?;
    let mut names = Vec::new();
    for ent in top {
        let ent = ent.map_err(|e| PackError::io(dir.display(), e))?;
        names.push(ent.file_name());
    }
    names.sort();
    for name in names {
        let Some(n) = name.to_str() else {
            return Err(PackError::invalid(format!(
                "{:?} in {} is not UTF-8",
                name,
                dir.display()
            )));
        };
        if n == DIGESTS_FILE {
            return Err(PackError::invalid(format!(
                "{DIGESTS_FILE} is written by `xyn pack build`; remove it from {}",
                dir.display()
            ))
            .with_file(n));
        }
        walk(&dir.join(n), n, &mut out)?;
    }
    if !out.iter().any(|(p, _, _)| p == MANIFEST_FILE) {
        return Err(
            PackError::invalid(format!("{} has no {MANIFEST_FILE}", dir.display()))
                .with_file(MANIFEST_FILE),
        );
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk(abs: &Path, rel: &str, out: &mut Vec<(String, PathBuf, u64)>) -> Result<()> {
    let meta = std::fs::symlink_metadata(abs).map_err(|e| PackError::io(abs.display(), e))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(PackError::invalid(format!(
            "{rel} is a symlink; packs hold regular files only"
        ))
        .with_file(rel));
    }
    if ft.is_file() {
        check_entry_path(rel)?;
        if meta.len() > cap_for(rel) {
            return Err(too_large(rel, meta.len()));
        }
        out.push((rel.to_string(), abs.to_path_buf(), meta.len()));
        if out.len() > MAX_FILES {
            return Err(PackError::new(
                codes::TOO_LARGE,
                format!("a pack holds at most {MAX_FILES} files"),
            ));
        }
        return Ok(());
    }
    if !ft.is_dir() {
        return Err(
            PackError::invalid(format!("{rel} is neither a regular file nor a directory"))
                .with_file(rel),
        );
    }
    // A directory: its first component must be a pack folder.
    check_entry_path(&format!("{rel}/x"))?;
    let mut names = Vec::new();
    for ent in std::fs::read_dir(abs).map_err(|e| PackError::io(abs.display(), e))? {
        let ent = ent.map_err(|e| PackError::io(abs.display(), e))?;
        names.push(ent.file_name());
    }
    names.sort();
    for name in names {
        let Some(n) = name.to_str() else {
            return Err(PackError::invalid(format!("{rel}/{name:?} is not UTF-8")));
        };
        walk(&abs.join(n), &format!("{rel}/{n}"), out)?;
    }
    Ok(())
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hash.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// Builds the archive of the pack in `dir` into `out` (written to a temporary file beside
/// it and renamed into place, so a failed build leaves nothing). Returns the digest list.
pub fn build(dir: &Path, out: &Path) -> Result<(PackManifest, DigestList)> {
    let files = collect(dir)?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| PackError::io(manifest_path.display(), e))?;
    let manifest = PackManifest::parse(&text)?;
    let total: u64 = files.iter().map(|f| f.2).sum();
    if total > TOTAL_MAX {
        return Err(PackError::new(
            codes::TOO_LARGE,
            format!("the pack's files come to {total} bytes, more than {TOTAL_MAX}"),
        ));
    }

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile_in(&parent, out)?;
    let result = (|| -> Result<DigestList> {
        let file = std::fs::File::create(&tmp).map_err(|e| PackError::io(tmp.display(), e))?;
        let gz = flate2::GzBuilder::new().mtime(0).write(
            std::io::BufWriter::new(file),
            flate2::Compression::new(LEVEL),
        );
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        let mut digests = Vec::with_capacity(files.len());
        for (rel, abs, size) in &files {
            let f = std::fs::File::open(abs).map_err(|e| PackError::io(abs.display(), e))?;
            // Exactly `size` bytes: a file that grows meanwhile cannot slip more in.
            let mut r = Hashing {
                inner: f.take(*size),
                hash: Sha256::new(),
                n: 0,
            };
            tar.append_data(&mut header(*size), rel, &mut r)
                .map_err(|e| PackError::io(format!("adding {rel}"), e))?;
            if r.n != *size {
                return Err(PackError::new(
                    codes::IO,
                    format!("{rel} changed size while the pack was built"),
                ));
            }
            digests.push(FileDigest {
                path: rel.clone(),
                sha256: hex::encode(r.hash.finalize()),
                size: *size,
            });
        }
        let list = DigestList::new(digests);
        let bytes = serde_json::to_vec_pretty(&list)
            .map_err(|e| PackError::new(codes::IO, e.to_string()))?;
        tar.append_data(
            &mut header(bytes.len() as u64),
            DIGESTS_FILE,
            bytes.as_slice(),
        )
        .map_err(|e| PackError::io("adding the digest list", e))?;
        let gz = tar
            .into_inner()
            .map_err(|e| PackError::io("finishing the archive", e))?;
        let w = gz
            .finish()
            .map_err(|e| PackError::io("finishing the archive", e))?;
        let f = w
            .into_inner()
            .map_err(|e| PackError::io("finishing the archive", e.into_error()))?;
        f.sync_all().map_err(|e| PackError::io(tmp.display(), e))?;
        Ok(list)
    })();
    match result {
        Ok(list) => {
            std::fs::rename(&tmp, out).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                PackError::io(out.display(), e)
            })?;
            Ok((manifest, list))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A fresh temporary path beside `target` (created empty, so no two builds share it).
pub(crate) fn tempfile_in(dir: &Path, target: &Path) -> Result<PathBuf> {
    let base = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pack".into());
    for i in 0..1000u32 {
        let p = dir.join(format!(".{base}.{}.{i}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(PackError::io(p.display(), e)),
        }
    }
    Err(PackError::new(
        codes::IO,
        format!("cannot create a temporary file in {}", dir.display()),
    ))
}

/// sha256 and size of a file, streamed.
pub fn file_sha256(path: &Path) -> Result<(String, u64)> {
    let f = std::fs::File::open(path).map_err(|e| PackError::io(path.display(), e))?;
    let mut r = Hashing {
        inner: std::io::BufReader::with_capacity(1 << 20, f),
        hash: Sha256::new(),
        n: 0,
    };
    std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| PackError::io(path.display(), e))?;
    Ok((hex::encode(r.hash.finalize()), r.n))
}

impl Pack {
    /// Reads and checks an archive; `contents` keeps the files' bytes (for installing),
    /// otherwise they are only hashed.
    pub fn read(path: &Path, contents: bool) -> Result<Pack> {
        // One pass over the file: the archive's own sha256 is taken from the bytes as the
        // decompressor reads them (and whatever follows the tar end is drained into it).
        let f = std::fs::File::open(path).map_err(|e| PackError::io(path.display(), e))?;
        let raw = Hashing {
            inner: std::io::BufReader::with_capacity(1 << 20, f),
            hash: Sha256::new(),
            n: 0,
        };
        let gz = flate2::read::GzDecoder::new(raw);
        let mut ar = tar::Archive::new(gz);
        let entries = ar
            .entries()
            .map_err(|e| PackError::invalid(format!("not a pack archive: {e}")))?;
        let mut seen: BTreeMap<String, (String, u64)> = BTreeMap::new();
        let mut files = BTreeMap::new();
        let mut manifest_text = None;
        let mut digest_bytes = None;
        let mut total = 0u64;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| PackError::invalid(format!("not a pack archive: {e}")))?;
            let raw = entry.path_bytes().into_owned();
            let Ok(p) = String::from_utf8(raw) else {
                return Err(PackError::invalid("an entry's path is not UTF-8"));
            };
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                check_entry_path(&format!("{}/x", p.trim_end_matches('/')))?;
                continue;
            }
            check_entry_path(&p)?;
            if !kind.is_file() {
                return Err(PackError::invalid(format!(
                    "entry {p} is a {kind:?}, not a regular file (symlinks and links are refused)"
                ))
                .with_file(&p));
            }
            let size = entry.size();
            if size > cap_for(&p) {
                return Err(too_large(&p, size));
            }
            total = total.saturating_add(size);
            if total > TOTAL_MAX || seen.len() >= MAX_FILES {
                return Err(PackError::new(
                    codes::TOO_LARGE,
                    format!("a pack holds at most {MAX_FILES} files and {TOTAL_MAX} bytes"),
                ));
            }
            if seen.contains_key(&p) {
                return Err(PackError::invalid(format!("entry {p} appears twice")).with_file(&p));
            }
            let keep = contents || p == MANIFEST_FILE || p == DIGESTS_FILE;
            let mut buf = Vec::new();
            let mut r = Hashing {
                inner: &mut entry,
                hash: Sha256::new(),
                n: 0,
            };
            if keep {
                r.read_to_end(&mut buf)
            } else {
                std::io::copy(&mut r, &mut std::io::sink()).map(|n| n as usize)
            }
            .map_err(|e| PackError::invalid(format!("cannot read entry {p}: {e}")))?;
            let sha = hex::encode(r.hash.finalize());
            seen.insert(p.clone(), (sha, size));
            if p == DIGESTS_FILE {
                digest_bytes = Some(buf);
            } else if p == MANIFEST_FILE {
                manifest_text = Some(String::from_utf8(buf.clone()).map_err(|_| {
                    PackError::invalid(format!("{MANIFEST_FILE} is not UTF-8"))
                        .with_file(MANIFEST_FILE)
                })?);
                if contents {
                    files.insert(p, buf);
                }
            } else if contents {
                files.insert(p, buf);
            }
        }
        let mut gz = ar.into_inner();
        std::io::copy(&mut gz, &mut std::io::sink())
            .map_err(|e| PackError::invalid(format!("not a pack archive: {e}")))?;
        let mut raw = gz.into_inner();
        std::io::copy(&mut raw, &mut std::io::sink())
            .map_err(|e| PackError::io(path.display(), e))?;
        let (archive_sha256, archive_size) = (hex::encode(raw.hash.finalize()), raw.n);
        let Some(digest_bytes) = digest_bytes else {
            return Err(PackError::new(
                codes::DIGEST_MISMATCH,
                format!("the archive has no {DIGESTS_FILE}"),
            )
            .with_file(DIGESTS_FILE));
        };
        let digests: DigestList = serde_json::from_slice(&digest_bytes).map_err(|e| {
            PackError::new(
                codes::DIGEST_MISMATCH,
                format!("{DIGESTS_FILE} is not a digest list: {e}"),
            )
            .with_file(DIGESTS_FILE)
        })?;
        seen.remove(DIGESTS_FILE);
        check_against(&digests, &seen)?;
        let Some(manifest_text) = manifest_text else {
            return Err(
                PackError::invalid(format!("the archive has no {MANIFEST_FILE}"))
                    .with_file(MANIFEST_FILE),
            );
        };
        let manifest = PackManifest::parse(&manifest_text)?;
        Ok(Pack {
            manifest,
            manifest_text,
            digests,
            files,
            archive_sha256,
            archive_size,
        })
    }
}

/// Every file against the digest list, and the list against its tree digest.
fn check_against(list: &DigestList, seen: &BTreeMap<String, (String, u64)>) -> Result<()> {
    let mismatch = |file: &str, why: String| {
        Err(PackError::new(codes::DIGEST_MISMATCH, format!("{file}: {why}")).with_file(file))
    };
    let mut listed = BTreeMap::new();
    for f in &list.files {
        if listed.insert(f.path.as_str(), f).is_some() {
            return mismatch(DIGESTS_FILE, format!("{} is listed twice", f.path));
        }
    }
    for (path, (sha, size)) in seen {
        match listed.get(path.as_str()) {
            None => return mismatch(path, "not in the digest list".into()),
            Some(f) if &f.sha256 != sha || f.size != *size => {
                return mismatch(
                    path,
                    format!(
                        "content has sha256 {sha} ({size} bytes), the digest list says {} ({} bytes)",
                        f.sha256, f.size
                    ),
                );
            }
            Some(_) => {}
        }
    }
    for f in &list.files {
        if !seen.contains_key(&f.path) {
            return mismatch(
                &f.path,
                "listed in the digest list but not in the archive".into(),
            );
        }
    }
    let sorted = list.files.windows(2).all(|w| w[0].path < w[1].path);
    if !sorted || tree_digest(&list.files) != list.tree {
        return mismatch(
            DIGESTS_FILE,
            "its tree digest does not match its files".into(),
        );
    }
    Ok(())
}

/// Writes bytes to `path` through a temporary file and a rename (nothing partial is left
/// behind on failure).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile_in(&parent, path)?;
    let r = (|| -> std::io::Result<()> {
        #[cfg(unix)]
        if let Some(m) = mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(m))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        PackError::io(path.display(), e)
    })
}
