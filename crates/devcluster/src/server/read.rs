//! `get`, `list` (selectors, paging, Table and metadata-only answers) and `watch`.

use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::dispatch::Request;
use super::{json_response, partial_metadata, wants_table};
use crate::params::{check_list, flag, watch_timeout};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::table;

/// `GET` on a collection: a list, or a watch with `watch=true`.
pub(super) fn list(request: &Request<'_>) -> Result<Response, ApiError> {
    let Request {
        store,
        app,
        headers,
        params,
        target,
        storage,
        to_client,
        partial,
        ..
    } = request;
    let (resource, to_client, partial) = (request.resource(), *to_client, *partial);
    check_list(params)?;
    let labels = params
        .get("labelSelector")
        .map(|s| LabelSelector::parse(s))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let fields = params
        .get("fieldSelector")
        .map(|s| FieldSelector::parse(s, &resource.kind))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let keep = move |object: &Value| {
        let object = &to_client(object.clone());
        labels.as_ref().is_none_or(|l| {
            l.matches(
                object
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object),
            )
        }) && fields.as_ref().is_none_or(|f| f.matches(object))
    };
    if flag(params, "watch") {
        let timeout = watch_timeout(params)?;
        return Ok(super::watch::watch(
            store,
            app.faults.watch_epoch(),
            (storage.clone(), resource.clone()),
            if partial { partial_metadata } else { to_client },
            (target.namespace.clone(), timeout),
            params,
            keep,
        ));
    }
    let (items, rv) = store.list(storage, target.namespace.as_deref(), keep);
    let mut items: Vec<Value> = items.into_iter().map(to_client).collect();
    let mut continue_token = None;
    if let Some(start) = params.get("continue").filter(|c| !c.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(start)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
        items.retain(|item| item_key(item) > decoded);
    }
    if let Some(limit) = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && items.len() > limit
    {
        items.truncate(limit);
        continue_token = items
            .last()
            .map(|last| base64::engine::general_purpose::STANDARD.encode(item_key(last)));
    }
    if wants_table(headers) {
        return Ok(json_response(200, &table::table(resource, &items, rv)));
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    if partial {
        let items: Vec<Value> = items.into_iter().map(partial_metadata).collect();
        return Ok(json_response(
            200,
            &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata, "items": items}),
        ));
    }
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
        "metadata": metadata, "items": items}),
    ))
}

/// `GET` on one object.
pub(super) fn get(request: &Request<'_>, name: &str) -> Result<Response, ApiError> {
    let store = request.store;
    let object = (request.to_client)(store.get(&request.storage, &request.namespace, name)?);
    if request.partial {
        return Ok(json_response(200, &partial_metadata(object)));
    }
    if wants_table(request.headers) {
        let rv = store.resource_version();
        return Ok(json_response(
            200,
            &table::table(request.resource(), &[object], rv),
        ));
    }
    Ok(json_response(200, &object))
}

/// The order of a paged list, and its continue token: `namespace/name`.
fn item_key(item: &Value) -> String {
    format!(
        "{}/{}",
        item.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        item.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    )
}
