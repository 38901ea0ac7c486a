//! Deletion and garbage collection: finalizers, and an owner's dependents (ownerReferences)
//! collected per propagation policy, as the real garbage collector does.

use std::sync::Arc;

use serde_json::{Value, json};

use super::crds::unregister_crd;
use super::history::ChangeType;
use super::{Inner, Key, Store, key, now};
use crate::resources::ResourceType;
use crate::status::ApiError;

/// How a deletion treats the object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete the owner now, its dependents after it (the default for most types).
    #[default]
    Background,
    /// Delete the dependents first; the owner waits with the `foregroundDeletion` finalizer.
    Foreground,
    /// Keep the dependents, removing their ownerReferences.
    Orphan,
}

/// The parts of `metav1.DeleteOptions` the store honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `propagationPolicy`.
    pub propagation: Propagation,
}

/// The finalizer of an owner in foreground deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

impl Store {
    /// Deletes an object with DeleteOptions: with finalizers it only gets a deletionTimestamp;
    /// without, it is gone. Dependents (ownerReferences) are garbage-collected per `propagation`:
    /// Background deletes them after the owner, Foreground before it (the owner waits with the
    /// `foregroundDeletion` finalizer), Orphan removes their ownerReferences.
    pub fn delete(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let namespace = if resource.namespaced { namespace } else { "" };
        let key = key(resource, namespace, name);
        let Some(object) = inner.objects.get(&key).map(|v| Value::clone(v)) else {
            return Err(ApiError::not_found(resource, name));
        };
        let field = |path: &str| object.pointer(path).and_then(Value::as_str);
        if options
            .resource_version
            .as_deref()
            .is_some_and(|rv| Some(rv) != field("/metadata/resourceVersion"))
            || options
                .uid
                .as_deref()
                .is_some_and(|uid| Some(uid) != field("/metadata/uid"))
        {
            return Err(ApiError::conflict(resource, name));
        }
        let uid = field("/metadata/uid").unwrap_or_default().to_owned();
        match options.propagation {
            Propagation::Orphan => {
                self.orphan_dependents(&mut inner, &uid);
                Ok(self.delete_key(&mut inner, &key, None))
            }
            Propagation::Background => Ok(self.delete_key(&mut inner, &key, None)),
            Propagation::Foreground => {
                let marked = self.delete_key(&mut inner, &key, Some(FOREGROUND_FINALIZER));
                for dependent in dependents(&inner, &uid) {
                    self.delete_key(&mut inner, &dependent, None);
                }
                self.finish_foreground(&mut inner, &uid);
                Ok(inner.objects.get(&key).map_or(marked, |v| Value::clone(v)))
            }
        }
    }

    /// Deletes one stored object (finalizers respected; `add_finalizer` first adds one), and
    /// collects its dependents when it is gone. Returns the object as last seen.
    pub(super) fn delete_key(
        &self,
        inner: &mut Inner,
        key: &Key,
        add_finalizer: Option<&str>,
    ) -> Value {
        let Some(mut object) = inner.objects.get(key).map(|v| Value::clone(v)) else {
            return Value::Null;
        };
        let mut changed = false;
        if let Some(finalizer) = add_finalizer {
            let finalizers = object["metadata"]
                .as_object_mut()
                .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
            if let Some(Value::Array(list)) = finalizers
                && !list.iter().any(|f| f == finalizer)
            {
                list.push(json!(finalizer));
                changed = true;
            }
        }
        let has_finalizers = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if object.pointer("/metadata/deletionTimestamp").is_none() {
                object["metadata"]["deletionTimestamp"] = json!(now());
                object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                changed = true;
            }
            if changed {
                inner.rv += 1;
                object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                let shared = Arc::new(object.clone());
                inner.objects.insert(key.clone(), Arc::clone(&shared));
                self.record_key(inner, ChangeType::Modified, key, shared);
            }
            return object;
        }
        self.remove_key(inner, key)
    }

    /// Removes a stored object for good: records DELETED, unregisters a CRD's types, collects the
    /// object's dependents (Background) and completes owners waiting in foreground deletion.
    pub(super) fn remove_key(&self, inner: &mut Inner, key: &Key) -> Value {
        let Some(object) = inner.objects.remove(key) else {
            return Value::Null;
        };
        let mut object = Arc::unwrap_or_clone(object);
        inner.rv += 1;
        object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        self.record_key(inner, ChangeType::Deleted, key, Arc::new(object.clone()));
        if key.0 == "apiextensions.k8s.io" && key.1 == "customresourcedefinitions" {
            unregister_crd(self, inner, &object);
        }
        let uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for dependent in dependents(inner, &uid) {
            self.delete_key(inner, &dependent, None);
        }
        for owner in owner_uids(&object) {
            self.finish_foreground(inner, &owner);
        }
        object
    }

    /// An owner in foreground deletion whose dependents are all gone loses its
    /// `foregroundDeletion` finalizer (and is removed when no other finalizer remains).
    fn finish_foreground(&self, inner: &mut Inner, owner_uid: &str) {
        if owner_uid.is_empty() || !dependents(inner, owner_uid).is_empty() {
            return;
        }
        let Some((key, mut owner)) = inner
            .objects
            .iter()
            .find(|(_, o)| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(owner_uid))
            .map(|(k, o)| (k.clone(), Value::clone(o)))
        else {
            return;
        };
        if owner.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        let Some(Value::Array(finalizers)) = owner.pointer_mut("/metadata/finalizers") else {
            return;
        };
        let before = finalizers.len();
        finalizers.retain(|f| f != FOREGROUND_FINALIZER);
        if finalizers.len() == before {
            return;
        }
        if finalizers.is_empty() {
            inner.objects.insert(key.clone(), Arc::new(owner));
            self.remove_key(inner, &key);
        } else {
            inner.rv += 1;
            owner["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            let owner = Arc::new(owner);
            inner.objects.insert(key.clone(), Arc::clone(&owner));
            self.record_key(inner, ChangeType::Modified, &key, owner);
        }
    }

    /// Removes the ownerReferences to `owner_uid` from its dependents.
    fn orphan_dependents(&self, inner: &mut Inner, owner_uid: &str) {
        for key in dependents(inner, owner_uid) {
            let Some(mut object) = inner.objects.get(&key).map(|v| Value::clone(v)) else {
                continue;
            };
            if let Some(Value::Array(refs)) = object.pointer_mut("/metadata/ownerReferences") {
                refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
            }
            inner.rv += 1;
            object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            let object = Arc::new(object);
            inner.objects.insert(key.clone(), Arc::clone(&object));
            self.record_key(inner, ChangeType::Modified, &key, object);
        }
    }
}

/// The keys of the objects owned by `owner_uid`.
fn dependents(inner: &Inner, owner_uid: &str) -> Vec<Key> {
    if owner_uid.is_empty() {
        return Vec::new();
    }
    inner
        .objects
        .iter()
        .filter(|(_, o)| owner_uids(o).iter().any(|u| u == owner_uid))
        .map(|(k, _)| k.clone())
        .collect()
}

fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(str::to_owned))
        .collect()
}
