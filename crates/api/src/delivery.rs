//! Dispatch mode: the Job for one Kafka message, and how the message reaches it (issue 13).
//!
//! The Job is [`crate::job::job_for`]'s Job with a deterministic name (chosen by the caller from
//! `jobtide_core::dispatch`), the message's coordinates as labels and annotations, and in every
//! container:
//! - `JOBTIDE_TOPIC`, `JOBTIDE_PARTITION`, `JOBTIDE_OFFSET`, `JOBTIDE_ATTEMPT`, and
//!   `JOBTIDE_TIMESTAMP` (milliseconds since the epoch) when the message has one;
//! - `TRACEPARENT`: [`Delivery::traceparent`] when the operator traces (the Job's own span),
//!   else the message's W3C `traceparent` header when it is well formed;
//! - with `payload: file`, `JOBTIDE_MESSAGE_DIR` naming a read-only directory holding `key`,
//!   `value` (absent when the message has none) and `headers.json`, from a Secret of the Job's
//!   name that the caller makes the Job own (so it is garbage-collected with it); a Secret holds
//!   binary values intact;
//! - with `payload: env`, `JOBTIDE_MESSAGE_KEY` / `JOBTIDE_MESSAGE_VALUE` (UTF-8 only).
//!
//! A message that can't be delivered as configured (too large, or not UTF-8 for `env`) is a
//! [`DeliveryError`] naming why; the dispatcher dead-letters it, it is never truncated.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, Secret, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde_json::{Value, json};
use thiserror::Error;

use crate::ScaledJob;
use crate::job::{JobBuildError, SCALED_JOB_NAME_LABEL, job_for};
use crate::trigger::Payload;

/// Where the message's files are mounted in every container (`$JOBTIDE_MESSAGE_DIR`).
pub const MESSAGE_DIR: &str = "/var/run/jobtide/message";
/// The name of the message volume in the pod.
pub const MESSAGE_VOLUME: &str = "jobtide-message";
/// The annotation holding the topic (a topic may be longer than a label value).
pub const TOPIC_ANNOTATION: &str = "jobtide.io/topic";
/// The annotation holding the message's own W3C `traceparent` header (when well formed), so that
/// whoever emits the message's span later parents it on the producer's without the message.
pub const TRACEPARENT_ANNOTATION: &str = "jobtide.io/traceparent";
/// The most bytes of key, value and headers `payload: file` delivers: a Secret holds at most
/// 1 MiB, and its keys and metadata need some of it.
pub const MAX_FILE_PAYLOAD: usize = 1_000_000;
/// The most bytes of key and value `payload: env` delivers: Linux refuses one environment
/// string over 128 KiB (`MAX_ARG_STRLEN`), and a pod's whole environment shares the limit of a
/// process's arguments.
pub const MAX_ENV_PAYLOAD: usize = 100 * 1024;

/// One message and where it goes.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The Job's name (deterministic, from `jobtide_core::dispatch`).
    pub job_name: &'a str,
    /// Labels identifying the message (partition, offset, attempt, …).
    pub labels: &'a BTreeMap<String, String>,
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The attempt (1 for the first Job of the message).
    pub attempt: u32,
    /// The message's timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: Option<&'a [u8]>,
    /// The headers, in order.
    pub headers: &'a [(String, Option<Vec<u8>>)],
    /// How the payload reaches the Job.
    pub payload: Payload,
    /// The Job's `TRACEPARENT` when the operator exports traces (the span of this attempt, in
    /// the message's trace: `jobtide_core::dispatch::MessageTrace`); `None`: the message's own
    /// header is passed on when it is well formed.
    pub traceparent: Option<&'a str>,
}

/// Why a message can't be delivered as its trigger says.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// `payload: env` and the key or value isn't UTF-8 text.
    #[error(
        "the message's {0} is not UTF-8, which payload: env needs (payload: file delivers any bytes)"
    )]
    NotUtf8(&'static str),
    /// The payload is larger than the delivery can hold.
    #[error(
        "the message's key, value and headers are {size} bytes; payload: {delivery} delivers at most {limit}"
    )]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        limit: usize,
        /// `file` or `env`.
        delivery: &'static str,
    },
    /// The ScaledJob can't own a Job.
    #[error(transparent)]
    Build(#[from] JobBuildError),
}

