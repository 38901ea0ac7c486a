//! Outcome records (`resultsTopic`): one record per finished message, so that a record of every
//! message's processing stays in Kafka after its Jobs are deleted.
//!
//! The key is the message's coordinates, `<topic>/<partition>/<offset>` (a compacted results
//! topic keeps the last record of each message); the value is JSON:
//!
//! ```json
//! {"topic": "orders", "partition": 0, "offset": 41, "scaledJob": "default/orders",
//!  "job": "orders-0a1b2c3d-0-41-2", "outcome": "succeeded", "attempts": 2,
//!  "messageTimestamp": 1764000000000, "jobCreated": "…", "jobStarted": "…",
//!  "finished": "…", "traceId": "4bf92f3577b34da6a3ce929d0e0e4736"}
//! ```
//! `outcome` is `succeeded`, `dead_lettered` or `failed` (failed for good without a dead-letter
//! topic), with `reason` for the last two; `job` and the Job's times are absent for a message
//! that could not be delivered (no Job).
//!
//! # Guarantees
//! At least once: a message's offset is committed only after its record is acknowledged, and a
//! restarted dispatcher writes the record again for every finished message above the commit (a
//! crash between the record and the commit repeats it, under the same key).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use jobtide_core::dispatch::MessageTrace;
use jobtide_kafka::dispatch::DispatchConsumer;
use kube::ResourceExt;
use serde::Serialize;

use super::act::{Scope, StepError};
use super::trace::trace_id_text;
use crate::job_metrics::JobTimes;

/// How a message ended, in its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RecordedOutcome {
    Succeeded,
    DeadLettered,
    Failed,
}

/// One finished message's record.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutcomeRecord {
    topic: String,
    partition: i32,
    offset: i64,
    scaled_job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<String>,
    outcome: RecordedOutcome,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_started: Option<String>,
    finished: String,
    trace_id: String,
}

/// What a record says about its message.
#[derive(Debug)]
pub(crate) struct Ending<'a> {
    pub partition: i32,
    pub offset: i64,
    pub attempts: u32,
    pub outcome: RecordedOutcome,
    pub reason: Option<&'a str>,
    pub message_timestamp: Option<i64>,
    /// The last Job's name and times, when it has one.
    pub job: Option<(&'a str, &'a JobTimes)>,
    pub finished: SystemTime,
}

fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time).map_or_else(|_| String::new(), |t| t.to_string())
}

impl OutcomeRecord {
    pub fn new(scope: &Scope<'_>, trace: &MessageTrace, ending: &Ending<'_>) -> Self {
        Self {
            topic: scope.trigger.topic.clone(),
            partition: ending.partition,
            offset: ending.offset,
            scaled_job: format!(
                "{}/{}",
                scope.scaled_job.namespace().unwrap_or_default(),
                scope.scaled_job.name_any()
            ),
            job: ending.job.map(|(name, _)| name.to_owned()),
            outcome: ending.outcome,
            attempts: ending.attempts,
            reason: ending.reason.map(str::to_owned),
            message_timestamp: ending.message_timestamp,
            job_created: ending.job.map(|(_, times)| rfc3339(times.created)),
            job_started: ending.job.and_then(|(_, times)| times.running).map(rfc3339),
            finished: rfc3339(ending.finished),
            trace_id: trace_id_text(trace),
        }
    }

    fn key(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// Records waiting to be written; the dispatcher commits nothing while one waits.
#[derive(Debug, Default)]
pub(crate) struct Results {
    waiting: Mutex<VecDeque<OutcomeRecord>>,
}

impl Results {
    /// Queues `record` (when the trigger has a results topic).
    pub fn push(&self, scope: &Scope<'_>, record: OutcomeRecord) {
        if scope.trigger.results_topic.is_some()
            && let Ok(mut waiting) = self.waiting.lock()
        {
            waiting.push_back(record);
        }
    }

    /// Writes every waiting record, in order; stops at the first failure (kept, tried again).
    pub async fn write(&self, consumer: &DispatchConsumer) -> Result<(), StepError> {
        loop {
            let next = self.waiting.lock().ok().and_then(|w| w.front().cloned());
            let Some(record) = next else {
                return Ok(());
            };
            let value = serde_json::to_vec(&record).map_err(|e| StepError {
                category: "results",
                message: format!("encoding an outcome record: {e}"),
                quota_refusal: None,
            })?;
            consumer
                .result(&record.key(), &value)
                .await
                .map_err(|e| StepError {
                    category: e.category(),
                    message: e.to_string(),
                    quota_refusal: None,
                })?;
            if let Ok(mut waiting) = self.waiting.lock() {
                waiting.pop_front();
            }
        }
    }
}
