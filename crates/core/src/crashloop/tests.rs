use super::*;
use crate::jobs::{COMPLETE, FAILED};

const T0: u64 = 1_000_000;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + seconds)
}

/// A Job created at `created` that finished (`condition`) at `finished`.
fn job(name: &str, condition: &str, created: u64, finished: u64) -> JobFacts {
    JobFacts {
        name: name.into(),
        true_conditions: vec![(condition.into(), Some(at(finished)))],
        created: Some(at(created)),
        ..JobFacts::default()
    }
}

fn quick_failures(count: u64, from: u64) -> Vec<JobFacts> {
    (0..count)
        .map(|i| job(&format!("f{}", from + i), FAILED, from + i, from + i + 2))
        .collect()
}

fn input(jobs: &[JobFacts], lag: f64, now: u64) -> CrashLoopInput<'_> {
    CrashLoopInput {
        jobs,
        lag,
        spec_changed: false,
        now: at(now),
    }
}

fn policy() -> CrashLoopPolicy {
    CrashLoopPolicy::from_annotation(None)
}

#[test]
fn three_quick_failures_trip_a_30_second_backoff() {
    let jobs = quick_failures(3, 0);
    let (state, verdict) = guard(
        &policy(),
        &CrashLoopState::default(),
        &input(&jobs, 5.0, 10),
    );
    assert_eq!(
        verdict,
        Verdict::BackingOff {
            until: at(40),
            backoff: Duration::from_secs(30),
            tripped: true
        }
    );
    assert_eq!(state.trips, 1);
    // Later polls inside the backoff: still backing off, no new trip.
    let (_, verdict) = guard(&policy(), &state, &input(&jobs, 5.0, 20));
    assert!(matches!(
        verdict,
        Verdict::BackingOff { tripped: false, .. }
    ));
}

#[test]
fn two_failures_or_slow_failures_or_a_mix_do_not_trip() {
    let clear = |jobs: Vec<JobFacts>| {
        guard(
            &policy(),
            &CrashLoopState::default(),
            &input(&jobs, 5.0, 500),
        )
        .1
    };
    assert_eq!(clear(quick_failures(2, 0)), Verdict::Clear);
    let slow: Vec<JobFacts> = (0..3)
        .map(|i| job(&format!("s{i}"), FAILED, i * 300, i * 300 + 200))
        .collect();
    assert_eq!(
        clear(slow),
        Verdict::Clear,
        "failed after 200 s: not a crash loop"
    );
    let mut mixed = quick_failures(3, 0);
    mixed.push(job("ok", COMPLETE, 1, 100));
    assert_eq!(
        clear(mixed),
        Verdict::Clear,
        "the newest finished Job succeeded"
    );
}

#[test]
fn after_the_backoff_one_probe_job_then_nothing_until_it_finishes() {
    let jobs = quick_failures(3, 0);
    let (tripped, _) = guard(
        &policy(),
        &CrashLoopState::default(),
        &input(&jobs, 5.0, 10),
    );
    let (probing, verdict) = guard(&policy(), &tripped, &input(&jobs, 5.0, 41));
    assert_eq!(verdict, Verdict::Probing { allowed: 1 });
    let (waiting, verdict) = guard(&policy(), &probing, &input(&jobs, 5.0, 42));
    assert_eq!(
        verdict,
        Verdict::Probing { allowed: 0 },
        "the probe is running"
    );
    // The probe fails at once: the backoff doubles.
    let mut more = jobs.clone();
    more.push(job("probe", FAILED, 41, 43));
    let (escalated, verdict) = guard(&policy(), &waiting, &input(&more, 5.0, 44));
    assert_eq!(
        verdict,
        Verdict::BackingOff {
            until: at(104),
            backoff: Duration::from_mins(1),
            tripped: true
        }
    );
    assert_eq!(escalated.trips, 2);
}

#[test]
fn the_backoff_doubles_up_to_ten_minutes() {
    let p = policy();
    let seconds: Vec<u64> = (1..=7).map(|trips| backoff(&p, trips).as_secs()).collect();
    assert_eq!(seconds, [30, 60, 120, 240, 480, 600, 600]);
    assert_eq!(backoff(&p, u32::MAX).as_secs(), 600);
}

#[test]
fn a_success_a_falling_lag_or_a_spec_change_resets_at_once() {
    let jobs = quick_failures(3, 0);
    let (tripped, _) = guard(
        &policy(),
        &CrashLoopState::default(),
        &input(&jobs, 5.0, 10),
    );
    let mut succeeded = jobs.clone();
    succeeded.push(job("ok", COMPLETE, 11, 12));
    assert_eq!(
        guard(&policy(), &tripped, &input(&succeeded, 5.0, 13)),
        (CrashLoopState::default(), Verdict::Clear)
    );
    assert_eq!(
        guard(&policy(), &tripped, &input(&jobs, 4.0, 13)),
        (CrashLoopState::default(), Verdict::Clear),
        "the lag went down: the Jobs do work"
    );
    let changed = CrashLoopInput {
        spec_changed: true,
        ..input(&jobs, 5.0, 13)
    };
    assert_eq!(
        guard(&policy(), &tripped, &changed),
        (CrashLoopState::default(), Verdict::Clear)
    );
}

#[test]
fn old_failures_never_trip_twice_and_the_annotation_turns_the_guard_off() {
    let jobs = quick_failures(3, 0);
    let (tripped, _) = guard(
        &policy(),
        &CrashLoopState::default(),
        &input(&jobs, 5.0, 10),
    );
    // The backoff passed, the probe finished by failing slowly: the same three quick failures
    // are still the newest quick ones, but they already tripped the guard.
    let mut slow_probe = jobs.clone();
    slow_probe.push(job("probe", FAILED, 41, 400));
    let (probing, _) = guard(&policy(), &tripped, &input(&jobs, 5.0, 41));
    let (_, verdict) = guard(&policy(), &probing, &input(&slow_probe, 5.0, 401));
    assert_eq!(verdict, Verdict::Probing { allowed: 1 });
    let off = CrashLoopPolicy::from_annotation(Some("false"));
    assert_eq!(
        guard(&off, &tripped, &input(&jobs, 5.0, 11)).1,
        Verdict::Clear
    );
}
