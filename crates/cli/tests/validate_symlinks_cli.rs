//! `jobtide validate -R` over directories with symbolic links (issue 18): each real file is read
//! once, whatever links lead to it, and a directory link back into the tree is not a loop. The
//! built binary runs with a bounded wait: a walk that never ends fails the test.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers: a failure is the test failing

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn seed() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed-scaledjob.yaml"),
    )
    .unwrap()
}

/// `jobtide validate -R -f DIR -o json`, killed after 30 s; returns the files the report names.
fn validated_files(dir: &Path) -> Vec<String> {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("jobtide"))
        .args(["validate", "-R", "-o", "json", "-f"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Read stdout on a thread so a large report can't block the child on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.code() == Some(0), "validate failed: {status}");
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`jobtide validate -R -f {}` still running after 30 s",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let report: Value = serde_json::from_str(&reader.join().unwrap()).unwrap();
    report["scaledJobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sj| sj["file"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_directory_link_back_to_its_parent_reads_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), seed()).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    symlink("..", dir.path().join("sub/up")).unwrap();
    let files = validated_files(dir.path());
    assert_eq!(
        files.len(),
        1,
        "{} reports, the first {:?}",
        files.len(),
        files.first()
    );
    assert_eq!(files, vec![dir.path().join("a.yaml").display().to_string()]);
}

#[test]
fn two_directory_loops_end_and_read_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), seed()).unwrap();
    for sub in ["x", "y"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        symlink("..", dir.path().join(sub).join("up")).unwrap();
    }
    symlink(".", dir.path().join("self")).unwrap();
    let files = validated_files(dir.path());
    assert_eq!(
        files.len(),
        1,
        "{} reports, the first {:?}",
        files.len(),
        files.first()
    );
    assert_eq!(files, vec![dir.path().join("a.yaml").display().to_string()]);
}

#[test]
fn a_file_reached_through_several_links_is_read_once_and_outside_trees_are_still_followed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    let other = root.path().join("other");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::create_dir(&other).unwrap();
    std::fs::write(dir.join("a.yaml"), seed()).unwrap();
    symlink("a.yaml", dir.join("b.yaml")).unwrap();
    symlink("../a.yaml", dir.join("nested/c.yml")).unwrap();
    std::fs::write(
        other.join("d.yaml"),
        seed().replace("name: kafka-scaledjob", "name: other"),
    )
    .unwrap();
    symlink(&other, dir.join("linked")).unwrap();
    symlink(&other, dir.join("linked-again")).unwrap();
    let files = validated_files(&dir);
    assert_eq!(
        files,
        vec![
            dir.join("a.yaml").display().to_string(),
            dir.join("linked/d.yaml").display().to_string(),
        ]
    );
}
