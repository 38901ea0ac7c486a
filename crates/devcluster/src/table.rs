//! `as=Table` output for `kubectl get`: Name, the type's columns, Age.

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// Evaluates the simple JSONPath forms printer columns use: `.a.b`, `.a[*].b`,
/// `.a[?(@.type=="Ready")].status`.
pub fn json_path(object: &Value, path: &str) -> Value {
    let mut current = vec![object.clone()];
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        let (segment, tail) = match rest.find(['.', '[']) {
            Some(0) => ("", rest),
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !segment.is_empty() {
            current = current
                .iter()
                .filter_map(|v| v.get(segment).cloned())
                .collect();
        }
        rest = tail;
        if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return Value::Null;
            };
            let selector = &after[..end];
            rest = &after[end + 1..];
            let items: Vec<Value> = current
                .iter()
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                .collect();
            current = if selector == "*" {
                items
            } else if let Some(filter) = selector
                .strip_prefix("?(@.")
                .and_then(|f| f.strip_suffix(')'))
            {
                let Some((field, value)) = filter.split_once("==") else {
                    return Value::Null;
                };
                let value = value.trim_matches(['"', '\'']);
                items
                    .into_iter()
                    .filter(|item| item.get(field).and_then(Value::as_str) == Some(value))
                    .collect()
            } else if let Ok(index) = selector.parse::<usize>() {
                items.into_iter().nth(index).into_iter().collect()
            } else {
                return Value::Null;
            };
        }
        rest = rest.trim_start_matches('.');
    }
    match current.len() {
        0 => Value::Null,
        1 => current.remove(0),
        _ => Value::String(
            current
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// Kubernetes' `duration.HumanDuration`: `45s`, `3m20s`, `5h12m`, `3d4h`, `2y30d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        if seconds % 60 == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{}s", seconds % 60)
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        if minutes % 60 == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{}m", minutes % 60)
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        if hours % 24 == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, hours % 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let days = hours / 24;
        if days % 365 == 0 {
            format!("{}y", days / 365)
        } else {
            format!("{}y{}d", days / 365, days % 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// A `date` cell: the age of the timestamp, as the real server renders it.
fn age(value: &Value) -> Value {
    let Some(text) = value.as_str() else {
        return Value::Null;
    };
    match text.parse::<jiff::Timestamp>() {
        Ok(then) => Value::String(human_duration(
            jiff::Timestamp::now().as_second() - then.as_second(),
        )),
        Err(_) => Value::String("<invalid>".into()),
    }
}

/// Column (name, type, priority) definitions after Name, and the function computing a row's
/// cells after the name.
type BuiltinColumns = (
    Vec<(&'static str, &'static str, u8)>,
    fn(&Value) -> Vec<Value>,
);

/// Columns and cells for the built-in types kubectl shows: the real server's printers
/// (kubernetes v1.37 `pkg/printers/internalversion/printers.go`), wide columns (priority 1)
/// included, as the server always renders them.
fn builtin_columns(resource: &ResourceType) -> Option<BuiltinColumns> {
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("batch", "jobs") => Some((
            vec![
                ("Status", "string", 0),
                ("Completions", "string", 0),
                ("Duration", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            job_cells,
        )),
        ("", "pods") => Some((
            vec![
                ("Ready", "string", 0),
                ("Status", "string", 0),
                ("Restarts", "string", 0),
                ("Age", "string", 0),
                ("IP", "string", 1),
                ("Node", "string", 1),
                ("Nominated Node", "string", 1),
                ("Readiness Gates", "string", 1),
            ],
            pod_cells,
        )),
        ("", "configmaps") => Some((
            vec![("Data", "string", 0), ("Age", "string", 0)],
            config_map_cells,
        )),
        ("", "secrets") => Some((
            vec![
                ("Type", "string", 0),
                ("Data", "string", 0),
                ("Age", "string", 0),
            ],
            secret_cells,
        )),
        ("" | "events.k8s.io", "events") => Some((
            vec![
                ("Last Seen", "string", 0),
                ("Type", "string", 0),
                ("Reason", "string", 0),
                ("Object", "string", 0),
                ("Message", "string", 0),
            ],
            event_cells,
        )),
        _ => None,
    }
}

/// How many keys an object's maps at `pointers` hold together.
fn keys(object: &Value, pointers: &[&str]) -> Value {
    let count: usize = pointers
        .iter()
        .filter_map(|p| object.pointer(p).and_then(Value::as_object))
        .map(serde_json::Map::len)
        .sum();
    Value::from(count)
}

fn config_map_cells(config_map: &Value) -> Vec<Value> {
    vec![
        keys(config_map, &["/data", "/binaryData"]),
        creation_age(config_map),
    ]
}

fn secret_cells(secret: &Value) -> Vec<Value> {
    vec![
        secret
            .get("type")
            .cloned()
            .unwrap_or_else(|| Value::from("")),
        keys(secret, &["/data"]),
        creation_age(secret),
    ]
}

/// `<none>` for an empty cell, as the printers write it.
fn or_none(text: &str) -> Value {
    Value::from(if text.is_empty() { "<none>" } else { text })
}

/// A label selector as `metav1.FormatLabelSelector` prints it (keys sorted; set-based
/// requirements as `key in (a,b)`, `key notin (a)`, `key`, `!key`).
fn format_selector(selector: Option<&Value>) -> Value {
    let Some(selector) = selector.filter(|s| s.is_object()) else {
        return Value::from("<none>");
    };
    let mut parts: Vec<(String, String)> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())))
        .collect();
    for expression in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expression["key"].as_str().unwrap_or_default();
        let mut values: Vec<&str> = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match expression["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        };
        parts.push((key.to_owned(), text));
    }
    parts.sort();
    let text: Vec<String> = parts.into_iter().map(|(_, t)| t).collect();
    or_none(&text.join(","))
}

fn seconds_since(value: Option<&Value>) -> Option<i64> {
    let then = value?.as_str()?.parse::<jiff::Timestamp>().ok()?;
    Some(jiff::Timestamp::now().as_second() - then.as_second())
}

fn creation_age(object: &Value) -> Value {
    age(&object
        .pointer("/metadata/creationTimestamp")
        .cloned()
        .unwrap_or(Value::Null))
}

fn job_cells(job: &Value) -> Vec<Value> {
    let conditions: Vec<&str> = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True")
        .filter_map(|c| c["type"].as_str())
        .collect();
    let status = [
        "Complete",
        "Failed",
        "Suspended",
        "FailureTarget",
        "SuccessCriteriaMet",
    ]
    .into_iter()
    .find(|t| conditions.contains(t))
    .unwrap_or("Running");
    let succeeded = job
        .pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let completions = match (
        job.pointer("/spec/completions").and_then(Value::as_i64),
        job.pointer("/spec/parallelism").and_then(Value::as_i64),
    ) {
        (Some(completions), _) => format!("{succeeded}/{completions}"),
        (None, Some(parallelism)) if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
        _ => format!("{succeeded}/1"),
    };
    let start = job.pointer("/status/startTime");
    let duration = match (
        seconds_since(start),
        seconds_since(job.pointer("/status/completionTime")),
    ) {
        (Some(started), Some(completed)) => human_duration(started - completed),
        (Some(started), None) => human_duration(started),
        _ => String::new(),
    };
    let containers: Vec<&Value> = job
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let field = |name: &str| {
        containers
            .iter()
            .map(|c| c[name].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        Value::from(status),
        Value::from(completions),
        Value::from(duration),
        creation_age(job),
        Value::from(field("name")),
        Value::from(field("image")),
        format_selector(job.pointer("/spec/selector")),
    ]
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let statuses: Vec<&Value> = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    let mut status = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
        .to_owned();
    for container in &statuses {
        if let Some(reason) = container
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            reason.clone_into(&mut status);
        } else if let Some(reason) = container
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
        {
            reason.clone_into(&mut status);
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    let ip = pod
        .pointer("/status/podIPs/0/ip")
        .or_else(|| pod.pointer("/status/podIP"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let text = |pointer: &str| {
        pod.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let gates: Vec<&str> = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g["conditionType"].as_str())
        .collect();
    let readiness_gates = if gates.is_empty() {
        Value::from("<none>")
    } else {
        let met = gates
            .iter()
            .filter(|gate| {
                pod.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == **gate && c["status"] == "True")
            })
            .count();
        Value::from(format!("{met}/{}", gates.len()))
    };
    vec![
        Value::from(format!("{ready}/{total}")),
        Value::from(status),
        Value::from(restarts.to_string()),
        creation_age(pod),
        or_none(ip),
        or_none(text("/spec/nodeName")),
        or_none(text("/status/nominatedNodeName")),
        readiness_gates,
    ]
}

fn event_cells(event: &Value) -> Vec<Value> {
    // core/v1 (involvedObject, message) or events.k8s.io/v1 (regarding, note).
    let object = event
        .get("regarding")
        .or_else(|| event.get("involvedObject"))
        .cloned()
        .unwrap_or(Value::Null);
    let last_seen = [
        "/lastTimestamp",
        "/eventTime",
        "/deprecatedLastTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| event.pointer(p).filter(|v| !v.is_null()))
    .cloned()
    .unwrap_or(Value::Null);
    vec![
        age(&last_seen),
        event["type"].clone(),
        event["reason"].clone(),
        Value::from(format!(
            "{}/{}",
            object["kind"].as_str().unwrap_or_default().to_lowercase(),
            object["name"].as_str().unwrap_or_default()
        )),
        event
            .get("note")
            .or_else(|| event.get("message"))
            .cloned()
            .unwrap_or(Value::Null),
    ]
}

/// A Table of `items`.
pub fn table(resource: &ResourceType, items: &[Value], resource_version: u64) -> Value {
    if let Some((columns, cells)) = builtin_columns(resource) {
        let mut definitions = vec![
            json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
        ];
        definitions.extend(columns.iter().map(|(name, type_, priority)| json!({"name": name, "type": type_, "format": "", "description": "", "priority": priority})));
        let rows: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut row = vec![item.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
                row.extend(cells(item));
                json!({"cells": row, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]}})
            })
            .collect();
        return json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version.to_string()},
            "columnDefinitions": definitions, "rows": rows});
    }
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    for column in &resource.printer_columns {
        columns.push(json!({"name": column.name, "type": column.type_, "format": "", "description": "", "priority": column.priority}));
    }
    let has_age = resource.printer_columns.iter().any(|c| c.name == "Age");
    if !has_age {
        columns.push(
            json!({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}),
        );
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![item.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            for column in &resource.printer_columns {
                let value = json_path(item, &column.json_path);
                cells.push(if column.type_ == "date" { age(&value) } else { value });
            }
            if !has_age {
                cells.push(age(&item.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null)));
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_like_kubectl() {
        for (seconds, text) in [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (30 * 86400, "30d"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(human_duration(seconds), text, "{seconds}");
        }
    }

    #[test]
    fn printer_column_paths() {
        let sj = json!({"spec": {"minReplicaCount": 1}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Active", "status": "False"}]}});
        assert_eq!(json_path(&sj, ".spec.minReplicaCount"), json!(1));
        assert_eq!(
            json_path(&sj, ".status.conditions[?(@.type==\"Ready\")].status"),
            json!("True")
        );
        assert_eq!(
            json_path(&sj, ".status.conditions[*].type"),
            json!("Ready,Active")
        );
        assert_eq!(json_path(&sj, ".spec.maxReplicaCount"), Value::Null);
    }
}
