//! Installing and removing packs in a data directory, and the one place pack and trust
//! commands touch the node's store (`record_event`, `commit`).
//!
//! ```text
//! <data-dir>/packs/<id>/pack.xynpack            the archive as installed
//! <data-dir>/packs/<id>/pack.xynpack.sig.json   its envelope (when signed)
//! <data-dir>/packs/<id>/record.json             id, version, digests, signers, contents
//! ```
//!
//! Install order: verify (digests, signature by a trusted key unless `--allow-unsigned`),
//! the Xyn range, dependencies, then every blueprint is compiled and every action package
//! checked *before* anything changes; then the actions are installed (packages they replace
//! are moved aside first), the blueprint versions and the `xyn.pack.installed` event are
//! committed in one store batch, and the record is written (through a temporary directory
//! and a rename). A failure at any of these steps puts the previous action packages back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use xyn_core::event::Event;
use xyn_core::records::BlueprintVersion;
use xyn_core::{EventId, Resource, Timestamp};
use xyn_pack::keys::TrustStore;
use xyn_pack::verify::{KeyPolicy, verify_pack};
use xyn_pack::{PackError, XYN_VERSION, codes};
use xyn_store::WriteBatch;

use crate::cli::StoreArgs;

pub const TRUST_ADDED: &str = "xyn.trust.added";
pub const TRUST_REMOVED: &str = "xyn.trust.removed";
pub const PACK_INSTALLED: &str = "xyn.pack.installed";
pub const PACK_REMOVED: &str = "xyn.pack.removed";

pub(crate) fn now() -> Timestamp {
    Timestamp::from_micros(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64),
    )
}

fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn event(env_id: &str, name: &str, resource: (&str, &str), data: Value) -> Event {
    event_as(
        env_id,
        &actor(),
        EventId(uuid::Uuid::now_v7()),
        name,
        resource,
        data,
    )
}

fn event_as(
    env_id: &str,
    actor: &str,
    id: EventId,
    name: &str,
    resource: (&str, &str),
    data: Value,
) -> Event {
    Event {
        event_id: id,
        event_name: name.to_string(),
        occurred_at: now(),
        env_id: env_id.to_string(),
        actor: actor.to_string(),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        run_id: None,
        step_id: None,
        resource: Some(Resource {
            kind: resource.0.to_string(),
            id: resource.1.to_string(),
        }),
        data,
    }
}

/// Commits one batch to the node's store (SQLite in the data dir, or --database-url).
/// The only store access of the pack and trust commands.
fn commit(
    data_dir: &Path,
    store: &StoreArgs,
    build: impl FnOnce(&str, Vec<BlueprintVersion>) -> WriteBatch,
    blueprints: Vec<(std::sync::Arc<xyn_core::blueprint::Plan>, String, String)>,
    already_locked: bool,
) -> Result<Vec<BlueprintVersion>> {
    // A SQLite data dir a node is serving is refused (its lock names the node's pid): pack and
    // trust changes are made while the node is stopped, so it never misses them.
    let env_id = crate::config::load(None)?.node.env_id;
    crate::serve::with_offline_store(data_dir, store, already_locked, async |opened| {
        let mut versions = Vec::new();
        for (plan, text, origin) in blueprints {
            let latest = opened
                .get_blueprint(&plan.id, None)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if latest.as_ref().is_some_and(|l| l.digest == plan.digest) {
                continue;
            }
            versions.push(BlueprintVersion {
                blueprint_id: plan.id.clone(),
                version: latest.as_ref().map_or(1, |l| l.version + 1),
                name: plan.name.clone(),
                definition: plan.definition.clone(),
                source: text,
                digest: plan.digest.clone(),
                created_at: now(),
                created_by: actor(),
                origin,
            });
        }
        let batch = build(&env_id, versions.clone());
        opened
            .commit(batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("cannot write to the store")?;
        Ok(versions)
    })
}

/// Records one audit event in the node's log.
pub fn record_event(
    data_dir: &Path,
    store: &StoreArgs,
    name: &str,
    resource: (&str, &str),
    data: Value,
) -> Result<()> {
    commit(
        data_dir,
        store,
        |env, _| WriteBatch {
            events: vec![event(env, name, resource, data)],
            ..Default::default()
        },
        Vec::new(),
        false,
    )?;
    Ok(())
}

fn packs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("packs")
}

