//! `status.scaledjobs` of the (Cluster)TriggerAuthentications a ScaledJob references, as KEDA
//! keeps it (keda-compat §2.2 steps 2 and 9): the ScaledJob's name joined with `,` into the list
//! after its reconcile steps, removed again when it is deleted. `kubectl get ta -o wide` shows the
//! list in its `ScaledJobs` column.
//!
//! KEDA only logs a failure here, and so does jobtide: the list is informational. Unlike KEDA,
//! the write is skipped when the list already says the right thing (no write per reconcile), and
//! it carries the object's `resourceVersion`, so two ScaledJobs adding themselves to one object at
//! once can't erase each other (a conflict is retried on a fresh read).

use jobtide_api::scaledjob::{AuthenticationKind, AuthenticationRef};
use jobtide_api::{ClusterTriggerAuthentication, ScaledJob, TriggerAuthentication};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// How often a write that lost a race (409) is tried again on a fresh read.
const ATTEMPTS: usize = 3;

/// Adds `scaled_job`'s name to the list of every authentication object it references.
pub(crate) async fn record(client: &Client, scaled_job: &ScaledJob) {
    let name = scaled_job.name_any();
    update_all(client, scaled_job, |list| with_name(list, &name)).await;
}

/// Removes `scaled_job`'s name from the list of every authentication object it references.
pub(crate) async fn forget(client: &Client, scaled_job: &ScaledJob) {
    let name = scaled_job.name_any();
    update_all(client, scaled_job, |list| without_name(list, &name)).await;
}

async fn update_all(
    client: &Client,
    scaled_job: &ScaledJob,
    change: impl Fn(&str) -> Option<String>,
) {
    let namespace = scaled_job.namespace().unwrap_or_default();
    let mut done: Vec<&AuthenticationRef> = Vec::new();
    for reference in scaled_job
        .spec
        .triggers
        .iter()
        .filter_map(|t| t.authentication_ref.as_ref())
    {
        if done.contains(&reference) {
            continue;
        }
        done.push(reference);
        let result = match reference.kind {
            Some(AuthenticationKind::ClusterTriggerAuthentication) => {
                let api: Api<ClusterTriggerAuthentication> = Api::all(client.clone());
                update(&api, &reference.name, &change, |o| o.status.as_ref()).await
            }
            Some(AuthenticationKind::TriggerAuthentication) | None => {
                let api: Api<TriggerAuthentication> = Api::namespaced(client.clone(), &namespace);
                update(&api, &reference.name, &change, |o| o.status.as_ref()).await
            }
        };
        if let Err(error) = result {
            tracing::warn!(
                scaled_job = %format!("{namespace}/{}", scaled_job.name_any()),
                authentication = %reference.name,
                %error,
                "updating the authentication's status.scaledjobs failed"
            );
        }
    }
}

async fn update<K>(
    api: &Api<K>,
    name: &str,
    change: &impl Fn(&str) -> Option<String>,
    status: impl Fn(&K) -> Option<&jobtide_api::auth::TriggerAuthenticationStatus>,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for attempt in 1..=ATTEMPTS {
        // A missing object (deleted, or never there: D13 reports that) has no list to keep.
        let Some(object) = api.get_opt(name).await? else {
            return Ok(());
        };
        let current = status(&object)
            .and_then(|s| s.scaledjobs.as_deref())
            .unwrap_or_default();
        let Some(next) = change(current) else {
            return Ok(());
        };
        let value = if next.is_empty() {
            serde_json::Value::Null
        } else {
            next.into()
        };
        let patch = json!({
            "metadata": {"resourceVersion": object.meta().resource_version},
            "status": {"scaledjobs": value},
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {}
            other => return other.map(drop),
        }
    }
    Ok(())
}

/// The list with `name` appended (KEDA's `AppendIntoString`), or `None` when it is there.
fn with_name(list: &str, name: &str) -> Option<String> {
    let items = split(list);
    if items.contains(&name) {
        return None;
    }
    Some(
        items
            .into_iter()
            .chain([name])
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The list without `name` (KEDA's `RemoveFromString`), or `None` when it isn't there.
fn without_name(list: &str, name: &str) -> Option<String> {
    let items = split(list);
    if !items.contains(&name) {
        return None;
    }
    Some(
        items
            .into_iter()
            .filter(|item| *item != name)
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn split(list: &str) -> Vec<&str> {
    list.split(',').filter(|item| !item.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_appended_once() {
        assert_eq!(with_name("", "orders").as_deref(), Some("orders"));
        assert_eq!(with_name("a,b", "orders").as_deref(), Some("a,b,orders"));
        assert_eq!(with_name("a,orders,b", "orders"), None);
        assert_eq!(
            with_name("orders-2", "orders").as_deref(),
            Some("orders-2,orders")
        );
    }

    #[test]
    fn a_name_is_removed_and_only_that_name() {
        assert_eq!(without_name("a,orders,b", "orders").as_deref(), Some("a,b"));
        assert_eq!(without_name("orders", "orders").as_deref(), Some(""));
        assert_eq!(without_name("orders-2", "orders"), None);
        assert_eq!(without_name("", "orders"), None);
    }
}
