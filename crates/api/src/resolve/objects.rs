//! [`ObjectSet`]: Secrets, ConfigMaps and (Cluster)TriggerAuthentications held in memory and
//! served through [`ObjectLookup`] — the documents `jobtide validate` reads, or the objects the
//! operator fetched for a poll.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret as K8sSecret};

use super::ObjectLookup;
use crate::auth::TriggerAuthenticationSpec;
use crate::secret::Secret;

type Key = (String, String);

/// Objects by namespace and name.
#[derive(Debug, Default)]
pub struct ObjectSet {
    secrets: BTreeMap<Key, BTreeMap<String, Secret>>,
    config_maps: BTreeMap<Key, BTreeMap<String, String>>,
    trigger_authentications: BTreeMap<Key, TriggerAuthenticationSpec>,
    cluster_trigger_authentications: BTreeMap<String, TriggerAuthenticationSpec>,
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

/// A Secret's values: `data` (already base64-decoded by k8s-openapi) merged with `stringData`,
/// which wins, as the API server merges them.
pub fn secret_data(secret: K8sSecret) -> BTreeMap<String, Secret> {
    let mut data: BTreeMap<String, Secret> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Secret::new(String::from_utf8_lossy(&v.0).into_owned())))
        .collect();
    for (k, v) in secret.string_data.unwrap_or_default() {
        data.insert(k, Secret::new(v));
    }
    data
}

impl ObjectSet {
    /// Adds a Secret (its values as [`secret_data`] reads them).
    pub fn insert_secret(&mut self, namespace: &str, secret: K8sSecret) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.secrets
            .insert(key(namespace, &name), secret_data(secret));
    }

    /// Adds a ConfigMap (its `data`).
    pub fn insert_config_map(&mut self, namespace: &str, config_map: ConfigMap) {
        let name = config_map.metadata.name.unwrap_or_default();
        self.config_maps
            .insert(key(namespace, &name), config_map.data.unwrap_or_default());
    }

    /// Adds a TriggerAuthentication.
    pub fn insert_trigger_authentication(
        &mut self,
        namespace: &str,
        name: &str,
        spec: TriggerAuthenticationSpec,
    ) {
        self.trigger_authentications
            .insert(key(namespace, name), spec);
    }

    /// Adds a ClusterTriggerAuthentication.
    pub fn insert_cluster_trigger_authentication(
        &mut self,
        name: &str,
        spec: TriggerAuthenticationSpec,
    ) {
        self.cluster_trigger_authentications
            .insert(name.to_owned(), spec);
    }
}

impl ObjectLookup for ObjectSet {
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Secret>> {
        self.secrets.get(&key(namespace, name)).cloned()
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps.get(&key(namespace, name)).cloned()
    }

    fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<TriggerAuthenticationSpec> {
        self.trigger_authentications
            .get(&key(namespace, name))
            .cloned()
    }

    fn cluster_trigger_authentication(&self, name: &str) -> Option<TriggerAuthenticationSpec> {
        self.cluster_trigger_authentications.get(name).cloned()
    }
}
