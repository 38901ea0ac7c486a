//! Capacity: whether the cluster has room for the ScaledJob's Jobs, from what the cluster says,
//! and how many Jobs a poll may still create (a difference from KEDA, which counts pending pods
//! only and keeps creating while pods wait for nodes: keda#525, keda#7329, keda#7548).
//!
//! The controller gathers what the cluster says about each unfinished Job — its pods' `PodScheduled`
//! condition, the cluster autoscaler's (or Karpenter's) events on them, Kueue's suspension and
//! its Workload's admission — and the last quota refusal of a Job creation. [`job_capacity`]
//! classifies one Job; [`assess`] turns all of them into a [`Gate`] and the `CapacityAvailable`
//! condition:
//!
//! - **Capacity is coming** (pods `Unschedulable` while the autoscaler triggered a scale-up or
//!   Karpenter nominated a NodeClaim; pods `Unschedulable` with no verdict yet; Jobs queued by
//!   Kueue): those Jobs count as in flight, and no more Jobs are created once
//!   [`CapacityPolicy::pending_budget`] of them wait — the autoscaler still sees demand, but Jobs
//!   are not multiplied while it works.
//! - **It will never fit** (`NotTriggerScaleUp`, a Workload Kueue finds inadmissible) or **a
//!   ResourceQuota refused a Job**: no Job is created; the condition names the reason, the
//!   scheduler's or autoscaler's words and the Jobs' requests. A quota refusal is retried with one
//!   Job when a ResourceQuota of the namespace changed, or after [`QUOTA_RETRY`].
//!
//! The gate only ever lowers what the scaling strategy decided: no state creates more Jobs than
//! KEDA's rules would.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::jobs::{JobFacts, JobState, classify};
use crate::status::{Condition, ConditionStatus, Event, EventType, Reporter};

/// `jobtide.io/pending-budget: "<n>"`: how many Jobs may wait for capacity before no more are
/// created (default [`DEFAULT_PENDING_BUDGET`]).
pub const PENDING_BUDGET_ANNOTATION: &str = "jobtide.io/pending-budget";
/// The default pending budget: enough Jobs waiting that an autoscaler sizing its scale-up from
/// pending pods adds several nodes at once, few enough that a node pool that never comes does
/// not gather a Job per message.
pub const DEFAULT_PENDING_BUDGET: i64 = 10;
/// After a quota refusal, one Job is tried again this long after the refusal even when no
/// ResourceQuota change was seen (Jobs deleted by history cleanup free a `count/jobs.batch`
/// quota without changing the quota object where no quota controller runs).
pub const QUOTA_RETRY: Duration = Duration::from_mins(1);

/// jobtide's condition type for capacity.
pub const CAPACITY_AVAILABLE: &str = "CapacityAvailable";

/// What the cluster autoscaler (or Karpenter) last said about a pod, from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoscalerVerdict {
    /// Cluster Autoscaler `TriggeredScaleUp`: a node group grows for this pod.
    TriggeredScaleUp(String),
    /// Karpenter `Nominated`: a NodeClaim was launched (or chosen) for this pod.
    Nominated(String),
    /// Cluster Autoscaler `NotTriggerScaleUp`: no node group can fit this pod.
    NotTriggerScaleUp(String),
}

/// Kueue's view of a suspended Job (label `kueue.x-k8s.io/queue-name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KueueAdmission {
    /// Waiting for quota in its queue (`QuotaReserved` False, reason `Pending`, or no Workload
    /// read): the message is Kueue's, when known.
    Pending(Option<String>),
    /// Kueue cannot admit it as it is (`QuotaReserved` False with reason `Inadmissible`, or the
    /// Workload's `Inadmissible`-type reasons): reason and message.
    Inadmissible(String),
}

/// Where one unfinished Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCapacity {
    /// Nothing stops it (scheduled, running, or no pod yet).
    Placed,
    /// A pod is `Unschedulable` and no autoscaler said anything about it (yet).
    Unschedulable(String),
    /// A pod is `Unschedulable` and a node is on its way.
    ScaleUp(String),
    /// A pod is `Unschedulable` and no node group can fit it.
    NoScaleUp(String),
    /// Suspended by Kueue, waiting for admission.
    Queued(Option<String>),
    /// Suspended by Kueue, which cannot admit it.
    Inadmissible(String),
}

