//! The ScaledJob's conditions and the Kubernetes events their transitions imply, as data
//! (keda-compat §2.2, §5.1, §5.2). Reasons, messages, actions and reporting names are KEDA's, to
//! the letter: dashboards and alerts match on them.

use std::fmt;

mod last_active;
pub use last_active::{DEFAULT_REFRESH as LAST_ACTIVE_REFRESH, last_active_due};

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl ConditionStatus {
    /// The status as written in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    /// Parses the API spelling; anything else reads as Unknown.
    pub fn parse(value: &str) -> Self {
        match value {
            "True" => Self::True,
            "False" => Self::False,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One condition: status, reason and message (empty reason/message as KEDA writes them
/// initially).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The status.
    pub status: ConditionStatus,
    /// The reason (empty for the initial conditions).
    pub reason: String,
    /// The message (empty for the initial conditions).
    pub message: String,
}

impl Condition {
    /// A condition.
    pub fn new(status: ConditionStatus, reason: &str, message: &str) -> Self {
        Self {
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// jobtide's condition type for the crash-loop guard.
pub const CRASH_LOOP_BACKOFF: &str = "CrashLoopBackOff";

/// The four conditions of a ScaledJob (KEDA's), and jobtide's crash-loop guard condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    /// `Ready`.
    pub ready: Condition,
    /// `Active`.
    pub active: Condition,
    /// `Fallback` (stays Unknown for ScaledJobs).
    pub fallback: Condition,
    /// `Paused`.
    pub paused: Condition,
    /// `CrashLoopBackOff` (jobtide's, see [`crate::crashloop`]): written once the guard first
    /// trips, absent before.
    pub crash_loop_backoff: Option<Condition>,
    /// `CapacityAvailable` (jobtide's, see [`crate::capacity`]): written once capacity first
    /// fell short, absent before.
    pub capacity: Option<Condition>,
}

impl Conditions {
    /// KEDA's initial conditions: Ready, Active and Fallback Unknown, Paused False, no reasons.
    pub fn initial() -> Self {
        Self {
            ready: Condition::new(ConditionStatus::Unknown, "", ""),
            active: Condition::new(ConditionStatus::Unknown, "", ""),
            fallback: Condition::new(ConditionStatus::Unknown, "", ""),
            paused: Condition::new(ConditionStatus::False, "", ""),
            crash_loop_backoff: None,
            capacity: None,
        }
    }

    /// `(type, condition)` in KEDA's order, then jobtide's when present, for writing
    /// `status.conditions`.
    pub fn by_type(&self) -> Vec<(&'static str, &Condition)> {
        let mut all = vec![
            ("Ready", &self.ready),
            ("Active", &self.active),
            ("Fallback", &self.fallback),
            ("Paused", &self.paused),
        ];
        if let Some(backoff) = &self.crash_loop_backoff {
            all.push((CRASH_LOOP_BACKOFF, backoff));
        }
        if let Some(capacity) = &self.capacity {
            all.push((crate::capacity::CAPACITY_AVAILABLE, capacity));
        }
        all
    }
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

/// Which of KEDA's recorders emits an event (its `reportingController`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// The reconciler: `keda-operator`.
    Operator,
    /// The scale loop and the Job executor: `scale-handler`.
    ScaleHandler,
}

impl Reporter {
    /// The recorder name KEDA uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Operator => "keda-operator",
            Self::ScaleHandler => "scale-handler",
        }
    }
}

/// An event about the ScaledJob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Normal or Warning.
    pub type_: EventType,
    /// The reason, e.g. `KEDAJobsCreated`.
    pub reason: &'static str,
    /// The note (message).
    pub note: String,
    /// The action (KEDA's controller-emitted events use the message text).
    pub action: String,
    /// The recorder.
    pub reporter: Reporter,
}

impl Event {
    fn new(type_: EventType, reporter: Reporter, reason: &'static str, note: String) -> Self {
        Self {
            type_,
            reason,
            action: note.clone(),
            note,
            reporter,
        }
    }

    /// `KEDAScalersStarted` / `Started scalers watch` (action `ScalersWatchStarted`).
    pub fn scalers_started() -> Self {
        Self {
            action: "ScalersWatchStarted".into(),
            ..Self::new(
                EventType::Normal,
                Reporter::ScaleHandler,
                "KEDAScalersStarted",
                "Started scalers watch".into(),
            )
        }
    }
    /// `KEDAScalersStarted` / `Scaler <type> is built`, per trigger at each scaler build.
    pub fn scaler_built(trigger_type: &str) -> Self {
        Self::new(
            EventType::Normal,
            Reporter::ScaleHandler,
            "KEDAScalersStarted",
            format!("Scaler {trigger_type} is built"),
        )
    }
    /// `KEDAScalersStopped` / `Stopped scalers watch`.
    pub fn scalers_stopped() -> Self {
        Self::new(
            EventType::Normal,
            Reporter::ScaleHandler,
            "KEDAScalersStopped",
            "Stopped scalers watch".into(),
        )
    }
    /// Warning `KEDAScalerFailed` with the error text.
    pub fn scaler_failed(error: &str) -> Self {
        Self::new(
            EventType::Warning,
            Reporter::ScaleHandler,
            "KEDAScalerFailed",
            error.to_owned(),
        )
    }
    /// Warning `MessageDeadLettered` (dispatch mode): a message's Jobs failed `maxAttempts`
    /// times and it went to the dead-letter topic.
    pub fn message_dead_lettered(note: String) -> Self {
        Self::new(
            EventType::Warning,
            Reporter::ScaleHandler,
            "MessageDeadLettered",
            note,
        )
    }
    /// Warning `MessageFailed` (dispatch mode): a message's Jobs failed `maxAttempts` times and
    /// there is no dead-letter topic; its offset moves on.
    pub fn message_failed(note: String) -> Self {
        Self::new(
            EventType::Warning,
            Reporter::ScaleHandler,
            "MessageFailed",
            note,
        )
    }
    /// `ScaledJobReady` / `ScaledJob is ready for scaling`.
    pub fn ready() -> Self {
        Self::new(
            EventType::Normal,
            Reporter::Operator,
            "ScaledJobReady",
            "ScaledJob is ready for scaling".into(),
        )
    }
    /// Warning `ScaledJobCheckFailed` with the step message.
    pub fn check_failed(message: &str) -> Self {
        Self::new(
            EventType::Warning,
            Reporter::Operator,
            "ScaledJobCheckFailed",
            message.to_owned(),
        )
    }
    /// Warning `ScaledJobUpdateFailed` with the error text.
    pub fn update_failed(error: &str) -> Self {
        Self::new(
            EventType::Warning,
            Reporter::Operator,
            "ScaledJobUpdateFailed",
            error.to_owned(),
        )
    }
    /// Warning `CrashLoopBackOff` (jobtide's crash-loop guard tripped) with why and how long.
    pub fn crash_loop_backoff(note: String) -> Self {
        Self::new(
            EventType::Warning,
            Reporter::ScaleHandler,
            "CrashLoopBackOff",
            note,
        )
    }
    /// Normal `CrashLoopBackOffEnded`: Jobs are created again.
    pub fn crash_loop_ended(why: &str) -> Self {
        Self::new(
            EventType::Normal,
            Reporter::ScaleHandler,
            "CrashLoopBackOffEnded",
            format!("Jobs are created again: {why}"),
        )
    }
    /// `ScaledJobPaused` / `ScaledJob is paused`.
    pub fn paused() -> Self {
        Self::new(
            EventType::Normal,
            Reporter::Operator,
            "ScaledJobPaused",
            "ScaledJob is paused".into(),
        )
    }
    /// `ScaledJobUnpaused` / `ScaledJob is unpaused`.
    pub fn unpaused() -> Self {
        Self::new(
            EventType::Normal,
            Reporter::Operator,
            "ScaledJobUnpaused",
            "ScaledJob is unpaused".into(),
        )
    }
    /// `ScaledJobActive` / `Scaling is performed because triggers are active`.
    pub fn active() -> Self {
        Self::new(
            EventType::Normal,
            Reporter::ScaleHandler,
            "ScaledJobActive",
            ACTIVE_MESSAGE.into(),
        )
    }
    /// `ScaledJobInactive` / `Scaling is not performed because triggers are not active`.
    pub fn inactive() -> Self {
        Self::new(
            EventType::Normal,
            Reporter::ScaleHandler,
            "ScaledJobInactive",
            NOT_ACTIVE_MESSAGE.into(),
        )
    }
    /// `KEDAJobsCreated` / `Created <n> jobs` (n = the attempted count).
    pub fn jobs_created(attempted: i64) -> Self {
        Self::new(
            EventType::Normal,
            Reporter::ScaleHandler,
            "KEDAJobsCreated",
            format!("Created {attempted} jobs"),
        )
    }
    /// Warning `KEDAJobCreateFailed` / `Failed to create job <generateName>: <err>`.
    pub fn job_create_failed(generate_name: &str, error: &str) -> Self {
        Self::new(
            EventType::Warning,
            Reporter::ScaleHandler,
            "KEDAJobCreateFailed",
            format!("Failed to create job {generate_name}: {error}"),
        )
    }
    /// `ScaledJobRolloutCleanupStarted`.
    pub fn rollout_cleanup_started(jobs: usize) -> Self {
        Self::new(
            EventType::Normal,
            Reporter::Operator,
            "ScaledJobRolloutCleanupStarted",
            format!("Deleting {jobs} jobs owned by the previous version of the scaledJob"),
        )
    }
    /// `ScaledJobRolloutCleanupCompleted`.
    pub fn rollout_cleanup_completed(jobs: usize) -> Self {
        Self::new(
            EventType::Normal,
            Reporter::Operator,
            "ScaledJobRolloutCleanupCompleted",
            format!("Deleted {jobs} jobs owned by the previous version of the scaledJob"),
        )
    }
    /// Warning `ScaledJobRolloutCleanupFailed` / `Failed to delete job <name>: <err>`.
    pub fn rollout_cleanup_failed(job: &str, error: &str) -> Self {
        Self::new(
            EventType::Warning,
            Reporter::Operator,
            "ScaledJobRolloutCleanupFailed",
            format!("Failed to delete job {job}: {error}"),
        )
    }
    /// Warning `ScaledJobDeleted` / `ScaledJob was deleted`.
    pub fn deleted() -> Self {
        Self::new(
            EventType::Warning,
            Reporter::Operator,
            "ScaledJobDeleted",
            "ScaledJob was deleted".into(),
        )
    }
}

/// The reconcile's success message (sic: "to scaling").
pub const RECONCILE_READY_MESSAGE: &str = "ScaledJob is defined correctly and is ready to scaling";
/// The poll's ready message.
pub const POLL_READY_MESSAGE: &str = "ScaledJob is defined correctly and is ready for scaling";
/// The reconcile message while paused.
pub const PAUSED_RECONCILE_MESSAGE: &str = "ScaledJob is paused, skipping reconcile loop";
const ACTIVE_MESSAGE: &str = "Scaling is performed because triggers are active";
const NOT_ACTIVE_MESSAGE: &str = "Scaling is not performed because triggers are not active";

/// How a reconcile ended (§2.2 steps 7–8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// Every step passed. `paused` is the pause annotation's verdict.
    Ready {
        /// Whether the ScaledJob is paused.
        paused: bool,
    },
    /// A step failed with this message (e.g. `Failed to ensure ScaledJob is correctly created`).
    Failed {
        /// The step message.
        message: String,
    },
}

/// New conditions and events after a reconcile.
pub fn after_reconcile(
    previous: &Conditions,
    outcome: &ReconcileOutcome,
) -> (Conditions, Vec<Event>) {
    let mut next = previous.clone();
    let mut events = Vec::new();
    match outcome {
        ReconcileOutcome::Ready { paused } => {
            if *paused {
                if previous.paused.status != ConditionStatus::True {
                    next.paused = Condition::new(
                        ConditionStatus::True,
                        "ScaledJobPaused",
                        "ScaledJob is paused",
                    );
                    events.push(Event::paused());
                }
            } else if previous.paused.status == ConditionStatus::True {
                next.paused = Condition::new(
                    ConditionStatus::False,
                    "ScaledJobUnpaused",
                    "ScaledJob is unpaused",
                );
                events.push(Event::unpaused());
            }
            if previous.ready.status != ConditionStatus::True {
                events.push(Event::ready());
            }
            let message = if *paused {
                PAUSED_RECONCILE_MESSAGE
            } else {
                RECONCILE_READY_MESSAGE
            };
            next.ready = Condition::new(ConditionStatus::True, "ScaledJobReady", message);
        }
        ReconcileOutcome::Failed { message } => {
            next.ready = Condition::new(ConditionStatus::False, "ScaledJobCheckFailed", message);
            next.active = Condition::new(
                ConditionStatus::Unknown,
                "UnknownState",
                "ScaledJob check failed",
            );
            events.push(Event::check_failed(message));
        }
    }
    (next, events)
}

/// What a poll observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    /// The error text of every trigger that failed this poll, in trigger order.
    pub trigger_errors: Vec<String>,
    /// The combined activity (forced when Min > 0).
    pub is_active: bool,
}

