//! jobtide's ScaledJob controller on kube-runtime: one reconcile = one poll, expressed as
//! gather facts → `jobtide_core::poll::decide_poll` → act.
//!
//! # Status
//! First slice of the operator: reconcile with KEDA's finalizer, initial conditions, pause,
//! trigger validation, `triggersTypes` / `authenticationsTypes`, immediate rollout deletions,
//! the poll (Kafka lag through shared sources, Job counting, creation, history cleanup, status
//! and events through events.k8s.io) and requeue after `pollingInterval`. Not yet: metrics,
//! leader election, flags, watching Secrets/TriggerAuthentications for changes, counting Jobs the
//! cache hasn't shown yet (KEDA #2488).

mod facts;
mod reconcile;

pub use reconcile::{Context, run};
