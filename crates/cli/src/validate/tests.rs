use super::*;

fn validate_yaml(text: &str) -> Report {
    let documents = input::parse_documents("test.yaml", text).expect("yaml");
    validate_documents(documents, "default", DEFAULT_CLUSTER_OBJECT_NAMESPACE)
}

const JOB: &str = "  jobTargetRef:\n    template:\n      spec:\n        containers:\n          - name: main\n            image: busybox\n";

fn scaled_job(extra_spec: &str, triggers: &str) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: sj\nspec:\n{JOB}{extra_spec}  triggers:\n{triggers}"
    )
}

const KAFKA: &str = "    - type: kafka\n      metadata:\n        bootstrapServers: b:9092\n        consumerGroup: g\n        topic: t\n";

#[test]
fn a_valid_scaled_job_reports_its_metric_and_config() {
    let report = validate_yaml(&scaled_job("", KAFKA));
    assert!(report.is_valid(), "{}", report.to_text());
    let trigger = &report.scaled_jobs[0].triggers[0];
    assert_eq!(trigger.metric_name.as_deref(), Some("s0-kafka-t"));
    assert_eq!(
        trigger.config.as_ref().map(|c| c["lagThreshold"].clone()),
        Some(10.into())
    );
}

#[test]
fn wrong_types_name_the_field() {
    let report = validate_yaml(&scaled_job("  pollingInterval: ten\n", KAFKA));
    assert!(!report.is_valid());
    let errors = &report.scaled_jobs[0].errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("spec.pollingInterval: invalid type: string \"ten\""),
        "{errors:?}"
    );
}

#[test]
fn unknown_spec_fields_are_errors() {
    let report = validate_yaml(&scaled_job("  pollingIntervall: 10\n", KAFKA));
    let errors = &report.scaled_jobs[0].errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("spec.pollingIntervall: unknown field"),
        "{errors:?}"
    );
}

#[test]
fn auth_is_resolved_from_the_documents() {
    let text = format!(
        "{}      authenticationRef:\n        name: kafka-auth\n---\n\
apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata:\n  name: kafka-auth\nspec:\n  secretTargetRef:\n    - parameter: sasl\n      name: kafka-secret\n      key: sasl\n    - parameter: username\n      name: kafka-secret\n      key: username\n    - parameter: password\n      name: kafka-secret\n      key: password\n---\n\
apiVersion: v1\nkind: Secret\nmetadata:\n  name: kafka-secret\ndata:\n  sasl: cGxhaW50ZXh0\n  username: YWRtaW4=\nstringData:\n  password: s3cr3t\n",
        scaled_job("", KAFKA)
    );
    let report = validate_yaml(&text);
    assert!(report.is_valid(), "{}", report.to_text());
    let config = report.scaled_jobs[0].triggers[0]
        .config
        .clone()
        .unwrap_or_default();
    // Resolved (plaintext needs both username and password, so the trigger is valid) and shown
    // redacted: every value from a Secret is.
    assert_eq!(config["sasl"], "<redacted>");
    assert_eq!(config["username"], "<redacted>");
    assert_eq!(config["password"], "<redacted>");
    let json = serde_json::to_string(&report).unwrap_or_default();
    for value in ["s3cr3t", "admin"] {
        assert!(!json.contains(value), "{json}");
        assert!(!report.to_text().contains(value));
    }
}

#[test]
fn a_missing_trigger_authentication_is_an_error_d13() {
    let text = format!(
        "{}      authenticationRef:\n        name: nowhere\n",
        scaled_job("", KAFKA)
    );
    let report = validate_yaml(&text);
    let trigger = &report.scaled_jobs[0].triggers[0];
    assert_eq!(
        trigger.errors,
        vec!["TriggerAuthentication \"nowhere\" not found in namespace \"default\""]
    );
    assert_eq!(trigger.metric_name.as_deref(), Some("s0-kafka-t"));
}

