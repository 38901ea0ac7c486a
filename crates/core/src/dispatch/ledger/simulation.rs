//! The ledger against a simulated world — a topic with gaps whose records compaction may
//! remove, a Kubernetes API that holds Jobs by name and a history cleanup that deletes them, a
//! controller that acts late or never (its pending actions die with it), and any number of
//! restarts — checking the promises of dispatch mode after every step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;

use super::*;
use crate::dispatch::CommitOn;

#[derive(Debug, Clone)]
enum Step {
    /// The consumer delivers a partition's next message (if not paused, or `prefetched`).
    Receive { partition: usize, prefetched: bool },
    /// The controller carries out one of its pending actions.
    Act { pick: usize },
    /// A running Job finishes; the watch reports it.
    Finish { pick: usize, succeeds: bool },
    /// The watch reports a Job again, late or twice.
    Replay { pick: usize },
    /// The controller commits what the ledger allows.
    Commit,
    /// History cleanup deletes the finished Jobs the ledger lets it.
    Cleanup,
    /// Compaction removes a record (never a partition's last: the active segment stays).
    Compact { partition: usize, pick: usize },
    /// The operator restarts: pending actions are lost, the ledger is rebuilt.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..3usize, prop::bool::weighted(0.1))
            .prop_map(|(partition, prefetched)| Step::Receive { partition, prefetched }),
        8 => any::<usize>().prop_map(|pick| Step::Act { pick }),
        6 => (any::<usize>(), prop::bool::weighted(0.6))
            .prop_map(|(pick, succeeds)| Step::Finish { pick, succeeds }),
        2 => any::<usize>().prop_map(|pick| Step::Replay { pick }),
        4 => Just(Step::Commit),
        1 => Just(Step::Cleanup),
        1 => (0..3usize, any::<usize>())
            .prop_map(|(partition, pick)| Step::Compact { partition, pick }),
        2 => Just(Step::Restart),
    ]
}

type Name = (i32, i64, u32);

#[derive(Debug, Clone)]
struct Job {
    outcome: Outcome,
    dead_lettered: bool,
}

struct World {
    policy: DispatchPolicy,
    /// Per partition, the offsets that held a message (with gaps).
    topic: Vec<Vec<i64>>,
    /// Records compaction removed since.
    removed: BTreeSet<(i32, i64)>,
    /// Per partition, the consumer's next offset.
    position: Vec<i64>,
    /// The group's committed offsets.
    committed: BTreeMap<i32, i64>,
    /// The Kubernetes API.
    jobs: BTreeMap<Name, Job>,
    /// Jobs history cleanup deleted.
    deleted: BTreeMap<Name, Job>,
    dead_letters: BTreeMap<(i32, i64), u32>,
    recorded: BTreeMap<(i32, i64), u32>,
    pending: VecDeque<Action>,
    ledger: Ledger,
}

fn message(partition: i32, offset: i64) -> Message {
    Message {
        partition,
        offset,
        timestamp_ms: None,
        key: None,
        value: Some(format!("{partition}/{offset}").into_bytes()),
        headers: Vec::new(),
    }
}

fn partition(index: usize) -> i32 {
    i32::try_from(index).unwrap_or_default()
}

/// A message's Jobs, any attempt.
fn of(jobs: &BTreeMap<Name, Job>, partition: i32, offset: i64) -> impl Iterator<Item = &Job> {
    jobs.range((partition, offset, 0)..=(partition, offset, u32::MAX))
        .map(|(_, job)| job)
}

impl World {
    fn new(policy: DispatchPolicy, topic: Vec<Vec<i64>>) -> Self {
        let committed: BTreeMap<i32, i64> = (0..topic.len()).map(|p| (partition(p), 0)).collect();
        let (ledger, actions) = Ledger::rebuild(policy, &committed, &[]);
        assert!(actions.is_empty());
        Self {
            policy,
            position: vec![0; topic.len()],
            topic,
            removed: BTreeSet::new(),
            committed,
            jobs: BTreeMap::new(),
            deleted: BTreeMap::new(),
            dead_letters: BTreeMap::new(),
            recorded: BTreeMap::new(),
            pending: VecDeque::new(),
            ledger,
        }
    }

    fn observation(&self, (partition, offset, attempt): Name) -> ObservedJob {
        let job = &self.jobs[&(partition, offset, attempt)];
        ObservedJob {
            partition,
            offset,
            attempt,
            outcome: job.outcome.clone(),
            dead_lettered: job.dead_lettered,
        }
    }

