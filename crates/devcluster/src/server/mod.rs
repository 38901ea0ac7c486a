//! The HTTP layer: authentication, faults and the request log, discovery, then one API request
//! at a time.
//!
//! - this file: the handler, discovery, media types;
//! - `route`: the path → type, namespace, name, subresource;
//! - `dispatch`: a request resolved and handed to its verb: `read` (get, list, watch),
//!   `write` (create, update, patch), `delete`;
//! - `body`: request bodies; `watch`: watch streams; `pod_log`: `pods/log`.

mod body;
mod delete;
mod dispatch;
mod pod_log;
mod read;
mod route;
mod watch;
mod write;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::faults::{Faults, Injected, RequestRecord};
use crate::resources::Registry;
use crate::status::ApiError;
use crate::store::Store;
use body::too_large;
use dispatch::dispatch;
use route::classify;

/// Shared server state.
#[derive(Debug)]
pub struct App {
    pub store: Arc<Store>,
    pub token: Option<String>,
    pub faults: Arc<Faults>,
    pub runner: Option<Arc<crate::runner::Runner>>,
}

/// The largest request body accepted (the real server's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, &self.body)
    }
}

/// The one handler: everything under the API server's URL space.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // A body over the limit is the real server's 413 Status, not a bare text answer.
    let Ok(body) = body else {
        return too_large().into_response();
    };
    let (verb, resource) = classify(&app.store, &method, &uri);
    let delay = app.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let logged_body = content_type
        .as_deref()
        .filter(|c| c.contains("json"))
        .and_then(|_| serde_json::from_slice(&body).ok());
    let mut record = RequestRecord {
        verb: verb.clone(),
        resource: resource.clone(),
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        content_type,
        body: logged_body,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status: 0,
    };
    let response =
        match app
            .faults
            .injected(&verb, resource.as_deref(), record.user_agent.as_deref())
        {
            Some(Injected::Instead(error, retry_after)) => {
                let mut response = error.into_response();
                if let Some(seconds) = retry_after
                    && let Ok(value) = seconds.to_string().parse()
                {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            Some(Injected::After(error)) => {
                drop(serve(Arc::clone(&app), method, uri, headers, body));
                error.into_response()
            }
            None => serve(Arc::clone(&app), method, uri, headers, body),
        };
    record.status = response.status().as_u16();
    app.faults.log(record);
    response
}

/// Answers one request (after authentication, faults and delays).
fn serve(app: Arc<App>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &app.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if presented != Some(&format!("Bearer {token}")) {
            return ApiError::unauthorized().into_response();
        }
    }
    let path = uri.path();
    match (method.clone(), path) {
        (Method::GET, "/version") => {
            return json_response(
                200,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-jobtide-dev",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc",
                "platform": "linux/amd64"}),
            );
        }
        (Method::GET, "/api" | "/apis") if wants_aggregated(&headers) => {
            let body = app.store.registry().aggregated(path == "/api");
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, AGGREGATED_DISCOVERY)],
                body.to_string(),
            )
                .into_response();
        }
        (Method::GET, "/api") => return json_response(200, &Registry::core_versions()),
        (Method::GET, "/apis") => return json_response(200, &app.store.registry().group_list()),
        (Method::GET, "/healthz" | "/livez" | "/readyz") => {
            return (StatusCode::OK, "ok").into_response();
        }
        _ => {}
    }
    if method == Method::GET {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let discovery = match segments.as_slice() {
            ["api", version] => Some(("", *version)),
            ["apis", group, version] => Some((*group, *version)),
            _ => None,
        };
        if let Some((group, version)) = discovery {
            return match app.store.registry().resource_list(group, version) {
                Some(list) => json_response(200, &list),
                None => ApiError::no_resource(path).into_response(),
            };
        }
        if segments.first() == Some(&"openapi") {
            return ApiError::no_resource(path).into_response();
        }
    }
    match dispatch(&app, &method, &uri, &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The media type of aggregated discovery documents.
const AGGREGATED_DISCOVERY: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client prefers aggregated discovery (its first Accept entry).
fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|accept| accept.split(',').next())
        .is_some_and(|first| first.contains("g=apidiscovery.k8s.io") && first.contains("v=v2"))
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

/// `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` (kube-rs's
/// `metadata_watcher`, client-go's metadata informers).
fn wants_partial_metadata(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|accept| accept.split(',').next())
        .is_some_and(|first| first.contains("as=PartialObjectMetadata"))
}

/// An object reduced to its metadata, as the real server answers a metadata request.
fn partial_metadata(object: Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}
