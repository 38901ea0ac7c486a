//! The in-memory object store: one resourceVersion counter and the objects, keyed by
//! (group, plural, namespace, name).
//!
//! - this file: the store, create / get / list;
//! - `history`: the bounded watch history (older is 410 Expired) and live change feed;
//! - `modify`: writes to an existing object (PUT, patches, `/status`);
//! - `gc`: deletion, finalizers and garbage collection of dependents;
//! - `defaulting`: the server's defaulting of Secrets and Jobs;
//! - `crds`: the CRD registry (a CRD's types are served while it exists).

mod crds;
mod defaulting;
mod gc;
mod history;
mod modify;

pub use gc::{DeleteOptions, FOREGROUND_FINALIZER, Propagation};
pub use history::{Change, ChangeReceiver, ChangeType, HISTORY};

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::resources::{Registry, ResourceType};
use crate::status::ApiError;
use crate::validation;
use crds::register_crd;
use defaulting::{default_job, default_namespace, default_pod, merge_string_data};

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

impl Store {
    /// A store with the built-in types and the `default`, `kube-system`, `kube-public` and
    /// `kube-node-lease` (node heartbeats) namespaces.
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
            for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
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
        if resource.group.is_empty() && resource.plural == "namespaces" {
            default_namespace(&mut object);
        }
        if resource.group.is_empty() && resource.plural == "pods" {
            default_pod(&mut object);
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
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}
