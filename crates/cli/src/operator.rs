//! `jobtide operator`: the ScaledJob operator against a Kubernetes API (in-cluster config or a
//! kubeconfig), with metrics, health endpoints, optional leader election and graceful shutdown.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use futures::FutureExt;
use jobtide_controller::leader::{Elector, Timing};
use jobtide_controller::operator::{self, Leadership};
use jobtide_controller::ratelimit::RateLimitLayer;
use jobtide_controller::shards::Sharding;
use jobtide_controller::{Config, Context};
use jobtide_kafka::kerberos::{GssapiSupport, KinitHelper};

use crate::kube_client::Deadlines;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "JOBTIDE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `jobtide_controller=debug,info`, …).
    #[arg(long, default_value = "info", env = "JOBTIDE_LOG_LEVEL")]
    pub log_level: String,
    #[command(flatten)]
    pub traces: crate::telemetry::TraceArgs,
}

impl LogArgs {
    /// Installs the process-wide subscriber (stderr) and, when traces are exported, the
    /// OpenTelemetry tracer provider (keep the returned guard for as long as the process runs:
    /// dropping it flushes the last spans).
    pub fn init(&self) -> anyhow::Result<crate::telemetry::Telemetry> {
        self.init_with(None)
    }

    /// [`Self::init`], sending spans to `sink` when given (`jobtide dev --otel`).
    pub fn init_with(
        &self,
        sink: Option<&crate::telemetry::SpanSink>,
    ) -> anyhow::Result<crate::telemetry::Telemetry> {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;

        let filter = tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .with_context(|| format!("--log-level {:?} is not a valid filter", self.log_level))?;
        let (telemetry, spans) = self.traces.init_with(sink)?;
        // Each layer filters for itself: `--log-level warn` quiets the logs, not the traces,
        // which get jobtide's own info spans (each poll's) whatever the log level.
        let traced = tracing_subscriber::filter::Targets::new()
            .with_target("jobtide", tracing::Level::INFO)
            .with_target("jobtide_controller", tracing::Level::INFO)
            .with_target("jobtide_kafka", tracing::Level::INFO);
        let spans = spans.map(|layer| layer.with_filter(traced));
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        let registry = tracing_subscriber::registry().with(spans);
        let installed = match self.log_format {
            LogFormat::Text => registry.with(fmt.with_filter(filter)).try_init(),
            LogFormat::Json => registry
                .with(fmt.json().flatten_event(true).with_filter(filter))
                .try_init(),
        };
        installed.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))?;
        Ok(telemetry)
    }
}

/// What the controller watches and how (shared by `operator` and `dev`).
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Watch this namespace only (default: all namespaces).
    #[arg(long, value_name = "NAMESPACE", env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Reconcile only ScaledJobs matching this label selector.
    #[arg(long, value_name = "SELECTOR", env = "JOBTIDE_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// ScaledJobs reconciled at once (a poll mostly waits on Kafka and the API).
    #[arg(
        long,
        default_value_t = 100,
        value_name = "N",
        env = "JOBTIDE_MAX_CONCURRENT_RECONCILES"
    )]
    pub max_concurrent_reconciles: u16,
    /// Where ClusterTriggerAuthentications find their Secrets and ConfigMaps (KEDA's).
    #[arg(
        long,
        default_value = "keda",
        value_name = "NAMESPACE",
        env = "KEDA_CLUSTER_OBJECT_NAMESPACE"
    )]
    pub cluster_object_namespace: String,
    /// Let `sasl: gssapi` triggers connect. Off by default: librdkafka keeps Kerberos tickets
    /// in one credential cache per process and obeys each trigger's krb5.conf, so enable it
    /// only when every tenant of this operator is one trust domain (docs/security.md). Needs
    /// `kinit` on PATH and a writable temporary directory.
    #[arg(long, env = "JOBTIDE_ENABLE_GSSAPI")]
    pub enable_gssapi: bool,
    /// An active ScaledJob writes `status.lastActiveTime` again only once the stored value is
    /// this old, instead of at every poll (KEDA's behaviour, 0): 1,000 active ScaledJobs polled
    /// every 30 s would otherwise take 33 status writes a second (docs/differences-from-keda.md, D19).
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECONDS",
        env = "JOBTIDE_LAST_ACTIVE_TIME_REFRESH_SECONDS"
    )]
    pub last_active_time_refresh_seconds: u64,
}

