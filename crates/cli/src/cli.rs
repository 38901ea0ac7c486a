//! Command-line interface: one subcommand per module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{crd, dev, explain, kafka, operator, validate};

/// jobtide: event-driven batch Jobs for Kubernetes, serving KEDA's ScaledJob API.
#[derive(Debug, Parser)]
#[command(name = "jobtide", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions jobtide serves (ScaledJob, TriggerAuthentication,
    /// ClusterTriggerAuthentication) as multi-document YAML, or write/check them as files.
    Crd(crd::CrdArgs),
    /// Check manifests: ScaledJobs and their triggers, resolved against the
    /// TriggerAuthentications, Secrets and ConfigMaps found among the same inputs, exactly as the
    /// operator would. Exit 0 when every ScaledJob is valid, 1 when any is not, 2 when the input
    /// can't be read or isn't YAML.
    Validate(validate::ValidateArgs),
    /// Show what the scaler sees now for every trigger of the ScaledJobs in a manifest:
    /// per-partition offsets and lag, the metric value, activity, and the Jobs that lag calls
    /// for. Exit 1 when a trigger can't be measured or the cluster can't be read.
    Explain(explain::ExplainArgs),
    /// Run the ScaledJob operator against a Kubernetes API (in-cluster config or a kubeconfig):
    /// watches ScaledJobs, measures Kafka lag, creates Jobs; serves /metrics, /healthz, /readyz.
    Operator(Box<operator::OperatorArgs>),
    /// Run everything on this machine: an embedded Kubernetes API server with jobtide's CRDs, a
    /// local job runner (pods are local processes), an embedded Kafka broker and the operator.
    /// Writes a kubeconfig for kubectl; Ctrl-C stops everything.
    Dev(Box<dev::DevArgs>),
    /// Produce, consume (and commit) and create topics: for demos, tests and Jobs.
    #[command(subcommand)]
    Kafka(kafka::KafkaCommand),
}

impl Cli {
    /// Parses the process arguments and runs the command.
    pub fn parse_and_run() -> ExitCode {
        let Self { command } = Self::parse();
        match command {
            Command::Crd(args) => crd::run(&args),
            Command::Validate(args) => validate::run(&args),
            Command::Explain(args) => explain::run(&args),
            Command::Kafka(command) => kafka::run(command),
            Command::Operator(args) => operator::run(*args),
            Command::Dev(args) => dev::run(*args),
        }
    }
}

/// The longest `--timeout` a command accepts, in seconds: a day. librdkafka takes timeouts as
/// `i32` milliseconds (24.8 days) and a deadline must fit the clock; no command needs to wait
/// longer.
pub const MAX_TIMEOUT_SECONDS: u64 = 24 * 60 * 60;

/// The value parser of every `--timeout SECONDS`: 1 to [`MAX_TIMEOUT_SECONDS`].
pub fn timeout_seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECONDS)
}

/// The multi-threaded tokio runtime of the async commands; exit code 2 when it can't start.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("error: starting the async runtime: {error}");
            ExitCode::from(2)
        })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
