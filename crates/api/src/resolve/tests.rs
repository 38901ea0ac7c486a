use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::json;

use super::*;
use crate::scaledjob::AuthenticationRef;

#[derive(Default)]
struct Objects {
    secrets: BTreeMap<(String, String), BTreeMap<String, Secret>>,
    config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    tas: BTreeMap<(String, String), TriggerAuthenticationSpec>,
    ctas: BTreeMap<String, TriggerAuthenticationSpec>,
}

impl ObjectLookup for Objects {
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Secret>> {
        self.secrets.get(&(namespace.into(), name.into())).cloned()
    }
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps
            .get(&(namespace.into(), name.into()))
            .cloned()
    }
    fn trigger_authentication(&self, ns: &str, name: &str) -> Option<TriggerAuthenticationSpec> {
        self.tas.get(&(ns.into(), name.into())).cloned()
    }
    fn cluster_trigger_authentication(&self, name: &str) -> Option<TriggerAuthenticationSpec> {
        self.ctas.get(name).cloned()
    }
}

fn pod_spec(value: serde_json::Value) -> PodSpec {
    serde_json::from_value(value).unwrap_or_default()
}

fn trigger_with_auth(name: &str, kind: Option<AuthenticationKind>) -> ScaleTrigger {
    ScaleTrigger {
        type_: "kafka".into(),
        name: None,
        metadata: BTreeMap::new(),
        authentication_ref: Some(AuthenticationRef {
            name: name.into(),
            kind,
        }),
        use_cached_metrics: None,
        metric_type: None,
    }
}

fn spec(value: serde_json::Value) -> TriggerAuthenticationSpec {
    serde_json::from_value(value).unwrap_or_default()
}

fn exposed(map: &BTreeMap<String, Secret>) -> BTreeMap<&str, &str> {
    map.iter().map(|(k, v)| (k.as_str(), v.expose())).collect()
}

#[test]
fn env_from_then_env_with_expansion_and_refs() {
    let mut objects = Objects::default();
    objects.config_maps.insert(
        ("ns".into(), "cm".into()),
        BTreeMap::from([("GROUP".into(), "g1".into())]),
    );
    objects.secrets.insert(
        ("ns".into(), "s".into()),
        BTreeMap::from([("pw".into(), Secret::new("pa55"))]),
    );
    let pod = pod_spec(json!({"containers": [{"name": "main",
    "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "K_"}],
    "env": [
        {"name": "SERVERS", "value": "b1:9092"},
        {"name": "COMBINED", "value": "$(K_GROUP)-$(UNDEFINED)-$$(K_GROUP)"},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]}]}));
    let mut warnings = Vec::new();
    let env = resolve_container_env(
        &objects,
        "ns",
        &pod,
        None,
        MissingEnvSource::Fail,
        &mut warnings,
    );
    let env = env.unwrap_or_default();
    assert_eq!(
        exposed(&env),
        BTreeMap::from([
            ("K_GROUP", "g1"),
            ("SERVERS", "b1:9092"),
            ("COMBINED", "g1-$(UNDEFINED)-$(K_GROUP)"),
            ("PW", "pa55"),
        ])
    );
    assert!(warnings.is_empty());
}

#[test]
fn missing_env_secret_fails_in_the_operator_and_warns_in_validate() {
    let objects = Objects::default();
    let pod = pod_spec(json!({"containers": [{"name": "main", "env": [
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "pw"}}}]}]}));
    let mut warnings = Vec::new();
    let failed = resolve_container_env(
        &objects,
        "ns",
        &pod,
        None,
        MissingEnvSource::Fail,
        &mut warnings,
    );
    assert_eq!(
        failed.err().map(|e| e.to_string()),
        Some("container \"main\": env PW: Secret \"absent\" not found in namespace ns".into())
    );
    let warned = resolve_container_env(
        &objects,
        "ns",
        &pod,
        None,
        MissingEnvSource::Warn,
        &mut warnings,
    );
    assert!(warned.is_ok_and(|env| env.is_empty()));
    assert_eq!(warnings.len(), 1);
}

#[test]
fn env_source_container_must_exist() {
    let pod = pod_spec(json!({"containers": [{"name": "main"}]}));
    let result = resolve_container_env(
        &Objects::default(),
        "ns",
        &pod,
        Some("other"),
        MissingEnvSource::Fail,
        &mut Vec::new(),
    );
    assert_eq!(
        result.err(),
        Some(ResolveError::ContainerNotFound {
            name: "other".into()
        })
    );
}

#[test]
fn missing_trigger_authentication_is_an_error_d13() {
    let pod = pod_spec(json!({"containers": [{"name": "main"}]}));
    let result = resolve_trigger_inputs(
        &Objects::default(),
        "ns",
        &pod,
        None,
        &trigger_with_auth("kafka-auth", None),
        DEFAULT_CLUSTER_OBJECT_NAMESPACE,
        MissingEnvSource::Fail,
    );
    assert_eq!(
        result.err().map(|e| e.to_string()),
        Some("TriggerAuthentication \"kafka-auth\" not found in namespace \"ns\"".into())
    );
    let result = resolve_trigger_inputs(
        &Objects::default(),
        "ns",
        &pod,
        None,
        &trigger_with_auth(
            "global",
            Some(AuthenticationKind::ClusterTriggerAuthentication),
        ),
        DEFAULT_CLUSTER_OBJECT_NAMESPACE,
        MissingEnvSource::Fail,
    );
    assert_eq!(
        result.err().map(|e| e.to_string()),
        Some("ClusterTriggerAuthentication \"global\" not found".into())
    );
}

