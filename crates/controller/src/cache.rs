//! Jobs and Pods indexed by their ScaledJob, kept from one watch each (no list per poll), and
//! what this operator did that the watch hasn't shown yet (KEDA #2488).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jobtide_api::job::SCALED_JOB_NAME_LABEL;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::kept::{Kept, Packed};
use crate::owned_index::{Index, joined, split};

/// A ScaledJob as (namespace, name).
pub type OwnerKey = (String, String);

/// Objects labelled `scaledjob.keda.sh/name`, indexed by their ScaledJob, kept in their small
/// form ([`crate::kept`]: only what the polls read, as JSON; [`crate::owned_index`]: the index).
pub struct OwnedCache<K: Kept> {
    state: RwLock<State>,
    ready: watch::Sender<bool>,
    kind: std::marker::PhantomData<fn() -> K>,
}

#[derive(Default)]
struct State {
    index: Index,
    /// Objects of a re-list in progress; swapped in at its end.
    relist: Option<Vec<(Identity, Packed)>>,
}

impl<K: Kept> std::fmt::Debug for OwnedCache<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedCache").finish_non_exhaustive()
    }
}

impl<K: Kept> Default for OwnedCache<K> {
    fn default() -> Self {
        Self {
            state: RwLock::new(State::default()),
            ready: watch::Sender::new(false),
            kind: std::marker::PhantomData,
        }
    }
}

/// An object's key `"namespace/name"` and its ScaledJob's `"namespace/scaledjob"` (`None`: not
/// labelled with one).
struct Identity {
    key: String,
    owner: Option<String>,
}

fn identity(meta: &ObjectMeta) -> Option<Identity> {
    let namespace = meta.namespace.as_deref()?;
    let owner = meta
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SCALED_JOB_NAME_LABEL))
        .map(|owner| joined(namespace, owner));
    Some(Identity {
        key: joined(namespace, meta.name.as_deref()?),
        owner,
    })
}

/// An object's identity and kept form (`None`: not labelled with a ScaledJob). One that can't
/// be written as JSON (a k8s-openapi object always can) is kept empty: it reads back as its name
/// and label only ([`restored`]).
fn kept<K: Kept>(object: &K) -> Option<(Identity, Packed)> {
    let identity = identity(object.meta())?;
    identity.owner.as_ref()?;
    let packed = K::keep(object).unwrap_or_else(|error| {
        tracing::error!(kind = %K::kind(&()), key = %identity.key, %error,
            "could not keep a cached object");
        Packed::default()
    });
    Some((identity, packed))
}

impl State {
    fn insert(&mut self, identity: &Identity, packed: Packed) {
        if let Some(owner) = &identity.owner {
            self.index.insert(&identity.key, owner, packed);
        }
    }
}

/// A kept object read back. One that doesn't read (it can't: it was written from one) is logged
/// and served with its name and label only, the rest `None`: a Job without status counts as
/// running, so no Job is created in its place.
fn restored<K: Kept>(key: &str, owner: &str, packed: &[u8]) -> Arc<K> {
    let object = K::restore(packed).unwrap_or_else(|error| {
        tracing::error!(kind = %K::kind(&()), key, %error, "a cached object did not read back");
        let (namespace, name) = split(key);
        let mut object = K::default();
        let meta = object.meta_mut();
        meta.name = Some(name.to_owned());
        meta.namespace = Some(namespace.to_owned());
        meta.labels = Some([(SCALED_JOB_NAME_LABEL.to_owned(), split(owner).1.to_owned())].into());
        object
    });
    Arc::new(object)
}

