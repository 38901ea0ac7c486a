//! The index behind [`crate::cache::OwnedCache`]: kept objects by their ScaledJob, in as few
//! allocations as an object's key and its packed form.
//!
//! Why this shape: at 10,000 ScaledJobs (a Job and a pod each) the earlier
//! `HashMap<(ns, owner), HashMap<name, Packed>>` plus a `HashMap<(ns, name), (ns, owner)>` held
//! ~9.5 MiB of hash tables: a whole inner table per ScaledJob (at least 4 slots), and five
//! `String`s per object (the namespace copied three times). Here an object is its key
//! `"namespace/name"` (one `Arc<str>`, shared by both maps) and its packed bytes; a ScaledJob is
//! its key `"namespace/scaledjob"` (one `Arc<str>`, shared by its objects) and a `Vec` of its
//! objects' keys, grown one slot at a time while small (most ScaledJobs have one or two Jobs)
//! and doubling beyond that (a ScaledJob with a long history keeps O(1) amortised inserts).
//! Names and namespaces can't hold `/`, so the joined keys are unambiguous.

use std::collections::HashMap;
use std::sync::Arc;

use crate::kept::Packed;

/// `"namespace/name"`: the key of an object or of a ScaledJob.
pub(crate) fn joined(namespace: &str, name: &str) -> String {
    let mut key = String::with_capacity(namespace.len() + 1 + name.len());
    key.push_str(namespace);
    key.push('/');
    key.push_str(name);
    key
}

/// A joined key split back into (namespace, name).
pub(crate) fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// One kept object: its ScaledJob's key (shared with the ScaledJob's entry) and packed form.
struct Object {
    owner: Arc<str>,
    packed: Packed,
}

/// Kept objects by key and by ScaledJob.
#[derive(Default)]
pub(crate) struct Index {
    /// `"namespace/name"` → the object.
    objects: HashMap<Arc<str>, Object>,
    /// `"namespace/scaledjob"` → the keys of its objects (the same `Arc`s as in `objects`), in
    /// no order.
    by_owner: HashMap<Arc<str>, Vec<Arc<str>>>,
}

impl Index {
    /// Removes the object `key` (a no-op if it isn't here).
    pub(crate) fn remove(&mut self, key: &str) {
        let Some((key, object)) = self.objects.remove_entry(key) else {
            return;
        };
        if let Some(keys) = self.by_owner.get_mut(&object.owner) {
            if let Some(at) = keys.iter().position(|k| Arc::ptr_eq(k, &key)) {
                keys.swap_remove(at);
            }
            if keys.is_empty() {
                self.by_owner.remove(&object.owner);
            } else if keys.len() * 4 <= keys.capacity() {
                keys.shrink_to(keys.len() * 2);
            }
        }
    }

    /// Keeps `packed` as the object `key` of the ScaledJob `owner`, in place of any earlier
    /// form (under this or another ScaledJob: its label may have changed).
    pub(crate) fn insert(&mut self, key: &str, owner: &str, packed: Packed) {
        if let Some(object) = self.objects.get_mut(key)
            && *object.owner == *owner
        {
            object.packed = packed;
            return;
        }
        self.remove(key);
        let key: Arc<str> = Arc::from(key);
        let owner = match self.by_owner.get_key_value(owner) {
            Some((owner, _)) => Arc::clone(owner),
            None => Arc::from(owner),
        };
        let keys = self.by_owner.entry(Arc::clone(&owner)).or_default();
        if keys.len() == keys.capacity() {
            // One more slot while small, doubling once a ScaledJob has a few.
            let more = if keys.len() < 4 { 1 } else { keys.len() };
            keys.reserve_exact(more);
        }
        keys.push(Arc::clone(&key));
        self.objects.insert(key, Object { owner, packed });
    }

    /// The object `key` with its ScaledJob's key.
    pub(crate) fn get(&self, key: &str) -> Option<(&str, &[u8])> {
        self.objects
            .get(key)
            .map(|object| (&*object.owner, &*object.packed))
    }

