//! `jobtide dev`'s live page, served at its metrics address: `GET /` (the page), `/live.js`
//! (the script that draws it) and `/live/state.json` (what it polls every 2 s).
//!
//! The page and script are plain files compiled in (`include_str!`), no build step. The script
//! puts every value into the page as text (`textContent`, SVG attributes it computes) and never
//! as markup, so a tenant-controlled name or topic such as `<img src=x onerror=…>` shows as
//! text; the page's Content-Security-Policy allows only this server's script besides.
//!
//! The state is [`view::build`] over the embedded API server's ScaledJobs, Jobs and Pods and
//! the operator's lag history ([`jobtide_controller::Context::lag_history`]).

pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jobtide_api::ScaledJob;
use jobtide_controller::Context;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("live.js");
/// Scripts and data from this server only; no inline script, no plugins, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                      style-src 'unsafe-inline'; img-src 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct Live {
    client: kube::Client,
    context: Arc<Context>,
}

/// The page's routes, reading the API server through `client` and the lag history of
/// `context`.
pub fn router(client: kube::Client, context: Arc<Context>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/live.js", get(script))
        .route("/live/state.json", get(state))
        .with_state(Live { client, context })
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn state(State(live): State<Live>) -> Response {
    let all = ListParams::default();
    let (scaled_jobs, jobs, pods) = (
        Api::<ScaledJob>::all(live.client.clone()),
        Api::<Job>::all(live.client.clone()),
        Api::<Pod>::all(live.client.clone()),
    );
    let listed = tokio::try_join!(scaled_jobs.list(&all), jobs.list(&all), pods.list(&all));
    let (scaled_jobs, jobs, pods) = match listed {
        Ok(listed) => listed,
        Err(error) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("listing from the API server: {error}"),
            )
                .into_response();
        }
    };
    let state = view::build(
        std::time::SystemTime::now(),
        &scaled_jobs.items,
        &jobs.items,
        &pods.items,
        live.context.lag_history(),
    );
    match serde_json::to_string(&state) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
