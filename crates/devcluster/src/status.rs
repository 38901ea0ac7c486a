//! `metav1.Status` errors, shaped like the real API server's.

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// An API error: HTTP code + Status body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The `metav1.Status` object.
    pub body: Value,
}

impl ApiError {
    fn new(code: u16, reason: &str, message: String, details: Value) -> Self {
        let mut body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        });
        if !details.is_null() {
            body["details"] = details;
        }
        Self { code, body }
    }

    /// `metav1.StatusDetails`: `group` is left out for the core group (`omitempty`), and `kind`
    /// is the resource's plural, as the real server writes it.
    fn details(name: &str, resource: &ResourceType) -> Value {
        let mut details = json!({"name": name, "kind": resource.plural});
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        details
    }

    /// 200 Success for a delete that removed the object at once (a type whose registry doesn't
    /// return the deleted object): `details` name the object, with its uid.
    pub fn deleted(resource: &ResourceType, name: &str, uid: &str) -> Value {
        let mut details = Self::details(name, resource);
        details["uid"] = json!(uid);
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details})
    }

    /// 404 NotFound for an object.
    pub fn not_found(resource: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
            Self::details(name, resource),
        )
    }

    /// 404 for a path that names no served resource.
    pub fn no_resource(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
            Value::Null,
        )
    }

    /// 404 for a missing namespace.
    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
            json!({"name": namespace, "kind": "namespaces"}),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(resource: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource.qualified()),
            Self::details(name, resource),
        )
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(resource: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                resource.qualified()
            ),
            Self::details(name, resource),
        )
    }

    /// 422 Invalid with causes `(field, message)`.
    pub fn invalid(resource: &ResourceType, name: &str, causes: &[(String, String)]) -> Self {
        let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let causes: Vec<Value> = causes
            .iter()
            .map(|(field, message)| json!({"reason": cause_reason(message), "message": message, "field": field}))
            .collect();
        let mut details = Self::details(name, resource);
        details["kind"] = json!(resource.kind);
        details["causes"] = json!(causes);
        Self::new(
            422,
            "Invalid",
            // `Kind.group` (the real server's qualified kind; the core group adds nothing).
            format!(
                "{}{}{} \"{name}\" is invalid: {}",
                resource.kind,
                if resource.group.is_empty() { "" } else { "." },
                resource.group,
                text.join(", ")
            ),
            details,
        )
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), Value::Null)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into(), Value::Null)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({what})"),
            Value::Null,
        )
    }

    /// 415 UnsupportedMediaType: a refusal of something the server does not emulate.
    pub fn unsupported_media_type(what: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/json-patch+json, application/merge-patch+json ({what} is not emulated by jobtide's dev cluster)"
            ),
            Value::Null,
        )
    }

    /// 501 NotImplemented: a refusal of something the server does not emulate yet.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            501,
            "NotImplemented",
            format!("{what} is not emulated by jobtide's dev cluster"),
            Value::Null,
        )
    }

    /// 410 Expired (too old resource version).
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
            Value::Null,
        )
    }

    /// Any Status failure (fault injection): `code`, `reason`, `message`, `details` (null: none).
    pub fn failure(code: u16, reason: &str, message: &str, details: Value) -> Self {
        Self::new(code, reason, message.to_owned(), details)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into(), Value::Null)
    }
}

/// A cause's `reason` (apimachinery's `field.ErrorType`), from the message it begins with: the
/// messages here are written as the real server's `field.Error`s print (`Required value`,
/// `Unsupported value: …`, `Invalid value: …`, a type mismatch `… must be of type …`).
fn cause_reason(message: &str) -> &'static str {
    const BY_PREFIX: &[(&str, &str)] = &[
        ("Required value", "FieldValueRequired"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
        ("Not found", "FieldValueNotFound"),
    ];
    if let Some((_, reason)) = BY_PREFIX.iter().find(|(p, _)| message.starts_with(p)) {
        return reason;
    }
    if message.starts_with("Invalid value") && message.contains(" must be of type ") {
        return "FieldValueTypeInvalid";
    }
    "FieldValueInvalid"
}

#[cfg(test)]
mod tests {
    use super::cause_reason;

    #[test]
    fn a_cause_reason_follows_from_its_message_as_in_apimachinery() {
        assert_eq!(cause_reason("Required value"), "FieldValueRequired");
        assert_eq!(
            cause_reason(
                r#"Unsupported value: "fastest": supported values: "default", "custom", "accurate", "eager""#
            ),
            "FieldValueNotSupported"
        );
        assert_eq!(
            cause_reason(
                r#"Invalid value: "string": spec.pollingInterval in body must be of type integer: "string""#
            ),
            "FieldValueTypeInvalid"
        );
        assert_eq!(
            cause_reason(
                "Invalid value: 0: spec.pollingInterval in body should be greater than or equal to 1"
            ),
            "FieldValueInvalid"
        );
    }
}
