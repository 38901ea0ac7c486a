//! jobtide's Kafka side: shared offset sources and KEDA's lag scaler over them.
//!
//! # Layout
//! - [`source`]: one librdkafka client per (brokers, credentials, isolation), shared by all
//!   triggers; batched Metadata / OffsetFetch / ListOffsets requests.
//! - [`scaler`]: KEDA's lag scaler (discovery, offsets, `jobtide-core`'s lag rules).
//! - [`problem`]: why a cluster can't be reached, from librdkafka's connection logs.
//! - [`dispatch`]: dispatch mode's consumer (assigned partitions, commits) and dead letters.
//! - [`tools`]: produce, consume (with commit) and topic creation for demos, tests and Jobs.
//! - [`client_config`]: a trigger's connection as librdkafka configuration (SASL, TLS).
//! - [`kerberos`]: GSSAPI tickets through a helper, never tenant text in a shell.
//! - [`ffi`]: the one reviewed `unsafe` module (admin ListConsumerGroupOffsets, mock cluster).

pub mod client_config;
pub mod dispatch;
pub mod ffi;
pub mod kerberos;
pub mod problem;
pub mod scaler;
pub mod source;
pub mod tools;
