//! `delete` with DeleteOptions (preconditions, propagation policy); `deletecollection` is
//! refused.

use axum::body::Bytes;
use axum::response::Response;
use serde_json::Value;

use super::body::{check_delete_options, parse_body};
use super::dispatch::Request;
use super::json_response;
use crate::status::ApiError;
use crate::store::{DeleteOptions, Part, Propagation};

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
    Ok(json_response(200, &(request.to_client)(deleted)))
}
