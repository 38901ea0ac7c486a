//! `explain`'s cluster side (`--kubeconfig` / `--server`): a client whose every call ends within
//! `--timeout`, the ScaledJob's live Jobs and pods, and the decision the operator's next poll
//! would take on them.

use std::time::Duration;

use anyhow::Context as _;
use jobtide_api::ScaledJob;
use jobtide_api::facts::jobs_facts;
use jobtide_api::job::SCALED_JOB_NAME_LABEL;
use jobtide_core::capacity::{CAPACITY_AVAILABLE, CapacityPolicy, QuotaRefusal};
use jobtide_core::crashloop::{CrashLoopPolicy, CrashLoopState};
use jobtide_core::poll::{
    CapacityFacts, CrashLoopGuard, PollInput, PollPolicy, TriggerResult, decide_poll,
};
use jobtide_core::scaling::{JobCountInput, arithmetic};
use jobtide_core::status::Conditions;
use jobtide_core::status::{Condition, ConditionStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use super::ExplainArgs;
use crate::kube_client::Deadlines;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LiveExplanation {
    /// `lag` (KEDA's model: the next poll's decision) or `dispatch` (one Job per message).
    pub(super) mode: &'static str,
    /// Listing the Jobs failed (then the rest is absent).
    pub(super) error: Option<String>,
    pub(super) running: i64,
    pub(super) pending: i64,
    pub(super) finishing: i64,
    pub(super) succeeded: i64,
    pub(super) failed: i64,
    /// Jobs the next poll would create.
    pub(super) create: i64,
    /// Finished Jobs the next poll would delete (history limits).
    pub(super) delete: Vec<String>,
    /// The decision written out with its numbers.
    pub(super) arithmetic: Vec<String>,
    /// Dispatch mode: the operator's ledger as the ScaledJob's status reports it (`null` in lag
    /// mode, or when the cluster has no such ScaledJob or status yet).
    pub(super) dispatch: Option<jobtide_api::scaledjob::DispatchStatus>,
    /// The capacity state and why no Job is created, when capacity fell short: the operator's
    /// `CapacityAvailable` condition (it alone sees the autoscaler's events and quota
    /// refusals), and what these Jobs' pods show now.
    pub(super) capacity: Option<String>,
}

/// The stored ScaledJob's `CapacityAvailable` condition (`None`: not written, or unreadable).
async fn stored_capacity(cluster: &Cluster, namespace: &str, name: &str) -> Option<Condition> {
    let stored = tokio::time::timeout(
        cluster.timeout,
        Api::<ScaledJob>::namespaced(cluster.client.clone(), namespace).get_opt(name),
    )
    .await
    .ok()?
    .ok()??;
    let condition = stored
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == CAPACITY_AVAILABLE)?;
    Some(Condition::new(
        ConditionStatus::parse(&condition.status),
        condition.reason.as_deref().unwrap_or_default(),
        condition.message.as_deref().unwrap_or_default(),
    ))
}

fn capacity_text(condition: &Condition) -> String {
    format!(
        "CapacityAvailable {} ({}): {}",
        condition.status, condition.reason, condition.message
    )
}

/// A Kubernetes client whose every call ends within `timeout`, and what it talks to.
pub(super) struct Cluster {
    client: kube::Client,
    /// The API server's URL, for messages.
    server: String,
    timeout: Duration,
}

pub(super) async fn cluster_client(
    args: &ExplainArgs,
    timeout: Duration,
) -> anyhow::Result<Option<Cluster>> {
    let config = match (&args.kubeconfig, &args.server) {
        (Some(path), _) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            // Loading may run an exec credential plugin or refresh a token over the network.
            tokio::time::timeout(
                timeout,
                kube::Config::from_custom_kubeconfig(
                    kubeconfig,
                    &kube::config::KubeConfigOptions::default(),
                ),
            )
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "kubeconfig {}: loading its credentials timed out after {}s (--timeout)",
                    path.display(),
                    timeout.as_secs()
                )
            })?
            .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        (None, Some(server)) => kube::Config::new(
            server
                .parse()
                .with_context(|| format!("--server {server}: not a URL"))?,
        ),
        (None, None) => return Ok(None),
    };
    let server = config.cluster_url.to_string();
    let server = server.strip_suffix('/').unwrap_or(&server).to_owned();
    let client = kube::Client::try_from(Deadlines::one_shot(timeout).apply(config))
        .with_context(|| format!("a client for {server}"))?;
    Ok(Some(Cluster {
        client,
        server,
        timeout,
    }))
}

