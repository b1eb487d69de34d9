//! Workcells on a running node: the engine's teardown port (a run's workcell containers are
//! removed when it ends), the `/api/internal/workcells` service, and the sweep of workcells whose
//! run has ended without their teardown (a node stopped between the two, a run that ended on
//! another node of a shared store).

use std::sync::Arc;
use std::time::Duration;

use xyn_containers::{Containers, WorkcellInfo};
use xyn_core::{ErrorKind, RunId, XynError, codes};
use xyn_engine::{Node, RunTeardown};
use xyn_web::dto::WorkcellDto;
use xyn_web::routes::internal::{WorkcellFuture, WorkcellService};

/// How often the sweep looks for workcells whose run has ended.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct Teardown(pub Arc<Containers>);

#[async_trait::async_trait]
impl RunTeardown for Teardown {
    async fn run_ended(&self, run_id: RunId) -> Result<(), String> {
        match self.0.remove_run_workcells(&run_id.to_string()).await {
            Ok(0) => Ok(()),
            Ok(n) => {
                tracing::info!(%run_id, removed = n, "removed the workcells of a run that ended");
                Ok(())
            }
            Err(e) => Err(format!("{}: {}", e.code, e.message)),
        }
    }
}

pub struct LiveWorkcells(pub Arc<Containers>);

fn engine_error(e: xyn_actions::ActionError) -> XynError {
    XynError::new(
        ErrorKind::Unavailable,
        codes::WORKCELL_ENGINE,
        format!("{}: {}", e.code, e.message),
    )
}

fn dto(w: WorkcellInfo) -> WorkcellDto {
    let created_at = chrono::DateTime::from_timestamp(w.created, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    WorkcellDto {
        workcell_id: format!("{}.{}", w.run_id, w.name),
        run_id: w.run_id,
        name: w.name,
        container_id: w.container_id,
        container_name: w.container_name,
        image: w.image,
        created_at,
        status: w.state,
    }
}

impl WorkcellService for LiveWorkcells {
    fn list(&self) -> WorkcellFuture<Vec<WorkcellDto>> {
        let c = self.0.clone();
        Box::pin(async move {
            let list = c.workcells().await.map_err(engine_error)?;
            Ok(list.into_iter().map(dto).collect())
        })
    }

    fn destroy(&self, run_id: String, name: String) -> WorkcellFuture<WorkcellDto> {
        let c = self.0.clone();
        Box::pin(async move {
            match c.remove_workcell(&run_id, &name).await {
                Ok(Some(w)) => {
                    tracing::info!(%run_id, workcell = %name, "workcell removed through the API");
                    let mut d = dto(w);
                    d.status = "removed".into();
                    Ok(d)
                }
                Ok(None) => Err(XynError::not_found(
                    codes::WORKCELL_NOT_FOUND,
                    format!("run {run_id} has no workcell {name:?} on this node"),
                )),
                Err(e) => Err(engine_error(e)),
            }
        })
    }
}

/// Whether a run is still going: `false` when it has ended or the store does not know it.
async fn run_is_live(node: &Node, run_id: &str) -> Result<bool, String> {
    let Ok(id) = run_id.parse::<RunId>() else {
        return Ok(false);
    };
    match node.store().get_run(id).await {
        Ok(Some(run)) => Ok(!run.status.is_terminal()),
        Ok(None) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Every [`SWEEP_EVERY`], removes the workcells whose run has ended or is unknown.
pub fn spawn_sweep(containers: Arc<Containers>, node: Node) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; at start `reap` has just removed every workcell.
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = node.clone();
            match containers
                .sweep(move |run_id| {
                    let n = n.clone();
                    async move { run_is_live(&n, &run_id).await }
                })
                .await
            {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(removed, "swept the workcells of runs that have ended")
                }
                Err(e) => {
                    tracing::debug!(code = %e.code, error = %e.message, "workcell sweep skipped")
                }
            }
        }
    })
}
