//! One dispatcher's loop: rebuild the ledger from the group's commits and the Jobs, then read,
//! act, observe and commit until stopped. A failure of the consumer itself (configuration,
//! metadata, positions) ends the session; the task starts a new one after a backoff, rebuilding
//! from scratch, which the ledger guarantees creates nothing twice.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobtide_api::ScaledJob;
use jobtide_api::delivery::{Delivery, message_job, owned_by};
use jobtide_api::facts::jobs_facts;
use jobtide_api::trigger::{CommitOn as TriggerCommitOn, KafkaDispatchTrigger};
use jobtide_core::dispatch::{
    Action, CommitOn, DispatchHash, DispatchPolicy, JobCoordinates, Ledger, ObservedJob, Outcome,
};
use jobtide_core::jobs::history_to_delete;
use jobtide_kafka::dispatch::DispatchConsumer;
use k8s_openapi::api::batch::v1::Job;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use tokio::sync::{Notify, watch};

use super::act::{Scope, StepError};
use super::observe::{Changes, DispatchedJob, dispatched};
use super::results::{Ending, OutcomeRecord, RecordedOutcome, Results};
use super::{MessageOutcome, Snapshot, trace};
use crate::context::Context;

/// How often a dispatcher looks at its Jobs without being woken (a missed wake-up costs this
/// much delay, never a lost observation).
const OBSERVE_EVERY: Duration = Duration::from_secs(1);
/// The least time between two reconciles a dispatcher asks for (its status follows its ledger
/// this often at most).
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Wake-ups closer together than this are answered together: each look passes over every Job
/// of the ScaledJob, and during a burst every created Job and its pod wake the dispatcher
/// (a look after each made a burst of n messages cost n² steps). A Job's end is seen this much
/// later at most.
const OBSERVE_AT_MOST_EVERY: Duration = Duration::from_millis(50);
/// The first wait after a failed session; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between sessions.
const MAX_BACKOFF: Duration = Duration::from_mins(1);
/// A session that ran this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_mins(1);

/// What a dispatcher task needs.
pub(crate) struct Task {
    pub context: Arc<Context>,
    pub trigger: KafkaDispatchTrigger,
    pub scaled_job: watch::Receiver<Arc<ScaledJob>>,
    pub gate: watch::Receiver<jobtide_core::capacity::Gate>,
    pub wake: Arc<Notify>,
    pub snapshot: Arc<Mutex<Snapshot>>,
}

impl Task {
    fn report(&self, error: &StepError) {
        self.context.metrics.dispatch.error(error.category);
        let scaled_job = self.scaled_job.borrow().clone();
        tracing::warn!(
            scaled_job = %format!("{}/{}", scaled_job.namespace().unwrap_or_default(), scaled_job.name_any()),
            topic = %self.trigger.topic,
            category = error.category,
            error = %error.message,
            "dispatch step failed"
        );
        if let Ok(mut snapshot) = self.snapshot.lock() {
            snapshot.error = Some(error.message.clone());
        }
    }

    fn healthy(&self, ledger: &Ledger) {
        if let Ok(mut snapshot) = self.snapshot.lock() {
            snapshot.error = None;
            snapshot.ledger = Some(ledger.status());
        }
    }
}

