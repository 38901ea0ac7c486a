//! Deadlines for every Kubernetes API call a command makes. kube's defaults wait for a response
//! forever (`read_timeout: None`), so an API server that accepts connections and never answers
//! would hang `jobtide explain --server …` and stall the operator's calls.

use std::time::Duration;

/// How long connecting and each read or write of a Kubernetes API call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Establishing the connection (TCP and TLS).
    pub connect: Duration,
    /// Waiting for the next bytes of a response, or writing the request.
    pub read: Duration,
}

impl Deadlines {
    /// For the long-running commands (`operator`, `dev`), whose watches stay open: a watch
    /// may be idle until kube-runtime's watcher gives up on it (its 290 s server-side timeout
    /// plus a 5 s margin) and reconnects, so reads may take a little longer than that.
    pub const LONG_RUNNING: Self = Self {
        connect: Duration::from_secs(10),
        read: Duration::from_mins(5),
    };

    /// For one-shot commands, whose calls the command itself bounds by `timeout` (and then
    /// says what timed out): the client's own deadlines are a backstop a second later, so that
    /// the command's clear message wins the race rather than the transport's `SendRequest`.
    pub const fn one_shot(timeout: Duration) -> Self {
        let backstop = timeout.saturating_add(Duration::from_secs(1));
        Self {
            connect: backstop,
            read: backstop,
        }
    }

    /// `config` with these deadlines; the read deadline counts from when a request was sent,
    /// not from when its pooled connection went idle.
    pub fn apply(self, mut config: kube::Config) -> kube::Config {
        config.connect_timeout = Some(self.connect);
        config.read_timeout = Some(self.read);
        config.write_timeout = Some(self.read);
        config.reset_reader_on_write = true;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_running_reads_outlast_an_idle_watch() {
        // kube-runtime reconnects an idle watch after 290 s + 5 s: the client must not fail the
        // read first.
        assert!(Deadlines::LONG_RUNNING.read > Duration::from_secs(295));
    }

    #[test]
    fn every_deadline_is_set_on_the_config() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let config = Deadlines::one_shot(Duration::from_secs(3)).apply(config);
        assert_eq!(config.connect_timeout, Some(Duration::from_secs(4)));
        assert_eq!(config.read_timeout, Some(Duration::from_secs(4)));
        assert_eq!(config.write_timeout, Some(Duration::from_secs(4)));
        assert!(config.reset_reader_on_write);
    }
}
