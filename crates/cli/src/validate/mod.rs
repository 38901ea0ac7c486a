//! `jobtide validate`: does this KEDA manifest work with jobtide?
//!
//! The inputs are the world: ScaledJobs are checked against the TriggerAuthentications,
//! ClusterTriggerAuthentications, Secrets and ConfigMaps found among the same documents, with
//! the operator's own resolution code ([`jobtide_api::resolve`]). A Secret or ConfigMap that is
//! referenced but not among the inputs is a warning (its values count as empty, as KEDA treats
//! a missing Secret); a missing TriggerAuthentication is an error (difference D13).

pub(crate) mod input;
mod report;

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use jobtide_api::resolve::{
    DEFAULT_CLUSTER_OBJECT_NAMESPACE, MissingEnvSource, ObjectSet, resolve_triggers,
};
use jobtide_api::validation::{check_job_spec, check_object_meta, check_scaled_job};
use jobtide_api::{ClusterTriggerAuthentication, ScaledJob, TriggerAuthentication};
use k8s_openapi::api::core::v1::{ConfigMap, Secret as K8sSecret};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::text::escaped;
use input::{Document, Location, NonFinite};
use report::{DocumentError, Report, ScaledJobReport, TriggerReport};

/// The manifest inputs `validate` and `explain` share.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// A file, a directory (its .yaml/.yml/.json files) or `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long, env = "JOBTIDE_RECURSIVE")]
    pub recursive: bool,
    /// Namespace of objects that don't set one (as kubectl's current namespace).
    #[arg(
        short = 'n',
        long,
        default_value = "default",
        env = "JOBTIDE_NAMESPACE"
    )]
    pub namespace: String,
    /// Namespace whose Secrets and ConfigMaps ClusterTriggerAuthentications read.
    #[arg(long, default_value = DEFAULT_CLUSTER_OBJECT_NAMESPACE, env = "KEDA_CLUSTER_OBJECT_NAMESPACE")]
    pub cluster_object_namespace: String,
}

/// Arguments of `jobtide validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    manifests: ManifestArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, env = "JOBTIDE_VALIDATE_OUTPUT")]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One line per finding.
    Text,
    /// The documented JSON report.
    Json,
}

pub fn run(args: &ValidateArgs) -> ExitCode {
    let ValidateArgs { manifests, output } = args;
    let ManifestArgs {
        files,
        recursive,
        namespace,
        cluster_object_namespace,
    } = manifests;
    let documents = match input::read_all(files, *recursive) {
        Ok(documents) => documents,
        Err(error) => {
            eprintln!("error: {}", escaped(&error.to_string()));
            return ExitCode::from(2);
        }
    };
    let report = validate_documents(documents, namespace, cluster_object_namespace);
    match output {
        Output::Text => print!("{}", report.to_text()),
        Output::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("error: rendering the report: {error}");
                return ExitCode::from(2);
            }
        },
    }
    if report.scaled_jobs.is_empty() {
        eprintln!("note: no ScaledJob (keda.sh/v1alpha1) found in the inputs");
    }
    if report.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A ScaledJob document, not yet checked.
pub(crate) struct PendingScaledJob {
    pub location: Location,
    pub value: Value,
    /// Its numbers JSON can't hold ([`typed`] reports them).
    pub non_finite: Vec<NonFinite>,
}

/// The documents sorted out: the lookup objects, the ScaledJob documents, and the documents
/// that can't be used.
pub(crate) struct Collected {
    pub objects: ObjectSet,
    pub scaled_jobs: Vec<PendingScaledJob>,
    pub document_errors: Vec<DocumentError>,
}

fn validate_documents(
    documents: Vec<Document>,
    default_namespace: &str,
    cluster_object_namespace: &str,
) -> Report {
    let Collected {
        objects,
        scaled_jobs,
        document_errors,
    } = collect(documents, default_namespace);
    let mut report = Report {
        document_errors,
        ..Report::default()
    };
    for pending in scaled_jobs {
        report.scaled_jobs.push(check(
            &pending,
            &objects,
            default_namespace,
            cluster_object_namespace,
        ));
    }
    report
}

