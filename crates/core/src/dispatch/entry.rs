//! One message's way through dispatch, as a small state machine: queued → Job to create →
//! running → (failed → Job for the next attempt …) → done, or → dead-lettering → done.
//!
//! An action that needs the message's payload (a Job to create, a dead letter) goes out only
//! while the entry holds the message; an entry rebuilt from its Jobs after a restart holds none
//! until the message is read again, so its action waits until then ([`Entry::receive`]).

use super::facts::{Action, CommitOn, DispatchPolicy, Message, ObservedJob, Outcome};

/// Where a message stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    /// Read while the in-flight cap was reached, or not yet decided: no Job asked for.
    Queued,
    /// The Job for `attempt` is to be created; `issued`: [`Action::CreateJob`] went out.
    Creating { attempt: u32, issued: bool },
    /// The Job for `attempt` exists and hasn't finished.
    Running { attempt: u32 },
    /// Every attempt failed; the message goes to the dead-letter topic. `issued`: the
    /// [`Action::DeadLetter`] went out.
    DeadLettering {
        attempts: u32,
        reason: String,
        issued: bool,
    },
    /// Its Job succeeded, or it was dead-lettered, or its failure recorded.
    Done,
}

/// How an entry counts against the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Tally {
    /// Waiting for a free slot.
    pub queued: usize,
    /// Holding a slot.
    pub in_flight: usize,
    /// Holding a slot and waiting for its message to be read again.
    pub awaiting: usize,
}

/// One offset's state, and its message while an action may still need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub state: State,
    pub message: Option<Message>,
    /// Kafka delivered later offsets of the partition but not this one since the restart: the
    /// message is gone (retention, compaction), so it can't be retried or dead-lettered.
    pub gone: bool,
}

impl Tally {
    pub fn plus(self, other: Self) -> Self {
        Self {
            queued: self.queued.saturating_add(other.queued),
            in_flight: self.in_flight.saturating_add(other.in_flight),
            awaiting: self.awaiting.saturating_add(other.awaiting),
        }
    }

    pub fn minus(self, other: Self) -> Self {
        Self {
            queued: self.queued.saturating_sub(other.queued),
            in_flight: self.in_flight.saturating_sub(other.in_flight),
            awaiting: self.awaiting.saturating_sub(other.awaiting),
        }
    }
}

impl Entry {
    /// A message just read, waiting for a slot.
    pub fn queued(message: Message) -> Self {
        Self {
            state: State::Queued,
            message: Some(message),
            gone: false,
        }
    }

