//! The defaulting the real API server does on write, for the types whose defaults jobtide's
//! tests see: a Secret's `stringData`, a Job's spec and pod-template labels, a Namespace's and a
//! Pod's initial status.

use serde_json::{Value, json};

/// A Secret's `stringData` is write-only, as in the real server: merged into `data` (base64),
/// overriding keys of the same name, and never stored.
pub(super) fn merge_string_data(secret: &mut Value) {
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        data[key.as_str()] = json!(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            text
        ));
    }
}

/// A new Namespace is `Active` (the real server's namespace strategy sets `status.phase` on
/// create, whatever the client sent).
pub(super) fn default_namespace(namespace: &mut Value) {
    if let Some(map) = namespace.as_object_mut() {
        map.insert("status".into(), json!({"phase": "Active"}));
    }
}

/// A new Pod's status is the real server's (the pod strategy's `PrepareForCreate`): `Pending`
/// and its QoS class, whatever the client sent.
pub(super) fn default_pod(pod: &mut Value) {
    let qos = qos_class(pod);
    if let Some(map) = pod.as_object_mut() {
        map.insert(
            "status".into(),
            json!({"phase": "Pending", "qosClass": qos}),
        );
    }
}

/// A pod's QoS class, as `k8s.io/kubernetes/pkg/apis/core/helper/qos` computes it for cpu and
/// memory: BestEffort without requests or limits; Guaranteed when every container limits both
/// and requests what it limits (an unset request defaults to the limit); Burstable otherwise.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .collect();
    let amount = |container: &Value, kind: &str, resource: &str| {
        container["resources"][kind][resource]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                container["resources"][kind][resource]
                    .as_i64()
                    .map(|n| n.to_string())
            })
    };
    let mut any = false;
    let mut guaranteed = true;
    for container in &containers {
        for resource in ["cpu", "memory"] {
            let (request, limit) = (
                amount(container, "requests", resource),
                amount(container, "limits", resource),
            );
            any |= request.is_some() || limit.is_some();
            guaranteed &= limit.is_some() && (request.is_none() || request == limit);
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The Job defaulting the real API server does on create: completions and parallelism 1 when
/// both are unset, backoffLimit 6, completionMode NonIndexed, suspend false, and the selector
/// and pod-template labels that tie pods to this Job (`batch.kubernetes.io/controller-uid`,
/// `batch.kubernetes.io/job-name`, and the legacy `controller-uid` / `job-name`).
pub(super) fn default_job(job: &mut Value) {
    let uid = job.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = job
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if !spec.contains_key("completions") && !spec.contains_key("parallelism") {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    spec.entry("parallelism").or_insert(json!(1));
    spec.entry("backoffLimit").or_insert(json!(6));
    spec.entry("completionMode").or_insert(json!("NonIndexed"));
    spec.entry("suspend").or_insert(json!(false));
    if spec.get("manualSelector") != Some(&json!(true)) {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        let labels = spec
            .entry("template")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|t| t.entry("metadata").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
            .map(|m| m.entry("labels").or_insert_with(|| json!({})));
        if let Some(Value::Object(labels)) = labels {
            labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
            labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
            labels.insert("controller-uid".into(), uid);
            labels.insert("job-name".into(), name);
        }
    }
}