/// Sorts documents into lookup objects and ScaledJobs (kubectl's `List` flattened).
pub(crate) fn collect(documents: Vec<Document>, default_namespace: &str) -> Collected {
    let mut report = Report::default();
    let mut objects = ObjectSet::default();
    let mut scaled_jobs = Vec::new();
    let mut queue: Vec<(Location, Value, Vec<NonFinite>)> = documents
        .into_iter()
        .map(|d| (d.location, d.value, d.non_finite))
        .collect();
    queue.reverse();
    while let Some((location, value, non_finite)) = queue.pop() {
        let mut fail = |message: String| {
            report.document_errors.push(DocumentError {
                location: location.clone(),
                message,
            });
        };
        let Some(object) = value.as_object() else {
            fail("not a Kubernetes object (expected a mapping with apiVersion and kind)".into());
            continue;
        };
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (namespace, name) = identity(&value, default_namespace);
        match (api_version, kind) {
            ("", _) | (_, "") => {
                fail("not a Kubernetes object: apiVersion and kind are required".into());
            }
            ("v1", "List") => match object.get("items") {
                // No items: an empty list, as kubectl reads it.
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate().rev() {
                        queue.push((
                            Location {
                                item: Some(i),
                                ..location.clone()
                            },
                            item.clone(),
                            within(&non_finite, &format!("items[{i}]")),
                        ));
                    }
                }
                Some(other) => fail(format!(
                    "List: items: must be a list of objects, not {}",
                    json_type(other)
                )),
            },
            ("keda.sh/v1alpha1", "ScaledJob") => {
                scaled_jobs.push(PendingScaledJob {
                    location,
                    value,
                    non_finite,
                });
            }
            ("keda.sh/v1alpha1", "TriggerAuthentication") => {
                match typed::<TriggerAuthentication>(&value, &non_finite) {
                    Ok(ta) => objects.insert_trigger_authentication(&namespace, &name, ta.spec),
                    Err(error) => {
                        fail(format!("TriggerAuthentication {namespace}/{name}: {error}"));
                    }
                }
            }
            ("keda.sh/v1alpha1", "ClusterTriggerAuthentication") => {
                match typed::<ClusterTriggerAuthentication>(&value, &non_finite) {
                    Ok(cta) => objects.insert_cluster_trigger_authentication(&name, cta.spec.0),
                    Err(error) => fail(format!("ClusterTriggerAuthentication {name}: {error}")),
                }
            }
            ("v1", "Secret") => match typed::<K8sSecret>(&value, &non_finite) {
                Ok(secret) => objects.insert_secret(&namespace, secret),
                Err(error) => fail(format!(
                    "Secret {namespace}/{name}: {}",
                    secret_error(&error)
                )),
            },
            ("v1", "ConfigMap") => match typed::<ConfigMap>(&value, &non_finite) {
                Ok(config_map) => objects.insert_config_map(&namespace, config_map),
                Err(error) => fail(format!("ConfigMap {namespace}/{name}: {error}")),
            },
            (
                version,
                kind @ ("ScaledJob" | "TriggerAuthentication" | "ClusterTriggerAuthentication"),
            ) if version != "keda.sh/v1alpha1" => {
                fail(format!(
                    "{kind} {namespace}/{name}: apiVersion {version} is not served; jobtide (like \
                     KEDA 2.x) serves {kind} as keda.sh/v1alpha1"
                ));
            }
            _ => {}
        }
    }
    Collected {
        objects,
        scaled_jobs,
        document_errors: report.document_errors,
    }
}

