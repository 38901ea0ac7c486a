//! `create`, `update` (PUT) and `patch` (merge and JSON patches; strategic merge and apply are
//! refused).

use axum::body::Bytes;
use axum::http::header;
use axum::response::Response;
use serde_json::Value;

use super::body::{check_kind, parse_body};
use super::dispatch::Request;
use super::json_response;
use crate::decode;
use crate::params::flag;
use crate::status::ApiError;
use crate::store::Part;

/// `POST` on a collection.
pub(super) fn create(request: &Request<'_>, body: &Bytes) -> Result<Response, ApiError> {
    let resource = request.resource();
    if request.part != Part::Main {
        return Err(ApiError::method_not_allowed("POST on a subresource"));
    }
    let object = parse_body(body)?;
    check_kind(resource, &object)?;
    decode::check(resource, &object).map_err(|e| e.bad_request(resource))?;
    if let (Some(url_ns), Some(body_ns)) = (
        request.target.namespace.as_deref(),
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str),
    ) && !body_ns.is_empty()
        && url_ns != body_ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if flag(&request.params, "dryRun") || request.params.contains_key("dryRun") {
        return Err(ApiError::not_implemented("dryRun"));
    }
    let created = request.store.create(
        &request.storage,
        &request.namespace,
        (request.from_client)(object),
    )?;
    Ok(json_response(201, &(request.to_client)(created)))
}

/// `PUT` on an object or its `/status`.
pub(super) fn replace(
    request: &Request<'_>,
    name: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let resource = request.resource();
    let object = parse_body(body)?;
    check_kind(resource, &object)?;
    decode::check(resource, &object).map_err(|e| e.bad_request(resource))?;
    let replaced = request.store.update(
        &request.storage,
        &request.namespace,
        name,
        request.part,
        (request.from_client)(object),
    )?;
    Ok(json_response(200, &(request.to_client)(replaced)))
}

/// `PATCH` on an object or its `/status`.
pub(super) fn patch(request: &Request<'_>, name: &str, body: &Bytes) -> Result<Response, ApiError> {
    let Request {
        store,
        headers,
        storage,
        namespace,
        part,
        to_client,
        from_client,
        ..
    } = request;
    let (resource, part, to_client, from_client) =
        (request.resource(), *part, *to_client, *from_client);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let content_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let patch = parse_body(body)?;
    let patched = match content_type.as_str() {
        "application/merge-patch+json" => store.modify(storage, namespace, name, part, |old| {
            let mut new = to_client(old.clone());
            json_patch::merge(&mut new, &patch);
            decode::check(resource, &new).map_err(|e| e.invalid_patch(resource, name))?;
            Ok(from_client(new))
        })?,
        "application/json-patch+json" => {
            let operations: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                ApiError::bad_request(format!("the JSON patch could not be decoded: {e}"))
            })?;
            store.modify(storage, namespace, name, part, |old| {
                let mut new = to_client(old.clone());
                apply_json_patch(&mut new, &operations).map_err(|e| {
                    ApiError::invalid(resource, name, &[(String::new(), format!("the server rejected our request due to an error in our request: {e}"))])
                })?;
                decode::check(resource, &new).map_err(|e| e.invalid_patch(resource, name))?;
                Ok(from_client(new))
            })?
        }
        "application/strategic-merge-patch+json" => {
            return Err(ApiError::unsupported_media_type("strategic merge patch"));
        }
        "application/apply-patch+yaml" => {
            return Err(ApiError::unsupported_media_type("server-side apply"));
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(json_response(200, &to_client(patched)))
}

/// RFC 6902 as Kubernetes applies it: operations in order, and — like the real server's
/// json-patch library — a `test` of `null` against a path that doesn't exist passes (kube-runtime's
/// finalizer helper relies on it).
fn apply_json_patch(
    document: &mut Value,
    operations: &json_patch::Patch,
) -> Result<(), json_patch::PatchError> {
    for operation in &operations.0 {
        if let json_patch::PatchOperation::Test(test) = operation
            && test.value.is_null()
            && document.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(document, std::slice::from_ref(operation))?;
    }
    Ok(())
}
