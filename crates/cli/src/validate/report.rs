//! The result of `jobtide validate`, as JSON (documented in the README and stable) and as text
//! (one line per finding, each naming file, document, object, trigger and parameter).

use serde::Serialize;
use serde_json::Value;

use super::input::Location;
use crate::text::push_line;

/// The whole report. JSON: `{"scaledJobs":[…],"documentErrors":[…]}`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub scaled_jobs: Vec<ScaledJobReport>,
    /// Documents that are not usable (a TriggerAuthentication that doesn't match the schema, a
    /// `keda.sh` kind jobtide doesn't serve, …). Any entry makes the exit code 1.
    pub document_errors: Vec<DocumentError>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentError {
    #[serde(flatten)]
    pub location: Location,
    pub message: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobReport {
    pub namespace: String,
    pub name: String,
    pub valid: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub location: Location,
    pub triggers: Vec<TriggerReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerReport {
    pub index: usize,
    #[serde(rename = "type")]
    pub type_: String,
    pub name: Option<String>,
    pub metric_name: Option<String>,
    pub valid: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub config: Option<Value>,
    /// The parameter each error is about (same order as `errors`), for the text output.
    #[serde(skip)]
    pub error_parameters: Vec<Option<String>>,
}

impl Report {
    /// Whether every ScaledJob is valid and every document usable.
    pub fn is_valid(&self) -> bool {
        self.document_errors.is_empty() && self.scaled_jobs.iter().all(|sj| sj.valid)
    }

    /// One line per finding; manifest text in it is escaped ([`crate::text`]).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for error in &self.document_errors {
            push_line(
                &mut out,
                format_args!("{}: error: {}", error.location, error.message),
            );
        }
        for sj in &self.scaled_jobs {
            let object = format!("{}: ScaledJob {}/{}", sj.location, sj.namespace, sj.name);
            for error in &sj.errors {
                push_line(&mut out, format_args!("{object}: error: {error}"));
            }
            for warning in &sj.warnings {
                push_line(&mut out, format_args!("{object}: warning: {warning}"));
            }
            for trigger in &sj.triggers {
                let name = trigger
                    .name
                    .as_ref()
                    .map(|n| format!(" \"{n}\""))
                    .unwrap_or_default();
                let prefix = format!(
                    "{object}: trigger {} ({}){name}",
                    trigger.index, trigger.type_
                );
                for (error, parameter) in trigger.errors.iter().zip(&trigger.error_parameters) {
                    match parameter {
                        Some(parameter) => push_line(
                            &mut out,
                            format_args!("{prefix}: parameter {parameter}: error: {error}"),
                        ),
                        None => push_line(&mut out, format_args!("{prefix}: error: {error}")),
                    }
                }
                for warning in &trigger.warnings {
                    push_line(&mut out, format_args!("{prefix}: warning: {warning}"));
                }
                if trigger.valid {
                    let metric = trigger.metric_name.as_deref().unwrap_or("-");
                    push_line(&mut out, format_args!("{prefix}: ok (metric {metric})"));
                }
            }
            push_line(
                &mut out,
                format_args!("{object}: {}", if sj.valid { "valid" } else { "INVALID" }),
            );
        }
        let invalid = self.scaled_jobs.iter().filter(|sj| !sj.valid).count();
        push_line(
            &mut out,
            format_args!(
                "{} ScaledJob(s) checked: {} valid, {invalid} invalid; {} unusable document(s)",
                self.scaled_jobs.len(),
                self.scaled_jobs.len() - invalid,
                self.document_errors.len()
            ),
        );
        out
    }
}
