//! Kueue's Workloads, read only for Jobs Kueue holds: one list of the namespace's Workloads on a
//! creating poll, matched to Jobs by owner uid (Kueue's Workload for a Job is owned by it).
//!
//! Read as `kueue.x-k8s.io/v1beta2`, the storage version since Kueue v0.15 (`v1beta1` is
//! deprecated there and reaches the client only through Kueue's conversion webhook); a cluster
//! whose Kueue serves no `v1beta2` (404) is read as `v1beta1`. Not served at all (Kueue isn't
//! installed) or not readable: admission stays unknown, and the Jobs count as queued.

use std::collections::HashMap;
use std::sync::Arc;

use jobtide_core::capacity::KueueAdmission;
use jobtide_core::jobs::JobFacts;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};

use crate::context::Context;

/// The Workload versions read, newest first.
const VERSIONS: [&str; 2] = ["v1beta2", "v1beta1"];

fn workloads(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kueue.x-k8s.io", version, "Workload"),
        "workloads",
    )
}

/// The namespace's Workloads at the newest version served, or `None` when none is (or the list
/// fails; logged at debug: admission stays unknown, which is not an error of the ScaledJob).
async fn list(client: &Client, namespace: &str) -> Option<Vec<DynamicObject>> {
    for version in VERSIONS {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &workloads(version));
        match api.list(&ListParams::default()).await {
            Ok(list) => return Some(list.items),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                tracing::debug!(%namespace, version, %error, "reading Kueue Workloads failed; admission unknown");
                return None;
            }
        }
    }
    None
}

/// Kueue's admission of each Kueue-held Job in `facts` (by Job name), from its Workload; empty
/// when the Workloads can't be read (admission unknown: the Jobs count as queued).
pub(super) async fn admissions(
    context: &Context,
    namespace: &str,
    jobs: &[Arc<Job>],
    facts: &[JobFacts],
) -> HashMap<String, KueueAdmission> {
    let Some(listed) = list(&context.client, namespace).await else {
        return HashMap::new();
    };
    let by_owner: HashMap<&str, &DynamicObject> = listed
        .iter()
        .flat_map(|w| {
            w.metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.kind == "Job")
                .map(move |o| (o.uid.as_str(), w))
        })
        .collect();
    let uid_of: HashMap<&str, &str> = jobs
        .iter()
        .filter_map(|j| Some((j.metadata.name.as_deref()?, j.metadata.uid.as_deref()?)))
        .collect();
    facts
        .iter()
        .filter(|j| j.kueue.is_some())
        .map(|job| {
            let workload = uid_of
                .get(job.name.as_str())
                .and_then(|uid| by_owner.get(uid));
            let conditions = workload.and_then(|w| w.data["status"]["conditions"].as_array());
            (
                job.name.clone(),
                super::admission(conditions.map(Vec::as_slice)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kube::client::Body;
    use serde_json::json;

    use super::*;

    /// A client whose API server serves Workloads only at `served`, recording the paths asked.
    fn client_serving(served: &'static str, asked: Arc<Mutex<Vec<String>>>) -> Client {
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let asked = Arc::clone(&asked);
            async move {
                let path = request.uri().path().to_owned();
                asked.lock().expect("lock").push(path.clone());
                let (status, body) = if path.starts_with(&format!("/apis/kueue.x-k8s.io/{served}/"))
                {
                    (
                        200,
                        json!({"apiVersion": format!("kueue.x-k8s.io/{served}"),
                        "kind": "WorkloadList", "metadata": {},
                        "items": [{"apiVersion": format!("kueue.x-k8s.io/{served}"),
                            "kind": "Workload", "metadata": {"name": served, "namespace": "team"}}]}),
                    )
                } else {
                    (
                        404,
                        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"}),
                    )
                };
                let response = http::Response::builder()
                    .status(status)
                    .body(Body::from(body.to_string().into_bytes()))
                    .expect("response");
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Client::new(service, "default")
    }

    #[tokio::test]
    async fn workloads_are_read_at_v1beta2_and_at_v1beta1_only_where_v1beta2_is_not_served() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let listed = list(&client_serving("v1beta2", Arc::clone(&asked)), "team").await;
        assert_eq!(
            listed
                .expect("listed")
                .first()
                .and_then(|w| w.metadata.name.clone()),
            Some("v1beta2".into())
        );
        assert_eq!(
            *asked.lock().expect("lock"),
            ["/apis/kueue.x-k8s.io/v1beta2/namespaces/team/workloads"]
        );

        let asked = Arc::new(Mutex::new(Vec::new()));
        let listed = list(&client_serving("v1beta1", Arc::clone(&asked)), "team").await;
        assert_eq!(
            listed
                .expect("listed")
                .first()
                .and_then(|w| w.metadata.name.clone()),
            Some("v1beta1".into())
        );
        assert_eq!(asked.lock().expect("lock").len(), 2);

        let asked = Arc::new(Mutex::new(Vec::new()));
        assert!(
            list(&client_serving("v9", Arc::clone(&asked)), "team")
                .await
                .is_none()
        );
        assert_eq!(
            asked.lock().expect("lock").len(),
            2,
            "both versions tried, then unknown"
        );
    }
}