impl<K: Kept> OwnedCache<K> {
    /// Applies one watch event (a re-list replaces the whole state when it ends).
    pub fn apply(&self, event: &watcher::Event<K>) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        match event {
            watcher::Event::Apply(object) => match kept(object) {
                Some((identity, packed)) => state.insert(&identity, packed),
                // No longer labelled: no longer this cache's (the watch selects by the label, so
                // it sends a delete instead; this is in case it doesn't).
                None => {
                    if let Some(identity) = identity(object.meta()) {
                        state.index.remove(&identity.key);
                    }
                }
            },
            watcher::Event::Delete(object) => {
                if let Some(identity) = identity(object.meta()) {
                    state.index.remove(&identity.key);
                }
            }
            watcher::Event::Init => state.relist = Some(Vec::new()),
            watcher::Event::InitApply(object) => {
                if let Some((identity, packed)) = kept(object) {
                    match &mut state.relist {
                        Some(relist) => relist.push((identity, packed)),
                        None => state.insert(&identity, packed),
                    }
                }
            }
            watcher::Event::InitDone => {
                let relist = state.relist.take().unwrap_or_default();
                state.index = Index::default();
                for (identity, packed) in relist {
                    state.insert(&identity, packed);
                }
                drop(state);
                self.ready.send_replace(true);
            }
        }
    }

    /// The object `name` in `namespace`, as kept.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let state = self.state.read().ok()?;
        let key = joined(namespace, name);
        let (owner, packed) = state.index.get(&key)?;
        Some(restored(&key, owner, packed))
    }

    /// The objects of one ScaledJob, as kept (a poll reads a ScaledJob's few objects; the
    /// restored copies live as long as it does).
    pub fn of(&self, owner: &OwnerKey) -> Vec<Arc<K>> {
        let Ok(state) = self.state.read() else {
            return Vec::new();
        };
        let owner = joined(&owner.0, &owner.1);
        state
            .index
            .of(&owner)
            .map(|(key, packed)| restored(key, &owner, packed))
            .collect()
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
    fn a_delete_or_an_unlabelled_update_removes_the_object_whatever_its_last_label() {
        let cache = OwnedCache::default();
        cache.apply(&watcher::Event::Apply(job("a-1", "a")));
        cache.apply(&watcher::Event::Apply(job("a-2", "a")));
        let mut unlabelled = job("a-1", "a");
        unlabelled.metadata.labels = None;
        cache.apply(&watcher::Event::Delete(unlabelled.clone()));
        assert_eq!(names(&cache, "a"), ["a-2"]);
        assert!(cache.get("ns", "a-1").is_none());
        unlabelled.metadata.name = Some("a-2".into());
        cache.apply(&watcher::Event::Apply(unlabelled));
        assert!(names(&cache, "a").is_empty());
    }

    #[test]
    fn get_serves_one_object_by_namespace_and_name() {
        let cache = OwnedCache::default();
        cache.apply(&watcher::Event::Apply(job("a-1", "a")));
        assert_eq!(cache.get("ns", "a-1").as_deref(), Some(&job("a-1", "a")));
        assert!(cache.get("other", "a-1").is_none());
    }

    #[test]
    fn a_relist_replaces_the_state_when_it_ends() {
        let cache = OwnedCache::default();
        cache.apply(&watcher::Event::Apply(job("gone", "a")));
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(job("kept", "a")));
        cache.apply(&watcher::Event::InitApply(job("moved", "b")));
        // Until the re-list ends, the old state is served.
        assert_eq!(names(&cache, "a"), ["gone"]);
        cache.apply(&watcher::Event::InitDone);
        assert_eq!(names(&cache, "a"), ["kept"]);
        assert_eq!(names(&cache, "b"), ["moved"]);
        assert!(cache.get("ns", "gone").is_none());
        assert!(cache.is_ready());
    }

    #[test]
    fn an_object_that_does_not_read_back_is_served_as_a_job_without_status() {
        let served: Arc<Job> = restored("ns/a-1", "ns/a", b"{not json");
        assert_eq!(*served, job("a-1", "a"));
        let kept: Arc<Job> = restored("ns/a-1", "ns/a", &Job::keep(&job("a-1", "a")).unwrap());
        assert_eq!(*kept, job("a-1", "a"));
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
