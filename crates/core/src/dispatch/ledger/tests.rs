use super::*;
use crate::dispatch::CommitOn;

fn policy() -> DispatchPolicy {
    DispatchPolicy {
        max_attempts: 3,
        dead_letter: true,
        commit_on: CommitOn::Complete,
        max_in_flight: 10,
    }
}

/// A ledger whose partitions 0 and 1 are committed at offset 0.
fn ledger(policy: DispatchPolicy) -> Ledger {
    Ledger::rebuild(policy, &BTreeMap::from([(0, 0), (1, 0)]), &[]).0
}

/// The message at `offset` of partition 0.
fn message(offset: i64) -> Message {
    Message {
        partition: 0,
        offset,
        timestamp_ms: Some(1_700_000_000_000),
        key: Some(b"k".to_vec()),
        value: Some(format!("v{offset}").into_bytes()),
        headers: vec![("trace".into(), None)],
    }
}

/// The first Job of partition 0's offset 0, running.
fn job() -> ObservedJob {
    ObservedJob {
        partition: 0,
        offset: 0,
        attempt: 1,
        outcome: Outcome::Running,
        dead_lettered: false,
    }
}

fn failed(reason: &str) -> Outcome {
    Outcome::Failed {
        reason: reason.into(),
    }
}

fn create(offset: i64, attempt: u32) -> Action {
    Action::CreateJob {
        partition: 0,
        offset,
        attempt,
    }
}

/// Reads the messages at `offsets` of partition 0, each created at once; the actions.
fn read(ledger: &mut Ledger, offsets: &[i64]) -> Vec<Action> {
    let mut actions = Vec::new();
    for &offset in offsets {
        let new = ledger.received(message(offset));
        for action in &new {
            if let Action::CreateJob {
                partition,
                offset,
                attempt,
            } = *action
            {
                ledger.created(partition, offset, attempt);
            }
        }
        actions.extend(new);
    }
    actions
}

fn succeeded(ledger: &mut Ledger, offset: i64, attempt: u32) -> Vec<Action> {
    ledger.observed(ObservedJob {
        offset,
        attempt,
        outcome: Outcome::Succeeded,
        ..job()
    })
}

#[test]
fn a_new_message_gets_its_first_job_and_its_success_lets_the_commit_pass_it() {
    let mut ledger = ledger(policy());
    assert_eq!(ledger.received(message(0)), vec![create(0, 1)]);
    assert_eq!(ledger.message(0, 0), Some(&message(0)));
    assert_eq!(ledger.in_flight(), 1);
    assert_eq!(ledger.commits(), vec![]);
    assert_eq!(succeeded(&mut ledger, 0, 1), vec![]);
    assert_eq!(ledger.in_flight(), 0);
    assert_eq!(ledger.message(0, 0), None, "a done message is dropped");
    assert_eq!(ledger.commits(), vec![(0, 1)]);
    ledger.committed(0, 1);
    assert_eq!(ledger.commits(), vec![]);
    assert_eq!(ledger.fetch_position(0), Some(1));
}

#[test]
fn a_failed_job_is_retried_as_the_next_attempt_whose_success_ends_the_message() {
    let mut ledger = ledger(policy());
    read(&mut ledger, &[0]);
    let retry = ledger.observed(ObservedJob {
        outcome: failed("OOMKilled"),
        ..job()
    });
    assert_eq!(retry, vec![create(0, 2)]);
    assert_eq!(ledger.in_flight(), 1, "the retry keeps the slot");
    assert_eq!(ledger.commits(), vec![]);
    assert!(ledger.message(0, 0).is_some(), "the retry's Job needs it");
    assert_eq!(succeeded(&mut ledger, 0, 2), vec![]);
    assert_eq!(ledger.commits(), vec![(0, 1)]);
}

#[test]
fn spent_attempts_dead_letter_the_message_and_the_commit_waits_for_the_produce() {
    let mut ledger = ledger(DispatchPolicy {
        max_attempts: 2,
        ..policy()
    });
    read(&mut ledger, &[0]);
    ledger.observed(ObservedJob {
        outcome: failed("exit 1"),
        ..job()
    });
    ledger.created(0, 0, 2);
    let last = ledger.observed(ObservedJob {
        attempt: 2,
        outcome: failed("exit 2"),
        ..job()
    });
    let dead_letter = Action::DeadLetter {
        partition: 0,
        offset: 0,
        attempts: 2,
        reason: "exit 2".into(),
    };
    assert_eq!(last, vec![dead_letter]);
    assert_eq!(ledger.commits(), vec![], "not done before the produce");
    assert_eq!(ledger.in_flight(), 1);
    assert!(ledger.message(0, 0).is_some(), "the dead letter needs it");
    ledger.dead_lettered(0, 0);
    ledger.dead_lettered(0, 0);
    assert_eq!(ledger.commits(), vec![(0, 1)]);
    assert_eq!(ledger.status().dead_lettered, 1, "confirmed once");
    assert_eq!(ledger.in_flight(), 0);
}

