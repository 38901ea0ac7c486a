//! One whole poll of a ScaledJob as one pure function (keda-compat §2.4): the controller
//! gathers the facts (trigger measurements, Jobs and pods, current conditions, the time), calls
//! [`decide_poll`], and acts on the [`PollDecision`]: create `jobs.create` Jobs, delete
//! `delete` with Background propagation, patch the status, emit the events.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::capacity::{self, Assessment, CapacityInput, CapacityPolicy, Gate, QuotaRefusal};
use crate::crashloop::{self, CrashLoopInput, CrashLoopPolicy, CrashLoopState, Verdict};
use crate::jobs::{self, HistoryLimits, JobCounts, JobFacts};
use crate::replicas::ReplicaBounds;
use crate::scaling::{
    self, Aggregate, Aggregation, JobCountDecision, JobCountInput, ScalingStrategy,
    TriggerMeasurement,
};
use crate::status::{self, Condition, ConditionStatus, Conditions, Event, PollOutcome};

/// One trigger's result this poll.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerResult {
    /// The external metric name (`s0-kafka-orders`), key of `status.triggersActivity`.
    pub metric_name: String,
    /// The measurement, or the error text (shown in `KEDAScalerFailed`).
    pub measurement: Result<TriggerMeasurement, String>,
}

/// The ScaledJob's policy, from its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy<'a> {
    /// Effective Min / Max.
    pub bounds: ReplicaBounds,
    /// The scaling strategy.
    pub strategy: ScalingStrategy,
    /// `multipleScalersCalculation`.
    pub aggregation: Aggregation,
    /// `pendingPodConditions`.
    pub pending_pod_conditions: &'a [String],
    /// History limits.
    pub history_limits: HistoryLimits,
}

/// Everything a poll decides on.
#[derive(Debug, Clone)]
pub struct PollInput<'a> {
    /// Per trigger, in spec order.
    pub triggers: &'a [TriggerResult],
    /// The ScaledJob's Jobs (label `scaledjob.keda.sh/name`), including any this operator
    /// created that the cache doesn't show yet.
    pub jobs: &'a [JobFacts],
    /// The policy.
    pub policy: PollPolicy<'a>,
    /// The conditions as read at the start of the poll.
    pub conditions: &'a Conditions,
    /// The time of the poll.
    pub now: SystemTime,
    /// Whether this poll may create Jobs: KEDA creates from one poll per `pollingInterval`;
    /// re-polls in between (a Job or pod changed) update counts, history and status only.
    pub creating: bool,
    /// The crash-loop guard's settings and memory, and whether the spec changed.
    pub crash_loop: CrashLoopGuard<'a>,
    /// What the poll knows about capacity besides the Jobs.
    pub capacity: CapacityFacts<'a>,
}

/// The capacity part of a poll's input ([`capacity`]).
#[derive(Debug, Clone, Copy)]
pub struct CapacityFacts<'a> {
    /// The ScaledJob's generation (as the Jobs' generation annotation writes it).
    pub generation: &'a str,
    /// The Job template's requests, for messages.
    pub requests: &'a str,
    /// The last quota refusal still in force.
    pub quota: Option<&'a QuotaRefusal>,
    /// The pending budget.
    pub policy: CapacityPolicy,
}

impl CapacityFacts<'_> {
    /// No quota refusal, the default budget (tests).
    pub const fn none() -> CapacityFacts<'static> {
        CapacityFacts {
            generation: "",
            requests: "",
            quota: None,
            policy: CapacityPolicy {
                pending_budget: capacity::DEFAULT_PENDING_BUDGET,
            },
        }
    }
}

/// The crash-loop guard's part of a poll's input ([`crashloop`]).
#[derive(Debug, Clone, Copy)]
pub struct CrashLoopGuard<'a> {
    /// Its settings.
    pub policy: &'a CrashLoopPolicy,
    /// Its memory from the last poll.
    pub state: &'a CrashLoopState,
    /// Whether the ScaledJob's spec changed since the last poll.
    pub spec_changed: bool,
}

