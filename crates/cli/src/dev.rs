//! `jobtide dev`: the whole system on one machine — the embedded Kubernetes API server with
//! jobtide's CRDs, the local job runner (pods are local processes), an embedded Kafka-protocol
//! broker (librdkafka's mock cluster) unless `--bootstrap-servers` names a real one, and the same
//! operator `jobtide operator` runs. Writes a kubeconfig for kubectl; stops everything it started
//! on Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use futures::FutureExt;
use jobtide_controller::operator::{self, Leadership};
use jobtide_controller::{Config, Context};
use jobtide_devcluster::DevCluster;
use jobtide_devcluster::autoscaler::{self, Autoscaler, NodePool};
use jobtide_devcluster::runner::RunnerConfig;
use jobtide_kafka::ffi::MockKafka;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use tokio::net::TcpListener;

use crate::dev_otel::{Collector, DevOtel};
use crate::kube_client::Deadlines;
use crate::operator::{LogArgs, bind_address, shutdown_signal};
use crate::telemetry::SpanSink;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the embedded Kubernetes API server listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:6443", value_name = "ADDR", value_parser = bind_address)]
    api_addr: SocketAddr,
    /// Where the embedded Kafka broker is reachable (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9092", value_name = "ADDR", value_parser = bind_address)]
    kafka_addr: SocketAddr,
    /// Use this Kafka instead of the embedded broker.
    #[arg(long, value_name = "HOST:PORT[,…]", conflicts_with = "kafka_addr")]
    bootstrap_servers: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR", value_parser = bind_address)]
    metrics_addr: SocketAddr,
    /// Where to write the kubeconfig (default: `kubeconfig` in the state directory).
    #[arg(long, value_name = "PATH")]
    kubeconfig_out: Option<PathBuf>,
    /// The state directory (default: `$XDG_STATE_HOME/jobtide/dev`, else
    /// `~/.local/state/jobtide/dev`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Pods the local runner runs at once; more stay Pending (Unschedulable).
    #[arg(long, default_value_t = 8, value_name = "N")]
    max_parallel_pods: usize,
    /// Simulate a node pool that grows when pods are Unschedulable (a stand-in for the Cluster
    /// Autoscaler, with its event reasons; see docs/dev.md):
    /// `max=N[,min=N][,cpu=Q][,memory=Q][,pods=N][,delay=DURATION][,scale-down-after=DURATION][,name=NAME]`,
    /// e.g. `min=0,max=4,cpu=4,memory=8Gi,pods=4,delay=10s`.
    #[arg(long, value_name = "SPEC", env = "JOBTIDE_DEV_NODE_POOL")]
    node_pool: Option<NodePool>,
    /// Create a topic at start (repeatable), `NAME` or `NAME:PARTITIONS`.
    #[arg(long = "create-topic", value_name = "NAME[:PARTITIONS]", value_parser = topic_spec)]
    create_topics: Vec<(String, i32)>,
    /// Start no operator: run `jobtide operator --kubeconfig … --bootstrap-servers-override …`
    /// against this API server and broker yourself (to stop, kill and restart it at will).
    #[arg(long, env = "JOBTIDE_DEV_NO_OPERATOR")]
    no_operator: bool,
    /// Show the operator's traces with nothing to set up: `file:PATH` writes its spans as OTLP
    /// JSON lines to PATH; `collector` starts an OpenTelemetry Collector (`$JOBTIDE_OTELCOL`,
    /// else the one scripts/install-otelcol caches) writing to `<state dir>/otel/spans.jsonl`.
    /// Takes the place of `--traces-exporter`.
    #[arg(long, value_name = "file:PATH|collector", value_parser = crate::dev_otel::parse, env = "JOBTIDE_DEV_OTEL")]
    otel: Option<DevOtel>,
    #[command(flatten)]
    log: LogArgs,
}

fn topic_spec(text: &str) -> Result<(String, i32), String> {
    let (name, partitions) = match text.split_once(':') {
        Some((name, partitions)) => (
            name,
            partitions
                .parse::<i32>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{partitions:?} is not a positive partition count"))?,
        ),
        None => (text, 1),
    };
    if name.is_empty() {
        return Err("the topic name is empty".into());
    }
    Ok((name.to_owned(), partitions))
}

