//! What the capacity tests (`kube_capacity.rs`, `kube_kueue.rs`) share: the operator on
//! librdkafka's mock cluster, messages, polls, the `CapacityAvailable` condition.

use std::path::Path;
use std::time::Duration;

use jobtide_kafka::ffi::MockKafka;
use jobtide_testpeers::ControlPlane;

use super::{Operator, apply_chart_rbac, get_json, install_crds, wait_for};

/// The `CapacityAvailable` condition's (status, reason, message).
pub fn capacity(
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
) -> Option<(String, String, String)> {
    let sj = get_json(plane, &["scaledjob", name, "-n", namespace]);
    let c = sj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "CapacityAvailable")?
        .clone();
    let text = |key: &str| c[key].as_str().unwrap_or_default().to_owned();
    Some((text("status"), text("reason"), text("message")))
}

/// The operator as the chart's ServiceAccount in `namespace` (created), reading `kafka`.
pub fn start_operator(
    plane: &ControlPlane,
    namespace: &str,
    kafka: &MockKafka,
    dir: &Path,
) -> Operator {
    install_crds(plane);
    plane.create_namespace(namespace).unwrap();
    let account = apply_chart_rbac(plane, namespace, namespace);
    let kubeconfig = plane
        .service_account_kubeconfig(namespace, &account, Duration::from_hours(1))
        .unwrap();
    Operator::start(
        &kubeconfig,
        namespace,
        &kafka.bootstrap_servers(),
        &format!("{namespace}-operator"),
        dir,
        &[],
    )
}

/// Produces `count` messages to `topic`.
pub async fn produce(kafka: &MockKafka, topic: &str, count: usize) {
    let records: Vec<_> = (0..count).map(|i| (None, format!("message-{i}"))).collect();
    jobtide_kafka::tools::produce(
        &kafka.bootstrap_servers(),
        topic,
        &records,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}

/// Waits until the operator has polled `count` more times.
pub fn polls_pass(operator: &Operator, count: f64, log: impl Fn() -> String) {
    let polls = operator.metric("jobtide_polls_total");
    wait_for(
        "more polls",
        Duration::from_mins(1),
        || (operator.metric("jobtide_polls_total") >= polls + count).then_some(()),
        log,
    );
}
