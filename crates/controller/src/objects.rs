//! The Secrets, ConfigMaps, TriggerAuthentications and ClusterTriggerAuthentications that trigger
//! resolution reads, without a LIST per poll.
//!
//! An object is fetched with one GET the first time a ScaledJob's resolution reads it, and kept
//! (values included: what a poll would read anyway) for as long as some ScaledJob reads it. A
//! metadata-only watch of each kind (no value crosses it) says when a kept object changed or
//! went: its value is then stale, the next resolution fetches it again, and the ScaledJobs that
//! read it are re-polled at once. An idle poll of a ScaledJob whose objects didn't change thus
//! makes no API request.
//!
//! An object's version is its `resourceVersion` for Secrets and ConfigMaps, and its
//! `generation` for the authentications: writing their `status.scaledjobs` (every ScaledJob that
//! starts does) changes no value a trigger reads, and must not re-poll every ScaledJob using them.
//!
//! # Guarantees
//! A poll never uses a value older than one the watch has shown: a value is used only while the
//! watch has shown no other version of its object since it was fetched (a watch that lags
//! behind a GET costs another GET, never a stale value).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::runtime::watcher;

use crate::cache::OwnerKey;
pub(crate) use crate::object_value::Value;

/// The kinds trigger resolution reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Secret,
    ConfigMap,
    TriggerAuthentication,
    ClusterTriggerAuthentication,
}

/// One object: its kind, namespace (empty for ClusterTriggerAuthentications) and name.
/// (`Box<str>`: 16 bytes a field where a `String` is 24, in a table of one per kept object and
/// in each ScaledJob's reads.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ObjectKey {
    pub kind: Kind,
    pub namespace: Box<str>,
    pub name: Box<str>,
}

/// What a GET found: the object at a version, or nothing (404).
pub(crate) type Fetched = Option<(Box<str>, Value)>;

/// What the watch last showed of a kept object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Watched {
    /// Nothing since the entry was made (the fetched value is the newest known).
    Unknown,
    Version(String),
    Absent,
}

struct Entry {
    watched: Watched,
    /// The last GET's answer; `None` before the first.
    fetched: Option<Fetched>,
    /// How many ScaledJobs' last resolution read this object (who they are is in
    /// [`Inner::reads`]: a list here would hold a copy of each reader's name).
    readers: u32,
}

impl Entry {
    /// The value to use, or `None` when it must be fetched (first read, or stale).
    fn current(&self) -> Option<&Fetched> {
        let fetched = self.fetched.as_ref()?;
        let fresh = match (&self.watched, fetched) {
            (Watched::Unknown, _) | (Watched::Absent, None) => true,
            (Watched::Version(seen), Some((version, _))) => **seen == **version,
            _ => false,
        };
        fresh.then_some(fetched)
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<ObjectKey, Entry>,
    /// Per ScaledJob, the objects its last resolution read (counted in `readers`).
    reads: HashMap<OwnerKey, Box<[ObjectKey]>>,
}

impl Entry {
    fn new() -> Self {
        Self {
            watched: Watched::Unknown,
            fetched: None,
            readers: 0,
        }
    }
}

/// The kept objects (see the module docs).
#[derive(Default)]
pub(crate) struct AuthObjects {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for AuthObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthObjects").finish_non_exhaustive()
    }
}

/// The result of [`AuthObjects::get`].
pub(crate) enum Lookup {
    /// The current value (`None`: the object doesn't exist).
    Current(Option<Value>),
    /// Unknown or stale: fetch it.
    Fetch,
}

impl AuthObjects {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The object's current value, if known. An object not kept yet is kept from now on (the
    /// watch's changes count from here), so a GET that follows can't miss a change.
    pub fn get(&self, key: &ObjectKey) -> Lookup {
        let mut inner = self.inner();
        let entry = inner.entries.entry(key.clone()).or_insert_with(Entry::new);
        match entry.current() {
            Some(fetched) => Lookup::Current(fetched.as_ref().map(|(_, value)| value.clone())),
            None => Lookup::Fetch,
        }
    }

