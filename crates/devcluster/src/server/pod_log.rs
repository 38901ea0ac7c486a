//! `pods/log`, served from the local job runner's record of each pod's output.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::params::{flag, query};
use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::store::Store;

/// `pods/log`: the process output so far, or with `follow` a stream of it until the pod has
/// terminated.
pub(super) fn pod_log(
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
        let mut sent: u64 = 0;
        loop {
            let phase = store.get(&pods, &namespace, &name).ok().and_then(|p| {
                p.pointer("/status/phase")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            // `sent` counts every byte written, dropped ones too: the agent keeps only the
            // newest 10 MiB, and what was dropped before it was read is skipped.
            let output = runner.output(&namespace, &name).unwrap_or_default();
            let end = output.dropped() + output.bytes().len() as u64;
            if end > sent {
                let from = usize::try_from(sent.saturating_sub(output.dropped())).unwrap_or(0);
                if sender
                    .send(Ok(Bytes::copy_from_slice(&output.bytes()[from..])))
                    .await
                    .is_err()
                {
                    return;
                }
                sent = end;
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
