//! §5.1 / §5.2 as cases: each transition's conditions and events.

use super::*;

fn reasons(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.reason).collect()
}

fn ready(conditions: &Conditions) -> (ConditionStatus, &str, &str) {
    (
        conditions.ready.status,
        conditions.ready.reason.as_str(),
        conditions.ready.message.as_str(),
    )
}

#[test]
fn initial_conditions_are_kedas() {
    let initial = Conditions::initial();
    let types: Vec<(&str, ConditionStatus, &str)> = initial
        .by_type()
        .iter()
        .map(|(t, c)| (*t, c.status, c.reason.as_str()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("Ready", ConditionStatus::Unknown, ""),
            ("Active", ConditionStatus::Unknown, ""),
            ("Fallback", ConditionStatus::Unknown, ""),
            ("Paused", ConditionStatus::False, ""),
        ]
    );
}

#[test]
fn first_successful_reconcile_is_ready_to_scaling_and_emits_ready() {
    let (next, events) = after_reconcile(
        &Conditions::initial(),
        &ReconcileOutcome::Ready { paused: false },
    );
    assert_eq!(
        ready(&next),
        (
            ConditionStatus::True,
            "ScaledJobReady",
            "ScaledJob is defined correctly and is ready to scaling"
        )
    );
    assert_eq!(reasons(&events), vec!["ScaledJobReady"]);
    assert_eq!(events[0].note, "ScaledJob is ready for scaling");
    assert_eq!(events[0].reporter.name(), "keda-operator");
    let (_, again) = after_reconcile(&next, &ReconcileOutcome::Ready { paused: false });
    assert!(
        again.is_empty(),
        "no ScaledJobReady when Ready is already True"
    );
}

#[test]
fn pausing_and_unpausing() {
    let (paused, events) = after_reconcile(
        &Conditions::initial(),
        &ReconcileOutcome::Ready { paused: true },
    );
    assert_eq!(reasons(&events), vec!["ScaledJobPaused", "ScaledJobReady"]);
    assert_eq!(
        (
            paused.paused.status,
            paused.paused.reason.as_str(),
            paused.paused.message.as_str()
        ),
        (
            ConditionStatus::True,
            "ScaledJobPaused",
            "ScaledJob is paused"
        )
    );
    assert_eq!(
        paused.ready.message,
        "ScaledJob is paused, skipping reconcile loop"
    );
    let (_, again) = after_reconcile(&paused, &ReconcileOutcome::Ready { paused: true });
    assert!(again.is_empty());
    let (unpaused, events) = after_reconcile(&paused, &ReconcileOutcome::Ready { paused: false });
    assert_eq!(reasons(&events), vec!["ScaledJobUnpaused"]);
    assert_eq!(
        (
            unpaused.paused.status,
            unpaused.paused.reason.as_str(),
            unpaused.paused.message.as_str()
        ),
        (
            ConditionStatus::False,
            "ScaledJobUnpaused",
            "ScaledJob is unpaused"
        )
    );
    assert_eq!(unpaused.ready.message, RECONCILE_READY_MESSAGE);
}

#[test]
fn a_failed_reconcile() {
    let outcome = ReconcileOutcome::Failed {
        message: "Failed to ensure ScaledJob is correctly created".into(),
    };
    let (next, events) = after_reconcile(&Conditions::initial(), &outcome);
    assert_eq!(
        ready(&next),
        (
            ConditionStatus::False,
            "ScaledJobCheckFailed",
            "Failed to ensure ScaledJob is correctly created"
        )
    );
    assert_eq!(
        (
            next.active.status,
            next.active.reason.as_str(),
            next.active.message.as_str()
        ),
        (
            ConditionStatus::Unknown,
            "UnknownState",
            "ScaledJob check failed"
        )
    );
    assert_eq!(
        events,
        vec![Event::check_failed(
            "Failed to ensure ScaledJob is correctly created"
        )]
    );
    assert_eq!(events[0].type_, EventType::Warning);
}