impl JobCapacity {
    /// The bounded label of the `jobtide_jobs_waiting_for_capacity` metric.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Unschedulable(_) => "unschedulable",
            Self::ScaleUp(_) => "scale_up",
            Self::NoScaleUp(_) => "no_scale_up",
            Self::Queued(_) => "kueue_queued",
            Self::Inadmissible(_) => "kueue_inadmissible",
        }
    }

    /// Whether the Job waits (counts against the pending budget).
    pub const fn waits(&self) -> bool {
        !matches!(self, Self::Placed)
    }
}

/// Classifies one Job (finished Jobs are placed: they need nothing more).
pub fn job_capacity(job: &JobFacts) -> JobCapacity {
    if matches!(
        classify(job, &[]),
        JobState::Succeeded | JobState::Failed | JobState::Finishing
    ) {
        return JobCapacity::Placed;
    }
    if let Some(admission) = &job.kueue {
        return match admission {
            KueueAdmission::Pending(message) => JobCapacity::Queued(message.clone()),
            KueueAdmission::Inadmissible(message) => JobCapacity::Inadmissible(message.clone()),
        };
    }
    let mut found = JobCapacity::Placed;
    for pod in &job.pods {
        let Some(unschedulable) = &pod.unschedulable else {
            continue;
        };
        let this = match &pod.autoscaler {
            Some(AutoscalerVerdict::NotTriggerScaleUp(m)) => JobCapacity::NoScaleUp(m.clone()),
            Some(AutoscalerVerdict::TriggeredScaleUp(m) | AutoscalerVerdict::Nominated(m)) => {
                JobCapacity::ScaleUp(m.clone())
            }
            None => JobCapacity::Unschedulable(unschedulable.clone()),
        };
        if severity(&this) > severity(&found) {
            found = this;
        }
    }
    found
}

const fn severity(capacity: &JobCapacity) -> u8 {
    match capacity {
        JobCapacity::Placed => 0,
        JobCapacity::Queued(_) => 1,
        JobCapacity::Unschedulable(_) => 2,
        JobCapacity::ScaleUp(_) => 3,
        JobCapacity::NoScaleUp(_) => 4,
        JobCapacity::Inadmissible(_) => 5,
    }
}

/// The last refusal of a Job creation by a ResourceQuota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// The API server's message (`exceeded quota: <name>, requested: …, used: …, limited: …`).
    pub message: String,
    /// Whether a ResourceQuota of the namespace changed since, or [`QUOTA_RETRY`] passed.
    pub may_retry: bool,
}

/// The ScaledJob's capacity settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityPolicy {
    /// Jobs that may wait for capacity before no more are created.
    pub pending_budget: i64,
}

impl CapacityPolicy {
    /// The policy with the default budget (no annotation).
    pub const DEFAULT: Self = Self {
        pending_budget: DEFAULT_PENDING_BUDGET,
    };

    /// From the [`PENDING_BUDGET_ANNOTATION`] value: absent is the default, else
    /// [`Self::parse_budget`].
    ///
    /// # Errors
    /// A value that is not a non-negative integer: the ScaledJob is invalid (the operator says so
    /// in its `Ready` condition and creates no Job) rather than run with a budget nobody asked
    /// for.
    pub fn from_annotation(value: Option<&str>) -> Result<Self, String> {
        value.map_or(Ok(Self::DEFAULT), |v| {
            Self::parse_budget(v).map(|pending_budget| Self { pending_budget })
        })
    }

    /// The [`PENDING_BUDGET_ANNOTATION`] value as a budget, or why it is none, naming the field
    /// (the value is the manifest's own text, quoted and cut at 64 characters).
    ///
    /// # Errors
    /// Anything but a non-negative integer.
    pub fn parse_budget(value: &str) -> Result<i64, String> {
        value
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                let shown: String = value.chars().take(64).collect();
                let cut = if shown.len() < value.len() { "…" } else { "" };
                format!(
                    "metadata.annotations[{PENDING_BUDGET_ANNOTATION}]: {shown:?}{cut} is not a \
                     non-negative integer (how many Jobs may wait for capacity; default \
                     {DEFAULT_PENDING_BUDGET})"
                )
            })
    }
}

/// Everything [`assess`] reads.
#[derive(Debug, Clone, Copy)]
pub struct CapacityInput<'a> {
    /// The ScaledJob's Jobs (with their pods and Kueue facts).
    pub jobs: &'a [JobFacts],
    /// The current generation: only its Jobs can stop creation (a spec change, e.g. smaller
    /// requests, gets a fresh try).
    pub generation: &'a str,
    /// The Job template's requests, as shown to users (`cpu=2, memory=4Gi`), for messages.
    pub requests: &'a str,
    /// The last quota refusal still in force.
    pub quota: Option<&'a QuotaRefusal>,
    /// The settings.
    pub policy: CapacityPolicy,
    /// The `CapacityAvailable` condition as the last poll left it: while it says Jobs wait,
    /// Jobs not scheduled yet keep the budget in force even at a moment when none is
    /// `Unschedulable` (capacity is available again only once every Job got a node).
    pub previous: Option<&'a Condition>,
}

