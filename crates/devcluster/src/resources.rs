//! The resource types the server serves: built-ins and those added by CRDs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A served resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural (the URL segment).
    pub plural: String,
    /// Singular.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (the main resource then ignores status changes).
    pub status_subresource: bool,
    /// Whether `/log` is served (pods).
    pub log_subresource: bool,
    /// Short names for discovery.
    pub short_names: Vec<String>,
    /// additionalPrinterColumns (CRDs) for Table output.
    pub printer_columns: Vec<PrinterColumn>,
    /// The version's `openAPIV3Schema` (CRDs): objects are pruned and checked against it.
    pub schema: Option<std::sync::Arc<Value>>,
}

/// A CRD printer column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column name.
    pub name: String,
    /// Column type (`string`, `integer`, `date`, …).
    pub type_: String,
    /// The JSONPath into the object.
    pub json_path: String,
    /// Priority (0 shows by default).
    pub priority: i64,
}

impl ResourceType {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or `plural` for core), as in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            status_subresource: false,
            log_subresource: false,
            short_names: Vec::new(),
            printer_columns: Vec::new(),
            schema: None,
        }
    }

    fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}

/// The registry: (group, version, plural) → type.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: BTreeMap<(String, String, String), ResourceType>,
}

impl Registry {
    /// The built-in types jobtide uses.
    pub fn builtin() -> Self {
        let mut registry = Self::default();
        let mut pods = ResourceType::builtin("", "v1", "Pod", "pods", true)
            .with_status()
            .short(&["po"]);
        pods.log_subresource = true;
        for resource in [
            ResourceType::builtin("", "v1", "Namespace", "namespaces", false)
                .with_status()
                .short(&["ns"]),
            pods,
            ResourceType::builtin("", "v1", "Secret", "secrets", true),
            ResourceType::builtin("", "v1", "ConfigMap", "configmaps", true).short(&["cm"]),
            // Stored and watched; `count/jobs.batch` is enforced on Job creates (`quota`).
            ResourceType::builtin("", "v1", "ResourceQuota", "resourcequotas", true)
                .with_status()
                .short(&["quota"]),
            ResourceType::builtin("", "v1", "Event", "events", true).short(&["ev"]),
            ResourceType::builtin("", "v1", "ServiceAccount", "serviceaccounts", true)
                .short(&["sa"]),
            ResourceType::builtin("batch", "v1", "Job", "jobs", true).with_status(),
            ResourceType::builtin("events.k8s.io", "v1", "Event", "events", true).short(&["ev"]),
            ResourceType::builtin("coordination.k8s.io", "v1", "Lease", "leases", true),
            // The node agent registers its node here, as a kubelet does.
            ResourceType::builtin("", "v1", "Node", "nodes", false)
                .with_status()
                .short(&["no"]),
            // Stored and served (so that deployment manifests apply), not acted on.
            ResourceType::builtin("", "v1", "Service", "services", true)
                .with_status()
                .short(&["svc"]),
            ResourceType::builtin("apps", "v1", "Deployment", "deployments", true)
                .with_status()
                .short(&["deploy"]),
            ResourceType::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                false,
            ),
            ResourceType::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                false,
            ),
            ResourceType::builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
            ResourceType::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                true,
            ),
            ResourceType::builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            )
            .with_status()
            .short(&["crd", "crds"]),
        ] {
            registry.insert(resource);
        }
        registry
    }

    /// Adds or replaces a type.
    pub fn insert(&mut self, resource: ResourceType) {
        self.types.insert(
            (
                resource.group.clone(),
                resource.version.clone(),
                resource.plural.clone(),
            ),
            resource,
        );
    }

    /// Removes the types of a CRD (group, plural), every version.
    pub fn remove_crd(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|(g, _, p), _| !(g == group && p == plural));
    }

    /// Looks a type up.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
    }

    /// Every type.
    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    /// The types a CRD object defines (served versions).
    pub fn types_of_crd(crd: &Value) -> Vec<ResourceType> {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let names = &spec["names"];
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        let mut out = Vec::new();
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"].as_bool() == Some(false) {
                continue;
            }
            out.push(ResourceType {
                group: group.into(),
                version: version["name"].as_str().unwrap_or_default().into(),
                kind: names["kind"].as_str().unwrap_or_default().into(),
                plural: names["plural"].as_str().unwrap_or_default().into(),
                singular: names["singular"].as_str().map_or_else(
                    || names["kind"].as_str().unwrap_or_default().to_lowercase(),
                    str::to_owned,
                ),
                namespaced,
                status_subresource: version["subresources"]["status"].is_object(),
                log_subresource: false,
                short_names: names["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect(),
                printer_columns: version["additionalPrinterColumns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| PrinterColumn {
                        name: c["name"].as_str().unwrap_or_default().into(),
                        type_: c["type"].as_str().unwrap_or("string").into(),
                        json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                    })
                    .collect(),
                schema: version
                    .pointer("/schema/openAPIV3Schema")
                    .filter(|s| s.is_object())
                    .map(|s| std::sync::Arc::new(s.clone())),
            });
        }
        out
    }

    /// `/api` (legacy core discovery).
    pub fn core_versions() -> Value {
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
    }

    /// `/apis`: every non-core group with its versions.
    pub fn group_list(&self) -> Value {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in self.types.values().filter(|t| !t.group.is_empty()) {
            let versions = groups.entry(&t.group).or_default();
            if !versions.contains(&t.version.as_str()) {
                versions.push(&t.version);
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                    .collect();
                let preferred = versions.first().cloned().unwrap_or(Value::Null);
                json!({"name": group, "versions": versions, "preferredVersion": preferred})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`), which kubectl
    /// asks for first: the core group for `/api`, every other group for `/apis`.
    pub fn aggregated(&self, core: bool) -> Value {
        let verbs = json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]);
        let mut groups: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
        for t in self.types.values().filter(|t| t.group.is_empty() == core) {
            let kind = json!({"group": t.group, "version": t.version, "kind": t.kind});
            let mut subresources = Vec::new();
            if t.status_subresource {
                subresources.push(json!({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}));
            }
            if t.log_subresource {
                subresources.push(json!({"subresource": "log", "responseKind": {"group": "", "version": "", "kind": ""}, "verbs": ["get"]}));
            }
            groups
                .entry(&t.group)
                .or_default()
                .entry(&t.version)
                .or_default()
                .push(json!({
                    "resource": t.plural,
                    "responseKind": kind,
                    "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": t.singular,
                    "verbs": verbs,
                    "shortNames": t.short_names,
                    "subresources": subresources,
                }));
        }
        let items: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .into_iter()
                    .map(|(version, resources)| json!({"version": version, "resources": resources, "freshness": "Current"}))
                    .collect();
                json!({"metadata": {"name": group}, "versions": versions})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }

    /// `/api/v1` or `/apis/{group}/{version}`: the resources of one group version, `None` if
    /// none is served.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        for t in self
            .types
            .values()
            .filter(|t| t.group == group && t.version == version)
        {
            resources.push(json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": t.short_names,
            }));
            if t.status_subresource {
                resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                    "kind": t.kind, "verbs": ["get", "patch", "update"]}));
            }
            if t.log_subresource {
                resources.push(json!({"name": format!("{}/log", t.plural), "singularName": "", "namespaced": t.namespaced,
                    "kind": "Pod", "verbs": ["get"]}));
            }
        }
        if resources.is_empty() {
            return None;
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }
}
