//! The built binary allocates with jemalloc and its compiled-in options (src/allocator.rs):
//! jemalloc prints its statistics at exit when `MALLOC_CONF` asks it to, and they show the
//! options in effect.

#![allow(clippy::expect_used)] // a failure is the test failing

use assert_cmd::Command;

#[test]
fn the_binary_runs_on_jemalloc_with_its_compiled_in_options() {
    let output = Command::cargo_bin("jobtide")
        .expect("the jobtide binary")
        .arg("--version")
        .env("MALLOC_CONF", "stats_print:true")
        .output()
        .expect("jobtide runs");
    assert!(output.status.success());
    let stats = String::from_utf8_lossy(&output.stderr);
    assert!(stats.contains("Begin jemalloc statistics"), "{stats}");
    let option = |name: &str| {
        stats
            .lines()
            .find_map(|line| line.trim().strip_prefix(&format!("opt.{name}: ")))
            // "opt.background_thread: true (background_thread: true)": the value in effect first.
            .and_then(|value| value.split_whitespace().next())
            .map(str::to_owned)
    };
    assert_eq!(option("narenas").as_deref(), Some("2"), "{stats}");
    assert_eq!(
        option("background_thread").as_deref(),
        Some("true"),
        "{stats}"
    );
}
