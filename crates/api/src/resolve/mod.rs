//! Resolving a trigger's inputs: `authParams` from its (Cluster)TriggerAuthentication and
//! `resolvedEnv` from the job template's container env, as KEDA does (keda-compat §8.1), with
//! jobtide's difference D13 (a missing TriggerAuthentication is an error, not an empty map).
//!
//! Objects are read through [`ObjectLookup`], so `jobtide validate` (documents in files) and the
//! operator (reflector caches) resolve identically.

mod env;
mod objects;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use thiserror::Error;

use crate::auth::TriggerAuthenticationSpec;
use crate::scaledjob::{AuthenticationKind, ScaleTrigger};
use crate::secret::Secret;

pub use env::{expand_env_value, resolve_container_env};
pub use objects::{ObjectSet, secret_data};

/// KEDA's default namespace for the Secrets and ConfigMaps of ClusterTriggerAuthentications
/// (`KEDA_CLUSTER_OBJECT_NAMESPACE`, defaulting to the operator's namespace, `keda`).
pub const DEFAULT_CLUSTER_OBJECT_NAMESPACE: &str = "keda";

/// Read access to the objects a trigger's inputs come from.
pub trait ObjectLookup {
    /// The decoded data of a Secret (`data` and `stringData` merged), if it exists.
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Secret>>;
    /// The data of a ConfigMap, if it exists.
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>>;
    /// A TriggerAuthentication's spec, if it exists.
    fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<TriggerAuthenticationSpec>;
    /// A ClusterTriggerAuthentication's spec, if it exists.
    fn cluster_trigger_authentication(&self, name: &str) -> Option<TriggerAuthenticationSpec>;
}

/// What to do when a Secret or ConfigMap referenced by the job template's env is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingEnvSource {
    /// Fail as KEDA does (the operator, where the lookup sees the whole cluster).
    Fail,
    /// Warn and treat the variables as unset (`jobtide validate`, which sees only its inputs).
    Warn,
}

/// The inputs of one trigger, ready for the trigger parser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerInputs {
    /// Parameters from the trigger's authentication.
    pub auth_params: BTreeMap<String, Secret>,
    /// The env of the `envSourceContainerName` container, for `*FromEnv` parameters.
    pub resolved_env: BTreeMap<String, Secret>,
    /// Things a user should know that are not errors (e.g. a referenced Secret is missing and
    /// its parameter is treated as empty, as KEDA does).
    pub warnings: Vec<String>,
}

/// Why a trigger's inputs could not be resolved.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The `authenticationRef` names a TriggerAuthentication that does not exist (D13).
    #[error("TriggerAuthentication \"{name}\" not found in namespace \"{namespace}\"")]
    TriggerAuthenticationNotFound {
        /// The ScaledJob's namespace.
        namespace: String,
        /// The referenced name.
        name: String,
    },
    /// The `authenticationRef` names a ClusterTriggerAuthentication that does not exist (D13).
    #[error("ClusterTriggerAuthentication \"{name}\" not found")]
    ClusterTriggerAuthenticationNotFound {
        /// The referenced name.
        name: String,
    },
    /// The authentication uses sources jobtide cannot resolve yet.
    #[error("{kind:?} \"{name}\": {} not supported by jobtide yet", describe_fields(.fields))]
    UnsupportedSources {
        /// TriggerAuthentication or ClusterTriggerAuthentication.
        kind: AuthenticationKind,
        /// Its name.
        name: String,
        /// The JSON names of the unsupported fields that are set.
        fields: Vec<&'static str>,
    },
    /// The job template has no containers.
    #[error("target object doesn't have containers")]
    NoContainers,
    /// `envSourceContainerName` (or an env entry's `containerName`) names no container.
    #[error("couldn't find container with name {name} on Target object")]
    ContainerNotFound {
        /// The container name looked for.
        name: String,
    },
    /// A Secret or ConfigMap the container's env needs is missing or lacks the key.
    #[error("container \"{container}\": {message}")]
    EnvSource {
        /// The container whose env was being resolved.
        container: String,
        /// What is missing.
        message: String,
    },
}

