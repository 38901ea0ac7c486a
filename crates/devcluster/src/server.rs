//! The HTTP layer: path routing, verbs, content types, list/watch, errors.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::faults::{Faults, Injected, RequestRecord};
use crate::params::{check_list, flag, query, watch_timeout};
use crate::resources::{Registry, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Change, DeleteOptions, Part, Propagation, Store};
use crate::{decode, events, table};

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

/// Where a request points.
struct Target {
    resource: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(store: &Store, path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_resource(path)),
    };
    let lookup = |plural: &str| {
        store
            .resource(group, version, plural)
            .ok_or_else(|| ApiError::no_resource(path))
    };
    // Names and namespaces arrive percent-encoded (`my%2Dname` is `my-name`).
    let decoded = |segment: &str| {
        crate::params::path_segment(segment).ok_or_else(|| {
            ApiError::bad_request(format!("the path segment {segment:?} is not valid"))
        })
    };
    let target = |resource,
                  namespace: Option<&str>,
                  name: Option<&&str>,
                  sub: Option<&&str>|
     -> Result<Target, ApiError> {
        Ok(Target {
            resource,
            namespace: namespace.map(decoded).transpose()?,
            name: name.map(|n| decoded(n)).transpose()?,
            subresource: sub.map(|s| (*s).to_owned()),
        })
    };
    match rest {
        ["namespaces", namespace, plural, tail @ ..]
            if store
                .resource(group, version, plural)
                .is_some_and(|r| r.namespaced)
                && tail.len() <= 2 =>
        {
            target(lookup(plural)?, Some(namespace), tail.first(), tail.get(1))
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let resource = lookup(plural)?;
            if resource.namespaced && !tail.is_empty() {
                return Err(ApiError::no_resource(path));
            }
            target(resource, None, tail.first(), tail.get(1))
        }
        _ => Err(ApiError::no_resource(path)),
    }
}

/// The verb and resource of a request, as RBAC and the fault matchers name them.
fn classify(store: &Store, method: &Method, uri: &Uri) -> (String, Option<String>) {
    let Ok(target) = route(store, uri.path()) else {
        return ("discovery".into(), None);
    };
    let watching = query(uri)
        .get("watch")
        .is_some_and(|v| v == "true" || v == "1");
    let verb = match (method.as_str(), target.name.is_some()) {
        ("GET", false) if watching => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => other,
    };
    (verb.to_owned(), Some(target.resource.plural))
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

/// DeleteOptions of the wrong shape are the real server's 400 (`{"preconditions": 5}` deleted
/// the object before).
fn check_delete_options(options: &Value) -> Result<(), ApiError> {
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
fn too_large() -> ApiError {
    ApiError::failure(
        413,
        "RequestEntityTooLarge",
        &format!("Request entity too large: limit is {MAX_BODY}"),
        Value::Null,
    )
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
    })
}

