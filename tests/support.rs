//! Shared by the end-to-end tests: finding the built binaries and running them with a bound,
//! so that no test can hang on a process that never ends.

pub mod kube_bed;
pub mod network_policy;

use fixtures::process::{Echo, Process};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A binary of this workspace, built by `cargo build --bins` into the same target dir as the
/// test (cargo xtask test builds them first).
pub fn binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("a test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --bins` first (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// A command for one of the binaries with none of its env vars inherited from the caller.
pub fn command(name: &str, env_prefix: &str) -> Command {
    let mut command = Command::new(binary(name));
    for (key, _) in std::env::vars() {
        if key.starts_with(env_prefix) {
            command.env_remove(key);
        }
    }
    command
}

/// The result of a finished run.
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Everything the process said, for assertion messages.
    pub fn said(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// zk-wait's summary row for `server` (its table on stdout); fails the test when missing.
    pub fn row(&self, server: &str) -> &str {
        self.stdout
            .lines()
            .find(|line| line.starts_with(server))
            .unwrap_or_else(|| panic!("no row for {server}:\n{}", self.said()))
    }
}

/// Runs `command` to its end; a run longer than `limit` fails the test with its output.
pub fn run(name: &str, command: Command, limit: Duration) -> Finished {
    let mut process = Process::spawn(name, command, Echo::Quiet).expect("the binary starts");
    let status = process.expect_exit(limit);
    Finished {
        code: status.code(),
        stdout: process.stdout(),
        stderr: process.stderr(),
    }
}

/// Runs promtool (Debian's `prometheus` package, which `cargo xtask test` installs) in `dir`
/// with `stdin` as its input; its output, or a panic naming what it refused.
pub fn promtool(args: &[&str], dir: &std::path::Path, stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "promtool does not run ({error}): `cargo xtask test` installs Debian's prometheus"
            )
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("promtool reads its input");
    let output = child.wait_with_output().expect("promtool finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}