/// The ScaledJob's Jobs and pods as the cluster has them now, and what `core` decides on them
/// with this run's measurements: the next poll's decision.
pub(super) async fn live(
    cluster: &Cluster,
    scaled_job: &ScaledJob,
    namespace: &str,
    name: &str,
    triggers: &[TriggerResult],
) -> LiveExplanation {
    let Cluster {
        client,
        server,
        timeout,
    } = cluster;
    let selector = ListParams::default().labels(&format!("{SCALED_JOB_NAME_LABEL}={name}"));
    let listed = async {
        let jobs = Api::<Job>::namespaced(client.clone(), namespace)
            .list(&selector)
            .await?;
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&selector)
            .await?;
        Ok::<_, kube::Error>((jobs.items, pods.items))
    };
    let listed = match tokio::time::timeout(*timeout, listed).await {
        Ok(Ok(listed)) => Ok(listed),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "timed out after {}s (--timeout) waiting for the API server",
            timeout.as_secs()
        )),
    };
    let (jobs, pods) = match listed {
        Ok(listed) => listed,
        Err(error) => {
            return LiveExplanation {
                mode: if scaled_job.spec.dispatch_mode() {
                    "dispatch"
                } else {
                    "lag"
                },
                error: Some(format!(
                    "listing the Jobs of {namespace}/{name} from {server}: {error}"
                )),
                running: 0,
                pending: 0,
                finishing: 0,
                succeeded: 0,
                failed: 0,
                create: 0,
                delete: Vec::new(),
                arithmetic: Vec::new(),
                dispatch: None,
                capacity: None,
            };
        }
    };
    if scaled_job.spec.dispatch_mode() {
        return dispatch_explanation(cluster, scaled_job, namespace, name, &jobs, &pods).await;
    }
    let facts = jobs_facts(
        &jobs.iter().collect::<Vec<_>>(),
        &pods.iter().collect::<Vec<_>>(),
    );
    let spec = &scaled_job.spec;
    let policy = PollPolicy {
        bounds: spec.bounds(),
        strategy: spec.scaling_strategy(),
        aggregation: spec.aggregation(),
        pending_pod_conditions: spec.pending_pod_conditions(),
        history_limits: spec.history_limits(),
    };
    let stored = stored_capacity(cluster, namespace, name).await;
    // A quota refusal is known only to the operator: its condition stands for it.
    let quota = stored
        .as_ref()
        .filter(|c| c.reason == "QuotaExceeded")
        .map(|c| QuotaRefusal {
            message: c.message.clone(),
            may_retry: false,
        });
    let conditions = Conditions {
        capacity: stored.clone(),
        ..Conditions::initial()
    };
    let generation = scaled_job.metadata.generation.unwrap_or(0).to_string();
    let decision = decide_poll(&PollInput {
        triggers,
        jobs: &facts,
        policy: policy.clone(),
        conditions: &conditions,
        now: std::time::SystemTime::now(),
        // explain shows what the next interval's poll would do (with the crash-loop guard's
        // view of these Jobs, not the operator's memory of earlier backoffs).
        creating: true,
        crash_loop: CrashLoopGuard {
            policy: &CrashLoopPolicy::from_annotation(
                scaled_job
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(jobtide_core::crashloop::DISABLE_ANNOTATION))
                    .map(String::as_str),
            ),
            state: &CrashLoopState::default(),
            spec_changed: false,
        },
        capacity: CapacityFacts {
            generation: &generation,
            requests: "",
            quota: quota.as_ref(),
            policy: CapacityPolicy::from_annotation(
                scaled_job
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(jobtide_core::capacity::PENDING_BUDGET_ANNOTATION))
                    .map(String::as_str),
            )
            // An invalid budget stops the ScaledJob: its Ready condition (shown) says why.
            .unwrap_or(CapacityPolicy::DEFAULT),
        },
    });
    let counts = decision.counts;
    // The operator's word when it has one that says capacity is short; else what the pods show.
    let capacity = match &stored {
        Some(c) if c.status == ConditionStatus::False => Some(capacity_text(c)),
        _ => decision
            .conditions
            .capacity
            .as_ref()
            .filter(|c| c.status == ConditionStatus::False)
            .map(capacity_text),
    };
    LiveExplanation {
        mode: "lag",
        dispatch: None,
        capacity,
        error: None,
        running: counts.running,
        pending: counts.pending,
        finishing: counts.finishing,
        succeeded: counts.succeeded,
        failed: counts.failed,
        create: decision.jobs.create,
        delete: decision.delete.clone(),
        arithmetic: arithmetic(
            policy.strategy,
            JobCountInput {
                aggregate: decision.aggregate,
                running: counts.running,
                pending: counts.pending,
                bounds: policy.bounds,
            },
            decision.jobs,
        ),
    }
}

/// Dispatch mode: no lag decision (one Job per message); the Jobs by state and the operator's
/// ledger from the ScaledJob's status.
async fn dispatch_explanation(
    cluster: &Cluster,
    scaled_job: &ScaledJob,
    namespace: &str,
    name: &str,
    jobs: &[Job],
    pods: &[Pod],
) -> LiveExplanation {
    let facts = jobs_facts(
        &jobs.iter().collect::<Vec<_>>(),
        &pods.iter().collect::<Vec<_>>(),
    );
    let counts = jobtide_core::jobs::count(&facts, scaled_job.spec.pending_pod_conditions());
    let stored = tokio::time::timeout(
        cluster.timeout,
        Api::<ScaledJob>::namespaced(cluster.client.clone(), namespace).get_opt(name),
    )
    .await;
    let dispatch = match stored {
        Ok(Ok(Some(stored))) => stored.status.and_then(|s| s.dispatch),
        _ => None,
    };
    let max = scaled_job.spec.bounds().max;
    let mut arithmetic = vec![format!(
        "dispatch mode: one Job per message, at most maxReplicaCount = {max} in flight; \
         no lag arithmetic"
    )];
    match &dispatch {
        Some(d) => arithmetic.push(format!(
            "operator's ledger: {} in flight, {} queued at the cap, {} dead-lettered, {} failed for good; committed {}",
            d.in_flight,
            d.queued,
            d.dead_lettered,
            d.failed,
            d.committed
                .iter()
                .map(|(p, o)| format!("{p}:{o}"))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        None => arithmetic.push("operator's ledger: not reported yet (status.dispatch)".into()),
    }
    let capacity = stored_capacity(cluster, namespace, name)
        .await
        .filter(|c| c.status == ConditionStatus::False)
        .map(|c| capacity_text(&c) + " (reading messages pauses)");
    LiveExplanation {
        mode: "dispatch",
        capacity,
        error: None,
        running: counts.running,
        pending: counts.pending,
        finishing: counts.finishing,
        succeeded: counts.succeeded,
        failed: counts.failed,
        create: 0,
        delete: Vec::new(),
        arithmetic,
        dispatch,
    }
}
