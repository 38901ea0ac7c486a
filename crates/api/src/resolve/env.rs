//! The env of a job template container, resolved as KEDA's `resolveEnv` does: `envFrom` first
//! (ConfigMaps and Secrets, with their prefix), then `env` entries in order (plain values with
//! `$(VAR)` expansion, `secretKeyRef`, `configMapKeyRef`; `fieldRef` and `resourceFieldRef` are
//! skipped, as in KEDA).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::{MissingEnvSource, ObjectLookup, ResolveError};
use crate::secret::Secret;

/// Resolves the env of container `container_name` (default: the first container) of `pod_spec`.
pub fn resolve_container_env(
    lookup: &dyn ObjectLookup,
    namespace: &str,
    pod_spec: &PodSpec,
    container_name: Option<&str>,
    missing: MissingEnvSource,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, Secret>, ResolveError> {
    let container = find_container(pod_spec, container_name)?;
    let mut resolved: BTreeMap<String, Secret> = BTreeMap::new();
    let problem = |message: String, warnings: &mut Vec<String>| match missing {
        MissingEnvSource::Fail => Err(ResolveError::EnvSource {
            container: container.name.clone(),
            message,
        }),
        MissingEnvSource::Warn => {
            warnings.push(format!(
                "container \"{}\": {message}; treated as unset",
                container.name
            ));
            Ok(())
        }
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or_default();
        if let Some(reference) = &source.config_map_ref {
            match lookup.config_map(namespace, &reference.name) {
                Some(data) => {
                    for (key, value) in data {
                        resolved.insert(format!("{prefix}{key}"), Secret::new(value));
                    }
                }
                None if reference.optional == Some(true) => {}
                None => problem(
                    format!(
                        "envFrom ConfigMap \"{namespace}/{}\" not found",
                        reference.name
                    ),
                    warnings,
                )?,
            }
        } else if let Some(reference) = &source.secret_ref {
            match lookup.secret(namespace, &reference.name) {
                Some(data) => {
                    for (key, value) in data {
                        resolved.insert(format!("{prefix}{key}"), value);
                    }
                }
                None if reference.optional == Some(true) => {}
                None => problem(
                    format!(
                        "envFrom Secret \"{namespace}/{}\" not found",
                        reference.name
                    ),
                    warnings,
                )?,
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = var.value.as_deref().filter(|v| !v.is_empty()) {
            Secret::new(expand_env_value(value, &resolved))
        } else if let Some(source) = &var.value_from {
            let found = if let Some(selector) = &source.secret_key_ref {
                let data = lookup.secret(namespace, &selector.name);
                key_ref(
                    data,
                    "Secret",
                    &selector.name,
                    &selector.key,
                    selector.optional,
                )
            } else if let Some(selector) = &source.config_map_key_ref {
                let data = lookup
                    .config_map(namespace, &selector.name)
                    .map(|data| data.into_iter().map(|(k, v)| (k, Secret::new(v))).collect());
                key_ref(
                    data,
                    "ConfigMap",
                    &selector.name,
                    &selector.key,
                    selector.optional,
                )
            } else {
                // fieldRef / resourceFieldRef: KEDA skips these.
                continue;
            };
            match found {
                Ok(value) => value,
                Err(message) => {
                    problem(
                        format!("env {}: {message} in namespace {namespace}", var.name),
                        warnings,
                    )?;
                    continue;
                }
            }
        } else {
            Secret::new("")
        };
        resolved.insert(var.name.clone(), value);
    }
    Ok(resolved)
}

/// The value of `key` in a Secret's or ConfigMap's `data`; an optional reference to something
/// missing is empty, as in Kubernetes.
fn key_ref(
    data: Option<BTreeMap<String, Secret>>,
    kind: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Secret, String> {
    let optional = optional == Some(true);
    match data {
        Some(data) => match data.get(key) {
            Some(value) => Ok(value.clone()),
            None if optional => Ok(Secret::new("")),
            None => Err(format!("key \"{key}\" not found in {kind} \"{name}\"")),
        },
        None if optional => Ok(Secret::new("")),
        None => Err(format!("{kind} \"{name}\" not found")),
    }
}

fn find_container<'a>(
    pod_spec: &'a PodSpec,
    name: Option<&str>,
) -> Result<&'a Container, ResolveError> {
    match name.filter(|n| !n.is_empty()) {
        Some(name) => pod_spec
            .containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ResolveError::ContainerNotFound {
                name: name.to_owned(),
            }),
        None => pod_spec
            .containers
            .first()
            .ok_or(ResolveError::NoContainers),
    }
}

/// Kubernetes' `$(VAR)` expansion of an env value against the variables defined before it:
/// `$(NAME)` becomes NAME's value when defined and stays as written otherwise; `$$` is a
/// literal `$`.
pub fn expand_env_value(value: &str, defined: &BTreeMap<String, Secret>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match defined.get(name) {
                        Some(v) => out.push_str(v.expose()),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
