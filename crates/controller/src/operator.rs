//! Wiring: the kube-runtime Controller on ScaledJobs, fed by one watch each for ScaledJobs, their
//! Jobs and their Pods (the Job and Pod watches also fill the caches the polls count from), run
//! while this instance leads.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use jobtide_api::job::SCALED_JOB_NAME_LABEL;
use jobtide_api::scaledjob::AuthenticationKind;
use jobtide_api::{ClusterTriggerAuthentication, ScaledJob, TriggerAuthentication};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Predicate, PredicateConfig, predicates};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::watch;

use crate::context::Context;
use crate::reconcile::{error_policy, reconcile};

/// Liveness (the operator's task runs) and readiness (the ScaledJob, Job and Pod caches hold a
/// full list, or this instance is a standby).
#[derive(Debug, Clone)]
pub struct Health {
    ready: watch::Receiver<bool>,
    alive: watch::Receiver<bool>,
}

impl Health {
    /// Whether `/readyz` answers OK.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow() && self.is_alive()
    }

    /// Whether `/healthz` answers OK: false once the operator's task has ended or panicked.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` resolves (then finishes the reconciles in flight) or
/// `stop` resolves (then drops them at once: leadership was lost). `ready` turns true when the
/// caches are synced.
pub async fn run_controller(
    context: Arc<Context>,
    ready: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    stop: impl Future<Output = ()>,
) {
    let client = context.client.clone();
    let namespace = context.config.namespace.as_deref();
    let mut scaled_jobs_config = watcher::Config::default();
    if let Some(selector) = &context.config.label_selector {
        scaled_jobs_config = scaled_jobs_config.labels(selector);
    }
    let owned = watcher::Config::default().labels(SCALED_JOB_NAME_LABEL);
    ready.send_replace(false);
    context.jobs.reset();
    context.pods.reset();
    let jobs = {
        let context = Arc::clone(&context);
        watcher(scoped::<Job>(&client, namespace), owned.clone())
            .default_backoff()
            .map_ok(move |event| {
                if let watcher::Event::Apply(job) = &event {
                    context.job_changed(job);
                }
                context.jobs.apply(&event);
                event
            })
            .touched_objects()
    };
    let pods = {
        let context = Arc::clone(&context);
        watcher(scoped::<Pod>(&client, namespace), owned)
            .default_backoff()
            .map_ok(move |event| {
                context.pods.apply(&event);
                event
            })
            .touched_objects()
    };
    // A ScaledJob is reconciled when what it asks for changes — spec (generation), labels,
    // annotations (pause), finalizers, deletion — not when its status does: every poll writes
    // status, and a status write that re-triggered a poll would poll in a loop while active.
    let (store, writer) = reflector::store();
    let scaled_jobs = watcher(scoped::<ScaledJob>(&client, namespace), scaled_jobs_config)
        .default_backoff()
        // Real API servers send managedFields with every object; nothing here reads them.
        .modify(|sj| sj.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::labels)
                .combine(predicates::annotations)
                .combine(predicates::finalizers)
                .combine(|sj: &ScaledJob| sj.metadata.deletion_timestamp.as_ref().map(|_| 1)),
            PredicateConfig::default(),
        );
    // Dispatchers ask for a reconcile when their ledger moved, so that status follows.
    let (refresh, refreshes) = tokio::sync::mpsc::unbounded_channel();
    context.set_refresh(Some(refresh));
    let refreshes = futures::stream::unfold(refreshes, |mut receiver| async move {
        receiver.recv().await.map(|reference| (reference, receiver))
    });
    let controller = Controller::for_stream(scaled_jobs, store.clone()).with_config(
        controller::Config::default().concurrency(context.config.max_concurrent_reconciles),
    );
    let readiness = {
        let context = Arc::clone(&context);
        let store = store.clone();
        async move {
            if store.wait_until_ready().await.is_ok() {
                context.jobs.wait_ready().await;
                context.pods.wait_ready().await;
                tracing::info!("caches synced; ready");
                ready.send_replace(true);
            }
            std::future::pending::<()>().await;
        }
    };
    let running = controller
        .owns_stream(jobs)
        .watches_stream(
            metadata_changes(scoped::<PartialObjectMeta<Secret>>(&client, namespace)),
            dependents(&store, &context, Source::Object),
        )
        .watches_stream(
            metadata_changes(scoped::<PartialObjectMeta<ConfigMap>>(&client, namespace)),
            dependents(&store, &context, Source::Object),
        )
        .watches_stream(
            metadata_changes(scoped::<PartialObjectMeta<TriggerAuthentication>>(
                &client, namespace,
            )),
            dependents(&store, &context, Source::TriggerAuthentication),
        )
        .watches_stream(
            metadata_changes(Api::<PartialObjectMeta<ClusterTriggerAuthentication>>::all(
                client.clone(),
            )),
            dependents(&store, &context, Source::ClusterTriggerAuthentication),
        )
        .watches_stream(pods, |pod: Pod| {
            let namespace = pod.metadata.namespace.clone()?;
            let scaled_job = pod.metadata.labels.as_ref()?.get(SCALED_JOB_NAME_LABEL)?;
            Some(ObjectRef::<ScaledJob>::new(scaled_job).within(&namespace))
        })
        .reconcile_on(refreshes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::clone(&context))
        .for_each(|result| async move {
            if let Err(error) = result {
                match error {
                    // The reconciler's own errors were logged by the error policy.
                    controller::Error::ReconcilerFailed(..) => {}
                    other => tracing::warn!(error = %other, "controller"),
                }
            }
        });
    tokio::select! {
        () = running => {}
        () = stop => tracing::warn!("stopped acting: leadership lost"),
        () = readiness => {}
    }
    context.stop_dispatchers();
    context.set_refresh(None);
}

