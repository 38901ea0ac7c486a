//! Publishing events.k8s.io/v1 Events about ScaledJobs, with repeats folded into a series as
//! client-go and kube-runtime do: the first occurrence is created; a repeat within six minutes
//! (same reporter, object, type, reason and action) patches the first one's `series`.
//!
//! kube-runtime's `Recorder` keeps a copy of every Event it published for those six minutes; at
//! thousands of ScaledJobs that was the largest part of the operator's memory. This keeps only
//! what a repeat needs: the Event's name and its count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobtide_api::ScaledJob;
use jobtide_core::status::{Event, EventType};
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;

/// How long a published Event collects repeats.
const SERIES_WINDOW: Duration = Duration::from_mins(6);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    controller: &'static str,
    warning: bool,
    reason: &'static str,
    action: String,
}

#[derive(Debug)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// Publishes events for one operator instance.
pub struct Publisher {
    client: Client,
    instance: String,
    seen: Mutex<(HashMap<Key, Seen>, Instant)>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher whose events carry `instance` as `reportingInstance`.
    pub fn new(client: Client, instance: &str) -> Self {
        Self {
            client,
            instance: instance.into(),
            seen: Mutex::new((HashMap::new(), Instant::now())),
        }
    }

    /// Publishes `event` about `scaled_job`.
    pub async fn publish(&self, scaled_job: &ScaledJob, event: &Event) -> Result<(), kube::Error> {
        let reference = scaled_job.object_ref(&());
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let action: String = event.action.chars().take(128).collect();
        let key = Key {
            uid: reference.uid.clone().unwrap_or_default(),
            controller: event.reporter.name(),
            warning: event.type_ == EventType::Warning,
            reason: event.reason,
            action: action.clone(),
        };
        let now = Instant::now();
        let repeat = self.seen.lock().ok().and_then(|mut guard| {
            let (seen, last_sweep) = &mut *guard;
            // Forget expired entries now and then (not on every call: thousands of entries).
            if now.saturating_duration_since(*last_sweep) > Duration::from_secs(30) {
                seen.retain(|_, s| now.saturating_duration_since(s.last) < SERIES_WINDOW);
                // A map never gives its table back by itself: the start of 10,000 ScaledJobs
                // publishes 40,000 Events, a 10 MiB table kept for ever after.
                if seen.capacity() > 4 * seen.len().max(64) {
                    seen.shrink_to_fit();
                }
                *last_sweep = now;
            }
            let entry = seen.get_mut(&key)?;
            if now.saturating_duration_since(entry.last) >= SERIES_WINDOW {
                return None;
            }
            entry.count += 1;
            entry.last = now;
            Some((entry.namespace.clone(), entry.name.clone(), entry.count))
        });
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let stamp = MicroTime(jiff::Timestamp::now());
        if let Some((namespace, name, count)) = repeat {
            let series = EventSeries {
                count,
                last_observed_time: stamp.clone(),
            };
            let patched = Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"series": series})),
                )
                .await;
            match patched {
                Ok(_) => return Ok(()),
                // The first Event is gone (expired or deleted): start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let name = format!(
            "{}.{:x}",
            reference.name.clone().unwrap_or_default(),
            jiff::Timestamp::now().as_nanosecond()
        );
        let published = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(action),
            reason: Some(event.reason.into()),
            note: Some(event.note.clone()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            event_time: Some(stamp),
            regarding: Some(reference),
            reporting_controller: Some(event.reporter.name().into()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        };
        events.create(&PostParams::default(), &published).await?;
        if let Ok(mut guard) = self.seen.lock() {
            guard.0.insert(
                key,
                Seen {
                    namespace,
                    name,
                    count: 1,
                    last: now,
                },
            );
        }
        Ok(())
    }
}
