//! Custom resources checked against their CRD's `openAPIV3Schema`, as the real apiextensions
//! server does on create and update: unknown fields pruned (unless the schema preserves them),
//! then types, `required`, `enum`, `minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/
//! `maxItems`, `nullable`, `x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields`
//! enforced, each failure a cause naming the field (`spec.pollingInterval`). The root's
//! `apiVersion`, `kind` and `metadata` are the server's own business, as in the real one.
//!
//! Not emulated (the real server has them): CEL `x-kubernetes-validations`, `pattern`, `format`,
//! `multipleOf`, list-type/map-type uniqueness, and strict field validation (`kubectl`'s
//! `fieldValidation=Strict`, which rejects unknown fields instead of pruning them).

use serde_json::{Map, Value};

use crate::validation::Causes;

/// Prunes `object` by `schema` and returns what the schema rejects.
pub fn check(schema: &Value, object: &mut Value) -> Causes {
    let mut causes = Causes::new();
    let Value::Object(fields) = object else {
        causes.push((
            String::new(),
            "Invalid value: the object must be a JSON object".into(),
        ));
        return causes;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    let preserve = preserves(schema);
    fields.retain(|key, _| {
        matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
            || preserve
            || properties.is_some_and(|p| p.contains_key(key))
    });
    for (key, value) in fields.iter_mut() {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(property) = properties.and_then(|p| p.get(key)) {
            node(property, value, key, &mut causes);
        }
    }
    required(schema, fields, "", &mut causes);
    causes
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn required(schema: &Value, fields: &Map<String, Value>, path: &str, causes: &mut Causes) {
    for key in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !fields.contains_key(key) {
            causes.push((join(path, key), "Required value".into()));
        }
    }
}

/// Checks (and prunes) one value at `path`.
fn node(schema: &Value, value: &mut Value, path: &str, causes: &mut Causes) {
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !preserves(schema) {
            causes.push((
                path.to_owned(),
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("object")
                ),
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    let actual = type_name(value);
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let fits = expected == actual
            || (expected == "number" && actual == "integer")
            || (int_or_string && matches!(actual, "integer" | "string"));
        if !fits {
            causes.push((
                path.to_owned(),
                format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
            ));
            return;
        }
    } else if int_or_string && !matches!(actual, "integer" | "string") {
        causes.push((
            path.to_owned(),
            format!("Invalid value: \"{actual}\": {path} in body must be of type integer or string: \"{actual}\""),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list = allowed
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        causes.push((
            path.to_owned(),
            format!("Unsupported value: {value}: supported values: {list}"),
        ));
    }
    bounds(schema, value, path, causes);
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if properties.is_some() && additional.is_none() && !preserves(schema) {
                fields.retain(|key, _| properties.is_some_and(|p| p.contains_key(key)));
            }
            for (key, child) in fields.iter_mut() {
                let child_schema = properties.and_then(|p| p.get(key)).or(additional);
                if let Some(child_schema) = child_schema {
                    node(child_schema, child, &join(path, key), causes);
                }
            }
            required(schema, fields, path, causes);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter_mut().enumerate() {
                    node(item_schema, item, &format!("{path}[{index}]"), causes);
                }
            }
        }
        _ => {}
    }
}

fn bounds(schema: &Value, value: &Value, path: &str, causes: &mut Causes) {
    let limit = |key: &str| schema.get(key).and_then(Value::as_f64);
    if let Some(number) = value.as_f64() {
        if let Some(minimum) = limit("minimum")
            && number < minimum
        {
            causes.push((
                path.to_owned(),
                format!("Invalid value: {value}: {path} in body should be greater than or equal to {minimum}"),
            ));
        }
        if let Some(maximum) = limit("maximum")
            && number > maximum
        {
            causes.push((
                path.to_owned(),
                format!("Invalid value: {value}: {path} in body should be less than or equal to {maximum}"),
            ));
        }
    }
    #[allow(clippy::cast_precision_loss)] // lengths far below 2^52
    let length = match value {
        Value::String(text) => Some((text.chars().count() as f64, "characters")),
        Value::Array(items) => Some((items.len() as f64, "items")),
        _ => None,
    };
    if let Some((length, unit)) = length {
        let (low, high) = if unit == "items" {
            (limit("minItems"), limit("maxItems"))
        } else {
            (limit("minLength"), limit("maxLength"))
        };
        if let Some(low) = low
            && length < low
        {
            causes.push((
                path.to_owned(),
                format!("Invalid value: {value}: {path} in body should have at least {low} {unit}"),
            ));
        }
        if let Some(high) = high
            && length > high
        {
            causes.push((
                path.to_owned(),
                format!("Too long: {path} in body may not have more than {high} {unit}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["triggers"], "properties": {
                "pollingInterval": {"type": "integer", "minimum": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "triggers": {"type": "array", "minItems": 1, "items": {"type": "object",
                    "properties": {"type": {"type": "string", "minLength": 1},
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "port": {"x-kubernetes-int-or-string": true},
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        }})
    }

    fn fields(causes: &Causes) -> Vec<&str> {
        causes.iter().map(|(field, _)| field.as_str()).collect()
    }

    #[test]
    fn a_valid_object_passes_and_unknown_fields_are_pruned() {
        let mut object = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"pollingInterval": 5, "triggers": [{"type": "kafka", "metadata": {"topic": "t"}, "bogus": 1}],
                "free": {"anything": [1]}, "port": "http", "extra": true},
            "unknownTop": 1});
        assert!(check(&schema(), &mut object).is_empty());
        assert_eq!(object.get("unknownTop"), None);
        assert_eq!(object["spec"].get("extra"), None);
        assert_eq!(object["spec"]["triggers"][0].get("bogus"), None);
        assert_eq!(object["spec"]["free"]["anything"], json!([1]), "preserved");
        assert_eq!(object["metadata"]["name"], "n");
    }

    #[test]
    fn wrong_types_bounds_enums_and_missing_fields_name_the_field() {
        let mut object = json!({"spec": {"pollingInterval": "abc", "mode": "c", "triggers": [],
            "port": [1]}, "status": {"ready": "yes"}});
        let causes = check(&schema(), &mut object);
        assert_eq!(
            fields(&causes),
            [
                "spec.mode",
                "spec.pollingInterval",
                "spec.port",
                "spec.triggers",
                "status.ready"
            ],
            "{causes:?}"
        );
        assert!(
            causes[1].1.contains("must be of type integer"),
            "{causes:?}"
        );
        let mut not_an_object = json!({"spec": 5});
        assert_eq!(fields(&check(&schema(), &mut not_an_object)), ["spec"]);
        let mut missing = json!({"spec": {"pollingInterval": 0, "triggers": [{"type": ""}]}});
        let causes = check(&schema(), &mut missing);
        assert_eq!(
            fields(&causes),
            ["spec.pollingInterval", "spec.triggers[0].type"],
            "{causes:?}"
        );
        let mut no_triggers = json!({"spec": {}});
        assert_eq!(
            fields(&check(&schema(), &mut no_triggers)),
            ["spec.triggers"]
        );
        let mut bad_metadata_value =
            json!({"spec": {"triggers": [{"type": "k", "metadata": {"a": 5}}]}});
        assert_eq!(
            fields(&check(&schema(), &mut bad_metadata_value)),
            ["spec.triggers[0].metadata.a"]
        );
    }
}
