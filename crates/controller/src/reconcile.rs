//! The reconcile: KEDA's reconcile steps (§2.2), then one poll (§2.4) decided by `jobtide-core`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jobtide_api::ScaledJob;
use jobtide_api::facts::jobs_facts;
use jobtide_api::job::job_for;
use jobtide_api::resolve::{MissingEnvSource, ObjectSet, resolve_triggers};
use jobtide_api::scaledjob::Condition as ApiCondition;
use jobtide_api::validation::check_scaled_job;
use jobtide_core::jobs::JobFacts;
use jobtide_core::jobs::{Propagation, RolloutStrategy, rollout_deletions};
use jobtide_core::pause::{PAUSED_ANNOTATION, is_paused};
use jobtide_core::poll::{PollInput, PollPolicy, TriggerResult, decide_poll};
use jobtide_core::status::{
    Condition, ConditionStatus, Conditions, Event, ReconcileOutcome, after_reconcile,
};
use jobtide_kafka::scaler::measure_trigger;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::context::{Context, Started};
use crate::facts;
use crate::metrics::ScalerLabels;

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
    /// The Job and Pod caches didn't fill in time.
    #[error("the Job and Pod caches are not synced yet")]
    CachesNotReady,
}

pub(crate) fn error_policy(scaled_job: Arc<ScaledJob>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(
        scaled_job = %scaled_job.name_any(),
        namespace = scaled_job.namespace().unwrap_or_default(),
        %error,
        "reconcile failed; retrying in 5s"
    );
    Action::requeue(Duration::from_secs(5))
}

