//! `jobtide explain`: what the scaler sees now, per trigger of every ScaledJob in a manifest —
//! per-partition offsets and lag, the total, the capped metric value, activity, and the Jobs this
//! lag alone would call for under the ScaledJob's strategy with no Jobs running.
//!
//! Values that came from Secrets or env (the topic, group or brokers may) are shown as
//! `<redacted>` ([`redact`]), as `validate` shows them.

mod live;
mod redact;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use futures::StreamExt as _;
use jobtide_api::ScaledJob;
use jobtide_api::resolve::{MissingEnvSource, ResolvedTrigger, resolve_triggers};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_core::poll::TriggerResult;
use jobtide_core::scaling::{JobCountInput, TriggerMeasurement, aggregate, decide_job_count};
use jobtide_kafka::kerberos::{GssapiSupport, KinitHelper};
use jobtide_kafka::scaler::measure_trigger;
use jobtide_kafka::source::SourcePool;
use serde::Serialize;

use crate::text::{escaped, push_line};
use crate::validate::{Collected, ManifestArgs, collect, identity, input, typed};
use live::{LiveExplanation, cluster_client, live};
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
struct TriggerExplanation {
    index: usize,
    #[serde(rename = "type")]
    type_: String,
    metric_name: Option<String>,
    error: Option<String>,
    partitions: Vec<PartitionExplanation>,
    /// The measurement's numbers; `null` when it didn't happen (`error`).
    total_lag: Option<i64>,
    metric_value: Option<i64>,
    active: Option<bool>,
    jobs_wanted: Option<i64>,
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
            eprintln!("error: {}", escaped(&error.to_string()));
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
        eprintln!(
            "warning: {}",
            escaped(&format!("{}: {}", error.location, error.message))
        );
    }
    let timeout = Duration::from_secs(args.timeout);
    let mut cluster_failed = false;
    let cluster = match cluster_client(args, timeout).await {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!(
                "error: no cluster access, live Job counts skipped: {}",
                escaped(&format!("{error:#}"))
            );
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
    let brokers: Option<Vec<String>> = args
        .bootstrap_servers
        .as_ref()
        .map(|servers| servers.split(',').map(|s| s.trim().to_owned()).collect());
    // Every ScaledJob typed and its triggers resolved first, then every trigger of every
    // ScaledJob measured at once (at most MAX_CONCURRENT_MEASUREMENTS at a time), in order.
    let mut checked = Vec::new();
    for pending in scaled_jobs {
        let (namespace, name) = identity(&pending.value, &args.manifests.namespace);
        let checked_one = match typed::<ScaledJob>(&pending.value, &pending.non_finite) {
            Ok(scaled_job) => {
                let resolved = resolve_triggers(
                    &objects,
                    &namespace,
                    &scaled_job.spec,
                    &args.manifests.cluster_object_namespace,
                    MissingEnvSource::Warn,
                );
                Ok((scaled_job, resolved))
            }
            Err(error) => Err(error),
        };
        checked.push((namespace, name, checked_one));
    }
    let measurements = checked.iter().flat_map(|(_, _, checked)| {
        checked.iter().flat_map(|(scaled_job, resolved)| {
            scaled_job
                .spec
                .triggers
                .iter()
                .zip(resolved)
                .enumerate()
                .map(|(index, (trigger, resolved))| {
                    explain_trigger(
                        &pool,
                        brokers.as_deref(),
                        timeout,
                        &scaled_job.spec,
                        index,
                        trigger,
                        resolved,
                    )
                })
        })
    });
    let mut measured = futures::stream::iter(measurements)
        .buffered(MAX_CONCURRENT_MEASUREMENTS)
        .collect::<Vec<_>>()
        .await
        .into_iter();
    let mut out = Vec::new();
    for (namespace, name, checked) in &checked {
        let (namespace, name) = (namespace.clone(), name.clone());
        let (scaled_job, resolved) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                out.push(ScaledJobExplanation {
                    namespace,
                    name,
                    error: Some(error.clone()),
                    triggers: Vec::new(),
                    live: None,
                });
                continue;
            }
        };
        let (triggers, results): (Vec<_>, Vec<_>) = measured
            .by_ref()
            .take(scaled_job.spec.triggers.len().min(resolved.len()))
            .unzip();
        let live = match &cluster {
            Some(cluster) => Some(live(cluster, scaled_job, &namespace, &name, &results).await),
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

/// How many triggers `explain` measures at once: unreachable clusters cost a `--timeout` each,
/// so one after another 20 of them took 20 timeouts; librdkafka clients are shared per cluster
/// (SourcePool), so this bounds the requests in flight, not the connections.
const MAX_CONCURRENT_MEASUREMENTS: usize = 16;

/// One trigger measured: its explanation and the result the live decision takes.
async fn explain_trigger(
    pool: &SourcePool,
    brokers: Option<&[String]>,
    timeout: Duration,
    spec: &jobtide_api::ScaledJobSpec,
    index: usize,
    trigger: &jobtide_api::scaledjob::ScaleTrigger,
    resolved: &ResolvedTrigger,
) -> (TriggerExplanation, TriggerResult) {
    let mut explanation = TriggerExplanation {
        index,
        type_: trigger.type_.clone(),
        metric_name: resolved.parsed.shown_metric_name.clone(),
        error: None,
        partitions: Vec::new(),
        total_lag: None,
        metric_value: None,
        active: None,
        jobs_wanted: None,
    };
    let mut hidden = Hidden::default();
    let measured = match (&resolved.resolve_error, &resolved.parsed.config) {
        (Some(error), _) => Err(error.to_string()),
        (None, Err(error)) => Err(error.to_string()),
        (None, Ok(config)) => {
            hidden = Hidden::of(config, &resolved.parsed.from_secrets);
            measure_trigger(pool, config, brokers, &PersistentLagMemory::new(), timeout)
                .await
                .map(|measurement| {
                    let scaling = measurement.to_scaling(config.lag());
                    (jobs_wanted(spec, scaling), scaling, measurement)
                })
                .map_err(|e| hidden.scrub(&e.to_string()))
        }
    };
    let result = TriggerResult {
        metric_name: resolved
            .parsed
            .metric_name
            .clone()
            .unwrap_or_else(|| format!("s{index}-{}", trigger.type_)),
        measurement: match &measured {
            Ok((_, scaling, _)) => Ok(*scaling),
            Err(error) => Err(error.clone()),
        },
    };
    match measured {
        Ok((jobs_wanted, _, measurement)) => {
            explanation.jobs_wanted = Some(jobs_wanted);
            explanation.total_lag = Some(measurement.total_lag);
            explanation.metric_value = Some(measurement.metric_value);
            explanation.active = Some(measurement.active);
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
    (explanation, result)
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
        push_line(
            &mut out,
            format_args!("ScaledJob {}/{}", sj.namespace, sj.name),
        );
        if let Some(error) = &sj.error {
            push_line(&mut out, format_args!("  error: {error}"));
        }
        for t in &sj.triggers {
            let metric = t.metric_name.as_deref().unwrap_or("-");
            push_line(
                &mut out,
                format_args!("  trigger {} ({}) metric {metric}", t.index, t.type_),
            );
            if let Some(error) = &t.error {
                push_line(&mut out, format_args!("    error: {error}"));
                continue;
            }
            push_line(
                &mut out,
                format_args!(
                    "    {:<24} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8}",
                    "TOPIC", "PARTITION", "COMMITTED", "LOG-START", "END", "LAG", "COUNTED"
                ),
            );
            let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            for p in &t.partitions {
                push_line(
                    &mut out,
                    format_args!(
                        "    {:<24} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8}",
                        p.topic,
                        p.partition,
                        opt(p.committed),
                        opt(p.log_start),
                        p.end,
                        p.lag,
                        p.counted_lag
                    ),
                );
            }
            push_line(
                &mut out,
                format_args!(
                    "    total lag {}, metric value {}, active {}, Jobs this lag calls for with none running: {}",
                    opt(t.total_lag),
                    opt(t.metric_value),
                    t.active.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                    opt(t.jobs_wanted)
                ),
            );
        }
        if let Some(live) = &sj.live {
            if let Some(error) = &live.error {
                push_line(&mut out, format_args!("  live: error: {error}"));
                continue;
            }
            push_line(
                &mut out,
                format_args!(
                    "  live Jobs: {} running ({} of them pending), {} finishing, {} succeeded, {} failed",
                    live.running, live.pending, live.finishing, live.succeeded, live.failed
                ),
            );
            let heading = if live.mode == "dispatch" {
                "dispatch"
            } else {
                "next poll"
            };
            push_line(&mut out, format_args!("  {heading}:"));
            for line in &live.arithmetic {
                push_line(&mut out, format_args!("    {line}"));
            }
            if !live.delete.is_empty() {
                push_line(
                    &mut out,
                    format_args!("    delete (history limits): {}", live.delete.join(", ")),
                );
            }
            if let Some(capacity) = &live.capacity {
                push_line(&mut out, format_args!("    capacity: {capacity}"));
            }
        }
    }
    out
}
