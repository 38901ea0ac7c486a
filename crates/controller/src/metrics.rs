//! Prometheus metrics: KEDA's names and labels where KEDA has them (keda-compat §9, with D15),
//! `jobtide_*` for the rest. Labels hold names and fixed categories only, never error text.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jobtide_kafka::source::SourcePool;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::OwnerKey;

/// KEDA's per-trigger labels (`scaledObject` holds the ScaledJob's name, `type="scaledjob"`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)] // KEDA's label names
pub struct ScalerLabels {
    pub namespace: String,
    pub metric: String,
    pub scaledObject: String,
    /// `kafkaScaler` and the like are not copied per ScaledJob (nor are the index and type
    /// below): at 10,000 ScaledJobs, 30,000 small strings.
    pub scaler: Cow<'static, str>,
    pub triggerIndex: Cow<'static, str>,
    pub r#type: &'static str,
}

/// One scaler's labels, shared by its series: its four families and the per-ScaledJob list hold
/// one copy of the six strings between them (at 10,000 ScaledJobs, each label set copied five
/// times was most of the series' memory).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct SharedScalerLabels(pub Arc<ScalerLabels>);

impl EncodeLabelSet for SharedScalerLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)]
struct ScaledJobLabels {
    namespace: String,
    scaledJob: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoopLabels {
    namespace: String,
    r#type: &'static str,
    resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    r#type: String,
    namespace: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    git_commit: String,
    goversion: String,
    goos: String,
    goarch: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)]
struct DeletedLabels {
    namespace: String,
    scaledJob: String,
    reason: String,
}

/// Every series the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    scaler_value: Family<SharedScalerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    scaler_latency: Family<SharedScalerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    scaler_active: Family<SharedScalerLabels, Gauge>,
    scaler_errors: Family<SharedScalerLabels, Counter>,
    scaled_job_errors: Family<ScaledJobLabels, Counter>,
    loop_latency: Family<LoopLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    resources: Family<ResourceLabels, Gauge>,
    triggers: Family<TypeLabels, Gauge>,
    reconcile_duration: Family<ResultLabels, Histogram>,
    jobs_created: Family<ScaledJobLabels, Counter>,
    job_create_errors: Family<ScaledJobLabels, Counter>,
    jobs_deleted: Family<DeletedLabels, Counter>,
    scaler_failures: Family<CategoryLabels, Counter>,
    scaler_duration: Histogram,
    leader: Gauge,
    members: Gauge,
    owned: Gauge,
    polls: Family<KindLabels, Counter>,
    crash_loop_trips: Counter,
    reconcile_errors: Family<CategoryLabels, Counter>,
    status_writes: Family<ResultLabels, Counter>,
    /// Dispatch mode's series.
    pub(crate) dispatch: crate::dispatch::DispatchMetrics,
    /// Capacity's series.
    pub(crate) capacity: crate::capacity::CapacityMetrics,
    /// Jobs' ends (both modes).
    pub(crate) jobs: crate::job_metrics::JobMetrics,
    /// The scaler series set per ScaledJob, to delete them when its triggers change or it goes.
    series: Mutex<HashMap<OwnerKey, Vec<SharedScalerLabels>>>,
}

fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    /// The registry with every family, and a collector of the Kafka clients' request counts.
    pub fn new(pool: Arc<SourcePool>, version: &str) -> Self {
        let mut registry = Registry::default();
        let scaler_value = Family::default();
        let scaler_latency = Family::default();
        let scaler_active = Family::default();
        let scaler_errors = Family::default();
        let scaled_job_errors = Family::default();
        let loop_latency = Family::default();
        let resources = Family::default();
        let triggers = Family::default();
        let reconcile_duration = Family::new_with_constructor(seconds_buckets as fn() -> _);
        let jobs_created = Family::default();
        let job_create_errors = Family::default();
        let jobs_deleted = Family::default();
        let scaler_failures = Family::default();
        let scaler_duration = seconds_buckets();
        let leader = Gauge::default();
        let members = Gauge::default();
        let owned = Gauge::default();
        let polls = Family::default();
        let crash_loop_trips = Counter::default();
        let reconcile_errors = Family::default();
        let status_writes = Family::default();
        // KEDA's series (names as KEDA exposes them; prometheus-client adds `_total` to counters).
        registry.register(
            "keda_scaler_metrics_value",
            "The current value for each scaler's metric that would be used by the HPA in computing the target average",
            scaler_value.clone(),
        );
        registry.register(
            "keda_scaler_metrics_latency_seconds",
            "The latency of retrieving current metric from each scaler",
            scaler_latency.clone(),
        );
        registry.register(
            "keda_scaler_active",
            "Indicates whether a scaler is active (1), or not (0)",
            scaler_active.clone(),
        );
        registry.register(
            "keda_scaler_detail_errors",
            "The number of errors that have occurred for each scaler (jobtide counts ScaledJob scalers too: D15)",
            scaler_errors.clone(),
        );
        registry.register(
            "keda_scaled_job_errors",
            "Number of scaled job errors",
            scaled_job_errors.clone(),
        );
        registry.register(
            "keda_internal_scale_loop_latency_seconds",
            "Total deviation (in seconds) between the expected execution time and the actual execution time for the scaling loop",
            loop_latency.clone(),
        );
        registry.register(
            "keda_resource_registered_total",
            "Total resources registered (a gauge, named with _total as KEDA does)",
            resources.clone(),
        );
        registry.register(
            "keda_trigger_registered_total",
            "Total triggers registered (a gauge, named with _total as KEDA does)",
            triggers.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: version.into(),
                git_commit: option_env!("JOBTIDE_GIT_COMMIT")
                    .unwrap_or("unknown")
                    .into(),
                // KEDA reports its Go version; jobtide reports the Rust version it requires.
                goversion: concat!("rust", env!("CARGO_PKG_RUST_VERSION")).into(),
                goos: std::env::consts::OS.into(),
                goarch: std::env::consts::ARCH.into(),
            })
            .set(1);
        registry.register(
            "keda_build_info",
            "Info metric, with static information about the build",
            build_info,
        );
        // jobtide's own series.
        registry.register(
            "jobtide_reconcile_duration_seconds",
            "Duration of a ScaledJob reconcile (one poll), by result (ok, error)",
            reconcile_duration.clone(),
        );
        registry.register("jobtide_jobs_created", "Jobs created", jobs_created.clone());
        registry.register(
            "jobtide_job_create_errors",
            "Job creations that failed",
            job_create_errors.clone(),
        );
        registry.register(
            "jobtide_jobs_deleted",
            "Jobs deleted, by reason (history, rollout)",
            jobs_deleted.clone(),
        );
        registry.register(
            "jobtide_scaler_errors",
            "Failed trigger measurements, by category",
            scaler_failures.clone(),
        );
        registry.register(
            "jobtide_scaler_duration_seconds",
            "Duration of one trigger measurement (all triggers)",
            scaler_duration.clone(),
        );
        registry.register(
            "jobtide_leader",
            "Whether this instance acts: 1 while it leads (or runs without leader election), else 0",
            leader.clone(),
        );
        registry.register(
            "jobtide_shard_members",
            "Live replicas sharing the ScaledJobs, as this replica last listed them (--sharded; 0 otherwise)",
            members.clone(),
        );
        registry.register(
            "jobtide_owned_scaled_jobs",
            "ScaledJobs this replica acts on (its share under --sharded, all of them otherwise)",
            owned.clone(),
        );
        registry.register(
            "jobtide_polls",
            "Polls, by kind: creating (the first of a pollingInterval, may create Jobs) or update (a re-poll after a Job or pod changed: counts, history and status only)",
            polls.clone(),
        );
        registry.register(
            "jobtide_reconcile_errors",
            "Failed reconciles, by category (api_forbidden, api_conflict, api_throttled, api_server, api_transport, api_invalid, api_not_found, finalizer, caches_not_ready, kept)",
            reconcile_errors.clone(),
        );
        registry.register(
            "jobtide_crash_loop_backoffs",
            "Times the crash-loop guard stopped Job creation (a ScaledJob's newest Jobs all failed at once while its lag stayed); see the CrashLoopBackOff condition",
            crash_loop_trips.clone(),
        );
        registry.register(
            "jobtide_status_writes",
            "ScaledJob status writes a reconcile wanted, by result: written, or unchanged (nothing to write, no request sent)",
            status_writes.clone(),
        );
        let dispatch = crate::dispatch::DispatchMetrics::register(&mut registry);
        let capacity = crate::capacity::CapacityMetrics::register(&mut registry);
        let jobs = crate::job_metrics::JobMetrics::register(&mut registry);
        registry.register_collector(Box::new(KafkaCollector { pool }));
        Self {
            dispatch,
            capacity,
            jobs,
            registry,
            scaler_value,
            scaler_latency,
            scaler_active,
            scaler_errors,
            scaled_job_errors,
            loop_latency,
            resources,
            triggers,
            reconcile_duration,
            jobs_created,
            job_create_errors,
            jobs_deleted,
            scaler_failures,
            scaler_duration,
            leader,
            members,
            owned,
            polls,
            crash_loop_trips,
            reconcile_errors,
            status_writes,
            series: Mutex::new(HashMap::new()),
        }
    }

    /// The text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// A trigger's measurement: value and activity on success, the error counters otherwise;
    /// latency either way.
    pub fn measured(
        &self,
        labels: &SharedScalerLabels,
        latency_seconds: f64,
        result: Result<(f64, bool), &'static str>,
    ) {
        self.scaler_latency
            .get_or_create(labels)
            .set(latency_seconds);
        self.scaler_duration.observe(latency_seconds);
        match result {
            Ok((value, active)) => {
                self.scaler_value.get_or_create(labels).set(value);
                self.scaler_active
                    .get_or_create(labels)
                    .set(i64::from(active));
                // Present at 0 from the first poll on, as KEDA initializes it.
                drop(self.scaler_errors.get_or_create(labels));
            }
            Err(category) => {
                self.scaler_errors.get_or_create(labels).inc();
                self.scaled_job_errors
                    .get_or_create(&ScaledJobLabels {
                        namespace: labels.0.namespace.clone(),
                        scaledJob: labels.0.scaledObject.clone(),
                    })
                    .inc();
                self.scaler_failures
                    .get_or_create(&CategoryLabels {
                        category: category.into(),
                    })
                    .inc();
            }
        }
    }

    /// Keeps only `current` among the scaler series of `owner` (KEDA deletes them on reconcile).
    /// A label set already kept stays (the families hold that copy, not `current`'s).
    pub fn keep_series(&self, owner: &OwnerKey, current: Vec<SharedScalerLabels>) {
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        let previous = series.remove(owner).unwrap_or_default();
        let current: Vec<_> = current
            .into_iter()
            .map(|labels| {
                previous
                    .iter()
                    .find(|kept| **kept == labels)
                    .cloned()
                    .unwrap_or(labels)
            })
            .collect();
        for stale in &previous {
            if !current.contains(stale) {
                self.remove_scaler_series(stale);
            }
        }
        series.insert(owner.clone(), current);
    }

    fn remove_scaler_series(&self, labels: &SharedScalerLabels) {
        self.scaler_value.remove(labels);
        self.scaler_latency.remove(labels);
        self.scaler_active.remove(labels);
        self.scaler_errors.remove(labels);
    }

    /// A ScaledJob started (its scalers built): KEDA's registration gauges go up.
    pub fn registered(&self, namespace: &str, trigger_types: &[String]) {
        self.resources
            .get_or_create(&ResourceLabels {
                r#type: "scaled_job".into(),
                namespace: namespace.into(),
            })
            .inc();
        for type_ in trigger_types {
            self.triggers
                .get_or_create(&TypeLabels {
                    r#type: type_.clone(),
                })
                .inc();
        }
    }

    /// A registered ScaledJob went: KEDA's registration gauges go down.
    pub fn unregistered(&self, owner: &OwnerKey, trigger_types: &[String]) {
        self.resources
            .get_or_create(&ResourceLabels {
                r#type: "scaled_job".into(),
                namespace: owner.0.clone(),
            })
            .dec();
        for type_ in trigger_types {
            self.triggers
                .get_or_create(&TypeLabels {
                    r#type: type_.clone(),
                })
                .dec();
        }
    }

    /// A ScaledJob went: every series labelled with it goes (registered or not).
    pub fn forget(&self, owner: &OwnerKey) {
        if let Ok(mut series) = self.series.lock() {
            for labels in series.remove(owner).into_iter().flatten() {
                self.remove_scaler_series(&labels);
            }
        }
        self.loop_latency.remove(&loop_labels(owner));
        let labels = scaled_job_labels(owner);
        self.scaled_job_errors.remove(&labels);
        self.jobs_created.remove(&labels);
        self.job_create_errors.remove(&labels);
        for reason in DELETE_REASONS {
            self.jobs_deleted.remove(&DeletedLabels {
                namespace: owner.0.clone(),
                scaledJob: owner.1.clone(),
                reason: reason.into(),
            });
        }
        self.jobs.forget(owner);
        self.dispatch.forget_scaled_job(owner);
    }

    /// How late a poll ran against its schedule.
    pub fn loop_lateness(&self, owner: &OwnerKey, seconds: f64) {
        self.loop_latency
            .get_or_create(&loop_labels(owner))
            .set(seconds);
    }

    /// A reconcile's duration.
    pub fn reconciled(&self, ok: bool, seconds: f64) {
        self.reconcile_duration
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.into(),
            })
            .observe(seconds);
    }

    /// A poll ran; `creating`: it was the first of its interval.
    pub fn polled(&self, creating: bool) {
        let kind = if creating { "creating" } else { "update" };
        self.polls
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// A reconcile failed with an error of `category`.
    pub fn reconcile_error(&self, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&CategoryLabels {
                category: category.into(),
            })
            .inc();
    }

    /// The crash-loop guard tripped (or escalated) for a ScaledJob.
    pub fn crash_loop_tripped(&self) {
        self.crash_loop_trips.inc();
    }

    /// A reconcile's status write: sent (`written`) or skipped because nothing changed.
    pub fn status_write(&self, written: bool) {
        let result = if written { "written" } else { "unchanged" };
        self.status_writes
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// A Job created (or a creation failed).
    pub fn job_created(&self, owner: &OwnerKey, ok: bool) {
        let labels = scaled_job_labels(owner);
        if ok {
            self.jobs_created.get_or_create(&labels).inc();
        } else {
            self.job_create_errors.get_or_create(&labels).inc();
        }
    }

    /// A Job deleted, for `reason` (one of [`DELETE_REASONS`]).
    pub fn job_deleted(&self, owner: &OwnerKey, reason: &'static str) {
        debug_assert!(DELETE_REASONS.contains(&reason));
        self.jobs_deleted
            .get_or_create(&DeletedLabels {
                namespace: owner.0.clone(),
                scaledJob: owner.1.clone(),
                reason: reason.into(),
            })
            .inc();
    }

    /// How many live replicas share the ScaledJobs.
    pub fn set_members(&self, count: usize) {
        self.members.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// How many ScaledJobs this replica acts on.
    pub fn set_owned(&self, count: usize) {
        self.owned.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Whether this instance leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

/// The `reason`s of `jobtide_jobs_deleted_total` (all removed with their ScaledJob).
pub const DELETE_REASONS: [&str; 2] = ["history", "rollout"];

fn scaled_job_labels(owner: &OwnerKey) -> ScaledJobLabels {
    ScaledJobLabels {
        namespace: owner.0.clone(),
        scaledJob: owner.1.clone(),
    }
}

fn loop_labels(owner: &OwnerKey) -> LoopLabels {
    LoopLabels {
        namespace: owner.0.clone(),
        r#type: "scaledjob",
        resource: owner.1.clone(),
    }
}

/// `keda_build_info`'s labels, and the Kafka clients' request counts read at scrape time.
#[derive(Debug)]
struct KafkaCollector {
    pool: Arc<SourcePool>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    request: String,
}

impl Collector for KafkaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        for source in self.pool.sources() {
            for (request, count) in source.requests_sent() {
                *totals.entry(request).or_insert(0) += count;
            }
        }
        let clients = ConstGauge::new(i64::try_from(self.pool.len()).unwrap_or(i64::MAX));
        clients.encode(encoder.encode_descriptor(
            "jobtide_kafka_clients",
            "Kafka clients (one per brokers, credentials and isolation level)",
            None,
            clients.metric_type(),
        )?)?;
        let mut family = encoder.encode_descriptor(
            "jobtide_kafka_requests",
            "Kafka requests sent by the scalers' clients, by request type (from librdkafka statistics)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (request, count) in totals {
            let counter = ConstCounter::new(u64::try_from(count).unwrap_or(0));
            counter.encode(family.encode_family(&RequestLabels { request })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> SharedScalerLabels {
        SharedScalerLabels(Arc::new(ScalerLabels {
            namespace: "ns".into(),
            metric: "s0-kafka".into(),
            scaledObject: "sj".into(),
            scaler: "kafkaScaler".into(),
            triggerIndex: "0".into(),
            r#type: "scaledjob",
        }))
    }

    #[test]
    fn a_scalers_series_share_one_copy_of_its_labels_across_polls() {
        let metrics = Metrics::new(Arc::new(SourcePool::new()), "test");
        let owner: OwnerKey = ("ns".into(), "sj".into());
        let first = labels();
        metrics.measured(&first, 0.1, Ok((3.0, true)));
        metrics.keep_series(&owner, vec![first.clone()]);
        // The next poll builds its labels anew: the kept copy stays, the new one goes.
        let second = labels();
        metrics.measured(&second, 0.2, Ok((4.0, true)));
        metrics.keep_series(&owner, vec![second.clone()]);
        let kept = metrics.series.lock().unwrap()[&owner].clone();
        assert!(Arc::ptr_eq(&kept[0].0, &first.0));
        assert_eq!(Arc::strong_count(&second.0), 1);
        let text = metrics.encode();
        assert!(text.contains(r#"keda_scaler_metrics_value{namespace="ns",metric="s0-kafka",scaledObject="sj",scaler="kafkaScaler",triggerIndex="0",type="scaledjob"} 4.0"#), "{text}");
        // A trigger that went takes its series with it.
        metrics.keep_series(&owner, Vec::new());
        assert!(!metrics.encode().contains("keda_scaler_metrics_value{"));
    }
}
