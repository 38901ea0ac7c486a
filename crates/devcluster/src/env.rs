//! A container's environment, resolved as the kubelet does (for what jobtide's Jobs use):
//! `value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef` (`metadata.name`, `metadata.namespace`)
//! and `envFrom`.

use std::collections::BTreeMap;

use serde_json::Value;

/// Finds a Secret or ConfigMap of the pod's namespace: (`"secrets"` | `"configmaps"`, name) →
/// the object as the API returns it (a Secret's `data` base64). The runner reads its store;
/// the node agent what it fetched through the API.
pub type Lookup<'a> = &'a (dyn Fn(&str, &str) -> Option<Value> + Sync);

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The Secrets and ConfigMaps (plural, name) a pod's first container reads, in env and
/// volumes: what [`resolve`] and [`crate::volumes::prepare`] will look up.
pub fn references(pod: &Value) -> Vec<(&'static str, String)> {
    let container = pod.pointer("/spec/containers/0").unwrap_or(&Value::Null);
    let mut out = Vec::new();
    let mut add = |plural: &'static str, name: Option<&str>| {
        if let Some(name) = name.filter(|n| !n.is_empty())
            && !out.iter().any(|(p, n)| *p == plural && n == name)
        {
            out.push((plural, name.to_owned()));
        }
    };
    for source in container["envFrom"].as_array().into_iter().flatten() {
        add(
            "configmaps",
            source.pointer("/configMapRef/name").and_then(Value::as_str),
        );
        add(
            "secrets",
            source.pointer("/secretRef/name").and_then(Value::as_str),
        );
    }
    for var in container["env"].as_array().into_iter().flatten() {
        add(
            "secrets",
            var.pointer("/valueFrom/secretKeyRef/name")
                .and_then(Value::as_str),
        );
        add(
            "configmaps",
            var.pointer("/valueFrom/configMapKeyRef/name")
                .and_then(Value::as_str),
        );
    }
    for volume in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(
            "secrets",
            volume.pointer("/secret/secretName").and_then(Value::as_str),
        );
        add(
            "configmaps",
            volume.pointer("/configMap/name").and_then(Value::as_str),
        );
    }
    out
}

/// Resolves the container's env as the kubelet does (for what jobtide's Jobs use).
pub fn resolve(lookup: Lookup<'_>, pod: &Value, container: &Value) -> BTreeMap<String, String> {
    let namespace = str_at(pod, "/metadata/namespace");
    let data = |plural: &str, name: &str| -> BTreeMap<String, String> {
        let Some(object) = lookup(plural, name) else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (key, value) in object["data"].as_object().into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            let decoded = if plural == "secrets" {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                    .ok()
                    .map_or_else(String::new, |b| String::from_utf8_lossy(&b).into_owned())
            } else {
                text.to_owned()
            };
            out.insert(key.clone(), decoded);
        }
        for (key, value) in object["stringData"].as_object().into_iter().flatten() {
            out.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
        }
        out
    };
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = source["prefix"].as_str().unwrap_or_default();
        let values =
            if let Some(name) = source.pointer("/configMapRef/name").and_then(Value::as_str) {
                data("configmaps", name)
            } else if let Some(name) = source.pointer("/secretRef/name").and_then(Value::as_str) {
                data("secrets", name)
            } else {
                BTreeMap::new()
            };
        for (key, value) in values {
            env.insert(format!("{prefix}{key}"), value);
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            Some(value.to_owned())
        } else if let Some(selector) = var.pointer("/valueFrom/secretKeyRef") {
            data("secrets", selector["name"].as_str().unwrap_or_default())
                .remove(selector["key"].as_str().unwrap_or_default())
        } else if let Some(selector) = var.pointer("/valueFrom/configMapKeyRef") {
            data("configmaps", selector["name"].as_str().unwrap_or_default())
                .remove(selector["key"].as_str().unwrap_or_default())
        } else {
            match var
                .pointer("/valueFrom/fieldRef/fieldPath")
                .and_then(Value::as_str)
            {
                Some("metadata.name") => Some(str_at(pod, "/metadata/name").to_owned()),
                Some("metadata.namespace") => Some(namespace.to_owned()),
                _ => None,
            }
        };
        if let Some(value) = value {
            env.insert(name, value);
        }
    }
    env
}
