//! An embedded, in-memory Kubernetes API server: how jobtide's controller tests run and what
//! `jobtide dev` serves. It emulates what jobtide uses faithfully and **refuses** (415 / 405 / 501
//! with a `metav1.Status`) what it doesn't emulate, never faking it.
//!
//! # Layout
//! - [`store`]: objects, resourceVersions, watch history and compaction, CRD registration.
//! - [`resources`]: the served types and discovery documents; [`schema`]: custom resources
//!   checked against their CRD's schema.
//! - [`server`]: routing, verbs, patches, list/watch, Table output ([`table`]).
//! - [`selectors`]: label and field selectors; [`decode`]: the JSON types the real server's
//!   decoder insists on; [`validation`]: the server's validation; [`status`]: `metav1.Status`
//!   errors.
//!
//! # Status
//! Not emulated yet (refused with 501/415): strategic merge
//! patch, server-side apply, `deletecollection`, dry runs, protobuf bodies, OpenAPI documents
//! (use `kubectl --validate=false`).
//! - `quota`: ResourceQuota admission of Job counts (`count/jobs.batch`).
//! - [`faults`]: fault injection and the request log for tests.
//! - [`runner`]: the local job runner (Jobs → pods → local processes, `pods/log`);
//!   [`volumes`]: its Secret and ConfigMap volumes as local directories.

pub mod decode;
pub mod events;
pub mod faults;
mod params;
mod quota;
pub mod resources;
pub mod runner;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod validation;
pub mod volumes;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use store::Store;

/// A running API server.
#[derive(Debug)]
pub struct DevCluster {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its store (for tests: inspect, compact).
    pub store: Arc<Store>,
    /// Fault injection and the request log.
    pub faults: Arc<faults::Faults>,
    /// The local job runner, when started with one.
    pub runner: Option<Arc<runner::Runner>>,
    runner_task: Option<tokio::task::JoinHandle<()>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl DevCluster {
    /// Starts a server on `addr` (port 0 picks a free port), requiring `token` as a bearer token
    /// when given.
    pub async fn start(addr: SocketAddr, token: Option<String>) -> std::io::Result<Self> {
        Self::start_with(addr, token, None).await
    }

    /// Starts a server with the local job runner: Jobs get pods, pods run as local processes.
    pub async fn start_with_runner(
        addr: SocketAddr,
        token: Option<String>,
        config: runner::RunnerConfig,
    ) -> std::io::Result<Self> {
        Self::start_with(addr, token, Some(config)).await
    }

    async fn start_with(
        addr: SocketAddr,
        token: Option<String>,
        runner_config: Option<runner::RunnerConfig>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store::new());
        let faults = Arc::new(faults::Faults::default());
        let runner = runner_config
            .as_ref()
            .map(|_| Arc::new(runner::Runner::default()));
        let runner_task = runner.as_ref().zip(runner_config).map(|(runner, config)| {
            tokio::spawn(Arc::clone(runner).run(Arc::clone(&store), config))
        });
        let app = Arc::new(server::App {
            store: Arc::clone(&store),
            token,
            faults: Arc::clone(&faults),
            runner: runner.clone(),
        });
        let router = axum::Router::new()
            .fallback(server::handle)
            .layer(axum::extract::DefaultBodyLimit::max(server::MAX_BODY + 1))
            .with_state(app);
        let (shutdown, stopped) = oneshot::channel();
        tokio::spawn(async move {
            // No Nagle delay on watch streams and small responses.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            store,
            faults,
            runner,
            runner_task,
            shutdown: Some(shutdown),
        })
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server (plain HTTP on loopback, no credentials), context
    /// `jobtide-dev`, namespace `default`; for kubectl and for processes the tests start.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
  - name: jobtide-dev
    cluster:
      server: {}
users:
  - name: jobtide-dev
    user: {{}}
contexts:
  - name: jobtide-dev
    context:
      cluster: jobtide-dev
      user: jobtide-dev
      namespace: default
current-context: jobtide-dev
",
            self.url()
        )
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Some(task) = self.runner_task.take() {
            task.abort();
        }
        if let Some(runner) = &self.runner {
            runner.stop_all();
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
