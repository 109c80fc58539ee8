//! Assertions on the `chatvault` binary's output, shared by the CLI tests.

use std::path::PathBuf;
use std::process::Output;

/// Asserts the command succeeded; returns its stdout.
pub fn succeeded(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Asserts the command exited with `code` and said `message` on stderr.
pub fn failed_with(out: Output, code: i32, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in: {stderr}"
    );
}

/// The passphrase the tests' vaults are created with.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub const PASSPHRASE: &str = "correct horse battery staple";

/// A temporary folder holding one test's server, replicas, config and data;
/// each test binary adds the command builders it needs in its own `impl`.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub struct Setup {
    /// The folder, removed when the test ends.
    pub dir: tempfile::TempDir,
}

#[allow(dead_code)] // not every test binary that shares this module uses it
impl Setup {
    /// A fresh temporary folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// `name` inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