#[test]
fn lists_are_flattened_and_old_api_versions_refused() {
    let text = format!(
        "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: keda.k8s.io/v1alpha1\n    kind: ScaledJob\n    metadata:\n      name: old\n---\n{}",
        scaled_job("", KAFKA)
    );
    let report = validate_yaml(&text);
    assert_eq!(report.scaled_jobs.len(), 1);
    assert_eq!(report.document_errors.len(), 1);
    assert_eq!(report.document_errors[0].location.item, Some(0));
    assert!(
        report.document_errors[0]
            .message
            .contains("apiVersion keda.k8s.io/v1alpha1 is not served")
    );
}

mod never_panics {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,16}".prop_map(Value::String),
            prop::sample::select(vec![
                "kafka",
                "apache-kafka",
                "true",
                "-1",
                "0",
                "1-4",
                "enable",
                "gssapi"
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        prop::sample::select(vec![
                            "spec",
                            "triggers",
                            "metadata",
                            "type",
                            "jobTargetRef",
                            "template",
                            "containers",
                            "env",
                            "authenticationRef",
                            "name",
                            "pollingInterval",
                            "secretTargetRef",
                            "items",
                            "data",
                            "stringData"
                        ])
                        .prop_map(str::to_owned),
                        "[a-z]{1,8}",
                    ],
                    inner,
                    0..5,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            if let Ok(documents) = input::parse_documents("fuzz.yaml", &text) {
                let _ = validate_documents(documents, "default", "keda").to_text();
            }
        }

        #[test]
        fn arbitrary_objects_of_served_kinds_never_panic(
            spec in arbitrary_json(),
            kind in prop::sample::select(vec!["ScaledJob", "TriggerAuthentication", "ClusterTriggerAuthentication", "Secret", "ConfigMap", "List"]),
        ) {
            let api_version = match kind { "Secret" | "ConfigMap" | "List" => "v1", _ => "keda.sh/v1alpha1" };
            let object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"},
                "spec": spec.clone(), "data": spec.clone(), "items": [spec]});
            // JSON is YAML: go through the same text path a user's file takes.
            let text = serde_json::to_string(&object).unwrap_or_default();
            let documents = input::parse_documents("fuzz.yaml", &text);
            prop_assert!(documents.is_ok());
            let report = validate_documents(documents.unwrap_or_default(), "default", "keda");
            let _ = serde_json::to_string(&report);
            let _ = report.to_text();
        }
    }
}

#[test]
fn missing_required_fields_name_the_parent() {
    let text = format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: sj\nspec:\n{JOB}"
    );
    let report = validate_yaml(&text);
    assert_eq!(
        report.scaled_jobs[0].errors,
        vec!["spec: missing field `triggers`"]
    );
    let text = "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: sj\nspec:\n  triggers: []\n  jobTargetRef: {}\n";
    let report = validate_yaml(text);
    assert_eq!(
        report.scaled_jobs[0].errors,
        vec![
            "spec.jobTargetRef.template: Required value",
            "no triggers defined in the ScaledObject/ScaledJob"
        ]
    );
    let text = "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: sj\nspec:\n  triggers: []\n  jobTargetRef:\n    template:\n      spec:\n        containers: []\n";
    let report = validate_yaml(text);
    assert_eq!(
        report.scaled_jobs[0].errors[0],
        "spec.jobTargetRef.template.spec.containers: Required value"
    );
}

// --- hostile input (issue 18) ---

/// Every line of the text output, each checked to hold no control character (a name with CR,
/// LF or ESC could otherwise forge or hide lines).
fn text_lines(report: &Report) -> Vec<String> {
    let text = report.to_text();
    for line in text.lines() {
        assert!(
            !line.chars().any(char::is_control),
            "a raw control character in {line:?}"
        );
    }
    text.lines().map(str::to_owned).collect()
}

