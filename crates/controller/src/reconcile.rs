//! The reconcile: KEDA's reconcile steps (§2.2), then one poll (§2.4) decided by `jobtide-core`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use jobtide_api::ScaledJob;
use jobtide_api::facts::job_facts;
use jobtide_api::job::{SCALED_JOB_NAME_LABEL, job_for};
use jobtide_api::resolve::{MissingEnvSource, ObjectSet, resolve_triggers};
use jobtide_api::scaledjob::Condition as ApiCondition;
use jobtide_api::validation::check_scaled_job;
use jobtide_core::jobs::{Propagation, RolloutStrategy, rollout_deletions};
use jobtide_core::lag::PersistentLagMemory;
use jobtide_core::pause::{PAUSED_ANNOTATION, is_paused};
use jobtide_core::poll::{PollInput, PollPolicy, TriggerResult, decide_poll};
use jobtide_core::status::{
    Condition, ConditionStatus, Conditions, Event, EventType, ReconcileOutcome, Reporter,
    after_reconcile,
};
use jobtide_kafka::scaler::measure_trigger;
use jobtide_kafka::source::SourcePool;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{
    Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter as KubeReporter,
};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::facts;

/// KEDA's finalizer on ScaledJobs.
pub const FINALIZER: &str = "finalizer.keda.sh";

/// Why a reconcile failed (it is retried with a delay).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// What the reconciler shares across ScaledJobs.
pub struct Context {
    client: Client,
    pool: SourcePool,
    operator_version: String,
    cluster_object_namespace: String,
    memories: Mutex<HashMap<(String, usize), PersistentLagMemory>>,
    started: Mutex<HashSet<String>>,
    operator: Recorder,
    scale_handler: Recorder,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `client`; `instance` names this operator replica in events.
    pub fn new(
        client: Client,
        operator_version: &str,
        cluster_object_namespace: &str,
        instance: &str,
    ) -> Self {
        let reporter = |controller: &str| KubeReporter {
            controller: controller.into(),
            instance: Some(instance.into()),
        };
        Self {
            operator: Recorder::new(client.clone(), reporter(Reporter::Operator.name())),
            scale_handler: Recorder::new(client.clone(), reporter(Reporter::ScaleHandler.name())),
            client,
            pool: SourcePool::new(),
            operator_version: operator_version.into(),
            cluster_object_namespace: cluster_object_namespace.into(),
            memories: Mutex::new(HashMap::new()),
            started: Mutex::new(HashSet::new()),
        }
    }

    async fn publish(&self, scaled_job: &ScaledJob, events: &[Event]) {
        let reference = scaled_job.object_ref(&());
        for event in events {
            let recorder = match event.reporter {
                Reporter::Operator => &self.operator,
                Reporter::ScaleHandler => &self.scale_handler,
            };
            let published = KubeEvent {
                type_: match event.type_ {
                    EventType::Normal => KubeEventType::Normal,
                    EventType::Warning => KubeEventType::Warning,
                },
                reason: event.reason.into(),
                note: Some(event.note.clone()),
                action: event.action.chars().take(128).collect(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&published, &reference).await {
                tracing::warn!(%error, reason = event.reason, "publishing an event failed");
            }
        }
    }
}

/// Runs the controller until the stream ends.
pub async fn run(context: Arc<Context>) {
    let scaled_jobs: Api<ScaledJob> = Api::all(context.client.clone());
    let jobs: Api<Job> = Api::all(context.client.clone());
    Controller::new(scaled_jobs, watcher::Config::default())
        .owns(
            jobs,
            watcher::Config::default().labels(SCALED_JOB_NAME_LABEL),
        )
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::warn!(%error, "reconcile failed");
            }
        })
        .await;
}

