//! Carrying out the ledger's actions: a Job (and its message Secret) per attempt, dead letters,
//! recorded failures. Each step is idempotent, so a step repeated after a crash or a failed
//! attempt does no harm: a Job's name is deterministic (`AlreadyExists` means created), the Secret
//! is named after its Job, and the annotation that records a dead letter is a merge patch.

use jobtide_api::ScaledJob;
use jobtide_api::delivery::{Delivery, message_job, owned_by};
use jobtide_api::trigger::KafkaDispatchTrigger;
use jobtide_core::dispatch::{
    DEAD_LETTERED_ANNOTATION, DispatchHash, JobCoordinates, Ledger, ObservedJob, Outcome, job_name,
};
use jobtide_core::status::Event;
use jobtide_kafka::dispatch::DispatchConsumer;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobtide_core::dispatch::Message;

use super::results::{Ending, OutcomeRecord, RecordedOutcome, Results};
use super::{MessageOutcome, trace};
use crate::context::Context;

/// A step that failed and will be tried again: the category (a metric label) and the text.
#[derive(Debug, Clone)]
pub(crate) struct StepError {
    pub category: &'static str,
    pub message: String,
    /// A ResourceQuota refused the Job (`exceeded quota …`): a capacity state, not a failure.
    pub quota_refusal: Option<String>,
}

impl StepError {
    fn api(operation: String, error: &kube::Error) -> Self {
        Self {
            category: "api",
            message: format!("{operation}: {error}"),
            quota_refusal: crate::capacity::quota_refusal(error),
        }
    }
}

/// Where a dispatcher acts.
pub(crate) struct Scope<'a> {
    pub context: &'a Context,
    pub scaled_job: &'a ScaledJob,
    pub trigger: &'a KafkaDispatchTrigger,
    pub consumer: &'a DispatchConsumer,
    pub hash: DispatchHash,
    /// Jobs this dispatcher created (for the aggregated `KEDAJobsCreated` event).
    pub created: &'a std::sync::atomic::AtomicU64,
    /// Outcome records waiting for the results topic.
    pub results: &'a Results,
}