/// How many Jobs a poll may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// As the strategy decides.
    Open,
    /// At most this many (the pending budget's room, or one quota probe).
    AtMost(i64),
    /// None.
    Stopped,
}

impl Gate {
    /// `create` limited by the gate.
    pub fn limit(self, create: i64) -> i64 {
        match self {
            Self::Open => create,
            Self::AtMost(n) => create.min(n).max(0),
            Self::Stopped => 0,
        }
    }

    /// Whether dispatch mode may read more messages.
    pub const fn may_receive(self) -> bool {
        match self {
            Self::Open => true,
            Self::AtMost(n) => n > 0,
            Self::Stopped => false,
        }
    }
}

/// The capacity of a ScaledJob this poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// How many Jobs may be created.
    pub gate: Gate,
    /// Waiting Jobs by [`JobCapacity::label`] (every label present, 0 when none).
    pub waiting: BTreeMap<&'static str, i64>,
    /// The `CapacityAvailable` condition this poll calls for.
    pub condition: Condition,
}

/// Decides the gate and the condition.
pub fn assess(input: &CapacityInput<'_>) -> Assessment {
    let mut waiting: BTreeMap<&'static str, i64> = [
        "unschedulable",
        "scale_up",
        "no_scale_up",
        "kueue_queued",
        "kueue_inadmissible",
    ]
    .into_iter()
    .map(|label| (label, 0))
    .collect();
    // The worst of the current generation's Jobs (stopping), and of all Jobs (waiting).
    let mut worst_current: Option<(String, JobCapacity)> = None;
    let mut worst_any: Option<(String, JobCapacity)> = None;
    let mut total = 0_i64;
    // Unfinished Jobs with no pod scheduled yet (none created, or not yet looked at by the
    // scheduler): once some Job waits, these will most likely wait too (a Job created by the last
    // poll, or one the cache doesn't show yet).
    let mut starting = 0_i64;
    for job in input.jobs {
        let capacity = job_capacity(job);
        if !capacity.waits() {
            let scheduled = job
                .pods
                .iter()
                .any(|p| p.true_conditions.contains("PodScheduled"));
            if !scheduled && matches!(classify(job, &[]), JobState::Pending) {
                starting += 1;
            }
            continue;
        }
        total += 1;
        *waiting.entry(capacity.label()).or_default() += 1;
        let worse = |worst: &Option<(String, JobCapacity)>| {
            worst
                .as_ref()
                .is_none_or(|(_, w)| severity(&capacity) > severity(w))
        };
        if job.generation.as_deref() == Some(input.generation) && worse(&worst_current) {
            worst_current = Some((job.name.clone(), capacity.clone()));
        }
        if worse(&worst_any) {
            worst_any = Some((job.name.clone(), capacity));
        }
    }
    let requests = if input.requests.is_empty() {
        "no requests".to_owned()
    } else {
        format!("requests {}", input.requests)
    };
    let budget = input.policy.pending_budget;
    let room = if total > 0 {
        (budget - total - starting).max(0)
    } else {
        budget
    };
    let waiting_note = |what: &str, detail: &str| {
        let starting = if starting > 0 {
            format!(" and {starting} without a pod yet")
        } else {
            String::new()
        };
        format!(
            "{total} Jobs wait for capacity{starting} ({what}: {detail}); the pending budget is \
             {budget} Jobs, {room} more may be created until they start"
        )
    };
    let false_ =
        |reason: &str, message: String| Condition::new(ConditionStatus::False, reason, &message);
    if let Some(refusal) = input.quota {
        let gate = if refusal.may_retry {
            Gate::AtMost(1.min(room))
        } else {
            Gate::Stopped
        };
        return Assessment {
            gate,
            waiting,
            condition: false_(
                "QuotaExceeded",
                format!(
                    "a ResourceQuota refused a Job ({}): no Job is created until a ResourceQuota \
                     of the namespace changes (one Job is tried then, and every {}s)",
                    refusal.message,
                    QUOTA_RETRY.as_secs()
                ),
            ),
        };
    }
    let stopped = match &worst_current {
        Some((job, JobCapacity::NoScaleUp(message))) => Some(false_(
            "NoScaleUp",
            format!(
                "Job {job}'s pod fits no node and the cluster autoscaler will not add one \
                 ({message}; the Jobs' {requests}): no Job is created until a pod of this spec \
                 is scheduled or the spec changes"
            ),
        )),
        Some((job, JobCapacity::Inadmissible(message))) => Some(false_(
            "KueueInadmissible",
            format!(
                "Kueue cannot admit Job {job} ({message}; the Jobs' {requests}): no Job is \
                 created until it is admitted or the spec changes"
            ),
        )),
        _ => None,
    };
    if let Some(condition) = stopped {
        return Assessment {
            gate: Gate::Stopped,
            waiting,
            condition,
        };
    }
    let was_waiting = input
        .previous
        .is_some_and(|c| c.status == ConditionStatus::False && c.reason != "QuotaExceeded");
    // Jobs waited at the last poll and none does now: the budget still holds for this poll, so
    // that capacity comes back in budget-sized steps (a step whose Jobs all get a node opens
    // the gate at the next poll) instead of a burst into a cluster that just was full.
    if worst_any.is_none()
        && was_waiting
        && let Some(previous) = input.previous
    {
        let condition = if starting > 0 {
            previous.clone()
        } else {
            Condition::new(
                ConditionStatus::True,
                "CapacityAvailable",
                "no Job waits for capacity",
            )
        };
        return Assessment {
            gate: Gate::AtMost((budget - starting).max(0)),
            waiting,
            condition,
        };
    }
    let condition = match &worst_any {
        // A placed Job never becomes the worst (only waiting Jobs are compared).
        None | Some((_, JobCapacity::Placed)) => {
            return Assessment {
                gate: Gate::Open,
                waiting,
                condition: Condition::new(
                    ConditionStatus::True,
                    "CapacityAvailable",
                    "no Job waits for capacity",
                ),
            };
        }
        Some((_, JobCapacity::ScaleUp(message))) => false_(
            "WaitingForScaleUp",
            waiting_note("the cluster is adding a node", message),
        ),
        Some((_, JobCapacity::Queued(message))) => false_(
            "QueuedByKueue",
            waiting_note(
                "suspended by Kueue until admitted",
                message.as_deref().unwrap_or("no Workload condition yet"),
            ),
        ),
        Some((_, JobCapacity::Unschedulable(message))) => false_(
            "Unschedulable",
            waiting_note("pods are Unschedulable", message),
        ),
        // Older generations' stuck Jobs wait as well; they stop nothing.
        Some((_, JobCapacity::NoScaleUp(message) | JobCapacity::Inadmissible(message))) => false_(
            "WaitingForCapacity",
            waiting_note("Jobs of an earlier spec that do not fit", message),
        ),
    };
    Assessment {
        gate: Gate::AtMost(room),
        waiting,
        condition,
    }
}

