//! Shared harness of the operator tests: the embedded API server with its local job runner,
//! librdkafka's mock cluster, and operators started and stopped at will.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code

use std::sync::Arc;
use std::time::Duration;

use jobtide_api::ScaledJob;
use jobtide_controller::operator::{self, Leadership};
use jobtide_controller::{Config as OperatorConfig, Context};
use jobtide_devcluster::DevCluster;
use jobtide_devcluster::runner::RunnerConfig;
use jobtide_kafka::ffi::MockKafka;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

pub struct Harness {
    pub cluster: DevCluster,
    pub client: Client,
    pub kafka: MockKafka,
}

/// The API server (with the runner running at most `max_parallel_pods`), CRDs, a mock cluster.
pub async fn harness(max_parallel_pods: usize) -> Harness {
    let cluster = DevCluster::start_with_runner(
        "127.0.0.1:0".parse().unwrap(),
        None,
        RunnerConfig {
            max_parallel_pods,
            ..RunnerConfig::default()
        },
    )
    .await
    .unwrap();
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jobtide_api::crd::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let kafka = MockKafka::start(1).unwrap();
    Harness {
        cluster,
        client,
        kafka,
    }
}

/// A running operator; `stop` shuts it down gracefully.
pub struct Operator {
    pub context: Arc<Context>,
    pub health: operator::Health,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the operator stopped in time")
                .unwrap();
        }
    }

    pub fn metrics(&self) -> String {
        self.context.metrics().encode()
    }

    /// Ends the operator as SIGKILL would: its task is aborted mid-step, nothing is released.
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An operator with its own client, which sends the operator's User-Agent.
pub fn start_operator(h: &Harness, instance: &str, leadership: Leadership) -> Operator {
    start_operator_with(
        h,
        instance,
        leadership,
        jobtide_controller::with_user_agent(Config::new(h.cluster.url().parse().unwrap())),
    )
}

/// A client of the harness's API server whose requests carry `User-Agent: <operator's> <name>`
/// (the request log tells replicas apart by it).
pub fn client_config_named(h: &Harness, name: &str) -> Config {
    let mut config = Config::new(h.cluster.url().parse().unwrap());
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&format!("{} {name}", jobtide_controller::USER_AGENT)).unwrap(),
    ));
    config
}

/// An operator on a client made from `config`.
pub fn start_operator_with(
    h: &Harness,
    instance: &str,
    leadership: Leadership,
    config: Config,
) -> Operator {
    start_operator_configured(h, leadership, config, OperatorConfig::new("test", instance))
}

/// An operator on a client made from `config`, configured by `operator`.
pub fn start_operator_configured(
    h: &Harness,
    leadership: Leadership,
    config: Config,
    operator: OperatorConfig,
) -> Operator {
    let _ = h;
    let client = Client::try_from(config).unwrap();
    let context = Arc::new(Context::new(client, operator));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (health, task) = operator::spawn(Arc::clone(&context), leadership, async move {
        let _ = stopped.await;
    });
    Operator {
        context,
        health,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A ScaledJob on `topic` whose Jobs run `script` in `sh -c`; `extra` is merged into the spec.
/// One Job per message: `lagThreshold` 1 and `allowIdleConsumers` (no cap at the partition count).
pub fn scaled_job(name: &str, servers: &str, topic: &str, script: &str, extra: Value) -> ScaledJob {
    let mut spec = json!({
        "jobTargetRef": {"backoffLimit": 4, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": "busybox", "command": ["/bin/sh", "-c"], "args": [script]}]}}},
        "pollingInterval": 1, "maxReplicaCount": 30, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 2,
        "triggers": [{"type": "kafka", "metadata": {"bootstrapServers": servers, "consumerGroup": "my-group",
            "topic": topic, "lagThreshold": "1", "offsetResetPolicy": "earliest", "allowIdleConsumers": "true"}}],
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        spec[key] = value.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

pub async fn eventually<T>(
    what: &str,
    seconds: u64,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn condition(sj: &ScaledJob, type_: &str) -> Option<(String, String)> {
    let c = sj
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// (reason, message) of the events about `name`.
pub async fn events_of(client: &Client, name: &str) -> Vec<(String, String)> {
    all_events_of(client, name)
        .await
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

pub async fn all_events_of(client: &Client, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
}

pub async fn jobs_of(client: &Client, name: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.list(&ListParams::default().labels(&format!("scaledjob.keda.sh/name={name}")))
        .await
        .unwrap()
        .items
}

pub fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Produces `count` messages to `topic`.
pub async fn produce(kafka: &MockKafka, topic: &str, count: usize) {
    let records: Vec<_> = (0..count)
        .map(|i| (Some(i.to_string()), format!("message-{i}")))
        .collect();
    jobtide_kafka::tools::produce(
        &kafka.bootstrap_servers(),
        topic,
        &records,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}

/// The value of the counter sample `name` (with its labels, as exposed), 0 when absent.
pub fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Creating polls so far (`jobtide_polls_total{kind="creating"}`).
pub const CREATING_POLLS: &str = r#"jobtide_polls_total{kind="creating"}"#;

/// Waits until `operator` has run `count` more creating polls: proof that the time a test waits
/// for passed with a live operator, before it asserts that nothing happened.
pub async fn polls_pass(operator: &Operator, count: u64) {
    let start = sample(&operator.metrics(), CREATING_POLLS);
    eventually(&format!("{count} more polls"), 30, async || {
        (sample(&operator.metrics(), CREATING_POLLS) >= start + count).then_some(())
    })
    .await;
}

/// The messages of `topic` that `group` has not committed, as another client (the lag scaler's,
/// counting from the log start) sees them; `None` while the broker can't answer.
pub async fn uncommitted(kafka: &MockKafka, group: &str, topic: &str) -> Option<i64> {
    use jobtide_api::trigger::IsolationLevel;
    use jobtide_api::trigger::connection::{KafkaConnection, Sasl};
    use jobtide_core::kafka::{LagPolicy, OffsetResetPolicy};
    use jobtide_kafka::scaler::{LagTarget, Topics, measure};
    let target = LagTarget {
        connection: KafkaConnection {
            bootstrap_servers: vec![kafka.bootstrap_servers()],
            tls: None,
            sasl: Sasl::None,
        },
        group: group.into(),
        topics: Topics::Named(vec![topic.into()]),
        policy: LagPolicy {
            lag_threshold: 1,
            offset_reset_policy: OffsetResetPolicy::Earliest,
            ..LagPolicy::default()
        },
        isolation: IsolationLevel::ReadUncommitted,
    };
    measure(
        &jobtide_kafka::source::SourcePool::new(),
        &target,
        &jobtide_core::lag::PersistentLagMemory::new(),
        Duration::from_secs(10),
    )
    .await
    .ok()
    .map(|m| m.total_lag)
}

/// The log of the pod of Job `job`.
pub async fn log_of(client: &Client, job: &str) -> String {
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use kube::api::LogParams;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap();
    pods.logs(&list.items[0].name_any(), &LogParams::default())
        .await
        .unwrap()
}