/// What kind of JSON value `value` is, for messages ("a number", "a mapping", …).
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The namespace (the default when unset) and name of a raw object.
pub(crate) fn identity(object: &Value, default_namespace: &str) -> (String, String) {
    let field = |key: &str| {
        object
            .get("metadata")
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
    };
    (
        field("namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or(default_namespace)
            .to_owned(),
        field("name").unwrap_or_default().to_owned(),
    )
}

/// A Secret's deserialization error without anything of its data: the field path only.
fn secret_error(error: &str) -> String {
    match error.split_once(": ") {
        Some((path, _)) if path.starts_with("data") || path.starts_with("stringData") => {
            format!("{path}: invalid value (not shown: Secret data; `data` values must be base64)")
        }
        _ => error.to_owned(),
    }
}

/// Why a non-finite number is an invalid value wherever it is.
const NOT_A_NUMBER: &str = "infinity and NaN are not numbers in JSON or the Kubernetes API";

/// Deserializes with the path of the failing field in the message, e.g.
/// `spec.pollingInterval: invalid type: string "ten", expected i32`. A non-finite number
/// (`.inf`) is an invalid value of its field, with what the field expects when the type says:
/// `spec.pollingInterval: invalid value: .inf: infinity and NaN are not numbers in JSON or the
/// Kubernetes API, expected i32`.
pub(crate) fn typed<T: DeserializeOwned>(
    value: &Value,
    non_finite: &[NonFinite],
) -> Result<T, String> {
    let not_a_number = |number: &NonFinite, expected: &str| {
        format!(
            "{}: invalid value: {}: {NOT_A_NUMBER}{expected}",
            number.path, number.literal
        )
    };
    match serde_path_to_error::deserialize(value) {
        Ok(typed) => match non_finite.first() {
            // Where a string may be (or in a field the type ignores): still no number.
            Some(number) => Err(not_a_number(number, "")),
            None => Ok(typed),
        },
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.inner().to_string();
            if let Some(number) = non_finite.iter().find(|n| n.path == path) {
                let expected = inner
                    .split_once(", expected ")
                    .map(|(_, expected)| format!(", expected {expected}"))
                    .unwrap_or_default();
                return Err(not_a_number(number, &expected));
            }
            Err(if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            })
        }
    }
}

/// The entries of `non_finite` inside `prefix` (`items[3]`), with paths relative to it.
fn within(non_finite: &[NonFinite], prefix: &str) -> Vec<NonFinite> {
    non_finite
        .iter()
        .filter_map(|number| {
            let rest = number.path.strip_prefix(prefix)?;
            let path = match rest.strip_prefix('.') {
                Some(path) => path.to_owned(),
                None if rest.is_empty() => String::new(),
                None if rest.starts_with('[') => rest.to_owned(),
                None => return None,
            };
            Some(NonFinite {
                path,
                literal: number.literal,
            })
        })
        .collect()
}

