//! An embedded, in-memory Kubernetes API server: how jobtide's controller tests run and what
//! `jobtide dev` serves. It emulates what jobtide uses faithfully and **refuses** (415 / 405 / 501
//! with a `metav1.Status`) what it doesn't emulate, never faking it.
//!
//! # Layout (a newcomer's map)
//! A request goes: [`server`] (auth, faults, request log, discovery) → `server::route` (path →
//! type, namespace, name) → `server::dispatch` → a verb (`server::read` / `write` / `delete`,
//! watches in `server::watch`) → [`store`]. The runner's Job controller and scheduler work on the
//! store beside the server; its kubelet, the [`node`] agent, is a client of the server over HTTP.
//!
//! - [`store`]: objects and resourceVersions (`store/mod.rs`), the watch history
//!   (`store::history`), writes to existing objects (`store::modify`), deletion and garbage
//!   collection (`store::gc`), Secret/Job defaulting (`store::defaulting`), the CRD registry
//!   (`store::crds`).
//! - [`resources`]: the served types and discovery documents; [`schema`]: custom resources
//!   checked against their CRD's schema.
//! - [`server`]: routing, verbs, patches, list/watch, `pods/log`; Table output ([`table`]).
//! - [`selectors`]: label and field selectors; `params`: query parameters; [`decode`]: the JSON
//!   types the real server's decoder insists on; [`validation`]: the server's validation;
//!   [`status`]: `metav1.Status` errors; [`events`]: core/v1 events as a view of events.k8s.io.
//! - `quota`: ResourceQuota admission of Job counts (`count/jobs.batch`).
//! - [`faults`]: fault injection and the request log for tests.
//! - [`runner`]: the local job runner of the embedded server — its loop (`runner/mod.rs`), Job
//!   controller (`runner::job_controller`) and scheduler (`runner::scheduler`: pods bound to
//!   nodes by requests against allocatable).
//! - [`node`]: the node agent, jobtide's kubelet through the Kubernetes API (the same code for
//!   the embedded and a real apiserver): Node and Lease (`node::register`), the pod loop
//!   (`node::pods`), node resources (`node::resources`), a pod's output bounded to its newest
//!   10 MiB (`node::output`).
//! - [`process`]: a pod's first container as a local process and the pod status it reports;
//!   [`env`](mod@env): its environment; [`volumes`]: its Secret and ConfigMap volumes as local
//!   directories.
//!
//! # Status
//! Not emulated yet (refused with 501/415): strategic merge
//! patch, server-side apply, `deletecollection`, dry runs, protobuf bodies, OpenAPI documents
//! (use `kubectl --validate=false`).

pub mod autoscaler;
pub mod decode;
pub mod env;
pub mod events;
pub mod faults;
pub mod node;
mod params;
pub mod process;
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
    /// The bearer token it requires, if any.
    token: Option<String>,
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
        let runner_task = runner
            .as_ref()
            .map(|runner| tokio::spawn(Arc::clone(runner).run(Arc::clone(&store))));
        let app = Arc::new(server::App {
            store: Arc::clone(&store),
            token: token.clone(),
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
        let cluster = Self {
            addr,
            store,
            faults,
            runner,
            runner_task,
            shutdown: Some(shutdown),
            token,
        };
        if let (Some(runner), Some(config)) = (&cluster.runner, runner_config) {
            // The kubelet speaks to this server over HTTP, as it would to a real one.
            let kubeconfig = kube::config::Kubeconfig::from_yaml(&cluster.kubeconfig())
                .map_err(std::io::Error::other)?;
            let client_config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(std::io::Error::other)?;
            let client = kube::Client::try_from(client_config).map_err(std::io::Error::other)?;
            runner
                .start_agent(client, &config)
                .await
                .map_err(std::io::Error::other)?;
        }
        Ok(cluster)
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server (plain HTTP on loopback; its bearer token if it has one), context
    /// `jobtide-dev`, namespace `default`; for kubectl and for processes the tests start.
    pub fn kubeconfig(&self) -> String {
        let user = self.token.as_ref().map_or_else(
            || "{}".to_owned(),
            |token| serde_json::json!({"token": token}).to_string(),
        );
        format!(
            "apiVersion: v1
kind: Config
clusters:
  - name: jobtide-dev
    cluster:
      server: {}
users:
  - name: jobtide-dev
    user: {user}
contexts:
  - name: jobtide-dev
    context:
      cluster: jobtide-dev
      user: jobtide-dev
      namespace: default
current-context: jobtide-dev
",
            self.url(),
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