#[test]
fn without_a_dead_letter_topic_spent_attempts_are_recorded_and_the_commit_moves_on() {
    let mut ledger = ledger(DispatchPolicy {
        max_attempts: 1,
        dead_letter: false,
        ..policy()
    });
    read(&mut ledger, &[0]);
    let actions = ledger.observed(ObservedJob {
        outcome: failed("BackoffLimitExceeded"),
        ..job()
    });
    let record = Action::RecordFailure {
        partition: 0,
        offset: 0,
        attempts: 1,
        reason: "BackoffLimitExceeded".into(),
    };
    assert_eq!(actions, vec![record]);
    assert_eq!(ledger.commits(), vec![(0, 1)]);
    assert_eq!(ledger.status().failed, 1);
}

#[test]
fn repeated_and_stale_observations_change_nothing() {
    let mut ledger = ledger(policy());
    read(&mut ledger, &[0]);
    let failure = ObservedJob {
        outcome: failed("exit 1"),
        ..job()
    };
    assert_eq!(ledger.observed(failure.clone()), vec![create(0, 2)]);
    assert_eq!(ledger.observed(failure), vec![], "the same failure again");
    assert_eq!(ledger.observed(job()), vec![], "attempt 1 running: stale");
    assert_eq!(
        succeeded(&mut ledger, 0, 1),
        vec![],
        "attempt 1 is not the message's Job now"
    );
    assert_eq!(ledger.commits(), vec![]);
}

#[test]
fn out_of_order_completion_holds_the_commit_at_the_lowest_unfinished_offset() {
    let mut ledger = ledger(policy());
    read(&mut ledger, &[0, 1, 2, 3]);
    succeeded(&mut ledger, 2, 1);
    succeeded(&mut ledger, 3, 1);
    assert_eq!(ledger.commits(), vec![], "offset 0 still runs");
    succeeded(&mut ledger, 0, 1);
    assert_eq!(ledger.commits(), vec![(0, 1)], "offset 1 still runs");
    ledger.committed(0, 1);
    succeeded(&mut ledger, 1, 1);
    assert_eq!(ledger.commits(), vec![(0, 4)]);
}

#[test]
fn offsets_with_gaps_commit_one_past_the_highest_read_never_a_guessed_offset() {
    // 1 and 4..=9 are transaction markers or compacted away: never delivered.
    let mut ledger = ledger(policy());
    read(&mut ledger, &[0, 2, 3, 10]);
    for offset in [0, 2, 10] {
        succeeded(&mut ledger, offset, 1);
    }
    assert_eq!(ledger.commits(), vec![(0, 3)]);
    succeeded(&mut ledger, 3, 1);
    assert_eq!(ledger.commits(), vec![(0, 11)]);
}

#[test]
fn commit_on_create_passes_an_offset_once_its_job_exists() {
    let mut ledger = ledger(DispatchPolicy {
        commit_on: CommitOn::Create,
        ..policy()
    });
    assert_eq!(ledger.received(message(0)), vec![create(0, 1)]);
    assert_eq!(ledger.received(message(1)), vec![create(1, 1)]);
    assert_eq!(ledger.commits(), vec![], "asked for, not created");
    ledger.created(0, 0, 1);
    assert_eq!(
        ledger.commits(),
        vec![(0, 1)],
        "offset 1's Job doesn't exist yet"
    );
    ledger.created(0, 1, 1);
    assert_eq!(ledger.commits(), vec![(0, 2)]);
    ledger.committed(0, 2);
    // Below the commit, the running Jobs are still retried and still count.
    assert_eq!(ledger.in_flight(), 2);
    assert!(!ledger.deletable(0, 0), "its Job still runs");
    let retry = ledger.observed(ObservedJob {
        outcome: failed("exit 1"),
        ..job()
    });
    assert_eq!(retry, vec![create(0, 2)]);
    succeeded(&mut ledger, 0, 2);
    assert!(ledger.deletable(0, 0));
    assert_eq!(ledger.in_flight(), 1);
}

