//! jobtide's node agent (`jobtide_devcluster::node`) as the kubelet of a real control plane.

use std::time::{Duration, Instant};

use jobtide_devcluster::node::{NodeAgent, NodeConfig};
use jobtide_testpeers::ControlPlane;

use super::{get_json, wait_for};

/// Starts the agent of node `config.name` with that node's own credentials, on a runtime of its
/// own (a test's runtime ends with the test), and waits until the node is Ready and untainted
/// (the node lifecycle controller lifts the not-ready taint). Returns the agent and how long
/// registering took.
pub fn start(plane: &ControlPlane, config: NodeConfig) -> (NodeAgent, Duration) {
    let node = config.name.clone();
    let kubeconfig = plane.node_kubeconfig(&node).unwrap();
    assert_eq!(
        kubeconfig,
        plane.dir.join(format!("node-{node}.kubeconfig"))
    );
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let client_config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .unwrap();
            let client = kube::Client::try_from(client_config).unwrap();
            sender.send(NodeAgent::start(client, config).await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let started = Instant::now();
    let agent = receiver.recv().unwrap().unwrap();
    let registered = started.elapsed();
    wait_for(
        "the node Ready and untainted",
        Duration::from_mins(1),
        || {
            let object = get_json(plane, &["node", &node]);
            let ready = object["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (ready
                && object["spec"]["taints"]
                    .as_array()
                    .is_none_or(Vec::is_empty))
            .then_some(())
        },
        || format!("{:#}", get_json(plane, &["node", &node])),
    );
    eprintln!(
        "node {node}: registered in {registered:?}, Ready and untainted after {:?}",
        started.elapsed()
    );
    (agent, registered)
}