fn error_policy(_: Arc<ScaledJob>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "requeueing after an error");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(scaled_job: Arc<ScaledJob>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = scaled_job.namespace().unwrap_or_default();
    let api: Api<ScaledJob> = Api::namespaced(context.client.clone(), &namespace);
    finalizer(&api, FINALIZER, scaled_job, |event| async {
        match event {
            FinalizerEvent::Apply(scaled_job) => apply(&scaled_job, &context).await,
            FinalizerEvent::Cleanup(scaled_job) => {
                context
                    .publish(&scaled_job, &[Event::scalers_stopped(), Event::deleted()])
                    .await;
                if let Some(uid) = scaled_job.uid()
                    && let Ok(mut started) = context.started.lock()
                {
                    started.remove(&uid);
                }
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

fn read_conditions(scaled_job: &ScaledJob) -> Option<Conditions> {
    let list = scaled_job.status.as_ref()?.conditions.as_ref()?;
    let find = |type_: &str| {
        list.iter().find(|c| c.type_ == type_).map(|c| Condition {
            status: ConditionStatus::parse(&c.status),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        })
    };
    Some(Conditions {
        ready: find("Ready")?,
        active: find("Active")?,
        fallback: find("Fallback")?,
        paused: find("Paused")?,
    })
}

fn write_conditions(conditions: &Conditions) -> Vec<ApiCondition> {
    conditions
        .by_type()
        .iter()
        .map(|(type_, c)| ApiCondition {
            type_: (*type_).into(),
            status: c.status.as_str().into(),
            reason: Some(c.reason.clone()).filter(|r| !r.is_empty()),
            message: Some(c.message.clone()).filter(|m| !m.is_empty()),
        })
        .collect()
}

async fn patch_status(api: &Api<ScaledJob>, name: &str, status: Value) -> Result<(), Error> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

fn joined_distinct<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut seen = Vec::new();
    for value in values {
        if !value.is_empty() && !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen.join(",")
}

async fn apply(scaled_job: &ScaledJob, context: &Context) -> Result<Action, Error> {
    let name = scaled_job.name_any();
    let namespace = scaled_job.namespace().unwrap_or_default();
    let api: Api<ScaledJob> = Api::namespaced(context.client.clone(), &namespace);
    let spec = &scaled_job.spec;
    let mut conditions = match read_conditions(scaled_job) {
        Some(conditions) => conditions,
        None => {
            let initial = Conditions::initial();
            patch_status(
                &api,
                &name,
                json!({"conditions": write_conditions(&initial)}),
            )
            .await?;
            initial
        }
    };
    let paused = is_paused(
        scaled_job
            .annotations()
            .get(PAUSED_ANNOTATION)
            .map(String::as_str),
    );
    let findings = check_scaled_job(&name, spec);
    let outcome = if findings.is_valid() {
        ReconcileOutcome::Ready { paused }
    } else {
        ReconcileOutcome::Failed {
            message: "ScaledJob doesn't have correct triggers specification".into(),
        }
    };
    let (next, events) = after_reconcile(&conditions, &outcome);
    let triggers_types = joined_distinct(spec.triggers.iter().map(|t| t.type_.as_str()));
    let authentications = joined_distinct(
        spec.triggers
            .iter()
            .filter_map(|t| t.authentication_ref.as_ref())
            .map(|a| a.name.as_str()),
    );
    patch_status(
        &api,
        &name,
        json!({"conditions": write_conditions(&next), "triggersTypes": triggers_types, "authenticationsTypes": authentications}),
    )
    .await?;
    context.publish(scaled_job, &events).await;
    conditions = next;
    match outcome {
        ReconcileOutcome::Failed { .. } => return Ok(Action::requeue(Duration::from_secs(30))),
        ReconcileOutcome::Ready { paused: true } => return Ok(Action::await_change()),
        ReconcileOutcome::Ready { paused: false } => {}
    }
    rollout(scaled_job, context).await?;
    if let Some(uid) = scaled_job.uid() {
        let first = context.started.lock().is_ok_and(|mut s| s.insert(uid));
        if first {
            let mut started = vec![Event::scalers_started()];
            started.extend(spec.triggers.iter().map(|t| Event::scaler_built(&t.type_)));
            context.publish(scaled_job, &started).await;
        }
    }
    poll(scaled_job, context, &api, &conditions).await?;
    let interval = u64::try_from(spec.polling_interval_seconds())
        .unwrap_or(30)
        .max(1);
    Ok(Action::requeue(Duration::from_secs(interval)))
}

/// §4.6: under `immediate`, Jobs of other generations go (D1: unset means gradual).
async fn rollout(scaled_job: &ScaledJob, context: &Context) -> Result<(), Error> {
    let rollout = scaled_job.spec.rollout();
    if rollout.strategy == RolloutStrategy::Gradual {
        return Ok(());
    }
    let namespace = scaled_job.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let listed = jobs
        .list(&ListParams::default().labels(&format!(
            "{SCALED_JOB_NAME_LABEL}={}",
            scaled_job.name_any()
        )))
        .await?;
    let facts: Vec<_> = listed.items.iter().map(|job| job_facts(job, &[])).collect();
    let doomed = rollout_deletions(&facts, scaled_job.metadata.generation.unwrap_or(0), rollout);
    if doomed.is_empty() {
        return Ok(());
    }
    context
        .publish(scaled_job, &[Event::rollout_cleanup_started(doomed.len())])
        .await;
    let params = match rollout.propagation {
        Propagation::Foreground => DeleteParams::foreground(),
        Propagation::Background => DeleteParams::background(),
    };
    for name in &doomed {
        if let Err(error) = jobs.delete(name, &params).await {
            context
                .publish(
                    scaled_job,
                    &[Event::rollout_cleanup_failed(name, &error.to_string())],
                )
                .await;
            return Err(error.into());
        }
    }
    context
        .publish(
            scaled_job,
            &[Event::rollout_cleanup_completed(doomed.len())],
        )
        .await;
    Ok(())
}

/// §2.4: measure every trigger, count Jobs, let `core` decide, act.
async fn poll(
    scaled_job: &ScaledJob,
    context: &Context,
    api: &Api<ScaledJob>,
    conditions: &Conditions,
) -> Result<(), Error> {
    let name = scaled_job.name_any();
    let namespace = scaled_job.namespace().unwrap_or_default();
    let spec = &scaled_job.spec;
    let uid = scaled_job.uid().unwrap_or_default();
    // Objects are listed only when a trigger's resolution reads some.
    let objects = if facts::reads_objects(spec) {
        facts::fetch(
            &context.client,
            &[&namespace, &context.cluster_object_namespace],
        )
        .await?
    } else {
        ObjectSet::default()
    };
    let timeout = Duration::from_secs(
        u64::try_from(spec.polling_interval_seconds())
            .unwrap_or(30)
            .clamp(1, 10),
    );
    let resolved = resolve_triggers(
        &objects,
        &namespace,
        spec,
        &context.cluster_object_namespace,
        MissingEnvSource::Fail,
    );
    let mut triggers = Vec::with_capacity(resolved.len());
    for (index, resolved) in resolved.into_iter().enumerate() {
        let metric_name = resolved
            .parsed
            .metric_name
            .clone()
            .unwrap_or_else(|| format!("s{index}-{}", spec.triggers[index].type_));
        let measurement = match (resolved.resolve_error, resolved.parsed.config) {
            (Some(error), _) => Err(error.to_string()),
            (None, Err(error)) => Err(error.to_string()),
            (None, Ok(config)) => {
                let key = (uid.clone(), index);
                let previous = context
                    .memories
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&key).cloned())
                    .unwrap_or_default();
                match measure_trigger(&context.pool, &config, None, &previous, timeout).await {
                    Ok(measured) => {
                        if let Ok(mut memories) = context.memories.lock() {
                            memories.insert(key, measured.memory.clone());
                        }
                        Ok(measured.to_scaling(config.lag()))
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
        };
        triggers.push(TriggerResult {
            metric_name,
            measurement,
        });
    }

    let jobs_api: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let selector = ListParams::default().labels(&format!("{SCALED_JOB_NAME_LABEL}={name}"));
    let jobs = jobs_api.list(&selector).await?.items;
    let pods = pods_api.list(&selector).await?.items;
    let mut pods_by_job: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in &pods {
        if let Some(job) = pod.labels().get("job-name") {
            pods_by_job.entry(job.as_str()).or_default().push(pod);
        }
    }
    let facts: Vec<_> = jobs
        .iter()
        .map(|job| {
            job_facts(
                job,
                pods_by_job
                    .get(job.name_any().as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            )
        })
        .collect();
    let decision = decide_poll(&PollInput {
        triggers: &triggers,
        jobs: &facts,
        policy: PollPolicy {
            bounds: spec.bounds(),
            strategy: spec.scaling_strategy(),
            aggregation: spec.aggregation(),
            pending_pod_conditions: spec.pending_pod_conditions(),
            history_limits: spec.history_limits(),
        },
        conditions,
        now: SystemTime::now(),
    });

    let mut events = Vec::new();
    for _ in 0..decision.jobs.create {
        let result = match job_for(scaled_job, &context.operator_version) {
            Ok(job) => jobs_api
                .create(&PostParams::default(), &job)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = result {
            events.push(Event::job_create_failed(&format!("{name}-"), &error));
        }
    }
    for doomed in &decision.delete {
        jobs_api.delete(doomed, &DeleteParams::background()).await?;
    }
    events.extend(decision.events.iter().cloned());
    let mut activity = serde_json::Map::new();
    for (metric, active) in &decision.triggers_activity {
        activity.insert(metric.clone(), json!({"isActive": active}));
    }
    for stale in scaled_job
        .status
        .as_ref()
        .and_then(|s| s.triggers_activity.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        activity.entry(stale.clone()).or_insert(Value::Null);
    }
    let mut status =
        json!({"conditions": write_conditions(&decision.conditions), "triggersActivity": activity});
    if let Some(at) = decision.last_active_time {
        let at = jiff::Timestamp::try_from(at)
            .ok()
            .and_then(|t| t.round(jiff::Unit::Second).ok());
        status["lastActiveTime"] = json!(at.map(|t| t.to_string()));
    }
    patch_status(api, &name, status).await?;
    context.publish(scaled_job, &events).await;
    Ok(())
}