#[test]
fn a_reached_cap_pauses_reading_and_a_finished_job_frees_a_slot_for_the_queued_message() {
    let mut ledger = ledger(DispatchPolicy {
        max_in_flight: 2,
        ..policy()
    });
    assert_eq!(read(&mut ledger, &[0, 1]), vec![create(0, 1), create(1, 1)]);
    assert!(!ledger.may_receive());
    // A message the consumer had already fetched still arrives: it waits for a slot.
    assert_eq!(ledger.received(message(2)), vec![]);
    assert_eq!(ledger.status().queued, 1);
    assert_eq!(ledger.message(0, 2), Some(&message(2)));
    let retry = ledger.observed(ObservedJob {
        outcome: failed("exit 1"),
        ..job()
    });
    assert_eq!(retry, vec![create(0, 2)], "a retry keeps its slot");
    assert_eq!(succeeded(&mut ledger, 1, 1), vec![create(2, 1)]);
    assert!(!ledger.may_receive());
    assert_eq!(succeeded(&mut ledger, 2, 1), vec![]);
    assert!(ledger.may_receive());
    assert_eq!(ledger.in_flight(), 1);
}

#[test]
fn a_cap_of_zero_dispatches_nothing_and_raising_it_starts_the_queued_messages() {
    let mut ledger = ledger(DispatchPolicy {
        max_in_flight: 0,
        ..policy()
    });
    assert!(!ledger.may_receive());
    assert_eq!(ledger.received(message(0)), vec![]);
    assert_eq!(ledger.commits(), vec![]);
    assert_eq!(ledger.set_policy(policy()), vec![create(0, 1)]);
}

#[test]
fn a_restart_resumes_at_the_commit_and_only_the_message_without_a_job_gets_one() {
    // Before the crash: committed 5; Jobs for 5 (done) and 7 (running) but not for 6.
    let jobs = [
        ObservedJob {
            offset: 5,
            outcome: Outcome::Succeeded,
            ..job()
        },
        ObservedJob { offset: 7, ..job() },
        ObservedJob {
            offset: 3,
            outcome: failed("long ago"),
            ..job()
        },
    ];
    let (mut ledger, actions) = Ledger::rebuild(policy(), &BTreeMap::from([(0, 5)]), &jobs);
    assert_eq!(actions, vec![], "offset 3 is history");
    assert_eq!(ledger.fetch_position(0), Some(5));
    assert_eq!(ledger.in_flight(), 1);
    assert_eq!(
        ledger.commits(),
        vec![],
        "nothing read yet: 6 may be missing"
    );
    assert_eq!(
        read(&mut ledger, &[5, 6, 7, 8]),
        vec![create(6, 1), create(8, 1)]
    );
    assert_eq!(ledger.commits(), vec![(0, 6)]);
    succeeded(&mut ledger, 6, 1);
    succeeded(&mut ledger, 7, 1);
    succeeded(&mut ledger, 8, 1);
    assert_eq!(ledger.commits(), vec![(0, 9)]);
}

#[test]
fn a_retry_pending_at_restart_waits_for_its_message() {
    let jobs = [
        ObservedJob {
            offset: 4,
            outcome: failed("exit 1"),
            ..job()
        },
        ObservedJob {
            offset: 4,
            attempt: 2,
            outcome: failed("exit 2"),
            ..job()
        },
    ];
    let (mut ledger, actions) = Ledger::rebuild(policy(), &BTreeMap::from([(0, 4)]), &jobs);
    assert_eq!(actions, vec![], "no payload to build the Job from");
    assert_eq!(ledger.in_flight(), 1, "the waiting retry counts");
    assert_eq!(ledger.received(message(4)), vec![create(4, 3)]);
    assert_eq!(
        ledger.received(message(4)),
        vec![],
        "read twice: asked once"
    );
}

#[test]
fn a_dead_letter_waits_for_its_message_at_restart_but_a_recorded_failure_goes_at_once() {
    let spent = |offset| ObservedJob {
        offset,
        attempt: 3,
        outcome: failed("exit 3"),
        ..job()
    };
    let committed = BTreeMap::from([(0, 0)]);
    let (mut ledger, actions) = Ledger::rebuild(policy(), &committed, &[spent(0)]);
    assert_eq!(actions, vec![]);
    let dead_letter = Action::DeadLetter {
        partition: 0,
        offset: 0,
        attempts: 3,
        reason: "exit 3".into(),
    };
    assert_eq!(ledger.received(message(0)), vec![dead_letter]);

    let no_dlq = DispatchPolicy {
        dead_letter: false,
        ..policy()
    };
    let (ledger, actions) = Ledger::rebuild(no_dlq, &committed, &[spent(0)]);
    let record = Action::RecordFailure {
        partition: 0,
        offset: 0,
        attempts: 3,
        reason: "exit 3".into(),
    };
    assert_eq!(actions, vec![record]);
    assert_eq!(ledger.in_flight(), 0);

    let settled = ObservedJob {
        dead_lettered: true,
        ..spent(0)
    };
    let (mut ledger, actions) = Ledger::rebuild(policy(), &committed, &[settled]);
    assert_eq!(actions, vec![], "annotated: handled before the restart");
    assert_eq!(read(&mut ledger, &[0]), vec![]);
    assert_eq!(ledger.commits(), vec![(0, 1)]);
}

