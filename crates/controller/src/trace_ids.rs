//! Span ids chosen by the caller, for spans emitted after the fact.
//!
//! A dispatched message's spans are emitted when their end is known, possibly by another
//! operator than the one that created the Job, and the Job's `TRACEPARENT` names its span
//! before that span exists: their ids are computed (`jobtide_core::dispatch::MessageTrace`).
//! The OpenTelemetry SDK's tracer takes ids only from its [`IdGenerator`]; [`FixedIds`] is that
//! generator: random ids (the SDK's own [`RandomIdGenerator`]) unless [`start_with_ids`] set the
//! next ones on this thread, for the one synchronous `build_with_context` call it makes.
//!
//! The process installs it (`jobtide operator`'s telemetry setup); without it (no tracer
//! provider, or another generator) spans still work, with random ids.

use std::cell::Cell;

use opentelemetry::Context;
use opentelemetry::trace::{SpanBuilder, SpanId, TraceId, Tracer};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

thread_local! {
    /// The ids the next span built on this thread takes.
    static NEXT: Cell<(Option<TraceId>, Option<SpanId>)> = const { Cell::new((None, None)) };
}

/// An [`IdGenerator`] that hands out the ids [`start_with_ids`] chose, random ones otherwise.
#[derive(Debug, Default)]
pub struct FixedIds {
    random: RandomIdGenerator,
}

impl IdGenerator for FixedIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT.with(|next| {
            let (trace, span) = next.get();
            next.set((None, span));
            trace.unwrap_or_else(|| self.random.new_trace_id())
        })
    }

    fn new_span_id(&self) -> SpanId {
        NEXT.with(|next| {
            let (trace, span) = next.get();
            next.set((trace, None));
            span.unwrap_or_else(|| self.random.new_span_id())
        })
    }
}

/// Starts the span `builder` under `parent` with the span id `span` (and the trace id `trace`
/// when `parent` holds no span: a new trace).
pub(crate) fn start_with_ids<T: Tracer>(
    tracer: &T,
    builder: SpanBuilder,
    parent: &Context,
    trace: TraceId,
    span: SpanId,
) -> T::Span {
    NEXT.with(|next| next.set((Some(trace), Some(span))));
    let started = tracer.build_with_context(builder, parent);
    // The generator is not asked for a trace id under a parent: nothing may be left over.
    NEXT.with(|next| next.set((None, None)));
    started
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_ids_are_taken_once_then_ids_are_random_again() {
        let ids = FixedIds::default();
        NEXT.with(|next| {
            next.set((Some(TraceId::from(7_u128)), Some(SpanId::from(9_u64))));
        });
        assert_eq!(ids.new_span_id(), SpanId::from(9_u64));
        assert_eq!(ids.new_trace_id(), TraceId::from(7_u128));
        assert_ne!(ids.new_span_id(), SpanId::from(9_u64));
        assert_ne!(ids.new_trace_id(), TraceId::from(7_u128));
    }
}
