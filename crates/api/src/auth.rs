//! `TriggerAuthentication` (namespaced) and `ClusterTriggerAuthentication` (cluster-scoped):
//! where a trigger's `authParams` come from (keda-compat §8.1).
//!
//! jobtide resolves `secretTargetRef`, `configMapTargetRef` and `env`. The other sources KEDA
//! knows (pod identity, HashiCorp Vault, the cloud secret managers, bound service account tokens,
//! `filePath`) are accepted by the schema so that existing manifests apply, and reported as not
//! supported by jobtide yet by [`TriggerAuthenticationSpec::unsupported_sources`].

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the parameters of a trigger's authentication come from.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "TriggerAuthentication",
    plural = "triggerauthentications",
    singular = "triggerauthentication",
    shortname = "ta",
    shortname = "triggerauth",
    namespaced,
    status = "TriggerAuthenticationStatus",
    doc = "TriggerAuthentication defines how a trigger can authenticate",
    printcolumn = r#"{"name":"PodIdentity","type":"string","jsonPath":".spec.podIdentity.provider"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretTargetRef[*].name"}"#,
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".spec.env[*].name"}"#,
    printcolumn = r#"{"name":"VaultAddress","type":"string","jsonPath":".spec.hashiCorpVault.address"}"#,
    printcolumn = r#"{"name":"ScaledObjects","type":"string","priority":1,"jsonPath":".status.scaledobjects"}"#,
    printcolumn = r#"{"name":"ScaledJobs","type":"string","priority":1,"jsonPath":".status.scaledjobs"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    /// Pod identity (cloud workload identity). Not supported by jobtide yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::free_form_object")]
    pub pod_identity: Option<serde_json::Value>,

    /// Parameters read from keys of Secrets in the same namespace as the ScaledJob (for a
    /// ClusterTriggerAuthentication: in the operator's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_target_ref: Option<Vec<AuthSecretTargetRef>>,

    /// Parameters read from the env of a container of the job template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<AuthEnvironment>>,

    /// Parameters read from keys of ConfigMaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_target_ref: Option<Vec<AuthConfigMapTargetRef>>,

    /// HashiCorp Vault. Not supported by jobtide yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::free_form_object")]
    pub hashi_corp_vault: Option<serde_json::Value>,

    /// Azure Key Vault. Not supported by jobtide yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::free_form_object")]
    pub azure_key_vault: Option<serde_json::Value>,

    /// GCP Secret Manager. Not supported by jobtide yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::free_form_object")]
    pub gcp_secret_manager: Option<serde_json::Value>,

    /// AWS Secrets Manager. Not supported by jobtide yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::free_form_object")]
    pub aws_secret_manager: Option<serde_json::Value>,

    /// Bound service account tokens. Not supported by jobtide yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::free_form_array")]
    pub bound_service_account_token: Option<serde_json::Value>,

    /// Parameters read from a file mounted into the operator (ClusterTriggerAuthentication only).
    /// Not supported by jobtide yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
}

/// One parameter taken from a key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AuthSecretTargetRef {
    /// The trigger parameter this sets (e.g. `password`).
    pub parameter: String,
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret.
    pub key: String,
}

/// One parameter taken from a key of a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AuthConfigMapTargetRef {
    /// The trigger parameter this sets.
    pub parameter: String,
    /// The ConfigMap's name.
    pub name: String,
    /// The key within the ConfigMap.
    pub key: String,
}

/// One parameter taken from an env variable of a job template container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthEnvironment {
    /// The trigger parameter this sets.
    pub parameter: String,
    /// The env variable's name.
    pub name: String,
    /// The container whose env is read; default: the ScaledJob's `envSourceContainerName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// Which scaled objects use this authentication (written by the operator).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TriggerAuthenticationStatus {
    /// Comma-separated ScaledObject names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledobjects: Option<String>,
    /// Comma-separated ScaledJob names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledjobs: Option<String>,
}

/// `ClusterTriggerAuthentication`: a cluster-scoped [`TriggerAuthentication`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ClusterTriggerAuthentication",
    plural = "clustertriggerauthentications",
    singular = "clustertriggerauthentication",
    shortname = "cta",
    shortname = "clustertriggerauth",
    status = "TriggerAuthenticationStatus",
    doc = "ClusterTriggerAuthentication defines how a trigger can authenticate globally",
    printcolumn = r#"{"name":"PodIdentity","type":"string","jsonPath":".spec.podIdentity.provider"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretTargetRef[*].name"}"#,
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".spec.env[*].name"}"#,
    printcolumn = r#"{"name":"VaultAddress","type":"string","jsonPath":".spec.hashiCorpVault.address"}"#,
    printcolumn = r#"{"name":"ScaledObjects","type":"string","priority":1,"jsonPath":".status.scaledobjects"}"#,
    printcolumn = r#"{"name":"ScaledJobs","type":"string","priority":1,"jsonPath":".status.scaledjobs"}"#
)]
#[serde(transparent)]
pub struct ClusterTriggerAuthenticationSpec(pub TriggerAuthenticationSpec);

impl TriggerAuthenticationSpec {
    /// The JSON names of the sources set here that jobtide cannot resolve yet, in schema order.
    pub fn unsupported_sources(&self) -> Vec<&'static str> {
        let Self {
            pod_identity,
            secret_target_ref: _,
            env: _,
            config_map_target_ref: _,
            hashi_corp_vault,
            azure_key_vault,
            gcp_secret_manager,
            aws_secret_manager,
            bound_service_account_token,
            file_path,
        } = self;
        let mut unsupported = Vec::new();
        let set = |value: &Option<serde_json::Value>| value.as_ref().is_some_and(|v| !v.is_null());
        if set(pod_identity) {
            // `provider: none` is KEDA's explicit "no pod identity".
            let provider = pod_identity
                .as_ref()
                .and_then(|v| v.get("provider"))
                .and_then(serde_json::Value::as_str);
            if provider != Some("none") {
                unsupported.push("podIdentity");
            }
        }
        for (name, value) in [
            ("hashiCorpVault", hashi_corp_vault),
            ("azureKeyVault", azure_key_vault),
            ("gcpSecretManager", gcp_secret_manager),
            ("awsSecretManager", aws_secret_manager),
            ("boundServiceAccountToken", bound_service_account_token),
        ] {
            if set(value) {
                unsupported.push(name);
            }
        }
        if file_path.as_deref().is_some_and(|p| !p.is_empty()) {
            unsupported.push("filePath");
        }
        unsupported
    }
}
