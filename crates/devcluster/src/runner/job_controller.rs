//! The runner's Job controller (embedded server only): a Job gets one pod at a time, its status
//! follows its pods (succeeded, failed, restarts against backoffLimit, activeDeadlineSeconds),
//! and a finished Job goes after ttlSecondsAfterFinished.

use serde_json::{Value, json};

use super::{condition, now, str_at};
use crate::store::{Part, Store};

pub(super) fn sync_job(store: &Store, job: &Value, pods: &[&Value]) {
    let Some(job_type) = store.resource("batch", "v1", "jobs") else {
        return;
    };
    let namespace = str_at(job, "/metadata/namespace").to_owned();
    let name = str_at(job, "/metadata/name").to_owned();
    let finished = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
    if finished {
        expire(store, job);
        return;
    }
    if job.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let spec = &job["spec"];
    let more_than_one = spec["completions"].as_i64().unwrap_or(1) > 1
        || spec["parallelism"].as_i64().unwrap_or(1) > 1;
    let succeeded = pods
        .iter()
        .filter(|p| str_at(p, "/status/phase") == "Succeeded")
        .count();
    let failed_pods = pods
        .iter()
        .filter(|p| str_at(p, "/status/phase") == "Failed")
        .count();
    let restarts: i64 = pods
        .iter()
        .flat_map(|p| {
            p.pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|s| s["restartCount"].as_i64())
        .fold(0, i64::saturating_add);
    let failures = i64::try_from(failed_pods)
        .unwrap_or(i64::MAX)
        .saturating_add(restarts);
    let active: Vec<&&Value> = pods
        .iter()
        .filter(|p| matches!(str_at(p, "/status/phase"), "" | "Pending" | "Running"))
        .collect();
    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let suspended = spec["suspend"].as_bool() == Some(true);
    let started = job.pointer("/status/startTime").cloned();
    let deadline_exceeded = spec["activeDeadlineSeconds"]
        .as_i64()
        .zip(started.as_ref().and_then(Value::as_str))
        .is_some_and(|(limit, start)| {
            start
                .parse::<jiff::Timestamp>()
                .is_ok_and(|s| jiff::Timestamp::now().as_second() - s.as_second() >= limit)
        });
    let mut status = job
        .get("status")
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let verdict: Option<(&str, &str, String)> = if more_than_one {
        Some((
            "Failed",
            "NotSupported",
            "the local runner runs Jobs with completions and parallelism 1 only".into(),
        ))
    } else if succeeded > 0 {
        Some(("Complete", "", String::new()))
    } else if failures > backoff_limit {
        Some((
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into(),
        ))
    } else if deadline_exceeded {
        Some((
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline".into(),
        ))
    } else {
        None
    };
    if let Some((outcome, reason, message)) = verdict {
        for pod in &active {
            let _ = store.delete(
                &store
                    .resource("", "v1", "pods")
                    .unwrap_or_else(|| job_type.clone()),
                &namespace,
                str_at(pod, "/metadata/name"),
                &crate::store::DeleteOptions::default(),
            );
        }
        let mut conditions = Vec::new();
        if outcome == "Complete" {
            conditions.push(condition(
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            conditions.push(condition(
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            status["completionTime"] = json!(now());
        } else {
            conditions.push(condition("FailureTarget", "True", reason, &message));
            conditions.push(condition("Failed", "True", reason, &message));
        }
        status["conditions"] = json!(conditions);
        status["active"] = json!(0);
        status["ready"] = json!(0);
        status["succeeded"] = json!(succeeded);
        status["failed"] = json!(failed_pods);
        let _ = store.modify(&job_type, &namespace, &name, Part::Status, |old| {
            let mut new = old.clone();
            new["status"] = status.clone();
            Ok(new)
        });
        return;
    }
    if suspended {
        return;
    }
    if active.is_empty() {
        create_pod(store, job);
    }
    let ready = pods
        .iter()
        .filter(|p| str_at(p, "/status/phase") == "Running")
        .count();
    let mut next = status.clone();
    if next.get("startTime").is_none() {
        next["startTime"] = json!(now());
    }
    next["active"] = json!(active.len().max(1));
    next["ready"] = json!(ready);
    next["failed"] = json!(failed_pods);
    next["succeeded"] = json!(succeeded);
    next["terminating"] = json!(0);
    if next != status {
        let _ = store.modify(&job_type, &namespace, &name, Part::Status, |old| {
            let mut new = old.clone();
            new["status"] = next.clone();
            Ok(new)
        });
    }
}

/// ttlSecondsAfterFinished: deletes a finished Job (and, by garbage collection, its pods).
fn expire(store: &Store, job: &Value) {
    let Some(ttl) = job
        .pointer("/spec/ttlSecondsAfterFinished")
        .and_then(Value::as_i64)
    else {
        return;
    };
    let finished_at = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "Complete" || c["type"] == "Failed")
        .find_map(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    if finished_at.is_some_and(|t| jiff::Timestamp::now().as_second() - t.as_second() >= ttl)
        && let Some(job_type) = store.resource("batch", "v1", "jobs")
    {
        let _ = store.delete(
            &job_type,
            str_at(job, "/metadata/namespace"),
            str_at(job, "/metadata/name"),
            &crate::store::DeleteOptions::default(),
        );
    }
}

fn create_pod(store: &Store, job: &Value) {
    let Some(pod_type) = store.resource("", "v1", "pods") else {
        return;
    };
    let template = &job["spec"]["template"];
    let job_name = str_at(job, "/metadata/name");
    // The server refuses labels that aren't a map (`decode`); an object written straight
    // to the store still gets a pod, not a panic.
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert("batch.kubernetes.io/job-name".into(), json!(job_name));
    labels.insert("job-name".into(), json!(job_name));
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{job_name}-"),
            "labels": labels,
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                "uid": str_at(job, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": template["spec"].clone(),
        "status": {"phase": "Pending"},
    });
    let _ = store.create(&pod_type, str_at(job, "/metadata/namespace"), pod);
}
