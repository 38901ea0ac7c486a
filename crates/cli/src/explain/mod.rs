//! `jobtide explain`: what the scaler sees now, per trigger of every ScaledJob in a manifest —
//! per-partition offsets and lag, the total, the capped metric value, activity, and the Jobs this
//! lag alone would call for under the ScaledJob's strategy with no Jobs running.
//!
//! Values that came from Secrets or env (the topic, group or brokers may) are shown as
//! `<redacted>` ([`redact`]), as `validate` shows them.

mod redact;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use jobtide_api::ScaledJob;
use jobtide_api::facts::jobs_facts;
use jobtide_api::job::SCALED_JOB_NAME_LABEL;
use jobtide_api::resolve::{MissingEnvSource, resolve_triggers};
use jobtide_core::crashloop::{CrashLoopPolicy, CrashLoopState};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_core::poll::{CrashLoopGuard, PollInput, PollPolicy, TriggerResult, decide_poll};
use jobtide_core::scaling::{
    JobCountInput, TriggerMeasurement, aggregate, arithmetic, decide_job_count,
};
use jobtide_core::status::Conditions;
use jobtide_kafka::kerberos::{GssapiSupport, KinitHelper};
use jobtide_kafka::scaler::measure_trigger;
use jobtide_kafka::source::SourcePool;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::kube_client::Deadlines;
use crate::validate::{Collected, ManifestArgs, collect, identity, input, typed};
use redact::Hidden;

/// Arguments of `jobtide explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    manifests: ManifestArgs,
    /// Ask these brokers instead of each trigger's `bootstrapServers` (e.g. a port-forward).
    #[arg(long, value_name = "HOST:PORT[,…]", env = "JOBTIDE_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, env = "JOBTIDE_EXPLAIN_OUTPUT")]
    output: Output,
    /// Count the live Jobs of each ScaledJob in this cluster (a kubeconfig file) and show the
    /// decision the operator's next poll would take, with its arithmetic.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<std::path::PathBuf>,
    /// The same from an API server URL with no credentials (`kubectl proxy`, `jobtide dev`).
    #[arg(long, value_name = "URL", conflicts_with = "kubeconfig")]
    server: Option<String>,
    /// How long one trigger's measurement may take, and the cluster (`--kubeconfig` /
    /// `--server`) may take to answer: every network call ends within it (at most a day).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = crate::cli::timeout_seconds(),
        env = "JOBTIDE_EXPLAIN_TIMEOUT"
    )]
    timeout: u64,
    /// Let `sasl: gssapi` triggers connect: `kinit` (on PATH) then writes this user's default
    /// Kerberos credential cache, following each trigger's krb5.conf (docs/security.md).
    #[arg(long, env = "JOBTIDE_ENABLE_GSSAPI")]
    enable_gssapi: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A table per trigger.
    Text,
    /// The documented JSON form.
    Json,
}

