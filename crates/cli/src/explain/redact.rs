//! Keeping values from Secrets out of `explain`'s measurements: a trigger's topic, consumer group
//! or brokers may come from a TriggerAuthentication or a Secret-backed env var, and the Kafka
//! client's errors and the partition table repeat them.

use std::collections::BTreeSet;

use jobtide_api::secret::REDACTED;
use jobtide_api::trigger::TriggerConfig;

/// The values of `config` that came from the authentication or the env (`from_secrets`, by
/// parameter) and that a measurement may repeat.
#[derive(Debug, Default)]
pub(super) struct Hidden(Vec<String>);

impl Hidden {
    pub(super) fn of(config: &TriggerConfig, from_secrets: &BTreeSet<String>) -> Self {
        let hidden = |parameter: &str| from_secrets.contains(parameter);
        let mut values = Vec::new();
        let (servers, group, topics) = match config {
            TriggerConfig::Kafka(kafka) => (
                &kafka.connection.bootstrap_servers,
                &kafka.consumer_group,
                kafka.topic.iter().cloned().collect::<Vec<_>>(),
            ),
            TriggerConfig::ApacheKafka(apache) => (
                &apache.connection.bootstrap_servers,
                &apache.consumer_group,
                apache.topics.clone(),
            ),
            TriggerConfig::KafkaDispatch(dispatch) => (
                &dispatch.connection.bootstrap_servers,
                &dispatch.consumer_group,
                vec![dispatch.topic.clone()],
            ),
        };
        if hidden("bootstrapServers") {
            values.extend(servers.iter().cloned());
            values.push(servers.join(","));
        }
        if hidden("consumerGroup") {
            values.push(group.clone());
        }
        if hidden("topic") {
            values.extend(topics);
        }
        values.retain(|v| !v.is_empty());
        // Longest first, so a value containing another is replaced whole.
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self(values)
    }

    /// `text` with every hidden value replaced by `<redacted>`.
    pub(super) fn scrub(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_owned(), |text, value| text.replace(value, REDACTED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_values_are_replaced_before_the_values_they_contain() {
        let hidden = Hidden(vec!["orders-eu".into(), "orders".into()]);
        assert_eq!(
            hidden.scrub("topic 'orders-eu' and 'orders'"),
            "topic '<redacted>' and '<redacted>'"
        );
    }
}
