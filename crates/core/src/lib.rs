//! jobtide's domain, kept pure: no Kubernetes client, no Kafka client, no network, no clock.
//!
//! # Layout
//! - [`kafka`]: the lag policy of a Kafka trigger (what the lag arithmetic needs to know about a
//!   trigger), as plain values. The `api` crate parses trigger metadata into these types; the lag
//!   arithmetic that consumes them arrives with the Kafka scaler.
//!
//! Everything here is deterministic: the same inputs always give the same outputs.

pub mod kafka;