fn state_dir(args: &DevArgs) -> PathBuf {
    if let Some(dir) = &args.state_dir {
        return dir.clone();
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("jobtide").join("dev")
}

/// Accepts on `listener` and pipes every connection to `target`: a stable address for the
/// embedded broker, whose own port is picked by librdkafka.
async fn forward(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let _ = inbound.set_nodelay(true);
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// The embedded broker behind a forwarder on `addr`, advertising `addr`.
async fn embedded_kafka(
    addr: SocketAddr,
) -> anyhow::Result<(MockKafka, String, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "--kafka-addr {addr}: {e} (choose another address; port 0 picks a free one)"
        )
    })?;
    let bound = listener.local_addr()?;
    let kafka =
        MockKafka::start(1).map_err(|e| anyhow::anyhow!("starting the embedded broker: {e}"))?;
    let target: SocketAddr = kafka
        .bootstrap_servers()
        .split(',')
        .next()
        .and_then(|a| a.parse().ok())
        .context("the embedded broker has no address")?;
    kafka
        .advertise(1, &bound.ip().to_string(), bound.port())
        .map_err(|e| anyhow::anyhow!("configuring the embedded broker: {e}"))?;
    let task = tokio::spawn(forward(listener, target));
    Ok((kafka, bound.to_string(), task))
}

/// Where `--otel` sends spans: the sink, the collector (when one runs) and the line that says
/// where the spans go.
fn otel(args: &DevArgs) -> anyhow::Result<Option<(SpanSink, Option<Collector>, String)>> {
    Ok(match &args.otel {
        None => None,
        Some(DevOtel::File(path)) => Some((
            SpanSink::File(path.clone()),
            None,
            format!("traces: {} (OTLP JSON, a line per batch)", path.display()),
        )),
        Some(DevOtel::Collector) => {
            let collector = Collector::start(&state_dir(args).join("otel"))?;
            let line = format!(
                "traces: OpenTelemetry Collector receiving OTLP/HTTP at {} (OTEL_EXPORTER_OTLP_ENDPOINT), writing {} (log: {})",
                collector.endpoint,
                collector.spans.display(),
                collector.log.display()
            );
            Some((collector.sink(), Some(collector), line))
        }
    })
}

pub fn run(args: DevArgs) -> ExitCode {
    let otel = match otel(&args) {
        Ok(otel) => otel,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let (sink, collector, traces_line) = match otel {
        Some((sink, collector, line)) => (Some(sink), collector, Some(line)),
        None => (None, None, None),
    };
    let telemetry = match args.log.init_with(sink.as_ref()) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match crate::cli::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let code = match runtime.block_on(dev(args, telemetry.traces(), traces_line)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // Pod processes are killed with the runner; don't wait for stray blocking tasks.
    runtime.shutdown_timeout(Duration::from_secs(2));
    // Flush the last spans, then stop the collector (which flushes its file).
    drop(telemetry);
    drop(collector);
    code
}

async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jobtide_api::crd::all() {
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "installing CRD {}",
                        crd.metadata.name.as_deref().unwrap_or_default()
                    )
                });
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

