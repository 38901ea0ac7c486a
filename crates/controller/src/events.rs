//! Publishing events.k8s.io/v1 Events about ScaledJobs, with repeats folded into a series as
//! client-go and kube-runtime do: the first occurrence is created; a repeat within six minutes
//! (same reporter, object, type, reason and action) patches the first one's `series`.
//!
//! kube-runtime's `Recorder` keeps a copy of every Event it published for those six minutes; at
//! thousands of ScaledJobs that was the largest part of the operator's memory. This keeps only
//! what a repeat needs, in 24 bytes and no allocation per Event: a 64-bit digest of the repeat's
//! identity, the stamp that names the first Event, its count and when it last occurred. The
//! first Event's name is `<object name>.<stamp in hex>`, so a repeat rebuilds it from the object
//! it is about (a uid's name and namespace never change).
//!
//! A digest is not the identity itself: two of the keys a publisher holds at once (about 40,000
//! after 10,000 ScaledJobs start) share a digest with a chance of about n²/2⁶⁵ ≈ 4·10⁻¹¹. If
//! they did, the second would patch a name built from its own object: about another object, no
//! such Event, so a fresh Event is created (the 404 path); about the same object, its series
//! count would include the other reason's repeats.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Instant;

use jobtide_api::ScaledJob;
use jobtide_core::status::{Event, EventType};
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;

/// How long a published Event collects repeats, in seconds (six minutes, as client-go).
const SERIES_WINDOW_SECONDS: u32 = 360;

/// What makes two Events one series (client-go's aggregation key without the message).
#[derive(Hash)]
struct Key<'a> {
    uid: &'a str,
    controller: &'static str,
    warning: bool,
    reason: &'static str,
    action: &'a str,
}

impl Key<'_> {
    /// The key's digest (`DefaultHasher::new` hashes alike within a process).
    fn digest(&self) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// The first Event of a series.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The nanosecond stamp in its name.
    stamp: u64,
    count: i32,
    /// When it last occurred, in seconds since the publisher started.
    last: u32,
}

/// The series of the last six minutes by key digest, and when they were last swept.
#[derive(Debug)]
struct Series {
    by_key: HashMap<u64, Seen>,
    last_sweep: u32,
}

/// Publishes events for one operator instance.
pub struct Publisher {
    client: Client,
    instance: String,
    /// When the publisher started (the series' clock).
    started: Instant,
    series: Mutex<Series>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Series {
    /// Records an occurrence at `now` (seconds since the start) of the series `key`: the
    /// stamp and new count of its first Event if one was published within the window.
    fn repeat(&mut self, key: u64, now: u32) -> Option<(u64, i32)> {
        let window = SERIES_WINDOW_SECONDS;
        // Forget expired entries now and then (not on every call: thousands of entries).
        if now.saturating_sub(self.last_sweep) > 30 {
            self.by_key
                .retain(|_, seen| now.saturating_sub(seen.last) < window);
            // A map never gives its table back by itself: the start of 10,000 ScaledJobs
            // publishes 40,000 Events.
            if self.by_key.capacity() > 4 * self.by_key.len().max(64) {
                self.by_key.shrink_to_fit();
            }
            self.last_sweep = now;
        }
        let seen = self.by_key.get_mut(&key)?;
        if now.saturating_sub(seen.last) >= window {
            return None;
        }
        seen.count += 1;
        seen.last = now;
        Some((seen.stamp, seen.count))
    }

    /// A first Event, named with `stamp`, was published at `now`.
    fn first(&mut self, key: u64, stamp: u64, now: u32) {
        self.by_key.insert(
            key,
            Seen {
                stamp,
                count: 1,
                last: now,
            },
        );
    }
}

/// An Event's name: its object's name and a nanosecond stamp, in hex.
fn event_name(object: &str, stamp: u64) -> String {
    format!("{object}.{stamp:x}")
}

impl Publisher {
    /// A publisher whose events carry `instance` as `reportingInstance`.
    pub fn new(client: Client, instance: &str) -> Self {
        Self {
            client,
            instance: instance.into(),
            started: Instant::now(),
            series: Mutex::new(Series {
                by_key: HashMap::new(),
                last_sweep: 0,
            }),
        }
    }

    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes `event` about `scaled_job`.
    pub async fn publish(&self, scaled_job: &ScaledJob, event: &Event) -> Result<(), kube::Error> {
        let reference = scaled_job.object_ref(&());
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let object = reference.name.clone().unwrap_or_default();
        let action: String = event.action.chars().take(128).collect();
        let key = Key {
            uid: reference.uid.as_deref().unwrap_or_default(),
            controller: event.reporter.name(),
            warning: event.type_ == EventType::Warning,
            reason: event.reason,
            action: &action,
        }
        .digest();
        let now = u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX);
        let repeat = self.series().repeat(key, now);
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let stamp = MicroTime(jiff::Timestamp::now());
        if let Some((first, count)) = repeat {
            let series = EventSeries {
                count,
                last_observed_time: stamp.clone(),
            };
            let patched = events
                .patch(
                    &event_name(&object, first),
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
        let nanos = u64::try_from(stamp.0.as_nanosecond()).unwrap_or_default();
        let name = event_name(&object, nanos);
        let published = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
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
        self.series().first(key, nanos, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str, reason: &'static str, action: &str) -> u64 {
        Key {
            uid,
            controller: "keda-operator",
            warning: false,
            reason,
            action,
        }
        .digest()
    }

    #[test]
    fn a_repeat_within_the_window_counts_on_and_names_the_first_event() {
        let mut series = Series {
            by_key: HashMap::new(),
            last_sweep: 0,
        };
        let ready = key("u1", "ScaledJobReady", "Reconcile");
        assert_eq!(series.repeat(ready, 0), None, "nothing published yet");
        series.first(ready, 0xabc, 0);
        assert_eq!(series.repeat(ready, 10), Some((0xabc, 2)));
        assert_eq!(
            series.repeat(ready, 369),
            Some((0xabc, 3)),
            "6 min after the last"
        );
        assert_eq!(series.repeat(ready, 729), None, "more than 6 minutes later");
        for other in [
            key("u2", "ScaledJobReady", "Reconcile"),
            key("u1", "ScaledJobCheckFailed", "Reconcile"),
            key("u1", "ScaledJobReady", "Poll"),
        ] {
            assert_ne!(other, ready);
            assert_eq!(series.repeat(other, 729), None);
        }
        assert_eq!(event_name("sj", 0xabc), "sj.abc");
    }

    #[test]
    fn expired_series_are_forgotten_and_their_table_given_back() {
        let mut series = Series {
            by_key: HashMap::new(),
            last_sweep: 0,
        };
        for i in 0..40_000 {
            series.first(key(&format!("u{i}"), "ScaledJobReady", "Reconcile"), i, 0);
        }
        let full = series.by_key.capacity();
        series.first(key("late", "ScaledJobReady", "Reconcile"), 1, 400);
        assert_eq!(
            series.repeat(key("late", "ScaledJobReady", "Reconcile"), 401),
            Some((1, 2))
        );
        assert_eq!(
            series.by_key.len(),
            1,
            "the sweep kept only the live series"
        );
        assert!(
            series.by_key.capacity() < full / 100,
            "{}",
            series.by_key.capacity()
        );
        assert_eq!(size_of::<Seen>(), 16);
    }
}
