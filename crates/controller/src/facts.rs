//! Gathering the objects a poll's trigger resolution reads: from [`AuthObjects`], with one GET
//! per object it doesn't hold current (never a LIST).

use std::cell::RefCell;
use std::collections::BTreeMap;

use jobtide_api::auth::TriggerAuthenticationSpec;
use jobtide_api::resolve::{MissingEnvSource, ObjectLookup, ResolvedTrigger, resolve_triggers};
use jobtide_api::secret::Secret;
use jobtide_api::{ClusterTriggerAuthentication, ScaledJob, ScaledJobSpec, TriggerAuthentication};
use k8s_openapi::api::core::v1::{ConfigMap, Secret as K8sSecret};
use kube::{Api, Client, ResourceExt};

use crate::cache::OwnerKey;
use crate::objects::{AuthObjects, Fetched, Kind, Lookup, ObjectKey, Value, version_of};

/// Whether resolving `spec`'s triggers reads any Secret, ConfigMap or TriggerAuthentication:
/// an `authenticationRef`, or a container env that takes values from objects.
pub fn reads_objects(spec: &ScaledJobSpec) -> bool {
    let containers = spec
        .job_target_ref
        .template
        .spec
        .as_ref()
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    spec.triggers.iter().any(|t| t.authentication_ref.is_some())
        || containers.iter().any(|c| {
            c.env_from.as_ref().is_some_and(|e| !e.is_empty())
                || c.env.iter().flatten().any(|v| v.value_from.is_some())
        })
}

/// Resolution reads chain at most this deep: a TriggerAuthentication, then its Secrets (env
/// sources are read in the first round).
const ROUNDS: usize = 3;

/// Resolves `scaled_job`'s triggers from `objects`, fetching what it doesn't hold current; the
/// objects read are recorded as `owner`'s. A failed GET is `(what, error)`.
pub async fn resolve(
    client: &Client,
    objects: &AuthObjects,
    owner: &OwnerKey,
    scaled_job: &ScaledJob,
    cluster_namespace: &str,
) -> Result<Vec<ResolvedTrigger>, (String, kube::Error)> {
    let namespace = scaled_job.namespace().unwrap_or_default();
    let spec = &scaled_job.spec;
    let mut round = 0;
    loop {
        round += 1;
        let lookup = Recording {
            objects,
            reads: RefCell::default(),
            missing: RefCell::default(),
        };
        let resolved = resolve_triggers(
            &lookup,
            &namespace,
            spec,
            cluster_namespace,
            MissingEnvSource::Fail,
        );
        let Recording { reads, missing, .. } = lookup;
        let missing = missing.into_inner();
        objects.read_by(owner, reads.into_inner());
        if missing.is_empty() || round == ROUNDS {
            return Ok(resolved);
        }
        for key in missing {
            let fetched = fetch(client, &key).await.map_err(|error| {
                let what = match key.kind {
                    Kind::ClusterTriggerAuthentication => {
                        format!("ClusterTriggerAuthentication {}", key.name)
                    }
                    kind => format!("{kind:?} {}/{}", key.namespace, key.name),
                };
                (what, error)
            })?;
            objects.fetched(&key, fetched);
        }
    }
}

/// One GET; a 404 (the object, or its resource type, doesn't exist) is `None`.
async fn fetch(client: &Client, key: &ObjectKey) -> Result<Fetched, kube::Error> {
    let ObjectKey {
        kind,
        namespace,
        name,
    } = key;
    let kind = *kind;
    Ok(match kind {
        Kind::Secret => Api::<K8sSecret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|secret| {
                let version = version_of(kind, &secret).into();
                (
                    version,
                    Value::secret(jobtide_api::resolve::secret_data(secret)),
                )
            }),
        Kind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|config_map| {
                let version = version_of(kind, &config_map).into();
                (
                    version,
                    Value::config_map(config_map.data.unwrap_or_default()),
                )
            }),
        Kind::TriggerAuthentication => {
            match Api::<TriggerAuthentication>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
            {
                Some(ta) => Some((
                    version_of(kind, &ta).into(),
                    Value::authentication(&ta.spec).map_err(kube::Error::SerdeError)?,
                )),
                None => None,
            }
        }
        Kind::ClusterTriggerAuthentication => {
            match Api::<ClusterTriggerAuthentication>::all(client.clone())
                .get_opt(name)
                .await?
            {
                Some(cta) => Some((
                    version_of(kind, &cta).into(),
                    Value::authentication(&cta.spec.0).map_err(kube::Error::SerdeError)?,
                )),
                None => None,
            }
        }
    })
}

/// An [`ObjectLookup`] over [`AuthObjects`] that records what it was asked and what it
/// didn't hold current.
struct Recording<'a> {
    objects: &'a AuthObjects,
    reads: RefCell<Vec<ObjectKey>>,
    missing: RefCell<Vec<ObjectKey>>,
}

impl Recording<'_> {
    fn read(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        };
        let lookup = self.objects.get(&key);
        let mut reads = self.reads.borrow_mut();
        if !reads.contains(&key) {
            reads.push(key.clone());
        }
        match lookup {
            Lookup::Current(value) => value,
            Lookup::Fetch => {
                let mut missing = self.missing.borrow_mut();
                if !missing.contains(&key) {
                    missing.push(key);
                }
                None
            }
        }
    }
}

impl ObjectLookup for Recording<'_> {
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Secret>> {
        self.read(Kind::Secret, namespace, name)?.to_secret()
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.read(Kind::ConfigMap, namespace, name)?.to_config_map()
    }

    fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<TriggerAuthenticationSpec> {
        self.read(Kind::TriggerAuthentication, namespace, name)?
            .to_authentication()
    }

    fn cluster_trigger_authentication(&self, name: &str) -> Option<TriggerAuthenticationSpec> {
        self.read(Kind::ClusterTriggerAuthentication, "", name)?
            .to_authentication()
    }
}
