//! Cron triggers. A slot fires at most once: its claim is a unique row committed with the
//! run it starts. After a restart, the latest slot missed while the node was down fires once
//! if it is at most `cron_catchup_ms` old and the blueprint had fired before; older slots are
//! skipped. A newly applied blueprint only fires future slots.

use std::collections::HashMap;
use std::time::Duration;

use xyn_core::Timestamp;

use crate::Node;

pub(crate) fn spawn(node: &Node) {
    let n = node.clone();
    tokio::spawn(async move { cron_loop(n).await });
}

async fn cron_loop(node: Node) {
    let inner = node.inner();
    // The latest slot known to have fired (or to be skipped), per blueprint.
    let mut last: HashMap<String, Timestamp> = HashMap::new();
    loop {
        let plans = node.cron_plans();
        let now = inner.clock.now();
        let mut next_due: Option<Timestamp> = None;
        for (version, plan) in plans {
            let Some(sched) = plan.trigger.cron.clone() else {
                continue;
            };
            let known = match last.get(&plan.id) {
                Some(t) => Some(*t),
                None => match inner.store.last_cron_slot(&plan.id).await {
                    Ok(Some(t)) => Some(t),
                    Ok(None) => {
                        // Never fired: start from now, only future slots.
                        last.insert(
                            plan.id.clone(),
                            sched.latest_at_or_before(now).unwrap_or(now),
                        );
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read cron state; retrying in 5s");
                        next_due = Some(now.plus_ms(5000));
                        continue;
                    }
                },
            };
            if let (Some(known), Some(slot)) = (known, sched.latest_at_or_before(now))
                && slot > known
            {
                if now.ms_since(slot) <= inner.config.cron_catchup_ms {
                    match node.fire_cron(plan.clone(), version, slot).await {
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(blueprint_id = %plan.id, error = %e, "cron fire failed")
                        }
                    }
                } else {
                    tracing::warn!(blueprint_id = %plan.id, slot = %slot, "missed cron slot is too old to fire");
                }
                last.insert(plan.id.clone(), slot);
            }
            if let Some(n) = sched.next_after(now) {
                next_due = Some(next_due.map_or(n, |d| d.min(n)));
            }
        }
        let sleep = match next_due {
            Some(at) => {
                Duration::from_micros(at.micros_since(inner.clock.now())) + Duration::from_millis(2)
            }
            None => Duration::from_secs(24 * 3600),
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = inner.scheduler.cron_notify.notified() => {}
            _ = inner.shutdown.cancelled() => return,
        }
    }
}
