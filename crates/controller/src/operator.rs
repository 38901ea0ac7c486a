//! Wiring: the kube-runtime Controller on ScaledJobs, fed by one watch each for ScaledJobs, their
//! Jobs and their Pods (the Job and Pod watches also fill the caches the polls count from), run
//! while this instance leads.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use jobtide_api::job::SCALED_JOB_NAME_LABEL;
use jobtide_api::{ClusterTriggerAuthentication, TriggerAuthentication};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod, ResourceQuota, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Predicate, PredicateConfig, predicates};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::watch;

use crate::coalesce;
use crate::context::Context;
use crate::kept_scaled_job::KeptScaledJob;
use crate::objects::Kind;
use crate::reconcile::{error_policy, reconcile};
use crate::shards::{Members, Sharding};

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

/// Keeps the watch events of the objects `owns(namespace, name)` accepts (`name`: the
/// ScaledJob's, for Jobs and pods its label), and every list boundary.
fn in_scope<K: Resource>(
    scope: Option<Arc<Members>>,
    scaled_job_name: fn(&K) -> Option<&str>,
) -> impl FnMut(&watcher::Event<K>) -> std::future::Ready<bool> {
    move |event| {
        let keep = match (event, &scope) {
            (_, None) | (watcher::Event::Init | watcher::Event::InitDone, _) => true,
            (
                watcher::Event::Apply(object)
                | watcher::Event::InitApply(object)
                | watcher::Event::Delete(object),
                Some(members),
            ) => {
                let namespace = object.meta().namespace.as_deref().unwrap_or_default();
                scaled_job_name(object).is_some_and(|name| members.owns(namespace, name))
            }
        };
        std::future::ready(keep)
    }
}

fn labelled_scaled_job<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .labels
        .as_ref()?
        .get(SCALED_JOB_NAME_LABEL)
        .map(String::as_str)
}

/// Runs the controller until `shutdown` resolves (then finishes the reconciles in flight) or
/// `stop` resolves (then drops them at once: leadership was lost). `ready` turns true when the
/// caches are synced. With `scope`, only the ScaledJobs this replica owns among those members are
/// watched, cached and reconciled (and their Jobs and pods cached). Returns the ScaledJobs it held.
pub async fn run_controller(
    context: Arc<Context>,
    ready: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    stop: impl Future<Output = ()>,
    scope: Option<Arc<Members>>,
) -> Vec<Arc<KeptScaledJob>> {
    let client = context.client.clone();
    let namespace = context.config.namespace.as_deref();
    let mut scaled_jobs_config = watcher::Config::default();
    if let Some(selector) = &context.config.label_selector {
        scaled_jobs_config = scaled_jobs_config.labels(selector);
    }
    // Full lists are quorum reads (not the API server's watch cache): a replica that starts
    // acting sees every Job the previous owner created (docs/operator.md, Sharding).
    let owned = watcher::Config::default()
        .labels(SCALED_JOB_NAME_LABEL)
        .list_semantic(watcher::ListSemantic::MostRecent);
    ready.send_replace(false);
    context.jobs.reset();
    context.pods.reset();
    let jobs = {
        let context = Arc::clone(&context);
        watcher(scoped::<Job>(&client, namespace), owned.clone())
            .default_backoff()
            .try_filter(in_scope(scope.clone(), labelled_scaled_job))
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
            .try_filter(in_scope(scope.clone(), labelled_scaled_job))
            .map_ok(move |event| {
                context.pods.apply(&event);
                event
            })
            .touched_objects()
    };
    // Capacity: the autoscaler's events on pods (field-selected by reason: only those travel)
    // and ResourceQuota changes (a quota-refused ScaledJob tries again).
    let autoscaler_events =
        futures::stream::select_all(crate::capacity::watch::REASONS.map(|reason| {
            let context = Arc::clone(&context);
            watcher(
                scoped::<CoreEvent>(&client, namespace),
                watcher::Config::default().fields(&format!("reason={reason}")),
            )
            .default_backoff()
            .map_ok(move |event| {
                context.autoscaler_events.apply(&event);
                event
            })
            .touched_objects()
            .boxed()
        }));
    let quotas = {
        let context = Arc::clone(&context);
        watcher(
            scoped::<ResourceQuota>(&client, namespace),
            watcher::Config::default(),
        )
        .default_backoff()
        .map_ok(move |event| {
            context.quota_changes.apply(&event);
            event
        })
        .touched_objects()
    };
    // A ScaledJob is reconciled when what it asks for changes — spec (generation), labels,
    // annotations (pause), finalizers, deletion — not when its status does: every poll writes
    // status, and a status write that re-triggered a poll would poll in a loop while active.
    let (store, writer) = reflector::store();
    // The store keeps each ScaledJob in a compact form ([`KeptScaledJob`]: without
    // managedFields and `kubectl apply`'s copy of the object, spec and status as JSON).
    let scaled_jobs = watcher(
        scoped::<KeptScaledJob>(&client, namespace),
        scaled_jobs_config,
    )
    .default_backoff()
    .try_filter(in_scope(scope.clone(), |sj: &KeptScaledJob| {
        sj.meta().name.as_deref()
    }))
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        predicates::generation
            .combine(predicates::labels)
            .combine(predicates::annotations)
            .combine(predicates::finalizers)
            .combine(|sj: &KeptScaledJob| sj.meta().deletion_timestamp.as_ref().map(|_| 1)),
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
            loop {
                context.metrics.set_owned(store.len());
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    };
    let running = controller
        .reconcile_on(job_and_pod_changes(jobs, pods, &store))
        .reconcile_on(changed_objects(&context))
        // A verdict shows at the next poll: an event names a pod, and a pod's ScaledJob is
        // known only from its labels (the pod's own change already re-polled it).
        .watches_stream(autoscaler_events, |_: CoreEvent| {
            None::<ObjectRef<KeptScaledJob>>
        })
        .watches_stream(quotas, quota_blocked(&store, &context))
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
    let releasing = {
        let context = Arc::clone(&context);
        async move {
            let mut every = tokio::time::interval(crate::context::MIN_CLIENT_IDLE);
            loop {
                every.tick().await;
                context.release_unused_clients();
            }
        }
    };
    tokio::select! {
        () = running => {}
        () = releasing => {}
        () = stop => tracing::warn!("stopped acting: leadership lost"),
        () = readiness => {}
    }
    context.stop_dispatchers();
    context.set_refresh(None);
    context.metrics.set_owned(0);
    store.state()
}

