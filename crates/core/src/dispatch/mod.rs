//! Dispatch mode (beyond KEDA): jobtide consumes the topic itself and creates exactly one Job
//! per message.
//!
//! The leader consumes with its own consumer group, assigned every partition (no group
//! membership; the Jobs never join it). The Kubernetes API is the ledger: each Job has a
//! deterministic name ([`job_name`]), so `AlreadyExists` means "already dispatched", and its
//! labels ([`JobCoordinates`]) let a restarted operator find what was dispatched. Offsets are
//! committed per partition at the contiguous watermark of done messages; a failed Job is
//! retried as the next attempt up to `maxAttempts`, then the message is dead-lettered or its
//! failure recorded; `maxReplicaCount` caps the messages in flight.
//!
//! This module is the pure part. The controller reads messages, creates Jobs, produces dead
//! letters and commits offsets, telling the [`Ledger`] what happened and doing the
//! [`Action`]s it returns:
//!
//! ```text
//!   rebuild(committed offsets, Jobs by label) ─► seek each partition to fetch_position
//!   loop: received(message) / created / observed(Job) / dead_lettered ─► Actions
//!         pause while !may_receive();  commit commits() ─► committed(partition, offset)
//! ```
//!
//! # Guarantees
//! - A message gets one Job per attempt, ever: names are deterministic, a restart finds every
//!   Job at or above the committed offset, and history cleanup deletes only below it
//!   ([`Ledger::deletable`]).
//! - The commit never passes a message that isn't done, so a restart re-reads whatever is
//!   unfinished; messages that already have a Job get no second one.
//! - Memory holds at most the messages in flight plus those read while the cap was reached
//!   (a consumer's prefetch, or the re-reading after a restart).
//!
//! # Caveats
//! - A dead letter or a recorded failure is at-least-once: a crash after the produce and before
//!   the [`DEAD_LETTERED_ANNOTATION`] is written repeats it after the restart.
//! - With [`CommitOn::Create`], a restart forgets the Jobs below the committed offset (see
//!   there).
//! - The ledger takes a partition's messages to arrive in offset order from where the consumer
//!   was positioned: a later offset read means the earlier ones are gone or never existed.

mod entry;
mod facts;
mod ledger;
pub(crate) mod name;
mod trace;

pub use facts::{Action, CommitOn, DispatchPolicy, Message, ObservedJob, Outcome};
pub use ledger::{Ledger, LedgerStatus};
pub use name::{
    ATTEMPT_LABEL, DEAD_LETTERED_ANNOTATION, DISPATCH_LABEL, DispatchHash, InvalidDispatchHash,
    JobCoordinates, MAX_NAME_LEN, OFFSET_LABEL, PARTITION_LABEL, TOPIC_ANNOTATION, job_name,
};
pub use trace::{MessageTrace, TraceParent, traceparent_header};
