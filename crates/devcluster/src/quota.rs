//! ResourceQuota admission for object counts, the part jobtide meets: a Job create beyond a
//! quota's `spec.hard["count/jobs.batch"]` in its namespace is refused with the real server's 403
//! (`exceeded quota: <name>, requested: …, used: …, limited: …`). Counted from the stored Jobs at
//! the create, as the real quota admission does (finished Jobs count until they are deleted).
//! Not emulated: compute quotas (`requests.cpu`, …: they refuse pods, which the embedded server
//! has no admission for) and the quota controller's `status.used` (a quota's status is whatever
//! a client wrote).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::resources::ResourceType;
use crate::status::ApiError;

const JOB_COUNT: &str = "count/jobs.batch";

/// Refuses creating the Job `name` in `namespace` when a quota's Job count is used up.
pub(crate) fn admit(
    objects: &BTreeMap<(String, String, String, String), Arc<Value>>,
    resource: &ResourceType,
    namespace: &str,
    name: &str,
) -> Result<(), ApiError> {
    if !(resource.group == "batch" && resource.plural == "jobs") {
        return Ok(());
    }
    let in_namespace = |group: &'static str, plural: &'static str| {
        objects
            .iter()
            .filter(move |((g, p, ns, _), _)| g == group && p == plural && ns == namespace)
            .map(|(_, object)| object)
    };
    let used = in_namespace("batch", "jobs").count();
    for quota in in_namespace("", "resourcequotas") {
        let Some(hard) = quota["spec"]["hard"][JOB_COUNT].as_str().and_then(count) else {
            continue;
        };
        if used >= hard {
            let quota_name = quota["metadata"]["name"].as_str().unwrap_or_default();
            return Err(ApiError::failure(
                403,
                "Forbidden",
                &format!(
                    "{} \"{name}\" is forbidden: exceeded quota: {quota_name}, requested: \
                     {JOB_COUNT}=1, used: {JOB_COUNT}={used}, limited: {JOB_COUNT}={hard}",
                    resource.qualified()
                ),
                serde_json::json!({"name": name, "group": "batch", "kind": "jobs"}),
            ));
        }
    }
    Ok(())
}

/// A plain integer quantity (object counts are written as such).
fn count(quantity: &str) -> Option<usize> {
    quantity.trim().parse().ok()
}
