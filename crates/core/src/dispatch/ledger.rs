//! The per-ScaledJob ledger: which messages have a Job, which wait for a retry or a dead letter,
//! how many are in flight, and how far each partition's commit may go.
//!
//! The ledger is memory over a truth kept elsewhere: the Jobs (named by
//! [`job_name`](super::job_name), labelled with their coordinates) and the group's committed
//! offsets. [`Ledger::rebuild`] recovers it from both after a restart; nothing it holds needs
//! saving.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::entry::{Entry, Tally};
use super::facts::{Action, DispatchPolicy, Message, ObservedJob, Outcome};

/// One ScaledJob's dispatch state.
#[derive(Debug, Clone)]
pub struct Ledger {
    policy: DispatchPolicy,
    partitions: BTreeMap<i32, Partition>,
    /// Offsets read while the cap was reached, in the order read (an offset that left the queue
    /// another way, a Job found for it, is skipped when its turn comes).
    queue: VecDeque<(i32, i64)>,
    tally: Tally,
    dead_lettered: u64,
    failed: u64,
}

#[derive(Debug, Clone, Default)]
struct Partition {
    /// The last commit (or where consumption started): where to read from after a restart.
    committed: Option<i64>,
    /// One past the highest offset read since the ledger was built.
    read_to: Option<i64>,
    /// Every offset read or found in a Job from `committed` on (and, with
    /// [`CommitOn::Create`](super::CommitOn::Create), those below it still in flight).
    entries: BTreeMap<i64, Entry>,
    /// Offsets known from their Jobs whose message hasn't been read again yet.
    unread: BTreeSet<i64>,
}

/// What the ScaledJob's status shows of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerStatus {
    /// The committed offset per partition.
    pub committed: BTreeMap<i32, i64>,
    /// Messages in flight ([`Ledger::in_flight`]).
    pub in_flight: usize,
    /// Messages read that wait for a free slot.
    pub queued: usize,
    /// Messages dead-lettered since the ledger was built.
    pub dead_lettered: u64,
    /// Messages whose failure was recorded since the ledger was built.
    pub failed: u64,
}

impl Ledger {
    /// An empty ledger: nothing committed, nothing read.
    pub fn new(policy: DispatchPolicy) -> Self {
        Self {
            policy,
            partitions: BTreeMap::new(),
            queue: VecDeque::new(),
            tally: Tally::default(),
            dead_lettered: 0,
            failed: 0,
        }
    }

    /// The ledger after a restart, from `committed` (per partition the next offset to read: the
    /// group's committed offset, or where the reset policy starts) and the Jobs found by label.
    ///
    /// Jobs below their partition's committed offset are history. Above it, each offset's
    /// highest attempt decides: running → in flight; succeeded or dead-lettered → done; failed →
    /// the next attempt, a dead letter or a recorded failure, as after [`Ledger::observed`].
    ///
    /// # Why actions wait for the message
    /// Consumption resumes at the committed offset ([`Ledger::fetch_position`]), never beyond
    /// it: a crash may have left Jobs for offsets 5 and 7 but not 6, and 6 must not be skipped.
    /// The ledger holds no payloads after a restart, so a retry's Job or a dead letter waits
    /// until its message is read again and is returned by [`Ledger::received`] then (a message
    /// read again that needs nothing gets nothing). Only [`Action::RecordFailure`], which needs
    /// no payload, is returned here.
    pub fn rebuild(
        policy: DispatchPolicy,
        committed: &BTreeMap<i32, i64>,
        jobs: &[ObservedJob],
    ) -> (Self, Vec<Action>) {
        let mut ledger = Self::new(policy);
        for (&partition, &offset) in committed {
            ledger.partitions.insert(
                partition,
                Partition {
                    committed: Some(offset),
                    ..Partition::default()
                },
            );
        }
        let rank = |job: &ObservedJob| {
            let outcome = match job.outcome {
                Outcome::Running => 0,
                Outcome::Failed { .. } => 1,
                Outcome::Succeeded => 2,
            };
            (job.attempt, job.dead_lettered, outcome)
        };
        let mut newest: BTreeMap<(i32, i64), &ObservedJob> = BTreeMap::new();
        for job in jobs {
            let slot = newest.entry((job.partition, job.offset)).or_insert(job);
            if rank(job) > rank(slot) {
                *slot = job;
            }
        }
        let actions = newest
            .into_values()
            .flat_map(|job| ledger.observed(job.clone()))
            .collect();
        (ledger, actions)
    }

