//! What the operator remembers about one ScaledJob between reconciles, in one place (keyed by
//! uid in [`crate::Context`]).
//!
//! kube-runtime reconciles a ScaledJob whenever it, one of its Jobs or pods, or an object its
//! triggers read changes, and again after each `pollingInterval`. KEDA has two loops instead: a
//! reconcile that runs when the ScaledJob changes, and a scale loop that polls once per interval.
//! This state tells the two apart inside one reconcile:
//! - [`ScaledJobState::observe`]: did the ScaledJob change (generation or pause annotation) since
//!   the last reconcile? Only then do KEDA's reconcile steps run (their Ready condition and
//!   `ScaledJobReady` event), so a failing trigger doesn't flip Ready True → False every poll.
//! - [`ScaledJobState::may_create`]: Jobs are created by at most one poll per `pollingInterval`
//!   (KEDA's pace). Re-polls caused by Job and pod changes update counts, history and status at
//!   once but create nothing until the interval since the last creating poll has passed; a spec
//!   change polls and may create at once, as KEDA's restarted loop does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jobtide_core::crashloop::CrashLoopState;
use jobtide_core::lag::PersistentLagMemory;

/// A ScaledJob's uid as the key of its state: a UUID (what API servers give) in 16 bytes
/// inline, anything else as its text. At 10,000 ScaledJobs that is 10,000 allocations of 48
/// bytes (a 36-byte `String`) fewer, in a key no larger than a `String`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum StateKey {
    /// A UUID in its canonical lowercase text form.
    Uuid([u8; 16]),
    /// Any other uid.
    Other(Box<str>),
}

impl StateKey {
    /// The key of `uid`. Only the canonical lowercase form is read as a UUID, so two different
    /// uids never get the same key.
    pub fn of(uid: &str) -> Self {
        parse_uuid(uid).map_or_else(|| Self::Other(uid.into()), Self::Uuid)
    }
}

/// `8-4-4-4-12` lowercase hex digits, or `None`.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut uuid = [0u8; 16];
    let mut digits = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if matches!(at, 8 | 13 | 18 | 23) {
            if byte != b'-' {
                return None;
            }
            continue;
        }
        let value = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            _ => return None,
        };
        uuid[digits / 2] |= if digits % 2 == 0 { value << 4 } else { value };
        digits += 1;
    }
    Some(uuid)
}

/// The parts of a ScaledJob whose change is a reconcile in KEDA's sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// `metadata.generation` (the spec).
    pub generation: i64,
    /// The `autoscaling.keda.sh/paused` annotation as written.
    pub paused_annotation: Option<String>,
    /// The `jobtide.io/pending-budget` annotation as written (an invalid one fails the
    /// reconcile's checks, so editing it must re-run them).
    pub pending_budget_annotation: Option<String>,
}

/// One ScaledJob's remembered state.
#[derive(Debug, Default)]
pub(crate) struct ScaledJobState {
    /// The trigger types registered in the metrics (`None`: not registered).
    pub registered: Option<Vec<String>>,
    /// The generation the scale loop's scalers were built for; `None` while the loop is stopped
    /// (paused) or before it first started.
    pub loop_generation: Option<i64>,
    /// What the last reconcile saw.
    seen: Option<Seen>,
    /// When the last poll that was allowed to create Jobs ran.
    last_creating_poll: Option<Instant>,
    /// Its `pollingInterval` at the last poll (how long its Kafka clients must stay open).
    pub interval: Option<Duration>,
    /// When the next poll is due (for the scale-loop lateness metric).
    pub next_due: Option<Instant>,
    /// Reconciles that failed in a row (the retry backoff's exponent).
    pub failures: u32,
    /// What few ScaledJobs need, allocated on first use ([`Rare`]).
    rare: Option<Box<Rare>>,
    /// Dispatch mode: the running dispatcher (dropping it stops it). Boxed: 472 bytes that a
    /// lag-mode ScaledJob, most of them, would carry empty (the state was 816 bytes, then 432;
    /// at 10,000 ScaledJobs the map has 16,384 slots: 13 MiB at 816).
    pub dispatcher: Option<Box<crate::dispatch::Dispatcher>>,
    /// Lag per partition over the last minutes (only with [`crate::Config::lag_history`]),
    /// and whose it is (namespace, name). Boxed for the same reason as the dispatcher: only
    /// `jobtide dev` keeps it.
    pub lag: Option<Box<(crate::cache::OwnerKey, crate::lag_history::LagHistory)>>,
}

