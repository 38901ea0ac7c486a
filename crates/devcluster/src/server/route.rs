//! Where a request points: the path parsed into a type, namespace, name and subresource.

use axum::http::{Method, Uri};

use crate::params::query;
use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::store::Store;

/// Where a request points.
pub(super) struct Target {
    pub(super) resource: ResourceType,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

pub(super) fn route(store: &Store, path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_resource(path)),
    };
    let lookup = |plural: &str| {
        store
            .resource(group, version, plural)
            .ok_or_else(|| ApiError::no_resource(path))
    };
    // Names and namespaces arrive percent-encoded (`my%2Dname` is `my-name`).
    let decoded = |segment: &str| {
        crate::params::path_segment(segment).ok_or_else(|| {
            ApiError::bad_request(format!("the path segment {segment:?} is not valid"))
        })
    };
    let target = |resource,
                  namespace: Option<&str>,
                  name: Option<&&str>,
                  sub: Option<&&str>|
     -> Result<Target, ApiError> {
        Ok(Target {
            resource,
            namespace: namespace.map(decoded).transpose()?,
            name: name.map(|n| decoded(n)).transpose()?,
            subresource: sub.map(|s| (*s).to_owned()),
        })
    };
    match rest {
        ["namespaces", namespace, plural, tail @ ..]
            if store
                .resource(group, version, plural)
                .is_some_and(|r| r.namespaced)
                && tail.len() <= 2 =>
        {
            target(lookup(plural)?, Some(namespace), tail.first(), tail.get(1))
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let resource = lookup(plural)?;
            if resource.namespaced && !tail.is_empty() {
                return Err(ApiError::no_resource(path));
            }
            target(resource, None, tail.first(), tail.get(1))
        }
        _ => Err(ApiError::no_resource(path)),
    }
}

/// The verb and resource of a request, as RBAC and the fault matchers name them.
pub(super) fn classify(store: &Store, method: &Method, uri: &Uri) -> (String, Option<String>) {
    let Ok(target) = route(store, uri.path()) else {
        return ("discovery".into(), None);
    };
    let watching = query(uri)
        .get("watch")
        .is_some_and(|v| v == "true" || v == "1");
    let verb = match (method.as_str(), target.name.is_some()) {
        ("GET", false) if watching => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => other,
    };
    (verb.to_owned(), Some(target.resource.plural))
}
