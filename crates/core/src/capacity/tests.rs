use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::crashloop::{CrashLoopPolicy, CrashLoopState};
use crate::jobs::{COMPLETE, PodFacts, PodPhase};
use crate::poll::{CapacityFacts, CrashLoopGuard, PollInput, PollPolicy, decide_poll};
use crate::replicas::ReplicaBounds;
use crate::scaling::{Aggregation, ScalingStrategy, TriggerMeasurement};
use crate::status::Conditions;

/// A Job of generation 1 whose one pod is in `state`.
fn job(name: &str, state: &JobCapacity) -> JobFacts {
    let pod = |unschedulable: bool, autoscaler: Option<AutoscalerVerdict>| PodFacts {
        name: format!("{name}-pod"),
        unschedulable: unschedulable.then(|| "0/4 nodes are available: 4 Insufficient cpu.".into()),
        autoscaler,
        ..PodFacts::default()
    };
    let (pods, kueue) = match state {
        JobCapacity::Placed => (
            vec![PodFacts {
                phase: PodPhase::Running,
                ..pod(false, None)
            }],
            None,
        ),
        JobCapacity::Unschedulable(_) => (vec![pod(true, None)], None),
        JobCapacity::ScaleUp(m) => (
            vec![pod(
                true,
                Some(AutoscalerVerdict::TriggeredScaleUp(m.clone())),
            )],
            None,
        ),
        JobCapacity::NoScaleUp(m) => (
            vec![pod(
                true,
                Some(AutoscalerVerdict::NotTriggerScaleUp(m.clone())),
            )],
            None,
        ),
        JobCapacity::Queued(m) => (Vec::new(), Some(KueueAdmission::Pending(m.clone()))),
        JobCapacity::Inadmissible(m) => (Vec::new(), Some(KueueAdmission::Inadmissible(m.clone()))),
    };
    JobFacts {
        name: name.into(),
        generation: Some("1".into()),
        pods,
        kueue,
        ..JobFacts::default()
    }
}

fn jobs(count: usize, state: &JobCapacity) -> Vec<JobFacts> {
    (0..count).map(|i| job(&format!("j{i}"), state)).collect()
}

fn assess_jobs(jobs: &[JobFacts], quota: Option<&QuotaRefusal>) -> Assessment {
    assess(&CapacityInput {
        jobs,
        generation: "1",
        requests: "cpu=2, memory=4Gi",
        quota,
        policy: CapacityPolicy { pending_budget: 10 },
        previous: None,
    })
}

fn scale_up() -> JobCapacity {
    JobCapacity::ScaleUp("pod triggered scale-up: [{pool 4->20 (max: 20)}]".into())
}

#[test]
fn running_jobs_leave_the_gate_open_and_write_no_condition() {
    let assessment = assess_jobs(&jobs(3, &JobCapacity::Placed), None);
    assert_eq!(assessment.gate, Gate::Open);
    assert_eq!(assessment.condition.status, ConditionStatus::True);
    assert_eq!(after_assess(None, &assessment), (None, None));
}

#[test]
fn jobs_waiting_for_a_scale_up_fill_the_pending_budget_and_no_more() {
    let waiting = jobs(4, &scale_up());
    let assessment = assess_jobs(&waiting, None);
    assert_eq!(assessment.gate, Gate::AtMost(6), "budget 10 − 4 waiting");
    assert_eq!(assessment.waiting["scale_up"], 4);
    assert_eq!(assessment.condition.reason, "WaitingForScaleUp");
    assert!(
        assessment.condition.message.contains("pool 4->20"),
        "{}",
        assessment.condition.message
    );
    let full = assess_jobs(&jobs(12, &scale_up()), None);
    assert_eq!(full.gate, Gate::AtMost(0));
    assert!(!full.gate.may_receive());
    let (condition, event) = after_assess(None, &full);
    assert_eq!(condition.map(|c| c.status), Some(ConditionStatus::False));
    assert_eq!(event.map(|e| e.reason), Some("WaitingForScaleUp"));
}

#[test]
fn jobs_without_a_pod_yet_count_against_the_budget_once_jobs_wait() {
    let fresh = JobFacts {
        name: "fresh".into(),
        generation: Some("1".into()),
        ..JobFacts::default()
    };
    let mut all = jobs(4, &scale_up());
    all.push(fresh.clone());
    assert_eq!(assess_jobs(&all, None).gate, Gate::AtMost(5));
    assert_eq!(
        assess_jobs(std::slice::from_ref(&fresh), None).gate,
        Gate::Open,
        "nothing is known to wait"
    );
    // The moment no pod is Unschedulable while new Jobs have no node yet: still short.
    let short = assess_jobs(&all, None).condition;
    let still = assess(&CapacityInput {
        jobs: &[fresh.clone(), fresh],
        generation: "1",
        requests: "",
        quota: None,
        policy: CapacityPolicy { pending_budget: 10 },
        previous: Some(&short),
    });
    assert_eq!(still.gate, Gate::AtMost(8));
    assert_eq!(still.condition, short);
    // Every Job got a node: available, but this poll still creates one budget at most.
    let placed = jobs(2, &JobCapacity::Placed);
    let back = assess(&CapacityInput {
        jobs: &placed,
        generation: "1",
        requests: "",
        quota: None,
        policy: CapacityPolicy { pending_budget: 10 },
        previous: Some(&short),
    });
    assert_eq!(back.gate, Gate::AtMost(10));
    assert_eq!(back.condition.status, ConditionStatus::True);
    let open = assess(&CapacityInput {
        previous: Some(&back.condition),
        ..CapacityInput {
            jobs: &placed,
            generation: "1",
            requests: "",
            quota: None,
            policy: CapacityPolicy { pending_budget: 10 },
            previous: None,
        }
    });
    assert_eq!(open.gate, Gate::Open);
}

