//! Cron triggers. A slot fires at most once: its claim is a unique row committed with the
//! run it starts. After a restart, the latest slot missed while the node was down fires once
//! if it is at most `cron_catchup_ms` old and the blueprint had fired before; older slots are
//! skipped. A newly applied blueprint only fires future slots. A blueprint whose trigger is
//! switched off fires nothing, and when it is switched back on only slots after that fire.

use std::collections::HashMap;
use std::time::Duration;

use xyn_core::Timestamp;
use xyn_core::cron::CronSchedule;
use xyn_store::BlueprintTrigger;

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
        for (version, plan, switch) in plans {
            let Some(sched) = plan.trigger.cron.clone() else {
                continue;
            };
            if switch.as_ref().is_some_and(|s| !s.enabled) {
                continue;
            }
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
            if let Some(slot) = slot_to_fire(&sched, known, switch.as_ref(), now) {
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

/// The slot to fire now, if any: the latest slot at or before `now` when it is later than
/// `known` (the last slot fired or skipped) and than the moment the trigger was last switched
/// back on; none while the trigger is off, or before anything is known.
fn slot_to_fire(
    sched: &CronSchedule,
    known: Option<Timestamp>,
    switch: Option<&BlueprintTrigger>,
    now: Timestamp,
) -> Option<Timestamp> {
    if switch.is_some_and(|s| !s.enabled) {
        return None;
    }
    let slot = sched.latest_at_or_before(now)?;
    let floor = switch.and_then(|s| sched.latest_at_or_before(s.changed_at));
    let known = known?.max(floor.unwrap_or(Timestamp::from_micros(i64::MIN)));
    (slot > known).then_some(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    fn at(minutes: i64, secs: i64) -> Timestamp {
        Timestamp::from_micros(
            1_800_000_000 * 1_000_000 / MIN * MIN + minutes * MIN + secs * 1_000_000,
        )
    }

    fn switch(enabled: bool, changed_at: Timestamp) -> BlueprintTrigger {
        BlueprintTrigger {
            blueprint_id: "bp".into(),
            enabled,
            changed_at,
            changed_by: "t".into(),
        }
    }

    #[test]
    fn a_switched_off_trigger_fires_nothing_and_back_on_only_later_slots() {
        let every = CronSchedule::parse("* * * * *").unwrap();
        // No switch: the slot after the last fired one fires.
        assert_eq!(
            slot_to_fire(&every, Some(at(0, 0)), None, at(1, 5)),
            Some(at(1, 0))
        );
        assert_eq!(slot_to_fire(&every, Some(at(1, 0)), None, at(1, 30)), None);
        assert_eq!(slot_to_fire(&every, None, None, at(1, 5)), None);
        // Off: nothing, however many slots passed.
        let off = switch(false, at(0, 30));
        assert_eq!(
            slot_to_fire(&every, Some(at(0, 0)), Some(&off), at(5, 5)),
            None
        );
        // Back on at 5:20: the 5:00 slot (missed while off) does not fire, 6:00 does.
        let on = switch(true, at(5, 20));
        assert_eq!(
            slot_to_fire(&every, Some(at(0, 0)), Some(&on), at(5, 25)),
            None
        );
        assert_eq!(
            slot_to_fire(&every, Some(at(0, 0)), Some(&on), at(6, 1)),
            Some(at(6, 0))
        );
        // Switched on exactly at a slot: that slot counts as passed.
        let on = switch(true, at(7, 0));
        assert_eq!(
            slot_to_fire(&every, Some(at(6, 0)), Some(&on), at(7, 0)),
            None
        );
    }
}
