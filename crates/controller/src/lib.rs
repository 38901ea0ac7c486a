//! jobtide's ScaledJob controller on kube-runtime: one reconcile = one poll, expressed as
//! gather facts → `jobtide_core::poll::decide_poll` → act.
//!
//! - [`operator::spawn`] runs the controller (with or without leader election) on one watch
//!   each for ScaledJobs, their Jobs and their Pods; Jobs and Pods are counted from those caches,
//!   corrected by the Jobs this operator created or deleted that the cache hasn't shown yet
//!   ([`cache::Expectations`], KEDA #2488).
//! - [`http::serve`] serves `/metrics`, `/healthz` and `/readyz`.
//! - [`lag_history`]: lag per partition over the last minutes (`jobtide dev`'s live page).
//! - [`leader::Elector`] is Lease-based leader election; [`shards::Sharding`] shares the
//!   ScaledJobs among replicas, each holding a member Lease.

mod auth_status;
pub mod cache;
mod capacity;
mod coalesce;
mod context;
mod dispatch;
mod error;
mod events;
mod facts;
pub mod http;
mod job_metrics;
pub mod kept;
pub mod kept_scaled_job;
pub mod lag_history;
pub mod leader;
pub mod metrics;
mod object_value;
mod objects;
pub mod operator;
mod owned_index;
pub mod packing;
pub mod ratelimit;
mod reconcile;
pub mod shards;
mod state;
mod status;
pub mod trace_ids;

pub use context::{Config, Context};

/// The `User-Agent` of the operator's API requests (audit logs; the RBAC test tells the
/// operator's requests from the test's by it).
pub const USER_AGENT: &str = concat!("jobtide-operator/", env!("CARGO_PKG_VERSION"));

/// Sets [`USER_AGENT`] on a client configuration.
pub fn with_user_agent(config: kube::Config) -> kube::Config {
    with_user_agent_of(config, None)
}

/// Sets [`USER_AGENT`] followed by the replica's name (`jobtide-operator/0.1.0 pod-a`), so that
/// an API server's audit or request log tells the replicas apart; the name is left out when it
/// can't be a header value.
pub fn with_user_agent_of(mut config: kube::Config, instance: Option<&str>) -> kube::Config {
    let value = instance
        .and_then(|name| ::http::HeaderValue::from_str(&format!("{USER_AGENT} {name}")).ok())
        .unwrap_or(::http::HeaderValue::from_static(USER_AGENT));
    config.headers.push((::http::header::USER_AGENT, value));
    config
}
pub use reconcile::{Error, FINALIZER};
