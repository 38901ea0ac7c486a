//! `delete` with DeleteOptions (preconditions, propagation policy); `deletecollection` is
//! refused.
//!
//! The answer is the real server's: the object while it stays (finalizers, foreground or orphan
//! deletion waiting), and for the types whose registry returns the deleted object
//! ([`RETURNS_DELETED_OBJECT`]); otherwise — ConfigMaps, Secrets, Jobs, custom resources … —
//! a `Status` of `Success` naming it.

use axum::body::Bytes;
use axum::response::Response;
use serde_json::Value;

use super::body::{check_delete_options, parse_body};
use super::dispatch::Request;
use super::json_response;
use crate::status::ApiError;
use crate::store::{DeleteOptions, Part, Propagation};

/// The core types whose registry sets `ReturnDeletedObject` (kubernetes v1.37
/// `pkg/registry/core/*/storage`): deleting one answers the object even when it is gone.
const RETURNS_DELETED_OBJECT: &[&str] = &[
    "pods",
    "namespaces",
    "resourcequotas",
    "serviceaccounts",
    "services",
    "persistentvolumeclaims",
    "persistentvolumes",
    "podtemplates",
];

/// `DELETE` on an object.
pub(super) fn delete(
    request: &Request<'_>,
    name: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if request.part != Part::Main {
        return Err(ApiError::method_not_allowed("DELETE on a subresource"));
    }
    let options = if body.is_empty() {
        Value::Null
    } else {
        parse_body(body)?
    };
    check_delete_options(&options)?;
    let propagation = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(request.params.get("propagationPolicy").map(String::as_str));
    let propagation = match propagation {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported propagationPolicy \"{other}\""
            )));
        }
    };
    let deleted = request.store.delete(
        &request.storage,
        &request.namespace,
        name,
        &DeleteOptions {
            resource_version: options
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
            uid: options
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            propagation,
        },
    )?;
    let uid = deleted
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let still_there = request
        .store
        .get(&request.storage, &request.namespace, name)
        .is_ok_and(|now| now.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid));
    let resource = request.resource();
    if still_there
        || (resource.group.is_empty() && RETURNS_DELETED_OBJECT.contains(&resource.plural.as_str()))
    {
        return Ok(json_response(200, &(request.to_client)(deleted)));
    }
    Ok(json_response(200, &ApiError::deleted(resource, name, uid)))
}
