//! Leader election against an API server that stops answering: every Lease call has a deadline,
//! so a leader whose renewals hang stops acting before its lease can expire.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::*;
use jobtide_controller::leader::{Elector, Timing};
use jobtide_controller::operator::Leadership;

fn leads(metrics: &str, value: u8) -> bool {
    metrics
        .lines()
        .any(|l| l == format!("jobtide_leader {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_hang_stops_acting_before_its_lease_expires() {
    let h = harness(4).await;
    let client = kube::Client::try_from(jobtide_controller::with_user_agent(kube::Config::new(
        h.cluster.url().parse().unwrap(),
    )))
    .unwrap();
    let leader = start_operator(
        &h,
        "slow",
        Leadership::Elected(Box::new(Elector::new(
            client,
            "default",
            "jobtide-hang",
            "slow",
            Timing::default(),
        ))),
    );
    eventually("leading", 10, async || {
        leads(&leader.metrics(), 1).then_some(())
    })
    .await;
    // From now on the API server answers nothing for a minute.
    h.cluster.faults.set_delay(Duration::from_mins(1));
    let cut = std::time::Instant::now();
    eventually("the leader stepping down", 20, async || {
        leads(&leader.metrics(), 0).then_some(())
    })
    .await;
    // The last renewal was at most one retry period (2 s) before the cut, the lease lasts 15 s
    // from it: stepping down must happen before 13 s after the cut.
    let stepped_down = cut.elapsed();
    assert!(
        stepped_down < Duration::from_secs(13),
        "stepped down {stepped_down:?} after the API server stopped answering"
    );
    h.cluster.faults.set_delay(Duration::ZERO);
}
