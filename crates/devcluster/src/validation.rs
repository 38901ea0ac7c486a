//! The validation the real API server does on what jobtide creates: names, label keys and values,
//! required fields, immutable Job templates. Returns `(field, message)` causes for a 422.

use serde_json::Value;

use crate::resources::ResourceType;

pub(crate) type Causes = Vec<(String, String)>;

fn dns1123_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

fn dns1123_subdomain(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(dns1123_label)
}

pub(crate) fn label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value
                .as_bytes()
                .first()
                .is_some_and(u8::is_ascii_alphanumeric)
            && value
                .as_bytes()
                .last()
                .is_some_and(u8::is_ascii_alphanumeric))
}

pub(crate) fn label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(dns1123_subdomain) && !name.is_empty() && label_value(name)
}

/// Validates `object` (and, for updates, against `old`).
pub fn validate(
    resource: &ResourceType,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Causes> {
    let mut causes = Causes::new();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // Namespaces and Jobs (whose name becomes a label value) must be DNS-1123 labels; the rest
    // DNS-1123 subdomains.
    let needs_label = matches!(
        (resource.group.as_str(), resource.plural.as_str()),
        ("", "namespaces") | ("batch", "jobs")
    );
    let valid_name = if needs_label {
        dns1123_label(name)
    } else {
        dns1123_subdomain(name)
    };
    if !valid_name {
        let rule = if needs_label {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, and be at most 63 characters"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": {rule}"),
        ));
    }
    for (key, value) in object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if !label_key(key) {
            causes.push((format!("metadata.labels: Invalid value: \"{key}\""), "name part must consist of alphanumeric characters, '-', '_' or '.' and be at most 63 characters".into()));
        }
        match value.as_str() {
            Some(v) if label_value(v) => {}
            _ => causes.push((
                "metadata.labels".into(),
                format!("Invalid value: {value}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', start and end with an alphanumeric character, and be at most 63 characters"),
            )),
        }
    }
    if resource.group == "batch" && resource.plural == "jobs" {
        if object.pointer("/spec/template").is_none() {
            causes.push(("spec.template".into(), "Required value".into()));
        }
        let containers = object
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array);
        if containers.is_none_or(Vec::is_empty) {
            causes.push((
                "spec.template.spec.containers".into(),
                "Required value".into(),
            ));
        }
        let restart = object
            .pointer("/spec/template/spec/restartPolicy")
            .and_then(Value::as_str);
        if !matches!(restart, Some("Never" | "OnFailure")) {
            causes.push((
                "spec.template.spec.restartPolicy".into(),
                format!(
                    "Unsupported value: \"{}\": supported values: \"OnFailure\", \"Never\"",
                    restart.unwrap_or_default()
                ),
            ));
        }
        if let Some(old) = old
            && old.pointer("/spec/template") != object.pointer("/spec/template")
        {
            causes.push((
                "spec.template".into(),
                "Invalid value: field is immutable".into(),
            ));
        }
    }
    if resource.group.is_empty() && resource.plural == "pods" {
        let containers = object.pointer("/spec/containers").and_then(Value::as_array);
        if containers.is_none_or(Vec::is_empty) {
            causes.push(("spec.containers".into(), "Required value".into()));
        }
    }
    if resource.group == "apiextensions.k8s.io" && resource.plural == "customresourcedefinitions" {
        causes.extend(custom_resource_definition(object));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// The real apiextensions server's checks that keep a CRD from serving where it must not: a group
/// with a dot, outside the protected `k8s.io` / `kubernetes.io` groups unless approved, a name
/// `<plural>.<group>`, names that are DNS labels, a version. And, because this server would
/// replace a built-in type where the real one keeps serving its own: no built-in group/plural.
fn custom_resource_definition(crd: &Value) -> Causes {
    let mut causes = Causes::new();
    let text = |path: &str| {
        crd.pointer(path)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (name, group, plural) = (
        text("/metadata/name"),
        text("/spec/group"),
        text("/spec/names/plural"),
    );
    if !group.contains('.') || !dns1123_subdomain(group) {
        causes.push((
            "spec.group".into(),
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        ));
    }
    let protected = ["k8s.io", "kubernetes.io"]
        .iter()
        .any(|p| group == *p || group.ends_with(&format!(".{p}")));
    let approved = crd
        .pointer("/metadata/annotations/api-approved.kubernetes.io")
        .is_some();
    if protected && !approved {
        causes.push((
            "metadata.annotations[api-approved.kubernetes.io]".into(),
            "Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111".into(),
        ));
    }
    if !dns1123_label(plural) {
        causes.push((
            "spec.names.plural".into(),
            format!("Invalid value: \"{plural}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
        ));
    } else if crate::resources::Registry::builtin()
        .all()
        .any(|t| t.group == group && t.plural == plural)
    {
        causes.push((
            "spec.names.plural".into(),
            format!("Invalid value: \"{plural}\": {plural}.{group} is a built-in type of this server; a CRD can't replace it"),
        ));
    }
    if name != format!("{plural}.{group}") {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if text("/spec/names/kind").is_empty() {
        causes.push(("spec.names.kind".into(), "Required value".into()));
    }
    if crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        causes.push((
            "spec.versions".into(),
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(dns1123_label("kafka-scaledjob-x7k2p"));
        assert!(!dns1123_label(&"x".repeat(64)));
        assert!(!dns1123_label("Upper"));
        assert!(dns1123_subdomain("scaledjobs.keda.sh"));
        assert!(
            label_value("")
                && label_value("a.b_c-d")
                && !label_value("-a")
                && !label_value(&"x".repeat(64))
        );
        assert!(label_key("scaledjob.keda.sh/name") && label_key("app") && !label_key("a/b/c"));
    }
}
