//! `jobtide operator --sharded` as three real processes against one embedded API server started
//! by this test (its request log in reach), on librdkafka's mock cluster: they share nine
//! ScaledJobs, and the replica owning the most is SIGKILLed mid-run (no Lease released, nothing
//! finished). Each replica's requests carry its name in their User-Agent (`jobtide-operator/…
//! a`), so the log says which replica wrote which ScaledJob when: every poll of an active
//! ScaledJob writes its status (`lastActiveTime`, with `--last-active-time-refresh-seconds 0`).
//!
//! Asserted from that log: no ScaledJob is written by two replicas at once (while replicas join,
//! it moves only to a joiner ranking higher for it; after the kill, only from its owner among the
//! three to its owner among the survivors); none goes unwritten longer than a takeover (a lease, two
//! retry periods, a polling interval and a controller's start); no duplicate Job (each holds
//! exactly its `maxReplicaCount` Jobs and the log shows no more creations). The in-process
//! version with a dispatch ScaledJob and a joining replica is
//! `crates/controller/tests/shards.rs`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobtide_api::ScaledJob;
use jobtide_devcluster::DevCluster;
use jobtide_devcluster::faults::{Faults, RequestRecord};
use jobtide_kafka::ffi::MockKafka;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::json;

const SCALED_JOBS: usize = 9;
/// Each ScaledJob's cap: no runner here, so its Jobs never finish and it holds exactly this many.
const MAX_JOBS: usize = 2;
/// `--lease-duration-seconds 6 --renew-deadline-seconds 4 --retry-period-seconds 1`.
const LEASE: [&str; 6] = [
    "--lease-duration-seconds",
    "6",
    "--renew-deadline-seconds",
    "4",
    "--retry-period-seconds",
    "1",
];
/// The longest a ScaledJob may go unwritten across the kill: the dead replica's lease (6 s), two
/// retry periods (its last renewal seen a period late, the expiry found a period late), one
/// polling interval (1 s), and 4 s for the new controller's lists and first poll in a process on
/// a loaded 2-core machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(6 + 2 + 1 + 4);

/// A `jobtide operator --sharded` process, SIGKILLed on drop.
struct Replica {
    child: Child,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(name: &str, kubeconfig: &std::path::Path, dir: &std::path::Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
            .arg("operator")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--sharded")
            // Every active poll writes `lastActiveTime` (KEDA's behaviour): the status writes
            // in the request log are how this test sees which replica polls a ScaledJob.
            .args(["--last-active-time-refresh-seconds", "0"])
            .args(LEASE)
            .args(["--leader-election-namespace", "default"])
            .args(["--metrics-bind-address", "127.0.0.1:0"])
            .args(["--health-probe-bind-address", "127.0.0.1:0"])
            .env("POD_NAME", name)
            .env("JOBTIDE_LOG_LEVEL", "warn,jobtide_controller::shards=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start jobtide operator");
        Self { child, log }
    }

    /// Fails the test if it exited by itself.
    fn assert_running(&mut self, name: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("replica {name} exited by itself ({status}):\n{log}");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A write of one replica to one ScaledJob (status or finalizer, or the creation of a Job).
#[derive(Debug, Clone)]
struct Write {
    at: Instant,
    replica: String,
    scaled_job: String,
    job_created: bool,
}

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
        return Some((replica, rest.split('/').next()?.to_owned(), false));
    }
    if record.verb == "create" && record.resource.as_deref() == Some("jobs") {
        let owner =
            record.body.as_ref()?["metadata"]["labels"]["scaledjob.keda.sh/name"].as_str()?;
        return Some((replica, owner.to_owned(), true));
    }
    None
}

/// The request log read every 100 ms: the replicas' successful writes, stamped when first seen.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<Write>>>);

