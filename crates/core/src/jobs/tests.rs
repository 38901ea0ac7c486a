//! The vectors of keda-compat §4.3, §4.5 and §4.6 as named-field cases, plus properties.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;

/// A fixed instant at `hh:mm` on one day, for the upstream vectors' timestamps.
fn at(hour: u64, minute: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + hour * 3600 + minute * 60)
}

/// Builders for fixtures.
impl JobFacts {
    fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }
    fn succeeded_at(mut self, time: SystemTime) -> Self {
        self.true_conditions.push((COMPLETE.to_owned(), Some(time)));
        self.completion_time = Some(time);
        self
    }
    fn failed_at(mut self, time: SystemTime) -> Self {
        self.true_conditions.push((FAILED.to_owned(), Some(time)));
        self
    }
    fn condition(mut self, condition: &str) -> Self {
        self.true_conditions.push((condition.to_owned(), None));
        self
    }
    fn pod(mut self, pod: PodFacts) -> Self {
        self.pods.push(pod);
        self
    }
    fn generation(mut self, generation: &str) -> Self {
        self.generation = Some(generation.to_owned());
        self
    }
}

fn pod(phase: PodPhase) -> PodFacts {
    PodFacts {
        phase,
        ..PodFacts::default()
    }
}

fn pod_with(conditions: &[&str]) -> PodFacts {
    PodFacts {
        phase: PodPhase::Pending,
        true_conditions: conditions.iter().map(|c| (*c).to_owned()).collect(),
        ..PodFacts::default()
    }
}

fn conditions(list: &[&str]) -> Vec<String> {
    list.iter().map(|c| (*c).to_owned()).collect()
}

struct PendingCase {
    name: &'static str,
    job: JobFacts,
    pending_pod_conditions: Vec<String>,
    pending: bool,
}

#[test]
fn pending_vectors() {
    let cases = [
        PendingCase {
            name: "no conditions, pod Succeeded",
            job: JobFacts::named("j").pod(pod(PodPhase::Succeeded)),
            pending_pod_conditions: vec![],
            pending: false,
        },
        PendingCase {
            name: "no conditions, pod Running",
            job: JobFacts::named("j").pod(pod(PodPhase::Running)),
            pending_pod_conditions: vec![],
            pending: false,
        },
        PendingCase {
            name: "no conditions, pod Failed",
            job: JobFacts::named("j").pod(pod(PodPhase::Failed)),
            pending_pod_conditions: vec![],
            pending: true,
        },
        PendingCase {
            name: "no conditions, pod Pending",
            job: JobFacts::named("j").pod(pod(PodPhase::Pending)),
            pending_pod_conditions: vec![],
            pending: true,
        },
        PendingCase {
            name: "no conditions, pod Unknown",
            job: JobFacts::named("j").pod(pod(PodPhase::Unknown)),
            pending_pod_conditions: vec![],
            pending: true,
        },
        PendingCase {
            name: "no conditions, no pods",
            job: JobFacts::named("j"),
            pending_pod_conditions: vec![],
            pending: true,
        },
        PendingCase {
            name: "Ready+PodScheduled, pod with none",
            job: JobFacts::named("j").pod(pod_with(&[])),
            pending_pod_conditions: conditions(&["Ready", "PodScheduled"]),
            pending: true,
        },
        PendingCase {
            name: "Ready+PodScheduled, Ready only",
            job: JobFacts::named("j").pod(pod_with(&["Ready"])),
            pending_pod_conditions: conditions(&["Ready", "PodScheduled"]),
            pending: true,
        },
        PendingCase {
            name: "Ready+PodScheduled, PodScheduled only",
            job: JobFacts::named("j").pod(pod_with(&["PodScheduled"])),
            pending_pod_conditions: conditions(&["Ready", "PodScheduled"]),
            pending: true,
        },
        PendingCase {
            name: "Ready+PodScheduled, both",
            job: JobFacts::named("j").pod(pod_with(&["Ready", "PodScheduled"])),
            pending_pod_conditions: conditions(&["Ready", "PodScheduled"]),
            pending: false,
        },
        PendingCase {
            name: "two pods both complete",
            job: JobFacts::named("j")
                .pod(pod_with(&["Ready", "PodScheduled"]))
                .pod(pod_with(&["Ready", "PodScheduled"])),
            pending_pod_conditions: conditions(&["Ready", "PodScheduled"]),
            pending: false,
        },
        PendingCase {
            name: "one complete and one partial",
            job: JobFacts::named("j")
                .pod(pod_with(&["Ready", "PodScheduled"]))
                .pod(pod_with(&["Ready"])),
            pending_pod_conditions: conditions(&["Ready", "PodScheduled"]),
            pending: false,
        },
        PendingCase {
            name: "two partial",
            job: JobFacts::named("j")
                .pod(pod_with(&["Ready"]))
                .pod(pod_with(&["PodScheduled"])),
            pending_pod_conditions: conditions(&["Ready", "PodScheduled"]),
            pending: true,
        },
        PendingCase {
            name: "three pods, one complete",
            job: JobFacts::named("j")
                .pod(pod_with(&[]))
                .pod(pod_with(&["Ready"]))
                .pod(pod_with(&["Ready", "PodScheduled"])),
            pending_pod_conditions: conditions(&["Ready", "PodScheduled"]),
            pending: false,
        },
        PendingCase {
            name: "three pods, none complete",
            job: JobFacts::named("j")
                .pod(pod_with(&[]))
                .pod(pod_with(&["Ready"]))
                .pod(pod_with(&["PodScheduled"])),
            pending_pod_conditions: conditions(&["Ready", "PodScheduled"]),
            pending: true,
        },
        PendingCase {
            name: "duplicated conditions can be satisfied (D10)",
            job: JobFacts::named("j").pod(pod_with(&["Ready"])),
            pending_pod_conditions: conditions(&["Ready", "Ready"]),
            pending: false,
        },
    ];
    for case in cases {
        let state = classify(&case.job, &case.pending_pod_conditions);
        let expected = if case.pending {
            JobState::Pending
        } else {
            JobState::Running
        };
        assert_eq!(state, expected, "case {}", case.name);
    }
}

