//! Fault injection and the request log, for tests: fail the next N requests (optionally only a
//! verb and/or resource) with 500, 429 + Retry-After or 409; delay every response; end every
//! open watch; and read back what clients sent.
//!
//! The request log is a bounded ring: the last [`REQUEST_LOG`] requests (a test may change the
//! bound with [`Faults::set_request_log_capacity`]); older ones are dropped and counted
//! ([`Faults::dropped_requests`]), so a long `jobtide dev` session doesn't grow.

use std::collections::VecDeque;
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
    /// The request is carried out, then its answer is lost: the client gets 500 InternalError
    /// for a write that happened (a timeout after commit, a proxy dropping the response).
    LostResponse,
}

/// What an injected failure does to a request.
#[derive(Debug)]
pub(crate) enum Injected {
    /// Answer with this error instead of serving (and the Retry-After seconds).
    Instead(ApiError, Option<u64>),
    /// Serve, then answer with this error.
    After(ApiError),
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

/// Fails every `every`-th request matching, cycling through `failures`.
#[derive(Debug)]
struct Periodic {
    every: usize,
    matcher: Matcher,
    /// Only requests whose `User-Agent` starts with this (e.g. the operator's).
    user_agent: Option<String>,
    failures: Vec<Failure>,
    seen: usize,
}

/// How many requests the log keeps by default: enough for any one test's assertions (the
/// busiest controller tests make a few thousand), at most 10,000 bodies of a `jobtide dev`
/// session in memory.
pub const REQUEST_LOG: usize = 10_000;

#[derive(Debug)]
struct State {
    rules: Vec<(usize, Matcher, Failure)>,
    periodic: Vec<Periodic>,
    delay: Duration,
    log: VecDeque<RequestRecord>,
    /// The log's bound.
    log_capacity: usize,
    /// Requests dropped from the log's front to keep it within its bound.
    dropped: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            periodic: Vec::new(),
            delay: Duration::ZERO,
            log: VecDeque::new(),
            log_capacity: REQUEST_LOG,
            dropped: 0,
        }
    }
}

impl State {
    fn trim_log(&mut self) {
        while self.log.len() > self.log_capacity {
            self.log.pop_front();
            self.dropped += 1;
        }
    }
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

    /// Fails every `every`-th request matching `matcher` (so `every` 10 fails 10 %), with each of
    /// `failures` in turn, until [`Self::clear_periodic`]. Deterministic, so a failing run can be
    /// repeated.
    /// `user_agent`: only requests whose `User-Agent` starts with it.
    pub fn fail_every(
        &self,
        every: usize,
        matcher: Matcher,
        user_agent: Option<&str>,
        failures: Vec<Failure>,
    ) {
        if every > 0 && !failures.is_empty() {
            self.state().periodic.push(Periodic {
                every,
                matcher,
                user_agent: user_agent.map(str::to_owned),
                failures,
                seen: 0,
            });
        }
    }

    /// Ends every [`Self::fail_every`] rule.
    pub fn clear_periodic(&self) {
        self.state().periodic.clear();
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

    /// The logged requests, oldest first: every request so far, or the last
    /// [`REQUEST_LOG`] (see [`Self::dropped_requests`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().log.iter().cloned().collect()
    }

    /// Forgets the request log (and the count of dropped requests).
    pub fn clear_requests(&self) {
        let mut state = self.state();
        state.log.clear();
        state.dropped = 0;
    }

    /// How many requests were dropped from the log's front to keep it within its bound.
    pub fn dropped_requests(&self) -> u64 {
        self.state().dropped
    }

    /// Keeps at most `capacity` requests in the log from now on (at least one).
    pub fn set_request_log_capacity(&self, capacity: usize) {
        let mut state = self.state();
        state.log_capacity = capacity.max(1);
        state.trim_log();
    }

    pub(crate) fn delay(&self) -> Duration {
        self.state().delay
    }

    pub(crate) fn log(&self, record: RequestRecord) {
        let mut state = self.state();
        state.log.push_back(record);
        state.trim_log();
    }

    /// The injected failure for this request, if a rule matches (consuming one of its count).
    pub(crate) fn injected(
        &self,
        verb: &str,
        resource: Option<&str>,
        user_agent: Option<&str>,
    ) -> Option<Injected> {
        let matches = |matcher: &Matcher| {
            matcher.verb.as_deref().is_none_or(|v| v == verb)
                && matcher
                    .resource
                    .as_deref()
                    .is_none_or(|r| Some(r) == resource)
        };
        let mut state = self.state();
        let mut periodic_failure = None;
        for rule in &mut state.periodic {
            let agent = rule
                .user_agent
                .as_deref()
                .is_none_or(|prefix| user_agent.is_some_and(|a| a.starts_with(prefix)));
            if agent && matches(&rule.matcher) {
                rule.seen += 1;
                if rule.seen % rule.every == 0 && periodic_failure.is_none() {
                    let turn = (rule.seen / rule.every - 1) % rule.failures.len();
                    periodic_failure = Some(rule.failures[turn]);
                }
            }
        }
        let failure = match periodic_failure {
            Some(failure) => failure,
            None => {
                let index = state
                    .rules
                    .iter()
                    .position(|(count, matcher, _)| *count > 0 && matches(matcher))?;
                let (count, _, failure) = &mut state.rules[index];
                *count -= 1;
                let failure = *failure;
                state.rules.retain(|(count, _, _)| *count > 0);
                failure
            }
        };
        let (error, retry_after) = match failure {
            Failure::LostResponse => {
                return Some(Injected::After(ApiError::internal(
                    "injected failure: the request was carried out and its answer lost",
                )));
            }
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
        };
        Some(Injected::Instead(error, retry_after))
    }
}
