use super::*;
use crate::blueprint::{ValidationEnv, compile_text};
use crate::ids::SequentialIds;

fn machine(retry: &str) -> RunMachine {
    machine_of(&format!(
        "id: t\ntrigger: {{event_type: t.x}}\nplan:\n  - {{kind: transform, id: a, expr: '{{n: 1}}'{retry}}}\n"
    ))
}

fn machine_of(text: &str) -> RunMachine {
    let env = ValidationEnv {
        is_known_action: &|_| true,
        known_providers: crate::blueprint::PROVIDERS,
    };
    let plan = compile_text(text, &env).unwrap();
    let ids = SequentialIds::default();
    let now = Timestamp::from_micros(1_000_000);
    let mut m = RunMachine::create(
        plan,
        1,
        &ids,
        now,
        "test",
        "local",
        "c",
        None,
        Map::new(),
        RunLimits::default(),
    );
    m.start(&ids, now);
    m
}

/// Interrupts the step's running attempt `n` times; returns how many were retried.
fn crash_repeatedly(m: &mut RunMachine, n: u32) -> u32 {
    let ids = SequentialIds::default();
    let now = Timestamp::from_micros(2_000_000);
    let mut retried = 0;
    for _ in 0..n {
        if m.steps[0].status != StepStatus::Created {
            break;
        }
        m.start_step(&ids, now, 0, Value::Null);
        m.interrupt_running(&ids, now);
        if m.steps[0].status == StepStatus::Created {
            retried += 1;
        }
    }
    retried
}

#[test]
fn interrupted_attempts_count_against_max_attempts() {
    let mut m = machine(", retry: {max_attempts: 6}");
    assert_eq!(m.interrupted_attempts_allowed(0), 6);
    assert_eq!(
        crash_repeatedly(&mut m, 10),
        5,
        "attempts 1 to 5 are retried"
    );
    assert_eq!(m.steps[0].status, StepStatus::Failed);
    assert_eq!(m.steps[0].attempt, 6);
    assert_eq!(
        m.steps[0].error.as_ref().unwrap()["code"],
        "step.interrupted"
    );
}

#[test]
fn a_step_without_retries_survives_a_bounded_number_of_interruptions() {
    let mut m = machine("");
    let allowed = 1 + RunLimits::default().max_interruptions;
    assert_eq!(m.interrupted_attempts_allowed(0), allowed);
    assert_eq!(crash_repeatedly(&mut m, 100), allowed - 1);
    assert_eq!(m.steps[0].status, StepStatus::Failed);
    assert_eq!(m.steps[0].attempt, allowed);
}

const GATED: &str = "id: t\ntrigger: {event_type: t.x}\nplan:\n  - {kind: transform, id: a, expr: '{n: 1}'}\n  - {kind: gate, id: g, mode: manual}\n  - {kind: transform, id: b, expr: '{n: 2}'}\n";

#[test]
fn a_run_waits_while_its_gate_waits_and_runs_again_once_decided() {
    let ids = SequentialIds::default();
    let now = Timestamp::from_micros(2_000_000);
    let mut m = machine_of(GATED);
    m.start_step(&ids, now, 0, Value::Null);
    m.complete_step(&ids, now, 0, json!({"n": 1}));
    assert_eq!(m.decide(now), Next::OpenGate(1));
    m.take_changes();
    m.open_gate(&ids, now, 1, Some("go?".into()), json!([]));
    assert_eq!(m.run.status, RunStatus::Waiting);
    let ch = m.take_changes();
    assert!(
        ch.run_changed,
        "the status is written with the gate's event"
    );
    assert!(
        ch.events
            .iter()
            .any(|e| e.event_name == names::GATE_WAITING)
    );
    m.decide_gate(&ids, now.plus_ms(5_000), 1, true, "alice", None);
    assert_eq!(m.run.status, RunStatus::Running);
    assert!(m.take_changes().run_changed);
    // The time at the gate is reported as waiting, not as working wall time.
    let mut m = machine_of(GATED);
    m.open_gate(&ids, now, 1, None, json!([]));
    m.take_changes();
    m.decide_gate(&ids, now.plus_ms(5_000), 1, true, "alice", None);
    let fps = m.take_changes().footprints;
    assert!(
        fps.iter()
            .any(|f| f.metric == footprint::GATE_WAIT_MS && f.quantity == 5000.0)
    );
    assert!(!fps.iter().any(|f| f.metric == footprint::WALL_MS));
    // A rejected or timed-out gate ends the run: a terminal status, not `waiting`.
    let mut m = machine_of(GATED);
    m.open_gate(&ids, now, 1, None, json!([]));
    m.decide_gate(&ids, now, 1, false, "bob", None);
    assert_eq!(m.run.status, RunStatus::Failed);
    let mut m = machine_of(GATED);
    m.open_gate(&ids, now, 1, None, json!([]));
    m.time_out_gate(&ids, now, 1);
    assert_eq!(m.run.status, RunStatus::Running);
    assert_eq!(m.steps[1].status, StepStatus::Failed);
}