#[test]
fn finished_and_finishing_jobs() {
    let none: &[String] = &[];
    assert_eq!(
        classify(&JobFacts::named("a").succeeded_at(at(1, 0)), none),
        JobState::Succeeded
    );
    assert_eq!(
        classify(&JobFacts::named("b").failed_at(at(1, 0)), none),
        JobState::Failed
    );
    assert_eq!(
        classify(&JobFacts::named("c").condition(SUCCESS_CRITERIA_MET), none),
        JobState::Finishing
    );
    assert_eq!(
        classify(&JobFacts::named("d").condition(FAILURE_TARGET), none),
        JobState::Finishing
    );
    assert_eq!(
        classify(
            &JobFacts::named("e")
                .condition(SUCCESS_CRITERIA_MET)
                .succeeded_at(at(1, 0)),
            none
        ),
        JobState::Succeeded
    );
    let jobs = [
        JobFacts::named("a").succeeded_at(at(1, 0)),
        JobFacts::named("b").failed_at(at(1, 0)),
        JobFacts::named("c")
            .condition(SUCCESS_CRITERIA_MET)
            .pod(pod(PodPhase::Running)),
        JobFacts::named("d").pod(pod(PodPhase::Running)),
        JobFacts::named("e"),
    ];
    assert_eq!(
        count(&jobs, none),
        JobCounts {
            running: 2,
            pending: 1,
            finishing: 1,
            succeeded: 1,
            failed: 1
        }
    );
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|n| (*n).to_owned()).collect()
}

