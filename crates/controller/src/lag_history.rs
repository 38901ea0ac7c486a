//! Lag per partition over the last minutes, as the operator measured it: what `jobtide dev`'s
//! live page draws. Kept only when [`crate::Config::lag_history`] is on (dev mode), in the
//! ScaledJob's own state (so it goes with the ScaledJob).
//!
//! # Bounds
//! One sample per partition per poll, at most one a second (a re-poll within [`MIN_SPACING`]
//! replaces the last sample), for the last [`WINDOW`]: at most 601 samples per partition, for
//! at most [`MAX_PARTITIONS`] partitions per ScaledJob (more are not drawn). So the memory is
//! bounded by ScaledJobs × min(partitions, 128) × 601 samples × 16 bytes: about 1.2 MB for a
//! ScaledJob on a 128-partition topic, 9.6 kB per partition.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

/// How far back the history goes.
pub const WINDOW: Duration = Duration::from_mins(10);
/// Samples closer together than this replace each other (event-driven re-polls).
pub const MIN_SPACING: Duration = Duration::from_secs(1);
/// Partitions kept per ScaledJob.
pub const MAX_PARTITIONS: usize = 128;

/// One measurement of one partition's lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LagSample {
    /// When (milliseconds since the Unix epoch).
    pub at: i64,
    /// The partition's lag then (the scaler's, persistent lag included).
    pub lag: i64,
}

/// One partition's samples, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionSeries {
    /// The trigger's index in the ScaledJob.
    pub trigger: usize,
    pub topic: String,
    pub partition: i32,
    pub samples: Vec<LagSample>,
}

/// A ScaledJob's lag history, for the page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScaledJobLag {
    pub namespace: String,
    pub name: String,
    pub partitions: Vec<PartitionSeries>,
}

/// One ScaledJob's samples by (trigger, topic, partition).
#[derive(Debug, Default)]
pub(crate) struct LagHistory {
    series: BTreeMap<(usize, String, i32), VecDeque<LagSample>>,
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl LagHistory {
    /// Records trigger `trigger`'s measurement at `now`: `(topic, partition, lag)` each.
    pub fn record<'a>(
        &mut self,
        trigger: usize,
        now: SystemTime,
        partitions: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) {
        let at = millis(now);
        let spacing = i64::try_from(MIN_SPACING.as_millis()).unwrap_or(i64::MAX);
        for (topic, partition, lag) in partitions {
            let key = (trigger, topic.to_owned(), partition);
            if !self.series.contains_key(&key) && self.series.len() >= MAX_PARTITIONS {
                continue;
            }
            let samples = self.series.entry(key).or_default();
            if samples.back().is_some_and(|last| at - last.at < spacing) {
                samples.pop_back();
            }
            samples.push_back(LagSample { at, lag });
        }
        self.expire(at);
    }

    /// Drops samples older than [`WINDOW`] before `now`, and partitions left with none.
    fn expire(&mut self, now: i64) {
        let oldest = now - i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX);
        for samples in self.series.values_mut() {
            while samples.front().is_some_and(|s| s.at < oldest) {
                samples.pop_front();
            }
        }
        self.series.retain(|_, samples| !samples.is_empty());
    }

    /// The series, by trigger, topic and partition.
    pub fn series(&self) -> Vec<PartitionSeries> {
        self.series
            .iter()
            .map(|((trigger, topic, partition), samples)| PartitionSeries {
                trigger: *trigger,
                topic: topic.clone(),
                partition: *partition,
                samples: samples.iter().copied().collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + seconds)
    }

    fn lags(history: &LagHistory, partition: i32) -> Vec<i64> {
        history
            .series()
            .into_iter()
            .find(|s| s.partition == partition)
            .map(|s| s.samples.iter().map(|s| s.lag).collect())
            .unwrap_or_default()
    }

    #[test]
    fn each_poll_adds_one_sample_per_partition() {
        let mut history = LagHistory::default();
        history.record(0, at(0), [("orders", 0, 5), ("orders", 1, 7)]);
        history.record(0, at(10), [("orders", 0, 3), ("orders", 1, 9)]);
        assert_eq!(lags(&history, 0), [5, 3]);
        assert_eq!(lags(&history, 1), [7, 9]);
    }

    #[test]
    fn a_re_poll_within_a_second_replaces_the_last_sample() {
        let mut history = LagHistory::default();
        history.record(0, at(0), [("orders", 0, 5)]);
        history.record(0, at(0) + Duration::from_millis(400), [("orders", 0, 4)]);
        assert_eq!(lags(&history, 0), [4]);
    }

    #[test]
    fn samples_older_than_the_window_are_dropped() {
        let mut history = LagHistory::default();
        history.record(0, at(0), [("orders", 0, 5), ("orders", 1, 1)]);
        history.record(0, at(300), [("orders", 0, 4)]);
        history.record(0, at(601), [("orders", 0, 3)]);
        assert_eq!(lags(&history, 0), [4, 3]);
        assert!(
            lags(&history, 1).is_empty(),
            "a partition with no sample left goes"
        );
        assert_eq!(history.series().len(), 1);
    }

    #[test]
    fn a_partition_beyond_the_bound_is_not_kept() {
        let mut history = LagHistory::default();
        let topics: Vec<(String, i32)> = (0..=MAX_PARTITIONS)
            .map(|p| ("big".to_owned(), i32::try_from(p).unwrap()))
            .collect();
        history.record(0, at(0), topics.iter().map(|(t, p)| (t.as_str(), *p, 1)));
        assert_eq!(history.series().len(), MAX_PARTITIONS);
    }

    #[test]
    fn a_partition_keeps_at_most_one_sample_a_second_for_the_window() {
        let mut history = LagHistory::default();
        for second in 0..2_000 {
            history.record(0, at(second), [("orders", 0, 1)]);
        }
        let kept = lags(&history, 0).len();
        assert_eq!(
            kept, 601,
            "600 s of one sample a second, both ends included"
        );
    }
}
