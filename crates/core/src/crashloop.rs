//! The crash-loop guard (a deliberate difference from KEDA): a ScaledJob whose Jobs keep failing
//! at once while its lag stays makes KEDA create a new Job every poll, without end (a broken
//! image, a typo in a flag: 1,005 failed Jobs in 4 minutes measured on `jobtide dev`). jobtide
//! backs off instead, like a circuit breaker:
//!
//! - **Trip**: the newest [`CrashLoopPolicy::failures`] finished Jobs all failed, each within
//!   [`CrashLoopPolicy::quick`] of its creation, and none of those failures tripped the guard
//!   before → no Job is created for a backoff of `base · 2^(trips − 1)`, capped at `max`.
//! - **Probe**: when the backoff has passed, one poll may create **one** Job; until a Job finishes
//!   after that, nothing more is created.
//! - **Reset**: a Job that succeeded (newer than every failure), a lag that went down since the
//!   trip, or a change of the ScaledJob's spec clears the guard at once.
//!
//! Turned off per ScaledJob with the annotation [`DISABLE_ANNOTATION`]` = "false"`.

use std::time::{Duration, SystemTime};

use crate::jobs::{JobFacts, JobState};
use crate::status::Condition;

/// `jobtide.io/crash-loop-backoff: "false"` turns the guard off for one ScaledJob.
pub const DISABLE_ANNOTATION: &str = "jobtide.io/crash-loop-backoff";

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLoopPolicy {
    /// Whether the guard acts.
    pub enabled: bool,
    /// How many newest finished Jobs must all have failed quickly.
    pub failures: usize,
    /// A failure this soon after the Job's creation is "quick".
    pub quick: Duration,
    /// The first backoff.
    pub base: Duration,
    /// The longest backoff.
    pub max: Duration,
}

impl CrashLoopPolicy {
    /// The defaults: three quick failures (within two minutes), backoff 30 s doubling to 10 min.
    /// `annotation` is the ScaledJob's [`DISABLE_ANNOTATION`] value.
    pub fn from_annotation(annotation: Option<&str>) -> Self {
        Self {
            enabled: !annotation.is_some_and(|v| v.trim().eq_ignore_ascii_case("false")),
            failures: 3,
            quick: Duration::from_mins(2),
            base: Duration::from_secs(30),
            max: Duration::from_mins(10),
        }
    }
}

/// What the guard remembers between polls (kept by the controller per ScaledJob).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrashLoopState {
    /// Trips since the last reset (the backoff doubles with each).
    pub trips: u32,
    /// No Job is created before this.
    pub until: Option<SystemTime>,
    /// The newest failure that tripped the guard (older ones never trip it again).
    pub tripped_by: Option<SystemTime>,
    /// The lag when the guard last tripped.
    pub lag_at_trip: f64,
    /// When the probe Job was allowed.
    pub probe_at: Option<SystemTime>,
    /// The `CrashLoopBackOff` condition last decided (the poll writes it from here, not from
    /// a possibly stale read of the status).
    pub condition: Option<Condition>,
}

/// What the guard lets this poll do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Create as the strategy decides.
    Clear,
    /// Create nothing before `until`; `tripped`: this poll tripped (or escalated) it.
    BackingOff {
        /// When the next probe is allowed.
        until: SystemTime,
        /// The backoff in force.
        backoff: Duration,
        /// Whether this poll tripped it (emit the event once).
        tripped: bool,
    },
    /// Create at most `allowed` Jobs (1 for the probe, 0 while it runs).
    Probing {
        /// Jobs this poll may create.
        allowed: i64,
    },
}

/// The guard's input for one poll.
#[derive(Debug, Clone, Copy)]
pub struct CrashLoopInput<'a> {
    /// The ScaledJob's Jobs.
    pub jobs: &'a [JobFacts],
    /// The queue length measured this poll.
    pub lag: f64,
    /// The ScaledJob's spec changed since the last poll.
    pub spec_changed: bool,
    /// Now.
    pub now: SystemTime,
}

/// Decides one poll: the new state and the verdict.
pub fn guard(
    policy: &CrashLoopPolicy,
    state: &CrashLoopState,
    input: &CrashLoopInput<'_>,
) -> (CrashLoopState, Verdict) {
    let finished = newest_first(input.jobs);
    let reset = !policy.enabled
        || input.spec_changed
        || (state.trips > 0 && input.lag < state.lag_at_trip)
        || finished
            .first()
            .is_some_and(|(job_state, _, _)| *job_state == JobState::Succeeded);
    if reset {
        let cleared = CrashLoopState {
            condition: state.condition.clone(),
            ..CrashLoopState::default()
        };
        return (cleared, Verdict::Clear);
    }
    if let Some(until) = state.until
        && input.now < until
    {
        let backoff = backoff(policy, state.trips);
        return (
            state.clone(),
            Verdict::BackingOff {
                until,
                backoff,
                tripped: false,
            },
        );
    }
    let quick_failures: Vec<SystemTime> = finished
        .iter()
        .take(policy.failures)
        .filter(|(job_state, created, failed)| {
            *job_state == JobState::Failed
                && failed
                    .duration_since(created.unwrap_or(*failed))
                    .unwrap_or_default()
                    <= policy.quick
        })
        .map(|(_, _, failed)| *failed)
        .collect();
    let newest_failure = quick_failures.first().copied();
    let trips = quick_failures.len() >= policy.failures
        && newest_failure.is_some_and(|newest| state.tripped_by.is_none_or(|by| newest > by));
    if trips {
        let trips = state.trips.saturating_add(1);
        let backoff = backoff(policy, trips);
        let until = input.now + backoff;
        let next = CrashLoopState {
            trips,
            until: Some(until),
            tripped_by: newest_failure,
            lag_at_trip: input.lag,
            probe_at: None,
            condition: state.condition.clone(),
        };
        return (
            next,
            Verdict::BackingOff {
                until,
                backoff,
                tripped: true,
            },
        );
    }
    if state.trips == 0 {
        return (state.clone(), Verdict::Clear);
    }
    // The backoff has passed: one probe Job, then nothing until a Job finishes after it.
    match state.probe_at {
        None => (
            CrashLoopState {
                probe_at: Some(input.now),
                ..state.clone()
            },
            Verdict::Probing { allowed: 1 },
        ),
        Some(probe_at) => {
            let answered = finished.iter().any(|(_, _, at)| *at >= probe_at);
            if answered {
                // Finished, and neither a success nor a new trip: let the next probe go.
                (
                    CrashLoopState {
                        probe_at: Some(input.now),
                        ..state.clone()
                    },
                    Verdict::Probing { allowed: 1 },
                )
            } else {
                (state.clone(), Verdict::Probing { allowed: 0 })
            }
        }
    }
}

/// `base · 2^(trips − 1)`, capped at `max`.
fn backoff(policy: &CrashLoopPolicy, trips: u32) -> Duration {
    let doublings = trips.saturating_sub(1).min(20);
    policy.base.saturating_mul(1 << doublings).min(policy.max)
}

/// Finished Jobs with a finish time, newest first: (state, created, finished).
fn newest_first(jobs: &[JobFacts]) -> Vec<(JobState, Option<SystemTime>, SystemTime)> {
    let mut finished: Vec<_> = jobs
        .iter()
        .filter_map(|job| {
            let (job_state, at) = job.finished()?;
            let at = at.or(job.completion_time)?;
            Some((job_state, job.created, at))
        })
        .collect();
    finished.sort_by_key(|f| std::cmp::Reverse(f.2));
    finished
}

#[cfg(test)]
mod tests;
