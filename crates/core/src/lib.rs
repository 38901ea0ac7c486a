//! jobtide's domain, kept pure: no Kubernetes client, no Kafka client, no network, no clock.
//! Time is an argument; the same inputs always give the same outputs.
//!
//! # Layout
//! - [`kafka`]: the lag policy of a Kafka trigger as plain values; [`lag`]: the lag arithmetic
//!   over partition offsets (§7).
//! - [`replicas`]: effective Min / Max (keda-compat §1.3).
//! - [`scaling`]: trigger measurements → aggregate → number of Jobs to create (§3).
//! - [`jobs`]: Job classification (finished / finishing / running / pending), history cleanup
//!   and rollout selection (§4.3, §4.5, §4.6).
//! - [`capacity`]: whether the cluster has room for the Jobs (autoscaler, quota, Kueue) and
//!   the pending budget.
//! - [`crashloop`]: the crash-loop guard (back off when Jobs keep failing at once).
//! - [`pause`]: the `autoscaling.keda.sh/paused` annotation (§1.4).
//! - [`status`]: conditions and the Kubernetes events their transitions imply (§5.1, §5.2).
//! - [`poll`]: one whole poll — facts in, decision out (§2.4).
//! - [`dispatch`]: dispatch mode — one Job per message: deterministic Job names and the
//!   per-partition ledger (retries, dead letters, the commit watermark, the in-flight cap).
//! - [`shards`]: several replicas sharing the ScaledJobs — which live member owns one
//!   (rendezvous hashing) and when a replica may act (member Leases judged by this clock).
//!
//! The controller gathers facts, calls these functions, and acts on what they return.

pub mod capacity;
pub mod crashloop;
pub mod dispatch;
pub mod jobs;
pub mod kafka;
pub mod lag;
pub mod pause;
pub mod poll;
pub mod replicas;
pub mod scaling;
pub mod shards;
pub mod status;
