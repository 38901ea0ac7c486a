//! What the reconciler shares across ScaledJobs: the client, the Kafka clients, the caches, the
//! expectations, the metrics and the event recorders.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jobtide_api::ScaledJob;
use jobtide_core::status::Event;
use jobtide_kafka::kerberos::GssapiSupport;
use jobtide_kafka::source::SourcePool;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};

use crate::cache::{Expectations, OwnedCache, OwnerKey};
use crate::events::Publisher;
use crate::kept_scaled_job::KeptScaledJob;
use crate::metrics::Metrics;
use crate::objects::AuthObjects;
use crate::state::{ScaledJobState, StateKey};

/// The least time a Kafka client nobody uses stays open.
pub(crate) const MIN_CLIENT_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// How the operator runs (the `jobtide operator` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// The version written to Jobs (`app.kubernetes.io/version`) and `keda_build_info`.
    pub operator_version: String,
    /// Where ClusterTriggerAuthentications find their Secrets (KEDA's `KEDA_CLUSTER_OBJECT_NAMESPACE`).
    pub cluster_object_namespace: String,
    /// This replica's name in events' `reportingInstance`.
    pub instance: String,
    /// Watch ScaledJobs (and their Jobs and Pods) of this namespace only; `None`: all.
    pub namespace: Option<String>,
    /// Reconcile only ScaledJobs matching this label selector.
    pub label_selector: Option<String>,
    /// Reconciles running at once (0: no limit).
    pub max_concurrent_reconciles: u16,
    /// Measure every Kafka trigger against these brokers instead of its `bootstrapServers`
    /// (`jobtide dev`: in-cluster addresses in manifests reach the local broker).
    pub bootstrap_servers_override: Option<Vec<String>>,
    /// Whether GSSAPI triggers may connect (off by default: see `jobtide_kafka::kerberos`).
    pub gssapi: GssapiSupport,
    /// Whether the operator exports traces (the process installed an OpenTelemetry tracer
    /// provider with [`crate::trace_ids::FixedIds`]): then a dispatched Job's `TRACEPARENT` names
    /// its own span (docs/observability.md); else it is the message's header, passed on.
    pub traces: bool,
    /// Keep each ScaledJob's lag per partition over the last minutes
    /// ([`crate::lag_history`], [`Context::lag_history`]): `jobtide dev`'s live page. A
    /// dispatch ScaledJob's backlog is then measured once per `pollingInterval` as well.
    pub lag_history: bool,
    /// How old `status.lastActiveTime` must be before an active poll writes it again (D19;
    /// zero: every active poll, KEDA's behaviour).
    pub last_active_time_refresh: std::time::Duration,
}

impl Config {
    /// Defaults for tests and `jobtide dev`: all namespaces, no selector, KEDA's cluster object
    /// namespace `keda`.
    pub fn new(operator_version: &str, instance: &str) -> Self {
        Self {
            operator_version: operator_version.into(),
            cluster_object_namespace: jobtide_api::resolve::DEFAULT_CLUSTER_OBJECT_NAMESPACE.into(),
            instance: instance.into(),
            namespace: None,
            label_selector: None,
            max_concurrent_reconciles: 0,
            bootstrap_servers_override: None,
            gssapi: GssapiSupport::Disabled,
            traces: false,
            lag_history: false,
            last_active_time_refresh: jobtide_core::status::LAST_ACTIVE_REFRESH,
        }
    }
}

