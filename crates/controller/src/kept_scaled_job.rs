//! What the ScaledJob store keeps of a ScaledJob: its metadata as it is, and its spec and status
//! as compact JSON ([`crate::packing`]: compressed against a typical ScaledJob), read back into
//! a whole `ScaledJob` when it is reconciled.
//!
//! Why: k8s-openapi's structs hold every optional field inline, so an empty `ScaledJob` is 2,760
//! bytes (its `jobTargetRef` is a `JobSpec` holding a whole `PodSpec`, each container 2,120 bytes)
//! before any string; a kept ScaledJob measured 6.6 KiB in the reflector's store (heap profile,
//! docs/operator.md). Its spec and status as JSON are the few hundred bytes the API server sent.
//! A reconcile reads them back once ([`KeptScaledJob::scaled_job`]): a few KB parsed per poll.
//!
//! The store, the controller's queue and its predicates (generation, labels, annotations,
//! finalizers, deletion) work on this type: it is the same API resource (`keda.sh/v1alpha1`
//! `scaledjobs`) and deserializes from a `ScaledJob` (`#[serde(try_from)]`), so the watch
//! decodes each object once and keeps only this form.

use std::borrow::Cow;
use std::sync::LazyLock;

use jobtide_api::{ScaledJob, ScaledJobSpec, ScaledJobStatus};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;

use crate::packing::Packer;

/// `kubectl apply`'s copy of the object as last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Packs a ScaledJob's spec and status against a typical one's.
static PACKER: LazyLock<Packer> =
    LazyLock::new(|| Packer::new("ScaledJob", &dictionary().unwrap_or_default()));

/// A typical ScaledJob's spec and status (a Kafka trigger with its usual parameters, a Job
/// template, KEDA's conditions and messages), written as the kept ones are.
fn dictionary() -> Result<Vec<u8>, serde_json::Error> {
    let (spec, status): (ScaledJobSpec, Option<ScaledJobStatus>) = serde_json::from_value(
        serde_json::json!([{
            "jobTargetRef": {"parallelism": 1, "completions": 1, "activeDeadlineSeconds": 600,
                "backoffLimit": 6, "template": {"metadata": {"labels": {"app": "worker"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "worker",
                    "image": "registry.example.com/worker:1.0.0", "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c"], "args": ["process"],
                    "env": [{"name": "KAFKA_TOPIC", "value": "orders"},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "kafka-credentials", "key": "password"}}}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "500m", "memory": "512Mi"}}}]}}},
            "pollingInterval": 30, "successfulJobsHistoryLimit": 5, "failedJobsHistoryLimit": 5,
            "minReplicaCount": 0, "maxReplicaCount": 100,
            "scalingStrategy": {"strategy": "default"},
            "triggers": [{"type": "kafka", "name": "kafka-trigger", "metadata": {
                "bootstrapServers": "kafka.kafka.svc.cluster.local:9092", "consumerGroup": "my-group",
                "topic": "orders", "lagThreshold": "5", "activationLagThreshold": "0",
                "offsetResetPolicy": "earliest", "allowIdleConsumers": "false",
                "scaleToZeroOnInvalidOffset": "false", "excludePersistentLag": "false",
                "limitToPartitionsWithLag": "false", "partitionLimitation": "", "sasl": "plaintext",
                "tls": "enable"}, "authenticationRef": {"name": "keda-trigger-auth-kafka-credential",
                "kind": "TriggerAuthentication"}}]
        }, {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ScaledJobReady",
                    "message": jobtide_core::status::POLL_READY_MESSAGE},
                {"type": "Active", "status": "False", "reason": "ScalerNotActive",
                    "message": "Scaling is not performed because triggers are not active"},
                {"type": "Active", "status": "True", "reason": "ScalerActive",
                    "message": "Scaling is performed because triggers are active"},
                {"type": "Fallback", "status": "False", "reason": "NoFallbackFound",
                    "message": "No fallbacks are active on this scaled object"},
                {"type": "Paused", "status": "False", "reason": "ScaledJobUnpaused",
                    "message": "pause annotation removed for ScaledJob"}],
            "lastActiveTime": "2026-01-01T00:00:00Z", "triggersTypes": "kafka",
            "authenticationsTypes": "keda-trigger-auth-kafka-credential"
        }]),
    )?;
    serde_json::to_vec(&(&spec, &status))
}

/// A ScaledJob as the operator's store keeps it.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "ScaledJob")]
pub struct KeptScaledJob {
    /// The metadata without `managedFields` and `kubectl apply`'s last-applied annotation (real
    /// API servers send the first with every object; the second is a copy of the whole object;
    /// nothing here reads either).
    metadata: ObjectMeta,
    /// Whether it runs in dispatch mode (its Jobs' changes wake it at once).
    dispatch: bool,
    /// `(spec, status)` as JSON, packed.
    packed: Box<[u8]>,
}

impl TryFrom<ScaledJob> for KeptScaledJob {
    type Error = String;

    fn try_from(scaled_job: ScaledJob) -> Result<Self, String> {
        let ScaledJob {
            mut metadata,
            spec,
            status,
        } = scaled_job;
        metadata.managed_fields = None;
        if let Some(annotations) = &mut metadata.annotations {
            annotations.remove(LAST_APPLIED);
        }
        let packed = serde_json::to_vec(&(&spec, &status)).map_err(|error| {
            format!(
                "keeping ScaledJob {}/{}: {error}",
                metadata.namespace.as_deref().unwrap_or_default(),
                metadata.name.as_deref().unwrap_or_default()
            )
        })?;
        Ok(Self {
            metadata,
            dispatch: spec.dispatch_mode(),
            packed: PACKER.pack(&packed),
        })
    }
}

