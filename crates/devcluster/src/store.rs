//! The in-memory object store: one resourceVersion counter, a bounded event history for watches
//! (older history is compacted away: watching from before it is 410 Expired), and the type
//! registry (a CRD's types are served while the CRD exists).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::resources::{Registry, ResourceType};
use crate::status::ApiError;
use crate::validation;

/// How many changes the history keeps before compacting.
pub const HISTORY: usize = 20_000;

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

impl ChangeType {
    /// The watch event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its resourceVersion.
    pub rv: u64,
    /// Added / modified / deleted.
    pub type_: ChangeType,
    /// (group, plural) of the object.
    pub resource: (String, String),
    /// Its namespace ("" for cluster-scoped).
    pub namespace: String,
    /// The object after the change (before, for a deletion, with the new resourceVersion).
    pub object: Arc<Value>,
}

/// Live changes after a watch's backlog.
pub type ChangeReceiver = broadcast::Receiver<Arc<Change>>;

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

/// (group, plural, namespace, name).
type Key = (String, String, String, String);

struct Inner {
    rv: u64,
    registry: Registry,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<Change>>,
    /// Watches may start from any rv ≥ this; older is 410.
    oldest: u64,
}

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource (status kept when a status subresource exists).
    Main,
    /// The `/status` subresource (only status changes).
    Status,
}