/// The condition to write (absent until capacity first fell short, then kept) and the event
/// of a change of its reason.
pub fn after_assess(
    previous: Option<&Condition>,
    assessment: &Assessment,
) -> (Option<Condition>, Option<Event>) {
    let next = &assessment.condition;
    let Some(previous) = previous else {
        if next.status == ConditionStatus::True {
            return (None, None);
        }
        return (Some(next.clone()), Some(capacity_event(next)));
    };
    let event = (previous.reason != next.reason).then(|| capacity_event(next));
    (Some(next.clone()), event)
}

/// The event of a capacity transition: the condition's reason and message; a Warning when
/// creation stopped.
pub fn capacity_event(condition: &Condition) -> Event {
    let type_ = match condition.reason.as_str() {
        "NoScaleUp" | "KueueInadmissible" | "QuotaExceeded" => EventType::Warning,
        _ => EventType::Normal,
    };
    Event {
        type_,
        reason: event_reason(&condition.reason),
        note: condition.message.clone(),
        action: "CapacityChanged".into(),
        reporter: Reporter::ScaleHandler,
    }
}

fn event_reason(reason: &str) -> &'static str {
    match reason {
        "NoScaleUp" => "NoScaleUp",
        "KueueInadmissible" => "KueueInadmissible",
        "QuotaExceeded" => "QuotaExceeded",
        "WaitingForScaleUp" => "WaitingForScaleUp",
        "QueuedByKueue" => "QueuedByKueue",
        "Unschedulable" => "Unschedulable",
        "WaitingForCapacity" => "WaitingForCapacity",
        _ => "CapacityAvailable",
    }
}

#[cfg(test)]
mod tests;