/// The ScaledJobs whose Jobs or pods changed (by their `scaledjob.keda.sh/name` label),
/// coalesced to one poll per [`coalesce::WINDOW`] for lag mode ([`crate::coalesce`]); a
/// dispatcher is woken at once (its next Job waits for the one that finished).
fn job_and_pod_changes(
    jobs: impl futures::Stream<Item = Result<Job, watcher::Error>> + Send + 'static,
    pods: impl futures::Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
    store: &reflector::Store<KeptScaledJob>,
) -> impl futures::Stream<Item = ObjectRef<KeptScaledJob>> + Send + 'static {
    fn owner<K: Resource>(changed: Result<K, watcher::Error>) -> Option<ObjectRef<KeptScaledJob>> {
        match changed {
            Ok(object) => {
                let meta = object.meta();
                let namespace = meta.namespace.as_deref()?;
                let scaled_job = meta.labels.as_ref()?.get(SCALED_JOB_NAME_LABEL)?;
                Some(ObjectRef::new(scaled_job).within(namespace))
            }
            Err(error) => {
                tracing::warn!(%error, "watching Jobs or pods");
                None
            }
        }
    }
    let changes = futures::stream::select(jobs.map(owner).boxed(), pods.map(owner).boxed())
        .filter_map(std::future::ready);
    let store = store.clone();
    coalesce::coalesce(changes, move |scaled_job: &ObjectRef<KeptScaledJob>| {
        let dispatch = store.get(scaled_job).is_some_and(|sj| sj.dispatch_mode());
        if dispatch {
            std::time::Duration::ZERO
        } else {
            coalesce::WINDOW
        }
    })
}

/// The ScaledJobs to re-poll because a Secret, ConfigMap or (Cluster)TriggerAuthentication
/// their triggers read changed or went: one metadata-only watch per kind (no Secret value
/// crosses it) feeding [`crate::objects::AuthObjects`]. Secrets and ConfigMaps are watched where
/// ScaledJobs are, and in the cluster object namespace (ClusterTriggerAuthentications read there).
fn changed_objects(
    context: &Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<KeptScaledJob>> + Send + 'static {
    let client = &context.client;
    let namespace = context.config.namespace.as_deref();
    let cluster = context.config.cluster_object_namespace.as_str();
    let mut namespaces = vec![namespace];
    if namespace.is_some_and(|n| n != cluster) {
        namespaces.push(Some(cluster));
    }
    let mut streams = Vec::new();
    for scope in namespaces {
        streams.push(invalidations(
            scoped::<PartialObjectMeta<Secret>>(client, scope),
            Kind::Secret,
            scope,
            context,
        ));
        streams.push(invalidations(
            scoped::<PartialObjectMeta<ConfigMap>>(client, scope),
            Kind::ConfigMap,
            scope,
            context,
        ));
    }
    streams.push(invalidations(
        scoped::<PartialObjectMeta<TriggerAuthentication>>(client, namespace),
        Kind::TriggerAuthentication,
        namespace,
        context,
    ));
    streams.push(invalidations(
        Api::<PartialObjectMeta<ClusterTriggerAuthentication>>::all(client.clone()),
        Kind::ClusterTriggerAuthentication,
        None,
        context,
    ));
    futures::stream::select_all(streams)
}

