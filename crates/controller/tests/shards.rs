//! Several replicas sharing the ScaledJobs (`--sharded`) on the embedded API server: three
//! replicas split nine lag-mode ScaledJobs and a dispatch one; the replica owning the dispatch
//! ScaledJob is killed mid-burst (its task aborted: nothing released, as SIGKILL), and a fourth
//! joins later. Every request names its replica in its User-Agent, so the API server's request
//! log says who polled what and when (a poll of an active ScaledJob writes its status).
//!
//! Asserted: no ScaledJob is written by two replicas at once (each one's writers follow each
//! other, never back and forth); none goes unwritten longer than the takeover bound (a lease,
//! two retry periods, a polling interval and the start of a controller); no duplicate Job (each
//! lag ScaledJob holds exactly its `maxReplicaCount` long-running Jobs, and created no more;
//! every message has exactly one Job, attempt 1, and the group is committed to the end).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use jobtide_api::ScaledJob;
use jobtide_controller::Config as OperatorConfig;
use jobtide_controller::leader::Timing;
use jobtide_controller::operator::Leadership;
use jobtide_controller::shards::Sharding;
use jobtide_devcluster::faults::RequestRecord;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

/// Short, so that the test takes seconds: a lease of 6 s, a renew deadline of 4 s, a retry of 1 s.
const TIMING: Timing = Timing {
    lease: Duration::from_secs(6),
    renew_deadline: Duration::from_secs(4),
    retry: Duration::from_secs(1),
};
const LAG_SCALED_JOBS: usize = 9;
/// Each lag ScaledJob's cap: its Jobs run for minutes, so it holds exactly this many.
const MAX_JOBS: usize = 2;
const DISPATCH: &str = "dispatch";
/// The longest a ScaledJob may go unwritten across a takeover: the dead replica's lease (6 s),
/// two retry periods (the last renewal seen a period late, expiry found a period late), one
/// polling interval (1 s), and 3 s for the new controller's lists and first poll on a loaded
/// 2-core machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(6 + 2 + 1 + 3);

fn sharded(h: &Harness, name: &str) -> Operator {
    let config = client_config_named(h, name);
    let client = Client::try_from(config.clone()).unwrap();
    let sharding = Sharding::new(client, "default", "jobtide-operator", name, TIMING).unwrap();
    // Every active poll writes `lastActiveTime` (KEDA's behaviour, refresh 0): the status
    // writes in the request log are how this test sees which replica polls a ScaledJob.
    let mut operator = OperatorConfig::new("test", name);
    operator.last_active_time_refresh = Duration::ZERO;
    start_operator_configured(h, Leadership::Sharded(Box::new(sharding)), config, operator)
}

fn lag_name(i: usize) -> String {
    format!("lag-{i}")
}

/// A write of one replica to one ScaledJob (its status or finalizer, or one of its Jobs).
#[derive(Debug, Clone)]
struct Write {
    at: Instant,
    replica: String,
    scaled_job: String,
    job_created: bool,
}

/// The request log read every 100 ms: the operators' successful writes, stamped with when they
/// were first seen.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<Write>>>);

fn write_of(record: &RequestRecord) -> Option<(String, String, bool)> {
    let replica = record
        .user_agent
        .as_deref()?
        .strip_prefix(jobtide_controller::USER_AGENT)?
        .trim()
        .to_owned();
    if replica.is_empty() || !(200..300).contains(&record.status) {
        return None;
    }
    if record.verb == "patch" && record.resource.as_deref() == Some("scaledjobs") {
        let rest = record
            .path
            .strip_prefix("/apis/keda.sh/v1alpha1/namespaces/default/scaledjobs/")?;
        let name = rest.split('/').next()?.to_owned();
        return Some((replica, name, false));
    }
    if record.verb == "create" && record.resource.as_deref() == Some("jobs") {
        let name = record.body.as_ref()?["metadata"]["labels"]["scaledjob.keda.sh/name"]
            .as_str()?
            .to_owned();
        return Some((replica, name, true));
    }
    None
}