impl KeptScaledJob {
    /// The whole ScaledJob: the kept metadata, spec and status.
    pub fn scaled_job(&self) -> Result<ScaledJob, String> {
        let json = PACKER.unpack(&self.packed)?;
        let (spec, status): (ScaledJobSpec, Option<ScaledJobStatus>) =
            serde_json::from_slice(&json).map_err(|error| error.to_string())?;
        Ok(ScaledJob {
            metadata: self.metadata.clone(),
            spec,
            status,
        })
    }

    /// Whether it runs in dispatch mode.
    pub fn dispatch_mode(&self) -> bool {
        self.dispatch
    }
}

impl Resource for KeptScaledJob {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        ScaledJob::kind(&())
    }

    fn group((): &()) -> Cow<'_, str> {
        ScaledJob::group(&())
    }

    fn version((): &()) -> Cow<'_, str> {
        ScaledJob::version(&())
    }

    fn api_version((): &()) -> Cow<'_, str> {
        ScaledJob::api_version(&())
    }

    fn plural((): &()) -> Cow<'_, str> {
        ScaledJob::plural(&())
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled_job() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledJob",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1",
                "resourceVersion": "42", "generation": 3,
                "labels": {"team": "a"},
                "annotations": {"autoscaling.keda.sh/paused": "false",
                    LAST_APPLIED: "{\"the\":\"whole object\"}"},
                "finalizers": ["finalizer.keda.sh"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {
                "jobTargetRef": {"parallelism": 1, "backoffLimit": 4,
                    "template": {"metadata": {"labels": {"app": "w"}},
                        "spec": {"restartPolicy": "Never",
                            "containers": [{"name": "w", "image": "worker:1",
                                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]}}},
                "pollingInterval": 10,
                "successfulJobsHistoryLimit": 2,
                "maxReplicaCount": 7,
                "scalingStrategy": {"strategy": "accurate"},
                "triggers": [{"type": "kafka", "name": "lag",
                    "metadata": {"bootstrapServers": "k:9092", "consumerGroup": "g", "topic": "t", "lagThreshold": "5"},
                    "authenticationRef": {"name": "auth"}}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "ScaledJobReady", "message": "ok"}],
                "triggersTypes": "kafka", "lastActiveTime": "2026-01-02T03:04:05Z"}
        })
    }

    #[test]
    fn a_kept_scaled_job_reads_back_whole_without_managed_fields_or_last_applied() {
        let original: ScaledJob = serde_json::from_value(scaled_job()).unwrap();
        let kept: KeptScaledJob = serde_json::from_value(scaled_job()).unwrap();
        let mut expected = original.clone();
        expected.metadata.managed_fields = None;
        expected
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(LAST_APPLIED);
        let read_back = serde_json::to_value(kept.scaled_job().unwrap()).unwrap();
        assert_eq!(read_back, serde_json::to_value(&expected).unwrap());
        assert_eq!(read_back["spec"], scaled_job()["spec"]);
        assert_eq!(kept.meta(), &expected.metadata);
        assert!(!kept.dispatch_mode());
        // What the store keeps is smaller than the object it came from.
        assert!(kept.packed.len() < serde_json::to_vec(&original).unwrap().len());
    }

    #[test]
    fn the_dictionary_is_a_whole_scaled_job_and_kept_ones_pack_small() {
        let dictionary = dictionary().unwrap();
        assert!(dictionary.len() > 1500, "{}", dictionary.len());
        // The repository's example ScaledJobs (none of them the dictionary's), with the status
        // their first poll writes.
        let status = serde_json::json!({"conditions": [
            {"type": "Ready", "status": "True", "reason": "ScaledJobReady",
                "message": jobtide_core::status::POLL_READY_MESSAGE},
            {"type": "Active", "status": "False", "reason": "ScalerNotActive",
                "message": "Scaling is not performed because triggers are not active"}],
            "triggersTypes": "kafka"});
        for example in [
            "dev-scaledjob.yaml",
            "dev-dispatch.yaml",
            "seed-scaledjob.yaml",
        ] {
            let path = format!("{}/../../examples/{example}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            let mut value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
            value["status"] = status.clone();
            let json = serde_json::to_vec(&(&value["spec"], &value["status"])).unwrap();
            let kept: KeptScaledJob = serde_json::from_value(value).unwrap();
            assert!(
                kept.packed.len() * 2 < json.len(),
                "{example}: {} bytes kept of {}",
                kept.packed.len(),
                json.len()
            );
            kept.scaled_job().unwrap();
            // The figures docs/operator.md quotes (`-- --nocapture`).
            eprintln!(
                "{example}: {} bytes kept of {}",
                kept.packed.len(),
                json.len()
            );
        }
    }

    #[test]
    fn a_kept_scaled_job_is_the_same_api_resource() {
        assert_eq!(KeptScaledJob::kind(&()), "ScaledJob");
        assert_eq!(KeptScaledJob::api_version(&()), "keda.sh/v1alpha1");
        assert_eq!(
            KeptScaledJob::url_path(&(), Some("shop")),
            ScaledJob::url_path(&(), Some("shop"))
        );
    }

    #[test]
    fn a_dispatch_scaled_job_is_kept_as_one() {
        let mut value = scaled_job();
        value["spec"]["triggers"][0]["type"] = "kafka-dispatch".into();
        let kept: KeptScaledJob = serde_json::from_value(value).unwrap();
        assert!(kept.dispatch_mode());
        assert!(kept.scaled_job().unwrap().spec.dispatch_mode());
    }
}