#[test]
fn unschedulable_pods_without_an_autoscaler_verdict_wait_within_the_budget() {
    let assessment = assess_jobs(&jobs(2, &JobCapacity::Unschedulable(String::new())), None);
    assert_eq!(assessment.gate, Gate::AtMost(8));
    assert_eq!(assessment.condition.reason, "Unschedulable");
    assert!(assessment.condition.message.contains("Insufficient cpu"));
}

#[test]
fn a_pod_no_node_group_can_fit_stops_creation_naming_the_reason_and_the_request() {
    let mut all = jobs(
        1,
        &JobCapacity::NoScaleUp("pod didn't trigger scale-up: 2 Insufficient memory".into()),
    );
    all.extend(jobs(2, &scale_up()));
    let assessment = assess_jobs(&all, None);
    assert_eq!(assessment.gate, Gate::Stopped);
    assert_eq!(assessment.condition.reason, "NoScaleUp");
    let message = &assessment.condition.message;
    assert!(message.contains("2 Insufficient memory"), "{message}");
    assert!(message.contains("requests cpu=2, memory=4Gi"), "{message}");
    let event = capacity_event(&assessment.condition);
    assert_eq!(event.type_, EventType::Warning);
}

#[test]
fn a_spec_change_lifts_the_stop_of_the_earlier_specs_jobs() {
    let stuck = jobs(1, &JobCapacity::NoScaleUp("no".into()));
    let assessment = assess(&CapacityInput {
        jobs: &stuck,
        generation: "2",
        requests: "",
        quota: None,
        policy: CapacityPolicy { pending_budget: 10 },
        previous: None,
    });
    assert_eq!(
        assessment.gate,
        Gate::AtMost(9),
        "the stuck Job still waits"
    );
    assert_eq!(assessment.condition.reason, "WaitingForCapacity");
}

#[test]
fn kueue_queued_jobs_are_backlog_within_the_budget_and_inadmissible_ones_stop() {
    let queued = assess_jobs(
        &jobs(
            3,
            &JobCapacity::Queued(Some("couldn't assign flavors".into())),
        ),
        None,
    );
    assert_eq!(queued.gate, Gate::AtMost(7));
    assert_eq!(queued.condition.reason, "QueuedByKueue");
    assert_eq!(queued.waiting["kueue_queued"], 3);
    let inadmissible = assess_jobs(
        &jobs(
            1,
            &JobCapacity::Inadmissible("LocalQueue q doesn't exist".into()),
        ),
        None,
    );
    assert_eq!(inadmissible.gate, Gate::Stopped);
    assert_eq!(inadmissible.condition.reason, "KueueInadmissible");
    assert!(
        inadmissible
            .condition
            .message
            .contains("LocalQueue q doesn't exist")
    );
}

#[test]
fn a_quota_refusal_stops_creation_until_a_quota_changes_then_probes_one_job() {
    let refused = QuotaRefusal {
        message: "exceeded quota: jobs, requested: count/jobs.batch=1".into(),
        may_retry: false,
    };
    let assessment = assess_jobs(&[], Some(&refused));
    assert_eq!(assessment.gate, Gate::Stopped);
    assert_eq!(assessment.condition.reason, "QuotaExceeded");
    assert!(assessment.condition.message.contains("count/jobs.batch=1"));
    let changed = QuotaRefusal {
        may_retry: true,
        ..refused
    };
    assert_eq!(assess_jobs(&[], Some(&changed)).gate, Gate::AtMost(1));
}

#[test]
fn finished_jobs_never_wait() {
    let mut done = job("done", &JobCapacity::Unschedulable(String::new()));
    done.true_conditions = vec![(COMPLETE.into(), None)];
    assert_eq!(job_capacity(&done), JobCapacity::Placed);
}

#[test]
fn the_event_follows_a_change_of_reason_not_of_the_message() {
    let waiting = assess_jobs(&jobs(2, &scale_up()), None);
    let more = assess_jobs(&jobs(3, &scale_up()), None);
    let (kept, event) = after_assess(Some(&waiting.condition), &more);
    assert_eq!(event, None, "same reason: the message changes silently");
    assert_eq!(kept, Some(more.condition.clone()));
    let back = assess_jobs(&[], None);
    let (condition, event) = after_assess(Some(&more.condition), &back);
    assert_eq!(condition.map(|c| c.status), Some(ConditionStatus::True));
    assert_eq!(event.map(|e| e.reason), Some("CapacityAvailable"));
}

