//! Dispatch mode's series: messages by outcome, messages in flight, the time from a message's
//! timestamp to its Job's creation (its age when dispatched), retries and dead letters. Labels
//! are bounded: the outcome, and the ScaledJob (the gauge removed when its dispatcher stops, the
//! counters when the ScaledJob goes).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::OwnerKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[allow(non_snake_case)] // KEDA's label name
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScaledJobLabels {
    namespace: String,
    scaledJob: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

/// What a message came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Its Job (any attempt) was created.
    Created,
    /// Its Job succeeded.
    Succeeded,
    /// One of its Jobs failed (it may be retried).
    Failed,
    /// It was produced to the dead-letter topic.
    DeadLettered,
    /// Its Jobs failed `maxAttempts` times and there is no dead-letter topic.
    Dropped,
}

impl MessageOutcome {
    const fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
            Self::Dropped => "failed_for_good",
        }
    }
}

/// The dispatch series.
#[derive(Debug, Clone)]
pub struct DispatchMetrics {
    messages: Family<OutcomeLabels, Counter>,
    in_flight: Family<ScaledJobLabels, Gauge>,
    latency: Histogram,
    errors: Family<CategoryLabels, Counter>,
    retries: Family<ScaledJobLabels, Counter>,
    dead_letters: Family<ScaledJobLabels, Counter>,
}

impl DispatchMetrics {
    /// The series, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            messages: Family::default(),
            in_flight: Family::default(),
            // 1 ms to about 9 hours: a message may wait in a backlog long before its Job.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 25)),
            errors: Family::default(),
            retries: Family::default(),
            dead_letters: Family::default(),
        };
        registry.register(
            "jobtide_dispatch_messages",
            "Dispatch mode: messages by outcome (created, succeeded, failed, dead_lettered, failed_for_good)",
            metrics.messages.clone(),
        );
        registry.register(
            "jobtide_dispatch_in_flight",
            "Dispatch mode: messages whose Job is not finished, per ScaledJob",
            metrics.in_flight.clone(),
        );
        registry.register(
            "jobtide_dispatch_message_to_job_seconds",
            "Dispatch mode: from a message's timestamp to its first Job's creation",
            metrics.latency.clone(),
        );
        registry.register(
            "jobtide_dispatch_errors",
            "Dispatch mode: failed steps by category (config, metadata, positions, receive, commit, dead_letter, api)",
            metrics.errors.clone(),
        );
        registry.register(
            "jobtide_dispatch_retries",
            "Dispatch mode: Jobs created for a message's second or later attempt, per ScaledJob",
            metrics.retries.clone(),
        );
        registry.register(
            "jobtide_dispatch_dead_letters",
            "Dispatch mode: messages produced to the dead-letter topic, per ScaledJob",
            metrics.dead_letters.clone(),
        );
        metrics
    }

    /// A Job for a message's `attempt` (2 or more: a retry) was created.
    pub fn retried(&self, owner: &OwnerKey) {
        self.retries.get_or_create(&labels(owner)).inc();
    }

    /// A message of `owner` went to the dead-letter topic.
    pub fn dead_lettered(&self, owner: &OwnerKey) {
        self.dead_letters.get_or_create(&labels(owner)).inc();
    }

    /// The ScaledJob went: its counters go (its gauge went with its dispatcher).
    pub fn forget_scaled_job(&self, owner: &OwnerKey) {
        self.retries.remove(&labels(owner));
        self.dead_letters.remove(&labels(owner));
    }

    /// A message reached `outcome`.
    pub fn message(&self, outcome: MessageOutcome) {
        self.messages
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// A first Job was created `seconds` after its message's timestamp.
    pub fn dispatched_after(&self, seconds: f64) {
        self.latency.observe(seconds.max(0.0));
    }

    /// A dispatch step failed.
    pub fn error(&self, category: &'static str) {
        self.errors
            .get_or_create(&CategoryLabels { category })
            .inc();
    }

    /// The ScaledJob's messages in flight.
    pub fn set_in_flight(&self, owner: &OwnerKey, count: usize) {
        self.in_flight
            .get_or_create(&labels(owner))
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The ScaledJob's dispatcher stopped.
    pub fn forget(&self, owner: &OwnerKey) {
        self.in_flight.remove(&labels(owner));
    }
}

fn labels(owner: &OwnerKey) -> ScaledJobLabels {
    ScaledJobLabels {
        namespace: owner.0.clone(),
        scaledJob: owner.1.clone(),
    }
}