impl Writes {
    fn follow(&self, faults: Arc<Faults>) -> tokio::task::JoinHandle<()> {
        let writes = self.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let records = faults.requests();
                let at = Instant::now();
                let new = records[seen.min(records.len())..]
                    .iter()
                    .filter_map(write_of)
                    .map(|(replica, scaled_job, job_created)| Write {
                        at,
                        replica,
                        scaled_job,
                        job_created,
                    });
                writes.0.lock().unwrap().extend(new);
                seen = records.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    fn all(&self) -> Vec<Write> {
        self.0.lock().unwrap().clone()
    }

    fn writers_since(&self, scaled_job: &str, from: Instant) -> BTreeSet<String> {
        self.all()
            .into_iter()
            .filter(|w| w.scaled_job == scaled_job && w.at >= from && !w.job_created)
            .map(|w| w.replica)
            .collect()
    }
}

/// Who wrote, in turn: consecutive writes by one replica count once.
fn in_turn<'a>(writes: &[&'a Write]) -> Vec<&'a str> {
    let mut order: Vec<&str> = writes.iter().map(|w| w.replica.as_str()).collect();
    order.dedup();
    order
}

async fn eventually(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {seconds} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn name(i: usize) -> String {
    format!("lag-{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sharded_processes_share_the_scaled_jobs_and_survive_a_sigkill_without_duplicates() {
    let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    // Every request of the run stays in the log.
    cluster.faults.set_request_log_capacity(1_000_000);
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jobtide_api::crd::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic("backlog", 2).unwrap();
    // Lag that never goes: nobody consumes, so every ScaledJob stays active and writes its
    // status at each poll.
    let records: Vec<_> = (0..8)
        .map(|i| (Some(i.to_string()), format!("m{i}")))
        .collect();
    jobtide_kafka::tools::produce(
        &kafka.bootstrap_servers(),
        "backlog",
        &records,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let api: Api<ScaledJob> = Api::namespaced(client.clone(), "default");
    for i in 0..SCALED_JOBS {
        let sj: ScaledJob = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": name(i), "namespace": "default"},
            "spec": {
                "jobTargetRef": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": "busybox", "command": ["sleep", "120"]}]}}},
                "pollingInterval": 1, "maxReplicaCount": MAX_JOBS,
                "triggers": [{"type": "kafka", "metadata": {
                    "bootstrapServers": kafka.bootstrap_servers(),
                    "consumerGroup": format!("group-{i}"), "topic": "backlog",
                    "lagThreshold": "1", "offsetResetPolicy": "earliest"}}],
            },
        }))
        .unwrap();
        api.create(&PostParams::default(), &sj).await.unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig()).unwrap();
    let writes = Writes::default();
    let follower = writes.follow(cluster.faults.clone());
    let mut replicas: BTreeMap<String, Replica> = ["a", "b", "c"]
        .into_iter()
        .map(|n| (n.to_owned(), Replica::start(n, &kubeconfig, dir.path())))
        .collect();
    let owner_of = |scaled_job: &str, members: &BTreeSet<String>| {
        jobtide_core::shards::owner("default", scaled_job, members)
            .unwrap()
            .to_owned()
    };
    let three: BTreeSet<String> = replicas.keys().cloned().collect();
    // Once the three see each other, each ScaledJob is written by its owner only.
    let steady = Instant::now();
    eventually(
        "every ScaledJob written by its owner among a, b, c",
        90,
        || {
            (0..SCALED_JOBS).map(name).all(|n| {
                let since = writes.writers_since(&n, steady + Duration::from_secs(3));
                since == BTreeSet::from([owner_of(&n, &three)])
            })
        },
    )
    .await;
    for (n, replica) in &mut replicas {
        replica.assert_running(n);
    }
    // The victim: the replica owning the most ScaledJobs.
    let mut shares: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in (0..SCALED_JOBS).map(name) {
        shares.entry(owner_of(&n, &three)).or_default().push(n);
    }
    eprintln!("shares: {shares:?}");
    assert_eq!(shares.len(), 3, "every replica owns some: {shares:?}");
    let (victim, moved) = shares
        .iter()
        .max_by_key(|(_, owned)| owned.len())
        .map(|(v, owned)| (v.clone(), owned.clone()))
        .unwrap();
    let killed_at = Instant::now();
    let mut killed = replicas.remove(&victim).unwrap();
    killed.assert_running(&victim);
    // SIGKILL: no Lease released, no reconcile finished.
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let survivors: BTreeSet<String> = replicas.keys().cloned().collect();
    eventually(
        "the survivors took the victim's ScaledJobs over",
        60,
        || {
            moved.iter().all(|n| {
                writes
                    .writers_since(n, killed_at)
                    .contains(&owner_of(n, &survivors))
            })
        },
    )
    .await;
    eprintln!("taken over {:?} after the SIGKILL", killed_at.elapsed());
    // A few more polls of everything under the final membership.
    let settled = Instant::now() + Duration::from_secs(1);
    eventually("polls after the takeover", 30, || {
        (0..SCALED_JOBS).map(name).all(|n| {
            writes.writers_since(&n, settled) == BTreeSet::from([owner_of(&n, &survivors)])
        })
    })
    .await;
    for (n, replica) in &mut replicas {
        replica.assert_running(n);
    }
    follower.abort();

    let all = writes.all();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let listed = jobs.list(&ListParams::default()).await.unwrap().items;
    for n in (0..SCALED_JOBS).map(name) {
        let mine: Vec<&Write> = all
            .iter()
            .filter(|w| w.scaled_job == n && !w.job_created)
            .collect();
        // Never two replicas at once. Before the kill members only join, so a ScaledJob only
        // moves to a member ranking higher for it (the first replica to find no other member
        // Lease acts on everything at once, then hands each ScaledJob to the joiners that rank
        // higher); after it, it moves at most once, from its owner among the three to its owner
        // among the survivors. Either way its writers follow each other, never back and forth.
        let (joining, leaving): (Vec<&Write>, Vec<&Write>) =
            mine.iter().partition(|w| w.at < killed_at);
        let before = in_turn(&joining);
        for pair in before.windows(2) {
            let both = BTreeSet::from([pair[0].to_owned(), pair[1].to_owned()]);
            assert_eq!(
                owner_of(&n, &both),
                pair[1],
                "{n}: went from {} to {}, which ranks lower for it, while members only joined \
                 (writers {before:?}: two replicas at once)",
                pair[0],
                pair[1]
            );
        }
        let after = in_turn(&leaving);
        let mut expected = vec![owner_of(&n, &three), owner_of(&n, &survivors)];
        expected.dedup();
        assert!(
            after.iter().all(|w| expected.contains(&w.to_string()))
                && after.windows(2).all(|p| p[0] == expected[0]),
            "{n}: after the kill written by {after:?}, expected {expected:?} in that order \
             (two replicas at once)"
        );
        let order = [before, after].concat();
        // Never unpolled longer than a takeover.
        let longest = mine
            .windows(2)
            .map(|w| w[1].at.saturating_duration_since(w[0].at))
            .max()
            .unwrap_or_default();
        eprintln!(
            "{n}: {} writes by {order:?}, longest gap {longest:?}",
            mine.len()
        );
        assert!(
            longest <= TAKEOVER_BOUND,
            "{n} went unwritten for {longest:?} (bound {TAKEOVER_BOUND:?}; writers {order:?})"
        );
        // No duplicate Job: it holds its cap, and no replica created more.
        let held = listed
            .iter()
            .filter(|j| {
                j.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("scaledjob.keda.sh/name"))
                    == Some(&n)
            })
            .count();
        let created = all
            .iter()
            .filter(|w| w.scaled_job == n && w.job_created)
            .count();
        assert_eq!(
            (held, created),
            (MAX_JOBS, MAX_JOBS),
            "{n}: (Jobs held, Jobs created) across its owners"
        );
    }
}