/// JSON: `{"scaledJobs":[…]}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Explanation {
    scaled_jobs: Vec<ScaledJobExplanation>,
    /// Cluster access was asked for (`--kubeconfig` / `--server`) and could not be had.
    #[serde(skip)]
    cluster_failed: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ScaledJobExplanation {
    namespace: String,
    name: String,
    /// A problem with the ScaledJob itself (schema), else null.
    error: Option<String>,
    triggers: Vec<TriggerExplanation>,
    /// With cluster access (`--kubeconfig` / `--server`): the live Jobs and the next poll's
    /// decision; else null.
    live: Option<LiveExplanation>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LiveExplanation {
    /// Listing the Jobs failed (then the rest is absent).
    error: Option<String>,
    running: i64,
    pending: i64,
    finishing: i64,
    succeeded: i64,
    failed: i64,
    /// Jobs the next poll would create.
    create: i64,
    /// Finished Jobs the next poll would delete (history limits).
    delete: Vec<String>,
    /// The decision written out with its numbers.
    arithmetic: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TriggerExplanation {
    index: usize,
    #[serde(rename = "type")]
    type_: String,
    metric_name: Option<String>,
    error: Option<String>,
    partitions: Vec<PartitionExplanation>,
    total_lag: i64,
    metric_value: i64,
    active: bool,
    jobs_wanted: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PartitionExplanation {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_start: Option<i64>,
    end: i64,
    lag: i64,
    counted_lag: i64,
}

pub fn run(args: &ExplainArgs) -> ExitCode {
    let documents = match input::read_all(&args.manifests.files, args.manifests.recursive) {
        Ok(documents) => documents,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match crate::cli::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let explanation = runtime.block_on(explain(documents, args));
    match args.output {
        Output::Text => print!("{}", to_text(&explanation)),
        Output::Json => match serde_json::to_string_pretty(&explanation) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("error: rendering: {error}");
                return ExitCode::from(2);
            }
        },
    }
    let failed = explanation.cluster_failed
        || explanation.scaled_jobs.iter().any(|sj| {
            sj.error.is_some()
                || sj.triggers.iter().any(|t| t.error.is_some())
                || sj.live.as_ref().is_some_and(|live| live.error.is_some())
        });
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn explain(documents: Vec<input::Document>, args: &ExplainArgs) -> Explanation {
    let Collected {
        objects,
        scaled_jobs,
        document_errors,
    } = collect(documents, &args.manifests.namespace);
    for error in &document_errors {
        eprintln!("warning: {}: {}", error.location, error.message);
    }
    let timeout = Duration::from_secs(args.timeout);
    let mut cluster_failed = false;
    let cluster = match cluster_client(args, timeout).await {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("error: no cluster access, live Job counts skipped: {error:#}");
            cluster_failed = true;
            None
        }
    };
    let gssapi = if args.enable_gssapi {
        match KinitHelper::this_binary() {
            Ok(helper) => GssapiSupport::Kinit(helper),
            Err(error) => {
                eprintln!(
                    "warning: --enable-gssapi: no path to this binary's kinit helper: {error}"
                );
                GssapiSupport::Disabled
            }
        }
    } else {
        GssapiSupport::Disabled
    };
    let pool = SourcePool::new().with_gssapi(gssapi);
    let mut out = Vec::new();
    let brokers: Option<Vec<String>> = args
        .bootstrap_servers
        .as_ref()
        .map(|servers| servers.split(',').map(|s| s.trim().to_owned()).collect());
    for pending in scaled_jobs {
        let (namespace, name) = identity(&pending.value, &args.manifests.namespace);
        let scaled_job = match typed::<ScaledJob>(&pending.value) {
            Ok(scaled_job) => scaled_job,
            Err(error) => {
                out.push(ScaledJobExplanation {
                    namespace,
                    name,
                    error: Some(error),
                    triggers: Vec::new(),
                    live: None,
                });
                continue;
            }
        };
        let spec = &scaled_job.spec;
        let resolved = resolve_triggers(
            &objects,
            &namespace,
            spec,
            &args.manifests.cluster_object_namespace,
            MissingEnvSource::Warn,
        );
        let mut triggers = Vec::new();
        let mut results = Vec::new();
        for ((index, trigger), resolved) in spec.triggers.iter().enumerate().zip(resolved) {
            let mut explanation = TriggerExplanation {
                index,
                type_: trigger.type_.clone(),
                metric_name: resolved.parsed.shown_metric_name.clone(),
                error: None,
                partitions: Vec::new(),
                total_lag: 0,
                metric_value: 0,
                active: false,
                jobs_wanted: 0,
            };
            let mut hidden = Hidden::default();
            let measured = match (resolved.resolve_error, resolved.parsed.config) {
                (Some(error), _) => Err(error.to_string()),
                (None, Err(error)) => Err(error.to_string()),
                (None, Ok(config)) => {
                    hidden = Hidden::of(&config, &resolved.parsed.from_secrets);
                    measure_trigger(
                        &pool,
                        &config,
                        brokers.as_deref(),
                        &PersistentLagMemory::new(),
                        timeout,
                    )
                    .await
                    .map(|measurement| {
                        let scaling = measurement.to_scaling(config.lag());
                        (jobs_wanted(spec, scaling), scaling, measurement)
                    })
                    .map_err(|e| hidden.scrub(&e.to_string()))
                }
            };
            results.push(TriggerResult {
                metric_name: resolved
                    .parsed
                    .metric_name
                    .clone()
                    .unwrap_or_else(|| format!("s{index}-{}", trigger.type_)),
                measurement: match &measured {
                    Ok((_, scaling, _)) => Ok(*scaling),
                    Err(error) => Err(error.clone()),
                },
            });
            match measured {
                Ok((jobs_wanted, _, measurement)) => {
                    explanation.jobs_wanted = jobs_wanted;
                    explanation.total_lag = measurement.total_lag;
                    explanation.metric_value = measurement.metric_value;
                    explanation.active = measurement.active;
                    explanation.partitions = measurement
                        .partitions
                        .into_iter()
                        .map(|p| PartitionExplanation {
                            topic: hidden.scrub(&p.topic),
                            partition: p.partition,
                            committed: p.committed,
                            log_start: p.log_start,
                            end: p.end,
                            lag: p.lag,
                            counted_lag: p.counted_lag,
                        })
                        .collect();
                }
                Err(error) => explanation.error = Some(error),
            }
            triggers.push(explanation);
        }
        let live = match &cluster {
            Some(cluster) => Some(live(cluster, &scaled_job, &namespace, &name, &results).await),
            None => None,
        };
        out.push(ScaledJobExplanation {
            namespace,
            name,
            error: None,
            triggers,
            live,
        });
    }
    Explanation {
        scaled_jobs: out,
        cluster_failed,
    }
}

/// A Kubernetes client whose every call ends within `timeout`, and what it talks to.
struct Cluster {
    client: kube::Client,
    /// The API server's URL, for messages.
    server: String,
    timeout: Duration,
}

async fn cluster_client(args: &ExplainArgs, timeout: Duration) -> anyhow::Result<Option<Cluster>> {
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
async fn live(
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
            };
        }
    };
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
    let decision = decide_poll(&PollInput {
        triggers,
        jobs: &facts,
        policy: policy.clone(),
        conditions: &Conditions::initial(),
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
    });
    let counts = decision.counts;
    LiveExplanation {
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

/// The Jobs this trigger's lag alone calls for under the ScaledJob's strategy, none running.
fn jobs_wanted(spec: &jobtide_api::ScaledJobSpec, measurement: TriggerMeasurement) -> i64 {
    let bounds = spec.bounds();
    let aggregate = aggregate(spec.aggregation(), &[measurement], bounds);
    let input = JobCountInput {
        aggregate,
        running: 0,
        pending: 0,
        bounds,
    };
    decide_job_count(spec.scaling_strategy(), input).create
}

fn to_text(explanation: &Explanation) -> String {
    let mut out = String::new();
    for sj in &explanation.scaled_jobs {
        let _ = writeln!(out, "ScaledJob {}/{}", sj.namespace, sj.name);
        if let Some(error) = &sj.error {
            let _ = writeln!(out, "  error: {error}");
        }
        for t in &sj.triggers {
            let metric = t.metric_name.as_deref().unwrap_or("-");
            let _ = writeln!(out, "  trigger {} ({}) metric {metric}", t.index, t.type_);
            if let Some(error) = &t.error {
                let _ = writeln!(out, "    error: {error}");
                continue;
            }
            let _ = writeln!(
                out,
                "    {:<24} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8}",
                "TOPIC", "PARTITION", "COMMITTED", "LOG-START", "END", "LAG", "COUNTED"
            );
            for p in &t.partitions {
                let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
                let _ = writeln!(
                    out,
                    "    {:<24} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8}",
                    p.topic,
                    p.partition,
                    opt(p.committed),
                    opt(p.log_start),
                    p.end,
                    p.lag,
                    p.counted_lag
                );
            }
            let _ = writeln!(
                out,
                "    total lag {}, metric value {}, active {}, Jobs this lag calls for with none running: {}",
                t.total_lag, t.metric_value, t.active, t.jobs_wanted
            );
        }
        if let Some(live) = &sj.live {
            if let Some(error) = &live.error {
                let _ = writeln!(out, "  live: error: {error}");
                continue;
            }
            let _ = writeln!(
                out,
                "  live Jobs: {} running ({} of them pending), {} finishing, {} succeeded, {} failed",
                live.running, live.pending, live.finishing, live.succeeded, live.failed
            );
            let _ = writeln!(out, "  next poll:");
            for line in &live.arithmetic {
                let _ = writeln!(out, "    {line}");
            }
            if !live.delete.is_empty() {
                let _ = writeln!(
                    out,
                    "    delete (history limits): {}",
                    live.delete.join(", ")
                );
            }
        }
    }
    out
}
