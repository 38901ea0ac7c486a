//! The objects found among the inputs, served through [`ObjectLookup`] so that triggers resolve
//! exactly as the operator resolves them against the cluster.

use std::collections::BTreeMap;

use jobtide_api::TriggerAuthenticationSpec;
use jobtide_api::resolve::ObjectLookup;
use jobtide_api::secret::Secret;

type Key = (String, String);

/// Secrets, ConfigMaps and (Cluster)TriggerAuthentications by namespace and name.
#[derive(Debug, Default)]
pub struct Objects {
    pub secrets: BTreeMap<Key, BTreeMap<String, Secret>>,
    pub config_maps: BTreeMap<Key, BTreeMap<String, String>>,
    pub trigger_authentications: BTreeMap<Key, TriggerAuthenticationSpec>,
    pub cluster_trigger_authentications: BTreeMap<String, TriggerAuthenticationSpec>,
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

impl ObjectLookup for Objects {
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
