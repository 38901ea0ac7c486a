//! What the Kubernetes API server refuses that the CRD schema and KEDA don't check: the
//! ScaledJob's own metadata (it would not be stored) and the Job its `jobTargetRef` describes (no
//! Job could be created). Messages are the API server's field errors
//! (`k8s.io/apimachinery/pkg/util/validation/field`), with the same paths and wording, for the
//! rules of `ValidateObjectMeta`, `batch/validation.validateJobSpec` and `core/validation`'s
//! container checks.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::api::core::v1::Container;

/// The API server's limit on the summed size (keys and values, in bytes) of an object's
/// annotations: `TotalAnnotationSizeLimitB`, 256 KiB.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// The longest DNS-1123 subdomain (an object name).
const MAX_SUBDOMAIN_LEN: usize = 253;
/// The longest DNS-1123 label (a namespace, a container name).
const MAX_LABEL_LEN: usize = 63;

const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
     characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
     or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
     (e.g. 'example.com', regex used for validation is \
     '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `field.Invalid`: `path: Invalid value: "value": message`.
fn invalid(path: &str, value: &str, message: &str) -> String {
    format!("{path}: Invalid value: {value:?}: {message}")
}

fn is_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alphanumeric(first)
                && alphanumeric(last)
                && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
        }
        _ => false,
    }
}

/// `IsDNS1123Label` as field errors of `path`.
fn label_errors(path: &str, value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value.len() > MAX_LABEL_LEN {
        out.push(invalid(
            path,
            value,
            &format!("must be no more than {MAX_LABEL_LEN} characters"),
        ));
    }
    if !is_label(value) {
        out.push(invalid(path, value, LABEL_MESSAGE));
    }
    out
}

/// `IsDNS1123Subdomain` as field errors of `path`.
fn subdomain_errors(path: &str, value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value.len() > MAX_SUBDOMAIN_LEN {
        out.push(invalid(
            path,
            value,
            &format!("must be no more than {MAX_SUBDOMAIN_LEN} characters"),
        ));
    }
    if !value.split('.').all(is_label) {
        out.push(invalid(path, value, SUBDOMAIN_MESSAGE));
    }
    out
}

/// `ValidateAnnotations`' size rule for the annotations at `path`.
fn annotation_errors(path: &str, annotations: Option<&BTreeMap<String, String>>) -> Vec<String> {
    let total: usize = annotations
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if total > MAX_ANNOTATIONS_BYTES {
        vec![format!(
            "{path}: Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"
        )]
    } else {
        Vec::new()
    }
}

/// The API server's rules for a ScaledJob's metadata: a custom resource's name is a DNS-1123
/// subdomain, its namespace a DNS-1123 label, its annotations at most 256 KiB. An empty name is
/// left to the caller (`metadata.name: Required value`).
pub fn check_object_meta(
    namespace: &str,
    name: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    if !name.is_empty() {
        out.extend(subdomain_errors("metadata.name", name));
    }
    out.extend(label_errors("metadata.namespace", namespace));
    out.extend(annotation_errors("metadata.annotations", annotations));
    out
}

/// `ValidateNonnegativeField`.
fn nonnegative(out: &mut Vec<String>, path: &str, value: Option<i64>) {
    if let Some(value) = value.filter(|v| *v < 0) {
        out.push(format!(
            "{path}: Invalid value: {value}: must be greater than or equal to 0"
        ));
    }
}

/// Findings about the Job a ScaledJob creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFindings {
    /// What the API server refuses: no Job could be created.
    pub errors: Vec<String>,
    /// Accepted, but not what it seems.
    pub warnings: Vec<String>,
}

