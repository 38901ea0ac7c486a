//! Fault injection and the request log, for tests: fail the next N requests (optionally only a
//! verb and/or resource) with 500, 429 + Retry-After or 409; delay every response; end every
//! open watch; and read back what clients sent.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::status::ApiError;

/// How an injected failure answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 500 InternalError.
    InternalError,
    /// 429 TooManyRequests with `Retry-After: seconds`.
    TooManyRequests {
        /// The Retry-After header value.
        retry_after_seconds: u64,
    },
    /// 409 Conflict.
    Conflict,
    /// 403 Forbidden (as an RBAC denial reads).
    Forbidden,
}

/// Which requests a failure applies to (`None` matches any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: Option<String>,
    /// The resource's plural, e.g. `jobs`.
    pub resource: Option<String>,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The verb (as in [`Matcher::verb`]; `discovery` for discovery and version calls).
    pub verb: String,
    /// The resource plural, when the path names one.
    pub resource: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Request Content-Type, if any.
    pub content_type: Option<String>,
    /// The body, when it is JSON (for asserting request shapes).
    pub body: Option<Value>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// The status code answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<(usize, Matcher, Failure)>,
    delay: Duration,
    log: Vec<RequestRecord>,
}

/// The fault controls and request log of a running server.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
    watch_epoch: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            watch_epoch: watch::channel(0).0,
        }
    }
}

impl Faults {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails the next `count` requests matching `matcher` with `failure`.
    pub fn fail_next(&self, count: usize, matcher: Matcher, failure: Failure) {
        self.state().rules.push((count, matcher, failure));
    }

    /// Delays every response by `delay` (zero to stop).
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Ends every open watch (clients re-watch from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    /// A receiver that changes when watches must end.
    pub fn watch_epoch(&self) -> watch::Receiver<u64> {
        self.watch_epoch.subscribe()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().log.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.state().log.clear();
    }

    pub(crate) fn delay(&self) -> Duration {
        self.state().delay
    }

    pub(crate) fn log(&self, record: RequestRecord) {
        self.state().log.push(record);
    }

    /// The injected failure for this request, if a rule matches (consuming one of its count).
    pub(crate) fn injected(
        &self,
        verb: &str,
        resource: Option<&str>,
    ) -> Option<(ApiError, Option<u64>)> {
        let mut state = self.state();
        let index = state.rules.iter().position(|(count, matcher, _)| {
            *count > 0
                && matcher.verb.as_deref().is_none_or(|v| v == verb)
                && matcher
                    .resource
                    .as_deref()
                    .is_none_or(|r| Some(r) == resource)
        })?;
        let (count, _, failure) = &mut state.rules[index];
        *count -= 1;
        let failure = *failure;
        state.rules.retain(|(count, _, _)| *count > 0);
        Some(match failure {
            Failure::InternalError => (ApiError::internal("injected failure"), None),
            Failure::TooManyRequests {
                retry_after_seconds,
            } => (
                ApiError::failure(
                    429,
                    "TooManyRequests",
                    "the server has received too many requests and has asked us to try again later",
                    json!({"retryAfterSeconds": retry_after_seconds}),
                ),
                Some(retry_after_seconds),
            ),
            Failure::Conflict => (
                ApiError::failure(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled: injected conflict",
                    Value::Null,
                ),
                None,
            ),
            Failure::Forbidden => (
                ApiError::failure(
                    403,
                    "Forbidden",
                    "forbidden: injected RBAC denial",
                    Value::Null,
                ),
                None,
            ),
        })
    }
}
