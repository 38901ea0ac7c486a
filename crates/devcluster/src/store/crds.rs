//! The CRD registry: a CustomResourceDefinition's types are served while it exists.

use std::sync::Arc;

use serde_json::{Value, json};

use super::history::ChangeType;
use super::{Inner, Key, Store, now};
use crate::resources::Registry;

/// Serves a CRD's types and marks it Established, as the real apiextensions server does.
pub(super) fn register_crd(inner: &mut Inner, crd: &mut Value) {
    for resource in Registry::types_of_crd(crd) {
        inner.registry.insert(resource);
    }
    let names = crd["spec"]["names"].clone();
    crd["status"] = json!({
        "acceptedNames": names,
        "storedVersions": crd["spec"]["versions"].as_array().into_iter().flatten()
            .filter(|v| v["storage"].as_bool() == Some(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
        ],
    });
}

/// Stops serving a deleted CRD's types and deletes their objects.
pub(super) fn unregister_crd(store: &Store, inner: &mut Inner, crd: &Value) {
    let group = crd["spec"]["group"].as_str().unwrap_or_default().to_owned();
    let plural = crd["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let types = Registry::types_of_crd(crd);
    let doomed: Vec<Key> = inner
        .objects
        .keys()
        .filter(|(g, p, _, _)| *g == group && *p == plural)
        .cloned()
        .collect();
    for key in doomed {
        if let (Some(object), Some(resource)) = (inner.objects.remove(&key), types.first()) {
            inner.rv += 1;
            let mut object = Arc::unwrap_or_clone(object);
            object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            store.record(
                inner,
                ChangeType::Deleted,
                (&resource.group, &resource.plural),
                &key.2,
                Arc::new(object),
            );
        }
    }
    inner.registry.remove_crd(&group, &plural);
}
