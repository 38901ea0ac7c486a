//! The reconcile: KEDA's reconcile steps (§2.2), then one poll (§2.4) decided by `jobtide-core`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jobtide_api::ScaledJob;
use jobtide_api::facts::jobs_facts;
use jobtide_api::job::job_for;
use jobtide_api::resolve::{MissingEnvSource, ObjectSet, resolve_triggers};
use jobtide_api::validation::check_scaled_job;
use jobtide_core::capacity::{self as core_capacity, CapacityInput, QuotaRefusal};
use jobtide_core::crashloop::{self, CrashLoopPolicy, Verdict};
use jobtide_core::jobs::JobFacts;
use jobtide_core::jobs::{Propagation, RolloutStrategy, rollout_deletions};
use jobtide_core::pause::is_paused;
use jobtide_core::poll::{
    CapacityFacts, CrashLoopGuard, PollInput, PollPolicy, TriggerResult, decide_poll,
};
use jobtide_core::status::{Conditions, Event, ReconcileOutcome, after_reconcile};
use jobtide_kafka::scaler::measure_trigger;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::auth_status;
use crate::capacity;
use crate::context::Context;
pub use crate::error::Error;
use crate::error::{api as api_error, retry_delay};
use crate::facts;
use crate::kept_scaled_job::KeptScaledJob;
use crate::metrics::{ScalerLabels, SharedScalerLabels};
use crate::state::Seen;
use crate::status::{joined_distinct, patch_if_changed, read_conditions, write_conditions};

/// KEDA's finalizer on ScaledJobs.
pub const FINALIZER: &str = "finalizer.keda.sh";

pub(crate) fn error_policy(
    scaled_job: Arc<KeptScaledJob>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    context.metrics.reconcile_error(error.category());
    let object = format!(
        "{}/{}",
        scaled_job.namespace().unwrap_or_default(),
        scaled_job.name_any()
    );
    if error.is_permanent() {
        tracing::warn!(scaled_job = %object, category = error.category(), %error,
            "reconcile failed; waiting for a change of the ScaledJob");
        return Action::await_change();
    }
    let failures = context.with_state(&scaled_job.uid().unwrap_or_default(), |state| {
        state.failures = state.failures.saturating_add(1);
        state.failures
    });
    let delay = retry_delay(failures);
    tracing::warn!(scaled_job = %object, category = error.category(), %error, failures,
        "reconcile failed; retrying in {}s", delay.as_secs());
    Action::requeue(delay)
}

/// How soon a reconcile of a copy older than this operator's last write looks again (the
/// watch delivers the newer copy within milliseconds).
pub(crate) const STALE_COPY_RETRY: Duration = Duration::from_millis(250);

