//! Trace export (docs/observability.md): off unless `--traces-exporter otlp`
//! (`OTEL_TRACES_EXPORTER=otlp`). Then an OpenTelemetry tracer provider sends spans in batches
//! over OTLP/HTTP (protobuf), configured by the standard variables the OpenTelemetry crates read
//! themselves: `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (default
//! `http://localhost:4318`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default parent-based, always on),
//! `OTEL_BSP_*` (batching), `OTEL_SERVICE_NAME` (default `jobtide`), `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! The provider is global: the `tracing` spans (each poll: measure, decide, act) reach it
//! through `tracing-opentelemetry`, and dispatch mode emits its message and Job spans to it
//! directly, with the ids `jobtide_controller::trace_ids::FixedIds` hands out.

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The layer that hands `tracing` spans to OpenTelemetry.
pub type SpanLayer<S> =
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>;

/// Where spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TracesExporter {
    /// Nowhere (the default): no spans are made.
    None,
    /// OTLP over HTTP (protobuf), to `$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces`.
    Otlp,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Export traces (OpenTelemetry): `none` or `otlp`. The exporter, sampler and batching
    /// read the standard `OTEL_*` variables (docs/observability.md).
    #[arg(long, value_enum, default_value_t = TracesExporter::None, env = "OTEL_TRACES_EXPORTER")]
    pub traces_exporter: TracesExporter,
}

/// The installed tracer provider; dropping it flushes what is batched and stops the export.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn traces(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("jobtide: flushing traces: {error}");
        }
    }
}

/// Where `jobtide dev --otel` sends spans instead of what `--traces-exporter` says.
#[derive(Debug, Clone)]
pub enum SpanSink {
    /// OTLP/HTTP to this traces URL (`http://127.0.0.1:PORT/v1/traces`).
    Otlp(String),
    /// OTLP JSON lines in this file ([`crate::otlp_file::OtlpJsonFile`]).
    File(std::path::PathBuf),
}

impl TraceArgs {
    /// Builds and installs the global tracer provider when traces are exported (to `sink`
    /// when given, else where the flags say); the layer that hands `tracing` spans to it.
    pub fn init_with<S>(
        &self,
        sink: Option<&SpanSink>,
    ) -> anyhow::Result<(Telemetry, Option<SpanLayer<S>>)>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        use opentelemetry_otlp::WithExportConfig as _;

        let Self { traces_exporter } = self;
        let builder = SdkTracerProvider::builder();
        let builder = match (sink, traces_exporter) {
            (None, TracesExporter::None) => return Ok((Telemetry { provider: None }, None)),
            (None, TracesExporter::Otlp) => builder.with_batch_exporter(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .build()
                    .context("building the OTLP trace exporter (OTEL_EXPORTER_OTLP_*)")?,
            ),
            (Some(SpanSink::Otlp(url)), _) => builder.with_batch_exporter(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(url.clone())
                    .build()
                    .context("building the OTLP trace exporter")?,
            ),
            (Some(SpanSink::File(path)), _) => builder.with_batch_exporter(
                crate::otlp_file::OtlpJsonFile::create(path)
                    .with_context(|| format!("--otel file:{}", path.display()))?,
            ),
        };
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "jobtide".to_owned());
        let provider = builder
            .with_id_generator(jobtide_controller::trace_ids::FixedIds::default())
            .with_resource(
                Resource::builder()
                    .with_service_name(service)
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build(),
            )
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("jobtide"));
        Ok((
            Telemetry {
                provider: Some(provider),
            },
            Some(layer),
        ))
    }
}
