//! Gathering what a poll decides on from the API server.

use std::collections::BTreeMap;

use jobtide_api::resolve::ObjectLookup;
use jobtide_api::secret::Secret;
use jobtide_api::{ClusterTriggerAuthentication, TriggerAuthentication, TriggerAuthenticationSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret as K8sSecret};
use kube::Api;
use kube::api::ListParams;

/// The Secrets, ConfigMaps and (Cluster)TriggerAuthentications a ScaledJob's triggers may read,
/// fetched for one poll.
#[derive(Debug, Default)]
pub struct Objects {
    secrets: BTreeMap<(String, String), BTreeMap<String, Secret>>,
    config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    trigger_authentications: BTreeMap<(String, String), TriggerAuthenticationSpec>,
    cluster_trigger_authentications: BTreeMap<String, TriggerAuthenticationSpec>,
}

impl Objects {
    /// Reads the objects of `namespaces` (the ScaledJob's and the cluster-object namespace).
    pub async fn fetch(client: &kube::Client, namespaces: &[&str]) -> Result<Self, kube::Error> {
        let mut objects = Self::default();
        let all = ListParams::default();
        for namespace in namespaces {
            for secret in Api::<K8sSecret>::namespaced(client.clone(), namespace)
                .list(&all)
                .await?
            {
                let mut data: BTreeMap<String, Secret> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, Secret::new(String::from_utf8_lossy(&v.0).into_owned())))
                    .collect();
                for (k, v) in secret.string_data.unwrap_or_default() {
                    data.insert(k, Secret::new(v));
                }
                objects.secrets.insert(
                    (
                        (*namespace).to_owned(),
                        secret.metadata.name.unwrap_or_default(),
                    ),
                    data,
                );
            }
            for config_map in Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .list(&all)
                .await?
            {
                objects.config_maps.insert(
                    (
                        (*namespace).to_owned(),
                        config_map.metadata.name.unwrap_or_default(),
                    ),
                    config_map.data.unwrap_or_default(),
                );
            }
            // TriggerAuthentications are optional: the CRD may not be installed.
            if let Ok(list) = Api::<TriggerAuthentication>::namespaced(client.clone(), namespace)
                .list(&all)
                .await
            {
                for ta in list {
                    objects.trigger_authentications.insert(
                        (
                            (*namespace).to_owned(),
                            ta.metadata.name.clone().unwrap_or_default(),
                        ),
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
                objects
                    .cluster_trigger_authentications
                    .insert(cta.metadata.name.clone().unwrap_or_default(), cta.spec.0);
            }
        }
        Ok(objects)
    }
}

impl ObjectLookup for Objects {
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Secret>> {
        self.secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<TriggerAuthenticationSpec> {
        self.trigger_authentications
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn cluster_trigger_authentication(&self, name: &str) -> Option<TriggerAuthenticationSpec> {
        self.cluster_trigger_authentications.get(name).cloned()
    }
}