/// The store.
pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn key(resource: &ResourceType, namespace: &str, name: &str) -> Key {
    (
        resource.group.clone(),
        resource.plural.clone(),
        namespace.to_owned(),
        name.to_owned(),
    )
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn random_suffix() -> String {
    // The alphabet of Kubernetes' generateName (no vowels, no ambiguous characters).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// Everything but metadata and status: a change here bumps `metadata.generation`.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

impl Store {
    /// A store with the built-in types and the `default`, `kube-system` and `kube-public`
    /// namespaces.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(HISTORY);
        let store = Self {
            inner: Mutex::new(Inner {
                rv: 1,
                registry: Registry::builtin(),
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                oldest: 1,
            }),
            changes,
        };
        if let Some(ns_type) = store.resource("", "v1", "namespaces") {
            for namespace in ["default", "kube-system", "kube-public"] {
                let _ = store.create(
                    &ns_type,
                    "",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
                );
            }
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The type served at (group, version, plural).
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock().registry.get(group, version, plural).cloned()
    }

    /// A copy of the registry (discovery).
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn record(
        &self,
        inner: &mut Inner,
        type_: ChangeType,
        (group, plural): (&str, &str),
        namespace: &str,
        object: Arc<Value>,
    ) {
        let change = Arc::new(Change {
            rv: inner.rv,
            type_,
            resource: (group.to_owned(), plural.to_owned()),
            namespace: namespace.to_owned(),
            object,
        });
        inner.history.push_back(Arc::clone(&change));
        while inner.history.len() > HISTORY {
            if let Some(dropped) = inner.history.pop_front() {
                inner.oldest = dropped.rv + 1;
            }
        }
        let _ = self.changes.send(change);
    }

    /// Drops the whole history: every watch from an older resourceVersion gets 410.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.oldest = inner.rv + 1;
    }

    /// Creates an object.
    pub fn create(
        &self,
        resource: &ResourceType,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        if resource.namespaced
            && !inner.objects.contains_key(&(
                String::new(),
                "namespaces".into(),
                String::new(),
                namespace.to_owned(),
            ))
        {
            return Err(ApiError::namespace_not_found(namespace));
        }
        let meta = object.get_mut("metadata").and_then(Value::as_object_mut);
        let Some(meta) = meta else {
            return Err(ApiError::bad_request("metadata is required"));
        };
        let name = match meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(name) => name.to_owned(),
            None => match meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                Some(prefix) => {
                    // The real server truncates the prefix so that prefix + 5 characters fit 63.
                    let prefix: String = prefix.chars().take(58).collect();
                    format!("{prefix}{}", random_suffix())
                }
                None => {
                    return Err(ApiError::invalid(
                        resource,
                        "",
                        &[(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            },
        };
        inner.rv += 1;
        let rv = inner.rv;
        meta.insert("name".into(), json!(name));
        if resource.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind);
        if resource.group == "batch" && resource.plural == "jobs" {
            default_job(&mut object);
        }
        if resource.group.is_empty() && resource.plural == "secrets" {
            merge_string_data(&mut object);
        }
        if let Err(causes) = validation::validate(resource, &object, None) {
            inner.rv -= 1;
            return Err(ApiError::invalid(resource, &name, &causes));
        }
        if let Some(schema) = &resource.schema {
            let causes = crate::schema::check(schema, &mut object);
            if !causes.is_empty() {
                inner.rv -= 1;
                return Err(ApiError::invalid(resource, &name, &causes));
            }
        }
        let key = key(
            resource,
            if resource.namespaced { namespace } else { "" },
            &name,
        );
        if inner.objects.contains_key(&key) {
            inner.rv -= 1;
            return Err(ApiError::already_exists(resource, &name));
        }
        if let Err(refused) = crate::quota::admit(&inner.objects, resource, namespace, &name) {
            inner.rv -= 1;
            return Err(refused);
        }
        if resource.kind == "CustomResourceDefinition" && resource.group == "apiextensions.k8s.io" {
            register_crd(&mut inner, &mut object);
        }
        let object = Arc::new(object);
        inner.objects.insert(key, Arc::clone(&object));
        self.record(
            &mut inner,
            ChangeType::Added,
            (&resource.group, &resource.plural),
            namespace,
            Arc::clone(&object),
        );
        Ok(Value::clone(&object))
    }

    /// Reads an object.
    pub fn get(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let inner = self.lock();
        inner
            .objects
            .get(&key(
                resource,
                if resource.namespaced { namespace } else { "" },
                name,
            ))
            .map(|v| Value::clone(v))
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// Lists objects of a type (in a namespace, or all), with the current resourceVersion.
    pub fn list(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == resource.group && *p == resource.plural && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, v)| v)
            .filter(|v| keep(v))
            .map(|v| Value::clone(v))
            .collect();
        (items, inner.rv)
    }

    /// Replaces an object (PUT) or its status, with a resourceVersion precondition when the body
    /// carries one.
    pub fn update(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        part: Part,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.modify(resource, namespace, name, part, |_| Ok(object))
    }

    /// Reads, transforms and writes an object under one lock (patches).
    pub fn modify(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        part: Part,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let namespace = if resource.namespaced { namespace } else { "" };
        let key = key(resource, namespace, name);
        let Some(old) = inner.objects.get(&key).map(|v| Value::clone(v)) else {
            return Err(ApiError::not_found(resource, name));
        };
        let mut new = change(&old)?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        // The server refuses these with the decoder's words (`decode`); a direct caller of the
        // store gets this rather than a panic on `new["metadata"][…]` below.
        if new
            .get("metadata")
            .is_some_and(|m| !m.is_object() && !m.is_null())
        {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        if let Some(rv) = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty())
            && Some(rv)
                != old
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(resource, name));
        }
        if new
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_some_and(|n| n != name)
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                new.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )));
        }
        // What the real server refuses instead of silently keeping the stored value: another
        // namespace, another uid (a precondition), another kind or API version.
        let text = |value: &Value, pointer: &str| {
            value
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if resource.namespaced
            && let Some(other) = text(&new, "/metadata/namespace").filter(|n| n != namespace)
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({other}) does not match the namespace on the URL ({namespace})"
            )));
        }
        if let (Some(uid), Some(stored)) =
            (text(&new, "/metadata/uid"), text(&old, "/metadata/uid"))
            && uid != stored
        {
            return Err(ApiError::failure(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {stored}",
                    resource.qualified()
                ),
                Value::Null,
            ));
        }
        if let Some(kind) = text(&new, "/kind").filter(|k| *k != resource.kind) {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                resource.kind
            )));
        }
        if let Some(version) = text(&new, "/apiVersion").filter(|v| *v != resource.api_version()) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({version}) does not match the expected API version ({})",
                resource.api_version()
            )));
        }
        match part {
            Part::Status => {
                // Only status changes through /status.
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(status) => new["status"] = status,
                    None => {
                        if let Some(map) = new.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            Part::Main => {
                if resource.status_subresource {
                    match old.get("status") {
                        Some(status) => new["status"] = status.clone(),
                        None => {
                            if let Some(map) = new.as_object_mut() {
                                map.remove("status");
                            }
                        }
                    }
                }
                // Server-managed metadata stays.
                for field in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "generation",
                ] {
                    match old.pointer(&format!("/metadata/{field}")) {
                        Some(value) => new["metadata"][field] = value.clone(),
                        None => {
                            if let Some(meta) =
                                new.get_mut("metadata").and_then(Value::as_object_mut)
                            {
                                meta.remove(field);
                            }
                        }
                    }
                }
                if spec_part(&new) != spec_part(&old) {
                    let generation = old
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    new["metadata"]["generation"] = json!(generation + 1);
                }
            }
        }
        new["metadata"]["name"] = json!(name);
        if resource.namespaced {
            new["metadata"]["namespace"] = json!(namespace);
        }
        new["apiVersion"] = json!(resource.api_version());
        new["kind"] = json!(resource.kind);
        if resource.group.is_empty() && resource.plural == "secrets" {
            merge_string_data(&mut new);
        }
        if let Err(causes) = validation::validate(resource, &new, Some(&old)) {
            return Err(ApiError::invalid(resource, name, &causes));
        }
        if let Some(schema) = &resource.schema {
            let causes = crate::schema::check(schema, &mut new);
            if !causes.is_empty() {
                return Err(ApiError::invalid(resource, name, &causes));
            }
        }
        if new == old {
            // A no-op write doesn't bump the resourceVersion (as the real server).
            return Ok(old);
        }
        inner.rv += 1;
        let rv = inner.rv;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let finalizers_empty = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if new.pointer("/metadata/deletionTimestamp").is_some() && finalizers_empty {
            inner.rv -= 1;
            inner.objects.insert(key.clone(), Arc::new(new));
            return Ok(self.remove_key(&mut inner, &key));
        }
        if resource.kind == "CustomResourceDefinition" && resource.group == "apiextensions.k8s.io" {
            register_crd(&mut inner, &mut new);
        }
        let new = Arc::new(new);
        inner.objects.insert(key, Arc::clone(&new));
        self.record(
            &mut inner,
            ChangeType::Modified,
            (&resource.group, &resource.plural),
            namespace,
            Arc::clone(&new),
        );
        Ok(Value::clone(&new))
    }

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
    fn delete_key(&self, inner: &mut Inner, key: &Key, add_finalizer: Option<&str>) -> Value {
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
    fn remove_key(&self, inner: &mut Inner, key: &Key) -> Value {
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

    fn record_key(&self, inner: &mut Inner, type_: ChangeType, key: &Key, object: Arc<Value>) {
        self.record(inner, type_, (&key.0, &key.1), &key.2, object);
    }

    /// Changes after `from` matching `filter`, and a receiver for later ones, taken under one lock
    /// so nothing falls between them. `Err(oldest)` when `from` was compacted away.
    pub fn watch_from(
        &self,
        from: u64,
        filter: impl Fn(&Change) -> bool,
    ) -> Result<(Vec<Arc<Change>>, ChangeReceiver), u64> {
        let inner = self.lock();
        if from.saturating_add(1) < inner.oldest {
            return Err(inner.oldest);
        }
        let backlog = inner
            .history
            .iter()
            .filter(|c| c.rv > from && filter(c))
            .cloned()
            .collect();
        Ok((backlog, self.changes.subscribe()))
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// A Secret's `stringData` is write-only, as in the real server: merged into `data` (base64),
/// overriding keys of the same name, and never stored.
fn merge_string_data(secret: &mut Value) {
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        data[key.as_str()] = json!(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            text
        ));
    }
}

/// The Job defaulting the real API server does on create: completions and parallelism 1 when
/// both are unset, backoffLimit 6, completionMode NonIndexed, suspend false, and the selector
/// and pod-template labels that tie pods to this Job (`batch.kubernetes.io/controller-uid`,
/// `batch.kubernetes.io/job-name`, and the legacy `controller-uid` / `job-name`).
fn default_job(job: &mut Value) {
    let uid = job.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = job
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if !spec.contains_key("completions") && !spec.contains_key("parallelism") {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    spec.entry("parallelism").or_insert(json!(1));
    spec.entry("backoffLimit").or_insert(json!(6));
    spec.entry("completionMode").or_insert(json!("NonIndexed"));
    spec.entry("suspend").or_insert(json!(false));
    if spec.get("manualSelector") != Some(&json!(true)) {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        let labels = spec
            .entry("template")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|t| t.entry("metadata").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
            .map(|m| m.entry("labels").or_insert_with(|| json!({})));
        if let Some(Value::Object(labels)) = labels {
            labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
            labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
            labels.insert("controller-uid".into(), uid);
            labels.insert("job-name".into(), name);
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

/// Serves a CRD's types and marks it Established, as the real apiextensions server does.
fn register_crd(inner: &mut Inner, crd: &mut Value) {
    for resource in Registry::types_of_crd(crd) {
        inner.registry.insert(resource);
    }
    let names = crd["spec"]["names"].clone();
    crd["status"] = json!({
        "acceptedNames": names,
        "storedVersions": crd["spec"]["versions"].as_array().into_iter().flatten()
            .filter(|v| v["storage"].as_bool() == Some(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
        ],
    });
}

/// Stops serving a deleted CRD's types and deletes their objects.
fn unregister_crd(store: &Store, inner: &mut Inner, crd: &Value) {
    let group = crd["spec"]["group"].as_str().unwrap_or_default().to_owned();
    let plural = crd["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let types = Registry::types_of_crd(crd);
    let doomed: Vec<Key> = inner
        .objects
        .keys()
        .filter(|(g, p, _, _)| *g == group && *p == plural)
        .cloned()
        .collect();
    for key in doomed {
        if let (Some(object), Some(resource)) = (inner.objects.remove(&key), types.first()) {
            inner.rv += 1;
            let mut object = Arc::unwrap_or_clone(object);
            object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            store.record(
                inner,
                ChangeType::Deleted,
                (&resource.group, &resource.plural),
                &key.2,
                Arc::new(object),
            );
        }
    }
    inner.registry.remove_crd(&group, &plural);
}
