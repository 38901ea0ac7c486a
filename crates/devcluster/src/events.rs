//! Events are one resource in two APIs: `events.k8s.io/v1` (what jobtide, like KEDA, writes) and
//! `core/v1` (what `kubectl describe` reads). As in the real server, both are views of the same
//! stored objects; the store keeps the `events.k8s.io/v1` form and this module converts.

use serde_json::{Map, Value, json};

fn moved(from: &Map<String, Value>, to: &mut Map<String, Value>, pairs: &[(&str, &str)]) {
    for (source, target) in pairs {
        if let Some(value) = from.get(*source).filter(|v| !v.is_null()) {
            to.insert((*target).to_owned(), value.clone());
        }
    }
}

/// `events.k8s.io/v1` → `core/v1`.
pub fn to_core(event: Value) -> Value {
    let Value::Object(from) = event else {
        return event;
    };
    let mut to = Map::new();
    to.insert("apiVersion".into(), json!("v1"));
    to.insert("kind".into(), json!("Event"));
    moved(
        &from,
        &mut to,
        &[
            ("metadata", "metadata"),
            ("regarding", "involvedObject"),
            ("related", "related"),
            ("note", "message"),
            ("reason", "reason"),
            ("type", "type"),
            ("action", "action"),
            ("eventTime", "eventTime"),
            ("reportingController", "reportingComponent"),
            ("reportingInstance", "reportingInstance"),
            ("deprecatedFirstTimestamp", "firstTimestamp"),
            ("deprecatedLastTimestamp", "lastTimestamp"),
            ("deprecatedCount", "count"),
            ("deprecatedSource", "source"),
            ("series", "series"),
        ],
    );
    if !to.contains_key("source")
        && let Some(controller) = from.get("reportingController")
    {
        to.insert("source".into(), json!({"component": controller}));
    }
    if !to.contains_key("count")
        && let Some(count) = from.get("series").and_then(|s| s.get("count"))
    {
        to.insert("count".into(), count.clone());
    }
    to.entry("involvedObject").or_insert_with(|| json!({}));
    Value::Object(to)
}

/// `core/v1` → `events.k8s.io/v1`.
pub fn from_core(event: Value) -> Value {
    let Value::Object(from) = event else {
        return event;
    };
    let mut to = Map::new();
    to.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    to.insert("kind".into(), json!("Event"));
    moved(
        &from,
        &mut to,
        &[
            ("metadata", "metadata"),
            ("involvedObject", "regarding"),
            ("related", "related"),
            ("message", "note"),
            ("reason", "reason"),
            ("type", "type"),
            ("action", "action"),
            ("eventTime", "eventTime"),
            ("reportingComponent", "reportingController"),
            ("reportingInstance", "reportingInstance"),
            ("firstTimestamp", "deprecatedFirstTimestamp"),
            ("lastTimestamp", "deprecatedLastTimestamp"),
            ("count", "deprecatedCount"),
            ("source", "deprecatedSource"),
            ("series", "series"),
        ],
    );
    Value::Object(to)
}

/// Field-selector paths events support besides `metadata.*`.
pub fn is_event_field(kind_group: &str, field: &str) -> bool {
    match kind_group {
        "" => {
            field.starts_with("involvedObject.")
                || matches!(field, "reason" | "type" | "reportingComponent" | "source")
        }
        _ => {
            field.starts_with("regarding.")
                || matches!(field, "reason" | "type" | "reportingController")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_what_kubectl_describe_reads() {
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "ScaledJob", "name": "sj", "namespace": "default", "uid": "u"},
            "note": "Created 1 jobs", "reason": "KEDAJobsCreated", "type": "Normal", "action": "Created 1 jobs",
            "eventTime": "2026-11-28T08:00:00.000000Z", "reportingController": "scale-handler", "reportingInstance": "jobtide"});
        let core = to_core(event.clone());
        assert_eq!(core["involvedObject"]["name"], "sj");
        assert_eq!(core["message"], "Created 1 jobs");
        assert_eq!(core["source"]["component"], "scale-handler");
        let back = from_core(core);
        assert_eq!(back["regarding"], event["regarding"]);
        assert_eq!(back["note"], event["note"]);
    }
}
