//! KEDA's `keda.sh/v1alpha1` API as jobtide serves it, and the typed trigger configs parsed from it.
//!
//! # Layout
//! - [`scaledjob`]: the `ScaledJob` custom resource (spec, status, printer columns).
//! - [`auth`]: `TriggerAuthentication` / `ClusterTriggerAuthentication`.
//! - [`resolve`]: turning a trigger's `authenticationRef` and the job template's env into the
//!   `authParams` and `resolvedEnv` maps, exactly as KEDA does (keda-compat §8.1), through a
//!   [`resolve::ObjectLookup`] so that `jobtide validate` (documents) and the operator (caches)
//!   resolve identically.
//! - [`trigger`]: trigger metadata → typed configs (`kafka`, `apache-kafka`) with KEDA's parsing
//!   rules (keda-compat §6), and jobtide's `kafka-dispatch`. Nothing downstream sees a string map.
//! - [`validation`]: the ScaledJob-level rules KEDA's webhook and reconciler apply (§1.5, §2.2).
//! - [`crd`]: CRD generation and the structural-schema check.
//! - [`policy`]: a ScaledJob spec as `jobtide-core`'s decision inputs; [`facts`]: Jobs and
//!   Pods as `jobtide-core`'s facts.
//! - [`job`]: the Job the operator creates for a ScaledJob (labels, annotations, owner);
//!   [`delivery`]: in dispatch mode, the Job for one message and how the message reaches it.
//! - [`secret`]: [`secret::Secret`], a string whose `Debug`/`Display`/`Serialize` never show it.

pub mod auth;
pub mod crd;
pub mod delivery;
pub mod facts;
pub mod job;
pub mod policy;
pub mod resolve;
pub mod scaledjob;
pub mod secret;
pub mod trigger;
pub mod validation;

pub use auth::{ClusterTriggerAuthentication, TriggerAuthentication, TriggerAuthenticationSpec};
pub use scaledjob::{ScaledJob, ScaledJobSpec, ScaledJobStatus};