impl ControllerArgs {
    /// The controller configuration.
    pub fn config(
        &self,
        instance: &str,
        bootstrap_override: Option<Vec<String>>,
    ) -> anyhow::Result<Config> {
        let mut config = Config::new(env!("CARGO_PKG_VERSION"), instance);
        config.namespace = self.namespace.clone().filter(|n| !n.is_empty());
        config.label_selector = self.label_selector.clone().filter(|s| !s.is_empty());
        config.max_concurrent_reconciles = self.max_concurrent_reconciles;
        config.last_active_time_refresh =
            Duration::from_secs(self.last_active_time_refresh_seconds);
        config
            .cluster_object_namespace
            .clone_from(&self.cluster_object_namespace);
        config.bootstrap_servers_override = bootstrap_override;
        if self.enable_gssapi {
            config.gssapi = GssapiSupport::Kinit(
                KinitHelper::this_binary()
                    .context("--enable-gssapi: finding this binary for its kinit helper")?,
            );
        }
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    controller: ControllerArgs,
    #[command(flatten)]
    log: LogArgs,
    /// A kubeconfig file (default: in-cluster config, else `$KUBECONFIG` or `~/.kube/config`).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Where `/metrics` is served (`:PORT` means all interfaces).
    #[arg(long, default_value = ":8080", value_name = "ADDR", value_parser = bind_address, env = "JOBTIDE_METRICS_BIND_ADDRESS")]
    metrics_bind_address: SocketAddr,
    /// Where `/healthz` and `/readyz` are served.
    #[arg(long, default_value = ":8081", value_name = "ADDR", value_parser = bind_address, env = "JOBTIDE_HEALTH_PROBE_BIND_ADDRESS")]
    health_probe_bind_address: SocketAddr,
    /// Kubernetes API requests per second (token bucket; 0: unlimited).
    #[arg(
        long,
        default_value_t = 20,
        value_name = "QPS",
        env = "JOBTIDE_KUBE_API_QPS"
    )]
    kube_api_qps: u32,
    /// Kubernetes API request burst.
    #[arg(
        long,
        default_value_t = 30,
        value_name = "N",
        env = "JOBTIDE_KUBE_API_BURST"
    )]
    kube_api_burst: u32,
    /// Elect a leader among replicas on a Lease (15 s lease, 10 s renew deadline, 2 s retry).
    #[arg(long, env = "JOBTIDE_LEADER_ELECT", conflicts_with = "sharded")]
    leader_elect: bool,
    /// Share the ScaledJobs among all replicas instead: each holds a member Lease
    /// `<leader-election-id>-<hash of POD_NAME>` and acts on the ScaledJobs that hash to it among
    /// the live members (docs/operator.md, Sharding).
    #[arg(long, env = "JOBTIDE_SHARDED")]
    sharded: bool,
    /// The Lease's namespace (default: this pod's namespace, else `default`).
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// The Lease's name (with --sharded: the member Leases' prefix and group label).
    #[arg(long, default_value = "jobtide-operator", value_name = "NAME")]
    leader_election_id: String,
    /// How long a Lease holds without renewal.
    #[arg(
        long,
        default_value_t = 15,
        value_name = "SECONDS",
        env = "JOBTIDE_LEASE_DURATION_SECONDS"
    )]
    lease_duration_seconds: u64,
    /// A replica that hasn't renewed its Lease for this long stops acting (< the lease duration).
    #[arg(
        long,
        default_value_t = 10,
        value_name = "SECONDS",
        env = "JOBTIDE_RENEW_DEADLINE_SECONDS"
    )]
    renew_deadline_seconds: u64,
    /// The pause between two attempts to renew (< the renew deadline).
    #[arg(
        long,
        default_value_t = 2,
        value_name = "SECONDS",
        env = "JOBTIDE_RETRY_PERIOD_SECONDS"
    )]
    retry_period_seconds: u64,
    /// Measure and dispatch every Kafka trigger against these brokers instead of its
    /// `bootstrapServers` (for local testing, e.g. against `jobtide dev --no-operator`).
    #[arg(long, value_name = "HOST:PORT[,…]", value_delimiter = ',')]
    bootstrap_servers_override: Option<Vec<String>>,
}

/// `:8080` → `0.0.0.0:8080`; otherwise a socket address.
pub fn bind_address(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    full.parse()
        .map_err(|_| format!("{text:?} is not HOST:PORT or :PORT"))
}

/// A name for this replica: the pod's name when set, else host name and process id.
pub fn instance_name() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "jobtide".into(), |h| h.trim().to_owned());
    format!("{host}-{}", std::process::id())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// A kube client for `config`, rate limited.
