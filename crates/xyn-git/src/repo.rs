//! The node's Git repositories: bare repositories under `<data-dir>/repos/<name>.git`, written
//! and read with gitoxide (no `git` binary involved), readable by any Git client.
//!
//! Every commit the node makes names the run that made it in a `Xyn-Run:` trailer, so the
//! history of a repository is also a record of which automation changed what.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gix::ObjectId;
use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;
use serde_json::{Value, json};

/// Stable error codes of the Git actions.
pub mod codes {
    pub const INVALID_REPO: &str = "git.invalid_repo";
    pub const REPO_NOT_FOUND: &str = "git.repo_not_found";
    pub const REPO_EXISTS: &str = "git.repo_exists";
    pub const INVALID_PATH: &str = "git.invalid_path";
    pub const REV_NOT_FOUND: &str = "git.rev_not_found";
    pub const TOO_LARGE: &str = "git.too_large";
    pub const SOURCE_DENIED: &str = "git.source_denied";
    pub const FAILED: &str = "git.failed";
}

/// An error of a repository operation: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitError {
    pub code: &'static str,
    pub message: String,
}

impl GitError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    fn failed(what: &str, e: impl std::fmt::Display) -> Self {
        Self::new(codes::FAILED, format!("{what}: {e}"))
    }
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Limits of what one operation reads or writes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most files one commit may change.
    pub max_files: usize,
    /// Most bytes of file content one commit may write, or a checkout or diff may return.
    pub max_bytes: usize,
    /// Most commits `log` returns.
    pub max_log: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_files: 1_000,
            max_bytes: 16 << 20,
            max_log: 1_000,
        }
    }
}

/// Who commits and for which run.
#[derive(Clone, Debug)]
pub struct Provenance {
    /// The run's actor: the commit's author and committer.
    pub actor: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
}

/// The repositories of a node.
pub struct Repos {
    root: PathBuf,
    /// Local paths `git.clone` may read from (besides the node's own repositories).
    clone_sources: Vec<PathBuf>,
    limits: Limits,
    /// One writer at a time: a commit reads the branch head and moves it.
    write: Mutex<()>,
}

/// A repository name: 1–64 of `a-z A-Z 0-9 . _ -`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), GitError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-'])
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(GitError::new(
            codes::INVALID_REPO,
            format!(
                "{name:?} is not a repository name (1-64 letters, digits, '.', '_', '-'; not starting with '.' or '-')"
            ),
        ))
    }
}

/// A path inside a repository: relative, `/`-separated, no empty, `.`, `..` or `.git`
/// component, no NUL or backslash.
pub fn check_path(path: &str) -> Result<(), GitError> {
    let bad = path.is_empty()
        || path.len() > 1024
        || path.starts_with('/')
        || path.contains(['\0', '\\'])
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.eq_ignore_ascii_case(".git"));
    if bad {
        Err(GitError::new(
            codes::INVALID_PATH,
            format!("{path:?} is not a relative path inside the repository"),
        ))
    } else {
        Ok(())
    }
}

/// `<message>\n\nXyn-Run: <run>\nXyn-Step: <step>\n` (trailers only for what is known).
fn message_with_trailers(message: &str, p: &Provenance) -> String {
    let mut m = message.trim_end().to_string();
    let mut trailers = String::new();
    if let Some(r) = &p.run_id {
        trailers.push_str(&format!("Xyn-Run: {r}\n"));
    }
    if let Some(s) = &p.step_id {
        trailers.push_str(&format!("Xyn-Step: {s}\n"));
    }
    if !trailers.is_empty() {
        m.push_str("\n\n");
        m.push_str(&trailers);
    } else {
        m.push('\n');
    }
    m
}

