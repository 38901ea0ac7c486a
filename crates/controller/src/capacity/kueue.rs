//! Kueue's Workloads (`kueue.x-k8s.io/v1beta1`), read only for Jobs Kueue holds: one list of the
//! namespace's Workloads on a creating poll, matched to Jobs by owner uid (Kueue's Workload for
//! a Job is owned by it). Not served (404: Kueue isn't installed) or not readable: admission
//! stays unknown, and the Jobs count as queued.

use std::collections::HashMap;
use std::sync::Arc;

use jobtide_core::jobs::JobFacts;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};

use crate::context::Context;

fn workloads() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta1", "Workload"),
        "workloads",
    )
}

/// Fills in the admission of each Kueue-held Job in `facts` from its Workload.
pub(super) async fn admissions(
    context: &Context,
    namespace: &str,
    jobs: &[Arc<Job>],
    facts: &mut [JobFacts],
) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(context.client.clone(), namespace, &workloads());
    let listed = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 404 => return,
        Err(error) => {
            tracing::debug!(%namespace, %error, "reading Kueue Workloads failed; admission unknown");
            return;
        }
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
    for job in facts.iter_mut().filter(|j| j.kueue.is_some()) {
        let workload = uid_of
            .get(job.name.as_str())
            .and_then(|uid| by_owner.get(uid));
        let conditions = workload.and_then(|w| w.data["status"]["conditions"].as_array());
        job.kueue = Some(super::admission(conditions.map(Vec::as_slice)));
    }
}
