//! One API request after routing: the target resolved (subresource, the storage type behind a
//! view such as core/v1 events), then handed to its verb (`super::read`, `super::write`,
//! `super::delete`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;
use serde_json::Value;

use super::route::{Target, route};
use super::{App, pod_log, wants_partial_metadata};
use crate::events;
use crate::params::query;
use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::store::{Part, Store};

/// A request resolved to the objects it acts on.
pub(super) struct Request<'a> {
    pub(super) store: &'a Arc<Store>,
    pub(super) app: &'a App,
    pub(super) headers: &'a HeaderMap,
    pub(super) params: HashMap<String, String>,
    pub(super) target: Target,
    /// The namespace on the URL, "" when none.
    pub(super) namespace: String,
    pub(super) part: Part,
    /// Where the objects are stored (the type the client names, or the one it is a view of).
    pub(super) storage: ResourceType,
    /// Stored form → the client's form, and back.
    pub(super) to_client: Convert,
    pub(super) from_client: Convert,
    /// `as=PartialObjectMetadata` was asked for.
    pub(super) partial: bool,
}

impl Request<'_> {
    /// The type the client names.
    pub(super) fn resource(&self) -> &ResourceType {
        &self.target.resource
    }
}

/// A conversion between the stored form of an object and the client's.
type Convert = fn(Value) -> Value;

fn identity(value: Value) -> Value {
    value
}

pub(super) fn dispatch(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let store = &app.store;
    if matches!(*method, Method::POST | Method::PUT) && !body.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        if !content_type.starts_with("application/json") {
            return Err(ApiError::unsupported_media_type(content_type));
        }
    }
    let target = route(store, uri.path())?;
    let namespace = target.namespace.clone().unwrap_or_default();
    let resource = &target.resource;
    let part = match target.subresource.as_deref() {
        None => Part::Main,
        Some("status") if resource.status_subresource => Part::Status,
        Some("log") if resource.log_subresource => {
            let Some(runner) = &app.runner else {
                return Err(ApiError::not_implemented(
                    "pods/log without the local job runner",
                ));
            };
            return pod_log::pod_log(
                store,
                runner,
                resource,
                &namespace,
                target.name.as_deref().unwrap_or_default(),
                uri,
            );
        }
        Some(other) => {
            return Err(ApiError::no_resource(&format!(
                "{}/{other}",
                resource.plural
            )));
        }
    };
    // core/v1 events are a view of the stored events.k8s.io/v1 objects.
    let core_events = resource.group.is_empty() && resource.plural == "events";
    let storage = if core_events {
        store
            .resource("events.k8s.io", "v1", "events")
            .ok_or_else(|| ApiError::internal("events.k8s.io/v1 is not served"))?
    } else {
        resource.clone()
    };
    let (to_client, from_client): (Convert, Convert) = if core_events {
        (events::to_core, events::from_core)
    } else {
        (identity, identity)
    };
    let request = Request {
        store,
        app,
        headers,
        params: query(uri),
        namespace,
        part,
        storage,
        to_client,
        from_client,
        partial: wants_partial_metadata(headers),
        target,
    };
    match (method, request.target.name.clone()) {
        (&Method::GET, None) => super::read::list(&request),
        (&Method::GET, Some(name)) => super::read::get(&request, &name),
        (&Method::POST, None) => super::write::create(&request, body),
        (&Method::PUT, Some(name)) => super::write::replace(&request, &name, body),
        (&Method::PATCH, Some(name)) => super::write::patch(&request, &name, body),
        (&Method::DELETE, Some(name)) => super::delete::delete(&request, &name, body),
        (_, None) if method == Method::DELETE => {
            Err(ApiError::method_not_allowed("deletecollection"))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}
