//! Real peers for the tests: programs the project does not write, installed by the repo's scripts
//! and started by the tests on loopback.
//!
//! - [`kafka`]: Apache Kafka (KRaft), from the jars `scripts/install-peers` installs
//!   (`JOBTIDE_KAFKA_HOME`).
//! - [`peers`]: which real peers a test run used (`scripts/test` prints them).
//!
//! Without its install a peer's tests skip with a printed reason; under `CI=true` they fail.

#![allow(clippy::expect_used, clippy::panic, clippy::missing_panics_doc)] // test harness: a failure is the test failing

pub mod kafka;
pub mod peers;