#[test]
fn a_failed_run_is_retried_from_its_failed_step_with_a_new_attempt() {
    let ids = SequentialIds::default();
    let now = Timestamp::from_micros(2_000_000);
    let mut m = machine_of(GATED);
    m.start_step(&ids, now, 0, Value::Null);
    m.fail_step(&ids, now, 0, error_value("boom", "no"), false);
    let Next::Fail(e) = m.decide(now) else {
        panic!("the run fails")
    };
    m.fail(&ids, now, e);
    assert_eq!(m.run.status, RunStatus::Failed);
    assert_eq!(m.steps[1].status, StepStatus::Skipped);
    // Not the failed step: refused.
    let err = m.check_retry(Some(1)).unwrap_err();
    assert_eq!(err.code, crate::codes::STEP_NOT_FAILED);
    assert_eq!(m.check_retry(None).unwrap(), 0);
    m.take_changes();
    let later = now.plus_ms(60 * 60 * 1000 * 2);
    m.retry(&ids, later, 0, "alice");
    assert_eq!(m.run.status, RunStatus::Running);
    assert_eq!(m.run.error, None);
    assert!(
        m.run.deadline_at.unwrap() > later,
        "a fresh wall-clock limit"
    );
    assert_eq!(
        (m.steps[1].status, m.steps[2].status),
        (StepStatus::Created, StepStatus::Created)
    );
    let ch = m.take_changes();
    let ev = ch
        .events
        .iter()
        .find(|e| e.event_name == names::RUN_RETRIED)
        .unwrap();
    assert_eq!(ev.actor, "alice");
    assert_eq!(ev.data["attempt"], 2);
    assert_eq!(ev.data["previous_error"]["code"], "step.failed");
    assert_eq!(m.decide(later), Next::Execute(0));
    m.start_step(&ids, later, 0, Value::Null);
    assert_eq!(m.steps[0].attempt, 2);
    // A run that did not fail is not retried.
    let err = m.check_retry(None).unwrap_err();
    assert_eq!(err.code, crate::codes::RUN_NOT_FAILED);
}

#[test]
fn a_gate_names_its_approvers_as_names_and_roles() {
    let m = machine_of(
        "id: t\ntrigger: {event_type: t.x}\nplan:\n  - {kind: gate, id: g, mode: manual, approvers: [alice, 'role:operator']}\n",
    );
    let ids = SequentialIds::default();
    let mut m = m;
    m.open_gate(&ids, Timestamp::from_micros(5), 0, None, json!([]));
    assert_eq!(
        m.steps[0].inputs.as_ref().unwrap()["approvers"],
        json!(["alice", "role:operator"])
    );
    let env = ValidationEnv {
        is_known_action: &|_| true,
        known_providers: crate::blueprint::PROVIDERS,
    };
    for bad in ["['role:viewer']", "['']", "'alice'", "[3]"] {
        let text = format!(
            "id: t\ntrigger: {{event_type: t.x}}\nplan:\n  - {{kind: gate, id: g, mode: manual, approvers: {bad}}}\n"
        );
        let issues = compile_text(&text, &env)
            .err()
            .unwrap_or_else(|| panic!("{bad} is refused"));
        assert!(
            issues
                .iter()
                .any(|i| i.path.starts_with("$.plan[0].approvers")),
            "{bad}: {issues:?}"
        );
    }
}
