//! What the cluster says about capacity outside the ScaledJob's own Jobs and pods, kept from
//! watches so that a poll reads it without an API call:
//!
//! - [`AutoscalerEvents`]: the newest Cluster Autoscaler (`TriggeredScaleUp`,
//!   `NotTriggerScaleUp`) or Karpenter (`Nominated`) event per pod. One watch per reason, each
//!   field-selected on `reason=` by the API server, so only these events travel (not the
//!   `Scheduled`/`Pulled`/`Started` stream of every pod). Cost: three long-lived watch
//!   connections, and one map entry per pod the autoscaler spoke about (Kubernetes expires
//!   events after an hour, and each expiry is a watch delete that removes its entry).
//! - [`QuotaChanges`]: a change counter per namespace, bumped by every ResourceQuota change
//!   (a quota's `status.used` falls when Jobs go, or its `spec.hard` is raised): a ScaledJob
//!   whose Job a quota refused tries again when its namespace's counter moved.

use std::collections::HashMap;
use std::sync::Mutex;

use jobtide_core::capacity::AutoscalerVerdict;
use k8s_openapi::api::core::v1::{Event, ResourceQuota};
use kube::runtime::watcher;

/// The event reasons read, and what each means.
pub const REASONS: [&str; 3] = ["TriggeredScaleUp", "NotTriggerScaleUp", "Nominated"];

/// Entries kept at most (far above what an hour of autoscaler events holds; beyond it the
/// oldest hour is dropped).
const MAX_ENTRIES: usize = 100_000;

type PodKey = (String, String);

/// The newest autoscaler event per pod.
#[derive(Debug, Default)]
pub struct AutoscalerEvents {
    by_pod: Mutex<HashMap<PodKey, (i64, String, AutoscalerVerdict)>>,
}

/// The time an event last happened (seconds), from whichever field its writer set.
fn when(event: &Event) -> i64 {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0.as_second())
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0.as_second()))
        .or_else(|| event.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
        .unwrap_or(0)
}

fn verdict(event: &Event) -> Option<(PodKey, AutoscalerVerdict)> {
    let object = &event.involved_object;
    if object.kind.as_deref() != Some("Pod") {
        return None;
    }
    let key = (
        object
            .namespace
            .clone()
            .or_else(|| event.metadata.namespace.clone())?,
        object.name.clone()?,
    );
    let message = event.message.clone().unwrap_or_default();
    let verdict = match event.reason.as_deref()? {
        "TriggeredScaleUp" => AutoscalerVerdict::TriggeredScaleUp(message),
        "NotTriggerScaleUp" => AutoscalerVerdict::NotTriggerScaleUp(message),
        "Nominated" => AutoscalerVerdict::Nominated(message),
        _ => return None,
    };
    Some((key, verdict))
}

impl AutoscalerEvents {
    /// Applies one watch event of one of the [`REASONS`] watches.
    pub fn apply(&self, change: &watcher::Event<Event>) {
        let Ok(mut by_pod) = self.by_pod.lock() else {
            return;
        };
        match change {
            watcher::Event::Apply(event) | watcher::Event::InitApply(event) => {
                let Some((key, verdict)) = verdict(event) else {
                    return;
                };
                let at = when(event);
                let uid = event.metadata.uid.clone().unwrap_or_default();
                if by_pod.get(&key).is_none_or(|(newest, _, _)| at >= *newest) {
                    if by_pod.len() >= MAX_ENTRIES {
                        let newest = by_pod.values().map(|(t, _, _)| *t).max().unwrap_or(at);
                        by_pod.retain(|_, (t, _, _)| *t > newest - 3600);
                    }
                    by_pod.insert(key, (at, uid, verdict));
                }
            }
            watcher::Event::Delete(event) => {
                if let Some((key, _)) = verdict(event) {
                    let uid = event.metadata.uid.clone().unwrap_or_default();
                    if by_pod.get(&key).is_some_and(|(_, kept, _)| *kept == uid) {
                        by_pod.remove(&key);
                    }
                }
            }
            // A re-list re-applies every event; older ones never replace newer ones.
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    /// What the autoscaler last said about the pod `name` in `namespace`.
    pub fn verdict(&self, namespace: &str, name: &str) -> Option<AutoscalerVerdict> {
        let by_pod = self.by_pod.lock().ok()?;
        by_pod
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|(_, _, verdict)| verdict.clone())
    }
}

/// ResourceQuota changes per namespace.
#[derive(Debug, Default)]
pub struct QuotaChanges {
    counts: Mutex<HashMap<String, u64>>,
}

impl QuotaChanges {
    /// Counts one watch event.
    pub fn apply(&self, change: &watcher::Event<ResourceQuota>) {
        let namespace = match change {
            watcher::Event::Apply(quota)
            | watcher::Event::InitApply(quota)
            | watcher::Event::Delete(quota) => quota.metadata.namespace.clone(),
            watcher::Event::Init | watcher::Event::InitDone => None,
        };
        if let (Some(namespace), Ok(mut counts)) = (namespace, self.counts.lock()) {
            *counts.entry(namespace).or_default() += 1;
        }
    }

    /// The namespace's counter now.
    pub fn of(&self, namespace: &str) -> u64 {
        self.counts
            .lock()
            .ok()
            .and_then(|counts| counts.get(namespace).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(uid: &str, reason: &str, at: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "involvedObject": {"kind": "Pod", "namespace": "ns", "name": "p"},
            "reason": reason, "message": format!("{reason} at {at}"), "lastTimestamp": at,
        }))
        .expect("event")
    }

    #[test]
    fn the_newest_verdict_per_pod_wins_and_its_expiry_removes_it() {
        let events = AutoscalerEvents::default();
        let up = event("a", "TriggeredScaleUp", "2026-12-02T10:00:10Z");
        events.apply(&watcher::Event::Apply(up.clone()));
        events.apply(&watcher::Event::InitApply(event(
            "b",
            "NotTriggerScaleUp",
            "2026-12-02T10:00:00Z",
        )));
        assert!(matches!(
            events.verdict("ns", "p"),
            Some(AutoscalerVerdict::TriggeredScaleUp(_))
        ));
        events.apply(&watcher::Event::Delete(event(
            "b",
            "NotTriggerScaleUp",
            "2026-12-02T10:00:00Z",
        )));
        assert!(
            events.verdict("ns", "p").is_some(),
            "an older event's expiry"
        );
        events.apply(&watcher::Event::Delete(up));
        assert_eq!(events.verdict("ns", "p"), None);
    }

    #[test]
    fn quota_changes_count_per_namespace() {
        let quotas = QuotaChanges::default();
        let quota: ResourceQuota =
            serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "ns"}}))
                .expect("quota");
        quotas.apply(&watcher::Event::Apply(quota.clone()));
        quotas.apply(&watcher::Event::Delete(quota));
        assert_eq!(quotas.of("ns"), 2);
        assert_eq!(quotas.of("other"), 0);
    }
}
