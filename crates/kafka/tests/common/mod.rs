//! Shared test harnesses.

pub mod apache_kafka;
pub mod peers;
