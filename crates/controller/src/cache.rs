//! Jobs and Pods indexed by their ScaledJob, kept from one watch each (no list per poll), and
//! what this operator did that the watch hasn't shown yet (KEDA #2488).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jobtide_api::job::SCALED_JOB_NAME_LABEL;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::kept::Kept;

/// A ScaledJob as (namespace, name).
pub type OwnerKey = (String, String);

/// Objects labelled `scaledjob.keda.sh/name`, indexed by their ScaledJob, kept in their small
/// form ([`crate::kept`]: only what the polls read).
pub struct OwnedCache<K: Kept> {
    state: RwLock<State<K::Slim>>,
    ready: watch::Sender<bool>,
}

struct State<S> {
    /// Boxed: a map keeps at least four slots, and a kept object is 570–760 bytes.
    by_owner: HashMap<OwnerKey, HashMap<String, Box<S>>>,
    /// (namespace, name) → owner, to move an object whose label changed.
    owner_of: HashMap<(String, String), OwnerKey>,
    /// Objects of a re-list in progress; swapped in at its end.
    relist: Option<Vec<Box<S>>>,
}

impl<K: Kept> std::fmt::Debug for OwnedCache<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedCache").finish_non_exhaustive()
    }
}

impl<K: Kept> Default for OwnedCache<K> {
    fn default() -> Self {
        Self {
            state: RwLock::new(State {
                by_owner: HashMap::new(),
                owner_of: HashMap::new(),
                relist: None,
            }),
            ready: watch::Sender::new(false),
        }
    }
}

fn identity(meta: &ObjectMeta) -> Option<((String, String), OwnerKey)> {
    let namespace = meta.namespace.clone()?;
    let name = meta.name.clone()?;
    let owner = meta.labels.as_ref()?.get(SCALED_JOB_NAME_LABEL)?.clone();
    Some(((namespace.clone(), name), (namespace, owner)))
}

impl<S> State<S> {
    fn remove(&mut self, key: &(String, String)) {
        if let Some(owner) = self.owner_of.remove(key)
            && let Some(objects) = self.by_owner.get_mut(&owner)
        {
            objects.remove(&key.1);
            if objects.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    fn insert(&mut self, object: Box<S>, meta: fn(&S) -> &ObjectMeta) {
        let Some((key, owner)) = identity(meta(&object)) else {
            return;
        };
        self.remove(&key);
        self.by_owner
            .entry(owner.clone())
            .or_default()
            .insert(key.1.clone(), object);
        self.owner_of.insert(key, owner);
    }
}

impl<K: Kept> OwnedCache<K> {
    /// Applies one watch event (a re-list replaces the whole state when it ends).
    pub fn apply(&self, event: &watcher::Event<K>) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        match event {
            watcher::Event::Apply(object) => state.insert(Box::new(K::keep(object)), K::metadata),
            watcher::Event::Delete(object) => {
                if let Some((key, _)) = identity(object.meta()) {
                    state.remove(&key);
                }
            }
            watcher::Event::Init => state.relist = Some(Vec::new()),
            watcher::Event::InitApply(object) => {
                let object = Box::new(K::keep(object));
                match &mut state.relist {
                    Some(relist) => relist.push(object),
                    None => state.insert(object, K::metadata),
                }
            }
            watcher::Event::InitDone => {
                let relist = state.relist.take().unwrap_or_default();
                state.by_owner.clear();
                state.owner_of.clear();
                for object in relist {
                    state.insert(object, K::metadata);
                }
                drop(state);
                self.ready.send_replace(true);
            }
        }
    }

    /// The object `name` in `namespace`, as kept.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let state = self.state.read().ok()?;
        let owner = state
            .owner_of
            .get(&(namespace.to_owned(), name.to_owned()))?;
        state
            .by_owner
            .get(owner)?
            .get(name)
            .map(|kept| Arc::new(K::restore(kept)))
    }

    /// The objects of one ScaledJob, as kept (a poll reads a ScaledJob's few objects; the
    /// restored copies live as long as it does).
    pub fn of(&self, owner: &OwnerKey) -> Vec<Arc<K>> {
        self.state
            .read()
            .ok()
            .and_then(|state| {
                state
                    .by_owner
                    .get(owner)
                    .map(|m| m.values().map(|kept| Arc::new(K::restore(kept))).collect())
            })
            .unwrap_or_default()
    }

    /// Marks the cache as not synced until the next full list ends (a new watch starts).
    pub fn reset(&self) {
        self.ready.send_replace(false);
    }

    /// Whether the first full list has arrived.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits for the first full list.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

/// How long an expectation waits for the watch before it is dropped (the object may have been
/// created and removed by someone else in between).
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_mins(2);

/// Jobs this operator created or deleted that the Job cache may not show yet, per ScaledJob.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<OwnerKey, Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    created: HashMap<String, Instant>,
    deleted: HashMap<String, Instant>,
}