    /// The objects of the ScaledJob `owner`, as (key, packed).
    pub(crate) fn of<'a>(&'a self, owner: &str) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|key| Some((&**key, &*self.objects.get(key)?.packed)))
    }

    /// How many objects are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(text: &str) -> Packed {
        text.as_bytes().into()
    }

    fn of(index: &Index, owner: &str) -> Vec<(String, String)> {
        let mut objects: Vec<_> = index
            .of(owner)
            .map(|(key, packed)| (key.to_owned(), String::from_utf8_lossy(packed).into_owned()))
            .collect();
        objects.sort();
        objects
    }

    fn pair(key: &str, packed: &str) -> (String, String) {
        (key.to_owned(), packed.to_owned())
    }

    #[test]
    fn keys_join_and_split_namespace_and_name() {
        assert_eq!(joined("ns", "a-1"), "ns/a-1");
        assert_eq!(split("ns/a-1"), ("ns", "a-1"));
    }

    #[test]
    fn an_update_replaces_the_packed_form_in_place() {
        let mut index = Index::default();
        index.insert("ns/a-1", "ns/a", packed("v1"));
        index.insert("ns/a-1", "ns/a", packed("v2"));
        assert_eq!(of(&index, "ns/a"), [pair("ns/a-1", "v2")]);
        assert_eq!(index.get("ns/a-1"), Some(("ns/a", &b"v2"[..])));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_relabelled_object_moves_to_its_new_scaled_job() {
        let mut index = Index::default();
        index.insert("ns/x", "ns/a", packed("v1"));
        index.insert("ns/a-2", "ns/a", packed("a2"));
        index.insert("ns/x", "ns/b", packed("v2"));
        assert_eq!(of(&index, "ns/a"), [pair("ns/a-2", "a2")]);
        assert_eq!(of(&index, "ns/b"), [pair("ns/x", "v2")]);
        assert_eq!(index.get("ns/x"), Some(("ns/b", &b"v2"[..])));
        // Its last object moved away, a ScaledJob has no entry left.
        index.insert("ns/a-2", "ns/b", packed("a2"));
        assert!(!index.by_owner.contains_key("ns/a"));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_delete_removes_the_object_and_an_empty_scaled_job() {
        let mut index = Index::default();
        index.insert("ns/a-1", "ns/a", packed("1"));
        index.insert("ns/a-2", "ns/a", packed("2"));
        index.remove("ns/a-1");
        assert_eq!(of(&index, "ns/a"), [pair("ns/a-2", "2")]);
        assert_eq!(index.get("ns/a-1"), None);
        index.remove("ns/a-2");
        index.remove("ns/never-seen");
        assert_eq!(of(&index, "ns/a"), []);
        assert!(index.by_owner.is_empty());
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn namespaces_keep_same_named_objects_and_scaled_jobs_apart() {
        let mut index = Index::default();
        index.insert("one/j", "one/a", packed("1"));
        index.insert("two/j", "two/a", packed("2"));
        assert_eq!(of(&index, "one/a"), [pair("one/j", "1")]);
        assert_eq!(of(&index, "two/a"), [pair("two/j", "2")]);
    }

    #[test]
    fn a_scaled_job_with_thousands_of_objects_keeps_each_once() {
        let mut index = Index::default();
        for i in 0..3000 {
            index.insert(&format!("ns/h-{i}"), "ns/h", packed(&i.to_string()));
        }
        // Updates don't duplicate; deletes of every other one leave the rest.
        for i in 0..3000 {
            index.insert(&format!("ns/h-{i}"), "ns/h", packed(&format!("{i}'")));
        }
        for i in (0..3000).step_by(2) {
            index.remove(&format!("ns/h-{i}"));
        }
        let left = of(&index, "ns/h");
        let expected: Vec<_> = {
            let mut expected: Vec<_> = (1..3000)
                .step_by(2)
                .map(|i| pair(&format!("ns/h-{i}"), &format!("{i}'")))
                .collect();
            expected.sort();
            expected
        };
        assert_eq!(left, expected);
        assert_eq!(index.len(), 1500);
        // Shrunk as it emptied, never below what it holds.
        let keys = &index.by_owner["ns/h"];
        assert!(keys.capacity() >= keys.len() && keys.capacity() <= 4 * keys.len());
    }
}
