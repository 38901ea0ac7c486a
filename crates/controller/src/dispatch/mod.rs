//! Dispatch mode (a `kafka-dispatch` trigger): one task per ScaledJob, while this instance leads,
//! consumes the topic and creates exactly one Job per message, deciding with
//! `jobtide_core::dispatch::Ledger` (the pure part) and acting here.
//!
//! ```text
//!   reconcile ──ensure(trigger, ScaledJob)──► Dispatcher task (run.rs)
//!       ▲  status from its Snapshot              │ Kafka: read ─► Ledger ─► Actions (act.rs):
//!       │                                        │   create Job (+ its message Secret), dead letter,
//!   Job/pod change ──wake──────────────────────► │   record failure; commit the watermark
//!                                                │ Jobs from the operator's cache ─► Ledger::observed
//! ```
//! The reconcile stays the one place that writes the ScaledJob's status and KEDA's conditions;
//! the task only reports a [`Snapshot`]. A changed trigger (its connection, credentials, topic,
//! group, commit rule, attempts, dead-letter topic or payload) restarts the task, which rebuilds
//! its ledger from the group's commits and the Jobs' labels: restarts are what the ledger is
//! built for. Pausing, deleting the ScaledJob or losing the lease stops it.

mod act;
mod metrics;
mod observe;
mod results;
mod run;
mod trace;

use std::sync::{Arc, Mutex};

use jobtide_api::ScaledJob;
use jobtide_api::trigger::KafkaDispatchTrigger;
use jobtide_core::capacity::Gate;
use jobtide_core::dispatch::LedgerStatus;
use tokio::sync::{Notify, watch};

pub use metrics::{DispatchMetrics, MessageOutcome};

use crate::context::Context;

/// What a dispatcher last reported, for the ScaledJob's status.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// The ledger's counts, once the dispatcher started reading.
    pub ledger: Option<LedgerStatus>,
    /// The last failure, until a step succeeds again (the status's Ready condition and a
    /// `KEDAScalerFailed` event say it).
    pub error: Option<String>,
    /// Jobs created since the reconcile last took this count (one aggregated `KEDAJobsCreated`
    /// event per reconcile, as KEDA's one per poll).
    pub jobs_created: u64,
}

/// A running dispatcher, kept in the ScaledJob's state. Dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    trigger: KafkaDispatchTrigger,
    scaled_job: watch::Sender<Arc<ScaledJob>>,
    /// Capacity's verdict (the reconcile's): consumption pauses when no Job may wait more.
    gate: watch::Sender<Gate>,
    wake: Arc<Notify>,
    snapshot: Arc<Mutex<Snapshot>>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<crate::metrics::Metrics>,
    owner: crate::cache::OwnerKey,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.task.abort();
        self.metrics.dispatch.forget(&self.owner);
    }
}

impl Dispatcher {
    /// Starts a dispatcher for `trigger` of `scaled_job`.
    pub fn start(
        context: &Arc<Context>,
        scaled_job: Arc<ScaledJob>,
        trigger: KafkaDispatchTrigger,
    ) -> Self {
        let owner = Context::owner(&scaled_job);
        let (sender, receiver) = watch::channel(scaled_job);
        let (gate, gate_receiver) = watch::channel(Gate::Open);
        let wake = Arc::new(Notify::new());
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let task = tokio::spawn(run::run(run::Task {
            context: Arc::clone(context),
            trigger: trigger.clone(),
            scaled_job: receiver,
            gate: gate_receiver,
            wake: Arc::clone(&wake),
            snapshot: Arc::clone(&snapshot),
        }));
        Self {
            trigger,
            scaled_job: sender,
            gate,
            wake,
            snapshot,
            task,
            metrics: context.metrics(),
            owner,
        }
    }

    /// Whether this dispatcher runs `trigger` (else it must be replaced).
    pub fn runs(&self, trigger: &KafkaDispatchTrigger) -> bool {
        self.trigger == *trigger && !self.task.is_finished()
    }

    /// Hands the dispatcher the ScaledJob as it is now (its Job template, labels and
    /// `maxReplicaCount` for the next Jobs) and wakes it to look at its Jobs.
    pub fn update(&self, scaled_job: Arc<ScaledJob>, gate: Gate) {
        self.gate.send_if_modified(|current| {
            let modified = *current != gate;
            *current = gate;
            modified
        });
        self.scaled_job.send_replace(scaled_job);
        self.wake.notify_one();
    }

    /// What it last reported; the count of created Jobs starts again from zero.
    pub fn take_snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .map(|mut s| {
                let taken = s.clone();
                s.jobs_created = 0;
                taken
            })
            .unwrap_or_default()
    }
}

