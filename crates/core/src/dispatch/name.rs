//! Deterministic Job names and the labels that carry a Job's coordinates.
//!
//! The Kubernetes API is dispatch mode's ledger: the Job for attempt `a` of the message at
//! `(partition, offset)` always has the same name, so creating it twice fails with
//! `AlreadyExists` instead of running the message twice, and a restart finds what was dispatched
//! by listing the Jobs and reading their labels ([`JobCoordinates::from_labels`]).
//!
//! # Stability
//! A name, once given to a Job, must be given again by every later jobtide version: a release
//! that changed [`job_name`] would re-dispatch every message still in flight during the upgrade.
//! So the hash is written out here (FNV-1a 64, a published algorithm with published test
//! vectors) rather than taken from `std::hash` (whose output may change between Rust releases)
//! or a crate, and the tests pin names byte for byte.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Label: the message's partition (decimal).
pub const PARTITION_LABEL: &str = "jobtide.io/partition";
/// Label: the message's offset (decimal).
pub const OFFSET_LABEL: &str = "jobtide.io/offset";
/// Label: the attempt, from 1 (decimal).
pub const ATTEMPT_LABEL: &str = "jobtide.io/attempt";
/// Label: the [`DispatchHash`] of ScaledJob name and topic, so that Jobs dispatched from another
/// topic (the trigger's topic was changed) are told apart from this topic's, and a selector can
/// find all of one topic's Jobs.
pub const DISPATCH_LABEL: &str = "jobtide.io/dispatch";
/// Annotation: the topic in full (a label value can't hold every topic name).
pub const TOPIC_ANNOTATION: &str = "jobtide.io/topic";
/// Annotation on a message's last Job, set once jobtide gave up on the message: its value is for
/// people (the dead-letter topic, or `recorded` when there is none and the failure was only
/// recorded); its presence tells a restarted operator not to dead-letter or record it again
/// ([`ObservedJob::dead_lettered`](super::ObservedJob::dead_lettered)).
pub const DEAD_LETTERED_ANNOTATION: &str = "jobtide.io/dead-lettered";

/// The longest Job name: Kubernetes copies it into the Job's pods as the value of the
/// `batch.kubernetes.io/job-name` label, and label values are at most 63 characters.
pub const MAX_NAME_LEN: usize = 63;

/// FNV-1a 64's offset basis and prime (<http://www.isthe.com/chongo/tech/comp/fnv/>).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`.
pub(super) fn fnv1a_64<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    bytes.into_iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// 32 bits identifying a (ScaledJob, topic) pair: FNV-1a 64 of `scaled_job + "\0" + topic`,
/// xor-folded to 32 bits (the FNV authors' advice for shorter hashes). Written as 8 lowercase
/// hex digits, in Job names and in the [`DISPATCH_LABEL`]. The `"\0"` keeps `("ab", "c")` and
/// `("a", "bc")` apart (neither name can hold a NUL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DispatchHash(u32);

impl DispatchHash {
    /// The hash of one ScaledJob's dispatch from one topic.
    pub fn of(scaled_job: &str, topic: &str) -> Self {
        let bytes = scaled_job
            .as_bytes()
            .iter()
            .chain(&[0])
            .chain(topic.as_bytes());
        let hash = fnv1a_64(bytes);
        // Both halves are < 2^32, so the xor is too.
        Self(u32::try_from((hash >> 32) ^ (hash & 0xffff_ffff)).unwrap_or_default())
    }
}

impl fmt::Display for DispatchHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Not 8 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDispatchHash;

impl fmt::Display for InvalidDispatchHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a dispatch hash is 8 lowercase hex digits")
    }
}

impl std::error::Error for InvalidDispatchHash {}

impl FromStr for DispatchHash {
    type Err = InvalidDispatchHash;

    /// Exactly what [`Display`](fmt::Display) writes: 8 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if s.len() != 8 || !s.as_bytes().iter().all(hex) {
            return Err(InvalidDispatchHash);
        }
        u32::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| InvalidDispatchHash)
    }
}

/// The name of the Job for `attempt` of the message at `(partition, offset)`:
/// `<prefix>-<hash>-<partition>-<offset>-<attempt>`, a DNS-1123 label of at most
/// [`MAX_NAME_LEN`] characters.
///
/// - `<hash>` is the [`DispatchHash`] of ScaledJob name and topic, so two names differ whenever
///   the ScaledJob, the topic, the partition, the offset or the attempt differ (up to a 32-bit
///   hash collision between two ScaledJobs *of one namespace*, whose Jobs also carry different
///   `scaledjob.keda.sh/name` labels).
/// - `<prefix>` is the ScaledJob's name for people reading `kubectl get jobs`, cut to what the
///   rest leaves of 63 characters (at least 10: the rest is at most 52), with dots (allowed in a
///   ScaledJob name, a DNS subdomain, but not in a label) and anything else outside `[a-z0-9-]`
///   written as `-`, and no `-` at either end. Long offsets leave a shorter prefix; the name
///   stays the same for the same inputs.
pub fn job_name(
    scaled_job: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    attempt: u32,
) -> String {
    let hash = DispatchHash::of(scaled_job, topic);
    let rest = format!("{hash}-{partition}-{offset}-{attempt}");
    let budget = MAX_NAME_LEN.saturating_sub(rest.len() + 1);
    let prefix = label_prefix(scaled_job, budget);
    if prefix.is_empty() {
        rest
    } else {
        format!("{prefix}-{rest}")
    }
}

/// `name` as at most `budget` characters of `[a-z0-9-]`, neither starting nor ending with `-`.
fn label_prefix(name: &str, budget: usize) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(budget)
        .collect();
    cleaned.trim_matches('-').to_owned()
}

/// Where a dispatched Job's message is, as its labels say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCoordinates {
    /// The message's partition.
    pub partition: i32,
    /// The message's offset.
    pub offset: i64,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The ScaledJob and topic it was dispatched for.
    pub hash: DispatchHash,
}

impl JobCoordinates {
    /// Reads the four labels; `None` when one is missing or doesn't parse (not a dispatched Job,
    /// or one whose labels someone edited: the ledger leaves it alone).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        let get = |key: &str| labels.get(key).map(String::as_str);
        Some(Self {
            partition: get(PARTITION_LABEL)?.parse().ok()?,
            offset: get(OFFSET_LABEL)?.parse().ok()?,
            attempt: get(ATTEMPT_LABEL)?.parse().ok()?,
            hash: get(DISPATCH_LABEL)?.parse().ok()?,
        })
    }

    /// The four labels a dispatched Job carries (the inverse of [`Self::from_labels`]).
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (PARTITION_LABEL.to_owned(), self.partition.to_string()),
            (OFFSET_LABEL.to_owned(), self.offset.to_string()),
            (ATTEMPT_LABEL.to_owned(), self.attempt.to_string()),
            (DISPATCH_LABEL.to_owned(), self.hash.to_string()),
        ])
    }
}

#[cfg(test)]
mod tests;