impl Writes {
    fn follow(&self, h: &Harness) -> tokio::task::JoinHandle<()> {
        let writes = self.clone();
        let cluster = h.cluster.faults.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let records = cluster.requests();
                let at = Instant::now();
                let new: Vec<_> = records[seen.min(records.len())..]
                    .iter()
                    .filter_map(write_of)
                    .map(|(replica, scaled_job, job_created)| Write {
                        at,
                        replica,
                        scaled_job,
                        job_created,
                    })
                    .collect();
                seen = records.len();
                writes.0.lock().unwrap().extend(new);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    fn all(&self) -> Vec<Write> {
        self.0.lock().unwrap().clone()
    }

    /// The replicas that wrote `scaled_job` since `from`.
    fn writers_since(&self, scaled_job: &str, from: Instant) -> BTreeSet<String> {
        self.all()
            .into_iter()
            .filter(|w| w.scaled_job == scaled_job && w.at >= from)
            .map(|w| w.replica)
            .collect()
    }
}

fn owned(operator: &Operator) -> u64 {
    sample(&operator.metrics(), "jobtide_owned_scaled_jobs")
}

fn members(operator: &Operator) -> u64 {
    sample(&operator.metrics(), "jobtide_shard_members")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_scaled_jobs_and_survive_a_kill_and_a_join_without_duplicates() {
    let h = harness(32).await;
    h.kafka.create_topic("backlog", 2).unwrap();
    h.kafka.create_topic("orders", 2).unwrap();
    // Lag that never goes: nobody consumes "backlog", so each lag ScaledJob stays active and
    // writes its status (lastActiveTime) at each poll.
    produce(&h.kafka, "backlog", 8).await;
    let servers = h.kafka.bootstrap_servers();
    let api: Api<ScaledJob> = Api::namespaced(h.client.clone(), "default");
    for i in 0..LAG_SCALED_JOBS {
        let mut sj = scaled_job(
            &lag_name(i),
            &servers,
            "backlog",
            "sleep 120",
            json!({"maxReplicaCount": MAX_JOBS}),
        );
        sj.spec.triggers[0]
            .metadata
            .insert("consumerGroup".into(), format!("group-{i}"));
        api.create(&PostParams::default(), &sj).await.unwrap();
    }
    let dispatch: ScaledJob = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": DISPATCH, "namespace": "default"},
        "spec": {
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"], "args": ["sleep 0.3"]}]}}},
            "pollingInterval": 1, "maxReplicaCount": 4,
            "successfulJobsHistoryLimit": 1000, "failedJobsHistoryLimit": 1000,
            "triggers": [{"type": "kafka-dispatch", "metadata": {"bootstrapServers": servers,
                "consumerGroup": "orders-dispatch", "topic": "orders", "offsetResetPolicy": "earliest"}}],
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &dispatch).await.unwrap();
    produce(&h.kafka, "orders", 20).await;

    let writes = Writes::default();
    let follower = writes.follow(&h);
    let mut replicas: BTreeMap<String, Operator> = ["a", "b", "c"]
        .into_iter()
        .map(|name| (name.to_owned(), sharded(&h, name)))
        .collect();
    let all = LAG_SCALED_JOBS as u64 + 1;
    eventually("three members sharing every ScaledJob", 60, async || {
        (replicas.values().all(|r| members(r) == 3)
            && replicas.values().map(owned).sum::<u64>() == all)
            .then_some(())
    })
    .await;
    let shares: Vec<u64> = replicas.values().map(owned).collect();
    eprintln!("shares of a, b, c: {shares:?}");
    assert!(
        shares.iter().all(|&s| s >= 1),
        "every replica owns some: {shares:?}"
    );

    // The replica that dispatches is the victim; it owns lag ScaledJobs too.
    let three: BTreeSet<String> = replicas.keys().cloned().collect();
    let owner_of = |name: &str, members: &BTreeSet<String>| {
        jobtide_core::shards::owner("default", name, members)
            .unwrap()
            .to_owned()
    };
    let victim = owner_of(DISPATCH, &three);
    let moved: Vec<String> = (0..LAG_SCALED_JOBS)
        .map(lag_name)
        .filter(|n| owner_of(n, &three) == victim)
        .collect();
    assert!(!moved.is_empty(), "the victim {victim} owns lag ScaledJobs");
    // Each lag ScaledJob is written by its owner, and only by it (the dispatch one writes only
    // while its ledger moves).
    let steady = Instant::now();
    eventually("every lag ScaledJob written by its owner", 30, async || {
        (0..LAG_SCALED_JOBS)
            .map(lag_name)
            .all(|n| writes.writers_since(&n, steady) == BTreeSet::from([owner_of(&n, &three)]))
            .then_some(())
    })
    .await;

    // Mid-burst: more messages, then the victim dies.
    produce(&h.kafka, "orders", 40).await;
    let killed_at = Instant::now();
    replicas.remove(&victim).unwrap().kill();
    let at_kill = jobs_of(&h.client, DISPATCH).await.len();
    assert!(
        at_kill < 60,
        "killed mid-burst: {at_kill} of 60 messages had a Job"
    );
    let survivors: BTreeSet<String> = replicas.keys().cloned().collect();
    eventually(
        "the survivors took the victim's ScaledJobs over",
        60,
        async || {
            let taken = moved.iter().chain([&DISPATCH.to_owned()]).all(|n| {
                writes
                    .writers_since(n, killed_at)
                    .contains(&owner_of(n, &survivors))
            });
            (taken && replicas.values().all(|r| members(r) == 2)).then_some(())
        },
    )
    .await;
    eprintln!("taken over {:?} after the kill", killed_at.elapsed());

    // A fourth replica joins: the ScaledJobs it now owns move to it.
    let joined_at = Instant::now();
    replicas.insert("d".into(), sharded(&h, "d"));
    let four: BTreeSet<String> = replicas.keys().cloned().collect();
    let to_d: Vec<String> = (0..LAG_SCALED_JOBS)
        .map(lag_name)
        .chain([DISPATCH.to_owned()])
        .filter(|n| owner_of(n, &four) == "d")
        .collect();
    assert!(!to_d.is_empty(), "d owns some ScaledJobs among {four:?}");
    eventually("the newcomer acting on its share", 60, async || {
        let acting = to_d
            .iter()
            .all(|n| writes.writers_since(n, joined_at).contains("d"));
        (acting && replicas.values().all(|r| members(r) == 3)).then_some(())
    })
    .await;
    eprintln!("d acted {:?} after joining", joined_at.elapsed());

    // Every message dispatched once, committed to the end.
    eventually("every message dispatched and committed", 90, async || {
        (uncommitted(&h.kafka, "orders-dispatch", "orders").await == Some(0)).then_some(())
    })
    .await;
    // A few more polls of everything under the final membership.
    let settled = Instant::now();
    eventually("polls after the join", 30, async || {
        (0..LAG_SCALED_JOBS)
            .map(lag_name)
            .all(|n| !writes.writers_since(&n, settled).is_empty())
            .then_some(())
    })
    .await;
    follower.abort();

    // No ScaledJob written by two replicas at once: its writers follow each other.
    let all_writes = writes.all();
    for name in (0..LAG_SCALED_JOBS)
        .map(lag_name)
        .chain([DISPATCH.to_owned()])
    {
        let mine: Vec<&Write> = all_writes.iter().filter(|w| w.scaled_job == name).collect();
        let mut order: Vec<&str> = Vec::new();
        for write in &mine {
            if order.last() != Some(&write.replica.as_str()) {
                assert!(
                    !order.contains(&write.replica.as_str()),
                    "{name}: written by {} again after {order:?} (two replicas at once)",
                    write.replica
                );
                order.push(&write.replica);
            }
        }
        // None unwritten for longer than a takeover (the dispatch ScaledJob's status rests
        // once its burst is done).
        if name == DISPATCH {
            eprintln!("{name}: writers {order:?}");
            continue;
        }
        let longest = mine
            .windows(2)
            .map(|w| w[1].at.saturating_duration_since(w[0].at))
            .max()
            .unwrap_or_default();
        eprintln!("{name}: writers {order:?}, longest gap {longest:?}");
        assert!(
            longest <= TAKEOVER_BOUND,
            "{name} went unwritten for {longest:?} (bound {TAKEOVER_BOUND:?}; writers {order:?})"
        );
    }

    // No duplicate Job: each lag ScaledJob holds its cap and created no more.
    for name in (0..LAG_SCALED_JOBS).map(lag_name) {
        let jobs = jobs_of(&h.client, &name).await;
        let created = all_writes
            .iter()
            .filter(|w| w.scaled_job == name && w.job_created)
            .count();
        assert_eq!(
            (jobs.len(), created),
            (MAX_JOBS, MAX_JOBS),
            "{name}: (Jobs, Jobs created) across the owners"
        );
    }
    let mut per_message: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for job in jobs_of(&h.client, DISPATCH).await {
        let labels = job.metadata.labels.clone().unwrap_or_default();
        per_message
            .entry((
                labels["jobtide.io/partition"].clone(),
                labels["jobtide.io/offset"].clone(),
            ))
            .or_default()
            .push(labels["jobtide.io/attempt"].clone());
    }
    assert_eq!(per_message.len(), 60, "one Job per message");
    assert!(
        per_message.values().all(|attempts| attempts == &["1"]),
        "each message's Job is attempt 1, once: {per_message:?}"
    );
    for (_, replica) in replicas {
        replica.stop().await;
    }
}
