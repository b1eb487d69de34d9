//! The blueprint catalog: versions (immutable once written), the compiled plan of each
//! version in use, and the latest version of each blueprint for trigger matching.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use xyn_core::blueprint::{self, Plan, ValidationReport};
use xyn_core::event::Event;
use xyn_core::records::BlueprintVersion;
use xyn_core::run::event_json;
use xyn_core::{EventId, XynError, codes, names};
use xyn_store::{BlueprintTrigger, WriteBatch};

use crate::Node;

#[derive(Clone)]
pub(crate) struct Head {
    pub version: i64,
    pub plan: Arc<Plan>,
}

#[derive(Default)]
pub(crate) struct Catalog {
    heads: RwLock<BTreeMap<String, Head>>,
    plans: RwLock<HashMap<(String, i64), Arc<Plan>>>,
    /// Trigger switches that were set, by blueprint id (none: enabled).
    switches: RwLock<HashMap<String, BlueprintTrigger>>,
    apply_lock: tokio::sync::Mutex<()>,
}

/// The result of applying a blueprint.
#[derive(Clone, Debug)]
pub struct ApplyOutcome {
    pub version: BlueprintVersion,
    /// False when the definition equals the latest version (nothing was written).
    pub created: bool,
}

fn invalid(issues: Vec<blueprint::Issue>) -> XynError {
    let n = issues.len();
    let first = issues
        .first()
        .map(|i| format!(": {} {}", i.path, i.message))
        .unwrap_or_default();
    XynError::invalid(
        codes::BLUEPRINT_INVALID,
        format!(
            "the blueprint has {n} problem{}{first}",
            if n == 1 { "" } else { "s" }
        ),
    )
    .with_details(json!({"issues": issues}))
}

impl Node {
    pub(crate) async fn load_catalog(&self) -> Result<(), XynError> {
        let switches = self.inner().store.blueprint_triggers().await?;
        if let Ok(mut s) = self.inner().catalog.switches.write() {
            *s = switches
                .into_iter()
                .map(|t| (t.blueprint_id.clone(), t))
                .collect();
        }
        let heads = self.inner().store.blueprint_heads().await?;
        for v in heads {
            match self.compile_value(&v.definition) {
                Ok(plan) => self.remember(&v.blueprint_id, v.version, plan, true),
                Err(issues) => tracing::error!(
                    blueprint_id = %v.blueprint_id, version = v.version,
                    issues = %serde_json::to_string(&issues).unwrap_or_default(),
                    "stored blueprint no longer validates on this node; its trigger is inactive"
                ),
            }
        }
        Ok(())
    }

    fn remember(&self, id: &str, version: i64, plan: Arc<Plan>, head: bool) {
        let cat = &self.inner().catalog;
        if let Ok(mut p) = cat.plans.write() {
            p.insert((id.to_string(), version), plan.clone());
        }
        if head && let Ok(mut h) = cat.heads.write() {
            let newer = h.get(id).is_none_or(|cur| cur.version <= version);
            if newer {
                h.insert(id.to_string(), Head { version, plan });
            }
        }
    }

    fn compile_value(&self, v: &Value) -> Result<Arc<Plan>, Vec<blueprint::Issue>> {
        self.with_validation_env(|env| blueprint::compile(v, env))
    }

    /// Validates a blueprint text against this node (its actions and providers).
    pub fn validate_blueprint(&self, text: &str) -> ValidationReport {
        self.with_validation_env(|env| blueprint::validate_text(text, env))
    }

    /// Applies a blueprint text: a new version when it differs from the latest, else nothing.
    pub async fn apply_blueprint(
        &self,
        text: &str,
        origin: &str,
        actor: &str,
    ) -> Result<ApplyOutcome, XynError> {
        let plan = self
            .with_validation_env(|env| blueprint::compile_text(text, env))
            .map_err(invalid)?;
        self.apply_plan(plan, text, origin, actor).await
    }

