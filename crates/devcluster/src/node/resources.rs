//! What a node offers and what a pod asks for: cpu, memory and pods, with the Kubernetes
//! quantity notation (`500m`, `1.5`, `128Mi`, `1G`, `2e3`) read as the API writes it.

use std::collections::BTreeMap;

use serde_json::Value;

/// What a node offers: its capacity, all of it allocatable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Pods at once.
    pub pods: u64,
}

impl Resources {
    /// As Node `status.capacity` writes them (`cpu: 2000m`, `memory: 4096Mi`, `pods: 8`).
    pub fn quantities(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("cpu".to_owned(), format!("{}m", self.cpu_millis)),
            (
                "memory".to_owned(),
                format!("{}Ki", self.memory_bytes / 1024),
            ),
            ("pods".to_owned(), self.pods.to_string()),
        ])
    }
}

impl Default for Resources {
    /// 8 pods (the runner's default `max_parallel_pods`), 8 CPUs, 16 GiB.
    fn default() -> Self {
        Self {
            cpu_millis: 8_000,
            memory_bytes: 16 << 30,
            pods: 8,
        }
    }
}

impl Resources {
    /// Nothing.
    pub const ZERO: Self = Self {
        cpu_millis: 0,
        memory_bytes: 0,
        pods: 0,
    };

    /// The sum.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            pods: self.pods.saturating_add(other.pods),
        }
    }

    /// Whether every amount is within `limit`'s.
    pub fn fits_in(&self, limit: &Self) -> bool {
        self.cpu_millis <= limit.cpu_millis
            && self.memory_bytes <= limit.memory_bytes
            && self.pods <= limit.pods
    }

    /// What a pod asks for: one pod and its containers' `resources.requests` summed (a request
    /// that doesn't parse counts as none, as the API server would have refused it).
    pub fn requested_by(pod: &Value) -> Self {
        let mut total = Self {
            pods: 1,
            ..Self::ZERO
        };
        for container in pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let requests = &container["resources"]["requests"];
            total.cpu_millis = total
                .cpu_millis
                .saturating_add(requests["cpu"].as_str().and_then(cpu_millis).unwrap_or(0));
            total.memory_bytes = total
                .memory_bytes
                .saturating_add(requests["memory"].as_str().and_then(bytes).unwrap_or(0));
        }
        total
    }

    /// A Node's `status.allocatable` (missing amounts: none).
    pub fn allocatable_of(node: &Value) -> Self {
        let allocatable = &node["status"]["allocatable"];
        Self {
            cpu_millis: allocatable["cpu"]
                .as_str()
                .and_then(cpu_millis)
                .unwrap_or(0),
            memory_bytes: allocatable["memory"].as_str().and_then(bytes).unwrap_or(0),
            pods: allocatable["pods"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// A quantity as a number and its suffix's multiplier.
fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Ei" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * scale)
}

/// A cpu quantity in millicores (rounded up, as the API server does).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, ≥ 0, saturating
pub fn cpu_millis(text: &str) -> Option<u64> {
    quantity(text).map(|cores| (cores * 1000.0).ceil() as u64)
}

/// A memory quantity in bytes (rounded up).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, ≥ 0, saturating
pub fn bytes(text: &str) -> Option<u64> {
    quantity(text).map(|b| b.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn quantities_are_read_as_the_api_writes_them() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(bytes("128Mi"), Some(128 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("2e3"), Some(2000));
        assert_eq!(bytes("12Qi"), None);
        assert_eq!(bytes("-1"), None);
    }

    #[test]
    fn a_pod_asks_for_its_containers_requests_and_a_place() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
            {"resources": {"requests": {"cpu": "1"}}},
            {}]}});
        assert_eq!(
            Resources::requested_by(&pod),
            Resources {
                cpu_millis: 1250,
                memory_bytes: 64 << 20,
                pods: 1
            }
        );
        let node = json!({"status": {"allocatable": Resources::default().quantities()}});
        assert_eq!(Resources::allocatable_of(&node), Resources::default());
    }
}