/// New conditions and events after a poll: `KEDAScalerFailed` per failed trigger, Ready from the
/// errors and activity, Active and its transition events.
pub fn after_poll(previous: &Conditions, outcome: &PollOutcome) -> (Conditions, Vec<Event>) {
    let mut next = previous.clone();
    let mut events: Vec<Event> = outcome
        .trigger_errors
        .iter()
        .map(|e| Event::scaler_failed(e))
        .collect();
    next.ready = match (outcome.trigger_errors.is_empty(), outcome.is_active) {
        (true, _) => Condition::new(ConditionStatus::True, "ScaledJobReady", POLL_READY_MESSAGE),
        (false, true) => Condition::new(
            ConditionStatus::Unknown,
            "PartialTriggerError",
            "Some triggers defined in ScaledJob are not working correctly",
        ),
        (false, false) => Condition::new(
            ConditionStatus::False,
            "TriggerError",
            "Triggers defined in ScaledJob are not working correctly",
        ),
    };
    if outcome.is_active {
        next.active = Condition::new(ConditionStatus::True, "ScalerActive", ACTIVE_MESSAGE);
        if previous.active.status != ConditionStatus::True {
            events.push(Event::active());
        }
    } else {
        next.active = Condition::new(
            ConditionStatus::False,
            "ScalerNotActive",
            NOT_ACTIVE_MESSAGE,
        );
        if previous.active.status != ConditionStatus::False {
            events.push(Event::inactive());
        }
    }
    (next, events)
}

#[cfg(test)]
mod tests;
