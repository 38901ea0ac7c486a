//! The node pool's shape, as `jobtide dev --node-pool` writes it:
//! `min=0,max=4,cpu=4,memory=8Gi,pods=4,delay=10s,scale-down-after=60s` — comma-separated
//! `key=value` parts, each at most once; `max` is required, the rest have defaults. Parsed once
//! at the edge into a [`NodePool`]; an error names the part that is wrong.

use std::time::Duration;

use crate::node::Resources;

/// A simulated node group: identical nodes of one shape, between `min` and `max` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePool {
    /// The node group's name (in the autoscaler's messages and the nodes' names).
    pub name: String,
    /// Nodes kept at all times (started at once).
    pub min: u32,
    /// Nodes at most.
    pub max: u32,
    /// What each node offers.
    pub shape: Resources,
    /// From a scale-up decision to the Node being registered and Ready (a cloud's boot time).
    pub delay: Duration,
    /// How long a pool node stays empty before it is removed (`None`: never; the real Cluster
    /// Autoscaler's `--scale-down-unneeded-time` is 10 minutes).
    pub scale_down_after: Option<Duration>,
}

/// The group name unless the spec sets `name=`.
pub const DEFAULT_NAME: &str = "jobtide-pool";

impl Default for NodePool {
    /// One to five nodes of 4 CPUs, 8 GiB and 8 pods each, 10 s to boot, never scaled down.
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.to_owned(),
            min: 0,
            max: 5,
            shape: Resources {
                cpu_millis: 4_000,
                memory_bytes: 8 << 30,
                pods: 8,
            },
            delay: Duration::from_secs(10),
            scale_down_after: None,
        }
    }
}

/// Why a `--node-pool` spec was refused: the part, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node pool {part:?}: {problem}")]
pub struct PoolSpecError {
    /// The part as written (`cpu=four`), or the whole spec when no part is to blame.
    pub part: String,
    /// What is wrong.
    pub problem: String,
}

fn error(part: &str, problem: impl Into<String>) -> PoolSpecError {
    PoolSpecError {
        part: part.to_owned(),
        problem: problem.into(),
    }
}

fn duration(part: &str, value: &str) -> Result<Duration, PoolSpecError> {
    let signed: jiff::SignedDuration = value
        .parse()
        .map_err(|_| error(part, "not a duration (write e.g. 500ms, 10s, 2m)"))?;
    Duration::try_from(signed).map_err(|_| error(part, "a negative duration"))
}

fn count(part: &str, value: &str) -> Result<u32, PoolSpecError> {
    value
        .parse()
        .map_err(|_| error(part, "not a whole number of nodes"))
}

impl std::str::FromStr for NodePool {
    type Err = PoolSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut pool = Self::default();
        let mut seen: Vec<&str> = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(error(
                    part,
                    "not key=value (keys: name, min, max, cpu, memory, pods, delay, scale-down-after)",
                ));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(error(part, format!("{key} is given twice")));
            }
            seen.push(key);
            match key {
                "name" => {
                    let valid = !value.is_empty()
                        && value.len() <= 40
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !value.starts_with('-')
                        && !value.ends_with('-');
                    if !valid {
                        return Err(error(
                            part,
                            "not a DNS label of at most 40 characters (a-z, 0-9, -)",
                        ));
                    }
                    value.clone_into(&mut pool.name);
                }
                "min" => pool.min = count(part, value)?,
                "max" => pool.max = count(part, value)?,
                "cpu" => {
                    pool.shape.cpu_millis = crate::node::cpu_millis(value)
                        .filter(|m| *m > 0)
                        .ok_or_else(|| error(part, "not a positive cpu quantity (4, 500m)"))?;
                }
                "memory" => {
                    pool.shape.memory_bytes = crate::node::bytes(value)
                        .filter(|b| *b > 0)
                        .ok_or_else(|| {
                            error(part, "not a positive memory quantity (8Gi, 512Mi)")
                        })?;
                }
                "pods" => {
                    pool.shape.pods = value
                        .parse()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| error(part, "not a positive number of pods"))?;
                }
                "delay" => pool.delay = duration(part, value)?,
                "scale-down-after" => pool.scale_down_after = Some(duration(part, value)?),
                other => {
                    return Err(error(
                        part,
                        format!(
                            "unknown key {other:?} (keys: name, min, max, cpu, memory, pods, delay, scale-down-after)"
                        ),
                    ));
                }
            }
        }
        if !seen.contains(&"max") {
            return Err(error(spec, "max=N is required"));
        }
        if pool.min > pool.max {
            return Err(error(
                spec,
                format!("min={} is above max={}", pool.min, pool.max),
            ));
        }
        if pool.max > MAX_NODES {
            return Err(error(
                spec,
                format!(
                    "max={} is above {MAX_NODES} (each node is a node agent in this process)",
                    pool.max
                ),
            ));
        }
        Ok(pool)
    }
}

/// The most nodes a pool may have: each is a node agent with its own watch and heartbeats.
pub const MAX_NODES: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_spec_becomes_a_typed_pool() {
        let pool: NodePool = "min=1,max=5,cpu=4,memory=8Gi,pods=4,delay=10s,scale-down-after=1m"
            .parse()
            .unwrap();
        assert_eq!(
            pool,
            NodePool {
                name: DEFAULT_NAME.to_owned(),
                min: 1,
                max: 5,
                shape: Resources {
                    cpu_millis: 4_000,
                    memory_bytes: 8 << 30,
                    pods: 4
                },
                delay: Duration::from_secs(10),
                scale_down_after: Some(Duration::from_mins(1)),
            }
        );
        let small: NodePool = "max=2, cpu=500m, delay=250ms, name=gpu-pool"
            .parse()
            .unwrap();
        assert_eq!(small.shape.cpu_millis, 500);
        assert_eq!(small.delay, Duration::from_millis(250));
        assert_eq!(small.name, "gpu-pool");
    }

    #[test]
    fn a_wrong_part_is_named_in_the_error() {
        let cases = [
            ("max=5,cpu=four", "cpu=four", "cpu quantity"),
            ("max=5,memory=-1Gi", "memory=-1Gi", "memory quantity"),
            ("max=five", "max=five", "whole number"),
            ("max=5,delay=soon", "delay=soon", "duration"),
            ("max=5,pods=0", "pods=0", "positive number of pods"),
            ("max=5,colour=blue", "colour=blue", "unknown key"),
            ("max=5,max=6", "max=6", "twice"),
            ("max=5,gpu", "gpu", "key=value"),
            ("max=5,name=Big_Pool", "name=Big_Pool", "DNS label"),
            ("min=1", "min=1", "max=N is required"),
            ("min=3,max=2", "min=3,max=2", "above max"),
            ("max=1000", "max=1000", "above 100"),
        ];
        for (spec, part, problem) in cases {
            let err = spec.parse::<NodePool>().unwrap_err();
            assert_eq!(err.part, part, "{spec}");
            assert!(err.to_string().contains(problem), "{spec}: {err}");
        }
    }
}