fn describe_fields(fields: &[&'static str]) -> String {
    match fields {
        [one] => format!("spec.{one} is"),
        many => format!(
            "{} are",
            many.iter()
                .map(|f| format!("spec.{f}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Resolves the inputs of `trigger` for a ScaledJob in `namespace` whose job template is
/// `pod_spec` and whose `envSourceContainerName` is `env_source_container`.
pub fn resolve_trigger_inputs(
    lookup: &dyn ObjectLookup,
    namespace: &str,
    pod_spec: &PodSpec,
    env_source_container: Option<&str>,
    trigger: &ScaleTrigger,
    cluster_object_namespace: &str,
    missing_env_source: MissingEnvSource,
) -> Result<TriggerInputs, ResolveError> {
    let mut warnings = Vec::new();
    let resolved_env = resolve_container_env(
        lookup,
        namespace,
        pod_spec,
        env_source_container,
        missing_env_source,
        &mut warnings,
    )?;
    let mut auth_params = BTreeMap::new();
    if let Some(reference) = &trigger.authentication_ref {
        let kind = reference.kind_or_default();
        let (spec, secrets_namespace) = match kind {
            AuthenticationKind::TriggerAuthentication => (
                lookup
                    .trigger_authentication(namespace, &reference.name)
                    .ok_or_else(|| ResolveError::TriggerAuthenticationNotFound {
                        namespace: namespace.to_owned(),
                        name: reference.name.clone(),
                    })?,
                namespace,
            ),
            AuthenticationKind::ClusterTriggerAuthentication => (
                lookup
                    .cluster_trigger_authentication(&reference.name)
                    .ok_or_else(|| ResolveError::ClusterTriggerAuthenticationNotFound {
                        name: reference.name.clone(),
                    })?,
                cluster_object_namespace,
            ),
        };
        let unsupported = spec.unsupported_sources();
        if !unsupported.is_empty() {
            return Err(ResolveError::UnsupportedSources {
                kind,
                name: reference.name.clone(),
                fields: unsupported,
            });
        }
        let context = AuthContext {
            lookup,
            kind,
            auth_name: &reference.name,
            secrets_namespace,
            namespace,
            pod_spec,
            resolved_env: &resolved_env,
            missing_env_source,
        };
        context.collect(&spec, &mut auth_params, &mut warnings)?;
    }
    Ok(TriggerInputs {
        auth_params,
        resolved_env,
        warnings,
    })
}

struct AuthContext<'a> {
    lookup: &'a dyn ObjectLookup,
    kind: AuthenticationKind,
    auth_name: &'a str,
    secrets_namespace: &'a str,
    namespace: &'a str,
    pod_spec: &'a PodSpec,
    resolved_env: &'a BTreeMap<String, Secret>,
    missing_env_source: MissingEnvSource,
}

impl AuthContext<'_> {
    /// KEDA's merge order: env, then configMapTargetRef, then secretTargetRef (later wins).
    fn collect(
        &self,
        spec: &TriggerAuthenticationSpec,
        params: &mut BTreeMap<String, Secret>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ResolveError> {
        for entry in spec.env.iter().flatten() {
            let value = match entry.container_name.as_deref().filter(|c| !c.is_empty()) {
                Some(container) => {
                    let env = resolve_container_env(
                        self.lookup,
                        self.namespace,
                        self.pod_spec,
                        Some(container),
                        self.missing_env_source,
                        warnings,
                    )?;
                    env.get(&entry.name).cloned()
                }
                None => self.resolved_env.get(&entry.name).cloned(),
            };
            params.insert(
                entry.parameter.clone(),
                value.unwrap_or_else(|| Secret::new("")),
            );
        }
        for entry in spec.config_map_target_ref.iter().flatten() {
            let value = match self.lookup.config_map(self.secrets_namespace, &entry.name) {
                Some(data) => data.get(&entry.key).cloned().unwrap_or_else(|| {
                    warnings.push(self.missing(
                        "ConfigMap",
                        &entry.name,
                        Some(&entry.key),
                        &entry.parameter,
                    ));
                    String::new()
                }),
                None => {
                    warnings.push(self.missing("ConfigMap", &entry.name, None, &entry.parameter));
                    String::new()
                }
            };
            params.insert(entry.parameter.clone(), Secret::new(value));
        }
        for entry in spec.secret_target_ref.iter().flatten() {
            let value = match self.lookup.secret(self.secrets_namespace, &entry.name) {
                Some(data) => data.get(&entry.key).cloned().unwrap_or_else(|| {
                    warnings.push(self.missing(
                        "Secret",
                        &entry.name,
                        Some(&entry.key),
                        &entry.parameter,
                    ));
                    Secret::new("")
                }),
                None => {
                    warnings.push(self.missing("Secret", &entry.name, None, &entry.parameter));
                    Secret::new("")
                }
            };
            params.insert(entry.parameter.clone(), value);
        }
        Ok(())
    }

    fn missing(&self, what: &str, name: &str, key: Option<&str>, parameter: &str) -> String {
        let object = match key {
            Some(key) => format!(
                "key \"{key}\" of {what} \"{}/{name}\"",
                self.secrets_namespace
            ),
            None => format!("{what} \"{}/{name}\"", self.secrets_namespace),
        };
        format!(
            "{object} (parameter \"{parameter}\" of {:?} \"{}\") not found; the parameter is \
             treated as empty, as KEDA does",
            self.kind, self.auth_name
        )
    }
}

/// One trigger of a ScaledJob, resolved and parsed exactly as the operator does it.
#[derive(Debug, Clone)]
pub struct ResolvedTrigger {
    /// The parse with the resolved inputs — or, when resolution failed, of the metadata alone
    /// (for the metric name; its config is not meaningful then).
    pub parsed: crate::trigger::ParsedTrigger,
    /// Why the trigger's inputs could not be resolved.
    pub resolve_error: Option<ResolveError>,
    /// Resolution warnings (e.g. a referenced Secret treated as empty).
    pub resolve_warnings: Vec<String>,
}

/// Resolves and parses every trigger of `spec` for a ScaledJob in `namespace`.
pub fn resolve_triggers(
    lookup: &dyn ObjectLookup,
    namespace: &str,
    spec: &crate::ScaledJobSpec,
    cluster_object_namespace: &str,
    missing_env_source: MissingEnvSource,
) -> Vec<ResolvedTrigger> {
    let pod_spec = spec
        .job_target_ref
        .template
        .spec
        .clone()
        .unwrap_or_default();
    spec.triggers
        .iter()
        .enumerate()
        .map(|(index, trigger)| {
            match resolve_trigger_inputs(
                lookup,
                namespace,
                &pod_spec,
                spec.env_source_container(),
                trigger,
                cluster_object_namespace,
                missing_env_source,
            ) {
                Ok(inputs) => ResolvedTrigger {
                    parsed: crate::trigger::parse_trigger(index, trigger, &inputs),
                    resolve_error: None,
                    resolve_warnings: inputs.warnings,
                },
                Err(error) => ResolvedTrigger {
                    parsed: crate::trigger::parse_trigger(
                        index,
                        trigger,
                        &TriggerInputs::default(),
                    ),
                    resolve_error: Some(error),
                    resolve_warnings: Vec::new(),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
