//! The `jobtide` binary. Thin by design: everything happens in [`cli::Cli::parse_and_run`].

mod allocator;
mod cli;
mod crd;
mod dev;
mod dev_otel;
mod explain;
mod kafka;
mod kube_client;
mod live;
mod operator;
mod otlp_file;
mod telemetry;
mod text;
mod validate;

fn main() -> std::process::ExitCode {
    cli::Cli::parse_and_run()
}