/// Runs sessions until the task is aborted.
pub(crate) async fn run(task: Task) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let began = Instant::now();
        let error = session(&task).await;
        task.report(&error);
        if began.elapsed() >= HEALTHY_SESSION {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn policy(trigger: &KafkaDispatchTrigger, scaled_job: &ScaledJob) -> DispatchPolicy {
    DispatchPolicy {
        max_attempts: trigger.max_attempts,
        dead_letter: trigger.dead_letter_topic.is_some(),
        commit_on: match trigger.commit_on {
            TriggerCommitOn::Complete => CommitOn::Complete,
            TriggerCommitOn::Create => CommitOn::Create,
        },
        max_in_flight: u32::try_from(scaled_job.spec.bounds().max).unwrap_or(u32::MAX),
    }
}

fn consumer_error(error: &jobtide_kafka::dispatch::DispatchError) -> StepError {
    StepError {
        category: error.category(),
        message: error.to_string(),
        quota_refusal: None,
    }
}

/// One session; returns why it ended.
async fn session(task: &Task) -> StepError {
    let context = &task.context;
    let trigger = &task.trigger;
    let first = task.scaled_job.borrow().clone();
    let hash = DispatchHash::of(&first.name_any(), &trigger.topic);
    let owner = Context::owner(&first);
    let servers = context
        .config
        .bootstrap_servers_override
        .as_ref()
        .map(|servers| servers.join(","));
    let consumer =
        match DispatchConsumer::connect(trigger, servers.as_deref(), &context.config.gssapi) {
            Ok(consumer) => consumer,
            Err(error) => return consumer_error(&error),
        };
    let positions = match consumer.start_positions().await {
        Ok(positions) => positions,
        Err(error) => return consumer_error(&error),
    };
    let found = dispatched(&context.jobs.of(&owner), hash);
    let observed: Vec<_> = found.iter().map(|j| j.observed.clone()).collect();
    let (mut ledger, actions) = Ledger::rebuild(policy(trigger, &first), &positions, &observed);
    let start: BTreeMap<i32, i64> = positions
        .iter()
        .map(|(&p, &o)| (p, ledger.fetch_position(p).unwrap_or(o)))
        .collect();
    if let Err(error) = consumer.assign(&start) {
        return consumer_error(&error);
    }
    let results = Results::default();
    let created = std::sync::atomic::AtomicU64::new(0);
    record_again(
        &Scope {
            context,
            scaled_job: &first,
            trigger,
            consumer: &consumer,
            hash,
            created: &created,
            results: &results,
        },
        &found,
        &positions,
    );
    // Jobs running at the restart may lack their message Secret (a crash between the two
    // creations): it is made again when their message is read again.
    let mut unverified: BTreeMap<(i32, i64), DispatchedJob> = found
        .into_iter()
        .filter(|j| matches!(j.observed.outcome, Outcome::Running))
        .map(|j| ((j.observed.partition, j.observed.offset), j))
        .collect();
    let mut pending: VecDeque<Action> = actions.into();
    // Jobs finished before this session were counted by the session that saw them finish.
    let mut counted: HashSet<String> = finished_names(&context.jobs.of(&owner), hash);
    let mut changes = Changes::default();
    let mut paused = false;
    // What the ScaledJob's status was last asked to show, and when.
    let mut reported: Option<jobtide_core::dispatch::LedgerStatus> = None;
    let mut reported_at = Instant::now();
    let mut tick = tokio::time::interval(OBSERVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut observed_at = tokio::time::Instant::now();
    let mut woken = false;
    // A quota refused a Job: hold creations until the reconcile's gate changes (it then knows
    // of the refusal, and says when one Job may be tried again).
    let mut quota_hold = false;
    let mut gates = task.gate.clone();
    tracing::info!(topic = %trigger.topic, group = %trigger.consumer_group, ?start, "dispatching");
    loop {
        let scaled_job = task.scaled_job.borrow().clone();
        let wanted = policy(trigger, &scaled_job);
        if wanted != *ledger.policy() {
            pending.extend(ledger.set_policy(wanted));
        }
        let scope = Scope {
            context,
            scaled_job: &scaled_job,
            trigger,
            consumer: &consumer,
            hash,
            created: &created,
            results: &results,
        };
        let mut failed = false;
        if quota_hold && gates.has_changed().unwrap_or(false) {
            quota_hold = false;
        }
        let gate = *gates.borrow_and_update();
        let hold_creations = quota_hold || gate == jobtide_core::capacity::Gate::Stopped;
        while let Some(action) = pending.front().cloned() {
            if hold_creations && matches!(action, Action::CreateJob { .. }) {
                break;
            }
            let result = match &action {
                Action::CreateJob {
                    partition,
                    offset,
                    attempt,
                } => {
                    scope
                        .create_job(&mut ledger, *partition, *offset, *attempt)
                        .await
                }
                Action::DeadLetter {
                    partition,
                    offset,
                    attempts,
                    reason,
                } => {
                    scope
                        .dead_letter(&mut ledger, *partition, *offset, *attempts, reason)
                        .await
                }
                Action::RecordFailure {
                    partition,
                    offset,
                    attempts,
                    reason,
                } => scope
                    .record_failure(
                        ledger.message(*partition, *offset),
                        (*partition, *offset),
                        *attempts,
                        reason,
                    )
                    .await
                    .map(|()| Vec::new()),
            };
            match result {
                Ok(more) => {
                    pending.pop_front();
                    pending.extend(more);
                }
                Err(error) => {
                    // Kept first in line: tried again after the next wake-up or tick.
                    if let Some(refusal) = &error.quota_refusal {
                        crate::capacity::refused(
                            context,
                            &scaled_job.uid().unwrap_or_default(),
                            &owner.0,
                            refusal.clone(),
                        );
                        context.metrics.capacity.quota_refused(&owner);
                        quota_hold = true;
                        context.refresh(&scaled_job);
                    } else {
                        task.report(&error);
                        failed = true;
                    }
                    break;
                }
            }
        }
        // A recorded failure counts as done in the ledger: it must be recorded before the
        // commit can pass its offset, so nothing is committed while actions wait.
        // Likewise every outcome record is written before the commit passes its message.
        let written = if pending.is_empty() {
            results.write(&consumer).await
        } else {
            Ok(())
        };
        if let Err(error) = &written {
            task.report(error);
            failed = true;
        }
        if pending.is_empty() && written.is_ok() {
            let commits = ledger.commits();
            if !commits.is_empty() {
                match consumer.commit(&commits).await {
                    Ok(()) => {
                        for (partition, offset) in commits {
                            ledger.committed(partition, offset);
                        }
                    }
                    Err(error) => {
                        task.report(&consumer_error(&error));
                        failed = true;
                    }
                }
            }
        }
        if !unverified.is_empty() {
            // A Job that finished or went needs no Secret.
            let running: HashSet<String> = dispatched(&context.jobs.of(&owner), hash)
                .into_iter()
                .filter(|j| matches!(j.observed.outcome, Outcome::Running))
                .map(|j| j.name)
                .collect();
            unverified.retain(|_, job| running.contains(&job.name));
        }
        // A Job found running at the restart may wait for its Secret, which needs its message
        // read again: read on at the cap until each is (a cap full of such Jobs would else never
        // free a slot).
        let pause =
            (!ledger.may_receive() || !gate.may_receive() || quota_hold) && unverified.is_empty();
        if pause != paused {
            let switched = if pause {
                consumer.pause()
            } else {
                consumer.resume()
            };
            match switched {
                Ok(()) => paused = pause,
                Err(error) => return consumer_error(&error),
            }
        }
        context
            .metrics
            .dispatch
            .set_in_flight(&owner, ledger.in_flight());
        if failed {
            if let Ok(mut snapshot) = task.snapshot.lock() {
                snapshot.ledger = Some(ledger.status());
            }
        } else {
            task.healthy(&ledger);
        }
        let jobs_created = created.swap(0, std::sync::atomic::Ordering::Relaxed);
        if jobs_created > 0
            && let Ok(mut snapshot) = task.snapshot.lock()
        {
            snapshot.jobs_created += jobs_created;
        }
        // The status follows the ledger within about a second, at most one reconcile a second.
        let now = ledger.status();
        if reported.as_ref() != Some(&now) && reported_at.elapsed() >= REFRESH_EVERY {
            context.refresh(&scaled_job);
            reported = Some(now);
            reported_at = Instant::now();
        }
        tokio::select! {
            received = consumer.recv(), if !paused => match received {
                Ok(message) => {
                    let key = (message.partition, message.offset);
                    // Offsets the consumer went past are gone from the topic: nothing to
                    // restore a Secret from.
                    unverified.retain(|&(partition, offset), _| partition != key.0 || offset >= key.1);
                    if let Some(job) = unverified.remove(&key)
                        && let Err(error) = restore_secret(&scope, &job, &message).await
                    {
                        // The message won't come again in this session: the next one reads it
                        // again from the commit.
                        return error;
                    }
                    pending.extend(ledger.received(message));
                }
                // librdkafka retries and reconnects by itself: report and read on.
                Err(error) => task.report(&consumer_error(&error)),
            },
            () = task.wake.notified(), if !woken => woken = true,
            () = tokio::time::sleep_until(observed_at + OBSERVE_AT_MOST_EVERY), if woken => {
                observe(task, &scope, &mut ledger, &mut pending, &mut counted, &mut changes);
                (observed_at, woken) = (tokio::time::Instant::now(), false);
            }
            _ = tick.tick() => {
                observe(task, &scope, &mut ledger, &mut pending, &mut counted, &mut changes);
                (observed_at, woken) = (tokio::time::Instant::now(), false);
                forget_deleted(task, &scope, &mut counted, &mut changes);
                clean_history(task, &scope, &ledger).await;
            }
        }
    }
}

/// A restarted dispatcher's outcome records for the finished messages above the commit (their
/// records may have been lost with the previous session: at least once).
fn record_again(scope: &Scope<'_>, found: &[DispatchedJob], committed: &BTreeMap<i32, i64>) {
    if scope.trigger.results_topic.is_none() {
        return;
    }
    let pods = scope.context.pods.of(&Context::owner(scope.scaled_job));
    for job in found {
        let ObservedJob {
            partition,
            offset,
            attempt,
            ref outcome,
            dead_lettered,
        } = job.observed;
        if committed.get(&partition).is_some_and(|&c| offset < c) {
            continue;
        }
        let (outcome, reason) = match outcome {
            Outcome::Succeeded => (RecordedOutcome::Succeeded, None),
            Outcome::Failed { reason } if dead_lettered => (
                if scope.trigger.dead_letter_topic.is_some() {
                    RecordedOutcome::DeadLettered
                } else {
                    RecordedOutcome::Failed
                },
                Some(reason.as_str()),
            ),
            Outcome::Failed { .. } | Outcome::Running => continue,
        };
        let trace = trace::message_trace(scope, partition, offset, None, Some(&job.job));
        let times = crate::job_metrics::JobTimes::of(&job.job, &pods, SystemTime::now());
        scope.results.push(
            scope,
            OutcomeRecord::new(
                scope,
                &trace,
                &Ending {
                    partition,
                    offset,
                    attempts: attempt,
                    outcome,
                    reason,
                    message_timestamp: None,
                    job: Some((&job.name, &times)),
                    finished: times.finished,
                },
            ),
        );
    }
}

fn finished_names(jobs: &[Arc<Job>], hash: DispatchHash) -> HashSet<String> {
    dispatched(jobs, hash)
        .into_iter()
        .filter(|j| !matches!(j.observed.outcome, Outcome::Running))
        .map(|j| j.name)
        .collect()
}

/// Tells the ledger what changed in the Job cache, counting each finished Job once.
fn observe(
    task: &Task,
    scope: &Scope<'_>,
    ledger: &mut Ledger,
    pending: &mut VecDeque<Action>,
    counted: &mut HashSet<String>,
    changes: &mut Changes,
) {
    let jobs = changes.dispatched(
        &task.context.jobs.of(&Context::owner(scope.scaled_job)),
        scope.hash,
    );
    let mut pods = None;
    for job in jobs {
        let outcome = match job.observed.outcome {
            Outcome::Running => None,
            Outcome::Succeeded => Some(MessageOutcome::Succeeded),
            Outcome::Failed { .. } => Some(MessageOutcome::Failed),
        };
        if let Some(outcome) = outcome
            && counted.insert(job.name.clone())
        {
            task.context.metrics.dispatch.message(outcome);
            let pods =
                pods.get_or_insert_with(|| task.context.pods.of(&Context::owner(scope.scaled_job)));
            finished(scope, ledger, &job, pods);
        }
        pending.extend(ledger.observed(job.observed));
    }
}

/// A Job of this session's seen finished for the first time: its span, its message's span when
/// it succeeded, the log line.
fn finished(
    scope: &Scope<'_>,
    ledger: &Ledger,
    job: &DispatchedJob,
    pods: &[Arc<k8s_openapi::api::core::v1::Pod>],
) {
    let ObservedJob {
        partition,
        offset,
        attempt,
        ref outcome,
        ..
    } = job.observed;
    let message = ledger.message(partition, offset);
    let trace = trace::message_trace(scope, partition, offset, message, Some(&job.job));
    let times = crate::job_metrics::JobTimes::of(&job.job, pods, SystemTime::now());
    trace::attempt_finished(
        scope,
        &trace,
        &job.job,
        (partition, offset, attempt),
        outcome,
        &times,
    );
    tracing::info!(
        trace_id = %trace::trace_id_text(&trace),
        scaled_job = %scope.scaled_job.name_any(),
        namespace = %scope.scaled_job.namespace().unwrap_or_default(),
        job = %job.name,
        topic = %scope.trigger.topic,
        partition,
        offset,
        attempt,
        outcome = ?outcome,
        "dispatched Job finished"
    );
    if matches!(outcome, Outcome::Succeeded) {
        scope.results.push(
            scope,
            OutcomeRecord::new(
                scope,
                &trace,
                &Ending {
                    partition,
                    offset,
                    attempts: attempt,
                    outcome: RecordedOutcome::Succeeded,
                    reason: None,
                    message_timestamp: message.and_then(|m| m.timestamp_ms),
                    job: Some((&job.name, &times)),
                    finished: times.finished,
                },
            ),
        );
        if !trace::enabled(scope) {
            return;
        }
        // From the message's timestamp or its first Job's creation, whichever is earlier
        // (Kubernetes' times are whole seconds).
        let first_created = (attempt > 1)
            .then(|| scope.cached_job(&scope.name(partition, offset, 1)))
            .flatten()
            .and_then(|job| job.metadata.creation_timestamp)
            .map_or(times.created, |created| SystemTime::from(created.0));
        let start = message
            .and_then(|m| m.timestamp_ms)
            .and_then(|ms| u64::try_from(ms).ok())
            .map_or(first_created, |ms| {
                (UNIX_EPOCH + Duration::from_millis(ms)).min(first_created)
            });
        trace::message_finished(
            scope,
            &trace,
            (partition, offset),
            attempt,
            (start, times.finished),
            trace::MessageEnd::Succeeded,
        );
    }
}

/// Forgets the Jobs deleted since (once a tick: a pass over every Job).
fn forget_deleted(
    task: &Task,
    scope: &Scope<'_>,
    counted: &mut HashSet<String>,
    changes: &mut Changes,
) {
    let jobs = task.context.jobs.of(&Context::owner(scope.scaled_job));
    changes.forget_deleted(&jobs);
    let present: HashSet<&str> = jobs
        .iter()
        .filter_map(|job| job.metadata.name.as_deref())
        .collect();
    counted.retain(|name| present.contains(name.as_str()));
}

/// The ScaledJob's history limits, applied only to Jobs whose message is committed: a Job
/// below the commit is the only record that its message was dispatched.
async fn clean_history(task: &Task, scope: &Scope<'_>, ledger: &Ledger) {
    let owner = Context::owner(scope.scaled_job);
    let jobs = task.context.jobs.of(&owner);
    let coordinates: BTreeMap<String, JobCoordinates> = jobs
        .iter()
        .filter_map(|job| {
            let labels = job.metadata.labels.as_ref()?;
            Some((job.name_any(), JobCoordinates::from_labels(labels)?))
        })
        .filter(|(_, c)| c.hash == scope.hash)
        .collect();
    let pods: Vec<Arc<k8s_openapi::api::core::v1::Pod>> = Vec::new();
    let facts = jobs_facts(&jobs, &pods);
    let doomed: Vec<String> = history_to_delete(&facts, scope.scaled_job.spec.history_limits())
        .into_iter()
        .filter(|name| {
            coordinates
                .get(*name)
                .is_some_and(|c| ledger.deletable(c.partition, c.offset))
        })
        .map(str::to_owned)
        .collect();
    let api: Api<Job> = Api::namespaced(task.context.client.clone(), &owner.0);
    for name in doomed {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => task.context.metrics.job_deleted(&owner, "history"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                task.report(&StepError {
                    category: "api",
                    message: format!("deleting Job {}/{name} (history): {error}", owner.0),
                    quota_refusal: None,
                });
                return;
            }
        }
    }
}

/// Creates the message Secret of a Job found running at a restart, if it is missing.
async fn restore_secret(
    scope: &Scope<'_>,
    job: &DispatchedJob,
    message: &jobtide_core::dispatch::Message,
) -> Result<(), StepError> {
    let labels = JobCoordinates {
        partition: job.observed.partition,
        offset: job.observed.offset,
        attempt: job.observed.attempt,
        hash: scope.hash,
    }
    .labels();
    let delivery = Delivery {
        job_name: &job.name,
        labels: &labels,
        topic: &scope.trigger.topic,
        partition: job.observed.partition,
        offset: job.observed.offset,
        attempt: job.observed.attempt,
        timestamp_ms: message.timestamp_ms,
        key: message.key.as_deref(),
        value: message.value.as_deref(),
        headers: &message.headers,
        payload: scope.trigger.payload,
        // Only the Secret is made here: the Job's environment is not.
        traceparent: None,
    };
    let Ok((_, Some(secret))) = message_job(
        scope.scaled_job,
        &scope.context.config.operator_version,
        &delivery,
    ) else {
        return Ok(());
    };
    // The Job as the cache holds it (it was found there at the restart); gone meanwhile: no
    // Secret is needed.
    let Some(created) = scope.cached_job(&job.name) else {
        return Ok(());
    };
    scope.ensure_secret(owned_by(secret, &created)).await
}