fn check_kind(resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
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

fn dispatch(
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
    let params = query(uri);
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
            return pod_log(
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
    let to_client: fn(Value) -> Value = if core_events {
        events::to_core
    } else {
        identity
    };
    let from_client: fn(Value) -> Value = if core_events {
        events::from_core
    } else {
        identity
    };
    let storage = &storage;
    let partial = wants_partial_metadata(headers);
    match (method, target.name.as_deref()) {
        (&Method::GET, None) => {
            check_list(&params)?;
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
            if flag(&params, "watch") {
                let timeout = watch_timeout(&params)?;
                return Ok(watch(
                    store,
                    app.faults.watch_epoch(),
                    (storage.clone(), resource.clone()),
                    if partial { partial_metadata } else { to_client },
                    (target.namespace.clone(), timeout),
                    &params,
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
        (&Method::GET, Some(name)) => {
            let object = to_client(store.get(storage, &namespace, name)?);
            if partial {
                return Ok(json_response(200, &partial_metadata(object)));
            }
            if wants_table(headers) {
                let rv = store.resource_version();
                return Ok(json_response(200, &table::table(resource, &[object], rv)));
            }
            Ok(json_response(200, &object))
        }
        (&Method::POST, None) => {
            if part != Part::Main {
                return Err(ApiError::method_not_allowed("POST on a subresource"));
            }
            let object = parse_body(body)?;
            check_kind(resource, &object)?;
            decode::check(resource, &object).map_err(|e| e.bad_request(resource))?;
            if let (Some(url_ns), Some(body_ns)) = (
                target.namespace.as_deref(),
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
            if flag(&params, "dryRun") || params.contains_key("dryRun") {
                return Err(ApiError::not_implemented("dryRun"));
            }
            let created = to_client(store.create(storage, &namespace, from_client(object))?);
            Ok(json_response(201, &created))
        }
        (&Method::PUT, Some(name)) => {
            let object = parse_body(body)?;
            check_kind(resource, &object)?;
            decode::check(resource, &object).map_err(|e| e.bad_request(resource))?;
            Ok(json_response(
                200,
                &to_client(store.update(storage, &namespace, name, part, from_client(object))?),
            ))
        }
        (&Method::PATCH, Some(name)) => {
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
                "application/merge-patch+json" => {
                    store.modify(storage, &namespace, name, part, |old| {
                        let mut new = to_client(old.clone());
                        json_patch::merge(&mut new, &patch);
                        decode::check(resource, &new)
                            .map_err(|e| e.invalid_patch(resource, name))?;
                        Ok(from_client(new))
                    })?
                }
                "application/json-patch+json" => {
                    let operations: json_patch::Patch =
                        serde_json::from_value(patch).map_err(|e| {
                            ApiError::bad_request(format!(
                                "the JSON patch could not be decoded: {e}"
                            ))
                        })?;
                    store.modify(storage, &namespace, name, part, |old| {
                        let mut new = to_client(old.clone());
                        apply_json_patch(&mut new, &operations).map_err(|e| {
                            ApiError::invalid(resource, name, &[(String::new(), format!("the server rejected our request due to an error in our request: {e}"))])
                        })?;
                        decode::check(resource, &new)
                            .map_err(|e| e.invalid_patch(resource, name))?;
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
        (&Method::DELETE, Some(name)) => {
            if part != Part::Main {
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
                .or(params.get("propagationPolicy").map(String::as_str));
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
            let deleted = store.delete(
                storage,
                &namespace,
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
            Ok(json_response(200, &to_client(deleted)))
        }
        (_, None) if method == Method::DELETE => {
            Err(ApiError::method_not_allowed("deletecollection"))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
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

/// `pods/log`: the process output so far, or with `follow` a stream of it until the pod has
/// terminated.
fn pod_log(
    store: &Arc<Store>,
    runner: &Arc<crate::runner::Runner>,
    pods: &ResourceType,
    namespace: &str,
    name: &str,
    uri: &Uri,
) -> Result<Response, ApiError> {
    store.get(pods, namespace, name)?;
    if !flag(&query(uri), "follow") {
        let logs = runner.logs(namespace, name).unwrap_or_default();
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], logs).into_response());
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    let (runner, store, pods) = (Arc::clone(runner), Arc::clone(store), pods.clone());
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    tokio::spawn(async move {
        let mut sent = 0;
        loop {
            let phase = store.get(&pods, &namespace, &name).ok().and_then(|p| {
                p.pointer("/status/phase")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            let logs = runner.logs(&namespace, &name).unwrap_or_default();
            if logs.len() > sent {
                if sender
                    .send(Ok(Bytes::copy_from_slice(&logs[sent..])))
                    .await
                    .is_err()
                {
                    return;
                }
                sent = logs.len();
            }
            if !matches!(phase.as_deref(), Some("Pending" | "Running")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ))
        .map_err(|_| ApiError::internal("building the log stream"))
}

fn identity(value: Value) -> Value {
    value
}

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

fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": event_type, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn bookmark(resource: &ResourceType, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata}),
    )
}

/// Sleeps until `deadline`, or forever when there is none (a timeout beyond the clock's range).
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A watch: the real server's resourceVersion rules, bookmarks, timeoutSeconds, streaming lists.
fn watch(
    store: &Arc<Store>,
    mut epoch: tokio::sync::watch::Receiver<u64>,
    (resource, client_resource): (ResourceType, ResourceType),
    to_client: fn(Value) -> Value,
    (namespace, timeout): (Option<String>, Duration),
    params: &HashMap<String, String>,
    keep: impl Fn(&Value) -> bool + Send + Sync + 'static,
) -> Response {
    let requested: Option<u64> = params
        .get("resourceVersion")
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok());
    let send_initial = flag(params, "sendInitialEvents");
    let bookmarks = flag(params, "allowWatchBookmarks");
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(256);
    let store = Arc::clone(store);
    let matches_resource = {
        let resource = resource.clone();
        let namespace = namespace.clone();
        move |change: &Change| {
            change.resource == (resource.group.clone(), resource.plural.clone())
                && namespace.as_deref().is_none_or(|ns| ns == change.namespace)
        }
    };
    tokio::spawn(async move {
        // Initial state: synthetic ADDED events for rv unset/0 or a streaming list.
        let (start, initial) = match requested.filter(|rv| *rv > 0 && !send_initial) {
            Some(rv) => (rv, Vec::new()),
            None => {
                let (items, rv) = store.list(&resource, namespace.as_deref(), &keep);
                (rv, items)
            }
        };
        let (backlog, mut live) = match store.watch_from(start, &matches_resource) {
            Ok(found) => found,
            Err(oldest) => {
                let _ = sender
                    .send(Ok(line("ERROR", &ApiError::expired(start, oldest).body)))
                    .await;
                return;
            }
        };
        for item in &initial {
            if sender
                .send(Ok(line("ADDED", &to_client(item.clone()))))
                .await
                .is_err()
            {
                return;
            }
        }
        if send_initial
            && bookmarks
            && sender
                .send(Ok(bookmark(&client_resource, start, true)))
                .await
                .is_err()
        {
            return;
        }
        let mut last = start;
        for change in backlog {
            if keep(&change.object)
                && sender
                    .send(Ok(line(
                        change.type_.as_str(),
                        &to_client(Value::clone(&change.object)),
                    )))
                    .await
                    .is_err()
            {
                return;
            }
            last = change.rv;
        }
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        ticks.tick().await;
        loop {
            tokio::select! {
                () = sleep_until(deadline) => return,
                _ = epoch.changed() => return,
                _ = ticks.tick() => {
                    if bookmarks && sender.send(Ok(bookmark(&client_resource, last.max(store.resource_version()), false))).await.is_err() {
                        return;
                    }
                }
                next = live.recv() => match next {
                    Ok(change) => {
                        if change.rv <= last || !matches_resource(&change) {
                            continue;
                        }
                        last = change.rv;
                        if keep(&change.object) && sender.send(Ok(line(change.type_.as_str(), &to_client(Value::clone(&change.object))))).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let _ = sender.send(Ok(line("ERROR", &ApiError::expired(last, store.resource_version()).body))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building the watch response").into_response())
}