#[test]
fn control_characters_in_names_are_escaped_in_every_text_line() {
    let text = "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: \"sj\\e[2K\\rforged: valid\\nx\"\n  namespace: \"ns\\u0000\\u009b\"\nspec:\n  jobTargetRef:\n    template:\n      spec:\n        containers:\n          - name: main\n            image: busybox\n  triggers:\n    - type: \"kafka\\n\"\n      name: \"t\\r\\n0 ScaledJob(s) checked\"\n      metadata:\n        topic: t\n---\napiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata:\n  name: \"ta\\nforged\"\nspec: 5\n";
    let report = validate_yaml(text);
    let lines = text_lines(&report);
    let object = "ScaledJob ns\\0\\u{9b}/sj\\u{1b}[2K\\rforged: valid\\nx";
    assert!(lines.iter().any(|l| l.contains(object)), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("trigger 0 (kafka\\n) \"t\\r\\n0 ScaledJob(s) checked\"")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("TriggerAuthentication default/ta\\nforged")),
        "{lines:#?}"
    );
    // JSON keeps the values as they are (JSON escapes them itself).
    assert_eq!(report.scaled_jobs[0].name, "sj\u{1b}[2K\rforged: valid\nx");
}

/// A ScaledJob document named `name` in `namespace` with `job` as its `jobTargetRef` and
/// `metadata_extra` added to its metadata.
fn scaled_job_with(namespace: &str, name: &str, metadata_extra: &str, job: &str) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{metadata_extra}spec:\n  jobTargetRef:\n{job}  triggers:\n{KAFKA}"
    )
}

const TEMPLATE: &str = "    template:\n      spec:\n        containers:\n          - name: main\n            image: busybox\n";

#[test]
fn names_the_apiserver_refuses_are_errors_naming_the_field() {
    let report = validate_yaml(&scaled_job_with("Team_A", "Orders.", "", TEMPLATE));
    let errors = &report.scaled_jobs[0].errors;
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with(
            "metadata.name: Invalid value: \"Orders.\": a lowercase RFC 1123 subdomain"
        ),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with(
            "metadata.namespace: Invalid value: \"Team_A\": a lowercase RFC 1123 label"
        ),
        "{errors:#?}"
    );
    let report = validate_yaml(&scaled_job_with("team-a", "orders.v2", "", TEMPLATE));
    assert!(report.is_valid(), "{}", report.to_text());
}

#[test]
fn job_specs_the_apiserver_refuses_are_errors_naming_the_field() {
    let job = "    parallelism: -1\n    completions: -2\n    backoffLimit: -3\n    activeDeadlineSeconds: -4\n    template:\n      spec:\n        restartPolicy: Always\n        containers:\n          - name: main\n            image: busybox\n          - name: main\n          - name: side\n            image: \"\"\n";
    let report = validate_yaml(&scaled_job_with("default", "sj", "", job));
    let errors = &report.scaled_jobs[0].errors;
    let expected = [
        "spec.jobTargetRef.parallelism: Invalid value: -1: must be greater than or equal to 0",
        "spec.jobTargetRef.completions: Invalid value: -2: must be greater than or equal to 0",
        "spec.jobTargetRef.activeDeadlineSeconds: Invalid value: -4: must be greater than or equal to 0",
        "spec.jobTargetRef.backoffLimit: Invalid value: -3: must be greater than or equal to 0",
        "spec.jobTargetRef.template.spec.containers[1].name: Duplicate value: \"main\"",
        "spec.jobTargetRef.template.spec.containers[1].image: Required value",
        "spec.jobTargetRef.template.spec.containers[2].image: Required value",
        "spec.jobTargetRef.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
    ];
    for expected in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for policy in ["Never", "OnFailure"] {
        let job = TEMPLATE.replace(
            "      spec:\n",
            &format!("      spec:\n        restartPolicy: {policy}\n"),
        );
        let report = validate_yaml(&scaled_job_with("default", "sj", "", &job));
        assert!(report.is_valid(), "{}", report.to_text());
    }
}