    fn running(&self) -> Vec<Name> {
        self.jobs
            .iter()
            .filter(|(_, job)| job.outcome == Outcome::Running)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Whether a message ever had a Job.
    fn dispatched(&self, partition: i32, offset: i64) -> bool {
        of(&self.jobs, partition, offset)
            .chain(of(&self.deleted, partition, offset))
            .next()
            .is_some()
    }

    /// The next record of a partition the consumer would deliver.
    fn next(&self, index: usize) -> Option<i64> {
        let p = partition(index);
        self.topic[index]
            .iter()
            .copied()
            .find(|&o| o >= self.position[index] && !self.removed.contains(&(p, o)))
    }

    /// Takes the ledger's actions in, checking each as it is asked for.
    fn take(&mut self, actions: Vec<Action>) {
        for action in actions {
            match &action {
                &Action::CreateJob {
                    partition,
                    offset,
                    attempt,
                } => {
                    let name = (partition, offset, attempt);
                    let known = self.jobs.contains_key(&name) || self.deleted.contains_key(&name);
                    assert!(!known, "{name:?} was created already");
                    assert!(!self.pending.contains(&action), "{name:?} asked for twice");
                    assert!(attempt >= 1 && attempt <= self.policy.max_attempts.max(1));
                    assert_eq!(
                        self.ledger.message(partition, offset),
                        Some(&message(partition, offset))
                    );
                }
                &Action::DeadLetter {
                    partition, offset, ..
                } => {
                    assert!(self.policy.dead_letter);
                    assert_eq!(
                        self.ledger.message(partition, offset),
                        Some(&message(partition, offset))
                    );
                }
                Action::RecordFailure { .. } => {
                    // Recorded as it is returned (the offset is done already).
                    self.act(action);
                    continue;
                }
            }
            self.pending.push_back(action);
        }
    }

    fn run(&mut self, step: &Step) {
        match *step {
            Step::Receive {
                partition: index,
                prefetched,
            } => {
                let index = index % self.topic.len();
                if let Some(offset) = self.next(index)
                    && (self.ledger.may_receive() || prefetched)
                {
                    self.position[index] = offset + 1;
                    let actions = self.ledger.received(message(partition(index), offset));
                    self.take(actions);
                }
            }
            Step::Act { pick } => {
                if !self.pending.is_empty()
                    && let Some(action) = self.pending.remove(pick % self.pending.len())
                {
                    self.act(action);
                }
            }
            Step::Finish { pick, succeeds } => {
                let running = self.running();
                if !running.is_empty() {
                    self.finish(running[pick % running.len()], succeeds);
                }
            }
            Step::Replay { pick } => {
                if let Some(&name) = self.jobs.keys().nth(pick % self.jobs.len().max(1)) {
                    let actions = self.ledger.observed(self.observation(name));
                    self.take(actions);
                }
            }
            Step::Commit => self.commit(),
            Step::Cleanup => {
                let finished: Vec<Name> = self
                    .jobs
                    .iter()
                    .filter(|&(&(p, o, _), job)| {
                        job.outcome != Outcome::Running && self.ledger.deletable(p, o)
                    })
                    .map(|(name, _)| *name)
                    .collect();
                for name in finished {
                    if let Some(job) = self.jobs.remove(&name) {
                        self.deleted.insert(name, job);
                    }
                }
            }
            Step::Compact {
                partition: index,
                pick,
            } => {
                let index = index % self.topic.len();
                let offsets = &self.topic[index];
                if offsets.len() > 1 {
                    let offset = offsets[pick % (offsets.len() - 1)];
                    self.removed.insert((partition(index), offset));
                }
            }
            Step::Restart => self.restart(),
        }
        self.check();
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::CreateJob {
                partition,
                offset,
                attempt,
            } => {
                let job = Job {
                    outcome: Outcome::Running,
                    dead_lettered: false,
                };
                let existed = self.jobs.insert((partition, offset, attempt), job);
                assert!(existed.is_none(), "AlreadyExists");
                self.ledger.created(partition, offset, attempt);
            }
            Action::DeadLetter {
                partition,
                offset,
                attempts,
                ..
            } => {
                *self.dead_letters.entry((partition, offset)).or_default() += 1;
                let actions = self.ledger.dead_lettered(partition, offset);
                self.take(actions);
                self.annotate((partition, offset, attempts));
            }
            Action::RecordFailure {
                partition,
                offset,
                attempts,
                ..
            } => {
                *self.recorded.entry((partition, offset)).or_default() += 1;
                self.annotate((partition, offset, attempts));
            }
        }
    }

    fn annotate(&mut self, name: Name) {
        let job = self.jobs.get_mut(&name);
        assert!(job.is_some(), "the last Job {name:?} exists");
        if let Some(job) = job {
            job.dead_lettered = true;
        }
    }

    fn finish(&mut self, name: Name, succeeds: bool) {
        let outcome = if succeeds {
            Outcome::Succeeded
        } else {
            Outcome::Failed {
                reason: format!("attempt {} failed", name.2),
            }
        };
        if let Some(job) = self.jobs.get_mut(&name) {
            job.outcome = outcome;
        }
        let actions = self.ledger.observed(self.observation(name));
        self.take(actions);
    }

    /// Whether the message at `(partition, offset)` is done, as the commit understands it.
    fn done(&self, partition: i32, offset: i64) -> bool {
        if self.removed.contains(&(partition, offset)) && !self.dispatched(partition, offset) {
            return true;
        }
        let mut jobs =
            of(&self.jobs, partition, offset).chain(of(&self.deleted, partition, offset));
        match self.policy.commit_on {
            CommitOn::Create => jobs.next().is_some(),
            CommitOn::Complete => {
                jobs.any(|job| job.outcome == Outcome::Succeeded)
                    || self.dead_letters.contains_key(&(partition, offset))
                    || self.recorded.contains_key(&(partition, offset))
            }
        }
    }