/// What the poll does.
#[derive(Debug, Clone, PartialEq)]
pub struct PollDecision {
    /// The combined trigger result.
    pub aggregate: Aggregate,
    /// The Job counts decided on.
    pub counts: JobCounts,
    /// How many Jobs to create.
    pub jobs: JobCountDecision,
    /// Finished Jobs beyond the history limits, to delete with Background propagation.
    pub delete: Vec<String>,
    /// The conditions to write.
    pub conditions: Conditions,
    /// Events, in the order KEDA emits them (per-Job create failures are the controller's to
    /// add, with [`Event::job_create_failed`]).
    pub events: Vec<Event>,
    /// `status.lastActiveTime`: `Some(now)` on every active poll, else unchanged.
    pub last_active_time: Option<SystemTime>,
    /// `status.triggersActivity`: metric name → active (a failed trigger is inactive).
    pub triggers_activity: BTreeMap<String, bool>,
    /// The crash-loop guard's memory for the next poll, and what it let this poll do.
    pub crash_loop: (CrashLoopState, Verdict),
    /// Capacity: the gate applied to `jobs.create` and the Jobs waiting, by reason.
    pub capacity: Assessment,
}

/// Decides one poll.
pub fn decide_poll(input: &PollInput<'_>) -> PollDecision {
    let PollInput {
        triggers,
        jobs,
        policy,
        conditions,
        now,
        creating,
        crash_loop,
        capacity: capacity_facts,
    } = input;
    let measurements: Vec<TriggerMeasurement> = triggers
        .iter()
        .filter_map(|t| t.measurement.as_ref().ok().copied())
        .collect();
    let trigger_errors: Vec<String> = triggers
        .iter()
        .filter_map(|t| t.measurement.as_ref().err().cloned())
        .collect();
    let aggregate = scaling::aggregate(policy.aggregation, &measurements, policy.bounds);
    let counts = jobs::count(jobs, policy.pending_pod_conditions);
    let job_decision = scaling::decide_job_count(
        policy.strategy,
        JobCountInput {
            aggregate,
            running: counts.running,
            pending: counts.pending,
            bounds: policy.bounds,
        },
    );
    // The guard runs on creating polls only (a probe is one creating poll's Job).
    let (mut guard_state, verdict) = if *creating {
        let lag = if measurements.is_empty() {
            crash_loop.state.lag_at_trip
        } else {
            aggregate.queue_length
        };
        crashloop::guard(
            crash_loop.policy,
            crash_loop.state,
            &CrashLoopInput {
                jobs,
                lag,
                spec_changed: crash_loop.spec_changed,
                now: *now,
            },
        )
    } else {
        (crash_loop.state.clone(), Verdict::Clear)
    };
    let allowed = match verdict {
        _ if !*creating => 0,
        Verdict::Clear => job_decision.create,
        Verdict::BackingOff { .. } => 0,
        Verdict::Probing { allowed } => job_decision.create.min(allowed),
    };
    // Capacity only ever lowers what the strategy and the guard allow.
    let assessment = capacity::assess(&CapacityInput {
        jobs,
        generation: capacity_facts.generation,
        requests: capacity_facts.requests,
        quota: capacity_facts.quota,
        policy: capacity_facts.policy,
        previous: conditions.capacity.as_ref(),
    });
    let allowed = assessment.gate.limit(allowed);
    let job_decision = JobCountDecision {
        create: allowed,
        emit_jobs_created: job_decision.emit_jobs_created
            && (allowed > 0
                || (*creating && verdict == Verdict::Clear && assessment.gate == Gate::Open)),
        ..job_decision
    };
    let delete = jobs::history_to_delete(jobs, policy.history_limits)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let (mut next, status_events) = status::after_poll(
        conditions,
        &PollOutcome {
            trigger_errors: trigger_errors.clone(),
            is_active: aggregate.is_active,
        },
    );
    // KEDA's order: scaler failures while measuring, then the creation batch, then the Active
    // transition.
    let failures = trigger_errors.len();
    let mut events: Vec<Event> = status_events[..failures].to_vec();
    if job_decision.emit_jobs_created {
        events.push(Event::jobs_created(job_decision.create));
    }
    events.extend_from_slice(&status_events[failures..]);
    match verdict {
        Verdict::BackingOff {
            until: _,
            backoff,
            tripped: true,
        } => {
            let note = format!(
                "the newest {} Jobs failed within {}s of their creation and the lag did not go \
                 down: no Job is created for {}s, then one probe Job (a success, a lower lag or a \
                 spec change resumes at once; annotation {}: \"false\" turns this off)",
                crash_loop.policy.failures,
                crash_loop.policy.quick.as_secs(),
                backoff.as_secs(),
                crashloop::DISABLE_ANNOTATION,
            );
            guard_state.condition = Some(Condition::new(
                ConditionStatus::True,
                "CrashLoopBackOff",
                &note,
            ));
            events.push(Event::crash_loop_backoff(note));
        }
        Verdict::Clear if *creating && crash_loop.state.trips > 0 => {
            let why = "a Job succeeded, the lag went down, or the spec changed";
            guard_state.condition = Some(Condition::new(
                ConditionStatus::False,
                "CrashLoopBackOffEnded",
                &format!("Jobs are created again: {why}"),
            ));
            events.push(Event::crash_loop_ended(why));
        }
        _ => {}
    }
    // The guard's memory is this process's truth; the status read may be stale.
    if let Some(condition) = &guard_state.condition {
        next.crash_loop_backoff = Some(condition.clone());
    }
    let (capacity_condition, capacity_event) =
        capacity::after_assess(conditions.capacity.as_ref(), &assessment);
    next.capacity = capacity_condition;
    events.extend(capacity_event);
    PollDecision {
        aggregate,
        counts,
        jobs: job_decision,
        delete,
        conditions: next,
        events,
        last_active_time: aggregate.is_active.then_some(*now),
        triggers_activity: triggers
            .iter()
            .map(|t| {
                (
                    t.metric_name.clone(),
                    t.measurement.as_ref().is_ok_and(|m| m.active),
                )
            })
            .collect(),
        crash_loop: (guard_state, verdict),
        capacity: assessment,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::jobs::{COMPLETE, PodFacts, PodPhase};
    use crate::status::ConditionStatus;

    fn no_guard() -> CrashLoopGuard<'static> {
        static POLICY: CrashLoopPolicy = CrashLoopPolicy {
            enabled: false,
            failures: 3,
            quick: Duration::from_mins(2),
            base: Duration::from_secs(30),
            max: Duration::from_mins(10),
        };
        static STATE: CrashLoopState = CrashLoopState {
            trips: 0,
            until: None,
            tripped_by: None,
            lag_at_trip: 0.0,
            probe_at: None,
            condition: None,
        };
        CrashLoopGuard {
            policy: &POLICY,
            state: &STATE,
            spec_changed: false,
        }
    }

    fn seed_policy() -> PollPolicy<'static> {
        // The seed manifest: maxReplicaCount 30, history 3 / 2, default strategy.
        PollPolicy {
            bounds: ReplicaBounds::from_spec(None, Some(30)),
            strategy: ScalingStrategy::Default,
            aggregation: Aggregation::Max,
            pending_pod_conditions: &[],
            history_limits: HistoryLimits {
                successful: 3,
                failed: 2,
            },
        }
    }

    fn lag(queue_length: f64) -> TriggerResult {
        TriggerResult {
            metric_name: "s0-kafka-test-topic".into(),
            measurement: Ok(TriggerMeasurement {
                queue_length,
                target: 50.0,
                active: queue_length > 0.0,
            }),
        }
    }

    fn reasons(decision: &PollDecision) -> Vec<&'static str> {
        decision.events.iter().map(|e| e.reason).collect()
    }

    fn completed(name: &str, minute: u64) -> JobFacts {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(minute * 60);
        JobFacts {
            name: name.into(),
            true_conditions: vec![(COMPLETE.into(), Some(at))],
            completion_time: Some(at),
            ..JobFacts::default()
        }
    }

    #[test]
    fn a_missing_topic_makes_the_trigger_fail_and_nothing_is_created() {
        let triggers = [TriggerResult {
            metric_name: "s0-kafka-test-topic".into(),
            measurement: Err(
                "expected at least one active partition within the topic 'test-topic'".into(),
            ),
        }];
        let conditions = Conditions::initial();
        let decision = decide_poll(&PollInput {
            triggers: &triggers,
            jobs: &[],
            policy: seed_policy(),
            conditions: &conditions,
            now: SystemTime::UNIX_EPOCH,
            creating: true,
            crash_loop: no_guard(),
            capacity: CapacityFacts::none(),
        });
        assert_eq!(decision.jobs.create, 0);
        assert_eq!(
            reasons(&decision),
            vec!["KEDAScalerFailed", "ScaledJobInactive"]
        );
        assert_eq!(decision.conditions.ready.reason, "TriggerError");
        assert_eq!(decision.last_active_time, None);
        assert_eq!(
            decision.triggers_activity,
            BTreeMap::from([("s0-kafka-test-topic".into(), false)])
        );
    }

    #[test]
    fn one_message_creates_one_job_and_marks_the_scaled_job_active() {
        let conditions = Conditions::initial();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(42);
        let decision = decide_poll(&PollInput {
            triggers: &[lag(1.0)],
            jobs: &[],
            policy: seed_policy(),
            conditions: &conditions,
            now,
            creating: true,
            crash_loop: no_guard(),
            capacity: CapacityFacts::none(),
        });
        assert_eq!(decision.jobs.create, 1);
        assert_eq!(
            reasons(&decision),
            vec!["KEDAJobsCreated", "ScaledJobActive"]
        );
        assert_eq!(decision.events[0].note, "Created 1 jobs");
        assert_eq!(decision.conditions.active.status, ConditionStatus::True);
        assert_eq!(decision.last_active_time, Some(now));
    }

    #[test]
    fn a_re_poll_within_the_interval_creates_nothing_but_still_updates_status() {
        let conditions = Conditions::initial();
        let decision = decide_poll(&PollInput {
            triggers: &[lag(5.0)],
            jobs: &[],
            policy: seed_policy(),
            conditions: &conditions,
            now: SystemTime::UNIX_EPOCH,
            creating: false,
            crash_loop: no_guard(),
            capacity: CapacityFacts::none(),
        });
        assert_eq!(decision.jobs.create, 0);
        assert!(!decision.jobs.emit_jobs_created);
        assert_eq!(reasons(&decision), vec!["ScaledJobActive"]);
        assert_eq!(decision.conditions.active.status, ConditionStatus::True);
        assert!(decision.jobs.scale_to > 0, "the lag was measured");
    }

    #[test]
    fn the_crash_loop_condition_comes_from_the_guards_memory_not_a_stale_status() {
        let conditions = Conditions::initial(); // a stale read: no CrashLoopBackOff
        let policy = CrashLoopPolicy::from_annotation(None);
        let backing_off = CrashLoopState {
            trips: 1,
            until: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(100)),
            condition: Some(Condition::new(
                ConditionStatus::True,
                "CrashLoopBackOff",
                "m",
            )),
            ..CrashLoopState::default()
        };
        let decide = |state: &CrashLoopState, creating: bool| {
            decide_poll(&PollInput {
                triggers: &[lag(5.0)],
                jobs: &[],
                policy: seed_policy(),
                conditions: &conditions,
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(10),
                creating,
                crash_loop: CrashLoopGuard {
                    policy: &policy,
                    state,
                    spec_changed: false,
                },
                capacity: CapacityFacts::none(),
            })
        };
        for creating in [true, false] {
            let decision = decide(&backing_off, creating);
            assert_eq!(decision.jobs.create, 0);
            assert_eq!(
                decision.conditions.crash_loop_backoff.map(|c| c.status),
                Some(ConditionStatus::True),
                "creating: {creating}"
            );
        }
    }

    #[test]
    fn a_running_job_absorbs_the_lag_and_history_beyond_the_limit_is_deleted() {
        let running = JobFacts {
            name: "running".into(),
            pods: vec![PodFacts {
                phase: PodPhase::Running,
                ..PodFacts::default()
            }],
            ..JobFacts::default()
        };
        let jobs = [
            completed("c1", 1),
            completed("c2", 2),
            completed("c3", 3),
            completed("c4", 4),
            completed("c5", 5),
            running,
        ];
        let conditions = Conditions::initial();
        let decision = decide_poll(&PollInput {
            triggers: &[lag(1.0)],
            jobs: &jobs,
            policy: seed_policy(),
            conditions: &conditions,
            now: SystemTime::UNIX_EPOCH,
            creating: true,
            crash_loop: no_guard(),
            capacity: CapacityFacts::none(),
        });
        assert_eq!(decision.counts.running, 1);
        assert_eq!(decision.jobs.create, 0, "maxScale 1 − 1 running");
        assert!(!decision.jobs.emit_jobs_created);
        assert_eq!(
            decision.delete,
            vec!["c1", "c2"],
            "keep the 3 newest successful Jobs"
        );
    }
}
