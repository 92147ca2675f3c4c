//! `cargo xtask load`: many port-sync processes (release build, the chart's `--interval`), each
//! with its own Service, service account and Role, against one API stand-in and one fake
//! JobManager; measures what each sends to the API server and the JobManager in steady state
//! and scales it to 1,000 Flink clusters. The work is in `drills::load`.

use crate::run::{Result, cargo, step, target_dir};
use drills::load::{self, LoadConfig};
use fixtures::process::stop_children_on_signal;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn run(
    instances: usize,
    minutes: u64,
    json: Option<PathBuf>,
    binary: Option<PathBuf>,
) -> Result {
    let binary = match binary {
        Some(binary) => binary,
        None => {
            let mut build = cargo();
            build.args(["build", "--release", "-p", "port-sync"]);
            step("build port-sync (release)", build)?;
            target_dir().join("release/port-sync")
        }
    };
    measure(
        &binary,
        instances,
        Duration::from_secs(minutes * 60),
        json.as_deref(),
    )
}

/// Runs the load with `binary` and prints the table (and writes the JSON when asked); fails
/// if any instance fails to sync or exits. `cargo xtask test` calls it with the debug build.
pub fn measure(binary: &Path, instances: usize, window: Duration, json: Option<&Path>) -> Result {
    stop_children_on_signal();
    let report = load::run(&LoadConfig {
        binary: binary.to_path_buf(),
        instances,
        window,
    })?;
    println!("\n{}", report.table());
    if let Some(path) = json {
        // serde_json's Value prints itself pretty with `{:#}`.
        let text = format!("{:#}\n", report.json());
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("load: JSON written to {}", path.display());
    }
    Ok(())
}
