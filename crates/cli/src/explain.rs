//! `jobtide explain`: what the scaler sees now, per trigger of every ScaledJob in a manifest —
//! per-partition offsets and lag, the total, the capped metric value, activity, and the Jobs this
//! lag alone would call for under the ScaledJob's strategy with no Jobs running.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use jobtide_api::ScaledJob;
use jobtide_api::resolve::{MissingEnvSource, resolve_triggers};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_core::scaling::{JobCountInput, TriggerMeasurement, aggregate, decide_job_count};
use jobtide_kafka::scaler::measure_trigger;
use jobtide_kafka::source::SourcePool;
use serde::Serialize;

use crate::validate::{Collected, ManifestArgs, collect, identity, input, typed};

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
    /// How long one trigger's measurement may take.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        env = "JOBTIDE_EXPLAIN_TIMEOUT"
    )]
    timeout: u64,
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
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ScaledJobExplanation {
    namespace: String,
    name: String,
    /// A problem with the ScaledJob itself (schema), else null.
    error: Option<String>,
    triggers: Vec<TriggerExplanation>,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::from(2);
        }
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
    let failed = explanation
        .scaled_jobs
        .iter()
        .any(|sj| sj.error.is_some() || sj.triggers.iter().any(|t| t.error.is_some()));
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
    let pool = SourcePool::new();
    let timeout = Duration::from_secs(args.timeout.max(1));
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
        for ((index, trigger), resolved) in spec.triggers.iter().enumerate().zip(resolved) {
            let mut explanation = TriggerExplanation {
                index,
                type_: trigger.type_.clone(),
                metric_name: resolved.parsed.metric_name.clone(),
                error: None,
                partitions: Vec::new(),
                total_lag: 0,
                metric_value: 0,
                active: false,
                jobs_wanted: 0,
            };
            let measured = match (resolved.resolve_error, resolved.parsed.config) {
                (Some(error), _) => Err(error.to_string()),
                (None, Err(error)) => Err(error.to_string()),
                (None, Ok(config)) => measure_trigger(
                    &pool,
                    &config,
                    brokers.as_deref(),
                    &PersistentLagMemory::new(),
                    timeout,
                )
                .await
                .map(|measurement| {
                    (
                        jobs_wanted(spec, measurement.to_scaling(config.lag())),
                        measurement,
                    )
                })
                .map_err(|e| e.to_string()),
            };
            match measured {
                Ok((jobs_wanted, measurement)) => {
                    explanation.jobs_wanted = jobs_wanted;
                    explanation.total_lag = measurement.total_lag;
                    explanation.metric_value = measurement.metric_value;
                    explanation.active = measurement.active;
                    explanation.partitions = measurement
                        .partitions
                        .into_iter()
                        .map(|p| PartitionExplanation {
                            topic: p.topic,
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
        out.push(ScaledJobExplanation {
            namespace,
            name,
            error: None,
            triggers,
        });
    }
    Explanation { scaled_jobs: out }
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
    }
    out
}
