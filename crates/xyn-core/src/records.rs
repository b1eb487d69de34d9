//! Records that are stored but have no state machine of their own: artifacts, blueprint
//! versions and drafts.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{ArtifactId, DraftId, RunId, StepId};
use crate::time::Timestamp;

/// Metadata of a stored artifact; the bytes live in the blob store under `sha256`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub artifact_id: ArtifactId,
    pub name: String,
    /// `log | report | bundle | file | prompt | response | body | definition`.
    pub kind: String,
    pub content_type: String,
    pub byte_length: i64,
    pub sha256: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub run_id: Option<RunId>,
    pub step_id: Option<StepId>,
    pub metadata: Value,
}

/// One version of a blueprint. Versions are immutable once written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlueprintVersion {
    pub blueprint_id: String,
    pub version: i64,
    pub name: String,
    /// The definition as JSON (normalised from YAML or JSON).
    pub definition: Value,
    /// The text as it was applied (YAML or JSON), for display.
    pub source: String,
    pub digest: String,
    pub created_at: Timestamp,
    pub created_by: String,
    /// Where it came from: `file:<path>`, `api`, `draft:<id>@<rev>`.
    pub origin: String,
}

/// The status of a draft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftStatus {
    Draft,
    Validated,
    Promoted,
}

impl DraftStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DraftStatus::Draft => "draft",
            DraftStatus::Validated => "validated",
            DraftStatus::Promoted => "promoted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => DraftStatus::Draft,
            "validated" => DraftStatus::Validated,
            "promoted" => DraftStatus::Promoted,
            _ => return None,
        })
    }
}

/// A draft blueprint or pack: a working object, versioned by revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    pub draft_id: DraftId,
    pub name: String,
    /// `blueprint | pack`.
    pub kind: String,
    pub status: DraftStatus,
    pub revision: i64,
    pub trigger_event_type: Option<String>,
    /// The definition text (YAML or JSON) of the current revision.
    pub definition: String,
    pub definition_artifact_id: Option<ArtifactId>,
    pub notes: Option<String>,
    pub source_run_id: Option<RunId>,
    /// The report of the last validation of this revision, if any.
    pub validation: Option<Value>,
    /// The blueprint version it was promoted to, if any.
    pub promoted_version: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