#[test]
fn a_message_gone_from_the_topic_turns_its_waiting_retry_into_a_recorded_failure() {
    let jobs = [
        ObservedJob {
            offset: 2,
            outcome: failed("exit 1"),
            ..job()
        },
        ObservedJob { offset: 3, ..job() },
    ];
    let (mut ledger, _) = Ledger::rebuild(policy(), &BTreeMap::from([(0, 2)]), &jobs);
    // Compaction removed 2 and 3: Kafka delivers 4 first.
    let actions = ledger.received(message(4));
    assert!(
        matches!(
            actions.as_slice(),
            [
                Action::RecordFailure {
                    offset: 2,
                    attempts: 1,
                    ..
                },
                Action::CreateJob { offset: 4, .. }
            ]
        ),
        "{actions:?}"
    );
    // 3 still runs; its failure can't be retried without the message.
    let actions = ledger.observed(ObservedJob {
        offset: 3,
        outcome: failed("exit 1"),
        ..job()
    });
    assert!(
        matches!(
            actions.as_slice(),
            [Action::RecordFailure { offset: 3, .. }]
        ),
        "{actions:?}"
    );
    assert_eq!(ledger.commits(), vec![(0, 4)]);
}

#[test]
fn messages_below_the_commit_are_ignored_and_history_below_it_is_deletable() {
    let (mut ledger, _) = Ledger::rebuild(policy(), &BTreeMap::from([(0, 10)]), &[]);
    assert_eq!(ledger.received(message(9)), vec![]);
    assert_eq!(
        ledger.observed(ObservedJob {
            offset: 9,
            outcome: failed("x"),
            ..job()
        }),
        vec![]
    );
    assert!(ledger.deletable(0, 9));
    assert!(!ledger.deletable(0, 10));
    assert!(
        !ledger.deletable(7, 0),
        "a partition the ledger doesn't know"
    );
}

#[test]
fn commits_are_monotonic_and_forget_only_what_is_done() {
    let mut ledger = ledger(policy());
    read(&mut ledger, &[0, 1]);
    succeeded(&mut ledger, 0, 1);
    ledger.committed(0, 1);
    ledger.committed(0, 0);
    assert_eq!(
        ledger.fetch_position(0),
        Some(1),
        "a late confirmation of an older commit"
    );
    assert_eq!(
        ledger.received(message(0)),
        vec![],
        "re-read below the commit"
    );
    assert_eq!(ledger.status().committed, BTreeMap::from([(0, 1), (1, 0)]));
}

#[test]
fn no_input_panics() {
    let mut ledger = ledger(DispatchPolicy {
        max_attempts: 0,
        ..policy()
    });
    let zero = ObservedJob {
        attempt: 0,
        ..job()
    };
    assert_eq!(ledger.observed(zero), vec![], "attempt 0 is no Job of ours");
    ledger.created(42, 7, 1);
    assert_eq!(ledger.dead_lettered(42, 7), vec![]);
    assert!(!ledger.deletable(42, 7));
    assert_eq!(ledger.fetch_position(42), None);
    // An unknown partition: the controller read from where the reset policy started.
    let unknown = Message {
        partition: 42,
        ..message(100)
    };
    let first = Action::CreateJob {
        partition: 42,
        offset: 100,
        attempt: 1,
    };
    assert_eq!(ledger.received(unknown), vec![first]);
    // Out of order (the controller's bug: 3 counts as read when 5 arrives first), with
    // max_attempts 0 counting as 1.
    read(&mut ledger, &[5, 3]);
    let failure = ObservedJob {
        offset: 5,
        outcome: failed("x"),
        ..job()
    };
    let actions = ledger.observed(failure);
    assert!(matches!(
        actions.as_slice(),
        [Action::DeadLetter { attempts: 1, .. }]
    ));
    assert_eq!(ledger.commits(), vec![(0, 3), (42, 100)]);
    ledger.observed(ObservedJob {
        partition: 42,
        offset: 100,
        outcome: Outcome::Succeeded,
        ..job()
    });
    assert_eq!(ledger.commits(), vec![(0, 3), (42, 101)]);
    // The last offset there is.
    assert_eq!(read(&mut ledger, &[i64::MAX]).len(), 1);
}