    /// Stores what a GET found.
    pub fn fetched(&self, key: &ObjectKey, fetched: Fetched) {
        if let Some(entry) = self.inner().entries.get_mut(key) {
            entry.fetched = Some(fetched);
        }
    }

    /// Records the objects `owner`'s resolution read (replacing what it read before); objects
    /// no ScaledJob reads any more are dropped.
    pub fn read_by(&self, owner: &OwnerKey, mut reads: Vec<ObjectKey>) {
        reads.sort();
        reads.dedup();
        let mut inner = self.inner();
        let Inner {
            entries,
            reads: all,
        } = &mut *inner;
        let previous = all.get(owner).map(|keys| &**keys).unwrap_or_default();
        if *previous == *reads {
            return;
        }
        for key in reads.iter().filter(|key| !previous.contains(key)) {
            // Made by `get` before the read; made again if another ScaledJob's reads dropped
            // it since (no value: it is fetched), so that the count stays exact.
            entries
                .entry(key.clone())
                .or_insert_with(Entry::new)
                .readers += 1;
        }
        for key in previous.iter().filter(|key| !reads.contains(key)) {
            unread(entries, key);
        }
        if reads.is_empty() {
            all.remove(owner);
        } else if let Some(kept) = all.get_mut(owner) {
            *kept = reads.into_boxed_slice();
        } else {
            all.insert(owner.clone(), reads.into_boxed_slice());
        }
    }

    /// Forgets a deleted ScaledJob's reads.
    pub fn forget(&self, owner: &OwnerKey) {
        self.read_by(owner, Vec::new());
    }

    /// Applies one watch event of `kind` (`scope`: the namespace the watch covers, `None` for
    /// all); returns the ScaledJobs to re-poll because an object they read changed.
    /// `relisted` is the watch's own memory of the objects a re-list showed.
    pub fn apply<K: kube::Resource>(
        &self,
        kind: Kind,
        scope: Option<&str>,
        event: &watcher::Event<K>,
        relisted: &mut HashSet<ObjectKey>,
    ) -> Vec<OwnerKey> {
        let mut inner = self.inner();
        let mut stale = HashSet::new();
        let mut see = |inner: &mut Inner, object: &K, watched: Watched| {
            let key = key_of(kind, object);
            if let Some(entry) = inner.entries.get_mut(&key) {
                if see_entry(entry, watched) {
                    stale.insert(key.clone());
                }
                relisted.insert(key);
            }
        };
        match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                see(
                    &mut inner,
                    object,
                    Watched::Version(version_of(kind, object)),
                );
            }
            watcher::Event::Delete(object) => see(&mut inner, object, Watched::Absent),
            watcher::Event::Init => relisted.clear(),
            watcher::Event::InitDone => {
                // Kept objects the re-list didn't show are gone (deleted while not watched).
                for (key, entry) in &mut inner.entries {
                    let covered = key.kind == kind
                        && scope.is_none_or(|namespace| *key.namespace == *namespace);
                    if covered && !relisted.contains(key) && see_entry(entry, Watched::Absent) {
                        stale.insert(key.clone());
                    }
                }
                relisted.clear();
            }
        }
        if stale.is_empty() {
            return Vec::new();
        }
        // One pass over every ScaledJob's reads, however many objects went stale (a re-list
        // can make many stale at once).
        let mut readers: Vec<OwnerKey> = inner
            .reads
            .iter()
            .filter(|(_, keys)| keys.iter().any(|key| stale.contains(key)))
            .map(|(owner, _)| owner.clone())
            .collect();
        readers.sort();
        readers
    }

    /// How many objects are kept (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner().entries.len()
    }
}