#[test]
fn the_budget_annotation_is_a_non_negative_integer_or_an_error_naming_the_field() {
    assert_eq!(
        CapacityPolicy::from_annotation(Some("3"))
            .unwrap()
            .pending_budget,
        3
    );
    assert_eq!(
        CapacityPolicy::from_annotation(Some(" 0 "))
            .unwrap()
            .pending_budget,
        0
    );
    assert_eq!(
        CapacityPolicy::from_annotation(None)
            .unwrap()
            .pending_budget,
        DEFAULT_PENDING_BUDGET
    );
    for bad in ["-1", "x", "", "1.5", "99999999999999999999"] {
        let error = CapacityPolicy::from_annotation(Some(bad)).unwrap_err();
        assert_eq!(
            error,
            format!(
                "metadata.annotations[jobtide.io/pending-budget]: {bad:?} is not a non-negative \
                 integer (how many Jobs may wait for capacity; default 10)"
            )
        );
    }
    // A long or hostile value is quoted (escaped) and cut.
    let long = format!("{}\n{}", "a".repeat(70), "b");
    let error = CapacityPolicy::parse_budget(&long).unwrap_err();
    assert!(
        error.contains(&format!("\"{}\"…", "a".repeat(64))),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
}

fn arbitrary_capacity() -> impl Strategy<Value = JobCapacity> {
    prop_oneof![
        Just(JobCapacity::Placed),
        Just(JobCapacity::Unschedulable(String::new())),
        Just(scale_up()),
        Just(JobCapacity::NoScaleUp("n".into())),
        Just(JobCapacity::Queued(None)),
        Just(JobCapacity::Inadmissible("i".into())),
    ]
}

fn poll_creates(
    jobs: &[JobFacts],
    strategy: ScalingStrategy,
    lag: f64,
    quota: Option<&QuotaRefusal>,
    with_capacity: bool,
) -> i64 {
    let policy = CrashLoopPolicy::from_annotation(Some("false"));
    let state = CrashLoopState::default();
    let conditions = Conditions::initial();
    let mut jobs = jobs.to_vec();
    if !with_capacity {
        // What jobtide saw before capacity: phases and true conditions only.
        for job in &mut jobs {
            job.kueue = None;
            for pod in &mut job.pods {
                pod.unschedulable = None;
                pod.autoscaler = None;
            }
        }
    }
    decide_poll(&PollInput {
        triggers: &[crate::poll::TriggerResult {
            metric_name: "s0-kafka-t".into(),
            measurement: Ok(TriggerMeasurement {
                queue_length: lag,
                target: 1.0,
                active: lag > 0.0,
            }),
        }],
        jobs: &jobs,
        policy: PollPolicy {
            bounds: ReplicaBounds::from_spec(None, Some(200)),
            strategy,
            aggregation: Aggregation::Max,
            pending_pod_conditions: &[],
            history_limits: crate::jobs::HistoryLimits::from_spec(None, None),
        },
        conditions: &conditions,
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
        creating: true,
        crash_loop: CrashLoopGuard {
            policy: &policy,
            state: &state,
            spec_changed: false,
        },
        capacity: CapacityFacts {
            generation: "1",
            quota: if with_capacity { quota } else { None },
            ..CapacityFacts::none()
        },
    })
    .jobs
    .create
}

proptest! {
    /// Lag mode: no capacity state creates more Jobs than jobtide did before capacity, and
    /// while Jobs wait, the waiting ones plus the new ones stay within the budget.
    #[test]
    fn capacity_never_adds_jobs_and_bounds_the_waiting_ones(
        states in prop::collection::vec(arbitrary_capacity(), 0..30),
        lag in 0u32..300,
        strategy in prop_oneof![
            Just(ScalingStrategy::Default),
            Just(ScalingStrategy::Accurate),
            Just(ScalingStrategy::Eager),
        ],
        refused in any::<Option<bool>>(),
    ) {
        let jobs: Vec<JobFacts> = states
            .iter()
            .enumerate()
            .map(|(i, s)| job(&format!("j{i}"), s))
            .collect();
        let quota = refused.map(|may_retry| QuotaRefusal { message: "q".into(), may_retry });
        let before = poll_creates(&jobs, strategy, f64::from(lag), None, false);
        let now = poll_creates(&jobs, strategy, f64::from(lag), quota.as_ref(), true);
        prop_assert!(now <= before, "{now} > {before}");
        let waiting = i64::try_from(states.iter().filter(|s| s.waits()).count()).unwrap_or(0);
        if waiting > 0 {
            prop_assert!(now == 0 || waiting + now <= DEFAULT_PENDING_BUDGET);
        }
        if quota.is_some() {
            prop_assert!(now <= 1);
        }
    }
}