/// The parts of a [`ScaledJobState`] that most ScaledJobs never use: boxed and allocated only
/// while one holds something, so the state stays small (432 bytes inline with these, 176
/// without: `state_stays_small`; at 10,000 ScaledJobs the map's 16,384 slots are 4 MiB less).
#[derive(Debug, Default)]
struct Rare {
    /// `excludePersistentLag` memory by trigger index (D12: kept across client rebuilds); only
    /// the non-empty ones (a trigger without persistent lag remembers nothing).
    memories: HashMap<usize, PersistentLagMemory>,
    /// The crash-loop guard's memory (`jobtide_core::crashloop`).
    crash_loop: CrashLoopState,
    /// The last quota refusal of a Job creation, until a Job is created again.
    quota_block: Option<crate::capacity::QuotaBlock>,
    /// What Kueue said about each suspended queue-named Job (by Job name) at the last creating
    /// poll, which reads the Workloads; the polls in between (a Job's or pod's change) use it,
    /// so the condition doesn't flip to "no Workload condition yet" between reads.
    kueue_admissions: HashMap<String, jobtide_core::capacity::KueueAdmission>,
    /// The `resourceVersion` of the copy this operator last wrote over (added KEDA's finalizer
    /// to, or patched the status of), until the store shows a newer one. A reconcile of that
    /// same copy (a Job's change re-polls before the watch delivered the write) waits for the
    /// newer one: it would add the finalizer again — the API server refuses the patch (422), as
    /// it did for 3–15 of 10,000 first reconciles — or patch the copy's old conditions back
    /// over the new ones (an unpaused ScaledJob was seen Paused again).
    written_over: Option<Box<str>>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.written_over.is_none()
            && self.memories.is_empty()
            && self.crash_loop == CrashLoopState::default()
            && self.quota_block.is_none()
            && self.kueue_admissions.is_empty()
    }
}

impl Seen {
    /// What `scaled_job` shows now.
    pub fn of(scaled_job: &jobtide_api::ScaledJob) -> Self {
        Self {
            generation: scaled_job.metadata.generation.unwrap_or(0),
            paused_annotation: scaled_job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(jobtide_core::pause::PAUSED_ANNOTATION))
                .cloned(),
            pending_budget_annotation: scaled_job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(jobtide_core::capacity::PENDING_BUDGET_ANNOTATION))
                .cloned(),
        }
    }
}

impl ScaledJobState {
    /// Changes the rare parts; the box goes when they are all empty again.
    fn change_rare(&mut self, f: impl FnOnce(&mut Rare)) {
        let rare = self.rare.get_or_insert_with(Box::default);
        f(rare);
        if rare.is_empty() {
            self.rare = None;
        }
    }

    /// Trigger `index`'s `excludePersistentLag` memory (empty when it has none).
    pub fn memory(&self, index: usize) -> PersistentLagMemory {
        self.rare
            .as_ref()
            .and_then(|rare| rare.memories.get(&index))
            .cloned()
            .unwrap_or_default()
    }

    /// Remembers trigger `index`'s `excludePersistentLag` memory.
    pub fn set_memory(&mut self, index: usize, memory: PersistentLagMemory) {
        if memory.is_empty() && self.rare.is_none() {
            return;
        }
        self.change_rare(|rare| {
            if memory.is_empty() {
                rare.memories.remove(&index);
            } else {
                rare.memories.insert(index, memory);
            }
        });
    }

