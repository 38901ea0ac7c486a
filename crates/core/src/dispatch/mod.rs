//! Dispatch mode (beyond KEDA): jobtide consumes the topic itself and creates exactly one Job
//! per message.
pub mod name;