/// What the reconciler shares across ScaledJobs.
pub struct Context {
    pub(crate) client: Client,
    pub(crate) config: Config,
    pub(crate) pool: Arc<SourcePool>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) jobs: OwnedCache<Job>,
    pub(crate) pods: OwnedCache<Pod>,
    pub(crate) expectations: Expectations,
    /// The Secrets, ConfigMaps and authentications trigger resolution reads.
    pub(crate) objects: AuthObjects,
    /// What the cluster autoscaler and Karpenter last said about pods.
    pub(crate) autoscaler_events: crate::capacity::watch::AutoscalerEvents,
    /// ResourceQuota changes per namespace.
    pub(crate) quota_changes: crate::capacity::watch::QuotaChanges,
    /// Per ScaledJob (by uid): everything remembered between its reconciles.
    states: Mutex<HashMap<StateKey, ScaledJobState>>,
    events: Publisher,
    /// Asks the running controller to reconcile a ScaledJob now (a dispatcher whose ledger
    /// moved, so that its status follows); `None` while no controller runs.
    refresh: Mutex<Option<tokio::sync::mpsc::UnboundedSender<ObjectRef<KeptScaledJob>>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, config: Config) -> Self {
        let pool = Arc::new(
            SourcePool::with_statistics(std::time::Duration::from_secs(15))
                .with_gssapi(config.gssapi.clone()),
        );
        Self {
            events: Publisher::new(client.clone(), &config.instance),
            metrics: Arc::new(Metrics::new(Arc::clone(&pool), &config.operator_version)),
            client,
            config,
            pool,
            // A poll reads a Job's metadata and status and a pod's phase and conditions:
            // the caches keep only those (`crate::kept`).
            jobs: OwnedCache::default(),
            pods: OwnedCache::default(),
            expectations: Expectations::default(),
            objects: AuthObjects::default(),
            autoscaler_events: crate::capacity::watch::AutoscalerEvents::default(),
            quota_changes: crate::capacity::watch::QuotaChanges::default(),
            states: Mutex::new(HashMap::new()),
            refresh: Mutex::new(None),
        }
    }

    /// Publishes Events through `client` instead of the context's own: the operator gives
    /// Events a client with a rate limit of their own, as controller-runtime's event recorder
    /// (KEDA's) has its own clientset, so that the Events of a start don't queue the polls'
    /// status writes and Job creations behind them (docs/operator.md, "API rate limit").
    #[must_use]
    pub fn with_event_client(mut self, client: Client) -> Self {
        self.events = Publisher::new(client, &self.config.instance);
        self
    }

    /// The Job watch shows `job` (before the cache stores it): a Job seen changing to finished
    /// counts in the Job series once ([`crate::job_metrics`]).
    pub(crate) fn job_changed(&self, job: &Job) {
        use crate::job_metrics::{JobEnd, JobTimes};
        let Some(end) = JobEnd::of(job) else {
            return;
        };
        let (Some(namespace), Some(name)) = (&job.metadata.namespace, &job.metadata.name) else {
            return;
        };
        let Some(owner) = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(jobtide_api::job::SCALED_JOB_NAME_LABEL))
        else {
            return;
        };
        if self
            .jobs
            .get(namespace, name)
            .is_some_and(|seen| JobEnd::of(&seen).is_some())
        {
            return;
        }
        let owner = (namespace.clone(), owner.clone());
        let times = JobTimes::of(job, &self.pods.of(&owner), std::time::SystemTime::now());
        self.metrics.jobs.finished(&owner, end, &times);
    }

    /// Runs `f` on the state of the ScaledJob `uid` (created empty on first use).
    pub(crate) fn with_state<T>(&self, uid: &str, f: impl FnOnce(&mut ScaledJobState) -> T) -> T {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(states.entry(StateKey::of(uid)).or_default())
    }

    /// Runs `f` on the state of the ScaledJob `uid` if it has one (never creates it: a deleted
    /// ScaledJob's state stays gone).
    pub(crate) fn with_existing_state(&self, uid: &str, f: impl FnOnce(&mut ScaledJobState)) {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(state) = states.get_mut(&StateKey::of(uid)) {
            f(state);
        }
    }

    /// Where [`Self::refresh`] sends (set by the controller while it runs).
    pub(crate) fn set_refresh(
        &self,
        sender: Option<tokio::sync::mpsc::UnboundedSender<ObjectRef<KeptScaledJob>>>,
    ) {
        *self
            .refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = sender;
    }

    /// Reconciles `scaled_job` soon (its status is behind what its dispatcher knows).
    pub(crate) fn refresh(&self, scaled_job: &ScaledJob) {
        let guard = self
            .refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = guard.as_ref() {
            let meta = scaled_job.meta();
            if let (Some(name), Some(namespace)) = (&meta.name, &meta.namespace) {
                let _ = sender.send(ObjectRef::new(name).within(namespace));
            }
        }
    }

    /// Stops every dispatcher (leadership lost, or shutdown): no message is read and no Job
    /// created after this returns, except by a step already under way.
    pub(crate) fn stop_dispatchers(&self) {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for state in states.values_mut() {
            state.dispatcher = None;
        }
    }

    /// Forgets a ScaledJob another replica owns now: its dispatcher stops, its state, its
    /// expectations and its per-ScaledJob metric series go (the new owner starts afresh: the
    /// Jobs are counted from its own full list, a dispatcher rebuilds from the commits).
    pub(crate) fn release(&self, scaled_job: &KeptScaledJob) {
        let owner = (
            scaled_job.meta().namespace.clone().unwrap_or_default(),
            scaled_job.meta().name.clone().unwrap_or_default(),
        );
        if let Some(gone) = scaled_job
            .meta()
            .uid
            .as_deref()
            .and_then(|uid| self.forget(uid))
            && let Some(types) = gone.registered
        {
            self.metrics.unregistered(&owner, &types);
        }
        self.metrics.forget(&owner);
        self.metrics.capacity.forget(&owner);
        self.expectations.forget(&owner);
        self.objects.forget(&owner);
    }

    /// Whether a quota refusal holds back the ScaledJob `uid`'s Jobs.
    pub(crate) fn quota_blocked(&self, uid: &str) -> bool {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&StateKey::of(uid))
            .is_some_and(|state| state.quota_block().is_some())
    }

    /// Drops the state of a deleted ScaledJob, returning it.
    pub(crate) fn forget(&self, uid: &str) -> Option<ScaledJobState> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&StateKey::of(uid))
    }

    /// Closes the Kafka clients no trigger used for three times the longest `pollingInterval`
    /// (at least [`MIN_CLIENT_IDLE`]): those of deleted ScaledJobs, and those of credentials
    /// that were rotated (the new ones got a client of their own).
    pub(crate) fn release_unused_clients(&self) {
        let longest = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter_map(|state| state.interval)
            .max()
            .unwrap_or_default();
        let closed = self.pool.release_unused((longest * 3).max(MIN_CLIENT_IDLE));
        if closed > 0 {
            tracing::debug!(closed, "closed unused Kafka clients");
        }
    }

    /// Records trigger `trigger`'s measurement of the ScaledJob `uid` at `now`, when
    /// [`Config::lag_history`] is on: `(topic, partition, lag)` each.
    pub(crate) fn record_lag<'a>(
        &self,
        scaled_job: &ScaledJob,
        trigger: usize,
        now: std::time::SystemTime,
        partitions: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) {
        if !self.config.lag_history {
            return;
        }
        let owner = Self::owner(scaled_job);
        let uid = scaled_job.meta().uid.clone().unwrap_or_default();
        self.with_existing_state(&uid, |state| {
            let (key, history) = &mut **state.lag.get_or_insert_with(Default::default);
            key.clone_from(&owner);
            history.record(trigger, now, partitions);
        });
    }

    /// Every ScaledJob's lag per partition over the last minutes (empty unless
    /// [`Config::lag_history`]), by namespace and name.
    pub fn lag_history(&self) -> Vec<crate::lag_history::ScaledJobLag> {
        let states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<_> = states
            .values()
            .filter_map(|state| state.lag.as_deref())
            .map(
                |((namespace, name), history)| crate::lag_history::ScaledJobLag {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    partitions: history.series(),
                },
            )
            .collect();
        all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        all
    }

    /// The metrics this operator exports.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Whether the Job and Pod caches hold a full list.
    pub fn caches_ready(&self) -> bool {
        self.jobs.is_ready() && self.pods.is_ready()
    }

    pub(crate) fn owner(scaled_job: &ScaledJob) -> OwnerKey {
        (
            scaled_job.meta().namespace.clone().unwrap_or_default(),
            scaled_job.meta().name.clone().unwrap_or_default(),
        )
    }

    pub(crate) async fn publish(&self, scaled_job: &ScaledJob, events: &[Event]) {
        for event in events {
            if let Err(error) = self.events.publish(scaled_job, event).await {
                tracing::warn!(%error, reason = event.reason, "publishing an event failed");
            }
        }
    }
}