    fn commit(&mut self) {
        for (partition, offset) in self.ledger.commits() {
            let before = self.committed.get(&partition).copied().unwrap_or_default();
            assert!(
                offset > before,
                "commit {partition}/{offset} after {before}"
            );
            let index = usize::try_from(partition).unwrap_or_default();
            for &passed in self.topic[index]
                .iter()
                .filter(|&&o| o >= before && o < offset)
            {
                assert!(
                    self.done(partition, passed),
                    "commit {offset} passes {partition}/{passed}"
                );
            }
            self.committed.insert(partition, offset);
            self.ledger.committed(partition, offset);
        }
    }

    fn restart(&mut self) {
        self.pending.clear();
        let jobs: Vec<ObservedJob> = self
            .jobs
            .keys()
            .map(|&name| self.observation(name))
            .collect();
        let (ledger, actions) = Ledger::rebuild(self.policy, &self.committed, &jobs);
        self.ledger = ledger;
        for index in 0..self.topic.len() {
            let from = self.ledger.fetch_position(partition(index));
            assert_eq!(from, self.committed.get(&partition(index)).copied());
            self.position[index] = from.unwrap_or_default();
        }
        self.take(actions);
    }

    /// What holds after every step.
    fn check(&self) {
        if self.policy.commit_on == CommitOn::Complete {
            let cap = usize::try_from(self.policy.max_in_flight).unwrap_or(usize::MAX);
            assert!(
                self.running().len() <= cap,
                "more Jobs running than the cap"
            );
        }
        for (&(partition, offset), &count) in self.dead_letters.iter().chain(&self.recorded) {
            assert_eq!(
                count, 1,
                "{partition}/{offset} dead-lettered or recorded {count} times"
            );
        }
    }

    /// Lets everything finish: every action carried out, every Job succeeding, every message
    /// read (respecting the pause), everything committed; then checks how each message ended.
    fn drain(&mut self) {
        for _ in 0..1_000 {
            let mut progressed = !self.pending.is_empty();
            while let Some(action) = self.pending.pop_front() {
                self.act(action);
            }
            for name in self.running() {
                self.finish(name, true);
                progressed = true;
            }
            for index in 0..self.topic.len() {
                if self.ledger.may_receive() && self.next(index).is_some() {
                    self.run(&Step::Receive {
                        partition: index,
                        prefetched: false,
                    });
                    progressed = true;
                }
            }
            self.commit();
            self.check();
            if !progressed {
                break;
            }
        }
        for (index, offsets) in self.topic.iter().enumerate() {
            let p = partition(index);
            assert_eq!(self.next(index), None, "partition {p} not read: stuck");
            for &offset in offsets {
                if !self.dispatched(p, offset) {
                    assert!(
                        self.removed.contains(&(p, offset)),
                        "{p}/{offset} never dispatched"
                    );
                    continue;
                }
                let succeeded = of(&self.jobs, p, offset)
                    .chain(of(&self.deleted, p, offset))
                    .filter(|job| job.outcome == Outcome::Succeeded)
                    .count();
                let ended = succeeded
                    + usize::from(self.dead_letters.contains_key(&(p, offset)))
                    + usize::from(self.recorded.contains_key(&(p, offset)));
                match self.policy.commit_on {
                    CommitOn::Complete => assert_eq!(ended, 1, "{p}/{offset} ended {ended} times"),
                    // A restart forgets the Jobs below the commit: a failure there just ends.
                    CommitOn::Create => assert!(ended <= 1, "{p}/{offset} ended {ended} times"),
                }
            }
            if let Some(&last) = offsets.last() {
                assert_eq!(self.committed.get(&p), Some(&(last + 1)), "partition {p}");
            }
        }
        assert_eq!(self.ledger.in_flight(), 0);
        assert_eq!(self.ledger.status().queued, 0);
    }
}

/// Per partition, up to 8 messages at offsets with gaps of 0–2 between them.
fn topic() -> impl Strategy<Value = Vec<Vec<i64>>> {
    let partition = prop::collection::vec(0..3i64, 0..8).prop_map(|gaps| {
        gaps.iter()
            .scan(-1, |offset, gap| {
                *offset += 1 + gap;
                Some(*offset)
            })
            .collect()
    });
    prop::collection::vec(partition, 1..=3)
}

fn policy() -> impl Strategy<Value = DispatchPolicy> {
    (1..=3u32, any::<bool>(), any::<bool>(), 1..=4u32).prop_map(
        |(max_attempts, dead_letter, create, max_in_flight)| DispatchPolicy {
            max_attempts,
            dead_letter,
            commit_on: if create {
                CommitOn::Create
            } else {
                CommitOn::Complete
            },
            max_in_flight,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_ends_once_and_no_job_or_commit_goes_wrong_across_restarts(
        policy in policy(),
        topic in topic(),
        steps in prop::collection::vec(step(), 0..200),
    ) {
        let mut world = World::new(policy, topic);
        for step in &steps {
            world.run(step);
        }
        world.drain();
    }
}
