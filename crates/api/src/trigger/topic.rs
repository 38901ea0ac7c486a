//! Kafka's topic name rules, checked for every trigger type: KEDA accepts any text as a topic,
//! but a topic Kafka can't have is a trigger that can never measure anything (or, for
//! `kafka-dispatch`, a dispatcher that can never start).

use super::ParamError;

/// Kafka's longest topic name (`Topic.MAX_NAME_LENGTH`).
pub const MAX_TOPIC_LEN: usize = 249;

/// Kafka's topic name rules: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`. The message names
/// `parameter` and never repeats the value (it may come from a Secret).
pub fn check_topic_name(parameter: &str, name: &str) -> Result<(), ParamError> {
    let legal = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.len() > MAX_TOPIC_LEN || !legal || name == "." || name == ".." {
        return Err(ParamError::new(
            parameter,
            format!(
                "{parameter} must be a Kafka topic name: at most {MAX_TOPIC_LEN} of the \
                 characters a-z, A-Z, 0-9, '.', '_' and '-', and not '.' or '..'"
            ),
        ));
    }
    Ok(())
}
