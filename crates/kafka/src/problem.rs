//! Why a Kafka cluster can't be reached, from what librdkafka logs about its connections: a
//! measurement that ends without an answer says which of these it saw, not only that it timed
//! out (issue 18).
//!
//! librdkafka retries a failing broker by itself and never fails a request early because a
//! connection failed; the reason is only in its `FAIL` log lines, e.g.
//! `127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in
//! state CONNECT)`. The classification never repeats the line (it names brokers, which may come
//! from a Secret).

use std::fmt;

/// What went wrong reaching a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerProblem {
    /// Nothing listens at the address (TCP connection refused).
    ConnectionRefused,
    /// The host name doesn't resolve.
    UnknownHost,
    /// Something answered, but not in Kafka's protocol (an HTTP server, a TLS listener asked
    /// in plaintext, …).
    NotKafka,
    /// The TLS handshake failed (certificate, protocol, or a plaintext listener asked in TLS).
    Tls,
    /// SASL authentication failed.
    Authentication,
}

impl BrokerProblem {
    /// The problem a librdkafka log line or error reason describes, if it is one of these.
    pub fn of_librdkafka(message: &str) -> Option<Self> {
        let lower = message.to_ascii_lowercase();
        let has = |needle: &str| lower.contains(needle);
        if has("connection refused") {
            Some(Self::ConnectionRefused)
        } else if has("failed to resolve") {
            Some(Self::UnknownHost)
        } else if has("ssl handshake failed")
            || has("ssl_handshake")
            // The broker refused our certificate (or its absence) after the handshake:
            // TLS 1.2 and TLS 1.3 alerts.
            || has("alert bad certificate")
            || has("alert certificate required")
        {
            Some(Self::Tls)
        } else if has("sasl authentication error") || has("authentication failed") {
            Some(Self::Authentication)
        } else if has("timed out") {
            // A silent peer: the caller's own timeout says it.
            None
        } else if has("invalid response size")
            || has("protocol parse failure")
            || has("unknown corrid")
            || has("disconnected while requesting apiversion")
            || has("apiversionrequest failed")
        {
            Some(Self::NotKafka)
        } else {
            None
        }
    }

    /// Whether the cluster refused this client: authentication or TLS failed. Unlike a broker
    /// that is down or unknown, retrying with the same settings fails the same way.
    pub fn is_refusal(self) -> bool {
        matches!(self, Self::Tls | Self::Authentication)
    }

    /// A bounded label for metrics.
    pub fn category(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection_refused",
            Self::UnknownHost => "unknown_host",
            Self::NotKafka => "not_kafka",
            Self::Tls => "tls",
            Self::Authentication => "authentication",
        }
    }
}

impl fmt::Display for BrokerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ConnectionRefused => {
                "connection refused: nothing listens at a bootstrap server's address"
            }
            Self::UnknownHost => "a bootstrap server's host name does not resolve",
            Self::NotKafka => {
                "not a Kafka broker: a bootstrap server answered, but not in Kafka's protocol \
                 (another service, or a TLS listener asked without tls: enable)"
            }
            Self::Tls => "the TLS handshake with a broker failed",
            Self::Authentication => "SASL authentication with a broker failed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafkas_failures_are_told_apart() {
        let cases = [
            (
                "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused \
                 (after 0ms in state CONNECT)",
                Some(BrokerProblem::ConnectionRefused),
            ),
            (
                "127.0.0.1:39099/bootstrap: Receive failed: Invalid response size 1213486160 \
                 (0..100000000): increase receive.message.max.bytes (after 0ms in state \
                 APIVERSION_QUERY)",
                Some(BrokerProblem::NotKafka),
            ),
            (
                "b:9092/bootstrap: Disconnected while requesting ApiVersion: might be caused by \
                 incorrect security.protocol configuration (connecting to a SSL listener?) or \
                 broker version is < 0.10 (see api.version.request) (after 1ms in state \
                 APIVERSION_QUERY)",
                Some(BrokerProblem::NotKafka),
            ),
            (
                "nohost:9092/bootstrap: Failed to resolve 'nohost:9092': Name or service not \
                 known (after 2ms in state CONNECT)",
                Some(BrokerProblem::UnknownHost),
            ),
            (
                "b:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate \
                 verify failed",
                Some(BrokerProblem::Tls),
            ),
            (
                "b:9093/1: Receive failed: SSL transport error: error:0A000412:SSL \
                 routines::sslv3 alert bad certificate: SSL alert number 42",
                Some(BrokerProblem::Tls),
            ),
            (
                "b:9093/1: Receive failed: SSL transport error: error:0A00045C:SSL \
                 routines::tlsv13 alert certificate required: SSL alert number 116",
                Some(BrokerProblem::Tls),
            ),
            (
                "b:9092/1: SASL authentication error: Authentication failed: Invalid username or \
                 password (after 3ms in state AUTH_REQ)",
                Some(BrokerProblem::Authentication),
            ),
            (
                "b:9092/1: Connection setup timed out in state CONNECT",
                None,
            ),
            (
                "b:9092/bootstrap: ApiVersionRequest failed: Local: Timed out: probably due to \
                 broker version < 0.10 (see api.version.request configuration)",
                None,
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(BrokerProblem::of_librdkafka(line), expected, "{line}");
        }
    }
}