    /// The policy in force.
    pub fn policy(&self) -> &DispatchPolicy {
        &self.policy
    }

    /// A changed spec: a higher cap may start queued messages at once; attempts and dead
    /// letters apply to failures from now on.
    pub fn set_policy(&mut self, policy: DispatchPolicy) -> Vec<Action> {
        self.policy = policy;
        let mut actions = Vec::new();
        self.release(&mut actions);
        actions
    }

    /// Whether to keep reading: fewer messages in flight or queued than the cap, or a message
    /// still to be read again for its retry or dead letter (else a full cap of such messages
    /// would wait forever). The controller pauses the consumer when this is false.
    pub fn may_receive(&self) -> bool {
        self.tally.in_flight + self.tally.queued < self.cap() || self.tally.awaiting > 0
    }

    /// A message read from Kafka. A new offset gets its first Job, or waits in the queue while
    /// the cap is reached; a known one gets what waited for it, or nothing. Below the committed
    /// offset: ignored. Offsets known from Jobs that Kafka went past without delivering them are
    /// gone from the topic: a retry or dead letter waiting for them becomes a recorded failure.
    pub fn received(&mut self, message: Message) -> Vec<Action> {
        let (partition, offset) = (message.partition, message.offset);
        let mut actions = Vec::new();
        let part = self.partitions.entry(partition).or_default();
        if part.committed.is_some_and(|committed| offset < committed) {
            return actions;
        }
        let next = offset.saturating_add(1);
        part.read_to = Some(part.read_to.map_or(next, |read_to| read_to.max(next)));
        let later = part.unread.split_off(&offset);
        let passed = std::mem::replace(&mut part.unread, later);
        part.unread.remove(&offset);
        let known = part.entries.contains_key(&offset);
        for gone in passed {
            self.update(
                partition,
                gone,
                |entry| entry.pass(partition, gone),
                &mut actions,
            );
        }
        if known {
            self.update(
                partition,
                offset,
                |entry| entry.receive(message, partition, offset),
                &mut actions,
            );
        } else {
            self.insert(partition, offset, Entry::queued(message));
            self.queue.push_back((partition, offset));
        }
        self.release(&mut actions);
        actions
    }

    /// The Job for `attempt` exists (created, or `AlreadyExists`): with
    /// [`CommitOn::Create`](super::CommitOn::Create) the commit may pass it.
    pub fn created(&mut self, partition: i32, offset: i64, attempt: u32) {
        self.update(
            partition,
            offset,
            |entry| {
                entry.created(attempt);
                None
            },
            &mut Vec::new(),
        );
    }

    /// A Job as the watch shows it. Succeeded → done; failed → the next attempt, or (attempts
    /// spent) a dead letter or a recorded failure. Older attempts and repeated observations
    /// change nothing. A Job for an offset the ledger doesn't know (at or above the committed
    /// offset) is taken in as [`Ledger::rebuild`] would.
    pub fn observed(&mut self, job: ObservedJob) -> Vec<Action> {
        let (partition, offset) = (job.partition, job.offset);
        let mut actions = Vec::new();
        if job.attempt == 0 {
            return actions;
        }
        let part = self.partitions.entry(partition).or_default();
        if !part.entries.contains_key(&offset) {
            if part.committed.is_some_and(|committed| offset < committed) {
                return actions;
            }
            let gone = part.read_to.is_some_and(|read_to| offset < read_to);
            if !gone {
                part.unread.insert(offset);
            }
            self.insert(partition, offset, Entry::unknown(gone));
        }
        let policy = self.policy;
        self.update(
            partition,
            offset,
            |entry| entry.observe(&job, &policy, partition, offset),
            &mut actions,
        );
        self.release(&mut actions);
        actions
    }

    /// The dead letter was produced: the message is done.
    pub fn dead_lettered(&mut self, partition: i32, offset: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut confirmed = false;
        self.update(
            partition,
            offset,
            |entry| {
                confirmed = entry.dead_lettered();
                None
            },
            &mut actions,
        );
        if confirmed {
            self.dead_lettered += 1;
        }
        self.release(&mut actions);
        actions
    }