pub(crate) async fn reconcile(
    kept: Arc<KeptScaledJob>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let began = Instant::now();
    let scaled_job = Arc::new(kept.scaled_job().map_err(|error| {
        Error::Kept(format!(
            "{}/{}: {error}",
            kept.namespace().unwrap_or_default(),
            kept.name_any()
        ))
    })?);
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
    let uid = scaled_job.uid();
    let seen = Seen::of(&scaled_job);
    let version = scaled_job.resource_version();
    let needs_finalizer = scaled_job.metadata.deletion_timestamp.is_none()
        && !scaled_job.finalizers().iter().any(|f| f == FINALIZER);
    if let Some(uid) = &uid {
        // A copy this operator already wrote over (its finalizer or its status) is stale: look
        // again once the watch has delivered the newer one (a status write alone triggers no
        // reconcile, so waiting for a change would end the ScaledJob's polls).
        let mut stale = false;
        context.with_existing_state(uid, |state| {
            stale = version.is_some() && state.written_over() == version.as_deref();
            if !stale {
                state.set_written_over(None);
            }
        });
        if stale {
            tracing::debug!(scaled_job = %kept.name_any(), "the store's copy predates this operator's last write");
            return Ok(Action::requeue(STALE_COPY_RETRY));
        }
    }
    let result = finalizer(&api, FINALIZER, scaled_job, |event| async {
        match event {
            FinalizerEvent::Apply(scaled_job) => apply(&scaled_job, &context).await,
            FinalizerEvent::Cleanup(scaled_job) => {
                auth_status::forget(&context.client, &scaled_job).await;
                context
                    .publish(&scaled_job, &[Event::scalers_stopped(), Event::deleted()])
                    .await;
                let owner = Context::owner(&scaled_job);
                if let Some(gone) = scaled_job.uid().and_then(|uid| context.forget(&uid))
                    && let Some(types) = gone.registered
                {
                    context.metrics.unregistered(&owner, &types);
                }
                context.metrics.forget(&owner);
                context.expectations.forget(&owner);
                context.objects.forget(&owner);
                context.metrics.capacity.forget(&owner);
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
    if result.is_ok()
        && let Some(uid) = uid
    {
        if needs_finalizer {
            // finalizer() added it and awaits the change; no poll ran, nothing to settle.
            let version = version.map(String::into_boxed_str);
            context.with_state(&uid, |state| state.set_written_over(version));
        } else {
            // (A deleted ScaledJob's state is gone and stays gone.)
            context.with_existing_state(&uid, |state| state.settle(seen));
        }
    }
    result
}

/// One reconcile of a live ScaledJob: KEDA's reconcile steps when it changed, then (unless paused
/// or invalid) one poll; one status write at most, only when something changed.
async fn apply(scaled_job: &Arc<ScaledJob>, context: &Arc<Context>) -> Result<Action, Error> {
    let namespace = scaled_job.namespace().unwrap_or_default();
    let api: Api<ScaledJob> = Api::namespaced(context.client.clone(), &namespace);
    let spec = &scaled_job.spec;
    let uid = scaled_job.uid().unwrap_or_default();
    let seen = Seen::of(scaled_job);
    let generation = seen.generation;
    let paused = is_paused(seen.paused_annotation.as_deref());
    let changed = context.with_state(&uid, |state| state.changed(&seen));
    let stored = read_conditions(scaled_job);
    let mut conditions = stored.clone().unwrap_or_else(Conditions::initial);
    let findings = check_scaled_job(&scaled_job.name_any(), spec);
    let outcome = if !findings.is_valid() {
        ReconcileOutcome::Failed {
            message: "ScaledJob doesn't have correct triggers specification".into(),
        }
    } else if let Err(message) = capacity::checked_policy(scaled_job) {
        // jobtide's own annotation: a budget it can't read stops the ScaledJob (as an invalid
        // spec does) instead of running with one nobody asked for.
        ReconcileOutcome::Failed { message }
    } else {
        ReconcileOutcome::Ready { paused }
    };
    let mut events = Vec::new();
    // KEDA's reconcile steps run when the ScaledJob changed (KEDA reconciles on change; its
    // scale loop polls in between), so a failing trigger doesn't flip Ready every poll.
    let steps = changed || stored.is_none();
    if steps {
        let (next, reconciled) = after_reconcile(&conditions, &outcome);
        conditions = next;
        events.extend(reconciled);
    }
    let mut status = json!({
        "conditions": write_conditions(&conditions),
        "triggersTypes": joined_distinct(spec.triggers.iter().map(|t| t.type_.as_str())),
        "authenticationsTypes": joined_distinct(
            spec.triggers
                .iter()
                .filter_map(|t| t.authentication_ref.as_ref())
                .map(|a| a.name.as_str()),
        ),
    });
    let ReconcileOutcome::Ready { paused: false } = outcome else {
        // Invalid (a permanent error) or paused: wait for a change of the ScaledJob. A
        // dispatcher stops reading (unpausing starts one that resumes at the commits).
        context.with_state(&uid, |state| state.dispatcher = None);
        if context.with_state(&uid, |state| state.loop_generation.take().is_some()) {
            events.push(Event::scalers_stopped());
        }
        context.publish(scaled_job, &events).await;
        write_status(scaled_job, context, &api, status).await?;
        if steps {
            auth_status::record(&context.client, scaled_job).await;
        }
        return Ok(Action::await_change());
    };
    rollout(scaled_job, context).await?;
    let types: Vec<String> = spec.triggers.iter().map(|t| t.type_.clone()).collect();
    let (first_start, built) = context.with_state(&uid, |state| {
        let first = state.registered.is_none();
        if first {
            state.registered = Some(types.clone());
        }
        let started = state.loop_generation.is_none();
        let built = state.loop_generation.replace(generation) != Some(generation);
        (first, (started, built))
    });
    if first_start {
        context.metrics.registered(&namespace, &types);
    }
    let (loop_started, scalers_built) = built;
    if loop_started {
        events.push(Event::scalers_started());
    }
    if scalers_built {
        events.extend(spec.triggers.iter().map(|t| Event::scaler_built(&t.type_)));
    }
    let interval = polling_interval(scaled_job);
    let creating = context.with_state(&uid, |state| {
        state.may_create(Instant::now(), interval, changed)
    });
    let polled = if scaled_job.spec.dispatch_mode() {
        crate::dispatch::poll(scaled_job, context, &conditions, creating).await?
    } else {
        poll(scaled_job, context, &conditions, creating, changed).await?
    };
    if let (Value::Object(status), Value::Object(more)) = (&mut status, polled.status) {
        status.extend(more);
    }
    // KEDA's order: events as they happen (measuring, creating), then the status patch.
    events.extend(polled.events);
    context.publish(scaled_job, &events).await;
    write_status(scaled_job, context, &api, status).await?;
    // §2.2 step 9, after the conditions are written.
    if steps {
        auth_status::record(&context.client, scaled_job).await;
    }
    let next = context.with_state(&uid, |state| {
        state.until_next_poll(Instant::now(), interval)
    });
    Ok(Action::requeue(next))
}

fn polling_interval(scaled_job: &ScaledJob) -> Duration {
    Duration::from_secs(
        u64::try_from(scaled_job.spec.polling_interval_seconds())
            .unwrap_or(30)
            .max(1),
    )
}

/// The one status write of a reconcile; a failure is KEDA's `ScaledJobUpdateFailed`.
async fn write_status(
    scaled_job: &ScaledJob,
    context: &Context,
    api: &Api<ScaledJob>,
    status: Value,
) -> Result<(), Error> {
    match patch_if_changed(api, scaled_job, status).await {
        Ok(written) => {
            context.metrics.status_write(written.is_some());
            // A later reconcile of this same copy (a Job's change re-polls before the watch
            // delivered the new status) would patch its old conditions back over the new ones.
            let version = scaled_job.metadata.resource_version.as_deref();
            if let (Some(uid), Some(written)) = (scaled_job.uid(), written)
                && version.is_some_and(|version| version != written)
            {
                let version = version.map(Box::from);
                context.with_state(&uid, |state| state.set_written_over(version));
            }
            Ok(())
        }
        Err(error) => {
            context
                .publish(scaled_job, &[Event::update_failed(&error.to_string())])
                .await;
            Err(api_error(format!(
                "patching the status of {}/{}",
                scaled_job.namespace().unwrap_or_default(),
                scaled_job.name_any()
            ))(error))
        }
    }
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
            return Err(api_error(format!(
                "deleting Job {namespace}/{name} (rollout)"
            ))(error));
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
fn scaler_name(trigger: &jobtide_api::scaledjob::ScaleTrigger) -> Cow<'static, str> {
    match trigger.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned().into(),
        _ => match trigger.type_.as_str() {
            "kafka" => "kafkaScaler".into(),
            "apache-kafka" => "apacheKafkaScaler".into(),
            "kafka-dispatch" => "kafkadispatchScaler".into(),
            other => format!("{}Scaler", other.replace('-', "")).into(),
        },
    }
}

/// A trigger's index as a label value (the first ten without an allocation each).
fn trigger_index(index: usize) -> Cow<'static, str> {
    const FIRST: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    FIRST
        .get(index)
        .map_or_else(|| index.to_string().into(), |i| (*i).into())
}

/// What a poll leaves to write: its part of the status and its events.
pub(crate) struct Polled {
    pub status: Value,
    pub events: Vec<Event>,
}

/// Every trigger's authentication and env resolved (the Secrets, ConfigMaps and
/// TriggerAuthentications it reads come from [`crate::objects::AuthObjects`]: a GET only for what
/// isn't held current) and its metadata parsed.
pub(crate) async fn resolve(
    scaled_job: &ScaledJob,
    context: &Context,
) -> Result<Vec<jobtide_api::resolve::ResolvedTrigger>, Error> {
    let namespace = scaled_job.namespace().unwrap_or_default();
    let owner = Context::owner(scaled_job);
    if !facts::reads_objects(&scaled_job.spec) {
        context.objects.forget(&owner);
        return Ok(resolve_triggers(
            &ObjectSet::default(),
            &namespace,
            &scaled_job.spec,
            &context.config.cluster_object_namespace,
            MissingEnvSource::Fail,
        ));
    }
    facts::resolve(
        &context.client,
        &context.objects,
        &owner,
        scaled_job,
        &context.config.cluster_object_namespace,
    )
    .await
    .map_err(|(what, error)| {
        api_error(format!(
            "getting {what} for {namespace}/{}",
            scaled_job.name_any()
        ))(error)
    })
}

/// §2.4: measure every trigger, count Jobs, let `core` decide, act (creating Jobs only when
/// `creating`: the first poll of a `pollingInterval`). A `poll` span with `measure` (per
/// trigger), `decide` and `act` under it (exported as traces when the operator traces).
#[tracing::instrument(name = "poll", skip_all, fields(scaled_job = %scaled_job.name_any(), namespace = %scaled_job.namespace().unwrap_or_default()))]
async fn poll(
    scaled_job: &ScaledJob,
    context: &Context,
    conditions: &Conditions,
    creating: bool,
    changed: bool,
) -> Result<Polled, Error> {
    let name = scaled_job.name_any();
    let namespace = scaled_job.namespace().unwrap_or_default();
    let owner = Context::owner(scaled_job);
    let spec = &scaled_job.spec;
    let uid = scaled_job.uid().unwrap_or_default();
    let interval = polling_interval(scaled_job);
    let began = Instant::now();
    context.metrics.polled(creating);
    context.with_state(&uid, |state| state.interval = Some(interval));
    if creating {
        let due = context.with_state(&uid, |state| state.next_due.replace(began + interval));
        if let Some(due) = due {
            context
                .metrics
                .loop_lateness(&owner, began.saturating_duration_since(due).as_secs_f64());
        }
    }
    let timeout = interval.clamp(Duration::from_secs(1), Duration::from_secs(10));
    let resolved = resolve(scaled_job, context).await?;
    let mut triggers = Vec::with_capacity(resolved.len());
    let mut series = Vec::with_capacity(resolved.len());
    for (index, resolved) in resolved.into_iter().enumerate() {
        let trigger = &spec.triggers[index];
        let metric_name = resolved
            .parsed
            .metric_name
            .clone()
            .unwrap_or_else(|| format!("s{index}-{}", trigger.type_));
        let labels = SharedScalerLabels(Arc::new(ScalerLabels {
            namespace: namespace.clone(),
            metric: metric_name.clone(),
            scaledObject: name.clone(),
            scaler: scaler_name(trigger),
            triggerIndex: trigger_index(index),
            r#type: "scaledjob",
        }));
        let measured_at = Instant::now();
        let measurement = match (resolved.resolve_error, resolved.parsed.config) {
            (Some(error), _) => Err(("config", error.to_string())),
            (None, Err(error)) => Err(("config", error.to_string())),
            // Never measured as lag: that would make Jobs per backlog, not one per message.
            (None, Ok(jobtide_api::trigger::TriggerConfig::KafkaDispatch(_))) => Err((
                "config",
                "a kafka-dispatch trigger is dispatched, never measured as lag (it must be the \
                 ScaledJob's only trigger)"
                    .to_owned(),
            )),
            (None, Ok(config)) => {
                let previous = context.with_state(&uid, |state| state.memory(index));
                match measure_trigger(
                    &context.pool,
                    &config,
                    context.config.bootstrap_servers_override.as_deref(),
                    &previous,
                    timeout,
                )
                .instrument(tracing::info_span!("measure", trigger = index))
                .await
                {
                    Ok(measured) => {
                        context.with_state(&uid, |state| {
                            state.set_memory(index, measured.memory.clone());
                        });
                        context.record_lag(
                            scaled_job,
                            index,
                            SystemTime::now(),
                            measured
                                .partitions
                                .iter()
                                .map(|p| (p.topic.as_str(), p.partition, p.lag)),
                        );
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
    let (mut facts, unseen_created) = current_jobs(context, scaled_job);
    capacity::annotate(context, scaled_job, &mut facts, creating).await;
    let quota = capacity::refusal(context, &uid, &namespace);
    let requests = capacity::requests(scaled_job);
    let generation = scaled_job.metadata.generation.unwrap_or(0).to_string();
    let capacity_policy = capacity::policy(scaled_job);
    let guard_policy = CrashLoopPolicy::from_annotation(
        scaled_job
            .annotations()
            .get(crashloop::DISABLE_ANNOTATION)
            .map(String::as_str),
    );
    let guard_state = context.with_state(&uid, |state| state.crash_loop());
    let decision = tracing::info_span!("decide").in_scope(|| {
        decide_poll(&PollInput {
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
            creating,
            crash_loop: CrashLoopGuard {
                policy: &guard_policy,
                state: &guard_state,
                spec_changed: changed,
            },
            capacity: CapacityFacts {
                generation: &generation,
                requests: &requests,
                quota: quota.as_ref(),
                policy: capacity_policy,
            },
        })
    });
    context
        .metrics
        .capacity
        .set_waiting(&owner, decision.capacity.waiting.iter());
    let (guard_state, verdict) = decision.crash_loop.clone();
    if matches!(verdict, Verdict::BackingOff { tripped: true, .. }) {
        context.metrics.crash_loop_tripped();
    }
    context.with_state(&uid, |state| state.set_crash_loop(guard_state));
    tracing::debug!(
        scaled_job = %name,
        %namespace,
        creating,
        create = decision.jobs.create,
        delete = decision.delete.len(),
        unseen_created,
        "poll decided"
    );

    let jobs_api: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let mut events = Vec::new();
    let mut conditions = decision.conditions.clone();
    let act = tracing::info_span!(
        "act",
        create = decision.jobs.create,
        delete = decision.delete.len()
    );
    async {
        for _ in 0..decision.jobs.create {
            let result = match job_for(scaled_job, &context.config.operator_version) {
                Ok(job) => jobs_api
                    .create(&PostParams::default(), &job)
                    .await
                    .map_err(|e| {
                        let refusal = capacity::quota_refusal(&e);
                        (e.to_string(), refusal)
                    }),
                Err(error) => Err((error.to_string(), None)),
            };
            match result {
                Ok(created) => {
                    context.expectations.created(&owner, &created.name_any());
                    context.metrics.job_created(&owner, true);
                    capacity::created(context, &uid);
                }
                // A quota refusal stops this poll's creations (the next ones would be refused too)
                // and becomes the CapacityAvailable condition, not an event per Job.
                Err((_, Some(refusal))) => {
                    context.metrics.job_created(&owner, false);
                    context.metrics.capacity.quota_refused(&owner);
                    capacity::refused(context, &uid, &namespace, refusal.clone());
                    let assessment = core_capacity::assess(&CapacityInput {
                        jobs: &facts,
                        generation: &generation,
                        requests: &requests,
                        quota: Some(&QuotaRefusal {
                            message: refusal,
                            may_retry: false,
                        }),
                        policy: capacity_policy,
                        previous: None,
                    });
                    let (condition, event) =
                        core_capacity::after_assess(conditions.capacity.as_ref(), &assessment);
                    conditions.capacity = condition;
                    events.extend(event);
                    break;
                }
                Err((error, None)) => {
                    context.metrics.job_created(&owner, false);
                    events.push(Event::job_create_failed(&format!("{name}-"), &error));
                }
            }
        }
        for doomed in &decision.delete {
            match jobs_api.delete(doomed, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    return Err(api_error(format!(
                        "deleting Job {namespace}/{doomed} (history)"
                    ))(error));
                }
            }
            context.expectations.deleted(&owner, doomed);
            context.metrics.job_deleted(&owner, "history");
        }
        Ok::<_, Error>(())
    }
    .instrument(act)
    .await?;
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
        json!({"conditions": write_conditions(&conditions), "triggersActivity": activity});
    // D19: refreshed once the stored value is `last_active_time_refresh` old, not every poll.
    if let Some(at) = decision.last_active_time.filter(|at| {
        crate::status::last_active_due(scaled_job, *at, context.config.last_active_time_refresh)
    }) {
        let at = jiff::Timestamp::try_from(at)
            .ok()
            .and_then(|t| t.round(jiff::Unit::Second).ok());
        status["lastActiveTime"] = json!(at.map(|t| t.to_string()));
    }
    Ok(Polled { status, events })
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