#[test]
fn annotations_beyond_256_kib_are_errors_as_in_the_apiserver() {
    let big = "x".repeat(256 * 1024);
    let annotations = format!("  annotations:\n    a: \"{big}\"\n");
    let report = validate_yaml(&scaled_job_with("default", "sj", &annotations, TEMPLATE));
    let errors = &report.scaled_jobs[0].errors;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("metadata.annotations: Too long: may not be more than 262144 bytes"),
        "{errors:#?}"
    );
    // In the Job template too (the apiserver refuses the Job).
    let job = format!(
        "    template:\n      metadata:\n        annotations:\n          a: \"{big}\"\n      spec:\n        containers:\n          - name: main\n            image: busybox\n"
    );
    let report = validate_yaml(&scaled_job_with("default", "sj", "", &job));
    let errors = &report.scaled_jobs[0].errors;
    assert!(
        errors.iter().any(|e| e.starts_with(
            "spec.jobTargetRef.template.metadata.annotations: Too long: may not be more than 262144 bytes"
        )),
        "{errors:#?}"
    );
    // Exactly the limit (key + value bytes) is fine.
    let fits = format!(
        "  annotations:\n    a: \"{}\"\n",
        "x".repeat(256 * 1024 - 1)
    );
    let report = validate_yaml(&scaled_job_with("default", "sj", &fits, TEMPLATE));
    assert!(report.is_valid(), "{}", report.to_text());
}

#[test]
fn a_list_whose_items_are_not_a_list_is_an_error_naming_the_document() {
    let report = validate_yaml("apiVersion: v1\nkind: List\nitems: 5\n");
    assert_eq!(report.document_errors.len(), 1, "{}", report.to_text());
    assert_eq!(
        report.document_errors[0].message,
        "List: items: must be a list of objects, not a number"
    );
    assert!(!report.is_valid());
    // No items at all is an empty list, as kubectl reads it.
    let report = validate_yaml("apiVersion: v1\nkind: List\n");
    assert!(report.document_errors.is_empty(), "{}", report.to_text());
}

#[test]
fn a_list_of_a_hundred_thousand_items_is_read() {
    use std::fmt::Write as _;
    let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..100_000 {
        let _ = writeln!(
            text,
            "  - {{apiVersion: v1, kind: ConfigMap, metadata: {{name: c{i}}}, data: {{k: v}}}}"
        );
    }
    let documents = input::parse_documents("big.yaml", &text).expect("within the limits");
    let report = validate_documents(documents, "default", DEFAULT_CLUSTER_OBJECT_NAMESPACE);
    assert!(report.is_valid(), "{:?}", report.document_errors.first());
}

#[test]
fn infinity_and_nan_are_invalid_values_of_their_field_not_invalid_yaml() {
    for (written, literal) in [(".inf", ".inf"), ("-.Inf", "-.inf"), (".NaN", ".nan")] {
        let report = validate_yaml(&scaled_job(
            &format!("  pollingInterval: {written}\n"),
            KAFKA,
        ));
        let errors = &report.scaled_jobs[0].errors;
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(
            errors[0],
            format!(
                "spec.pollingInterval: invalid value: {literal}: infinity and NaN are not \
                 numbers in JSON or the Kubernetes API, expected i32"
            )
        );
    }
    // In trigger metadata (strings only) it is the same kind of error.
    let trigger = "    - type: kafka\n      metadata:\n        lagThreshold: .inf\n";
    let report = validate_yaml(&scaled_job("", trigger));
    let errors = &report.scaled_jobs[0].errors;
    assert!(
        errors[0].starts_with(
            "spec.triggers[0].metadata.lagThreshold: invalid value: .inf: infinity and NaN"
        ),
        "{errors:#?}"
    );
}

#[test]
fn a_non_finite_number_in_a_list_item_is_named_within_the_item() {
    let item = scaled_job("  pollingInterval: .inf\n", KAFKA).replace('\n', "\n    ");
    let text = format!("apiVersion: v1\nkind: List\nitems:\n  - {item}");
    let report = validate_yaml(&text);
    assert_eq!(report.scaled_jobs.len(), 1, "{}", report.to_text());
    assert!(
        report.scaled_jobs[0].errors[0].starts_with("spec.pollingInterval: invalid value: .inf"),
        "{:#?}",
        report.scaled_jobs[0].errors
    );
    // A Secret's value is not shown, whatever it is.
    let report = validate_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: .inf\n",
    );
    assert_eq!(
        report.document_errors[0].message,
        "Secret default/s: stringData.password: invalid value (not shown: Secret data; `data` \
         values must be base64)"
    );
}
