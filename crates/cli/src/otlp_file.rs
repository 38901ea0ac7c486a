//! A span exporter writing OTLP JSON lines to a file (`jobtide dev --otel file:PATH`): each
//! batch becomes one line holding an `ExportTraceServiceRequest` in the OTLP/JSON encoding
//! (the form the OpenTelemetry Collector's file exporter writes, and `otlpjsonfile` reads).
//!
//! No crate of the OpenTelemetry ecosystem writes OTLP JSON to a file (`opentelemetry-stdout`
//! prints a human-readable dump to stdout), so this is the small glue around the ones that do
//! the work: `opentelemetry-proto` turns the SDK's spans into the OTLP messages
//! (`group_spans_by_resource_and_scope`) and serializes them in the OTLP/JSON mapping (its
//! `with-serde` feature: hex ids, camelCase fields, integers as strings where the spec says).

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Appends each exported batch to a file as one JSON line.
#[derive(Debug)]
pub struct OtlpJsonFile {
    file: Mutex<std::io::BufWriter<std::fs::File>>,
    resource: ResourceAttributesWithSchema,
}

impl OtlpJsonFile {
    /// Creates (or truncates) `path`, making its directory.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::File::create(path)?;
        Ok(Self {
            file: Mutex::new(std::io::BufWriter::new(file)),
            resource: (&Resource::builder_empty().build()).into(),
        })
    }

    fn write(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let line = serde_json::to_string(&request)
            .map_err(|e| OTelSdkError::InternalFailure(format!("encoding spans: {e}")))?;
        let mut file = self
            .file
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("the span file's lock".into()))?;
        writeln!(file, "{line}")
            .and_then(|()| file.flush())
            .map_err(|e| OTelSdkError::InternalFailure(format!("writing spans: {e}")))
    }
}

impl SpanExporter for OtlpJsonFile {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.write(batch)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    #[test]
    fn spans_are_written_as_otlp_json_lines_with_the_resource() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spans.jsonl");
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(OtlpJsonFile::create(&path).unwrap())
            .with_resource(Resource::builder().with_service_name("jobtide").build())
            .build();
        let tracer = provider.tracer("test");
        let mut span = tracer.start("poll");
        span.set_attribute(KeyValue::new("scaled_job", "orders"));
        let trace_id = span.span_context().trace_id().to_string();
        span.end();
        provider.shutdown().unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let resource_spans = &line["resourceSpans"][0];
        assert_eq!(
            resource_spans["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].clone()),
            Some(serde_json::json!("jobtide"))
        );
        let span = &resource_spans["scopeSpans"][0]["spans"][0];
        assert_eq!(span["name"], "poll");
        assert_eq!(
            span["traceId"],
            trace_id.as_str(),
            "ids in hex, as OTLP/JSON says"
        );
        assert_eq!(span["attributes"][0]["value"]["stringValue"], "orders");
    }
}
