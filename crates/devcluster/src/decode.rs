//! The typed decoding the real API server does before anything else, for the fields this server
//! reads: a body whose `metadata` (or a field of it, a status, a Job's pod template) has the
//! wrong JSON type is refused with the real decoder's words instead of reaching code that
//! assumes the type. The real server answers a create or update with 400 BadRequest
//! (`… cannot be handled as a …`) and a patch whose result doesn't decode with 422 Invalid
//! (field `patch`).

use serde_json::Value;

use crate::resources::ResourceType;
use crate::status::ApiError;

/// A field whose JSON type the real server's decoder refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongType {
    /// The field's path, e.g. `metadata.labels`.
    pub field: String,
    /// The JSON type found (Go's word: `number`, `string`, `array`, `object`, `bool`).
    pub found: &'static str,
    /// The Go type expected, e.g. `map[string]string`.
    pub expected: &'static str,
}

impl WrongType {
    /// Go's `encoding/json` message.
    pub fn message(&self, resource: &ResourceType) -> String {
        format!(
            "json: cannot unmarshal {} into Go struct field {}.{} of type {}",
            self.found, resource.kind, self.field, self.expected
        )
    }

    /// 400 BadRequest, as the real server answers a create or update body that doesn't decode.
    pub fn bad_request(&self, resource: &ResourceType) -> ApiError {
        ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {message}",
            kind = resource.kind,
            version = resource.version,
            message = self.message(resource)
        ))
    }

    /// 422 Invalid, as the real server answers a patch whose result doesn't decode.
    pub fn invalid_patch(&self, resource: &ResourceType, name: &str) -> ApiError {
        ApiError::invalid(
            resource,
            name,
            &[(
                "patch".into(),
                format!("Invalid value: {}", self.message(resource)),
            )],
        )
    }
}

/// Checks the JSON types of the fields this server reads in `object` (a whole object, as
/// written by a client).
pub fn check(resource: &ResourceType, object: &Value) -> Result<(), WrongType> {
    object_meta(object.get("metadata"), "metadata")?;
    if resource.status_subresource {
        typed(object.get("status"), "status", Kind::Object, "struct")?;
    }
    let pods = resource.group.is_empty() && resource.plural == "pods";
    let jobs = resource.group == "batch" && resource.plural == "jobs";
    if pods || jobs {
        typed(object.get("spec"), "spec", Kind::Object, "struct")?;
    }
    if jobs {
        let template = object.pointer("/spec/template");
        typed(
            template,
            "spec.template",
            Kind::Object,
            "v1.PodTemplateSpec",
        )?;
        object_meta(
            template.and_then(|t| t.get("metadata")),
            "spec.template.metadata",
        )?;
        typed(
            template.and_then(|t| t.get("spec")),
            "spec.template.spec",
            Kind::Object,
            "v1.PodSpec",
        )?;
    }
    Ok(())
}

/// `metav1.ObjectMeta`: the fields this server reads or writes.
fn object_meta(meta: Option<&Value>, path: &str) -> Result<(), WrongType> {
    typed(meta, path, Kind::Object, "v1.ObjectMeta")?;
    let Some(meta) = meta else {
        return Ok(());
    };
    let field = |name: &str| (meta.get(name), format!("{path}.{name}"));
    for name in [
        "name",
        "generateName",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        let (value, path) = field(name);
        typed(value, &path, Kind::String, "string")?;
    }
    let (generation, path_of) = field("generation");
    typed(generation, &path_of, Kind::Number, "int64")?;
    for name in ["labels", "annotations"] {
        let (value, path) = field(name);
        typed(value, &path, Kind::Object, "map[string]string")?;
        for (key, entry) in value.and_then(Value::as_object).into_iter().flatten() {
            typed(
                Some(entry),
                &format!("{path}[{key}]"),
                Kind::String,
                "string",
            )?;
        }
    }
    let (finalizers, path_of) = field("finalizers");
    typed(finalizers, &path_of, Kind::Array, "[]string")?;
    for (i, entry) in finalizers
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        typed(
            Some(entry),
            &format!("{path_of}[{i}]"),
            Kind::String,
            "string",
        )?;
    }
    let (owners, path_of) = field("ownerReferences");
    typed(owners, &path_of, Kind::Array, "[]v1.OwnerReference")?;
    for (i, entry) in owners
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let entry_path = format!("{path_of}[{i}]");
        typed(Some(entry), &entry_path, Kind::Object, "v1.OwnerReference")?;
        for name in ["apiVersion", "kind", "name", "uid"] {
            typed(
                entry.get(name),
                &format!("{entry_path}.{name}"),
                Kind::String,
                "string",
            )?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Number,
}

/// `value` is absent, `null` (Go leaves the zero value) or of `kind`.
fn typed(
    value: Option<&Value>,
    field: &str,
    kind: Kind,
    expected: &'static str,
) -> Result<(), WrongType> {
    let found = match value {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(_)) if kind == Kind::Object => return Ok(()),
        Some(Value::Array(_)) if kind == Kind::Array => return Ok(()),
        Some(Value::String(_)) if kind == Kind::String => return Ok(()),
        Some(Value::Number(_)) if kind == Kind::Number => return Ok(()),
        Some(Value::Object(_)) => "object",
        Some(Value::Array(_)) => "array",
        Some(Value::String(_)) => "string",
        Some(Value::Number(_)) => "number",
        Some(Value::Bool(_)) => "bool",
    };
    Err(WrongType {
        field: field.to_owned(),
        found,
        expected,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::Registry;

    fn config_maps() -> ResourceType {
        Registry::builtin()
            .get("", "v1", "configmaps")
            .cloned()
            .unwrap_or_else(|| panic!("configmaps are served"))
    }

    #[test]
    fn null_and_absent_fields_decode_as_the_zero_value() {
        let resource = config_maps();
        for object in [
            json!({}),
            json!({"metadata": null}),
            json!({"metadata": {"labels": null, "name": "x"}}),
        ] {
            assert_eq!(check(&resource, &object), Ok(()), "{object}");
        }
    }

    #[test]
    fn the_message_is_gos() {
        let resource = config_maps();
        let error = check(&resource, &json!({"metadata": {"labels": {"a": 5}}}))
            .err()
            .map(|e| e.message(&resource));
        assert_eq!(
            error.as_deref(),
            Some(
                "json: cannot unmarshal number into Go struct field ConfigMap.metadata.labels[a] \
                 of type string"
            )
        );
    }
}