/// One kind's watch applied to the context's objects, as the ScaledJobs to re-poll.
fn invalidations<K>(
    api: Api<PartialObjectMeta<K>>,
    kind: Kind,
    scope: Option<&str>,
    context: &Arc<Context>,
) -> futures::stream::BoxStream<'static, ObjectRef<KeptScaledJob>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let context = Arc::clone(context);
    let scope = scope.map(str::to_owned);
    let mut relisted = std::collections::HashSet::new();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let stale = match event {
                Ok(event) => context
                    .objects
                    .apply(kind, scope.as_deref(), &event, &mut relisted),
                Err(error) => {
                    tracing::warn!(%error, kind = ?kind, "watching objects that triggers read");
                    Vec::new()
                }
            };
            std::future::ready(Some(futures::stream::iter(stale.into_iter().map(
                |(namespace, name)| ObjectRef::<KeptScaledJob>::new(&name).within(&namespace),
            ))))
        })
        .flatten()
        .boxed()
}

/// Maps a changed ResourceQuota to the ScaledJobs of its namespace a quota refusal holds back.
fn quota_blocked(
    store: &reflector::Store<KeptScaledJob>,
    context: &Arc<Context>,
) -> impl Fn(ResourceQuota) -> Vec<ObjectRef<KeptScaledJob>> + Send + Sync + 'static {
    let store = store.clone();
    let context = Arc::clone(context);
    move |quota: ResourceQuota| {
        let namespace = quota.metadata.namespace.as_deref();
        store
            .state()
            .iter()
            .filter(|sj| sj.meta().namespace.as_deref() == namespace)
            .filter(|sj| {
                sj.meta()
                    .uid
                    .as_deref()
                    .is_some_and(|uid| context.quota_blocked(uid))
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
    /// Share the ScaledJobs with the other replicas of the group: act on this replica's share
    /// while its member Lease is valid.
    Sharded(Box<Sharding>),
}

/// Stops every dispatcher when dropped: an operator task that is aborted stops acting too.
struct StopDispatchersOnDrop(Arc<Context>);

impl Drop for StopDispatchersOnDrop {
    fn drop(&mut self) {
        self.0.stop_dispatchers();
    }
}

/// The sharded operator: runs the membership rounds and, while this replica may act, the
/// controller on its share; a new member set restarts the controller on the new share, after
/// the ScaledJobs that went to others were released here.
async fn run_sharded(
    context: Arc<Context>,
    sharding: Sharding,
    ready: watch::Sender<bool>,
    shutdown: futures::future::Shared<std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
) {
    let (acting, mut acting_rx) = watch::channel(None::<Arc<Members>>);
    let (stopped, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let membership = sharding.run(acting, async move {
        let _ = stopped_rx.await;
    });
    let operator = async move {
        loop {
            // A replica that doesn't act is healthy and ready; it only waits.
            ready.send_replace(true);
            context.metrics.set_owned(0);
            let members = tokio::select! {
                changed = acting_rx.wait_for(Option::is_some) => match changed {
                    Ok(members) => members.clone(),
                    Err(_) => break,
                },
                () = shutdown.clone() => break,
            };
            let Some(members) = members else { break };
            context.metrics.set_leader(true);
            context.metrics.set_members(members.all.len());
            let mut changed = acting_rx.clone();
            let current = Arc::clone(&members);
            let held = run_controller(
                Arc::clone(&context),
                ready.clone(),
                shutdown.clone(),
                async move {
                    let _ = changed.wait_for(|now| now.as_ref() != Some(&current)).await;
                },
                Some(members),
            )
            .await;
            context.metrics.set_leader(false);
            // What another replica owns now is forgotten here (its state, dispatcher, series).
            let next = acting_rx.borrow().clone();
            for scaled_job in held {
                let name = scaled_job.meta().name.as_deref().unwrap_or_default();
                let namespace = scaled_job.meta().namespace.as_deref().unwrap_or_default();
                if !next.as_ref().is_some_and(|m| m.owns(namespace, name)) {
                    context.release(&scaled_job);
                }
            }
            if futures::FutureExt::now_or_never(shutdown.clone()).is_some() {
                break;
            }
        }
        context.metrics.set_owned(0);
        // Stopped acting: the membership may release the member Lease.
        let _ = stopped.send(());
    };
    tokio::join!(membership, operator);
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
    let shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(shutdown);
    let shutdown = futures::future::FutureExt::shared(shutdown);
    let operator = async move {
        let _stop_dispatchers = StopDispatchersOnDrop(Arc::clone(&context));
        match leadership {
            Leadership::Always => {
                context.metrics.set_leader(true);
                run_controller(context, ready, shutdown, std::future::pending(), None).await;
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
                        None,
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
            Leadership::Sharded(sharding) => {
                run_sharded(Arc::clone(&context), *sharding, ready, shutdown).await;
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