    pub(crate) async fn apply_plan(
        &self,
        plan: Arc<Plan>,
        text: &str,
        origin: &str,
        actor: &str,
    ) -> Result<ApplyOutcome, XynError> {
        let inner = self.inner();
        let _serial = inner.catalog.apply_lock.lock().await;
        let latest = inner.store.get_blueprint(&plan.id, None).await?;
        if let Some(l) = &latest
            && l.digest == plan.digest
        {
            self.remember(&plan.id, l.version, plan.clone(), true);
            return Ok(ApplyOutcome {
                version: l.clone(),
                created: false,
            });
        }
        let (version, event) = new_version(
            inner,
            &plan,
            text,
            origin,
            actor,
            latest.as_ref(),
            inner.clock.now(),
        );
        inner
            .store
            .commit(WriteBatch {
                events: vec![event],
                blueprint_versions: vec![version.clone()],
                ..Default::default()
            })
            .await?;
        let id = plan.id.clone();
        self.remember(&id, version.version, plan, true);
        inner.scheduler.cron_changed();
        tracing::info!(blueprint_id = %version.blueprint_id, version = version.version, origin, "blueprint version created");
        Ok(ApplyOutcome {
            version,
            created: true,
        })
    }

    /// Applies several blueprint texts and `extra` events in **one** store batch (all or
    /// nothing), under the same lock as [`Node::apply_blueprint`]: a pack's blueprints and its
    /// `xyn.pack.installed` event. Texts equal to their latest version write nothing. `extra`
    /// gets the versions created and returns the events committed with them. Every text is
    /// compiled against this node's actions first; the first that does not compile refuses
    /// the whole set.
    pub async fn apply_texts_with(
        &self,
        texts: &[(String, String)],
        actor: &str,
        extra: impl FnOnce(&[BlueprintVersion]) -> Vec<Event>,
    ) -> Result<Vec<BlueprintVersion>, XynError> {
        let mut plans = Vec::new();
        for (text, origin) in texts {
            let plan = self
                .with_validation_env(|env| blueprint::compile_text(text, env))
                .map_err(invalid)?;
            plans.push((plan, text, origin));
        }
        let inner = self.inner();
        let _serial = inner.catalog.apply_lock.lock().await;
        let now = inner.clock.now();
        let mut versions = Vec::new();
        let mut events = Vec::new();
        let mut fresh = Vec::new();
        for (plan, text, origin) in &plans {
            let latest = inner.store.get_blueprint(&plan.id, None).await?;
            if latest.as_ref().is_some_and(|l| l.digest == plan.digest) {
                continue;
            }
            let (version, event) =
                new_version(inner, plan, text, origin, actor, latest.as_ref(), now);
            events.push(event);
            fresh.push((plan.clone(), version.version));
            versions.push(version);
        }
        events.extend(extra(&versions));
        inner
            .store
            .commit(WriteBatch {
                events,
                blueprint_versions: versions.clone(),
                ..Default::default()
            })
            .await?;
        for (plan, v) in fresh {
            let id = plan.id.clone();
            self.remember(&id, v, plan, true);
        }
        inner.scheduler.cron_changed();
        Ok(versions)
    }

