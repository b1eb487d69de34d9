//! Drafts: save, validate, promote. The `drafts.save`,
//! `blueprints.validate` and `blueprints.promote` actions and the API share this code.

use async_trait::async_trait;
use serde_json::{Value, json};
use xyn_actions::Platform;
use xyn_core::blueprint::{self, parse_text};
use xyn_core::event::Event;
use xyn_core::records::{Artifact, Draft, DraftStatus};
use xyn_core::{ArtifactId, DraftId, EventId, RunId, XynError, codes, names};
use xyn_store::{DraftWrite, WriteBatch};

use crate::Node;

fn bad(code: &'static str, msg: impl Into<String>) -> XynError {
    XynError::invalid(code, msg)
}

fn draft_id_of(input: &Value) -> Result<DraftId, XynError> {
    let s = input
        .get("draft_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    s.parse().map_err(|_| {
        XynError::not_found(
            codes::DRAFT_NOT_FOUND,
            format!("no draft {s:?} (not a draft id)"),
        )
    })
}

impl Node {
    /// Commits a draft change; a concurrent change is `conflict`, a storage failure
    /// `storage_error` (the draft actions' codes).
    async fn commit_draft(&self, batch: WriteBatch) -> Result<(), XynError> {
        self.inner()
            .store
            .commit(batch)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                xyn_store::StoreError::Conflict(m) => XynError::conflict(codes::DRAFT_CONFLICT, m),
                other => XynError::new(
                    xyn_core::ErrorKind::Unavailable,
                    codes::STORAGE_ERROR,
                    other.to_string(),
                ),
            })
    }

    fn draft_event(&self, name: &str, actor: &str, draft: &Draft, data: Value) -> Event {
        let inner = self.inner();
        Event {
            event_id: EventId(inner.ids.new_uuid()),
            event_name: name.into(),
            occurred_at: inner.clock.now(),
            env_id: inner.config.env_id.clone(),
            actor: actor.into(),
            correlation_id: draft.draft_id.to_string(),
            run_id: draft.source_run_id,
            step_id: None,
            resource: Some(xyn_core::Resource {
                kind: "draft".into(),
                id: draft.draft_id.to_string(),
            }),
            data,
        }
    }

    async fn store_text_artifact(
        &self,
        name: &str,
        kind: &str,
        content_type: &str,
        text: &[u8],
        actor: &str,
        metadata: Value,
    ) -> Result<Artifact, XynError> {
        let inner = self.inner();
        let blobs = inner.blobs.clone();
        let bytes = text.to_vec();
        let len = bytes.len() as i64;
        let sha = tokio::task::spawn_blocking(move || blobs.put(&bytes))
            .await
            .map_err(|e| XynError::internal(e.to_string()))?
            .map_err(|e| {
                XynError::new(
                    xyn_core::ErrorKind::Unavailable,
                    codes::STORAGE_ERROR,
                    e.to_string(),
                )
            })?;
        Ok(Artifact {
            artifact_id: ArtifactId(inner.ids.new_uuid()),
            name: name.into(),
            kind: kind.into(),
            content_type: content_type.into(),
            byte_length: len,
            sha256: sha,
            created_at: inner.clock.now(),
            created_by: actor.into(),
            run_id: None,
            step_id: None,
            metadata,
        })
    }

    /// Creates a draft, or a new revision of it when its definition changed.
    pub async fn save_draft(&self, input: Value, actor: &str) -> Result<Draft, XynError> {
        let inner = self.inner();
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.trim().is_empty() {
            return Err(bad(codes::DRAFT_INVALID_DEFINITION, "a draft needs a name"));
        }
        let kind = input
            .get("draft_type")
            .and_then(Value::as_str)
            .unwrap_or("blueprint")
            .to_string();
        if kind != "blueprint" && kind != "pack" {
            return Err(bad(
                codes::DRAFT_INVALID_DEFINITION,
                "draft_type must be blueprint or pack",
            ));
        }
        let definition = match input.get("definition") {
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => serde_json::to_string_pretty(v).unwrap_or_default(),
            _ => {
                return Err(bad(
                    codes::DRAFT_INVALID_DEFINITION,
                    "definition must be YAML/JSON text or an object",
                ));
            }
        };
        if let Err(issue) = parse_text(&definition) {
            return Err(bad(codes::DRAFT_INVALID_DEFINITION, issue.message));
        }
        let notes = input
            .get("notes")
            .and_then(Value::as_str)
            .map(str::to_string);
        let trigger = input
            .get("trigger_event_type")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                parse_text(&definition).ok().and_then(|v| {
                    v.pointer("/trigger/event_type")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
            });
        let source_run_id: Option<RunId> = input
            .get("source_run_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let existing = match input.get("draft_id").and_then(Value::as_str) {
            Some(_) => Some(
                inner
                    .store
                    .get_draft(draft_id_of(&input)?)
                    .await?
                    .ok_or_else(|| XynError::not_found(codes::DRAFT_NOT_FOUND, "no such draft"))?,
            ),
            None => None,
        };
        let now = inner.clock.now();
        if let Some(d) = &existing
            && d.definition == definition
            && d.name == name
            && d.notes == notes
        {
            return Ok(d.clone());
        }
        let artifact = self
            .store_text_artifact(
                "definition",
                "definition",
                "text/plain",
                definition.as_bytes(),
                actor,
                json!({"draft_name": name}),
            )
            .await?;
        let (draft, write) = match existing {
            Some(d) => {
                let changed = d.definition != definition;
                let mut n = d.clone();
                n.name = name;
                n.notes = notes;
                n.trigger_event_type = trigger;
                n.updated_at = now;
                if changed {
                    n.revision += 1;
                    n.definition = definition;
                    n.definition_artifact_id = Some(artifact.artifact_id);
                    n.status = DraftStatus::Draft;
                    n.validation = None;
                }
                (
                    n.clone(),
                    DraftWrite::Update {
                        draft: n,
                        expect_revision: Some(d.revision),
                    },
                )
            }
            None => {
                let d = Draft {
                    draft_id: DraftId(inner.ids.new_uuid()),
                    name,
                    kind,
                    status: DraftStatus::Draft,
                    revision: 1,
                    trigger_event_type: trigger,
                    definition,
                    definition_artifact_id: Some(artifact.artifact_id),
                    notes,
                    source_run_id,
                    validation: None,
                    promoted_version: None,
                    created_at: now,
                    updated_at: now,
                };
                (d.clone(), DraftWrite::Insert(d))
            }
        };
        let event = self.draft_event(
            names::DRAFT_SAVED,
            actor,
            &draft,
            json!({"draft_id": draft.draft_id.to_string(), "revision": draft.revision, "name": draft.name}),
        );
        self.commit_draft(WriteBatch {
            events: vec![event],
            drafts: vec![write],
            artifacts: vec![artifact],
            ..Default::default()
        })
        .await?;
        Ok(draft)
    }

    /// Validates the current revision of a draft and records the report.
    pub async fn validate_draft(
        &self,
        id: DraftId,
        actor: &str,
    ) -> Result<(Draft, Value), XynError> {
        let inner = self.inner();
        let d =
            inner.store.get_draft(id).await?.ok_or_else(|| {
                XynError::not_found(codes::DRAFT_NOT_FOUND, format!("no draft {id}"))
            })?;
        let parsed = parse_text(&d.definition);
        if let Err(issue) = &parsed {
            return Err(bad(codes::DRAFT_INVALID_SCHEMA, issue.message.clone())
                .with_details(json!({"issues": [issue]})));
        }
        let report = self.validate_blueprint(&d.definition);
        let report_json = json!({
            "draft_id": d.draft_id.to_string(),
            "revision": d.revision,
            "is_valid": report.valid,
            "blueprint_id": report.blueprint_id,
            "issues": report.issues,
        });
        let artifact = self
            .store_text_artifact(
                "validation-report.json",
                "report",
                "application/json",
                &serde_json::to_vec_pretty(&report_json).unwrap_or_default(),
                actor,
                json!({"draft_id": d.draft_id.to_string(), "revision": d.revision}),
            )
            .await?;
        let mut n = d.clone();
        n.validation = Some(
            json!({"revision": d.revision, "is_valid": report.valid, "issues": report.issues,
            "report_artifact_id": artifact.artifact_id.to_string()}),
        );
        n.status = if report.valid {
            DraftStatus::Validated
        } else {
            DraftStatus::Draft
        };
        n.updated_at = inner.clock.now();
        let event = self.draft_event(
            if report.valid { names::DRAFT_VALIDATED } else { names::DRAFT_VALIDATION_FAILED },
            actor,
            &n,
            json!({"draft_id": n.draft_id.to_string(), "revision": n.revision, "is_valid": report.valid,
                "issue_count": report.issues.len()}),
        );
        self.commit_draft(WriteBatch {
            events: vec![event],
            drafts: vec![DraftWrite::Update {
                draft: n.clone(),
                expect_revision: Some(d.revision),
            }],
            artifacts: vec![artifact.clone()],
            ..Default::default()
        })
        .await?;
        let out = json!({
            "is_valid": report.valid,
            "issues": report.issues,
            "report_artifact_id": artifact.artifact_id.to_string(),
        });
        Ok((n, out))
    }

    /// Promotes a validated draft to an active blueprint version.
    pub async fn promote_draft(
        &self,
        id: DraftId,
        actor: &str,
    ) -> Result<(Draft, Value), XynError> {
        let inner = self.inner();
        let d =
            inner.store.get_draft(id).await?.ok_or_else(|| {
                XynError::not_found(codes::DRAFT_NOT_FOUND, format!("no draft {id}"))
            })?;
        if d.status == DraftStatus::Promoted {
            return Err(XynError::conflict(
                codes::DRAFT_CONFLICT,
                format!(
                    "revision {} of this draft was already promoted (version {:?})",
                    d.revision, d.promoted_version
                ),
            ));
        }
        let validated = d.status == DraftStatus::Validated
            && d.validation
                .as_ref()
                .and_then(|v| v.get("revision"))
                .and_then(Value::as_i64)
                == Some(d.revision);
        if !validated {
            return Err(XynError::conflict(
                codes::DRAFT_VALIDATION_FAILED,
                "the draft's current revision has not passed validation: validate it first",
            ));
        }
        let plan = self
            .with_validation_env(|env| blueprint::compile_text(&d.definition, env))
            .map_err(|issues| {
                XynError::conflict(
                    codes::DRAFT_VALIDATION_FAILED,
                    "the draft no longer validates on this node",
                )
                .with_details(json!({"issues": issues}))
            })?;
        let outcome = self
            .apply_plan(
                plan,
                &d.definition,
                &format!("draft:{}@{}", d.draft_id, d.revision),
                actor,
            )
            .await?;
        let mut n = d.clone();
        n.status = DraftStatus::Promoted;
        n.promoted_version = Some(outcome.version.version);
        n.updated_at = inner.clock.now();
        let event = self.draft_event(
            names::DRAFT_PROMOTED,
            actor,
            &n,
            json!({"draft_id": n.draft_id.to_string(), "revision": n.revision,
                "blueprint_id": outcome.version.blueprint_id, "version": outcome.version.version}),
        );
        self.commit_draft(WriteBatch {
            events: vec![event],
            drafts: vec![DraftWrite::Update {
                draft: n.clone(),
                expect_revision: Some(d.revision),
            }],
            ..Default::default()
        })
        .await?;
        let out = json!({
            "blueprint_id": outcome.version.blueprint_id,
            "version": outcome.version.version.to_string(),
            "status": "active",
        });
        Ok((n, out))
    }
}