struct PollCase {
    name: &'static str,
    trigger_errors: Vec<&'static str>,
    is_active: bool,
    ready: (ConditionStatus, &'static str),
    active: (ConditionStatus, &'static str),
    events: Vec<&'static str>,
}

#[test]
fn poll_transitions() {
    let cases = [
        PollCase {
            name: "no errors, inactive",
            trigger_errors: vec![],
            is_active: false,
            ready: (ConditionStatus::True, "ScaledJobReady"),
            active: (ConditionStatus::False, "ScalerNotActive"),
            events: vec!["ScaledJobInactive"],
        },
        PollCase {
            name: "no errors, active",
            trigger_errors: vec![],
            is_active: true,
            ready: (ConditionStatus::True, "ScaledJobReady"),
            active: (ConditionStatus::True, "ScalerActive"),
            events: vec!["ScaledJobActive"],
        },
        PollCase {
            name: "errors and active (Min > 0)",
            trigger_errors: vec!["boom"],
            is_active: true,
            ready: (ConditionStatus::Unknown, "PartialTriggerError"),
            active: (ConditionStatus::True, "ScalerActive"),
            events: vec!["KEDAScalerFailed", "ScaledJobActive"],
        },
        PollCase {
            name: "errors, not active",
            trigger_errors: vec![
                "expected at least one active partition within the topic 'test-topic'",
            ],
            is_active: false,
            ready: (ConditionStatus::False, "TriggerError"),
            active: (ConditionStatus::False, "ScalerNotActive"),
            events: vec!["KEDAScalerFailed", "ScaledJobInactive"],
        },
    ];
    for case in cases {
        let outcome = PollOutcome {
            trigger_errors: case
                .trigger_errors
                .iter()
                .map(|e| (*e).to_owned())
                .collect(),
            is_active: case.is_active,
        };
        let (next, events) = after_poll(&Conditions::initial(), &outcome);
        assert_eq!(
            (next.ready.status, next.ready.reason.as_str()),
            case.ready,
            "case {}",
            case.name
        );
        assert_eq!(
            (next.active.status, next.active.reason.as_str()),
            case.active,
            "case {}",
            case.name
        );
        assert_eq!(reasons(&events), case.events, "case {}", case.name);
        let (_, repeated) = after_poll(&next, &outcome);
        assert!(
            repeated.iter().all(|e| e.reason == "KEDAScalerFailed"),
            "no transition event twice ({})",
            case.name
        );
    }
}

#[test]
fn poll_ready_message_says_for_scaling() {
    let (next, _) = after_poll(
        &Conditions::initial(),
        &PollOutcome {
            trigger_errors: vec![],
            is_active: false,
        },
    );
    assert_eq!(
        next.ready.message,
        "ScaledJob is defined correctly and is ready for scaling"
    );
    assert_eq!(
        next.active.message,
        "Scaling is not performed because triggers are not active"
    );
}

#[test]
fn event_texts_are_kedas() {
    assert_eq!(Event::jobs_created(0).note, "Created 0 jobs");
    assert_eq!(Event::scaler_built("kafka").note, "Scaler kafka is built");
    let started = Event::scalers_started();
    assert_eq!(
        (
            started.reason,
            started.note.as_str(),
            started.action.as_str()
        ),
        (
            "KEDAScalersStarted",
            "Started scalers watch",
            "ScalersWatchStarted"
        )
    );
    assert_eq!(
        Event::job_create_failed("sj-", "quota").note,
        "Failed to create job sj-: quota"
    );
    assert_eq!(
        Event::rollout_cleanup_started(2).note,
        "Deleting 2 jobs owned by the previous version of the scaledJob"
    );
    assert_eq!(
        Event::rollout_cleanup_completed(2).note,
        "Deleted 2 jobs owned by the previous version of the scaledJob"
    );
    assert_eq!(
        Event::rollout_cleanup_failed("j", "e").note,
        "Failed to delete job j: e"
    );
    let deleted = Event::deleted();
    assert_eq!(
        (deleted.type_, deleted.note.as_str()),
        (EventType::Warning, "ScaledJob was deleted")
    );
    assert_eq!(Event::scalers_stopped().note, "Stopped scalers watch");
    assert_eq!(
        Event::update_failed("conflict").reason,
        "ScaledJobUpdateFailed"
    );
}