    /// An offset known only from its Jobs (after a restart), before their observation.
    pub fn unknown(gone: bool) -> Self {
        Self {
            state: State::Queued,
            message: None,
            gone,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the commit may pass this offset.
    pub fn settled(&self, commit_on: CommitOn) -> bool {
        match (&self.state, commit_on) {
            (State::Done, _) => true,
            (State::Queued | State::Creating { attempt: ..=1, .. }, CommitOn::Create)
            | (_, CommitOn::Complete) => false,
            (State::Creating { .. } | State::Running { .. } | State::DeadLettering { .. }, _) => {
                true
            }
        }
    }

    pub fn tally(&self) -> Tally {
        match &self.state {
            State::Queued => Tally {
                queued: 1,
                ..Tally::default()
            },
            State::Creating { issued, .. } | State::DeadLettering { issued, .. } => Tally {
                in_flight: 1,
                awaiting: usize::from(!issued),
                ..Tally::default()
            },
            State::Running { .. } => Tally {
                in_flight: 1,
                ..Tally::default()
            },
            State::Done => Tally::default(),
        }
    }

    /// A free slot: the first Job of a queued message.
    pub fn start(&mut self, partition: i32, offset: i64) -> Option<Action> {
        if self.state != State::Queued || self.message.is_none() {
            return None;
        }
        self.state = State::Creating {
            attempt: 1,
            issued: false,
        };
        self.issue(partition, offset)
    }

    /// The message was read (again): keep it while it may be needed, and send what waited for it.
    pub fn receive(&mut self, message: Message, partition: i32, offset: i64) -> Option<Action> {
        if self.is_done() || self.message.is_some() {
            return None;
        }
        self.message = Some(message);
        self.issue(partition, offset)
    }

    /// Kafka went past this offset without delivering it.
    pub fn pass(&mut self, partition: i32, offset: i64) -> Option<Action> {
        if self.is_done() || self.message.is_some() {
            return None;
        }
        self.gone = true;
        let (attempts, reason) = match &self.state {
            State::Creating {
                attempt,
                issued: false,
            } => (
                attempt.saturating_sub(1),
                format!("attempt {} failed", attempt.saturating_sub(1)),
            ),
            State::DeadLettering {
                attempts,
                reason,
                issued: false,
            } => (*attempts, reason.clone()),
            _ => return None,
        };
        Some(self.record(partition, offset, attempts, &reason))
    }

    /// The Job for `attempt` exists.
    pub fn created(&mut self, attempt: u32) {
        if let State::Creating {
            attempt: wanted, ..
        } = self.state
            && wanted == attempt
        {
            self.state = State::Running { attempt };
        }
    }

    /// The dead-letter produce was confirmed; whether this ended the message.
    pub fn dead_lettered(&mut self) -> bool {
        let was = matches!(self.state, State::DeadLettering { .. });
        if was {
            self.finish();
        }
        was
    }

    /// An observation of the Job for `job.attempt`: older attempts than the one in hand are
    /// stale, and an observation already applied changes nothing (a failure moved the entry to
    /// the next attempt or to dead-lettering, which the same failure no longer matches).
    pub fn observe(
        &mut self,
        job: &ObservedJob,
        policy: &DispatchPolicy,
        partition: i32,
        offset: i64,
    ) -> Option<Action> {
        let current = match &self.state {
            State::Done => return None,
            State::DeadLettering { .. } => {
                if job.dead_lettered {
                    self.finish();
                }
                return None;
            }
            State::Queued => 1,
            State::Creating { attempt, .. } | State::Running { attempt } => *attempt,
        };
        if job.attempt == 0 || job.attempt < current {
            return None;
        }
        if job.dead_lettered {
            self.finish();
            return None;
        }
        match &job.outcome {
            Outcome::Running => {
                self.state = State::Running {
                    attempt: job.attempt,
                };
                None
            }
            Outcome::Succeeded => {
                self.finish();
                None
            }
            Outcome::Failed { reason } => {
                self.failed(policy, partition, offset, job.attempt, reason)
            }
        }
    }

    /// The Job for `attempt` failed: the next attempt, the dead-letter topic, or the record.
    fn failed(
        &mut self,
        policy: &DispatchPolicy,
        partition: i32,
        offset: i64,
        attempt: u32,
        reason: &str,
    ) -> Option<Action> {
        if self.gone {
            return Some(self.record(partition, offset, attempt, reason));
        }
        if attempt < policy.max_attempts.max(1) {
            self.state = State::Creating {
                attempt: attempt + 1,
                issued: false,
            };
        } else if policy.dead_letter {
            self.state = State::DeadLettering {
                attempts: attempt,
                reason: reason.to_owned(),
                issued: false,
            };
        } else {
            return Some(self.record(partition, offset, attempt, reason));
        }
        self.issue(partition, offset)
    }

    /// Sends the action the state waits for, if the message is in hand.
    fn issue(&mut self, partition: i32, offset: i64) -> Option<Action> {
        self.message.as_ref()?;
        match &mut self.state {
            State::Creating { attempt, issued } if !*issued => {
                *issued = true;
                Some(Action::CreateJob {
                    partition,
                    offset,
                    attempt: *attempt,
                })
            }
            State::DeadLettering {
                attempts,
                reason,
                issued,
            } if !*issued => {
                *issued = true;
                Some(Action::DeadLetter {
                    partition,
                    offset,
                    attempts: *attempts,
                    reason: reason.clone(),
                })
            }
            _ => None,
        }
    }

    fn record(&mut self, partition: i32, offset: i64, attempts: u32, reason: &str) -> Action {
        let reason = if self.gone {
            format!("{reason}; the message is no longer in the topic (retention or compaction)")
        } else {
            reason.to_owned()
        };
        self.finish();
        Action::RecordFailure {
            partition,
            offset,
            attempts,
            reason,
        }
    }

    fn finish(&mut self) {
        self.state = State::Done;
        self.message = None;
    }
}
