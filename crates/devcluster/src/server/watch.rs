//! Watches: the real server's resourceVersion rules, bookmarks, timeoutSeconds and streaming
//! lists, over the store's history and live changes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::params::flag;
use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::store::{Change, Store};

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
pub(super) fn watch(
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