    /// The crash-loop guard's memory.
    pub fn crash_loop(&self) -> CrashLoopState {
        self.rare
            .as_ref()
            .map(|rare| rare.crash_loop.clone())
            .unwrap_or_default()
    }

    /// Remembers the crash-loop guard's state.
    pub fn set_crash_loop(&mut self, crash_loop: CrashLoopState) {
        if self.rare.is_none() && crash_loop == CrashLoopState::default() {
            return;
        }
        self.change_rare(|rare| rare.crash_loop = crash_loop);
    }

    /// The last quota refusal of a Job creation, until a Job is created again.
    pub fn quota_block(&self) -> Option<&crate::capacity::QuotaBlock> {
        self.rare.as_ref()?.quota_block.as_ref()
    }

    /// Records (or with `None` clears) the quota refusal.
    pub fn set_quota_block(&mut self, block: Option<crate::capacity::QuotaBlock>) {
        if self.rare.is_none() && block.is_none() {
            return;
        }
        self.change_rare(|rare| rare.quota_block = block);
    }

    /// The `resourceVersion` of the copy this operator last wrote over (see
    /// `Rare::written_over`).
    pub fn written_over(&self) -> Option<&str> {
        self.rare.as_ref()?.written_over.as_deref()
    }

    /// Records (or with `None` forgets) the copy this operator wrote over.
    pub fn set_written_over(&mut self, version: Option<Box<str>>) {
        if self.rare.is_none() && version.is_none() {
            return;
        }
        self.change_rare(|rare| rare.written_over = version);
    }

    /// Kueue's admissions as the last creating poll read them (by Job name).
    pub fn kueue_admissions(
        &self,
    ) -> Option<&HashMap<String, jobtide_core::capacity::KueueAdmission>> {
        self.rare.as_ref().map(|rare| &rare.kueue_admissions)
    }

    /// Records Kueue's admissions as a creating poll read them.
    pub fn set_kueue_admissions(
        &mut self,
        admissions: HashMap<String, jobtide_core::capacity::KueueAdmission>,
    ) {
        if self.rare.is_none() && admissions.is_empty() {
            return;
        }
        self.change_rare(|rare| rare.kueue_admissions = admissions);
    }

    /// Whether `seen` differs from what the last successful reconcile settled (or there was
    /// none).
    pub fn changed(&self, seen: &Seen) -> bool {
        self.seen.as_ref() != Some(seen)
    }

    /// A reconcile of `seen` succeeded: later reconciles of it are periodic polls. (Recorded
    /// only on success, so a spec change whose reconcile failed is still a change at the retry.)
    pub fn settle(&mut self, seen: Seen) {
        self.seen = Some(seen);
        self.failures = 0;
    }

    /// Whether a poll at `now` may create Jobs, and if so records it as the creating poll;
    /// `changed`: the ScaledJob itself changed (a spec change restarts KEDA's loop at once).
    pub fn may_create(&mut self, now: Instant, interval: Duration, changed: bool) -> bool {
        let due = match self.last_creating_poll {
            None => true,
            Some(last) => changed || now.saturating_duration_since(last) >= interval,
        };
        if due {
            self.last_creating_poll = Some(now);
        }
        due
    }

