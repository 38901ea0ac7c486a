//! Request bodies: size limit, JSON decoding, kind checks and DeleteOptions' shape.

use axum::body::Bytes;
use serde_json::Value;

use super::MAX_BODY;
use crate::resources::ResourceType;
use crate::status::ApiError;

/// DeleteOptions of the wrong shape are the real server's 400 (`{"preconditions": 5}` deleted
/// the object before).
pub(super) fn check_delete_options(options: &Value) -> Result<(), ApiError> {
    let wrong = |field: &str, expected: &str| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded: DeleteOptions.{field}: expected {expected}"
        ))
    };
    if options.is_null() {
        return Ok(());
    }
    let Some(fields) = options.as_object() else {
        return Err(wrong("(root)", "an object"));
    };
    for (field, expected, ok) in [
        (
            "preconditions",
            "an object",
            fields
                .get("preconditions")
                .is_none_or(|v| v.is_object() || v.is_null()),
        ),
        (
            "propagationPolicy",
            "a string",
            fields
                .get("propagationPolicy")
                .is_none_or(|v| v.is_string() || v.is_null()),
        ),
        (
            "gracePeriodSeconds",
            "an integer",
            fields
                .get("gracePeriodSeconds")
                .is_none_or(|v| v.is_i64() || v.is_null()),
        ),
        (
            "orphanDependents",
            "a boolean",
            fields
                .get("orphanDependents")
                .is_none_or(|v| v.is_boolean() || v.is_null()),
        ),
        (
            "dryRun",
            "a list",
            fields
                .get("dryRun")
                .is_none_or(|v| v.is_array() || v.is_null()),
        ),
    ] {
        if !ok {
            return Err(wrong(field, expected));
        }
    }
    for field in ["resourceVersion", "uid"] {
        if options
            .pointer(&format!("/preconditions/{field}"))
            .is_some_and(|v| !v.is_string() && !v.is_null())
        {
            return Err(wrong(&format!("preconditions.{field}"), "a string"));
        }
    }
    Ok(())
}

/// 413 RequestEntityTooLarge, as the real server answers a body over its limit.
pub(super) fn too_large() -> ApiError {
    ApiError::failure(
        413,
        "RequestEntityTooLarge",
        &format!("Request entity too large: limit is {MAX_BODY}"),
        Value::Null,
    )
}

pub(super) fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
    })
}

pub(super) fn check_kind(resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    if let Some(version) = api_version.filter(|v| *v != resource.api_version()) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({version}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    if let Some(kind) = kind.filter(|k| *k != resource.kind) {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    Ok(())
}