    /// The offsets to commit: per partition whose watermark moved past its last commit, the
    /// lowest offset not done, or, when none is outstanding, one past the highest offset read
    /// (Kafka offsets have gaps — transaction markers, compaction — so `offset + 1` of the last
    /// done message may never exist). Never past an offset not read since the ledger was built.
    pub fn commits(&self) -> Vec<(i32, i64)> {
        let commit_on = self.policy.commit_on;
        self.partitions
            .iter()
            .filter_map(|(&partition, part)| {
                let read_to = part.read_to?;
                let outstanding = part
                    .entries
                    .iter()
                    .find(|(_, entry)| !entry.settled(commit_on))
                    .map_or(read_to, |(&offset, _)| offset);
                let watermark = outstanding.min(read_to);
                part.committed
                    .is_none_or(|committed| watermark > committed)
                    .then_some((partition, watermark))
            })
            .collect()
    }

    /// `offset` was committed for `partition`: the done entries below it are forgotten (a late
    /// confirmation of an older commit changes nothing).
    pub fn committed(&mut self, partition: i32, offset: i64) {
        let part = self.partitions.entry(partition).or_default();
        if part.committed.is_some_and(|committed| offset <= committed) {
            return;
        }
        part.committed = Some(offset);
        let above = part.entries.split_off(&offset);
        let below = std::mem::replace(&mut part.entries, above);
        // With CommitOn::Create, Jobs below the commit may still be running: keep them.
        part.entries
            .extend(below.into_iter().filter(|(_, entry)| !entry.is_done()));
        part.unread = part.unread.split_off(&offset);
    }

    /// The message at `(partition, offset)`, while the ledger holds it (from its reading until
    /// it is done).
    pub fn message(&self, partition: i32, offset: i64) -> Option<&Message> {
        self.partitions
            .get(&partition)?
            .entries
            .get(&offset)?
            .message
            .as_ref()
    }

    /// Where to start reading `partition`: its committed offset. `None` for a partition the
    /// ledger never heard of (start where the reset policy says).
    pub fn fetch_position(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.committed
    }

    /// Whether history cleanup may delete the Job of `(partition, offset)`: only below the
    /// committed offset (a restart must find every Job above it) and once the message is done.
    pub fn deletable(&self, partition: i32, offset: i64) -> bool {
        self.partitions.get(&partition).is_some_and(|part| {
            part.committed.is_some_and(|committed| offset < committed)
                && part.entries.get(&offset).is_none_or(Entry::is_done)
        })
    }

    /// Messages in flight: Jobs to create or running, retries waiting for their Job (and their
    /// message, after a restart), dead letters not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.tally.in_flight
    }

    /// What the status shows.
    pub fn status(&self) -> LedgerStatus {
        LedgerStatus {
            committed: self
                .partitions
                .iter()
                .filter_map(|(&partition, part)| Some((partition, part.committed?)))
                .collect(),
            in_flight: self.tally.in_flight,
            queued: self.tally.queued,
            dead_lettered: self.dead_lettered,
            failed: self.failed,
        }
    }

    fn cap(&self) -> usize {
        usize::try_from(self.policy.max_in_flight).unwrap_or(usize::MAX)
    }

    /// First Jobs for queued messages while slots are free, oldest first.
    fn release(&mut self, actions: &mut Vec<Action>) {
        while self.tally.in_flight < self.cap() {
            let Some((partition, offset)) = self.queue.pop_front() else {
                break;
            };
            self.update(
                partition,
                offset,
                |entry| entry.start(partition, offset),
                actions,
            );
        }
    }

    fn insert(&mut self, partition: i32, offset: i64, entry: Entry) {
        self.tally = self.tally.plus(entry.tally());
        let part = self.partitions.entry(partition).or_default();
        part.entries.insert(offset, entry);
    }

    /// Changes one entry, keeping the tally and counting recorded failures.
    fn update(
        &mut self,
        partition: i32,
        offset: i64,
        change: impl FnOnce(&mut Entry) -> Option<Action>,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self
            .partitions
            .get_mut(&partition)
            .and_then(|part| part.entries.get_mut(&offset))
        else {
            return;
        };
        let before = entry.tally();
        let action = change(entry);
        self.tally = self.tally.minus(before).plus(entry.tally());
        if let Some(action) = action {
            if matches!(action, Action::RecordFailure { .. }) {
                self.failed += 1;
            }
            actions.push(action);
        }
    }
}

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