fn deleted(jobs: &[JobFacts], limits: HistoryLimits) -> BTreeSet<String> {
    history_to_delete(jobs, limits)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn cleanup_vectors() {
    let jobs = [
        JobFacts::named("name1").succeeded_at(at(15, 37)),
        JobFacts::named("name2").succeeded_at(at(15, 36)),
        JobFacts::named("name3").succeeded_at(at(15, 38)),
    ];
    assert_eq!(
        deleted(
            &jobs,
            HistoryLimits {
                successful: 2,
                failed: 2
            }
        ),
        names(&["name2"])
    );

    let jobs = [
        JobFacts::named("success1").succeeded_at(at(15, 37)),
        JobFacts::named("success2").succeeded_at(at(15, 36)),
        JobFacts::named("success3").succeeded_at(at(15, 35)),
        JobFacts::named("fail1").failed_at(at(15, 37)),
        JobFacts::named("fail2").failed_at(at(15, 36)),
        JobFacts::named("fail3").failed_at(at(15, 38)),
    ];
    assert_eq!(
        deleted(
            &jobs,
            HistoryLimits {
                successful: 1,
                failed: 2
            }
        ),
        names(&["success2", "success3", "fail2"])
    );

    let mut jobs = Vec::new();
    for i in 0..=100u64 {
        jobs.push(JobFacts::named(&format!("success{i}")).succeeded_at(at(1, i)));
        jobs.push(JobFacts::named(&format!("fail{}", 101 - i)).failed_at(at(1, i)));
    }
    assert_eq!(
        deleted(&jobs, HistoryLimits::from_spec(None, None)),
        names(&["success0", "fail101"])
    );
}

#[test]
fn cleanup_limits_zero_and_large() {
    let jobs = [
        JobFacts::named("s").succeeded_at(at(1, 0)),
        JobFacts::named("f").failed_at(at(1, 0)),
        JobFacts::named("running").pod(pod(PodPhase::Running)),
    ];
    assert_eq!(
        deleted(
            &jobs,
            HistoryLimits {
                successful: 0,
                failed: 0
            }
        ),
        names(&["s", "f"])
    );
    assert!(
        deleted(
            &jobs,
            HistoryLimits {
                successful: 5,
                failed: 5
            }
        )
        .is_empty()
    );
}

#[test]
fn failed_jobs_are_pruned_oldest_failure_first_d8() {
    // Failed Jobs carry no completionTime; the Failed condition's time orders them.
    let jobs = [
        JobFacts::named("a-newest").failed_at(at(12, 0)),
        JobFacts::named("b-oldest").failed_at(at(10, 0)),
        JobFacts::named("c-middle").failed_at(at(11, 0)),
    ];
    assert_eq!(
        history_to_delete(
            &jobs,
            HistoryLimits {
                successful: 100,
                failed: 1
            }
        ),
        vec!["b-oldest", "c-middle"]
    );
}

#[test]
fn rollout_defaults_to_gradual_d1() {
    let rollout = Rollout::from_spec(None, None, None);
    assert_eq!(
        rollout,
        Rollout {
            strategy: RolloutStrategy::Gradual,
            propagation: Propagation::Background
        }
    );
    let jobs = [
        JobFacts::named("old").generation("1"),
        JobFacts::named("legacy"),
    ];
    assert!(rollout_deletions(&jobs, 2, rollout).is_empty());
}

#[test]
fn immediate_rollout_deletes_other_generations() {
    let rollout = Rollout::from_spec(
        None,
        Some(RolloutStrategy::Immediate),
        Some(Propagation::Foreground),
    );
    assert_eq!(rollout.propagation, Propagation::Foreground);
    let jobs = [
        JobFacts::named("current").generation("2"),
        JobFacts::named("old")
            .generation("1")
            .succeeded_at(at(1, 0)),
        JobFacts::named("legacy-without-annotation"),
    ];
    assert_eq!(
        rollout_deletions(&jobs, 2, rollout),
        vec!["old", "legacy-without-annotation"]
    );
}

#[test]
fn the_deprecated_rollout_strategy_takes_precedence() {
    let rollout = Rollout::from_spec(
        Some(RolloutStrategy::Gradual),
        Some(RolloutStrategy::Immediate),
        None,
    );
    assert_eq!(rollout.strategy, RolloutStrategy::Gradual);
    let rollout = Rollout::from_spec(
        Some(RolloutStrategy::Immediate),
        Some(RolloutStrategy::Gradual),
        None,
    );
    assert_eq!(rollout.strategy, RolloutStrategy::Immediate);
}

fn arbitrary_job() -> impl Strategy<Value = JobFacts> {
    let condition = prop::sample::select(vec![
        COMPLETE,
        FAILED,
        SUCCESS_CRITERIA_MET,
        FAILURE_TARGET,
        "Suspended",
    ]);
    (
        "[a-z]{1,6}",
        prop::collection::vec((condition, prop::option::of(0u64..1000)), 0..3),
        prop::option::of(0u64..1000),
        prop::collection::vec(
            prop::sample::select(vec![PodPhase::Pending, PodPhase::Running, PodPhase::Failed]),
            0..3,
        ),
    )
        .prop_map(|(name, conditions, completion, phases)| JobFacts {
            name,
            true_conditions: conditions
                .into_iter()
                .map(|(c, t)| {
                    (
                        c.to_owned(),
                        t.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
                    )
                })
                .collect(),
            completion_time: completion.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            generation: None,
            pods: phases.into_iter().map(pod).collect(),
            created: None,
            kueue: None,
        })
}

proptest! {
    #[test]
    fn cleanup_never_selects_an_unfinished_job(
        jobs in prop::collection::vec(arbitrary_job(), 0..12),
        successful in 0usize..4,
        failed in 0usize..4,
    ) {
        let limits = HistoryLimits { successful, failed };
        let selected = history_to_delete(&jobs, limits);
        for name in &selected {
            let finished = jobs.iter().any(|j| j.name == *name
                && matches!(classify(j, &[]), JobState::Succeeded | JobState::Failed));
            prop_assert!(finished, "{name} selected but not finished");
        }
        let finished = jobs.iter().filter(|j| matches!(classify(j, &[]), JobState::Succeeded | JobState::Failed)).count();
        prop_assert!(finished - selected.len() <= successful + failed);
        prop_assert_eq!(history_to_delete(&jobs, limits), selected);
    }
}