#[test]
fn auth_params_merge_env_then_config_map_then_secret() {
    let mut objects = Objects::default();
    objects.tas.insert(("ns".into(), "auth".into()), spec(json!({
        "env": [{"parameter": "sasl", "name": "SASL"}, {"parameter": "username", "name": "USER"}],
        "configMapTargetRef": [{"parameter": "username", "name": "cm", "key": "user"}],
        "secretTargetRef": [{"parameter": "password", "name": "s", "key": "pw"},
                            {"parameter": "ca", "name": "absent", "key": "ca"}],
    })));
    objects.config_maps.insert(
        ("ns".into(), "cm".into()),
        BTreeMap::from([("user".into(), "from-cm".into())]),
    );
    objects.secrets.insert(
        ("ns".into(), "s".into()),
        BTreeMap::from([("pw".into(), Secret::new("pa55"))]),
    );
    let pod = pod_spec(json!({"containers": [{"name": "main", "env": [
        {"name": "SASL", "value": "plaintext"}, {"name": "USER", "value": "from-env"}]}]}));
    let inputs = resolve_trigger_inputs(
        &objects,
        "ns",
        &pod,
        None,
        &trigger_with_auth("auth", None),
        DEFAULT_CLUSTER_OBJECT_NAMESPACE,
        MissingEnvSource::Fail,
    )
    .unwrap_or_default();
    assert_eq!(
        exposed(&inputs.auth_params),
        BTreeMap::from([
            ("sasl", "plaintext"),
            ("username", "from-cm"),
            ("password", "pa55"),
            ("ca", "")
        ])
    );
    assert_eq!(inputs.warnings.len(), 1, "{:?}", inputs.warnings);
    assert!(inputs.warnings[0].starts_with("Secret \"ns/absent\" (parameter \"ca\""));
}

#[test]
fn cluster_trigger_authentication_reads_the_cluster_object_namespace() {
    let mut objects = Objects::default();
    objects.ctas.insert(
        "global".into(),
        spec(json!({
        "secretTargetRef": [{"parameter": "password", "name": "s", "key": "pw"}]})),
    );
    objects.secrets.insert(
        ("keda".into(), "s".into()),
        BTreeMap::from([("pw".into(), Secret::new("x"))]),
    );
    let pod = pod_spec(json!({"containers": [{"name": "main"}]}));
    let inputs = resolve_trigger_inputs(
        &objects,
        "team-a",
        &pod,
        None,
        &trigger_with_auth(
            "global",
            Some(AuthenticationKind::ClusterTriggerAuthentication),
        ),
        DEFAULT_CLUSTER_OBJECT_NAMESPACE,
        MissingEnvSource::Fail,
    )
    .unwrap_or_default();
    assert_eq!(
        exposed(&inputs.auth_params),
        BTreeMap::from([("password", "x")])
    );
}

#[test]
fn unsupported_sources_are_named() {
    let mut objects = Objects::default();
    objects.tas.insert(
        ("ns".into(), "vault".into()),
        spec(json!({
        "hashiCorpVault": {"address": "https://vault:8200", "authentication": "token"},
        "podIdentity": {"provider": "aws"}})),
    );
    objects.tas.insert(
        ("ns".into(), "none".into()),
        spec(json!({"podIdentity": {"provider": "none"}})),
    );
    let pod = pod_spec(json!({"containers": [{"name": "main"}]}));
    let result = resolve_trigger_inputs(
        &objects,
        "ns",
        &pod,
        None,
        &trigger_with_auth("vault", None),
        DEFAULT_CLUSTER_OBJECT_NAMESPACE,
        MissingEnvSource::Fail,
    );
    assert_eq!(
        result.err().map(|e| e.to_string()),
        Some("TriggerAuthentication \"vault\": spec.podIdentity, spec.hashiCorpVault are not supported by jobtide yet".into())
    );
    let result = resolve_trigger_inputs(
        &objects,
        "ns",
        &pod,
        None,
        &trigger_with_auth("none", None),
        DEFAULT_CLUSTER_OBJECT_NAMESPACE,
        MissingEnvSource::Fail,
    );
    assert!(result.is_ok());
}

#[test]
fn env_values_expand_like_kubernetes() {
    let defined = BTreeMap::from([("A".to_string(), Secret::new("1"))]);
    for (input, expected) in [
        ("$(A)", "1"),
        ("x$(A)y", "x1y"),
        ("$(B)", "$(B)"),
        ("$$(A)", "$(A)"),
        ("$(A", "$(A"),
        ("a$b", "a$b"),
        ("$", "$"),
    ] {
        assert_eq!(
            expand_env_value(input, &defined),
            expected,
            "input {input:?}"
        );
    }
}
