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
/// A list, or nothing when the resource type isn't served (404).
fn unless_not_served<K: Clone>(
    listed: Result<kube::core::ObjectList<K>, kube::Error>,
) -> Result<Vec<K>, kube::Error> {
    match listed {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

pub async fn fetch(
    client: &kube::Client,
    namespaces: &[&str],
) -> Result<ObjectSet, (String, kube::Error)> {
    let mut objects = ObjectSet::default();
    let all = ListParams::default();
    let listing = |what: &str, namespace: &str| {
        let what = format!("{what} in namespace {namespace}");
        move |error| (what, error)
    };
    for namespace in namespaces {
        for secret in Api::<Secret>::namespaced(client.clone(), namespace)
            .list(&all)
            .await
            .map_err(listing("Secrets", namespace))?
        {
            objects.insert_secret(namespace, secret);
        }
        for config_map in Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .list(&all)
            .await
            .map_err(listing("ConfigMaps", namespace))?
        {
            objects.insert_config_map(namespace, config_map);
        }
        // A 404 means the CRD isn't installed (no TriggerAuthentication can exist); any other
        // failure (403 above all) must not read as "not found".
        let tas = Api::<TriggerAuthentication>::namespaced(client.clone(), namespace)
            .list(&all)
            .await;
        for ta in unless_not_served(tas).map_err(listing("TriggerAuthentications", namespace))? {
            objects.insert_trigger_authentication(
                namespace,
                &ta.metadata.name.clone().unwrap_or_default(),
                ta.spec,
            );
        }
    }
    let ctas = Api::<ClusterTriggerAuthentication>::all(client.clone())
        .list(&all)
        .await;
    for cta in unless_not_served(ctas)
        .map_err(|error| ("ClusterTriggerAuthentications".to_owned(), error))?
    {
        objects.insert_cluster_trigger_authentication(
            &cta.metadata.name.clone().unwrap_or_default(),
            cta.spec.0,
        );
    }
    Ok(objects)
}