fn check(
    pending: &PendingScaledJob,
    objects: &ObjectSet,
    default_namespace: &str,
    cluster_object_namespace: &str,
) -> ScaledJobReport {
    let (namespace, name) = identity(&pending.value, default_namespace);
    let mut report = ScaledJobReport {
        namespace: namespace.clone(),
        name: name.clone(),
        valid: false,
        errors: Vec::new(),
        warnings: Vec::new(),
        location: pending.location.clone(),
        triggers: Vec::new(),
    };
    if name.is_empty() {
        report
            .errors
            .push("metadata.name: Required value: name is required".into());
    }
    let scaled_job = match typed::<ScaledJob>(&pending.value, &pending.non_finite) {
        Ok(scaled_job) => scaled_job,
        Err(error) => {
            report.errors.push(error);
            return report;
        }
    };
    report.errors.extend(check_object_meta(
        &namespace,
        &name,
        scaled_job.metadata.annotations.as_ref(),
    ));
    report.errors.extend(unknown_fields(
        pending.value.get("spec"),
        &serde_json::to_value(&scaled_job.spec).unwrap_or(Value::Null),
        "spec",
    ));
    report
        .errors
        .extend(required_job_fields(pending.value.get("spec")));
    let spec = &scaled_job.spec;
    let job = check_job_spec(&spec.job_target_ref);
    report.errors.extend(job.errors);
    report.warnings.extend(job.warnings);
    // jobtide's own annotations: a budget the operator can't read stops the ScaledJob.
    if let Some(Err(error)) = scaled_job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(jobtide_core::capacity::PENDING_BUDGET_ANNOTATION))
        .map(|v| jobtide_core::capacity::CapacityPolicy::parse_budget(v))
    {
        report.errors.push(error);
    }
    let findings = check_scaled_job(&name, spec);
    report.errors.extend(findings.errors.iter().cloned());
    report.warnings.extend(findings.warnings.iter().cloned());
    let resolved = resolve_triggers(
        objects,
        &namespace,
        spec,
        cluster_object_namespace,
        MissingEnvSource::Warn,
    );
    for ((index, trigger), resolved) in spec.triggers.iter().enumerate().zip(resolved) {
        let extra = findings.triggers.get(index).cloned().unwrap_or_default();
        let mut trigger_report = TriggerReport {
            index,
            type_: trigger.type_.clone(),
            name: trigger.name.clone(),
            metric_name: resolved.parsed.shown_metric_name,
            valid: false,
            errors: Vec::new(),
            warnings: extra.warnings,
            config: None,
            error_parameters: Vec::new(),
        };
        for error in extra.errors {
            trigger_report.errors.push(error);
            trigger_report
                .error_parameters
                .push(Some("metricType".into()));
        }
        if let Some(error) = resolved.resolve_error {
            trigger_report.errors.push(error.to_string());
            trigger_report
                .error_parameters
                .push(Some("authenticationRef".into()));
        } else {
            trigger_report.warnings.extend(resolved.resolve_warnings);
            trigger_report.warnings.extend(resolved.parsed.warnings);
            trigger_report.config = resolved.parsed.view;
            if let Err(error) = resolved.parsed.config {
                for param_error in error.param_errors() {
                    trigger_report.errors.push(param_error.message);
                    trigger_report
                        .error_parameters
                        .push(Some(param_error.parameter));
                }
            }
        }
        trigger_report.valid = trigger_report.errors.is_empty();
        report.triggers.push(trigger_report);
    }
    report.valid = report.errors.is_empty() && report.triggers.iter().all(|t| t.valid);
    report
}

/// Required fields the Kubernetes types fill with defaults when absent (k8s-openapi is lenient
/// there; the apiserver is not).
fn required_job_fields(spec: Option<&Value>) -> Vec<String> {
    let template = spec
        .and_then(|s| s.get("jobTargetRef"))
        .and_then(|j| j.get("template"));
    let Some(template) = template.filter(|t| t.is_object()) else {
        return vec!["spec.jobTargetRef.template: Required value".into()];
    };
    let containers = template.get("spec").and_then(|s| s.get("containers"));
    if containers
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return vec!["spec.jobTargetRef.template.spec.containers: Required value".into()];
    }
    Vec::new()
}

/// Fields of `raw` that the typed round trip dropped: kubectl's strict field validation (its
/// default) rejects them.
fn unknown_fields(raw: Option<&Value>, typed: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(Value::Object(raw)), Value::Object(typed)) = (raw, typed) {
        for (key, value) in raw {
            let child = format!("{path}.{key}");
            match typed.get(key) {
                None if !value.is_null() => out.push(format!(
                    "{child}: unknown field (kubectl apply rejects it under its default strict \
                     field validation)"
                )),
                Some(typed_child) => out.extend(unknown_fields(Some(value), typed_child, &child)),
                None => {}
            }
        }
    } else if let (Some(Value::Array(raw)), Value::Array(typed)) = (raw, typed) {
        for (i, (raw, typed)) in raw.iter().zip(typed).enumerate() {
            out.extend(unknown_fields(Some(raw), typed, &format!("{path}[{i}]")));
        }
    }
    out
}

#[cfg(test)]
mod tests;