async fn dev(args: DevArgs, traces: bool, traces_line: Option<String>) -> anyhow::Result<()> {
    let began = Instant::now();
    let shutdown = shutdown_signal().shared();

    // Kafka first: pods get its address.
    let (kafka, bootstrap, forwarder) = match &args.bootstrap_servers {
        Some(servers) => (None, servers.clone(), None),
        None => {
            let (kafka, bootstrap, task) = embedded_kafka(args.kafka_addr).await?;
            (Some(kafka), bootstrap, Some(task))
        }
    };
    for (topic, partitions) in &args.create_topics {
        match &kafka {
            Some(kafka) => kafka
                .create_topic(topic, *partitions)
                .map_err(|e| anyhow::anyhow!("--create-topic {topic}: {e}"))?,
            None => jobtide_kafka::tools::create_topic(
                &bootstrap,
                topic,
                *partitions,
                Duration::from_secs(30),
            )
            .await
            .with_context(|| format!("--create-topic {topic}"))?,
        }
    }

    let mut default_env = BTreeMap::new();
    default_env.insert("JOBTIDE_BOOTSTRAP_SERVERS".to_owned(), bootstrap.clone());
    let path_prepend = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .into_iter()
        .collect();
    let cluster = DevCluster::start_with_runner(
        args.api_addr,
        None,
        RunnerConfig {
            max_parallel_pods: args.max_parallel_pods,
            path_prepend,
            default_env,
            volumes_dir: Some(state_dir(&args).join("volumes")),
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "--api-addr {}: {e} (choose another address; port 0 picks a free one)",
            args.api_addr
        )
    })?;
    let server = cluster.url();
    let client = kube::Client::try_from(jobtide_controller::with_user_agent(
        Deadlines::LONG_RUNNING.apply(kube::Config::new(
            server.parse().context("the API server's URL")?,
        )),
    ))?;
    install_crds(&client).await?;
    let pool = match (&args.node_pool, &cluster.runner) {
        (Some(pool), Some(runner)) => Some(Autoscaler::start(
            client.clone(),
            Arc::clone(runner),
            pool.clone(),
            autoscaler::DEFAULT_INTERVAL,
        )),
        _ => None,
    };

    let mut config = Config::new(env!("CARGO_PKG_VERSION"), "jobtide-dev");
    config.traces = traces;
    // The live page draws each ScaledJob's lag per partition over the last minutes.
    config.lag_history = true;
    // Manifests name in-cluster brokers; on one machine every trigger reads dev's Kafka.
    config.bootstrap_servers_override = Some(bootstrap.split(',').map(str::to_owned).collect());
    let context = Arc::new(Context::new(client.clone(), config));
    let operator = if args.no_operator {
        None
    } else {
        let (health, task) =
            operator::spawn(Arc::clone(&context), Leadership::Always, shutdown.clone());
        let (metrics_at, metrics_task) = jobtide_controller::http::serve_with(
            args.metrics_addr,
            context.metrics(),
            health.clone(),
            crate::live::router(client.clone(), Arc::clone(&context)),
            shutdown.clone(),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "--metrics-addr {}: {e} (choose another address; port 0 picks a free one)",
                args.metrics_addr
            )
        })?;
        Some((health, task, metrics_at, metrics_task))
    };

    let kubeconfig_path = args
        .kubeconfig_out
        .clone()
        .unwrap_or_else(|| state_dir(&args).join("kubeconfig"));
    write_file(&kubeconfig_path, &cluster.kubeconfig())?;

    if let Some((health, ..)) = &operator {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !health.is_ready() {
            if Instant::now() > deadline {
                bail!("the operator's caches did not sync within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let pool_line = args.node_pool.as_ref().map_or_else(String::new, |pool| {
        format!(
            "node pool (simulated): {} nodes of {}m cpu, {} MiB, {} pods; {} to {}, {:?} to add one\n",
            pool.name,
            pool.shape.cpu_millis,
            pool.shape.memory_bytes >> 20,
            pool.shape.pods,
            pool.min,
            pool.max,
            pool.delay,
        )
    });
    let kafka_kind = if kafka.is_some() {
        "embedded: librdkafka mock cluster, in memory"
    } else {
        "external"
    };
    let operator_line = match &operator {
        Some((_, _, metrics_at, _)) => {
            format!("live: http://{metrics_at}/\nmetrics: http://{metrics_at}/metrics")
        }
        None => format!(
            "operator: not started (--no-operator); start one with\n  jobtide operator --kubeconfig {} --bootstrap-servers-override {bootstrap}",
            kubeconfig_path.display()
        ),
    };
    let traces_line = traces_line.map(|line| line + "\n").unwrap_or_default();
    println!(
        "jobtide dev is ready in {:.2} s
{traces_line}api-server: {server}
kubeconfig: {}
kafka: {bootstrap} ({kafka_kind})
{pool_line}{operator_line}

Try:
  export KUBECONFIG={}
  kubectl apply --validate=false -f examples/dev-scaledjob.yaml
  jobtide kafka produce --bootstrap-servers {bootstrap} --topic test-topic --key 18 --value '{{\"orderid\":18}}'
  kubectl get scaledjob,jobs,pods
Ctrl-C stops everything.",
        began.elapsed().as_secs_f64(),
        kubeconfig_path.display(),
        kubeconfig_path.display(),
    );

    shutdown.clone().await;
    eprintln!("jobtide dev: stopping");
    if let Some((_, task, _, metrics_task)) = operator {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        let _ = metrics_task.await;
    }
    drop(pool);
    // Dropping the cluster stops the runner, which kills every pod's process group.
    drop(cluster);
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    drop(kafka);
    eprintln!("jobtide dev: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_specs() {
        assert_eq!(topic_spec("orders"), Ok(("orders".into(), 1)));
        assert_eq!(topic_spec("orders:6"), Ok(("orders".into(), 6)));
        assert!(topic_spec("orders:0").is_err());
        assert!(topic_spec("orders:x").is_err());
        assert!(topic_spec(":3").is_err());
    }
}
