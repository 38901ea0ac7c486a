//! `jobtide dev --otel`: traces with nothing to set up.
//!
//! - `file:PATH`: the operator's spans as OTLP JSON lines in `PATH`
//!   ([`crate::otlp_file::OtlpJsonFile`]).
//! - `collector`: a real OpenTelemetry Collector (the one `scripts/install-otelcol` builds from
//!   `peers/otelcol`: the OTLP receiver and the file exporter), started on loopback with its
//!   file exporter writing to `<state dir>/otel/spans.jsonl`; the operator exports to it over
//!   OTLP/HTTP, and a `jobtide operator` started by hand (`--no-operator`) can too. The binary
//!   is `$JOBTIDE_OTELCOL`, else the one the script caches; without either, an error says how
//!   to install it. The collector is stopped (SIGTERM: it flushes its file) when dev stops.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::telemetry::SpanSink;

/// The collector release `scripts/install-otelcol` builds (and caches under this version).
pub const COLLECTOR_VERSION: &str = "0.161.0";

/// What `--otel` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevOtel {
    File(PathBuf),
    Collector,
}

/// Parses `file:PATH` or `collector`.
pub fn parse(text: &str) -> Result<DevOtel, String> {
    match text.split_once(':') {
        Some(("file", path)) if !path.is_empty() => Ok(DevOtel::File(PathBuf::from(path))),
        Some(("file", _)) => Err("file:PATH needs a path".into()),
        _ if text == "collector" => Ok(DevOtel::Collector),
        _ => Err(format!("{text:?}: expected file:PATH or collector")),
    }
}

/// A running collector: where it receives and where it writes. Stopped on drop.
#[derive(Debug)]
pub struct Collector {
    child: Child,
    /// The OTLP/HTTP receiver (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    /// The file exporter's file.
    pub spans: PathBuf,
    /// The collector's own log.
    pub log: PathBuf,
}

/// The collector binary: `$JOBTIDE_OTELCOL`, else the one `scripts/install-otelcol` caches.
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("JOBTIDE_OTELCOL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "--otel collector: JOBTIDE_OTELCOL={} is not a file (scripts/install-otelcol \
                 builds the collector and prints its path)",
                path.display()
            );
        }
        return Ok(path);
    }
    let cached = std::env::var_os("HOME").map(|home| {
        PathBuf::from(home).join(format!(
            ".cache/jobtide-tools/otelcol-{COLLECTOR_VERSION}/bin/otelcol"
        ))
    });
    match cached {
        Some(path) if path.is_file() => Ok(path),
        _ => bail!(
            "--otel collector: the OpenTelemetry Collector is not installed. Run \
             scripts/install-otelcol (it builds v{COLLECTOR_VERSION} from its Go modules into \
             ~/.cache/jobtide-tools; needs Go) or set JOBTIDE_OTELCOL to an otelcol binary with \
             the OTLP receiver and the file exporter; or use --otel file:PATH, which needs nothing"
        ),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("finding a free port for the collector")?
        .local_addr()?
        .port())
}

impl Collector {
    /// Starts the collector with its files in `dir`, and waits until it listens.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let binary = binary()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let spans = dir.join("spans.jsonl");
        let config = dir.join("otelcol.yaml");
        let log = dir.join("otelcol.log");
        // The path as a JSON string: a valid YAML scalar whatever it holds.
        let spans_yaml = serde_json::to_string(&spans.display().to_string())?;
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n\
                 exporters:\n  file:\n    path: {spans_yaml}\n    flush_interval: 1s\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n\
                 \x20 pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n"
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?,
            )
            .spawn()
            .with_context(|| format!("--otel collector: starting {}", binary.display()))?;
        let mut collector = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            spans,
            log,
        };
        let began = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = collector.child.try_wait()? {
                bail!(
                    "--otel collector: {} exited ({status}); its log: {}",
                    binary.display(),
                    collector.log.display()
                );
            }
            if began.elapsed() > Duration::from_secs(20) {
                bail!(
                    "--otel collector: not listening on {addr} after 20 s; its log: {}",
                    collector.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(collector)
    }

    /// Where the operator sends its spans.
    pub fn sink(&self) -> SpanSink {
        SpanSink::Otlp(format!("{}/v1/traces", self.endpoint))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // SIGTERM lets the file exporter flush; a collector that won't stop is killed.
        if let Some(pid) =
            rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or_default())
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let began = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if began.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otel_takes_a_file_or_the_collector() {
        assert_eq!(
            parse("file:/tmp/spans.jsonl"),
            Ok(DevOtel::File("/tmp/spans.jsonl".into()))
        );
        assert_eq!(parse("collector"), Ok(DevOtel::Collector));
        assert!(parse("file:").is_err());
        assert!(
            parse("jaeger")
                .unwrap_err()
                .contains("file:PATH or collector")
        );
    }
}