/// Measures the dispatch group's backlog per partition (the lag scaler's measurement of its
/// committed offsets against the log end) for [`Context::lag_history`]: dev mode only, once
/// per `pollingInterval`. A failure only leaves a gap in the history.
async fn record_backlog(context: &Context, scaled_job: &ScaledJob, trigger: &KafkaDispatchTrigger) {
    let config = jobtide_api::trigger::TriggerConfig::KafkaDispatch(trigger.clone());
    let measured = jobtide_kafka::scaler::measure_trigger(
        &context.pool,
        &config,
        context.config.bootstrap_servers_override.as_deref(),
        &jobtide_core::lag::PersistentLagMemory::new(),
        std::time::Duration::from_secs(5),
    )
    .await;
    match measured {
        Ok(measured) => context.record_lag(
            scaled_job,
            0,
            std::time::SystemTime::now(),
            measured
                .partitions
                .iter()
                .map(|p| (p.topic.as_str(), p.partition, p.lag)),
        ),
        Err(error) => tracing::debug!(%error, "measuring a dispatch backlog for the lag history"),
    }
}

/// The reconcile's part for a dispatch ScaledJob (instead of a lag poll): resolve and parse the
/// trigger, make sure a dispatcher runs it, and turn its snapshot into conditions, events and
/// status. `creating` (the first reconcile of a `pollingInterval`) gates `lastActiveTime`.
pub(crate) async fn poll(
    scaled_job: &Arc<ScaledJob>,
    context: &Arc<Context>,
    conditions: &jobtide_core::status::Conditions,
    creating: bool,
) -> Result<crate::reconcile::Polled, crate::reconcile::Error> {
    use jobtide_api::trigger::TriggerConfig;
    use jobtide_core::status::{PollOutcome, after_poll};
    use kube::ResourceExt;
    use serde_json::json;

    let uid = scaled_job.uid().unwrap_or_default();
    let resolved = crate::reconcile::resolve(scaled_job, context).await?;
    let assessment = crate::capacity::assess_dispatch(
        context,
        scaled_job,
        creating,
        conditions.capacity.as_ref(),
    )
    .await;
    let trigger = match resolved.into_iter().next() {
        Some(resolved) => match (resolved.resolve_error, resolved.parsed.config) {
            (Some(error), _) => Err(error.to_string()),
            (None, Err(error)) => Err(error.to_string()),
            (None, Ok(TriggerConfig::KafkaDispatch(trigger))) => Ok(trigger),
            (None, Ok(_)) => Err("a kafka-dispatch ScaledJob has one trigger only".to_owned()),
        },
        None => Err("no triggers defined in the ScaledObject/ScaledJob".to_owned()),
    };
    if context.config.lag_history
        && creating
        && let Ok(trigger) = &trigger
    {
        record_backlog(context, scaled_job, trigger).await;
    }
    let snapshot = match trigger {
        Ok(trigger) => context.with_state(&uid, |state| {
            let keep = state
                .dispatcher
                .as_ref()
                .is_some_and(|dispatcher| dispatcher.runs(&trigger));
            if !keep {
                state.dispatcher = Some(Box::new(Dispatcher::start(
                    context,
                    Arc::clone(scaled_job),
                    trigger,
                )));
            }
            let dispatcher = state.dispatcher.as_ref()?;
            dispatcher.update(Arc::clone(scaled_job), assessment.gate);
            Some(dispatcher.take_snapshot())
        }),
        Err(error) => {
            context.with_state(&uid, |state| state.dispatcher = None);
            Some(Snapshot {
                error: Some(error),
                ..Snapshot::default()
            })
        }
    }
    .unwrap_or_default();
    let active = snapshot
        .ledger
        .as_ref()
        .is_some_and(|l| l.in_flight + l.queued > 0);
    let (mut next, mut events) = after_poll(
        conditions,
        &PollOutcome {
            trigger_errors: snapshot.error.into_iter().collect(),
            is_active: active,
        },
    );
    let (capacity, capacity_event) =
        jobtide_core::capacity::after_assess(conditions.capacity.as_ref(), &assessment);
    next.capacity = capacity;
    events.extend(capacity_event);
    if snapshot.jobs_created > 0 {
        events.insert(
            0,
            jobtide_core::status::Event::jobs_created(
                i64::try_from(snapshot.jobs_created).unwrap_or(i64::MAX),
            ),
        );
    }
    let mut status = json!({"conditions": crate::status::write_conditions(&next)});
    if let Some(ledger) = &snapshot.ledger {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let committed: serde_json::Map<String, serde_json::Value> = ledger
            .committed
            .iter()
            .map(|(partition, offset)| (partition.to_string(), json!(offset)))
            .collect();
        status["dispatch"] = json!({
            "committed": committed,
            "inFlight": count(ledger.in_flight),
            "queued": count(ledger.queued),
            "deadLettered": ledger.dead_lettered,
            "failed": ledger.failed,
        });
    }
    if active
        && creating
        && crate::status::last_active_due(
            scaled_job,
            std::time::SystemTime::now(),
            context.config.last_active_time_refresh,
        )
    {
        let now = jiff::Timestamp::now().round(jiff::Unit::Second).ok();
        status["lastActiveTime"] = json!(now.map(|t| t.to_string()));
    }
    Ok(crate::reconcile::Polled { status, events })
}
