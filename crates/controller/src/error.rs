//! Why a reconcile failed: the operation that failed, a category for the metric label, and
//! whether retrying can help (transient: requeue with per-ScaledJob exponential backoff;
//! permanent: wait for a change of the ScaledJob).

use std::time::Duration;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{operation}: {cause}")]
    Api {
        /// What was being done, naming the object (`patching the status of default/orders`).
        operation: String,
        /// The API's answer.
        cause: kube::Error,
    },
    /// Adding or removing the finalizer failed.
    #[error("finalizer finalizer.keda.sh: {0}")]
    Finalizer(String),
    /// The store's copy of a ScaledJob didn't read back (a bug: it was written from a
    /// ScaledJob, [`crate::kept_scaled_job`]).
    #[error("reading back the kept ScaledJob {0}")]
    Kept(String),
    /// The Job and Pod caches didn't fill in time.
    #[error("the Job and Pod caches are not synced yet")]
    CachesNotReady,
}

/// `Error::Api` for `operation`, for `map_err`.
pub(crate) fn api(operation: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let operation = operation.into();
    move |cause| Error::Api { operation, cause }
}

impl Error {
    /// A fixed label for metrics (never error text).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api { cause, .. } => match status_code(cause) {
                Some(400 | 422) => "api_invalid",
                Some(401 | 403) => "api_forbidden",
                Some(404) => "api_not_found",
                Some(409) => "api_conflict",
                Some(429) => "api_throttled",
                Some(500..=599) => "api_server",
                _ => "api_transport",
            },
            Self::Finalizer(_) => "finalizer",
            Self::CachesNotReady => "caches_not_ready",
            Self::Kept(_) => "kept",
        }
    }

    /// Whether retrying the same ScaledJob can't help: the API called the request invalid.
    /// Such a reconcile waits for a change of the ScaledJob.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Kept(_))
            || matches!(self, Self::Api { cause, .. } if matches!(status_code(cause), Some(400 | 422)))
    }
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The delay before retry number `failures` (1-based) of one ScaledJob: 5 s doubling, at most
/// 5 minutes.
pub(crate) fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(6);
    Duration::from_secs(5 << doublings).min(Duration::from_mins(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        Error::Api {
            operation: "patching the status of default/sj".into(),
            cause: kube::Error::Api(Box::new(
                kube::core::Status::failure("no", "Reason").with_code(code),
            )),
        }
    }

    #[test]
    fn categories_are_fixed_labels_and_invalid_requests_are_permanent() {
        for (code, category, permanent) in [
            (422, "api_invalid", true),
            (403, "api_forbidden", false),
            (409, "api_conflict", false),
            (429, "api_throttled", false),
            (503, "api_server", false),
        ] {
            let error = api_error(code);
            assert_eq!(error.category(), category);
            assert_eq!(error.is_permanent(), permanent, "{code}");
            assert!(
                error
                    .to_string()
                    .starts_with("patching the status of default/sj: ")
            );
        }
        assert_eq!(Error::CachesNotReady.category(), "caches_not_ready");
        let kept = Error::Kept("ns/sj: EOF".into());
        assert_eq!((kept.category(), kept.is_permanent()), ("kept", true));
    }

    #[test]
    fn retries_back_off_exponentially_to_five_minutes() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
    }
}