    /// How long until the next creating poll is due at `now` (at least a second; the full
    /// interval when none ran yet), so that event-driven re-polls never push it out.
    pub fn until_next_poll(&self, now: Instant, interval: Duration) -> Duration {
        let left = self.last_creating_poll.map_or(interval, |last| {
            interval.saturating_sub(now.saturating_duration_since(last))
        });
        left.max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(generation: i64, paused: Option<&str>) -> Seen {
        Seen {
            generation,
            paused_annotation: paused.map(str::to_owned),
            pending_budget_annotation: None,
        }
    }

    #[test]
    fn only_a_generation_pause_or_budget_change_is_a_change() {
        let mut state = ScaledJobState::default();
        assert!(state.changed(&seen(1, None)), "the first reconcile");
        state.settle(seen(1, None));
        assert!(!state.changed(&seen(1, None)), "a periodic poll");
        assert!(state.changed(&seen(2, None)), "a spec change");
        assert!(
            state.changed(&seen(2, None)),
            "still a change while its reconcile hasn't succeeded"
        );
        state.settle(seen(2, None));
        assert!(state.changed(&seen(2, Some("true"))), "paused");
        state.settle(seen(2, Some("true")));
        assert!(!state.changed(&seen(2, Some("true"))));
        let budget = Seen {
            pending_budget_annotation: Some("ten".into()),
            ..seen(2, Some("true"))
        };
        assert!(state.changed(&budget), "the pending budget's annotation");
    }

    #[test]
    fn a_uuid_uid_is_kept_inline_and_any_other_as_text() {
        let uid = "0f8e2c1a-93b4-4d6e-a7f0-123456789abc";
        assert!(matches!(StateKey::of(uid), StateKey::Uuid(_)));
        assert_ne!(
            StateKey::of(uid),
            StateKey::of("0f8e2c1a-93b4-4d6e-a7f0-123456789abd")
        );
        for other in [
            "",
            "uid-1",
            "0F8E2C1A-93B4-4D6E-A7F0-123456789ABC",
            "0f8e2c1a+93b4-4d6e-a7f0-123456789abc",
            "0f8e2c1a-93b4-4d6e-a7f0-123456789abg",
        ] {
            assert_eq!(
                StateKey::of(other),
                StateKey::Other(other.into()),
                "{other}"
            );
        }
        assert_eq!(size_of::<StateKey>(), size_of::<String>());
    }

    #[test]
    fn state_stays_small() {
        // The map holds one per ScaledJob, in 1.6 slots each (see `Rare`).
        assert!(
            size_of::<ScaledJobState>() <= 176,
            "{} bytes",
            size_of::<ScaledJobState>()
        );
    }

    #[test]
    fn the_rare_parts_take_no_allocation_until_used_and_give_it_back() {
        let mut state = ScaledJobState::default();
        state.set_memory(0, PersistentLagMemory::new());
        state.set_crash_loop(CrashLoopState::default());
        state.set_quota_block(None);
        state.set_kueue_admissions(HashMap::new());
        assert!(state.rare.is_none(), "nothing to remember");
        let tripped = CrashLoopState {
            trips: 1,
            ..CrashLoopState::default()
        };
        state.set_crash_loop(tripped.clone());
        assert_eq!(state.crash_loop(), tripped);
        assert!(state.memory(0).is_empty());
        state.set_crash_loop(CrashLoopState::default());
        assert!(state.rare.is_none(), "all empty again");
    }

    #[test]
    fn jobs_are_created_at_most_once_per_interval_unless_the_spec_changed() {
        let interval = Duration::from_secs(30);
        let start = Instant::now();
        let mut state = ScaledJobState::default();
        assert!(state.may_create(start, interval, true), "the first poll");
        for seconds in [0, 1, 10, 29] {
            let at = start + Duration::from_secs(seconds);
            assert!(
                !state.may_create(at, interval, false),
                "a re-poll at {seconds}s"
            );
        }
        assert_eq!(
            state.until_next_poll(start + Duration::from_secs(10), interval),
            Duration::from_secs(20),
            "re-polls don't push the next poll out"
        );
        assert!(state.may_create(start + Duration::from_secs(30), interval, false));
        assert!(
            state.may_create(start + Duration::from_secs(31), interval, true),
            "a spec change polls at once"
        );
        assert_eq!(
            state.until_next_poll(start + Duration::from_secs(61), interval),
            Duration::from_secs(1),
            "never a zero requeue"
        );
    }
}
