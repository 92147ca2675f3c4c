//! `cargo xtask soak`: port-sync (release build) against a real Flink JobManager and the API
//! stand-in while a seeded schedule injects every fault the stand-in knows and restarts the
//! JobManager; prints the figures and fails on a lost update, a wrong write, a 401, growth of
//! RSS or open descriptors, or port-sync exiting. The work is in `drills::soak`.

use crate::install;
use crate::run::{Result, cargo, step, target_dir};
use drills::soak::{self, SoakConfig};
use fixtures::process::stop_children_on_signal;
use std::path::Path;
use std::time::Duration;

/// `binary`: soak this port-sync instead of building the release one.
pub fn run(minutes: u64, seed: u64, json: Option<&Path>, binary: Option<&Path>) -> Result {
    stop_children_on_signal();
    install::debian_packages(&[install::ZOOKEEPER])?;
    install::flink()?;
    let binary = match binary {
        Some(binary) => binary.to_path_buf(),
        None => {
            let mut build = cargo();
            build.args(["build", "--release", "-p", "port-sync"]);
            step("build port-sync (release)", build)?;
            target_dir().join("release/port-sync")
        }
    };

    eprintln!(
        "==> soak: {minutes} min, seed {seed} (replay with `cargo xtask soak --minutes {minutes} --seed {seed}`)"
    );
    let config = SoakConfig::new(Duration::from_secs(minutes * 60), seed, binary);
    let report = soak::run(&config)?;
    eprintln!("\nsoak: the times the Service was wrong:");
    for line in report.interval_lines() {
        eprintln!("  {line}");
    }
    println!(
        "\nport-sync fault soak (real Flink {}, ZooKeeper HA, API stand-in)\n",
        config.flink_version
    );
    println!("| figure | value |\n|---|---|");
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json_text(&report);
        std::fs::write(path, text).map_err(|error| format!("write {}: {error}", path.display()))?;
        eprintln!("==> soak: figures written to {}", path.display());
    }
    let failures = report.failures();
    if failures.is_empty() {
        eprintln!("==> soak: passed (seed {seed})");
        Ok(())
    } else {
        eprintln!(
            "==> soak: the end of port-sync's log:\n{}",
            report.port_sync_log_tail
        );
        Err(format!(
            "the soak failed (seed {seed}; replay with `cargo xtask soak --minutes {minutes} --seed {seed}`):\n  - {}",
            failures.join("\n  - ")
        ))
    }
}

fn serde_json_text(report: &soak::SoakReport) -> String {
    format!("{:#}\n", report.to_json())
}