/// What to add to and take from the cache's Jobs of one ScaledJob.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adjustment {
    /// Created Jobs the cache doesn't show yet: count them as just created.
    pub unseen_created: Vec<String>,
    /// Deleted Jobs the cache still shows: don't count them.
    pub still_listed_deleted: Vec<String>,
}

impl Expectations {
    /// Records a Job this operator created.
    pub fn created(&self, owner: &OwnerKey, job: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            let pending = inner.entry(owner.clone()).or_default();
            pending.created.insert(job.to_owned(), Instant::now());
        }
    }

    /// Records a Job this operator deleted.
    pub fn deleted(&self, owner: &OwnerKey, job: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            let pending = inner.entry(owner.clone()).or_default();
            pending.deleted.insert(job.to_owned(), Instant::now());
        }
    }

    /// Reconciles the expectations of `owner` with the Job names the cache shows now: those the
    /// cache caught up with (or that timed out) are forgotten; the rest adjust the count.
    pub fn adjust(&self, owner: &OwnerKey, listed: &[&str], now: Instant) -> Adjustment {
        let Ok(mut inner) = self.inner.lock() else {
            return Adjustment::default();
        };
        let Some(pending) = inner.get_mut(owner) else {
            return Adjustment::default();
        };
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < EXPECTATION_TIMEOUT;
        pending
            .created
            .retain(|name, at| !listed.contains(&name.as_str()) && fresh(at));
        pending
            .deleted
            .retain(|name, at| listed.contains(&name.as_str()) && fresh(at));
        let mut adjustment = Adjustment {
            unseen_created: pending.created.keys().cloned().collect(),
            still_listed_deleted: pending.deleted.keys().cloned().collect(),
        };
        adjustment.unseen_created.sort();
        adjustment.still_listed_deleted.sort();
        if pending.created.is_empty() && pending.deleted.is_empty() {
            inner.remove(owner);
        }
        adjustment
    }

    /// Forgets a ScaledJob.
    pub fn forget(&self, owner: &OwnerKey) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::ObjectMeta;

    use super::*;

    fn job(name: &str, owner: &str) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([(SCALED_JOB_NAME_LABEL.to_owned(), owner.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Job::default()
        }
    }

    fn names(cache: &OwnedCache<Job>, owner: &str) -> Vec<String> {
        let mut names: Vec<_> = cache
            .of(&("ns".into(), owner.into()))
            .iter()
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn indexes_by_scaled_job_and_follows_label_changes_and_deletes() {
        let cache = OwnedCache::default();
        cache.apply(&watcher::Event::Apply(job("a-1", "a")));
        cache.apply(&watcher::Event::Apply(job("a-2", "a")));
        cache.apply(&watcher::Event::Apply(job("b-1", "b")));
        cache.apply(&watcher::Event::Apply(job("unlabelled", "x")));
        assert_eq!(names(&cache, "a"), ["a-1", "a-2"]);
        cache.apply(&watcher::Event::Apply(job("a-2", "b")));
        assert_eq!(names(&cache, "a"), ["a-1"]);
        assert_eq!(names(&cache, "b"), ["a-2", "b-1"]);
        cache.apply(&watcher::Event::Delete(job("a-1", "a")));
        assert!(names(&cache, "a").is_empty());
        assert!(!cache.is_ready());
    }

    #[test]
    fn a_relist_replaces_the_state_when_it_ends() {
        let cache = OwnedCache::default();
        cache.apply(&watcher::Event::Apply(job("gone", "a")));
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(job("kept", "a")));
        // Until the re-list ends, the old state is served.
        assert_eq!(names(&cache, "a"), ["gone"]);
        cache.apply(&watcher::Event::InitDone);
        assert_eq!(names(&cache, "a"), ["kept"]);
        assert!(cache.is_ready());
    }

    #[test]
    fn expectations_count_created_jobs_until_the_cache_shows_them() {
        let expectations = Expectations::default();
        let owner: OwnerKey = ("ns".into(), "a".into());
        let t0 = Instant::now();
        expectations.created(&owner, "a-1");
        expectations.deleted(&owner, "a-0");
        let adjustment = expectations.adjust(&owner, &["a-0"], t0);
        assert_eq!(adjustment.unseen_created, ["a-1"]);
        assert_eq!(adjustment.still_listed_deleted, ["a-0"]);
        // The cache caught up with both.
        let adjustment = expectations.adjust(&owner, &["a-1"], t0);
        assert_eq!(adjustment, Adjustment::default());
        // An expectation the cache never meets times out.
        expectations.created(&owner, "a-2");
        let later = Instant::now() + EXPECTATION_TIMEOUT;
        assert_eq!(
            expectations.adjust(&owner, &[], later),
            Adjustment::default()
        );
    }
}
