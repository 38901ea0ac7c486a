//! [`Value`]: a kept Secret's, ConfigMap's or authentication's content, packed small.
//!
//! The operator keeps one per object its ScaledJobs' triggers read (`crate::objects`): at 10,000
//! ScaledJobs, half with a TriggerAuthentication and a Secret, that is 10,000 values held for
//! good. As resolution reads them (a `BTreeMap` per Secret, a whole `TriggerAuthenticationSpec`)
//! they took ~5 MiB: a `BTreeMap` leaf node is ~500 bytes even for one key, and a spec is a
//! 290-byte box plus vectors grown to four elements. Packed, a Secret is one sorted slice of
//! (key, value) pairs and an authentication its spec's JSON (as `crate::kept_scaled_job` keeps
//! ScaledJobs); each is unpacked into what resolution reads when a poll reads it, which is
//! cheap next to the poll.
//!
//! A Secret's values stay [`Secret`]s throughout (never shown by `Debug`, zeroized on drop).

use std::collections::BTreeMap;

use jobtide_api::auth::TriggerAuthenticationSpec;
use jobtide_api::secret::Secret;

/// An object's content as resolution reads it, packed (see the module docs).
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A Secret's values by key.
    Secret(Pairs<Secret>),
    /// A ConfigMap's `data` by key.
    ConfigMap(Pairs<Box<str>>),
    /// A (Cluster)TriggerAuthentication's spec as JSON.
    Authentication(Box<[u8]>),
}

/// (key, value) pairs sorted by key, in one allocation (plus one per key and value).
#[derive(Debug, Clone)]
pub(crate) struct Pairs<V>(Box<[(Box<str>, V)]>);

impl Value {
    /// A Secret's values (as `jobtide_api::resolve::secret_data` reads them).
    pub fn secret(data: BTreeMap<String, Secret>) -> Self {
        Self::Secret(Pairs(
            data.into_iter()
                .map(|(key, value)| (key.into_boxed_str(), value))
                .collect(),
        ))
    }

    /// A ConfigMap's `data`.
    pub fn config_map(data: BTreeMap<String, String>) -> Self {
        Self::ConfigMap(Pairs(
            data.into_iter()
                .map(|(key, value)| (key.into_boxed_str(), value.into_boxed_str()))
                .collect(),
        ))
    }

    /// An authentication's spec. Serializing a spec can't fail (plain fields and JSON values);
    /// if it ever did, the error is returned rather than a value that would read back wrong.
    pub fn authentication(spec: &TriggerAuthenticationSpec) -> Result<Self, serde_json::Error> {
        Ok(Self::Authentication(
            serde_json::to_vec(spec)?.into_boxed_slice(),
        ))
    }

    /// The Secret's values, if this is a Secret.
    pub fn to_secret(&self) -> Option<BTreeMap<String, Secret>> {
        match self {
            Self::Secret(Pairs(pairs)) => Some(
                pairs
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.clone()))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The ConfigMap's data, if this is a ConfigMap.
    pub fn to_config_map(&self) -> Option<BTreeMap<String, String>> {
        match self {
            Self::ConfigMap(Pairs(pairs)) => Some(
                pairs
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The authentication's spec, if this is one. It reads back what
    /// [`Self::authentication`] wrote; should that ever fail, the object reads as missing
    /// (resolution then reports it) and the failure is logged (a spec holds references to
    /// Secrets, never their values).
    pub fn to_authentication(&self) -> Option<TriggerAuthenticationSpec> {
        match self {
            Self::Authentication(json) => serde_json::from_slice(json)
                .inspect_err(|error| {
                    tracing::error!(%error, "a kept TriggerAuthentication spec didn't read back");
                })
                .ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use jobtide_api::auth::AuthSecretTargetRef;

    use super::*;

    #[test]
    fn a_secret_reads_back_whole_and_its_debug_shows_no_value() {
        let data = BTreeMap::from([
            ("user".to_owned(), Secret::new("alice")),
            ("password".to_owned(), Secret::new("hunter2")),
        ]);
        let value = Value::secret(data.clone());
        assert_eq!(value.to_secret(), Some(data));
        assert_eq!(value.to_config_map(), None);
        let debug = format!("{value:?}");
        assert!(debug.contains("password"), "{debug}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("alice"),
            "{debug}"
        );
    }

    #[test]
    fn a_config_map_reads_back_whole() {
        let data = BTreeMap::from([("topic".to_owned(), "orders".to_owned())]);
        let value = Value::config_map(data.clone());
        assert_eq!(value.to_config_map(), Some(data));
        assert!(value.to_secret().is_none());
    }

    #[test]
    fn an_authentication_reads_back_whole() {
        let spec = TriggerAuthenticationSpec {
            secret_target_ref: Some(vec![AuthSecretTargetRef {
                parameter: "password".into(),
                name: "creds".into(),
                key: "password".into(),
            }]),
            pod_identity: Some(serde_json::json!({"provider": "none"})),
            ..TriggerAuthenticationSpec::default()
        };
        let value = Value::authentication(&spec).unwrap();
        assert_eq!(value.to_authentication(), Some(spec));
        assert!(value.to_secret().is_none());
    }
}
