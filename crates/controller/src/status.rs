//! A ScaledJob's status as the reconcile reads and writes it: conditions between the API's
//! shape and `jobtide-core`'s, and one merge patch per reconcile, sent only when it would change
//! something (KEDA: "the patch is skipped if nothing changed"). An idle, healthy ScaledJob costs
//! no status write; an active one writes `lastActiveTime` once the stored value is
//! `Config::last_active_time_refresh` old (KEDA: every active poll; D19).

use jobtide_api::ScaledJob;
use jobtide_api::scaledjob::Condition as ApiCondition;
use jobtide_core::status::{Condition, ConditionStatus, Conditions};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// The conditions as stored; `None` unless all four of KEDA's types are there.
pub(crate) fn read_conditions(scaled_job: &ScaledJob) -> Option<Conditions> {
    let list = scaled_job.status.as_ref()?.conditions.as_ref()?;
    let find = |type_: &str| {
        list.iter().find(|c| c.type_ == type_).map(|c| Condition {
            status: ConditionStatus::parse(&c.status),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        })
    };
    Some(Conditions {
        ready: find("Ready")?,
        active: find("Active")?,
        fallback: find("Fallback")?,
        paused: find("Paused")?,
        crash_loop_backoff: find(jobtide_core::status::CRASH_LOOP_BACKOFF),
        capacity: find(jobtide_core::capacity::CAPACITY_AVAILABLE),
    })
}

/// The conditions in the API's shape.
/// Whether an active poll at `now` writes `lastActiveTime` (D19): the stored value is read from
/// `scaled_job` and compared with the operator's refresh period.
pub(crate) fn last_active_due(
    scaled_job: &ScaledJob,
    now: std::time::SystemTime,
    refresh: std::time::Duration,
) -> bool {
    let stored = scaled_job
        .status
        .as_ref()
        .and_then(|s| s.last_active_time.as_ref())
        .map(|t| std::time::SystemTime::from(t.0));
    jobtide_core::status::last_active_due(stored, now, refresh)
}

pub(crate) fn write_conditions(conditions: &Conditions) -> Vec<ApiCondition> {
    conditions
        .by_type()
        .iter()
        .map(|(type_, c)| ApiCondition {
            type_: (*type_).into(),
            status: c.status.as_str().into(),
            reason: Some(c.reason.clone()).filter(|r| !r.is_empty()),
            message: Some(c.message.clone()).filter(|m| !m.is_empty()),
        })
        .collect()
}

/// Distinct non-empty values in order, joined with `,` (KEDA's `triggersTypes`).
pub(crate) fn joined_distinct<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut seen = Vec::new();
    for value in values {
        if !value.is_empty() && !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen.join(",")
}

/// Whether applying the JSON merge patch `patch` (RFC 7386) to `current` changes it.
pub(crate) fn changes(current: &Value, patch: &Value) -> bool {
    match patch {
        Value::Object(fields) => fields.iter().any(|(key, value)| {
            let now = current.get(key);
            match value {
                Value::Null => now.is_some_and(|v| !v.is_null()),
                Value::Object(_) => changes(now.unwrap_or(&Value::Null), value),
                other => now != Some(other),
            }
        }),
        other => current != other,
    }
}

/// Sends `status` as a merge patch of the status subresource unless it changes nothing; the
/// `resourceVersion` the API server answered with when it was sent, `None` when it wasn't.
pub(crate) async fn patch_if_changed(
    api: &Api<ScaledJob>,
    scaled_job: &ScaledJob,
    status: Value,
) -> Result<Option<String>, kube::Error> {
    let current = serde_json::to_value(&scaled_job.status).unwrap_or(Value::Null);
    if !changes(&current, &status) {
        return Ok(None);
    }
    let name = scaled_job.metadata.name.as_deref().unwrap_or_default();
    let written = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    Ok(Some(written.metadata.resource_version.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_that_matches_the_status_changes_nothing() {
        let current = json!({
            "conditions": [{"type": "Ready", "status": "True"}],
            "triggersTypes": "kafka",
            "triggersActivity": {"s0": {"isActive": false}},
        });
        assert!(!changes(
            &current,
            &json!({"conditions": [{"type": "Ready", "status": "True"}], "triggersTypes": "kafka"})
        ));
        assert!(!changes(
            &current,
            &json!({"triggersActivity": {"s0": {"isActive": false}, "gone": null}})
        ));
        assert!(changes(
            &current,
            &json!({"triggersActivity": {"s0": null}})
        ));
        assert!(changes(
            &current,
            &json!({"conditions": [{"type": "Ready", "status": "False"}]})
        ));
        assert!(changes(
            &current,
            &json!({"lastActiveTime": "2026-12-01T00:00:00Z"})
        ));
        assert!(changes(&Value::Null, &json!({"triggersTypes": "kafka"})));
    }
}
