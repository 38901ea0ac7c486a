//! Which real peers the tests ran against: `scripts/test` sets `JOBTIDE_PEERS_FILE` and prints
//! the lines the tests append (`real peers: Apache Kafka 4.4.0 (KRaft), tansu 0.6.0`).

use std::io::Write as _;

/// Records that the tests run against `peer` (e.g. `tansu 0.6.0`), when `JOBTIDE_PEERS_FILE` is
/// set.
pub fn record(peer: &str) {
    let Some(path) = std::env::var_os("JOBTIDE_PEERS_FILE") else {
        return;
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{peer}");
    }
}
