//! Gathering the objects a poll's trigger resolution reads.

use jobtide_api::resolve::ObjectSet;
use jobtide_api::{ClusterTriggerAuthentication, ScaledJobSpec, TriggerAuthentication};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::ListParams;

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

/// Reads the Secrets, ConfigMaps and TriggerAuthentications of `namespaces` and the
/// ClusterTriggerAuthentications (the TriggerAuthentication CRDs may be absent).
pub async fn fetch(client: &kube::Client, namespaces: &[&str]) -> Result<ObjectSet, kube::Error> {
    let mut objects = ObjectSet::default();
    let all = ListParams::default();
    for namespace in namespaces {
        for secret in Api::<Secret>::namespaced(client.clone(), namespace)
            .list(&all)
            .await?
        {
            objects.insert_secret(namespace, secret);
        }
        for config_map in Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .list(&all)
            .await?
        {
            objects.insert_config_map(namespace, config_map);
        }
        if let Ok(list) = Api::<TriggerAuthentication>::namespaced(client.clone(), namespace)
            .list(&all)
            .await
        {
            for ta in list {
                objects.insert_trigger_authentication(
                    namespace,
                    &ta.metadata.name.clone().unwrap_or_default(),
                    ta.spec,
                );
            }
        }
    }
    if let Ok(list) = Api::<ClusterTriggerAuthentication>::all(client.clone())
        .list(&all)
        .await
    {
        for cta in list {
            objects.insert_cluster_trigger_authentication(
                &cta.metadata.name.clone().unwrap_or_default(),
                cta.spec.0,
            );
        }
    }
    Ok(objects)
}