/// Every change of `K`'s objects, metadata only (no Secret value is held).
fn metadata_changes<K>(
    api: Api<PartialObjectMeta<K>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
}

/// What changed, for [`dependents`].
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A Secret or ConfigMap.
    Object,
    TriggerAuthentication,
    ClusterTriggerAuthentication,
}

/// Maps a changed Secret, ConfigMap or (Cluster)TriggerAuthentication to the ScaledJobs whose
/// trigger resolution may read it, so that a change is picked up at once rather than at the
/// next poll. Secrets and ConfigMaps map by namespace (which ones a TriggerAuthentication reads
/// is only known after resolving it); authentications map by name.
fn dependents<O: Resource>(
    store: &reflector::Store<ScaledJob>,
    context: &Arc<Context>,
    source: Source,
) -> impl Fn(O) -> Vec<ObjectRef<ScaledJob>> + Send + Sync + 'static {
    let store = store.clone();
    let cluster_namespace = context.config.cluster_object_namespace.clone();
    move |changed: O| {
        let meta = changed.meta();
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        store
            .state()
            .iter()
            .filter(|sj| {
                let same_namespace = sj.metadata.namespace.as_deref() == Some(namespace);
                let refs = || {
                    sj.spec
                        .triggers
                        .iter()
                        .filter_map(|t| t.authentication_ref.as_ref())
                };
                match source {
                    Source::Object => {
                        (same_namespace && crate::facts::reads_objects(&sj.spec))
                            || (namespace == cluster_namespace
                                && refs().any(|r| {
                                    r.kind == Some(AuthenticationKind::ClusterTriggerAuthentication)
                                }))
                    }
                    Source::TriggerAuthentication => {
                        same_namespace
                            && refs().any(|r| {
                                r.name == name
                                    && r.kind
                                        != Some(AuthenticationKind::ClusterTriggerAuthentication)
                            })
                    }
                    Source::ClusterTriggerAuthentication => refs().any(|r| {
                        r.name == name
                            && r.kind == Some(AuthenticationKind::ClusterTriggerAuthentication)
                    }),
                }
            })
            .map(|sj| ObjectRef::from_obj(sj.as_ref()))
            .collect()
    }
}

/// How the operator decides who acts.
#[derive(Debug)]
pub enum Leadership {
    /// Act at once (one replica, or `jobtide dev`).
    Always,
    /// Act only while holding the Lease.
    Elected(Box<crate::leader::Elector>),
}

/// Runs the operator until `shutdown` resolves: the controller while this instance leads,
/// releasing the lease at the end. Returns the readiness to serve on `/readyz`.
pub fn spawn(
    context: Arc<Context>,
    leadership: Leadership,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> (Health, tokio::task::JoinHandle<()>) {
    let (ready, ready_rx) = watch::channel(false);
    let (alive, alive_rx) = watch::channel(true);
    let health = Health {
        ready: ready_rx,
        alive: alive_rx,
    };
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let operator = async move {
        match leadership {
            Leadership::Always => {
                context.metrics.set_leader(true);
                run_controller(context, ready, shutdown, std::future::pending()).await;
            }
            Leadership::Elected(elector) => {
                let (leading, mut leading_rx) = watch::channel(false);
                let election = tokio::spawn((*elector).run(leading, Box::pin(shutdown.clone())));
                loop {
                    // A standby is healthy and ready; it only waits.
                    ready.send_replace(true);
                    tokio::select! {
                        changed = leading_rx.wait_for(|leading| *leading) => {
                            if changed.is_err() { break; }
                        }
                        () = shutdown.clone() => break,
                    }
                    context.metrics.set_leader(true);
                    let mut lost = leading_rx.clone();
                    run_controller(
                        Arc::clone(&context),
                        ready.clone(),
                        shutdown.clone(),
                        async move {
                            let _ = lost.wait_for(|leading| !*leading).await;
                        },
                    )
                    .await;
                    context.metrics.set_leader(false);
                    if futures::FutureExt::now_or_never(shutdown.clone()).is_some() {
                        break;
                    }
                }
                // The election releases the lease once it sees the shutdown.
                let _ = election.await;
            }
        }
    };
    (health, supervise(operator, alive))
}

/// Spawns `operator`; whether it ends or panics, `alive` turns false (`/healthz` fails).
fn supervise(
    operator: impl Future<Output = ()> + Send + 'static,
    alive: watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ended = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(operator)).await;
        alive.send_replace(false);
        if ended.is_err() {
            tracing::error!("the operator's task panicked");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_or_ending_operator_task_is_no_longer_alive() {
        for panics in [true, false] {
            let (alive, alive_rx) = watch::channel(true);
            let (ready, ready_rx) = watch::channel(true);
            let health = Health {
                ready: ready_rx,
                alive: alive_rx,
            };
            let (go, wait) = tokio::sync::oneshot::channel::<()>();
            let task = supervise(
                async move {
                    let _ = wait.await;
                    assert!(!panics, "the controller panicked");
                },
                alive,
            );
            assert!(
                health.is_alive() && health.is_ready(),
                "alive while it runs"
            );
            go.send(()).ok();
            task.await.ok();
            assert!(!health.is_alive(), "panics: {panics}");
            assert!(!health.is_ready());
            drop(ready);
        }
    }
}