#[async_trait]
impl Platform for Node {
    async fn save_draft(&self, input: Value, actor: &str) -> Result<Value, XynError> {
        let d = Node::save_draft(self, input, actor).await?;
        Ok(json!({"draft_id": d.draft_id.to_string(), "revision": d.revision, "status": "draft"}))
    }

    async fn validate_draft(&self, input: Value, actor: &str) -> Result<Value, XynError> {
        Node::validate_draft(self, draft_id_of(&input)?, actor)
            .await
            .map(|(_, out)| out)
    }

    async fn promote_draft(&self, input: Value, actor: &str) -> Result<Value, XynError> {
        Node::promote_draft(self, draft_id_of(&input)?, actor)
            .await
            .map(|(_, out)| out)
    }

    async fn emit_event(
        &self,
        event_name: &str,
        data: Value,
        actor: &str,
        correlation_id: &str,
    ) -> Result<Value, XynError> {
        let e = Node::emit_event(
            self,
            crate::intake::EmitEvent {
                event_name: event_name.to_string(),
                data,
                resource: None,
                run_id: None,
                step_id: None,
                actor: actor.to_string(),
                correlation_id: Some(correlation_id.to_string()),
            },
        )
        .await?;
        Ok(json!({"event_id": e.event.event_id.to_string(), "seq": e.seq}))
    }
}
