//! The store conformance suite: every adapter must pass it unchanged.
//! `conformance_suite!(module_name, async || -> Arc<dyn Store>)` generates one test per check.

#![allow(dead_code)]

mod log_and_runs;
mod work;

use std::sync::Arc;

pub use log_and_runs::*;
use serde_json::json;
use uuid::Uuid;
pub use work::*;
use xyn_core::blueprint::StepKind;
use xyn_core::event::Event;
use xyn_core::footprint::Footprint;
use xyn_core::records::{Artifact, BlueprintVersion, Draft, DraftStatus};
use xyn_core::run::{Run, RunStatus, Step, StepStatus};
use xyn_core::{ArtifactId, DraftId, EventId, RunId, StepId, Timestamp};
use xyn_store::{
    ArtifactQuery, CheckpointSigner, CronFire, DraftWrite, EventQuery, FootprintQuery,
    FootprintRollupQuery, QueueWrite, RunQuery, RunWrite, Signal, StepWrite, Store, StoreError,
    WriteBatch,
};

pub fn id() -> Uuid {
    Uuid::now_v7()
}

pub fn ts(s: i64) -> Timestamp {
    Timestamp::from_micros(1_790_000_000_000_000 + s * 1_000_000)
}

pub fn event(name: &str, run: Option<RunId>) -> Event {
    Event {
        event_id: EventId(id()),
        event_name: name.into(),
        occurred_at: ts(1),
        env_id: "test".into(),
        actor: "tester".into(),
        correlation_id: "corr-1".into(),
        run_id: run,
        step_id: None,
        resource: None,
        data: json!({"n": 1, "nested": {"b": [1, 2, 3], "a": "x"}}),
    }
}

pub fn run(bp: &str, status: RunStatus) -> Run {
    Run {
        run_id: RunId(id()),
        name: bp.into(),
        blueprint_id: bp.into(),
        blueprint_version: 1,
        status,
        created_at: ts(1),
        started_at: Some(ts(1)),
        completed_at: None,
        actor: "tester".into(),
        correlation_id: "corr-1".into(),
        env_id: "test".into(),
        trigger_event_id: None,
        inputs: json!({"host": "web-1"}),
        outputs: None,
        error: None,
        deadline_at: Some(ts(3600)),
        priority: 0,
        step_executions: 0,
        revision: 0,
    }
}

pub fn step(run: &Run, idx: u32, name: &str) -> Step {
    Step {
        step_id: StepId(id()),
        run_id: run.run_id,
        name: name.into(),
        idx,
        kind: StepKind::Transform,
        status: StepStatus::Created,
        attempt: 0,
        started_at: None,
        completed_at: None,
        inputs: None,
        outputs: None,
        error: None,
        next_attempt_at: None,
        decided_by: None,
        decision_comment: None,
        logs_artifact_id: None,
    }
}

#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::conformance as c;
            #[allow(unused_imports)]
            use super::*;
            macro_rules! check {
                ($f:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $f() {
                        let make = $make;
                        c::$f(make().await).await
                    }
                };
            }
            check!(events_get_seq_and_a_verifiable_chain);
            check!(concurrent_commits_keep_seq_contiguous);
            check!(a_failed_precondition_changes_nothing_and_spares_other_batches);
            check!(runs_update_only_from_the_revision_they_read);
            check!(pages_are_stable_under_concurrent_inserts);
            check!(event_filters);
            check!(blueprint_versions);
            check!(blueprint_triggers_switch_and_wake_the_catalog);
            check!(drafts_revise_with_a_precondition);
            check!(a_cron_slot_fires_once);
            check!(footprints_artifacts_and_unfinished_runs);
            check!(waiting_runs_are_filtered_and_unfinished);
            check!(runs_load_in_batches_with_steps_and_trigger);
            check!(stats_count_work_and_empty_batches_are_free);
            check!(claims_are_exclusive_and_skip_what_is_not_due);
            check!(leases_fence_writers_and_expire);
            check!(outbox_rows_cover_every_event_and_are_marked);
            check!(signals_wake_subscribers);
            check!(a_singleton_has_one_holder_at_a_time);
            check!(retention_prunes_a_prefix_and_the_chain_verifies_from_its_checkpoint);
            check!(footprints_roll_up_by_day_and_metric);
            check!(secrets_keep_versions_and_rotate_all_or_nothing);
            check!(runs_and_events_are_found_by_short_id_input_value_and_time);
            check!(runs_are_counted_per_blueprint_and_status);
        }
    };
}
