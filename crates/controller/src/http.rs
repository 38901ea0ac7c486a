//! The operator's HTTP endpoints: `/metrics` (Prometheus text, OpenMetrics format), `/healthz`
//! (the operator's task runs) and `/readyz` (the caches are synced, or this instance is a standby).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::operator::Health;

#[derive(Clone)]
struct Endpoints {
    metrics: Arc<Metrics>,
    health: Health,
}

/// Binds `addr` (a clear error when it is taken) and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(addr, metrics, health, Router::new(), shutdown).await
}

/// [`serve`], with the routes of `extra` as well (`jobtide dev`'s live page).
pub async fn serve_with(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { metrics, health })
        .merge(extra);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "the metrics and health server stopped");
        }
    });
    Ok((bound, task))
}

async fn metrics_text(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        endpoints.metrics.encode(),
    )
}

async fn healthz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    if endpoints.health.is_alive() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the operator's task stopped",
        )
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    if endpoints.health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}
