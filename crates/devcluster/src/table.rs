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

/// A Table of `items`.
pub fn table(resource: &ResourceType, items: &[Value], resource_version: u64) -> Value {
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
                cells.push(json_path(item, &column.json_path));
            }
            if !has_age {
                cells.push(item.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null));
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
