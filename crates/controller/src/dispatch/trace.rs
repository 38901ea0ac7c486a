//! Dispatch mode's spans (docs/observability.md): per message, a `jobtide.message` span
//! (parented on the producer's span named by the message's `traceparent` header, or a new trace)
//! and under it one `jobtide.job` span per attempt, each with `jobtide.job.queued` (created →
//! its pod started) and `jobtide.job.running` (pod started → finished).
//!
//! A Job may run for hours and outlive the operator that made it, so no span stays open: each
//! is emitted when its end is known, with the times the Job's and its pods' status record
//! (Kubernetes writes them to the second), under ids every operator computes alike
//! (`jobtide_core::dispatch::MessageTrace`, [`crate::trace_ids`]). The Job's `TRACEPARENT` names
//! its attempt span, so the Job's own spans join the trace.
//!
//! # Caveats
//! Spans are emitted at most once: by the session that sees the Job finish. A Job that finishes
//! while no operator runs (or between a crash and the next session's first look) has no span.

use std::time::SystemTime;

use jobtide_api::delivery::TRACEPARENT_ANNOTATION;
use jobtide_core::dispatch::{Message, MessageTrace, Outcome, traceparent_header};
use k8s_openapi::api::batch::v1::Job;
use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer,
};
use opentelemetry::{Context as OtelContext, KeyValue, global};

use super::act::Scope;
use crate::job_metrics::JobTimes;
use crate::trace_ids::start_with_ids;

/// The instrumentation scope of jobtide's spans.
const TRACER: &str = "jobtide";

/// How a message ended, for its span.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MessageEnd<'a> {
    /// Its Job succeeded.
    Succeeded,
    /// It went to the dead-letter topic after `reason`.
    DeadLettered(&'a str),
    /// It failed for good after `reason`, with no dead-letter topic.
    Failed(&'a str),
}

/// Whether spans are made at all (the operator exports traces). When not, the span functions
/// return at once and their callers skip what only a span needs: with traces off no per-message
/// work is spent on spans that would be dropped.
pub(crate) fn enabled(scope: &Scope<'_>) -> bool {
    scope.context.config.traces
}

/// The trace of the message at (`partition`, `offset`): its `traceparent` header from the
/// message when the dispatcher holds it, else from the annotation on its Job.
pub(crate) fn message_trace(
    scope: &Scope<'_>,
    partition: i32,
    offset: i64,
    message: Option<&Message>,
    job: Option<&Job>,
) -> MessageTrace {
    let header = message
        .and_then(|m| traceparent_header(&m.headers))
        .or_else(|| {
            job?.metadata
                .annotations
                .as_ref()?
                .get(TRACEPARENT_ANNOTATION)
                .map(String::as_str)
        });
    MessageTrace::of(header, scope.hash, partition, offset)
}

/// The trace id as logs and the results topic write it (32 lowercase hex digits).
pub(crate) fn trace_id_text(trace: &MessageTrace) -> String {
    format!("{:032x}", trace.trace_id)
}

fn remote(trace_id: u128, span_id: u64, sampled: bool) -> OtelContext {
    OtelContext::new().with_remote_span_context(SpanContext::new(
        TraceId::from(trace_id),
        SpanId::from(span_id),
        if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    ))
}

fn common(scope: &Scope<'_>, partition: i32, offset: i64) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.destination.name", scope.trigger.topic.clone()),
        KeyValue::new("messaging.destination.partition.id", partition.to_string()),
        KeyValue::new("messaging.kafka.offset", offset),
        KeyValue::new(
            "messaging.consumer.group.name",
            scope.trigger.consumer_group.clone(),
        ),
        KeyValue::new(
            "k8s.namespace.name",
            kube::ResourceExt::namespace(scope.scaled_job).unwrap_or_default(),
        ),
        KeyValue::new(
            "jobtide.scaled_job",
            kube::ResourceExt::name_any(scope.scaled_job),
        ),
    ]
}

/// Emits the span of the finished Job for `attempt` (with its queued and running parts).
pub(crate) fn attempt_finished(
    scope: &Scope<'_>,
    trace: &MessageTrace,
    job: &Job,
    (partition, offset, attempt): (i32, i64, u32),
    outcome: &Outcome,
    times: &JobTimes,
) {
    if !enabled(scope) {
        return;
    }
    let tracer = global::tracer(TRACER);
    let mut attributes = common(scope, partition, offset);
    attributes.push(KeyValue::new(
        "k8s.job.name",
        job.metadata.name.clone().unwrap_or_default(),
    ));
    attributes.push(KeyValue::new("jobtide.attempt", i64::from(attempt)));
    attributes.push(KeyValue::new("jobtide.outcome", outcome_label(outcome)));
    let builder = tracer
        .span_builder("jobtide.job")
        .with_kind(SpanKind::Internal)
        .with_start_time(times.created)
        .with_attributes(attributes);
    let mut span = start_with_ids(
        &tracer,
        builder,
        &remote(trace.trace_id, trace.span_id, trace.sampled),
        TraceId::from(trace.trace_id),
        SpanId::from(trace.attempt_span_id(attempt)),
    );
    if let Outcome::Failed { reason } = outcome {
        span.set_status(Status::error(reason.clone()));
    }
    if let Some(running) = times.running {
        let parent = OtelContext::new().with_remote_span_context(span.span_context().clone());
        for (name, start, end) in [
            ("jobtide.job.queued", times.created, running),
            ("jobtide.job.running", running, times.finished),
        ] {
            tracer
                .span_builder(name)
                .with_start_time(start)
                .start_with_context(&tracer, &parent)
                .end_with_timestamp(end);
        }
    }
    span.end_with_timestamp(times.finished);
}

/// Emits the message's span, from `start` (its timestamp, or its first Job's creation) to `end`.
pub(crate) fn message_finished(
    scope: &Scope<'_>,
    trace: &MessageTrace,
    (partition, offset): (i32, i64),
    attempts: u32,
    (start, end): (SystemTime, SystemTime),
    how: MessageEnd<'_>,
) {
    if !enabled(scope) {
        return;
    }
    let tracer = global::tracer(TRACER);
    let mut attributes = common(scope, partition, offset);
    attributes.push(KeyValue::new("jobtide.attempts", i64::from(attempts)));
    let (outcome, reason) = match how {
        MessageEnd::Succeeded => ("succeeded", None),
        MessageEnd::DeadLettered(reason) => {
            attributes.push(KeyValue::new(
                "jobtide.dead_letter_topic",
                scope.trigger.dead_letter_topic.clone().unwrap_or_default(),
            ));
            ("dead_lettered", Some(reason))
        }
        MessageEnd::Failed(reason) => ("failed", Some(reason)),
    };
    attributes.push(KeyValue::new("jobtide.outcome", outcome));
    let builder = tracer
        .span_builder("jobtide.message")
        .with_kind(SpanKind::Consumer)
        .with_start_time(start.min(end))
        .with_attributes(attributes);
    let parent = trace.parent.map_or_else(OtelContext::new, |p| {
        remote(p.trace_id, p.span_id, p.sampled())
    });
    let mut span = start_with_ids(
        &tracer,
        builder,
        &parent,
        TraceId::from(trace.trace_id),
        SpanId::from(trace.span_id),
    );
    if let Some(reason) = reason {
        span.set_status(Status::error(reason.to_owned()));
    }
    span.end_with_timestamp(end);
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Running => "running",
        Outcome::Succeeded => "succeeded",
        Outcome::Failed { .. } => "failed",
    }
}
