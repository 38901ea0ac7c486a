//! Leader election against an API server that refuses or stops answering Lease updates: a
//! leader that can't renew stops acting before its lease can expire (every Lease call has a
//! deadline, so a hanging call can't hold it).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::{Duration, Instant};

use common::*;
use jobtide_controller::leader::{Elector, Timing};
use jobtide_controller::operator::Leadership;
use jobtide_devcluster::faults::{Failure, Matcher};

fn leads(metrics: &str, value: u8) -> bool {
    metrics
        .lines()
        .any(|l| l == format!("jobtide_leader {value}"))
}

/// An elected operator (KEDA's timing: 15 s lease, 10 s renew deadline, 2 s retry), once it
/// leads.
async fn leading_operator(h: &Harness, lease: &str) -> Operator {
    let client = kube::Client::try_from(jobtide_controller::with_user_agent(kube::Config::new(
        h.cluster.url().parse().unwrap(),
    )))
    .unwrap();
    let leader = start_operator(
        h,
        lease,
        Leadership::Elected(Box::new(Elector::new(
            client,
            "default",
            lease,
            lease,
            Timing::default(),
        ))),
    );
    eventually("leading", 10, async || {
        leads(&leader.metrics(), 1).then_some(())
    })
    .await;
    leader
}

/// How long after `cut` the leader stopped acting. The last renewal was at most one retry
/// period (2 s) before the cut and the lease lasts 15 s from it: stepping down must happen
/// before 13 s after the cut.
async fn steps_down_after(leader: &Operator, cut: Instant) -> Duration {
    eventually("the leader stepping down", 20, async || {
        leads(&leader.metrics(), 0).then_some(())
    })
    .await;
    let stepped_down = cut.elapsed();
    assert!(
        stepped_down < Duration::from_secs(13),
        "stepped down {stepped_down:?} after renewals stopped"
    );
    stepped_down
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_acting_before_its_lease_expires() {
    let h = harness(16).await;
    let leader = leading_operator(&h, "jobtide-renew").await;
    // Every renewal fails from now on (the API server refuses Lease updates).
    h.cluster.faults.fail_next(
        1000,
        Matcher {
            verb: Some("update".into()),
            resource: Some("leases".into()),
        },
        Failure::InternalError,
    );
    let stepped_down = steps_down_after(&leader, Instant::now()).await;
    assert!(
        stepped_down >= Duration::from_secs(7),
        "stepped down before the renew deadline: {stepped_down:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_hang_stops_acting_before_its_lease_expires() {
    let h = harness(4).await;
    let leader = leading_operator(&h, "jobtide-hang").await;
    // From now on the API server answers nothing for a minute.
    h.cluster.faults.set_delay(Duration::from_mins(1));
    steps_down_after(&leader, Instant::now()).await;
    h.cluster.faults.set_delay(Duration::ZERO);
}