/// The API server's rules for the Job a ScaledJob creates (`spec.jobTargetRef`), those it
/// checks on the Job itself: counts and deadlines not negative, `restartPolicy` `OnFailure` or
/// `Never` (KEDA sets `OnFailure` when it is empty), every container named (a unique DNS-1123
/// label) and with an image, template annotations at most 256 KiB.
///
/// An empty `image` fails the Job, not only its pods: `validateContainerCommon` requires it for
/// pod templates too (the field is optional in the API types so that controllers may fill it,
/// but Jobs don't).
///
/// `activeDeadlineSeconds: 0` is accepted (the rule is `ValidateNonnegativeField`) and is a
/// warning: every Job fails at once with `DeadlineExceeded`.
pub fn check_job_spec(spec: &JobSpec) -> JobFindings {
    const PATH: &str = "spec.jobTargetRef";
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    if spec.active_deadline_seconds == Some(0) {
        warnings.push(format!(
            "{PATH}.activeDeadlineSeconds is 0: the API server accepts it, and every Job fails \
             at once (DeadlineExceeded) without running"
        ));
    }
    nonnegative(
        &mut out,
        &format!("{PATH}.parallelism"),
        spec.parallelism.map(i64::from),
    );
    nonnegative(
        &mut out,
        &format!("{PATH}.completions"),
        spec.completions.map(i64::from),
    );
    nonnegative(
        &mut out,
        &format!("{PATH}.activeDeadlineSeconds"),
        spec.active_deadline_seconds,
    );
    nonnegative(
        &mut out,
        &format!("{PATH}.backoffLimit"),
        spec.backoff_limit.map(i64::from),
    );
    nonnegative(
        &mut out,
        &format!("{PATH}.ttlSecondsAfterFinished"),
        spec.ttl_seconds_after_finished.map(i64::from),
    );
    nonnegative(
        &mut out,
        &format!("{PATH}.backoffLimitPerIndex"),
        spec.backoff_limit_per_index.map(i64::from),
    );
    nonnegative(
        &mut out,
        &format!("{PATH}.maxFailedIndexes"),
        spec.max_failed_indexes.map(i64::from),
    );
    let template = &spec.template;
    out.extend(annotation_errors(
        &format!("{PATH}.template.metadata.annotations"),
        template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref()),
    ));
    let Some(pod) = &template.spec else {
        return JobFindings {
            errors: out,
            warnings,
        };
    };
    let mut names = BTreeSet::new();
    let lists = [
        ("containers", pod.containers.as_slice()),
        (
            "initContainers",
            pod.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    for (list, containers) in lists {
        for (i, container) in containers.iter().enumerate() {
            let path = format!("{PATH}.template.spec.{list}[{i}]");
            out.extend(container_errors(&path, container, &mut names));
        }
    }
    if let Some(policy) = pod
        .restart_policy
        .as_deref()
        .filter(|p| !matches!(*p, "" | "OnFailure" | "Never"))
    {
        out.push(format!(
            "{PATH}.template.spec.restartPolicy: Unsupported value: {policy:?}: supported \
             values: \"OnFailure\", \"Never\""
        ));
    }
    JobFindings {
        errors: out,
        warnings,
    }
}

/// One container's name (required, a DNS-1123 label, unique among `names`) and image
/// (required).
fn container_errors<'a>(
    path: &str,
    container: &'a Container,
    names: &mut BTreeSet<&'a str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let name_path = format!("{path}.name");
    if container.name.is_empty() {
        out.push(format!("{name_path}: Required value"));
    } else {
        out.extend(label_errors(&name_path, &container.name));
    }
    if !names.insert(&container.name) {
        out.push(format!(
            "{name_path}: Duplicate value: {:?}",
            container.name
        ));
    }
    if container.image.as_deref().is_none_or(str::is_empty) {
        out.push(format!("{path}.image: Required value"));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(value: serde_json::Value) -> JobSpec {
        serde_json::from_value(value).expect("a JobSpec")
    }

    #[test]
    fn names_follow_dns_1123() {
        assert!(check_object_meta("team-a", "orders.v2", None).is_empty());
        let errors = check_object_meta("a_b", "-x", None);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].starts_with(
                "metadata.name: Invalid value: \"-x\": a lowercase RFC 1123 subdomain"
            )
        );
        assert!(
            errors[1].starts_with(
                "metadata.namespace: Invalid value: \"a_b\": a lowercase RFC 1123 label"
            )
        );
        let long = "a".repeat(254);
        assert_eq!(
            check_object_meta("default", &long, None)[0],
            format!(
                "metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"
            )
        );
        assert_eq!(check_object_meta(&"n".repeat(64), "x", None).len(), 1);
        assert!(
            check_object_meta("default", "", None).is_empty(),
            "left to the caller"
        );
    }

    #[test]
    fn annotations_may_sum_to_256_kib() {
        let fits: BTreeMap<String, String> =
            [("k".to_owned(), "v".repeat(MAX_ANNOTATIONS_BYTES - 1))].into();
        assert!(check_object_meta("default", "x", Some(&fits)).is_empty());
        let over: BTreeMap<String, String> =
            [("k".to_owned(), "v".repeat(MAX_ANNOTATIONS_BYTES))].into();
        assert_eq!(
            check_object_meta("default", "x", Some(&over)),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
    }

    #[test]
    fn a_plain_job_passes_and_zero_counts_are_allowed() {
        let spec = job(
            json!({"parallelism": 0, "completions": 0, "backoffLimit": 0,
            "activeDeadlineSeconds": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]}}}),
        );
        let findings = check_job_spec(&spec);
        assert!(findings.errors.is_empty(), "{findings:#?}");
        assert_eq!(
            findings.warnings.len(),
            1,
            "activeDeadlineSeconds 0: {findings:#?}"
        );
    }

    #[test]
    fn containers_need_unique_label_names_and_an_image() {
        let spec = job(json!({"template": {"spec": {
            "initContainers": [{"name": "main", "image": "i"}],
            "containers": [{"name": "main", "image": ""}, {"name": "Side", "image": "i"}, {"name": ""}]}}}));
        assert_eq!(
            check_job_spec(&spec).errors,
            vec![
                "spec.jobTargetRef.template.spec.containers[0].image: Required value".to_owned(),
                format!(
                    "spec.jobTargetRef.template.spec.containers[1].name: Invalid value: \"Side\": {LABEL_MESSAGE}"
                ),
                "spec.jobTargetRef.template.spec.containers[2].name: Required value".to_owned(),
                "spec.jobTargetRef.template.spec.containers[2].image: Required value".to_owned(),
                "spec.jobTargetRef.template.spec.initContainers[0].name: Duplicate value: \"main\""
                    .to_owned(),
            ]
        );
    }
}
