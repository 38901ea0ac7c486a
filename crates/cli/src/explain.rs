//! `jobtide explain`: what the scaler sees now, per trigger of every ScaledJob in a manifest —
//! per-partition offsets and lag, the total, the capped metric value, activity, and the Jobs this
//! lag alone would call for under the ScaledJob's strategy with no Jobs running.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use jobtide_api::ScaledJob;
use jobtide_api::resolve::{
    DEFAULT_CLUSTER_OBJECT_NAMESPACE, MissingEnvSource, resolve_trigger_inputs,
};
use jobtide_api::trigger::{TriggerConfig, parse_trigger};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_core::scaling::{JobCountInput, TriggerMeasurement, aggregate, decide_job_count};
use jobtide_kafka::scaler::{LagTarget, measure};
use jobtide_kafka::source::SourcePool;
use k8s_openapi::api::core::v1::PodSpec;
use serde::Serialize;
use serde_json::Value;

use crate::validate::{Collected, collect, input, typed};

/// Arguments of `jobtide explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A manifest file, directory or `-` (repeatable); TriggerAuthentications, Secrets and
    /// ConfigMaps among the inputs are resolved as `validate` does.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    files: Vec<String>,
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
    /// Namespace of objects that don't set one.
    #[arg(
        short = 'n',
        long,
        default_value = "default",
        env = "JOBTIDE_NAMESPACE"
    )]
    namespace: String,
    /// Namespace whose Secrets and ConfigMaps ClusterTriggerAuthentications read.
    #[arg(long, default_value = DEFAULT_CLUSTER_OBJECT_NAMESPACE, env = "KEDA_CLUSTER_OBJECT_NAMESPACE")]
    cluster_object_namespace: String,
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
    let documents = match input::read_all(&args.files, false) {
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
    } = collect(documents, &args.namespace);
    for error in &document_errors {
        eprintln!("warning: {}: {}", error.location, error.message);
    }
    let pool = SourcePool::new();
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut out = Vec::new();
    for pending in scaled_jobs {
        let metadata = pending.value.get("metadata");
        let field = |key: &str| {
            metadata
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let name = field("name").unwrap_or_default();
        let namespace = field("namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| args.namespace.clone());
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
        let pod_spec = spec
            .job_target_ref
            .template
            .spec
            .clone()
            .unwrap_or_else(PodSpec::default);
        let mut triggers = Vec::new();
        for (index, trigger) in spec.triggers.iter().enumerate() {
            let mut explanation = TriggerExplanation {
                index,
                type_: trigger.type_.clone(),
                metric_name: None,
                error: None,
                partitions: Vec::new(),
                total_lag: 0,
                metric_value: 0,
                active: false,
                jobs_wanted: 0,
            };
            let resolved = resolve_trigger_inputs(
                &objects,
                &namespace,
                &pod_spec,
                spec.env_source_container(),
                trigger,
                &args.cluster_object_namespace,
                MissingEnvSource::Warn,
            );
            let parsed = match resolved {
                Ok(inputs) => parse_trigger(index, trigger, &inputs),
                Err(error) => {
                    explanation.error = Some(error.to_string());
                    triggers.push(explanation);
                    continue;
                }
            };
            explanation.metric_name.clone_from(&parsed.metric_name);
            let config = match parsed.config {
                Ok(config) => config,
                Err(error) => {
                    explanation.error = Some(error.to_string());
                    triggers.push(explanation);
                    continue;
                }
            };
            let mut target = match LagTarget::from_trigger(&config) {
                Ok(target) => target,
                Err(error) => {
                    explanation.error = Some(error.to_string());
                    triggers.push(explanation);
                    continue;
                }
            };
            if let Some(servers) = &args.bootstrap_servers {
                target.connection.bootstrap_servers =
                    servers.split(',').map(|s| s.trim().to_owned()).collect();
            }
            match measure(&pool, &target, &PersistentLagMemory::new(), timeout).await {
                Ok(measurement) => {
                    let threshold = match &config {
                        TriggerConfig::Kafka(k) => k.lag.lag_threshold,
                        TriggerConfig::ApacheKafka(a) => a.lag.lag_threshold,
                    };
                    explanation.jobs_wanted = jobs_wanted(
                        spec,
                        measurement.metric_value,
                        threshold,
                        measurement.active,
                    );
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
                Err(error) => explanation.error = Some(error.to_string()),
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
fn jobs_wanted(
    spec: &jobtide_api::ScaledJobSpec,
    metric_value: i64,
    threshold: i64,
    active: bool,
) -> i64 {
    #[allow(clippy::cast_precision_loss)] // lags far below 2^52
    let measurement = TriggerMeasurement {
        queue_length: metric_value as f64,
        target: threshold as f64,
        active,
    };
    let bounds = spec.bounds();
    let aggregate = aggregate(spec.aggregation(), &[measurement], bounds);
    decide_job_count(
        spec.scaling_strategy(),
        JobCountInput {
            aggregate,
            running: 0,
            pending: 0,
            bounds,
        },
    )
    .create
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
