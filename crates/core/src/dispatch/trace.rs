//! The trace of one message: deterministic W3C trace-context ids for its spans.
//!
//! A message's Jobs may run for hours and outlive the operator that created them, so its spans
//! can't stay open in memory: the operator emits each span once its end is known, with the
//! start and end times the Job's status records. For that the ids must be known again by any
//! operator at any time, so they are computed, not drawn at random:
//!
//! ```text
//!   producer span (the message's `traceparent` header, when well formed)
//!   └─ message span      id = f(trace, dispatch hash, partition, offset)
//!      └─ attempt span   id = f(trace, dispatch hash, partition, offset, attempt)
//!         └─ the Job's own work (the Job's `TRACEPARENT` names the attempt span)
//! ```
//!
//! The trace id is the header's; a message without a (well-formed) header starts a trace whose
//! id is computed from its coordinates too. The hash is FNV-1a 64 (as the Job names,
//! [`super::job_name`]), so ids stay the same across jobtide versions.
//!
//! # Caveats
//! A topic deleted and created again under the same name restarts its offsets: a message without
//! a `traceparent` header then gets the trace id of the earlier message at its coordinates.

use super::DispatchHash;
use super::name::fnv1a_64;

/// A parsed W3C `traceparent` (version 00): trace id, parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The 128-bit trace id (never 0).
    pub trace_id: u128,
    /// The parent's 64-bit span id (never 0).
    pub span_id: u64,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// `00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>` with non-zero ids; anything
    /// else is `None` (a malformed header is ignored, as the W3C spec asks).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if parts.next().is_some()
            || version != "00"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        let parsed = Self {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (parsed.trace_id != 0 && parsed.span_id != 0).then_some(parsed)
    }

    /// Whether the sampled flag is set.
    pub const fn sampled(self) -> bool {
        self.flags & 1 == 1
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// The value of the first `traceparent` header among `headers` (names compare case-blind), as
/// text; whether it is well formed is [`TraceParent::parse`]'s to say.
pub fn traceparent_header(headers: &[(String, Option<Vec<u8>>)]) -> Option<&str> {
    let value = headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("traceparent"))?
        .1
        .as_deref()?;
    std::str::from_utf8(value).ok()
}

/// The ids of one message's spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageTrace {
    /// The producer's span, when the message carried a well-formed `traceparent`.
    pub parent: Option<TraceParent>,
    /// The trace id (the parent's, or computed).
    pub trace_id: u128,
    /// The message span's id.
    pub span_id: u64,
    /// Whether the trace is sampled (the parent's flag; a new trace is).
    pub sampled: bool,
    hash: DispatchHash,
    partition: i32,
    offset: i64,
}

impl MessageTrace {
    /// The trace of the message at (`partition`, `offset`) of the dispatch `hash`, whose
    /// `traceparent` header (if any) is `header`.
    pub fn of(header: Option<&str>, hash: DispatchHash, partition: i32, offset: i64) -> Self {
        let parent = header.and_then(TraceParent::parse);
        let coordinates = coordinates(hash, partition, offset);
        let trace_id = parent.map_or_else(
            || {
                let high = fnv1a_64(b"trace-high\0".iter().chain(&coordinates));
                let low = fnv1a_64(b"trace-low\0".iter().chain(&coordinates));
                nonzero_128((u128::from(high) << 64) | u128::from(low))
            },
            |p| p.trace_id,
        );
        let span_id = nonzero_64(fnv1a_64(
            b"message\0"
                .iter()
                .chain(&trace_id.to_be_bytes())
                .chain(&coordinates),
        ));
        Self {
            parent,
            trace_id,
            span_id,
            sampled: parent.is_none_or(TraceParent::sampled),
            hash,
            partition,
            offset,
        }
    }

    /// The span id of the message's Job for `attempt`.
    pub fn attempt_span_id(&self, attempt: u32) -> u64 {
        let coordinates = coordinates(self.hash, self.partition, self.offset);
        nonzero_64(fnv1a_64(
            b"attempt\0"
                .iter()
                .chain(&self.trace_id.to_be_bytes())
                .chain(&coordinates)
                .chain(&attempt.to_be_bytes()),
        ))
    }

    /// The `TRACEPARENT` the Job for `attempt` gets: its attempt span as the parent of the
    /// Job's own work.
    pub fn job_traceparent(&self, attempt: u32) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.attempt_span_id(attempt),
            flags: u8::from(self.sampled),
        }
    }
}

fn coordinates(hash: DispatchHash, partition: i32, offset: i64) -> Vec<u8> {
    let mut bytes = hash.to_string().into_bytes();
    bytes.push(0);
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes.extend_from_slice(&offset.to_be_bytes());
    bytes
}

const fn nonzero_64(id: u64) -> u64 {
    if id == 0 { 1 } else { id }
}

const fn nonzero_128(id: u128) -> u128 {
    if id == 0 { 1 } else { id }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_well_formed_traceparent_parses_and_prints_back_unchanged() {
        let parsed = TraceParent::parse(HEADER).expect("well formed");
        assert_eq!(parsed.trace_id, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(parsed.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), HEADER);
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_message_with_a_traceparent_joins_the_producers_trace() {
        let hash = DispatchHash::of("orders", "orders");
        let trace = MessageTrace::of(Some(HEADER), hash, 2, 40);
        let parent = TraceParent::parse(HEADER).expect("well formed");
        assert_eq!(trace.parent, Some(parent));
        assert_eq!(trace.trace_id, parent.trace_id);
        assert_ne!(trace.span_id, parent.span_id);
        let job = trace.job_traceparent(2);
        assert_eq!(job.trace_id, parent.trace_id);
        assert_eq!(job.span_id, trace.attempt_span_id(2));
        assert_ne!(trace.attempt_span_id(1), trace.attempt_span_id(2));
        assert_ne!(trace.attempt_span_id(1), trace.span_id);
    }

    #[test]
    fn ids_are_the_same_for_every_operator_and_differ_between_messages() {
        let hash = DispatchHash::of("orders", "orders");
        let a = MessageTrace::of(None, hash, 0, 7);
        assert_eq!(
            a,
            MessageTrace::of(None, hash, 0, 7),
            "a restart computes the same ids"
        );
        assert_eq!(a.parent, None);
        assert!(a.sampled);
        let others = [
            MessageTrace::of(None, hash, 0, 8),
            MessageTrace::of(None, hash, 1, 7),
            MessageTrace::of(None, DispatchHash::of("orders", "payments"), 0, 7),
        ];
        for other in others {
            assert_ne!(a.trace_id, other.trace_id);
            assert_ne!(a.span_id, other.span_id);
        }
        // Pinned: a release that changed them would break the traces of messages in flight.
        assert_eq!(
            a.job_traceparent(1).to_string(),
            format!("00-{:032x}-{:016x}-01", a.trace_id, a.attempt_span_id(1))
        );
    }

    #[test]
    fn an_unsampled_parent_leaves_the_message_unsampled() {
        let header = HEADER.replace("-01", "-00");
        let trace = MessageTrace::of(Some(&header), DispatchHash::of("a", "b"), 0, 0);
        assert!(!trace.sampled);
        assert!(trace.job_traceparent(1).to_string().ends_with("-00"));
    }
}
