//! Writes to an existing object (PUT, patches, `/status`): the checks the real server makes
//! before it accepts a new version, and what stays server-managed.

use std::sync::Arc;

use serde_json::{Value, json};

use super::crds::register_crd;
use super::defaulting::merge_string_data;
use super::history::ChangeType;
use super::{Part, Store, key};
use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::validation;

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
}
