//! Executable scripts written by a test and then run by it.
//!
//! Writing a script with `std::fs::write` and running it at once fails now and then with
//! `ETXTBSY` ("Text file busy") when another test thread of the same process forks at that
//! moment: the child holds a copy of the still-open write descriptor until it execs. The file
//! is written here by a `sh` child instead, so no descriptor for writing it ever lives in the
//! test process.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Writes `text` to `path` as an executable (mode 0755) file, from a child process.
///
/// # Panics
/// When `sh` cannot be started or fails to write the file: the test fails.
pub fn write_executable(path: &Path, text: &str) {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("cat > \"$1\" && chmod 755 \"$1\"")
        .arg("write_executable")
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("script text reaches sh");
    let status = child.wait().expect("sh finishes");
    assert!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_runs_with_its_exact_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("it's a \"script\"");
        write_executable(&path, "#!/bin/sh\nprintf '%s' \"$1\"\n");
        let out = Command::new(&path).arg("a b").output().expect("runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b");
    }
}