impl Scope<'_> {
    /// The name of the Job for `attempt` of the message at (`partition`, `offset`).
    pub fn name(&self, partition: i32, offset: i64, attempt: u32) -> String {
        job_name(
            &self.scaled_job.name_any(),
            &self.trigger.topic,
            partition,
            offset,
            attempt,
        )
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(
            self.context.client.clone(),
            &self.scaled_job.namespace().unwrap_or_default(),
        )
    }

    /// Creates the Job for `attempt` of the message at (`partition`, `offset`); the ledger hears
    /// of it. A message that can't be delivered as the trigger says fails for good (dead letter
    /// or record, with the reason), without a Job.
    pub async fn create_job(
        &self,
        ledger: &mut Ledger,
        partition: i32,
        offset: i64,
        attempt: u32,
    ) -> Result<Vec<jobtide_core::dispatch::Action>, StepError> {
        let Some(message) = ledger.message(partition, offset).cloned() else {
            // The ledger asks only for messages it holds; nothing to do otherwise.
            return Ok(Vec::new());
        };
        let name = self.name(partition, offset, attempt);
        let labels = JobCoordinates {
            partition,
            offset,
            attempt,
            hash: self.hash,
        }
        .labels();
        let trace = trace::message_trace(self, partition, offset, Some(&message), None);
        let traceparent = self
            .context
            .config
            .traces
            .then(|| trace.job_traceparent(attempt).to_string());
        let delivery = Delivery {
            job_name: &name,
            labels: &labels,
            topic: &self.trigger.topic,
            partition,
            offset,
            attempt,
            timestamp_ms: message.timestamp_ms,
            key: message.key.as_deref(),
            value: message.value.as_deref(),
            headers: &message.headers,
            payload: self.trigger.payload,
            traceparent: traceparent.as_deref(),
        };
        let (job, secret) = match message_job(
            self.scaled_job,
            &self.context.config.operator_version,
            &delivery,
        ) {
            Ok(built) => built,
            Err(error) => {
                let attempts = ledger.policy().max_attempts.max(attempt);
                return Ok(ledger.observed(ObservedJob {
                    partition,
                    offset,
                    attempt: attempts,
                    outcome: Outcome::Failed {
                        reason: format!("not delivered: {error}"),
                    },
                    dead_lettered: false,
                }));
            }
        };
        let jobs = self.jobs();
        let created = match jobs.create(&PostParams::default(), &job).await {
            Ok(created) => {
                self.created
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::capacity::created(self.context, &self.scaled_job.uid().unwrap_or_default());
                self.context
                    .metrics
                    .job_created(&Context::owner(self.scaled_job), true);
                self.context
                    .metrics
                    .dispatch
                    .message(MessageOutcome::Created);
                if attempt > 1 {
                    self.context
                        .metrics
                        .dispatch
                        .retried(&Context::owner(self.scaled_job));
                }
                tracing::debug!(
                    trace_id = %trace::trace_id_text(&trace),
                    scaled_job = %self.scaled_job.name_any(),
                    namespace = %self.scaled_job.namespace().unwrap_or_default(),
                    job = %name,
                    topic = %self.trigger.topic,
                    partition,
                    offset,
                    attempt,
                    "dispatched a Job"
                );
                if attempt == 1
                    && let Some(at) = message.timestamp_ms
                {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis());
                    #[allow(clippy::cast_precision_loss)] // milliseconds fit an f64 exactly
                    let seconds =
                        (i128::try_from(now).unwrap_or(i128::MAX) - i128::from(at)) as f64 / 1000.0;
                    self.context.metrics.dispatch.dispatched_after(seconds);
                }
                created
            }
            // Created before (a restart, or a create whose answer was lost): its uid, for the
            // Secret's owner, comes from the Job cache (no extra permission, no extra call).
            Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => {
                self.cached_job(&name).ok_or_else(|| StepError {
                    category: "api",
                    message: format!("Job {name} exists but is not in the Job cache yet"),
                    quota_refusal: None,
                })?
            }
            Err(error) => {
                self.context
                    .metrics
                    .job_created(&Context::owner(self.scaled_job), false);
                return Err(StepError::api(format!("creating Job {name}"), &error));
            }
        };
        if let Some(secret) = secret {
            self.ensure_secret(owned_by(secret, &created)).await?;
        }
        ledger.created(partition, offset, attempt);
        Ok(Vec::new())
    }

    /// The Job `name` as the operator's Job cache holds it.
    pub fn cached_job(&self, name: &str) -> Option<Job> {
        self.context
            .jobs
            .of(&Context::owner(self.scaled_job))
            .into_iter()
            .find(|job| job.metadata.name.as_deref() == Some(name))
            .map(|job| Job::clone(&job))
    }

    /// Creates a message Secret unless it exists.
    pub async fn ensure_secret(&self, secret: Secret) -> Result<(), StepError> {
        let api: Api<Secret> = Api::namespaced(
            self.context.client.clone(),
            &self.scaled_job.namespace().unwrap_or_default(),
        );
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => Ok(()),
            Err(error) => Err(StepError::api(
                format!("creating Secret {}", secret.name_any()),
                &error,
            )),
        }
    }

    /// Produces the message to the dead-letter topic, then marks its last Job.
    pub async fn dead_letter(
        &self,
        ledger: &mut Ledger,
        partition: i32,
        offset: i64,
        attempts: u32,
        reason: &str,
    ) -> Result<Vec<jobtide_core::dispatch::Action>, StepError> {
        let Some(message) = ledger.message(partition, offset).cloned() else {
            return Ok(Vec::new());
        };
        self.consumer
            .dead_letter(&message, attempts, reason)
            .await
            .map_err(|e| StepError {
                category: e.category(),
                message: e.to_string(),
                quota_refusal: None,
            })?;
        let more = ledger.dead_lettered(partition, offset);
        self.context
            .metrics
            .dispatch
            .message(MessageOutcome::DeadLettered);
        self.context
            .metrics
            .dispatch
            .dead_lettered(&Context::owner(self.scaled_job));
        self.message_failed(
            Some(&message),
            (partition, offset),
            attempts,
            trace::MessageEnd::DeadLettered(reason),
        );
        let topic = self
            .trigger
            .dead_letter_topic
            .as_deref()
            .unwrap_or_default();
        self.finish(
            partition,
            offset,
            attempts,
            Event::message_dead_lettered(format!(
                "message {}/{partition}/{offset} failed {attempts} attempt(s) and went to {topic}: {reason}",
                self.trigger.topic
            )),
        )
        .await?;
        Ok(more)
    }

    /// Records a message that failed for good with no dead-letter topic.
    pub async fn record_failure(
        &self,
        message: Option<&Message>,
        (partition, offset): (i32, i64),
        attempts: u32,
        reason: &str,
    ) -> Result<(), StepError> {
        self.context
            .metrics
            .dispatch
            .message(MessageOutcome::Dropped);
        self.message_failed(
            message,
            (partition, offset),
            attempts,
            trace::MessageEnd::Failed(reason),
        );
        self.finish(
            partition,
            offset,
            attempts,
            Event::message_failed(format!(
                "message {}/{partition}/{offset} failed {attempts} attempt(s) and is skipped (no deadLetterTopic): {reason}",
                self.trigger.topic
            )),
        )
        .await
    }

    /// The span and log line of a message that failed for good (its last Job, if any, from the
    /// cache: the span starts at the message's timestamp, else at that Job's creation).
    fn message_failed(
        &self,
        message: Option<&Message>,
        (partition, offset): (i32, i64),
        attempts: u32,
        how: trace::MessageEnd<'_>,
    ) {
        let job = self.cached_job(&self.name(partition, offset, attempts));
        let trace = trace::message_trace(self, partition, offset, message, job.as_ref());
        let now = SystemTime::now();
        let times = job.as_ref().map(|job| {
            let pods = self.context.pods.of(&Context::owner(self.scaled_job));
            crate::job_metrics::JobTimes::of(job, &pods, now)
        });
        let (outcome, reason) = match how {
            trace::MessageEnd::Succeeded => (RecordedOutcome::Succeeded, None),
            trace::MessageEnd::DeadLettered(reason) => {
                (RecordedOutcome::DeadLettered, Some(reason))
            }
            trace::MessageEnd::Failed(reason) => (RecordedOutcome::Failed, Some(reason)),
        };
        let name = job.as_ref().map(ResourceExt::name_any);
        self.results.push(
            self,
            OutcomeRecord::new(
                self,
                &trace,
                &Ending {
                    partition,
                    offset,
                    attempts,
                    outcome,
                    reason,
                    message_timestamp: message.and_then(|m| m.timestamp_ms),
                    job: name.as_deref().zip(times.as_ref()),
                    finished: now,
                },
            ),
        );
        // The span holds its Jobs' spans: from the message's timestamp or its first Job's
        // creation, whichever is earlier (Kubernetes' times are whole seconds), to now or the
        // last Job's end. (Only worked out when spans are made.)
        if trace::enabled(self) {
            let first_created = (1..=attempts)
                .find_map(|attempt| self.cached_job(&self.name(partition, offset, attempt)))
                .and_then(|job| job.metadata.creation_timestamp)
                .map(|created| SystemTime::from(created.0));
            let start = message
                .and_then(|m| m.timestamp_ms)
                .and_then(|ms| u64::try_from(ms).ok())
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
                .into_iter()
                .chain(first_created)
                .min()
                .unwrap_or(now);
            let end = times.map_or(now, |t| t.finished.max(now));
            trace::message_finished(
                self,
                &trace,
                (partition, offset),
                attempts,
                (start, end),
                how,
            );
        }
        tracing::warn!(
            trace_id = %trace::trace_id_text(&trace),
            scaled_job = %self.scaled_job.name_any(),
            namespace = %self.scaled_job.namespace().unwrap_or_default(),
            topic = %self.trigger.topic,
            partition,
            offset,
            attempts,
            outcome = ?how,
            "message failed for good"
        );
    }

    /// The warning event, and the annotation on the message's last Job that tells a restarted
    /// dispatcher the message is done.
    async fn finish(
        &self,
        partition: i32,
        offset: i64,
        attempts: u32,
        event: Event,
    ) -> Result<(), StepError> {
        self.context.publish(self.scaled_job, &[event]).await;
        let name = self.name(partition, offset, attempts);
        let patch = json!({"metadata": {"annotations": {DEAD_LETTERED_ANNOTATION: "true"}}});
        match self
            .jobs()
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            // No Job (the message could not be delivered at all): nothing to mark.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(StepError::api(format!("marking Job {name} done"), &error)),
            Ok(_) => Ok(()),
        }
    }
}