pub fn client(
    config: kube::Config,
    instance: &str,
    qps: u32,
    burst: u32,
) -> anyhow::Result<kube::Client> {
    // The operator's User-Agent names it and its replica in the API server's audit log.
    let config = Deadlines::LONG_RUNNING.apply(jobtide_controller::with_user_agent_of(
        config,
        Some(instance),
    ));
    let builder =
        kube::client::ClientBuilder::try_from(config).context("building the Kubernetes client")?;
    Ok(match RateLimitLayer::new(qps, burst) {
        Some(layer) => builder.with_layer(&layer).build(),
        None => builder.build(),
    })
}

pub fn run(args: OperatorArgs) -> ExitCode {
    let telemetry = match args.log.init() {
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
    let code = match runtime.block_on(operate(args, telemetry.traces())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    };
    // The last spans are flushed before the process ends.
    drop(telemetry);
    code
}

impl OperatorArgs {
    /// The Lease timing, checked: 0 < retry < renew deadline < lease duration.
    fn timing(&self) -> anyhow::Result<Timing> {
        let (lease, renew, retry) = (
            self.lease_duration_seconds,
            self.renew_deadline_seconds,
            self.retry_period_seconds,
        );
        anyhow::ensure!(
            0 < retry && retry < renew && renew < lease,
            "--retry-period-seconds ({retry}) < --renew-deadline-seconds ({renew}) < \
             --lease-duration-seconds ({lease}) must hold, all above 0"
        );
        Ok(Timing {
            lease: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry: Duration::from_secs(retry),
        })
    }
}

async fn operate(args: OperatorArgs, traces: bool) -> anyhow::Result<()> {
    let timing = args.timing()?;
    let kube_config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration (in-cluster or kubeconfig)")?,
    };
    let pod_namespace = kube_config.default_namespace.clone();
    // The elector gets its own client: leader election must not wait behind the rate limit.
    let instance = instance_name();
    let election_client = client(kube_config.clone(), &instance, 0, 0)?;
    // Events get a client with the same QPS/burst but a budget of its own, as KEDA's event
    // recorder (controller-runtime builds it its own clientset): a start publishes several
    // Events per ScaledJob, which would otherwise hold back every poll's writes.
    let event_client = client(
        kube_config.clone(),
        &instance,
        args.kube_api_qps,
        args.kube_api_burst,
    )?;
    let client = client(
        kube_config,
        &instance,
        args.kube_api_qps,
        args.kube_api_burst,
    )?;
    let mut config = args
        .controller
        .config(&instance, args.bootstrap_servers_override.clone())?;
    config.traces = traces;
    let context = Arc::new(Context::new(client.clone(), config).with_event_client(event_client));
    let shutdown = shutdown_signal().shared();
    let namespace = args
        .leader_election_namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or(pod_namespace);
    let leadership = if args.sharded {
        tracing::info!(group = %args.leader_election_id, %namespace, identity = %instance, "sharding on");
        Leadership::Sharded(Box::new(
            Sharding::new(
                election_client,
                &namespace,
                &args.leader_election_id,
                &instance,
                timing,
            )
            .context("--leader-election-id")?,
        ))
    } else if args.leader_elect {
        tracing::info!(lease = %args.leader_election_id, %namespace, identity = %instance, "leader election on");
        Leadership::Elected(Box::new(Elector::new(
            election_client,
            &namespace,
            &args.leader_election_id,
            &instance,
            timing,
        )))
    } else {
        Leadership::Always
    };
    let (health, task) = operator::spawn(Arc::clone(&context), leadership, shutdown.clone());
    let (metrics_at, metrics_task) = jobtide_controller::http::serve(
        args.metrics_bind_address,
        context.metrics(),
        health.clone(),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("serving metrics on {}", args.metrics_bind_address))?;
    let (health_at, health_task) = jobtide_controller::http::serve(
        args.health_probe_bind_address,
        context.metrics(),
        health,
        shutdown.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "serving health probes on {}",
            args.health_probe_bind_address
        )
    })?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        metrics = %metrics_at,
        health = %health_at,
        namespace = args.controller.namespace.as_deref().unwrap_or("<all>"),
        "jobtide operator started"
    );
    let mut task = task;
    tokio::select! {
        () = shutdown.clone() => {}
        ended = &mut task => {
            // The controller (or the election) ended without a shutdown: exit non-zero so that
            // the Deployment restarts the pod (/healthz already fails).
            anyhow::bail!("the operator's task stopped unexpectedly ({ended:?})");
        }
    }
    tracing::info!("shutting down: finishing reconciles in flight");
    if tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .is_err()
    {
        tracing::warn!("reconciles still running after 30 s; exiting anyway");
    }
    let _ = metrics_task.await;
    let _ = health_task.await;
    Ok(())
}