pub(crate) async fn reconcile(
    scaled_job: Arc<ScaledJob>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let began = Instant::now();
    // The first poll after a (re)start counts Jobs only from a full cache (no Job beyond the
    // strategy's decision after a restart mid-burst).
    if !context.caches_ready() {
        tokio::time::timeout(Duration::from_secs(30), async {
            context.jobs.wait_ready().await;
            context.pods.wait_ready().await;
        })
        .await
        .map_err(|_| Error::CachesNotReady)?;
    }
    let namespace = scaled_job.namespace().unwrap_or_default();
    let api: Api<ScaledJob> = Api::namespaced(context.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, scaled_job, |event| async {
        match event {
            FinalizerEvent::Apply(scaled_job) => apply(&scaled_job, &context).await,
            FinalizerEvent::Cleanup(scaled_job) => {
                context
                    .publish(&scaled_job, &[Event::scalers_stopped(), Event::deleted()])
                    .await;
                let owner = Context::owner(&scaled_job);
                if let Some(uid) = scaled_job.uid()
                    && let Ok(mut started) = context.started.lock()
                    && let Some(gone) = started.remove(&uid)
                {
                    context.metrics.unregistered(&owner, &gone.trigger_types);
                }
                context.expectations.forget(&owner);
                if let (Some(uid), Ok(mut memories)) = (scaled_job.uid(), context.memories.lock()) {
                    memories.retain(|(of, _), _| *of != uid);
                }
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    context
        .metrics
        .reconciled(result.is_ok(), began.elapsed().as_secs_f64());
    result
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
        let types: Vec<String> = spec.triggers.iter().map(|t| t.type_.clone()).collect();
        let first = context.started.lock().is_ok_and(|mut started| {
            let mut first = false;
            started.entry(uid).or_insert_with(|| {
                first = true;
                Started {
                    trigger_types: types.clone(),
                    next_due: None,
                }
            });
            first
        });
        if first {
            context.metrics.registered(&namespace, &types);
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
    let owner = Context::owner(scaled_job);
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let (facts, _) = current_jobs(context, scaled_job);
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
        let deleted = match jobs.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        };
        if deleted.is_ok() {
            context.expectations.deleted(&owner, name);
            context.metrics.job_deleted(&owner, "rollout");
        }
        if let Err(error) = deleted {
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

/// The ScaledJob's Jobs (with their pods) from the caches, corrected by what this operator did
/// that the Job cache hasn't shown yet (KEDA #2488: a Job created last poll but not yet seen
/// would be created again); and how many created Jobs were added that way.
fn current_jobs(context: &Context, scaled_job: &ScaledJob) -> (Vec<JobFacts>, usize) {
    let owner = Context::owner(scaled_job);
    let jobs = context.jobs.of(&owner);
    let listed: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.metadata.name.as_deref())
        .collect();
    let adjustment = context.expectations.adjust(&owner, &listed, Instant::now());
    let jobs: Vec<_> = jobs
        .into_iter()
        .filter(|job| {
            !adjustment
                .still_listed_deleted
                .iter()
                .any(|d| Some(d.as_str()) == job.metadata.name.as_deref())
        })
        .collect();
    let mut facts = jobs_facts(&jobs, &context.pods.of(&owner));
    let generation = scaled_job.metadata.generation.unwrap_or(0).to_string();
    facts.extend(adjustment.unseen_created.iter().map(|created| JobFacts {
        name: created.clone(),
        generation: Some(generation.clone()),
        ..JobFacts::default()
    }));
    (facts, adjustment.unseen_created.len())
}

/// The scaler name KEDA puts in metric labels: the trigger's `name`, else its Go type's name.
fn scaler_name(trigger: &jobtide_api::scaledjob::ScaleTrigger) -> String {
    match trigger.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => match trigger.type_.as_str() {
            "apache-kafka" => "apacheKafkaScaler".into(),
            other => format!("{}Scaler", other.replace('-', "")),
        },
    }
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
    let owner = Context::owner(scaled_job);
    let spec = &scaled_job.spec;
    let uid = scaled_job.uid().unwrap_or_default();
    let interval = Duration::from_secs(
        u64::try_from(spec.polling_interval_seconds())
            .unwrap_or(30)
            .max(1),
    );
    let began = Instant::now();
    if let Ok(mut started) = context.started.lock()
        && let Some(state) = started.get_mut(&uid)
    {
        if let Some(due) = state.next_due {
            context
                .metrics
                .loop_lateness(&owner, began.saturating_duration_since(due).as_secs_f64());
        }
        state.next_due = Some(began + interval);
    }
    // Objects are listed only when a trigger's resolution reads some.
    let objects = if facts::reads_objects(spec) {
        facts::fetch(
            &context.client,
            &[&namespace, &context.config.cluster_object_namespace],
        )
        .await?
    } else {
        ObjectSet::default()
    };
    let timeout = interval.clamp(Duration::from_secs(1), Duration::from_secs(10));
    let resolved = resolve_triggers(
        &objects,
        &namespace,
        spec,
        &context.config.cluster_object_namespace,
        MissingEnvSource::Fail,
    );
    let mut triggers = Vec::with_capacity(resolved.len());
    let mut series = Vec::with_capacity(resolved.len());
    for (index, resolved) in resolved.into_iter().enumerate() {
        let trigger = &spec.triggers[index];
        let metric_name = resolved
            .parsed
            .metric_name
            .clone()
            .unwrap_or_else(|| format!("s{index}-{}", trigger.type_));
        let labels = ScalerLabels {
            namespace: namespace.clone(),
            metric: metric_name.clone(),
            scaledObject: name.clone(),
            scaler: scaler_name(trigger),
            triggerIndex: index.to_string(),
            r#type: "scaledjob".into(),
        };
        let measured_at = Instant::now();
        let measurement = match (resolved.resolve_error, resolved.parsed.config) {
            (Some(error), _) => Err(("config", error.to_string())),
            (None, Err(error)) => Err(("config", error.to_string())),
            (None, Ok(config)) => {
                let key = (uid.clone(), index);
                let previous = context
                    .memories
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&key).cloned())
                    .unwrap_or_default();
                match measure_trigger(
                    &context.pool,
                    &config,
                    context.config.bootstrap_servers_override.as_deref(),
                    &previous,
                    timeout,
                )
                .await
                {
                    Ok(measured) => {
                        if let Ok(mut memories) = context.memories.lock() {
                            memories.insert(key, measured.memory.clone());
                        }
                        Ok(measured.to_scaling(config.lag()))
                    }
                    Err(error) => Err((error.category(), error.to_string())),
                }
            }
        };
        context.metrics.measured(
            &labels,
            measured_at.elapsed().as_secs_f64(),
            match &measurement {
                Ok(m) => Ok((m.queue_length, m.active)),
                Err((category, _)) => Err(category),
            },
        );
        series.push(labels);
        triggers.push(TriggerResult {
            metric_name,
            measurement: measurement.map_err(|(_, message)| message),
        });
    }
    context.metrics.keep_series(&owner, series);

    // Jobs and pods from the caches, corrected by what this operator did that the Job cache
    // hasn't shown yet (KEDA #2488: a Job created last poll but not yet seen would be
    // created again).
    let (facts, unseen_created) = current_jobs(context, scaled_job);
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
    tracing::debug!(
        scaled_job = %name,
        %namespace,
        create = decision.jobs.create,
        delete = decision.delete.len(),
        unseen_created,
        "poll decided"
    );

    let jobs_api: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let mut events = Vec::new();
    for _ in 0..decision.jobs.create {
        let result = match job_for(scaled_job, &context.config.operator_version) {
            Ok(job) => jobs_api
                .create(&PostParams::default(), &job)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match result {
            Ok(created) => {
                context.expectations.created(&owner, &created.name_any());
                context.metrics.job_created(&owner, true);
            }
            Err(error) => {
                context.metrics.job_created(&owner, false);
                events.push(Event::job_create_failed(&format!("{name}-"), &error));
            }
        }
    }
    for doomed in &decision.delete {
        match jobs_api.delete(doomed, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        context.expectations.deleted(&owner, doomed);
        context.metrics.job_deleted(&owner, "history");
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