/// The value of a `Key: value` trailer in a commit message, if any.
fn trailer<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// An actor as a Git identity: no angle brackets or line breaks.
fn identity(actor: &str) -> (String, String) {
    let clean: String = actor
        .chars()
        .filter(|c| !matches!(c, '<' | '>' | '\n' | '\r' | '\0'))
        .collect();
    let clean = if clean.trim().is_empty() {
        "xyn".to_string()
    } else {
        clean.trim().to_string()
    };
    let local: String = clean
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    (clean, format!("{local}@xyn.invalid"))
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Repos {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            clone_sources: Vec::new(),
            limits: Limits::default(),
            write: Mutex::new(()),
        }
    }

    /// Local directories (and what is below them) `git.clone` may copy from.
    pub fn with_clone_sources(mut self, sources: Vec<PathBuf>) -> Self {
        self.clone_sources = sources;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where repository `name` lives.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, GitError> {
        check_name(name)?;
        Ok(self.root.join(format!("{name}.git")))
    }

    fn open(&self, name: &str) -> Result<gix::Repository, GitError> {
        let path = self.path_of(name)?;
        if !path.join("HEAD").is_file() {
            return Err(GitError::new(
                codes::REPO_NOT_FOUND,
                format!("there is no repository {name:?} (create it with git.repo.init)"),
            ));
        }
        gix::open(path).map_err(|e| GitError::failed("cannot open the repository", e))
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `git.repo.init`: creates a bare repository (its default branch `main`); an existing
    /// one is left as it is (`created: false`).
    pub fn init(&self, name: &str) -> Result<Value, GitError> {
        let path = self.path_of(name)?;
        let _w = self.guard();
        if path.join("HEAD").is_file() {
            return Ok(json!({"repo": name, "created": false}));
        }
        std::fs::create_dir_all(&self.root)
            .map_err(|e| GitError::failed("cannot create the repositories directory", e))?;
        // Made in a temporary directory and renamed, so a crash never leaves half a repository.
        let tmp = self.root.join(format!(".{name}.git.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        gix::init_bare(&tmp).map_err(|e| GitError::failed("cannot create the repository", e))?;
        std::fs::write(tmp.join("HEAD"), "ref: refs/heads/main\n")
            .map_err(|e| GitError::failed("cannot write HEAD", e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| GitError::failed("cannot create the repository", e))?;
        Ok(json!({"repo": name, "created": true}))
    }

    /// The commit a revision names: `HEAD` (default), a branch or tag name, a full ref, or a
    /// full or abbreviated (at least 7 hex digits) commit id.
    fn resolve(&self, repo: &gix::Repository, rev: Option<&str>) -> Result<ObjectId, GitError> {
        let rev = rev.unwrap_or("HEAD").trim();
        let not_found = || {
            GitError::new(
                codes::REV_NOT_FOUND,
                format!("{rev:?} names no commit in the repository"),
            )
        };
        if rev == "HEAD" {
            return repo
                .head_id()
                .map(|id| id.detach())
                .map_err(|_| not_found());
        }
        for name in [
            rev.to_string(),
            format!("refs/heads/{rev}"),
            format!("refs/tags/{rev}"),
        ] {
            if let Ok(Some(mut r)) = repo.try_find_reference(name.as_str()) {
                return r
                    .peel_to_id()
                    .map(|id| id.detach())
                    .map_err(|_| not_found());
            }
        }
        if rev.len() >= 7 && rev.len() <= 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(id) = ObjectId::from_hex(rev.as_bytes()) {
                return repo.find_commit(id).map(|c| c.id).map_err(|_| not_found());
            }
            let prefix = gix::hash::Prefix::from_hex(rev).map_err(|_| not_found())?;
            if let Ok(Some(Ok(id))) = repo.objects.lookup_prefix(prefix, None) {
                return repo.find_commit(id).map(|c| c.id).map_err(|_| not_found());
            }
        }
        Err(not_found())
    }

    /// `git.commit`: writes `files` (path → content; `null` deletes the path) on top of the
    /// branch head (`main` unless `branch` is given) as one commit by `who`, with the run in
    /// its trailers. A commit that changes nothing is not made (`changed: false`).
    pub fn commit(
        &self,
        name: &str,
        branch: Option<&str>,
        message: &str,
        files: &BTreeMap<String, Option<String>>,
        who: &Provenance,
    ) -> Result<Value, GitError> {
        if files.len() > self.limits.max_files {
            return Err(GitError::new(
                codes::TOO_LARGE,
                format!(
                    "{} files in one commit; at most {}",
                    files.len(),
                    self.limits.max_files
                ),
            ));
        }
        let bytes: usize = files.values().flatten().map(String::len).sum();
        if bytes > self.limits.max_bytes {
            return Err(GitError::new(
                codes::TOO_LARGE,
                format!(
                    "{bytes} bytes in one commit; at most {}",
                    self.limits.max_bytes
                ),
            ));
        }
        for p in files.keys() {
            check_path(p)?;
        }
        let branch = branch.unwrap_or("main");
        if branch.is_empty()
            || branch.contains("..")
            || branch.starts_with(['/', '-', '.'])
            || !branch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
        {
            return Err(GitError::new(
                codes::INVALID_PATH,
                format!("{branch:?} is not a branch name"),
            ));
        }
        let _w = self.guard();
        let repo = self.open(name)?;
        let reference = format!("refs/heads/{branch}");
        let parent = match repo.try_find_reference(reference.as_str()) {
            Ok(Some(mut r)) => Some(
                r.peel_to_id()
                    .map_err(|e| GitError::failed("cannot read the branch", e))?
                    .detach(),
            ),
            Ok(None) => None,
            Err(e) => return Err(GitError::failed("cannot read the branch", e)),
        };
        let base_tree = match parent {
            Some(p) => repo
                .find_commit(p)
                .and_then(|c| c.tree_id())
                .map_err(|e| GitError::failed("cannot read the parent commit", e))?
                .detach(),
            None => ObjectId::empty_tree(repo.object_hash()),
        };
        let mut editor = repo
            .edit_tree(base_tree)
            .map_err(|e| GitError::failed("cannot edit the tree", e))?;
        for (path, content) in files {
            match content {
                Some(c) => {
                    let blob = repo
                        .write_blob(c.as_bytes())
                        .map_err(|e| GitError::failed("cannot write a file", e))?;
                    editor
                        .upsert(path.as_str(), EntryKind::Blob, blob)
                        .map_err(|e| {
                            GitError::new(
                                codes::INVALID_PATH,
                                format!("cannot write {path:?}: {e}"),
                            )
                        })?;
                }
                None => {
                    editor.remove(path.as_str()).map_err(|e| {
                        GitError::new(codes::INVALID_PATH, format!("cannot remove {path:?}: {e}"))
                    })?;
                }
            }
        }
        let tree = editor
            .write()
            .map_err(|e| GitError::failed("cannot write the tree", e))?
            .detach();
        if parent.is_some() && tree == base_tree {
            return Ok(json!({
                "repo": name, "branch": branch, "changed": false,
                "commit": parent.map(|p| p.to_string()),
            }));
        }
        let (who_name, who_email) = identity(&who.actor);
        let sig = gix::actor::Signature {
            name: who_name.into(),
            email: who_email.into(),
            time: gix::date::Time {
                seconds: now_seconds(),
                offset: 0,
            },
        };
        let mut buf = gix::date::parse::TimeBuf::default();
        let sig_ref = sig.to_ref(&mut buf);
        let id = repo
            .commit_as(
                sig_ref,
                sig_ref,
                reference.as_str(),
                message_with_trailers(message, who),
                tree,
                parent,
            )
            .map_err(|e| GitError::failed("cannot write the commit", e))?;
        Ok(json!({
            "repo": name,
            "branch": branch,
            "changed": true,
            "commit": id.to_string(),
            "parent": parent.map(|p| p.to_string()),
            "files": files.len(),
        }))
    }

    /// Every file of a commit's tree: path → blob id.
    fn files_of(
        &self,
        repo: &gix::Repository,
        commit: Option<ObjectId>,
    ) -> Result<BTreeMap<String, ObjectId>, GitError> {
        let mut out = BTreeMap::new();
        let Some(commit) = commit else {
            return Ok(out);
        };
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree_id())
            .map_err(|e| GitError::failed("cannot read the commit", e))?
            .detach();
        // Depth-first with an explicit stack (no recursion on repository data).
        let mut stack = vec![(String::new(), tree)];
        while let Some((prefix, id)) = stack.pop() {
            let t = repo
                .find_tree(id)
                .map_err(|e| GitError::failed("cannot read a tree", e))?;
            for e in t.iter() {
                let e = e.map_err(|e| GitError::failed("cannot read a tree entry", e))?;
                let path = format!("{prefix}{}", e.inner.filename.to_str_lossy());
                if e.inner.mode.is_tree() {
                    stack.push((format!("{path}/"), e.inner.oid.to_owned()));
                } else if e.inner.mode.is_blob() {
                    out.insert(path, e.inner.oid.to_owned());
                }
                if out.len() > 100_000 {
                    return Err(GitError::new(
                        codes::TOO_LARGE,
                        "the tree has more than 100,000 files",
                    ));
                }
            }
        }
        Ok(out)
    }

    fn blob_text(&self, repo: &gix::Repository, id: ObjectId) -> Result<String, GitError> {
        let blob = repo
            .find_blob(id)
            .map_err(|e| GitError::failed("cannot read a file", e))?;
        Ok(String::from_utf8_lossy(&blob.data).into_owned())
    }

    /// `git.diff`: what changed from `from` (default: the first parent of `to`) to `to`
    /// (default `HEAD`): a summary and the unified diff text.
    pub fn diff(
        &self,
        name: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<(Value, String), GitError> {
        let repo = self.open(name)?;
        let to_id = self.resolve(&repo, to)?;
        let from_id = match from {
            Some(f) => Some(self.resolve(&repo, Some(f))?),
            None => repo
                .find_commit(to_id)
                .map_err(|e| GitError::failed("cannot read the commit", e))?
                .parent_ids()
                .next()
                .map(|p| p.detach()),
        };
        let old = self.files_of(&repo, from_id)?;
        let new = self.files_of(&repo, Some(to_id))?;
        let mut text = String::new();
        let mut changes = Vec::new();
        let paths: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for p in paths {
            let (a, b) = (old.get(p), new.get(p));
            if a == b {
                continue;
            }
            let status = match (a, b) {
                (None, Some(_)) => "added",
                (Some(_), None) => "deleted",
                _ => "modified",
            };
            let a_text = a.map(|id| self.blob_text(&repo, *id)).transpose()?;
            let b_text = b.map(|id| self.blob_text(&repo, *id)).transpose()?;
            let (a_text, b_text) = (a_text.unwrap_or_default(), b_text.unwrap_or_default());
            let d = similar::TextDiff::from_lines(&a_text, &b_text);
            let (mut added, mut removed) = (0usize, 0usize);
            for op in d.iter_all_changes() {
                match op.tag() {
                    similar::ChangeTag::Insert => added += 1,
                    similar::ChangeTag::Delete => removed += 1,
                    similar::ChangeTag::Equal => {}
                }
            }
            text.push_str(&format!("diff --git a/{p} b/{p}\n"));
            let (ha, hb) = match status {
                "added" => ("/dev/null".to_string(), format!("b/{p}")),
                "deleted" => (format!("a/{p}"), "/dev/null".to_string()),
                _ => (format!("a/{p}"), format!("b/{p}")),
            };
            text.push_str(
                &d.unified_diff()
                    .context_radius(3)
                    .header(&ha, &hb)
                    .to_string(),
            );
            if text.len() > self.limits.max_bytes {
                return Err(GitError::new(
                    codes::TOO_LARGE,
                    format!("the diff is larger than {} bytes", self.limits.max_bytes),
                ));
            }
            changes.push(json!({"path": p, "status": status, "added": added, "removed": removed}));
        }
        Ok((
            json!({
                "repo": name,
                "from": from_id.map(|i| i.to_string()),
                "to": to_id.to_string(),
                "changes": changes,
            }),
            text,
        ))
    }

    /// `git.log`: commits reachable from `rev` (default `HEAD`) along first parents, newest
    /// first, at most `limit`.
    pub fn log(&self, name: &str, rev: Option<&str>, limit: usize) -> Result<Value, GitError> {
        let repo = self.open(name)?;
        let limit = limit.clamp(1, self.limits.max_log);
        let mut next = match self.resolve(&repo, rev) {
            Ok(id) => Some(id),
            // An empty repository has no commits yet.
            Err(e) if rev.is_none() && e.code == codes::REV_NOT_FOUND => None,
            Err(e) => return Err(e),
        };
        let mut commits = Vec::new();
        while let Some(id) = next {
            if commits.len() >= limit {
                break;
            }
            let c = repo
                .find_commit(id)
                .map_err(|e| GitError::failed("cannot read a commit", e))?;
            let message = c
                .message_raw()
                .map(|m| m.to_str_lossy().into_owned())
                .unwrap_or_default();
            let author = c
                .author()
                .map(|a| a.name.to_str_lossy().into_owned())
                .unwrap_or_default();
            let time = c.time().map(|t| t.seconds).unwrap_or(0);
            commits.push(json!({
                "commit": id.to_string(),
                "summary": message.lines().next().unwrap_or_default(),
                "message": message,
                "author": author,
                "time": time,
                "run_id": trailer(&message, "Xyn-Run"),
                "parents": c.parent_ids().map(|p| p.to_string()).collect::<Vec<_>>(),
            }));
            next = c.parent_ids().next().map(|p| p.detach());
        }
        Ok(json!({"repo": name, "commits": commits}))
    }

    /// `git.checkout`: the files of a revision (all, or those under `path`), as text.
    pub fn checkout(
        &self,
        name: &str,
        rev: Option<&str>,
        path: Option<&str>,
    ) -> Result<Value, GitError> {
        if let Some(p) = path {
            check_path(p)?;
        }
        let repo = self.open(name)?;
        let id = self.resolve(&repo, rev)?;
        let mut files = serde_json::Map::new();
        let mut bytes = 0usize;
        for (p, blob) in self.files_of(&repo, Some(id))? {
            if let Some(prefix) = path
                && p != prefix
                && !p.starts_with(&format!("{prefix}/"))
            {
                continue;
            }
            let text = self.blob_text(&repo, blob)?;
            bytes += text.len();
            if bytes > self.limits.max_bytes {
                return Err(GitError::new(
                    codes::TOO_LARGE,
                    format!(
                        "the files are larger than {} bytes; name a path",
                        self.limits.max_bytes
                    ),
                ));
            }
            files.insert(p, Value::String(text));
        }
        Ok(json!({"repo": name, "commit": id.to_string(), "files": files}))
    }

    /// `git.clone`: a new repository `name` with everything of `source`: another of the
    /// node's repositories (`repo:<name>`) or a local repository under one of the configured
    /// clone sources. Copies the repository's objects and refs (a local clone, as
    /// `git clone --bare --no-hardlinks` makes).
    pub fn clone_from(&self, source: &str, name: &str) -> Result<Value, GitError> {
        let dest = self.path_of(name)?;
        let src = match source.strip_prefix("repo:") {
            Some(n) => {
                let p = self.path_of(n)?;
                if !p.join("HEAD").is_file() {
                    return Err(GitError::new(
                        codes::REPO_NOT_FOUND,
                        format!("there is no repository {n:?}"),
                    ));
                }
                p
            }
            None => self.local_source(source)?,
        };
        let _w = self.guard();
        if dest.exists() {
            return Err(GitError::new(
                codes::REPO_EXISTS,
                format!("the repository {name:?} exists"),
            ));
        }
        // Validate that the source is a repository before copying anything.
        let opened = gix::open(&src).map_err(|e| {
            GitError::new(
                codes::REPO_NOT_FOUND,
                format!("{source:?} is not a Git repository: {e}"),
            )
        })?;
        let git_dir = opened.git_dir().to_path_buf();
        std::fs::create_dir_all(&self.root)
            .map_err(|e| GitError::failed("cannot create the repositories directory", e))?;
        let tmp = self.root.join(format!(".{name}.git.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        copy_git_dir(&git_dir, &tmp).map_err(|e| GitError::failed("cannot copy", e))?;
        // The clone is bare whatever the source was.
        let config = tmp.join("config");
        if let Ok(c) = std::fs::read_to_string(&config) {
            let _ = std::fs::write(&config, c.replace("bare = false", "bare = true"));
        }
        std::fs::rename(&tmp, &dest).map_err(|e| GitError::failed("cannot create", e))?;
        let head = self.log(name, None, 1)?;
        Ok(json!({
            "repo": name,
            "source": source,
            "head": head["commits"][0]["commit"],
        }))
    }

    /// A local path `git.clone` may read: inside one of the configured clone sources after
    /// resolving symlinks (so a link cannot lead out of them).
    fn local_source(&self, source: &str) -> Result<PathBuf, GitError> {
        let denied = || {
            GitError::new(
                codes::SOURCE_DENIED,
                format!(
                    "{source:?} is not under a clone source of this node ([git] clone_sources); \
                     use repo:<name> for the node's own repositories"
                ),
            )
        };
        let p = Path::new(source);
        if !p.is_absolute() {
            return Err(denied());
        }
        let real = p.canonicalize().map_err(|_| denied())?;
        let allowed = self.clone_sources.iter().any(|s| {
            s.canonicalize()
                .map(|s| real.starts_with(&s))
                .unwrap_or(false)
        });
        if allowed { Ok(real) } else { Err(denied()) }
    }
}

/// Copies a Git directory: objects, refs, `HEAD`, `packed-refs`, `config`; no hooks (a
/// repository's hooks never come along), no symlinks followed.
fn copy_git_dir(src: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for entry in ["HEAD", "packed-refs", "config"] {
        let s = src.join(entry);
        if s.is_file() && !s.is_symlink() {
            std::fs::copy(&s, dest.join(entry))?;
        }
    }
    for dir in ["objects", "refs"] {
        let mut stack = vec![(src.join(dir), dest.join(dir))];
        while let Some((s, d)) = stack.pop() {
            std::fs::create_dir_all(&d)?;
            let Ok(rd) = std::fs::read_dir(&s) else {
                continue;
            };
            for e in rd {
                let e = e?;
                let ft = e.file_type()?;
                if ft.is_dir() {
                    stack.push((e.path(), d.join(e.file_name())));
                } else if ft.is_file() {
                    std::fs::copy(e.path(), d.join(e.file_name()))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_that_could_escape_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a..b",
            "x\0",
            &"a".repeat(65),
        ] {
            assert_eq!(
                check_name(bad).unwrap_err().code,
                codes::INVALID_REPO,
                "{bad:?}"
            );
        }
        for ok in ["app", "my-repo.v2", "a_b"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/../b",
            "..",
            ".git/config",
            "x/.GIT/hooks",
            "a\\b",
            "a/./b",
            "a/",
        ] {
            assert_eq!(
                check_path(bad).unwrap_err().code,
                codes::INVALID_PATH,
                "{bad:?}"
            );
        }
        for ok in ["README.md", "src/main.rs", ".gitignore", "a/b/c.txt"] {
            check_path(ok).unwrap();
        }
    }

    #[test]
    fn trailers_name_the_run_and_are_read_back() {
        let p = Provenance {
            actor: "alice".into(),
            run_id: Some("r1".into()),
            step_id: Some("s1".into()),
        };
        let m = message_with_trailers("Fix it\n", &p);
        assert_eq!(m, "Fix it\n\nXyn-Run: r1\nXyn-Step: s1\n");
        assert_eq!(trailer(&m, "Xyn-Run"), Some("r1"));
        assert_eq!(identity("Bob <b@x>\n").0, "Bob b@x");
        assert_eq!(identity("").1, "xyn@xyn.invalid");
    }
}
