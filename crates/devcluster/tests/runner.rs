//! The local job runner through kube-rs: Jobs become pods become local processes.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failure is the test failing

use std::time::Duration;

use jobtide_devcluster::DevCluster;
use jobtide_devcluster::runner::RunnerConfig;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

async fn cluster(max_parallel_pods: usize) -> (DevCluster, Client) {
    let cluster = DevCluster::start_with_runner(
        "127.0.0.1:0".parse().unwrap(),
        None,
        RunnerConfig {
            max_parallel_pods,
            ..RunnerConfig::default()
        },
    )
    .await
    .expect("start");
    let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
    (cluster, client)
}

fn job(name: &str, script: &str, extra: serde_json::Value) -> Job {
    let mut spec = json!({"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [{
        "name": "main", "image": "confluentinc/cp-kafka:7.6.1", "command": ["/bin/sh", "-c"], "args": [script]}]}}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn wait_for(api: &Api<Job>, name: &str, condition: &str) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job = api.get(name).await.unwrap();
        let done = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == condition && c.status == "True");
        if done {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {condition}: {:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pods_of(name: &str) -> ListParams {
    ListParams::default().labels(&format!("job-name={name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_completion_with_env_and_logs() {
    let (_cluster, client) = cluster(4).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "settings"}, "data": {"GREETING": "hello"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut spec = job(
        "hello",
        "echo start; echo \"$GREETING from $POD\"; echo end! >&2",
        json!({}),
    );
    let container = &mut spec
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    container.env = Some(serde_json::from_value(json!([
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "GREETING"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])).unwrap());
    jobs.create(&PostParams::default(), &spec).await.unwrap();
    let done = wait_for(&jobs, "hello", "Complete").await;
    let status = done.status.unwrap();
    assert_eq!((status.succeeded, status.active), (Some(1), Some(0)));
    assert!(status.completion_time.is_some() && status.start_time.is_some());

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let listed = pods.list(&pods_of("hello")).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let pod = &listed.items[0];
    let name = pod.name_any();
    assert!(
        name.starts_with("hello-") && name.len() == "hello-".len() + 5,
        "{name}"
    );
    let owner = &pod.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
    assert_eq!(
        pod.labels()
            .get("batch.kubernetes.io/job-name")
            .map(String::as_str),
        Some("hello")
    );
    let pod_status = pod.status.clone().unwrap();
    assert_eq!(pod_status.phase.as_deref(), Some("Succeeded"));
    let terminated = pod_status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    let logs = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert_eq!(logs, format!("start\nhello from {name}\nend!\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pods_are_retried_until_the_backoff_limit() {
    let (_cluster, client) = cluster(4).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("fails", "echo trying; exit 3", json!({"backoffLimit": 1})),
    )
    .await
    .unwrap();
    let done = wait_for(&jobs, "fails", "Failed").await;
    let condition = done
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(condition.reason.as_deref(), Some("BackoffLimitExceeded"));
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let failed = pods.list(&pods_of("fails")).await.unwrap();
    assert_eq!(failed.items.len(), 2, "one try plus one retry");
    assert!(
        failed
            .items
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_pods_stay_pending_unschedulable() {
    let (_cluster, client) = cluster(1).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(&PostParams::default(), &job("first", "sleep 1", json!({})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    jobs.create(&PostParams::default(), &job("second", "true", json!({})))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let waiting = pods.list(&pods_of("second")).await.unwrap();
        let unschedulable = waiting.items.iter().any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
        });
        if unschedulable {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second pod never waited for capacity"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(&jobs, "second", "Complete").await;
}

fn alive(pid: &str) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

async fn pid_of(pods: &Api<Pod>, job: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pod) = pods.list(&pods_of(job)).await.unwrap().items.first() {
            let logs = pods
                .logs(&pod.name_any(), &LogParams::default())
                .await
                .unwrap_or_default();
            if let Some(pid) = logs.lines().next().filter(|l| !l.is_empty()) {
                return pid.to_owned();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no pid logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_kills_its_process_and_deadlines_fail_jobs() {
    let (cluster, client) = cluster(4).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("long", "echo $$; exec sleep 30", json!({})),
    )
    .await
    .unwrap();
    let pid = pid_of(&pods, "long").await;
    assert!(alive(&pid));
    jobs.delete("long", &DeleteParams::background())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while alive(&pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} survived its Job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    jobs.create(
        &PostParams::default(),
        &job("slow", "exec sleep 30", json!({"activeDeadlineSeconds": 1})),
    )
    .await
    .unwrap();
    let failed = wait_for(&jobs, "slow", "Failed").await;
    let reason = failed
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .reason;
    assert_eq!(reason.as_deref(), Some("DeadlineExceeded"));

    jobs.create(
        &PostParams::default(),
        &job("orphan-check", "echo $$; exec sleep 30", json!({})),
    )
    .await
    .unwrap();
    let pid = pid_of(&pods, "orphan-check").await;
    drop(cluster);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while alive(&pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} outlived the runner"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_a_pod_started_go_with_it() {
    let (cluster, client) = cluster(4).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let gone = async |pid: &str, what: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // A background process left behind by a finished container goes with the container.
    jobs.create(
        &PostParams::default(),
        &job(
            "leaves-one-behind",
            "sleep 30 >/dev/null 2>&1 & echo $!",
            json!({}),
        ),
    )
    .await
    .unwrap();
    let pid = pid_of(&pods, "leaves-one-behind").await;
    wait_for(&jobs, "leaves-one-behind", "Complete").await;
    gone(&pid, "a background process outlived its container").await;

    // A child of the shell (not exec'd) dies when the Job is deleted, and when the runner stops.
    jobs.create(
        &PostParams::default(),
        &job("shell-child", "sleep 30 & echo $!; wait", json!({})),
    )
    .await
    .unwrap();
    let pid = pid_of(&pods, "shell-child").await;
    assert!(alive(&pid));
    jobs.delete("shell-child", &DeleteParams::background())
        .await
        .unwrap();
    gone(&pid, "the shell's child survived its Job").await;

    jobs.create(
        &PostParams::default(),
        &job("shell-child-2", "sleep 30 & echo $!; wait", json!({})),
    )
    .await
    .unwrap();
    let pid = pid_of(&pods, "shell-child-2").await;
    drop(cluster);
    gone(&pid, "the shell's child outlived the runner").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_for_its_secret_volume_and_reads_it_where_its_env_points() {
    let (cluster, client) = cluster(4).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let volume_job = job(
        "with-volume",
        "replaced below",
        json!({"template": {"spec": {"restartPolicy": "Never",
            "volumes": [{"name": "message", "secret": {"secretName": "payload"}}],
            "containers": [{"name": "main", "image": "i", "command": ["/bin/sh", "-c"],
                "args": [r#"echo "$MESSAGE_DIR"; od -An -tx1 "$MESSAGE_DIR/value"; cat "$MESSAGE_DIR/key""#],
                "env": [{"name": "MESSAGE_DIR", "value": "/var/run/jobtide/message"}],
                "volumeMounts": [{"name": "message", "mountPath": "/var/run/jobtide/message", "readOnly": true}]}]}}}),
    );
    jobs.create(&PostParams::default(), &volume_job)
        .await
        .unwrap();
    // No Secret yet: the pod waits, as the kubelet's does.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let waiting = loop {
        let list = pods.list(&pods_of("with-volume")).await.unwrap();
        let reason = list.items.first().and_then(|p| {
            p.status.as_ref()?.container_statuses.as_ref()?[0]
                .state
                .as_ref()?
                .waiting
                .as_ref()?
                .reason
                .clone()
        });
        if let Some(reason) = reason {
            break (list.items[0].name_any(), reason);
        }
        assert!(tokio::time::Instant::now() < deadline, "no waiting pod");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(waiting.1, "ContainerCreating");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "payload"}, "data": {"key": "MTg=", "value": "/wB4"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    wait_for(&jobs, "with-volume", "Complete").await;
    let log = pods.logs(&waiting.0, &LogParams::default()).await.unwrap();
    let words: Vec<&str> = log.split_whitespace().collect();
    assert_eq!(words[1..], ["ff", "00", "78", "18"], "{log}");
    let local = std::path::PathBuf::from(words[0]);
    assert!(
        !local.starts_with("/var/run") && local.ends_with("message"),
        "the env points at the local directory: {log}"
    );
    assert!(local.join("value").exists());
    // The pod's directory goes with the pod.
    jobs.delete("with-volume", &DeleteParams::background())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while local.exists() {
        assert!(tokio::time::Instant::now() < deadline, "{local:?} stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_whose_name_climbs_out_of_the_pod_directory_is_refused() {
    let (_cluster, client) = cluster(4).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let escaping = job(
        "escaping",
        "unused",
        json!({"template": {"spec": {"restartPolicy": "Never",
            "volumes": [{"name": "../../escape", "configMap": {"name": "cm"}}],
            "containers": [{"name": "main", "image": "i", "command": ["true"],
                "volumeMounts": [{"name": "../../escape", "mountPath": "/data"}]}]}}}),
    );
    jobs.create(&PostParams::default(), &escaping)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = pods.list(&pods_of("escaping")).await.unwrap();
        let reason = list.items.first().and_then(|p| {
            p.status.as_ref()?.container_statuses.as_ref()?[0]
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .reason
                .clone()
        });
        if let Some(reason) = reason {
            assert_eq!(reason, "CreateContainerConfigError");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pod never failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