    /// Applies every `*.yaml`, `*.yml` and `*.json` file in `dir` (sorted by name). A file that
    /// fails is reported and the others still apply.
    pub async fn apply_dir(
        &self,
        dir: &Path,
        actor: &str,
    ) -> Vec<(String, Result<ApplyOutcome, XynError>)> {
        let mut files: Vec<_> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                })
                .collect(),
            Err(_) => return vec![],
        };
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let name = f.display().to_string();
            let res = match std::fs::read_to_string(&f) {
                Ok(text) => {
                    self.apply_blueprint(&text, &format!("file:{name}"), actor)
                        .await
                }
                Err(e) => Err(XynError::invalid(
                    "blueprint.unreadable",
                    format!("cannot read {name}: {e}"),
                )),
            };
            out.push((name, res));
        }
        out
    }

    /// The compiled plan of one version (cached).
    pub(crate) async fn plan_for(&self, id: &str, version: i64) -> Result<Arc<Plan>, XynError> {
        let key = (id.to_string(), version);
        if let Some(p) = self
            .inner()
            .catalog
            .plans
            .read()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(p);
        }
        let v = self
            .inner()
            .store
            .get_blueprint(id, Some(version))
            .await?
            .ok_or_else(|| {
                XynError::not_found(
                    codes::BLUEPRINT_NOT_FOUND,
                    format!("blueprint {id} version {version} not found"),
                )
            })?;
        // A stored version was valid when it was written. It is recompiled without checking
        // action names against this node, so a run whose action was removed since still loads
        // (and its step fails with `action.unknown`) instead of being stuck.
        let plan = blueprint::compile(&v.definition, &blueprint::ValidationEnv::permissive())
            .map_err(|issues| {
                XynError::invalid(
                    codes::BLUEPRINT_INVALID,
                    format!("blueprint {id} version {version} no longer validates on this node"),
                )
                .with_details(json!({"issues": issues}))
            })?;
        self.remember(id, version, plan.clone(), false);
        Ok(plan)
    }

    /// The latest version of a blueprint, compiled.
    pub(crate) async fn head_plan(&self, id: &str) -> Result<(i64, Arc<Plan>), XynError> {
        if let Some(h) = self
            .inner()
            .catalog
            .heads
            .read()
            .ok()
            .and_then(|m| m.get(id).cloned())
        {
            return Ok((h.version, h.plan));
        }
        let v = self
            .inner()
            .store
            .get_blueprint(id, None)
            .await?
            .ok_or_else(|| {
                XynError::not_found(
                    codes::BLUEPRINT_NOT_FOUND,
                    format!("no blueprint with id {id:?}"),
                )
            })?;
        let plan = self.plan_for(id, v.version).await?;
        Ok((v.version, plan))
    }

    /// Blueprints (latest versions) whose event trigger fires for `event`, and the blueprints
    /// whose trigger filter failed on it (a filter over its jq budget among them).
    pub(crate) fn matching_plans(
        &self,
        event: &Event,
    ) -> (Vec<(i64, Arc<Plan>)>, Vec<FilterFailure>) {
        let heads = match self.inner().catalog.heads.read() {
            Ok(h) => h,
            Err(_) => return (vec![], vec![]),
        };
        let switches = match self.inner().catalog.switches.read() {
            Ok(s) => s,
            Err(_) => return (vec![], vec![]),
        };
        let jq_limits = self.inner().config.limits.jq;
        let mut out = Vec::new();
        let mut failures = Vec::new();
        let mut event_value: Option<Value> = None;
        let nats_subject = event
            .resource
            .as_ref()
            .filter(|r| r.kind == "nats_subject")
            .map(|r| r.id.as_str());
        for h in heads.values() {
            let by_subject = nats_subject.is_some_and(|s| h.plan.matches_nats_subject(s));
            if !by_subject && !h.plan.matches_event_name(&event.event_name) {
                continue;
            }
            if switches.get(&h.plan.id).is_some_and(|s| !s.enabled) {
                continue;
            }
            if let Some(filter) = &h.plan.trigger.filter {
                let ev = event_value.get_or_insert_with(|| event_json(event));
                match filter.truthy_with(ev, &jq_limits) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(blueprint_id = %h.plan.id, code = e.code, error = %e, event_id = %event.event_id, "trigger filter failed; not triggered");
                        failures.push(FilterFailure {
                            blueprint_id: h.plan.id.clone(),
                            version: h.version,
                            error: e,
                        });
                        continue;
                    }
                }
            }
            out.push((h.version, h.plan.clone()));
        }
        (out, failures)
    }

    /// The NATS subjects the latest blueprint versions trigger on.
    pub fn nats_subjects(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner()
            .catalog
            .heads
            .read()
            .map(|h| {
                h.values()
                    .filter_map(|h| h.plan.trigger.nats_subject.clone())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.dedup();
        v
    }

    /// Latest versions that have a cron trigger, each with its trigger switch when one was set.
    pub(crate) fn cron_plans(&self) -> Vec<(i64, Arc<Plan>, Option<BlueprintTrigger>)> {
        let cat = &self.inner().catalog;
        let (Ok(heads), Ok(switches)) = (cat.heads.read(), cat.switches.read()) else {
            return vec![];
        };
        heads
            .values()
            .filter(|h| h.plan.trigger.cron.is_some())
            .map(|h| (h.version, h.plan.clone(), switches.get(&h.plan.id).cloned()))
            .collect()
    }

    /// Switches a blueprint's trigger on or off. Off, the events, NATS messages and cron slots
    /// that would start its runs start none (events are still recorded; runs asked for by hand
    /// still start). Written with an `xyn.blueprint.trigger.enabled|disabled` event; setting
    /// the state it already has writes nothing. Returns the blueprint's latest version and the
    /// switch as it now stands.
    pub async fn set_trigger_enabled(
        &self,
        blueprint_id: &str,
        enabled: bool,
        actor: &str,
    ) -> Result<(BlueprintVersion, BlueprintTrigger), XynError> {
        let inner = self.inner();
        let _serial = inner.catalog.apply_lock.lock().await;
        let head = inner.store.get_blueprint(blueprint_id, None).await?;
        let Some(head) = head else {
            return Err(XynError::not_found(
                codes::BLUEPRINT_NOT_FOUND,
                format!("no blueprint with id {blueprint_id:?}"),
            ));
        };
        let current = inner
            .store
            .blueprint_triggers()
            .await?
            .into_iter()
            .find(|t| t.blueprint_id == blueprint_id);
        // Already so (no row means on): nothing to write.
        match current {
            Some(c) if c.enabled == enabled => return Ok((head, c)),
            None if enabled => {
                let on = BlueprintTrigger {
                    blueprint_id: blueprint_id.to_string(),
                    enabled: true,
                    changed_at: head.created_at,
                    changed_by: head.created_by.clone(),
                };
                return Ok((head, on));
            }
            _ => {}
        }
        let now = inner.clock.now();
        let switch = BlueprintTrigger {
            blueprint_id: blueprint_id.to_string(),
            enabled,
            changed_at: now,
            changed_by: actor.to_string(),
        };
        let name = if enabled {
            names::BLUEPRINT_TRIGGER_ENABLED
        } else {
            names::BLUEPRINT_TRIGGER_DISABLED
        };
        let data =
            json!({"blueprint_id": blueprint_id, "enabled": enabled, "version": head.version});
        let event = blueprint_event(inner, name, blueprint_id, actor, now, data);
        inner
            .store
            .commit(WriteBatch {
                events: vec![event],
                blueprint_triggers: vec![switch.clone()],
                ..Default::default()
            })
            .await?;
        if let Ok(mut s) = inner.catalog.switches.write() {
            s.insert(blueprint_id.to_string(), switch.clone());
        }
        inner.scheduler.cron_changed();
        tracing::info!(blueprint_id, enabled, actor, "blueprint trigger switched");
        Ok((head, switch))
    }
}

/// A trigger filter that failed on an event.
pub(crate) struct FilterFailure {
    pub blueprint_id: String,
    pub version: i64,
    pub error: xyn_core::jq::JqRunError,
}

/// The next version of a blueprint and its `xyn.blueprint.applied` event (one shape for a single
/// apply and for a pack's set).
fn new_version(
    inner: &crate::Inner,
    plan: &Plan,
    text: &str,
    origin: &str,
    actor: &str,
    latest: Option<&BlueprintVersion>,
    now: xyn_core::Timestamp,
) -> (BlueprintVersion, Event) {
    let version = BlueprintVersion {
        blueprint_id: plan.id.clone(),
        version: latest.map_or(1, |l| l.version + 1),
        name: plan.name.clone(),
        definition: plan.definition.clone(),
        source: text.to_string(),
        digest: plan.digest.clone(),
        created_at: now,
        created_by: actor.to_string(),
        origin: origin.to_string(),
    };
    let data = json!({
        "blueprint_id": plan.id,
        "version": version.version,
        "digest": plan.digest,
        "origin": origin,
        "previous_version": latest.map(|l| l.version),
    });
    let event = blueprint_event(inner, names::BLUEPRINT_APPLIED, &plan.id, actor, now, data);
    (version, event)
}

/// An event about a blueprint (its resource), outside any run.
fn blueprint_event(
    inner: &crate::Inner,
    name: &str,
    blueprint_id: &str,
    actor: &str,
    now: xyn_core::Timestamp,
    data: Value,
) -> Event {
    Event {
        event_id: EventId(inner.ids.new_uuid()),
        event_name: name.into(),
        occurred_at: now,
        env_id: inner.config.env_id.clone(),
        actor: actor.to_string(),
        correlation_id: inner.ids.new_uuid().to_string(),
        run_id: None,
        step_id: None,
        resource: Some(xyn_core::Resource {
            kind: "blueprint".into(),
            id: blueprint_id.to_string(),
        }),
        data,
    }
}
