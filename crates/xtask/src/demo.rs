//! `cargo xtask demo`: the project working on this machine with real servers, narrated. zk-wait
//! holds a JobManager "pod" until a real 3-member ZooKeeper ensemble serves (a lone member says
//! imok but serves nothing); a real Flink JobManager in ZooKeeper HA mode advertises the
//! Service's address while binding random ports on its pod address; a real TaskManager cannot
//! register through the Service until port-sync makes the Service follow those ports; a job runs
//! to completion; and after a JobManager restart on new ports everything follows again.
//!
//! The steps live in `testbed::scenario`, which the CI test `tests/demo.rs` runs too.

use crate::install;
use crate::run::{Result, cargo, step, workspace_root};
use std::path::PathBuf;
use testbed::process::stop_children_on_signal;
use testbed::scenario::{self, ScenarioConfig};

pub fn run() -> Result {
    stop_children_on_signal();
    install::debian_packages(&[install::ZOOKEEPER, install::JDK])?;
    install::flink()?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "zk-wait", "-p", "port-sync"]);
    step("build zk-wait and port-sync", build)?;
    let release = target_dir().join("release");

    let config = ScenarioConfig::new(&release.join("zk-wait"), &release.join("port-sync"));
    let report = scenario::run(config)?;
    eprintln!("\nSummary:");
    for line in report.summary() {
        eprintln!("  - {line}");
    }
    eprintln!("\ndemo: done");
    Ok(())
}

/// Where cargo puts the binaries: `CARGO_TARGET_DIR` when set (cargo passes it on to xtask),
/// else the workspace's `target/`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || workspace_root().join("target"),
        |dir| {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        },
    )
}