/// One reader fewer for `key`; an object nobody reads is dropped.
fn unread(entries: &mut HashMap<ObjectKey, Entry>, key: &ObjectKey) {
    if let Some(entry) = entries.get_mut(key) {
        entry.readers = entry.readers.saturating_sub(1);
        if entry.readers == 0 {
            entries.remove(key);
        }
    }
}

/// Records what the watch showed; whether that made the kept value stale (its readers must
/// re-poll).
fn see_entry(entry: &mut Entry, watched: Watched) -> bool {
    if entry.watched == watched {
        return false;
    }
    let was_current = entry.current().is_some();
    entry.watched = watched;
    was_current && entry.current().is_none()
}

fn key_of<K: kube::Resource>(kind: Kind, object: &K) -> ObjectKey {
    let meta = object.meta();
    ObjectKey {
        kind,
        namespace: meta.namespace.as_deref().unwrap_or_default().into(),
        name: meta.name.as_deref().unwrap_or_default().into(),
    }
}

/// The version of an object that matters for resolution (see the module docs).
pub(crate) fn version_of<K: kube::Resource>(kind: Kind, object: &K) -> String {
    let meta = object.meta();
    match kind {
        Kind::Secret | Kind::ConfigMap => meta.resource_version.clone().unwrap_or_default(),
        Kind::TriggerAuthentication | Kind::ClusterTriggerAuthentication => {
            meta.generation.map_or_else(
                || meta.resource_version.clone().unwrap_or_default(),
                |g| g.to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret as K8sSecret;
    use kube::api::ObjectMeta;

    use super::*;

    fn object(name: &str, resource_version: &str, generation: i64) -> K8sSecret {
        K8sSecret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(resource_version.into()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            ..K8sSecret::default()
        }
    }

    fn key(kind: Kind, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn owner(name: &str) -> OwnerKey {
        ("ns".into(), name.into())
    }

    fn value() -> Value {
        Value::config_map(std::collections::BTreeMap::new())
    }

    fn is_current(objects: &AuthObjects, key: &ObjectKey) -> bool {
        matches!(objects.get(key), Lookup::Current(_))
    }

    /// `name` read by `readers`, fetched at resource version `version`.
    fn kept(kind: Kind, name: &str, version: &str, readers: &[&str]) -> AuthObjects {
        let objects = AuthObjects::default();
        let key = key(kind, name);
        assert!(!is_current(&objects, &key), "unknown at first");
        objects.fetched(&key, Some((version.into(), value())));
        for reader in readers {
            objects.read_by(&owner(reader), vec![key.clone()]);
        }
        objects
    }

    fn apply(
        objects: &AuthObjects,
        kind: Kind,
        event: &watcher::Event<K8sSecret>,
    ) -> Vec<OwnerKey> {
        objects.apply(kind, None, event, &mut HashSet::new())
    }

    #[test]
    fn a_kept_value_is_current_until_the_watch_shows_another_version() {
        let objects = kept(Kind::Secret, "creds", "5", &["a", "b"]);
        let key = key(Kind::Secret, "creds");
        assert!(is_current(&objects, &key));
        let same = watcher::Event::Apply(object("creds", "5", 1));
        assert!(apply(&objects, Kind::Secret, &same).is_empty());
        assert!(is_current(&objects, &key), "the version it was fetched at");
        let other = watcher::Event::Apply(object("other", "9", 1));
        assert!(apply(&objects, Kind::Secret, &other).is_empty(), "not kept");
        let changed = watcher::Event::Apply(object("creds", "6", 1));
        assert_eq!(
            apply(&objects, Kind::Secret, &changed),
            [owner("a"), owner("b")],
            "its readers re-poll"
        );
        assert!(!is_current(&objects, &key));
        objects.fetched(&key, Some(("6".into(), value())));
        assert!(is_current(&objects, &key));
    }

    #[test]
    fn a_watch_behind_the_get_costs_a_get_never_a_stale_value() {
        let objects = kept(Kind::Secret, "creds", "7", &["a"]);
        let key = key(Kind::Secret, "creds");
        // The watch still shows an older change; then catches up.
        apply(
            &objects,
            Kind::Secret,
            &watcher::Event::Apply(object("creds", "6", 1)),
        );
        assert!(!is_current(&objects, &key));
        let caught_up = watcher::Event::Apply(object("creds", "7", 1));
        assert!(apply(&objects, Kind::Secret, &caught_up).is_empty());
        assert!(is_current(&objects, &key));
    }

    #[test]
    fn a_deleted_object_or_one_a_relist_misses_is_stale() {
        let objects = kept(Kind::Secret, "creds", "5", &["a"]);
        let key = key(Kind::Secret, "creds");
        let deleted = watcher::Event::Delete(object("creds", "5", 1));
        assert_eq!(apply(&objects, Kind::Secret, &deleted), [owner("a")]);
        objects.fetched(&key, None);
        assert!(is_current(&objects, &key), "known to be missing");

        let objects = kept(Kind::Secret, "creds", "5", &["a"]);
        let mut relisted = HashSet::new();
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(object("other", "3", 1)),
        ] {
            objects.apply(Kind::Secret, Some("ns"), &event, &mut relisted);
        }
        let done = objects.apply(
            Kind::Secret,
            Some("ns"),
            &watcher::Event::<K8sSecret>::InitDone,
            &mut relisted,
        );
        assert_eq!(done, [owner("a")], "gone while not watched");
    }

    #[test]
    fn an_authentication_changes_with_its_spec_not_its_status() {
        let objects = kept(Kind::TriggerAuthentication, "plain", "1", &["a"]);
        let key = key(Kind::TriggerAuthentication, "plain");
        // status.scaledjobs written: a new resourceVersion, the same generation.
        let status = watcher::Event::Apply(object("plain", "40", 1));
        assert!(apply(&objects, Kind::TriggerAuthentication, &status).is_empty());
        assert!(is_current(&objects, &key));
        let spec = watcher::Event::Apply(object("plain", "41", 2));
        assert_eq!(
            apply(&objects, Kind::TriggerAuthentication, &spec),
            [owner("a")]
        );
    }

    #[test]
    fn an_object_no_scaled_job_reads_is_dropped() {
        let objects = kept(Kind::Secret, "creds", "5", &["a", "b"]);
        let other = key(Kind::ConfigMap, "settings");
        let _ = objects.get(&other);
        objects.read_by(&owner("a"), vec![other.clone()]);
        assert_eq!(objects.len(), 2);
        objects.forget(&owner("b"));
        assert_eq!(objects.len(), 1, "creds: read by nobody");
        objects.forget(&owner("a"));
        assert_eq!(objects.len(), 0);
    }

    #[test]
    fn readers_are_counted_exactly_whatever_the_order_of_reads() {
        let objects = kept(Kind::Secret, "creds", "5", &["a"]);
        let creds = key(Kind::Secret, "creds");
        objects.read_by(&owner("a"), vec![creds.clone(), creds.clone()]);
        objects.read_by(&owner("a"), vec![creds.clone()]);
        // b looks it up; a stops reading it (dropped) before b records its reads.
        let _ = objects.get(&creds);
        objects.forget(&owner("a"));
        objects.read_by(&owner("b"), vec![creds.clone()]);
        assert!(!is_current(&objects, &creds), "kept again, to be fetched");
        objects.read_by(&owner("c"), vec![creds.clone()]);
        objects.forget(&owner("b"));
        assert_eq!(objects.len(), 1, "c still reads it");
        let deleted = watcher::Event::Delete(object("creds", "5", 1));
        objects.fetched(&creds, Some(("5".into(), value())));
        assert_eq!(apply(&objects, Kind::Secret, &deleted), [owner("c")]);
        objects.forget(&owner("c"));
        assert_eq!(objects.len(), 0);
    }
}