/// The installed packs' records, sorted by id.
pub fn installed(data_dir: &Path) -> Result<Vec<Value>, PackError> {
    let dir = packs_dir(data_dir);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PackError::io(dir.display(), e)),
    };
    let mut out = Vec::new();
    for ent in rd.filter_map(Result::ok) {
        let name = ent.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let p = ent.path().join("record.json");
        if let Ok(b) = std::fs::read(&p)
            && let Ok(v) = serde_json::from_slice::<Value>(&b)
        {
            out.push(v);
        }
    }
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(out)
}

fn installed_versions(data_dir: &Path) -> Result<BTreeMap<String, semver::Version>, PackError> {
    Ok(installed(data_dir)?
        .into_iter()
        .filter_map(|r| {
            Some((
                r["id"].as_str()?.to_string(),
                semver::Version::parse(r["version"].as_str()?).ok()?,
            ))
        })
        .collect())
}

/// Installed packs (other than `id`) whose `depends` would no longer hold if `id` became
/// `version` (`None`: removed), each as `"<pack> needs <id> <range>"`.
fn dependents_broken(
    data_dir: &Path,
    id: &str,
    version: Option<&semver::Version>,
) -> Result<Vec<String>, PackError> {
    let mut out = Vec::new();
    for r in installed(data_dir)? {
        if r["id"] == id {
            continue;
        }
        let Some(range) = r["depends"][id].as_str() else {
            continue;
        };
        let holds = match (version, semver::VersionReq::parse(range)) {
            (Some(v), Ok(req)) => req.matches(v),
            _ => false,
        };
        if !holds {
            out.push(format!(
                "{} needs {id} {range}",
                r["id"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok(out)
}

/// The action packages of a pack: `actions/<name>/...` grouped by name.
fn action_dirs(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<(String, &[u8])>> {
    let mut out: BTreeMap<String, Vec<(String, &[u8])>> = BTreeMap::new();
    for (p, b) in files {
        if let Some(rest) = p.strip_prefix("actions/")
            && let Some((name, rel)) = rest.split_once('/')
        {
            out.entry(name.to_string())
                .or_default()
                .push((rel.to_string(), b.as_slice()));
        }
    }
    out
}

/// A node the pack is installed on while it runs: its actions and catalogue change live.
pub struct Live {
    pub node: xyn_engine::Node,
    pub sandbox: std::sync::Arc<xyn_sandbox::action::SandboxHost>,
    pub rt: tokio::runtime::Handle,
}

/// Where an install commits: the store of a stopped node (opened for the occasion, the data
/// dir locked), or a running node.
pub enum Target<'a> {
    Offline(&'a StoreArgs),
    /// The node, and who the install or removal is done for.
    Live(&'a Live, &'a str),
}

/// What an install in progress has changed, written (atomically) before it changes anything,
/// so that a crash at any point is finished or undone the next time the node or a pack command
/// starts: the install's commit point is its `xyn.pack.installed` event being in the store.
#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    pack_id: String,
    /// The id of the `xyn.pack.installed` event the commit writes.
    event_id: uuid::Uuid,
    actions: Vec<JournalAction>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct JournalAction {
    dest: PathBuf,
    backup: PathBuf,
    /// An action package of that name was there before (it is moved to `backup`).
    existed: bool,
}

const JOURNAL: &str = "journal.json";

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Puts blueprint versions (`[{id, version}]`, as the installed event records them) into a
/// record's blueprint list.
fn fill_versions(record: &mut Value, versions: &Value) {
    let Some(list) = record["blueprints"].as_array_mut() else {
        return;
    };
    for b in list {
        if let Some(v) = versions
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["id"] == b["id"])
        {
            b["version"] = v["version"].clone();
        }
    }
}

/// Finishes (`committed` is the installed event's data) or undoes an install whose staging
/// directory is `staging`. Idempotent: a crash inside it is finished by the next call.
fn settle(
    data_dir: &Path,
    staging: &Path,
    journal: &Journal,
    committed: Option<&Value>,
) -> Result<()> {
    match committed {
        Some(data) => {
            let rec = staging.join("record");
            if rec.exists() {
                let rj = rec.join("record.json");
                let mut record: Value = serde_json::from_slice(&std::fs::read(&rj)?)?;
                fill_versions(&mut record, &data["blueprints"]);
                write_atomic(&rj, &serde_json::to_vec_pretty(&record)?)?;
                let dest = packs_dir(data_dir).join(&journal.pack_id);
                if dest.exists() {
                    let old = staging.join("old");
                    let _ = std::fs::remove_dir_all(&old);
                    std::fs::rename(&dest, &old)?;
                }
                std::fs::rename(&rec, &dest)
                    .with_context(|| format!("cannot write {}", dest.display()))?;
            }
        }
        None => {
            for a in &journal.actions {
                if a.existed {
                    if a.backup.exists() {
                        let _ = std::fs::remove_dir_all(&a.dest);
                        std::fs::rename(&a.backup, &a.dest)
                            .with_context(|| format!("cannot put {} back", a.dest.display()))?;
                    }
                } else if a.dest.exists() {
                    std::fs::remove_dir_all(&a.dest)?;
                }
            }
        }
    }
    std::fs::remove_file(staging.join(JOURNAL))?;
    let _ = std::fs::remove_dir_all(staging);
    Ok(())
}

/// Installs that did not finish (the process was killed): each staging directory with its
/// journal. Staging directories without one changed nothing and are removed.
fn unfinished(data_dir: &Path) -> Vec<(PathBuf, Journal)> {
    let Ok(rd) = std::fs::read_dir(packs_dir(data_dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.filter_map(Result::ok) {
        if !e.file_name().to_string_lossy().starts_with(".staging-") {
            continue;
        }
        let dir = e.path();
        match std::fs::read(dir.join(JOURNAL))
            .ok()
            .and_then(|b| serde_json::from_slice::<Journal>(&b).ok())
        {
            Some(j) => out.push((dir, j)),
            None => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    out
}

/// Finishes or undoes installs a crash interrupted, asking `store` whether each committed.
/// Only while nothing else installs into the data dir: at node start, or under its lock.
pub async fn recover(data_dir: &Path, store: &dyn xyn_store::Store) -> Result<usize> {
    let pending = unfinished(data_dir);
    let n = pending.len();
    for (dir, j) in pending {
        let ev = store
            .get_event(EventId(j.event_id))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let data = ev.map(|e| e.event.data);
        tracing::warn!(pack = %j.pack_id, committed = data.is_some(), "finishing an interrupted pack install");
        settle(data_dir, &dir, &j, data.as_ref())?;
    }
    Ok(n)
}

/// [`recover`] for the CLI: only when an install was interrupted (a staging directory is
/// left), and only on a SQLite data
/// dir whose lock it can take (a running node recovers at its start and may be installing).
pub fn recover_offline(data_dir: &Path, store: &StoreArgs) -> Result<()> {
    if store.database_url.is_some() || unfinished_count(data_dir) == 0 {
        return Ok(());
    }
    let Ok(_lock) = crate::datadir::DataDirLock::acquire(data_dir) else {
        return Ok(());
    };
    crate::serve::with_offline_store(data_dir, store, true, async |opened| {
        recover(data_dir, opened.as_ref()).await
    })?;
    Ok(())
}

fn unfinished_count(data_dir: &Path) -> usize {
    std::fs::read_dir(packs_dir(data_dir)).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
            .count()
    })
}

/// Installs a pack. The outer `Result` is an operational failure (store unreachable); the
/// inner one a refusal with a stable code, before anything changed.
pub fn install(
    file: &Path,
    envelope: Option<&[u8]>,
    data_dir: &Path,
    target: Target<'_>,
    allow_unsigned: bool,
) -> Result<Result<Value, PackError>> {
    let trust = match TrustStore::load(data_dir) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    // An envelope that is there must be intact even with --allow-unsigned; that flag only
    // waives the need for a trusted signer.
    let verified = match (envelope, allow_unsigned) {
        (Some(env), true) => verify_pack(file, Some(env), &KeyPolicy::Report(trust), true),
        (None, true) => xyn_pack::Pack::read(file, true).map(|pack| xyn_pack::Verified {
            pack,
            signers: Vec::new(),
            statement: Value::Null,
            builder_id: String::new(),
        }),
        (env, false) => verify_pack(file, env, &KeyPolicy::Trusted(trust), true),
    };
    let v = match verified {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let m = &v.pack.manifest;
    if let Err(e) = m.check_compatible(XYN_VERSION) {
        return Ok(Err(e));
    }
    let versions = match installed_versions(data_dir) {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    if let Err(e) = m.check_dependencies(&versions) {
        return Ok(Err(e));
    }
    match dependents_broken(data_dir, &m.id, Some(&m.version)) {
        Ok(b) if b.is_empty() => {}
        Ok(b) => {
            return Ok(Err(PackError::new(
                codes::INCOMPATIBLE,
                format!(
                    "installing {} {} would break installed packs: {}",
                    m.id,
                    m.version,
                    b.join("; ")
                ),
            )));
        }
        Err(e) => return Ok(Err(e)),
    }
    let files = &v.pack.files;
    if files.keys().any(|p| p.starts_with("migrations/")) {
        return Ok(Err(PackError::invalid(
            "this Xyn does not run pack migrations yet; the pack has files in migrations/",
        )));
    }
    let actor = match target {
        Target::Offline(_) => actor(),
        Target::Live(_, who) => who.to_string(),
    };
    // Offline on SQLite: the data dir is locked before anything in it changes (a node serving
    // it is refused here, and its action packages are never touched).
    let _lock = match target {
        Target::Offline(store) if store.database_url.is_none() => {
            Some(crate::datadir::DataDirLock::acquire(data_dir)?)
        }
        _ => None,
    };

    // Stage and check every action package.
    let layout = xyn_sandbox::install::Layout::new(data_dir);
    if let Err(e) = layout.ensure() {
        return Ok(Err(PackError::new(codes::IO, e.message)));
    }
    let staging = packs_dir(data_dir).join(format!(".staging-{}", uuid::Uuid::now_v7()));
    let event_id = uuid::Uuid::now_v7();
    let mut journal = Journal {
        pack_id: m.id.clone(),
        event_id,
        actions: Vec::new(),
    };
    let mut journaled = false;
    // The store has the new versions: from here the install is finished, never undone.
    let mut committed = false;
    // The live registry as it was, to put back when the install fails.
    let mut registry_before: Vec<(String, Option<std::sync::Arc<dyn xyn_actions::Action>>)> =
        Vec::new();
    let result = (|| -> Result<Result<Value, PackError>> {
        let mut actions = Vec::new();
        for (name, entries) in action_dirs(files) {
            let dir = staging.join("actions").join(&name);
            for (rel, bytes) in entries {
                let p = dir.join(&rel);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                std::fs::write(&p, bytes)
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            match xyn_sandbox::Manifest::load(&dir) {
                Ok(am) if am.name == name => actions.push((name, dir)),
                Ok(am) => {
                    return Ok(Err(PackError::invalid(format!(
                        "actions/{name}/ holds an action named {:?}; the folder must be its name",
                        am.name
                    ))
                    .with_file(format!("actions/{name}/xyn-action.toml"))));
                }
                Err(e) => {
                    return Ok(Err(PackError::invalid(format!(
                        "actions/{name}: {}: {}",
                        e.code, e.message
                    ))
                    .with_file(format!("actions/{name}/xyn-action.toml"))));
                }
            }
        }
        // Compile every blueprint against the built-ins, the installed actions and the
        // pack's own.
        let mut known = crate::serve::known_actions(data_dir)?;
        known.extend(actions.iter().map(|(n, _)| n.clone()));
        let is_known = |a: &str| known.contains(a);
        let venv = xyn_core::blueprint::ValidationEnv {
            is_known_action: &is_known,
            known_providers: xyn_core::blueprint::PROVIDERS,
        };
        let mut plans = Vec::new();
        for (p, bytes) in files {
            let Some(rel) = p.strip_prefix("blueprints/") else {
                continue;
            };
            if !(rel.ends_with(".yaml") || rel.ends_with(".yml") || rel.ends_with(".json")) {
                continue;
            }
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Ok(Err(
                    PackError::invalid(format!("{p} is not UTF-8")).with_file(p)
                ));
            };
            match xyn_core::blueprint::compile_text(text, &venv) {
                Ok(plan) => plans.push((
                    plan,
                    text.to_string(),
                    format!("pack:{}@{}:{p}", m.id, m.version),
                )),
                Err(issues) => {
                    let first = issues
                        .first()
                        .map(|i| format!("{} {}", i.path, i.message))
                        .unwrap_or_default();
                    return Ok(Err(PackError::invalid(format!(
                        "{p} is not a valid blueprint: {first}"
                    ))
                    .with_file(p)));
                }
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for (plan, _, origin) in &plans {
            if !ids.insert(plan.id.clone()) {
                return Ok(Err(PackError::invalid(format!(
                    "two blueprints of the pack have the id {} ({origin})",
                    plan.id
                ))));
            }
        }

        // Everything checked. The record is staged whole, then the journal written; from
        // here a crash is finished or undone by `recover`.
        let installed_actions: Vec<Value> = actions
            .iter()
            .filter_map(|(_, dir)| xyn_sandbox::Manifest::load(dir).ok())
            .map(|am| {
                json!({
                    "name": am.name, "runtime": am.runtime.as_str(),
                    "capabilities": am.capabilities,
                })
            })
            .collect();
        let signers = serde_json::to_value(&v.signers)?;
        let unsigned = v.signers.iter().all(|s| s.trusted_as.is_none());
        let record_base = json!({
            "id": m.id,
            "version": m.version.to_string(),
            "description": m.description,
            "xyn": m.xyn.to_string(),
            "depends": m.to_json()["depends"],
            "sha256": v.pack.archive_sha256,
            "tree": v.pack.digests.tree,
            "signers": signers,
            "builder": v.builder_id,
            "allow_unsigned": allow_unsigned && unsigned,
            "actions": installed_actions,
        });
        let mut record = record_base.clone();
        record["blueprints"] = plans
            .iter()
            .map(|(p, _, _)| json!({"id": p.id, "digest": p.digest, "version": null}))
            .collect();
        record["installed_at"] = json!(now());
        record["provenance"] = v.statement.clone();
        let rec_tmp = staging.join("record");
        std::fs::create_dir_all(&rec_tmp)?;
        std::fs::copy(file, rec_tmp.join("pack.xynpack"))?;
        if let Some(env) = envelope {
            std::fs::write(rec_tmp.join("pack.xynpack.sig.json"), env)?;
        }
        std::fs::write(
            rec_tmp.join("record.json"),
            serde_json::to_vec_pretty(&record)?,
        )?;
        let aside = staging.join("actions-before");
        std::fs::create_dir_all(&aside)?;
        for (name, _) in &actions {
            let dest = layout.package(name);
            journal.actions.push(JournalAction {
                existed: dest.exists(),
                backup: aside.join(name),
                dest,
            });
        }
        write_atomic(&staging.join(JOURNAL), &serde_json::to_vec(&journal)?)?;
        journaled = true;

        // Actions: an existing package is moved aside first, so it can be put back.
        for ((name, dir), ja) in actions.iter().zip(&journal.actions) {
            if ja.existed {
                std::fs::rename(&ja.dest, &ja.backup)
                    .with_context(|| format!("cannot move {} aside", ja.dest.display()))?;
            }
            if let Err(e) = xyn_sandbox::install::install(dir, &layout) {
                return Ok(Err(PackError::invalid(format!(
                    "action {name} does not install: {}: {}",
                    e.code, e.message
                ))
                .with_file(format!("actions/{name}"))));
            }
        }
        if let Target::Live(live, _) = &target {
            let mut problem = None;
            live.node.update_actions(|r| {
                for (name, _) in &actions {
                    registry_before.push((name.clone(), r.get(name)));
                    r.remove(name);
                    live.sandbox.pool.retire(name);
                    let dest = layout.package(name);
                    let made = xyn_sandbox::Manifest::load(&dest).and_then(|am| {
                        xyn_sandbox::action::SandboxedAction::new(live.sandbox.clone(), am, dest)
                    });
                    match made {
                        Ok(a) => {
                            if let Err(e) = r.register(std::sync::Arc::new(a)) {
                                problem = Some(format!("action {name}: {e}"));
                            }
                        }
                        Err(e) => problem = Some(format!("action {name}: {}", e.message)),
                    }
                }
            });
            if let Some(p) = problem {
                return Ok(Err(PackError::invalid(p)));
            }
        }

        // The commit point: the blueprint versions and the installed event, one batch.
        let (id, data) = (m.id.clone(), record_base);
        let installed_event = move |env: &str, actor: &str, versions: &[BlueprintVersion]| {
            let mut d = data;
            d["blueprints"] = versions
                .iter()
                .map(|bv| json!({"id": bv.blueprint_id, "version": bv.version}))
                .collect();
            event_as(
                env,
                actor,
                EventId(event_id),
                PACK_INSTALLED,
                ("pack", &id),
                d,
            )
        };
        let applied = match &target {
            Target::Offline(store) => commit(
                data_dir,
                store,
                |env, versions| {
                    let mut events: Vec<Event> = versions
                        .iter()
                        .map(|bv| {
                            event(
                                env,
                                xyn_core::names::BLUEPRINT_APPLIED,
                                ("blueprint", &bv.blueprint_id),
                                json!({
                                    "blueprint_id": bv.blueprint_id, "version": bv.version,
                                    "digest": bv.digest, "origin": bv.origin,
                                    "previous_version": (bv.version > 1).then_some(bv.version - 1),
                                }),
                            )
                        })
                        .collect();
                    events.push(installed_event(env, &actor, &versions));
                    WriteBatch {
                        events,
                        blueprint_versions: versions,
                        ..Default::default()
                    }
                },
                plans.clone(),
                true,
            )?,
            Target::Live(live, _) => {
                let texts: Vec<(String, String)> = plans
                    .iter()
                    .map(|(_, t, o)| (t.clone(), o.clone()))
                    .collect();
                let env = live.node.config().env_id.clone();
                let r = live
                    .rt
                    .block_on(live.node.apply_texts_with(&texts, &actor, |vs| {
                        vec![installed_event(&env, &actor, vs)]
                    }));
                match r {
                    Ok(vs) => vs,
                    Err(e) if e.kind == xyn_core::ErrorKind::Invalid => {
                        return Ok(Err(PackError::invalid(e.message)));
                    }
                    Err(e) => return Err(anyhow::anyhow!("{e}")),
                }
            }
        };
        committed = true;
        let vers: Value = applied
            .iter()
            .map(|bv| json!({"id": bv.blueprint_id, "version": bv.version}))
            .collect();
        settle(
            data_dir,
            &staging,
            &journal,
            Some(&json!({ "blueprints": vers })),
        )?;
        fill_versions(&mut record, &vers);
        Ok(Ok(record))
    })();
    if !matches!(result, Ok(Ok(_))) {
        if committed {
            tracing::error!(
                "a pack install committed but did not finish; the next start finishes it"
            );
            return result;
        }
        if journaled && staging.join(JOURNAL).exists() {
            // Whether the batch committed is known only to the store when the commit itself
            // failed; the error path here is before the commit or a failed one.
            if let Err(e) = settle(data_dir, &staging, &journal, None) {
                tracing::error!(error = %e, "cannot undo a failed pack install; the next start finishes it");
                return result;
            }
        }
        if let Target::Live(live, _) = &target
            && !registry_before.is_empty()
        {
            live.node.update_actions(|r| {
                for (name, old) in registry_before.drain(..) {
                    r.remove(&name);
                    if let Some(a) = old {
                        let _ = r.register(a);
                    }
                }
            });
        }
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Unfinished runs (created or running, waiting included) on a blueprint version this pack
/// installed: removing the pack would take their actions away.
pub async fn runs_using(store: &dyn xyn_store::Store, pack_id: &str) -> Result<Vec<String>> {
    let prefix = format!("pack:{pack_id}@");
    let mut out = Vec::new();
    let err = |e: xyn_store::StoreError| anyhow::anyhow!("{e}");
    for id in store.unfinished_runs().await.map_err(err)? {
        let Some(run) = store.get_run(id).await.map_err(err)? else {
            continue;
        };
        let v = store
            .get_blueprint(&run.blueprint_id, Some(run.blueprint_version))
            .await
            .map_err(err)?;
        if v.is_some_and(|v| v.origin.starts_with(&prefix)) {
            out.push(run.run_id.to_string());
        }
    }
    Ok(out)
}

fn in_use(id: &str, runs: &[String]) -> PackError {
    PackError::new(
        "pack.in_use",
        format!(
            "{} unfinished run(s) use blueprints of {id} (first: {}); cancel or finish them first",
            runs.len(),
            runs[0]
        ),
    )
}

/// Removes an installed pack: its record goes, and the actions it installed unless another
/// installed pack provides them too. Blueprint versions stay (versions are immutable, and
/// runs started on them keep running).
pub fn remove(id: &str, data_dir: &Path, target: Target<'_>) -> Result<Result<(), PackError>> {
    let all = match installed(data_dir) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    let Some(rec) = all.iter().find(|r| r["id"] == id) else {
        return Ok(Err(PackError::new(
            "pack.not_found",
            format!("no pack {id:?} is installed"),
        )));
    };
    let others: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|r| r["id"] != id)
        .flat_map(|r| r["actions"].as_array().into_iter().flatten())
        .filter_map(|a| a["name"].as_str())
        .collect();
    match dependents_broken(data_dir, id, None) {
        Ok(b) if b.is_empty() => {}
        Ok(b) => {
            return Ok(Err(PackError::new(
                "pack.in_use",
                format!("installed packs depend on {id}: {}", b.join("; ")),
            )));
        }
        Err(e) => return Ok(Err(e)),
    }
    let using = match &target {
        Target::Live(live, _) => live
            .rt
            .block_on(runs_using(live.node.store().as_ref(), id))?,
        Target::Offline(store) => {
            crate::serve::with_offline_store(data_dir, store, false, async |opened| {
                runs_using(opened.as_ref(), id).await
            })?
        }
    };
    if !using.is_empty() {
        return Ok(Err(in_use(id, &using)));
    }
    let layout = xyn_sandbox::install::Layout::new(data_dir);
    let mut removed = Vec::new();
    for a in rec["actions"].as_array().into_iter().flatten() {
        if let Some(n) = a["name"].as_str()
            && !others.contains(n)
        {
            let _ = std::fs::remove_dir_all(layout.package(n));
            removed.push(n.to_string());
        }
    }
    if let Target::Live(live, _) = &target {
        live.node.update_actions(|r| {
            for n in &removed {
                r.remove(n);
            }
        });
    }
    let dir = packs_dir(data_dir).join(id);
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    let data = json!({"id": id, "version": rec["version"], "actions_removed": removed});
    match target {
        Target::Offline(store) => record_event(data_dir, store, PACK_REMOVED, ("pack", id), data)?,
        Target::Live(live, who) => {
            let e = event_as(
                &live.node.config().env_id,
                who,
                EventId(uuid::Uuid::now_v7()),
                PACK_REMOVED,
                ("pack", id),
                data,
            );
            live.rt
                .block_on(live.node.store().commit(WriteBatch {
                    events: vec![e],
                    ..Default::default()
                }))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(Ok(()))
}
