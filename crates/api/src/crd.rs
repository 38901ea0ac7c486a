//! The CRDs jobtide serves, and a check that their schemas are **structural** (a real apiserver
//! rejects a CRD whose schema has an untyped `{}` node; see Kubernetes' "specifying a structural
//! schema").

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use schemars::{Schema, SchemaGenerator, json_schema};

use crate::{ClusterTriggerAuthentication, ScaledJob, TriggerAuthentication};

/// Schema for a free-form object field (a source jobtide accepts but does not interpret).
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Schema for a free-form array field.
pub fn free_form_array(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
    })
}

/// Every CRD jobtide serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        ScaledJob::crd(),
        TriggerAuthentication::crd(),
        ClusterTriggerAuthentication::crd(),
    ]
}

/// Where and why a CRD's schema is not structural. Empty means structural.
pub fn structural_violations(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut violations = Vec::new();
    for version in &crd.spec.versions {
        let path = format!("{}/{}", crd.spec.names.plural, version.name);
        match version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            Some(schema) => check_node(schema, &path, false, &mut violations),
            None => violations.push(format!("{path}: no openAPIV3Schema")),
        }
    }
    violations
}

fn check_node(node: &JSONSchemaProps, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let escapes = node.x_kubernetes_int_or_string == Some(true)
        || node.x_kubernetes_preserve_unknown_fields == Some(true);
    if in_junctor {
        // Inside allOf/anyOf/oneOf/not only value validations are allowed.
        if node.type_.is_some()
            || node.description.is_some()
            || node.default.is_some()
            || node.additional_properties.is_some()
            || node.nullable.is_some()
        {
            out.push(format!(
                "{path}: type, description, default, additionalProperties or nullable inside a \
                 logical junctor"
            ));
        }
    } else if node.type_.as_deref().is_none_or(str::is_empty) && !escapes {
        out.push(format!(
            "{path}: no type (an untyped schema is not structural)"
        ));
    }
    if node.ref_path.is_some() {
        out.push(format!("{path}: $ref is not allowed"));
    }
    if node.properties.is_some()
        && matches!(
            node.additional_properties,
            Some(JSONSchemaPropsOrBool::Schema(_))
        )
    {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if node.type_.as_deref() == Some("array") && node.items.is_none() {
        out.push(format!("{path}: array without items"));
    }
    for (name, child) in node.properties.iter().flatten() {
        check_node(child, &format!("{path}.{name}"), in_junctor, out);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = &node.additional_properties {
        check_node(child, &format!("{path}.<value>"), in_junctor, out);
    }
    match &node.items {
        Some(JSONSchemaPropsOrArray::Schema(child)) => {
            check_node(child, &format!("{path}[]"), in_junctor, out);
        }
        Some(JSONSchemaPropsOrArray::Schemas(children)) => {
            for (i, child) in children.iter().enumerate() {
                check_node(child, &format!("{path}[{i}]"), in_junctor, out);
            }
        }
        None => {}
    }
    for (junctor, children) in [
        ("allOf", &node.all_of),
        ("anyOf", &node.any_of),
        ("oneOf", &node.one_of),
    ] {
        for (i, child) in children.iter().flatten().enumerate() {
            check_node(child, &format!("{path}.{junctor}[{i}]"), true, out);
        }
    }
    if let Some(child) = &node.not {
        check_node(child, &format!("{path}.not"), true, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_is_structural() {
        for crd in all() {
            let violations = structural_violations(&crd);
            assert!(
                violations.is_empty(),
                "{}: {violations:#?}",
                crd.spec.names.kind
            );
        }
    }

    fn schema_of(crd: &CustomResourceDefinition, path: &[&str]) -> JSONSchemaProps {
        let mut node = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.clone())
            .expect("schema");
        for key in path {
            node = if *key == "[]" {
                match node.items {
                    Some(JSONSchemaPropsOrArray::Schema(item)) => *item,
                    other => panic!("no items at {key}: {other:?}"),
                }
            } else {
                node.properties
                    .and_then(|p| p.get(*key).cloned())
                    .unwrap_or_else(|| panic!("no {key}"))
            };
        }
        node
    }

    #[test]
    fn scaled_job_crd_has_kedas_names_columns_and_subresource() {
        let crd = ScaledJob::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("scaledjobs.keda.sh"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["sj".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Min",
                "Max",
                "Ready",
                "Active",
                "Paused",
                "Triggers",
                "Authentications",
                "Age"
            ]
        );
    }

    #[test]
    fn scaled_job_schema_has_kedas_minimums_enums_and_required_fields() {
        let crd = ScaledJob::crd();
        for (field, minimum) in [
            ("pollingInterval", 1.0),
            ("successfulJobsHistoryLimit", 0.0),
            ("failedJobsHistoryLimit", 0.0),
            ("minReplicaCount", 0.0),
            ("maxReplicaCount", 1.0),
        ] {
            assert_eq!(
                schema_of(&crd, &["spec", field]).minimum,
                Some(minimum),
                "{field}"
            );
        }
        let enum_of = |path: &[&str]| -> Vec<String> {
            schema_of(&crd, path)
                .enum_
                .into_iter()
                .flatten()
                .filter_map(|v| v.0.as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(
            enum_of(&["spec", "rollout", "strategy"]),
            ["gradual", "immediate"]
        );
        assert_eq!(
            enum_of(&["spec", "rollout", "propagationPolicy"]),
            ["foreground", "background"]
        );
        assert_eq!(
            enum_of(&["spec", "rolloutStrategy"]),
            ["gradual", "immediate"]
        );
        assert_eq!(
            enum_of(&["spec", "scalingStrategy", "strategy"]),
            ["default", "custom", "accurate", "eager"]
        );
        assert_eq!(
            enum_of(&["spec", "scalingStrategy", "multipleScalersCalculation"]),
            ["min", "avg", "sum", "max"]
        );
        assert_eq!(
            enum_of(&["spec", "triggers", "[]", "authenticationRef", "kind"]),
            ["TriggerAuthentication", "ClusterTriggerAuthentication"]
        );
        assert_eq!(schema_of(&crd, &["spec", "triggers"]).min_items, Some(1));
        assert_eq!(
            schema_of(&crd, &["spec", "triggers", "[]", "type"]).min_length,
            Some(1)
        );
        let mut required = schema_of(&crd, &["spec"]).required.unwrap_or_default();
        required.sort();
        assert_eq!(required, ["jobTargetRef", "triggers"]);
        let mut trigger_required = schema_of(&crd, &["spec", "triggers", "[]"])
            .required
            .unwrap_or_default();
        trigger_required.sort();
        assert_eq!(trigger_required, ["metadata", "type"]);
        let template = schema_of(&crd, &["spec", "jobTargetRef"])
            .required
            .unwrap_or_default();
        assert_eq!(template, ["template"]);
    }

    #[test]
    fn free_form_auth_sources_preserve_unknown_fields() {
        let crd = TriggerAuthentication::crd();
        for field in [
            "podIdentity",
            "hashiCorpVault",
            "azureKeyVault",
            "gcpSecretManager",
            "awsSecretManager",
        ] {
            let node = schema_of(&crd, &["spec", field]);
            assert_eq!(node.type_.as_deref(), Some("object"), "{field}");
            assert_eq!(
                node.x_kubernetes_preserve_unknown_fields,
                Some(true),
                "{field}"
            );
        }
        assert_eq!(ClusterTriggerAuthentication::crd().spec.scope, "Cluster");
    }

    #[test]
    fn an_untyped_node_is_reported() {
        let mut crd = ScaledJob::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut());
        if let Some(props) = schema {
            props.insert("broken".into(), JSONSchemaProps::default());
        }
        let violations = structural_violations(&crd);
        assert_eq!(
            violations,
            vec!["scaledjobs/v1alpha1.broken: no type (an untyped schema is not structural)"]
        );
    }
}