/// The Job for `delivery`, and with `payload: file` the Secret it mounts (to be created owned by
/// the Job: [`owned_by`]).
pub fn message_job(
    scaled_job: &ScaledJob,
    operator_version: &str,
    delivery: &Delivery<'_>,
) -> Result<(Job, Option<Secret>), DeliveryError> {
    let mut env = vec![
        env_var("JOBTIDE_TOPIC", delivery.topic),
        env_var("JOBTIDE_PARTITION", &delivery.partition.to_string()),
        env_var("JOBTIDE_OFFSET", &delivery.offset.to_string()),
        env_var("JOBTIDE_ATTEMPT", &delivery.attempt.to_string()),
    ];
    if let Some(timestamp) = delivery.timestamp_ms {
        env.push(env_var("JOBTIDE_TIMESTAMP", &timestamp.to_string()));
    }
    if let Some(traceparent) = delivery
        .traceparent
        .or_else(|| traceparent(delivery.headers))
    {
        env.push(env_var("TRACEPARENT", traceparent));
    }
    let secret = match delivery.payload {
        Payload::None => None,
        Payload::Env => {
            let size = delivery.key.map_or(0, <[u8]>::len) + delivery.value.map_or(0, <[u8]>::len);
            if size > MAX_ENV_PAYLOAD {
                return Err(DeliveryError::TooLarge {
                    size,
                    limit: MAX_ENV_PAYLOAD,
                    delivery: "env",
                });
            }
            for (name, field, bytes) in [
                ("JOBTIDE_MESSAGE_KEY", "key", delivery.key),
                ("JOBTIDE_MESSAGE_VALUE", "value", delivery.value),
            ] {
                if let Some(bytes) = bytes {
                    let text =
                        std::str::from_utf8(bytes).map_err(|_| DeliveryError::NotUtf8(field))?;
                    env.push(env_var(name, text));
                }
            }
            None
        }
        Payload::File => {
            env.push(env_var("JOBTIDE_MESSAGE_DIR", MESSAGE_DIR));
            Some(message_secret(scaled_job, delivery)?)
        }
    };

    let mut job = job_for(scaled_job, operator_version)?;
    job.metadata.generate_name = None;
    job.metadata.name = Some(delivery.job_name.to_owned());
    job.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(delivery.labels.clone());
    job.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(TOPIC_ANNOTATION.to_owned(), delivery.topic.to_owned());
    if let Some(header) = traceparent(delivery.headers) {
        job.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(TRACEPARENT_ANNOTATION.to_owned(), header.to_owned());
    }
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        for container in pod
            .containers
            .iter_mut()
            .chain(pod.init_containers.iter_mut().flatten())
        {
            add_env(container, &env);
            if secret.is_some() {
                container
                    .volume_mounts
                    .get_or_insert_with(Vec::new)
                    .push(VolumeMount {
                        name: MESSAGE_VOLUME.to_owned(),
                        mount_path: MESSAGE_DIR.to_owned(),
                        read_only: Some(true),
                        ..VolumeMount::default()
                    });
            }
        }
        if secret.is_some() {
            pod.volumes.get_or_insert_with(Vec::new).push(Volume {
                name: MESSAGE_VOLUME.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(delivery.job_name.to_owned()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
    }
    Ok((job, secret))
}

/// `secret` made owned by the created `job`, so Kubernetes deletes it with the Job.
pub fn owned_by(mut secret: Secret, job: &Job) -> Secret {
    if let (Some(name), Some(uid)) = (job.metadata.name.clone(), job.metadata.uid.clone()) {
        secret.metadata.owner_references = Some(vec![OwnerReference {
            api_version: Job::api_version(&()).into_owned(),
            kind: Job::kind(&()).into_owned(),
            name,
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
    }
    secret
}

fn message_secret(
    scaled_job: &ScaledJob,
    delivery: &Delivery<'_>,
) -> Result<Secret, DeliveryError> {
    let headers = headers_json(delivery.headers);
    let size =
        delivery.key.map_or(0, <[u8]>::len) + delivery.value.map_or(0, <[u8]>::len) + headers.len();
    if size > MAX_FILE_PAYLOAD {
        return Err(DeliveryError::TooLarge {
            size,
            limit: MAX_FILE_PAYLOAD,
            delivery: "file",
        });
    }
    let mut data = BTreeMap::new();
    data.insert("headers.json".to_owned(), ByteString(headers.into_bytes()));
    for (file, bytes) in [("key", delivery.key), ("value", delivery.value)] {
        if let Some(bytes) = bytes {
            data.insert(file.to_owned(), ByteString(bytes.to_vec()));
        }
    }
    let mut labels = delivery.labels.clone();
    if let Some(name) = scaled_job.metadata.name.clone() {
        labels.insert(SCALED_JOB_NAME_LABEL.to_owned(), name);
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(delivery.job_name.to_owned()),
            namespace: scaled_job.metadata.namespace.clone(),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

/// `headers.json`: the headers in order, each `{"key": …, "value": …}` with the value as text
/// when it is UTF-8, as `{"key": …, "valueBase64": …}` otherwise, and `"value": null` for a
/// header without a value.
fn headers_json(headers: &[(String, Option<Vec<u8>>)]) -> String {
    use base64::Engine as _;
    let list: Vec<Value> = headers
        .iter()
        .map(|(key, value)| match value {
            None => json!({"key": key, "value": null}),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => json!({"key": key, "value": text}),
                Err(_) => json!({
                    "key": key,
                    "valueBase64": base64::engine::general_purpose::STANDARD.encode(bytes),
                }),
            },
        })
        .collect();
    Value::Array(list).to_string()
}

/// The message's W3C `traceparent` header, when there is exactly a well-formed one
/// (`00-<32 hex>-<16 hex>-<2 hex>`, trace and parent ids not all zero).
fn traceparent(headers: &[(String, Option<Vec<u8>>)]) -> Option<&str> {
    let value = headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("traceparent"))?
        .1
        .as_deref()?;
    let text = std::str::from_utf8(value).ok()?;
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let well_formed = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    well_formed.then_some(text)
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// Sets `vars` on `container`, replacing any variable of the same name the template had.
fn add_env(container: &mut Container, vars: &[EnvVar]) {
    let list = container.env.get_or_insert_with(Vec::new);
    list.retain(|existing| !vars.iter().any(|v| v.name == existing.name));
    list.extend(vars.iter().cloned());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scaled_job() -> ScaledJob {
        serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "orders", "namespace": "team-a", "uid": "u-1", "generation": 2},
            "spec": {
                "jobTargetRef": {"template": {"spec": {
                    "initContainers": [{"name": "init", "image": "i"}],
                    "containers": [{"name": "c", "image": "i",
                        "env": [{"name": "JOBTIDE_OFFSET", "value": "forged"}, {"name": "KEEP", "value": "1"}]}],
                }}},
                "triggers": [{"type": "kafka-dispatch", "metadata": {}}],
            },
        }))
        .expect("test ScaledJob")
    }

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([("jobtide.io/offset".to_owned(), "41".to_owned())])
    }

    fn delivery(labels: &BTreeMap<String, String>, payload: Payload) -> Delivery<'_> {
        Delivery {
            job_name: "orders-0a1b2c3d-2-41-1",
            labels,
            topic: "orders",
            partition: 2,
            offset: 41,
            attempt: 1,
            timestamp_ms: Some(1_764_000_000_000),
            key: Some(b"18"),
            value: Some(&[0xff, 0x00, b'x']),
            headers: &[],
            payload,
            traceparent: None,
        }
    }

    fn env_of(job: &Job, container: usize) -> BTreeMap<String, String> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[container]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn the_job_is_named_labelled_and_told_where_its_message_is() {
        let labels = labels();
        let (job, secret) =
            message_job(&scaled_job(), "0.1.0", &delivery(&labels, Payload::File)).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("orders-0a1b2c3d-2-41-1"));
        assert_eq!(job.metadata.generate_name, None);
        let job_labels = job.metadata.labels.clone().unwrap();
        assert_eq!(job_labels["jobtide.io/offset"], "41");
        assert_eq!(job_labels[SCALED_JOB_NAME_LABEL], "orders");
        assert_eq!(
            job.metadata.annotations.clone().unwrap()[TOPIC_ANNOTATION],
            "orders"
        );
        let env = env_of(&job, 0);
        assert_eq!(env["JOBTIDE_TOPIC"], "orders");
        assert_eq!(env["JOBTIDE_PARTITION"], "2");
        assert_eq!(
            env["JOBTIDE_OFFSET"], "41",
            "the template can't forge the offset"
        );
        assert_eq!(env["JOBTIDE_ATTEMPT"], "1");
        assert_eq!(env["JOBTIDE_TIMESTAMP"], "1764000000000");
        assert_eq!(env["JOBTIDE_MESSAGE_DIR"], MESSAGE_DIR);
        assert_eq!(env["KEEP"], "1");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let init_env: Vec<String> = pod.init_containers.as_ref().unwrap()[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.clone())
            .collect();
        assert!(init_env.contains(&"JOBTIDE_MESSAGE_DIR".to_owned()));
        let volume = &pod.volumes.unwrap()[0];
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("orders-0a1b2c3d-2-41-1")
        );
        let mount = &pod.containers[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (MESSAGE_DIR, Some(true))
        );

        let secret = secret.unwrap();
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("orders-0a1b2c3d-2-41-1")
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
        let data = secret.data.unwrap();
        assert_eq!(data["key"].0, b"18");
        assert_eq!(data["value"].0, [0xff, 0x00, b'x'], "binary values intact");
        assert_eq!(data["headers.json"].0, b"[]");
    }

    #[test]
    fn the_secret_is_owned_by_the_created_job() {
        let labels = labels();
        let (mut job, secret) =
            message_job(&scaled_job(), "0.1.0", &delivery(&labels, Payload::File)).unwrap();
        job.metadata.uid = Some("job-uid".into());
        let owner = owned_by(secret.unwrap(), &job)
            .metadata
            .owner_references
            .unwrap();
        assert_eq!(owner[0].kind, "Job");
        assert_eq!(owner[0].uid, "job-uid");
        assert_eq!(owner[0].controller, Some(true));
    }

    #[test]
    fn headers_are_kept_in_order_text_or_base64() {
        let headers = vec![
            ("a".to_owned(), Some(b"text".to_vec())),
            ("b".to_owned(), Some(vec![0xff])),
            ("a".to_owned(), None),
        ];
        let parsed: Value = serde_json::from_str(&headers_json(&headers)).unwrap();
        assert_eq!(
            parsed,
            json!([{"key": "a", "value": "text"}, {"key": "b", "valueBase64": "/w=="}, {"key": "a", "value": null}])
        );
    }

    #[test]
    fn env_payloads_must_be_utf8_and_small() {
        let labels = labels();
        let binary = delivery(&labels, Payload::Env);
        assert_eq!(
            message_job(&scaled_job(), "0.1.0", &binary).unwrap_err(),
            DeliveryError::NotUtf8("value")
        );
        let text = Delivery {
            value: Some(b"{\"orderid\":18}"),
            ..binary
        };
        let (job, secret) = message_job(&scaled_job(), "0.1.0", &text).unwrap();
        assert!(secret.is_none());
        let env = env_of(&job, 0);
        assert_eq!(env["JOBTIDE_MESSAGE_KEY"], "18");
        assert_eq!(env["JOBTIDE_MESSAGE_VALUE"], "{\"orderid\":18}");
        assert!(!env.contains_key("JOBTIDE_MESSAGE_DIR"));
        let big = vec![b'x'; MAX_ENV_PAYLOAD];
        let too_big = Delivery {
            value: Some(&big),
            ..text
        };
        assert!(matches!(
            message_job(&scaled_job(), "0.1.0", &too_big),
            Err(DeliveryError::TooLarge {
                delivery: "env",
                ..
            })
        ));
    }

    #[test]
    fn file_payloads_over_a_secrets_size_are_refused_not_truncated() {
        let labels = labels();
        let big = vec![0_u8; MAX_FILE_PAYLOAD];
        let message = Delivery {
            value: Some(&big),
            ..delivery(&labels, Payload::File)
        };
        let error = message_job(&scaled_job(), "0.1.0", &message).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the message's key, value and headers are 1000004 bytes; payload: file delivers at most 1000000"
        );
    }

    #[test]
    fn only_a_well_formed_traceparent_is_passed_on() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (value, expected) in [
            (good, Some(good)),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01;x",
                None,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                None,
            ),
        ] {
            let headers = vec![("traceparent".to_owned(), Some(value.as_bytes().to_vec()))];
            assert_eq!(traceparent(&headers), expected, "{value}");
        }
        let labels = labels();
        let headers = vec![("traceparent".to_owned(), Some(good.as_bytes().to_vec()))];
        let message = Delivery {
            headers: &headers,
            ..delivery(&labels, Payload::None)
        };
        let (job, secret) = message_job(&scaled_job(), "0.1.0", &message).unwrap();
        assert!(secret.is_none());
        assert_eq!(env_of(&job, 0)["TRACEPARENT"], good);
        assert_eq!(
            job.metadata.annotations.clone().unwrap()[TRACEPARENT_ANNOTATION],
            good
        );
        let ours = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
        let traced = Delivery {
            traceparent: Some(ours),
            ..message
        };
        let (job, _) = message_job(&scaled_job(), "0.1.0", &traced).unwrap();
        assert_eq!(
            env_of(&job, 0)["TRACEPARENT"],
            ours,
            "the operator's span replaces the header"
        );
    }
}
