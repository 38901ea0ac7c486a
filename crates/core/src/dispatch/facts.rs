//! What the ledger is told (the policy, messages read, Jobs observed) and what it asks the
//! controller to do ([`Action`]).

/// When an offset counts as done for the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitOn {
    /// When the message's Job succeeded or the message was dead-lettered (or its failure
    /// recorded): at-least-once processing; a restart re-reads what is unfinished.
    #[default]
    Complete,
    /// When the message's first Job was created: the topic's lag shows what waits for a Job, not
    /// what is running. Retries and dead letters still happen while the operator runs, but a
    /// restart forgets the Jobs below the committed offset: their failures are neither retried
    /// nor dead-lettered, and they no longer count against [`DispatchPolicy::max_in_flight`].
    Create,
}

/// A ScaledJob's dispatch settings, from its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchPolicy {
    /// Jobs per message at most (the first and its retries); 0 counts as 1.
    pub max_attempts: u32,
    /// Whether a message whose attempts all failed is produced to the dead-letter topic
    /// ([`Action::DeadLetter`]) rather than only recorded ([`Action::RecordFailure`]).
    pub dead_letter: bool,
    /// When the commit may pass an offset.
    pub commit_on: CommitOn,
    /// Messages in flight at most (`maxReplicaCount`): Jobs to create or running, retries
    /// waiting for their Job, dead letters not yet confirmed. 0 dispatches nothing.
    pub max_in_flight: u32,
}

/// One record read from Kafka, as the Job will get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (milliseconds since the epoch), when it has one.
    pub timestamp_ms: Option<i64>,
    /// Its key; `None` is a null key (not an empty one).
    pub key: Option<Vec<u8>>,
    /// Its value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Its headers in order (a name may repeat; a value may be null).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// How a Job stands, from its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished (pending or running).
    Running,
    /// Condition `Complete`.
    Succeeded,
    /// Condition `Failed` (its backoffLimit or deadline spent).
    Failed {
        /// The condition's reason and message, for the dead letter or the event.
        reason: String,
    },
}

/// A dispatched Job as the watch (or, after a restart, the list) shows it: its coordinates from
/// its labels ([`JobCoordinates`](super::JobCoordinates)), its outcome from its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedJob {
    /// The message's partition.
    pub partition: i32,
    /// The message's offset.
    pub offset: i64,
    /// The attempt, from 1 (0 is no Job the ledger made: ignored).
    pub attempt: u32,
    /// Its outcome.
    pub outcome: Outcome,
    /// It carries [`DEAD_LETTERED_ANNOTATION`](super::DEAD_LETTERED_ANNOTATION): the message was
    /// dead-lettered or its failure recorded, before a restart perhaps.
    pub dead_lettered: bool,
}

/// What the ledger asks of the controller. Each is returned once; the ledger expects to hear
/// back through [`Ledger::created`](super::Ledger::created),
/// [`Ledger::observed`](super::Ledger::observed) and
/// [`Ledger::dead_lettered`](super::Ledger::dead_lettered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the Job [`job_name`](super::job_name)`(.., partition, offset, attempt)` from
    /// [`Ledger::message`](super::Ledger::message)`(partition, offset)`; `AlreadyExists` means
    /// it was created before (report it as created).
    CreateJob {
        /// The message's partition.
        partition: i32,
        /// The message's offset.
        offset: i64,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// Produce the message ([`Ledger::message`](super::Ledger::message)) to the dead-letter
    /// topic, report it with [`Ledger::dead_lettered`](super::Ledger::dead_lettered), then set
    /// [`DEAD_LETTERED_ANNOTATION`](super::DEAD_LETTERED_ANNOTATION) on the last Job.
    DeadLetter {
        /// The message's partition.
        partition: i32,
        /// The message's offset.
        offset: i64,
        /// Jobs run for it (the last one's attempt).
        attempts: u32,
        /// Why the last one failed.
        reason: String,
    },
    /// No dead-letter topic (or the message is no longer in the topic): emit the event, count
    /// the metric, set [`DEAD_LETTERED_ANNOTATION`](super::DEAD_LETTERED_ANNOTATION) on the last
    /// Job. The ledger counts the offset as done at once (nothing waits for a confirmation), so
    /// record it before the next commit: a failure committed past unrecorded is never recorded.
    RecordFailure {
        /// The message's partition.
        partition: i32,
        /// The message's offset.
        offset: i64,
        /// Jobs run for it.
        attempts: u32,
        /// Why the last one failed.
        reason: String,
    },
}
