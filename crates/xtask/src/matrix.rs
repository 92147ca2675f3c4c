//! `cargo xtask matrix`: port-sync against a real JobManager of each Flink version in
//! `drills::matrix::VERSIONS` (or `--versions`), one after the other, each in ZooKeeper HA
//! mode with the API stand-in: the Service gets the live rpc and blob ports and follows a
//! restart. Prints one table row per version; fails if any version fails.

use crate::install;
use crate::run::{Result, build_debug_binary};
use crate::stats::millis;
use drills::matrix::{self, VersionReport};
use fixtures::process::stop_children_on_signal;
use std::time::Duration;

pub fn run(versions: Option<Vec<String>>) -> Result {
    stop_children_on_signal();
    let versions: Vec<String> = versions.unwrap_or_else(|| {
        matrix::VERSIONS
            .iter()
            .map(|version| (*version).to_owned())
            .collect()
    });
    install::debian_packages(&[install::ZOOKEEPER])?;
    // Downloads first, each with its progress shown, so the runs below time only Flink.
    for version in &versions {
        eprintln!("==> install Flink {version} into the cache (downloads only when missing)");
        fixtures::flink::Flink::install(version)
            .map_err(|error| format!("installing Flink {version}: {error}"))?;
    }
    let port_sync = build_debug_binary("port-sync")?;

    let mut rows = Vec::new();
    for version in &versions {
        eprintln!("==> Flink {version}: JobManager, port-sync, restart");
        let outcome = matrix::check_version(version, &port_sync);
        match &outcome {
            Ok(report) => eprintln!("    {}", format_row(version, &outcome_cells(report))),
            Err(error) => eprintln!("    Flink {version} FAILED: {error}"),
        }
        rows.push((version.clone(), outcome));
    }

    println!(
        "\nFlink compatibility matrix: port-sync ({}) against real JobManagers in ZooKeeper HA \
         mode, Java 17",
        port_sync.display()
    );
    println!("{}", format_row("Flink", &HEADER.map(str::to_owned)));
    println!(
        "{}",
        format_row("-----", &HEADER.map(|title| "-".repeat(title.len())))
    );
    for (version, outcome) in &rows {
        let cells = match outcome {
            Ok(report) => outcome_cells(report),
            Err(_) => ["-", "-", "FAILED", "-", "-", "-"].map(str::to_owned),
        };
        println!("{}", format_row(version, &cells));
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(version, _)| version.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} Flink versions failed: {} (the errors are above)",
            failed.len(),
            rows.len(),
            failed.join(", ")
        ))
    }
}

const HEADER: [&str; 6] = [
    "rpc/blob, first",
    "rpc/blob, restarted",
    "sync ok",
    "sync, first",
    "sync, restarted",
    "REST ready (first/restart)",
];

fn outcome_cells(report: &VersionReport) -> [String; 6] {
    let ports = |rpc: u16, blob: u16| format!("{rpc}/{blob}");
    let ms = |duration: Duration| format!("{:.0} ms", millis(duration));
    let secs = |duration: Duration| format!("{:.1} s", duration.as_secs_f64());
    [
        ports(report.first.rpc, report.first.blob),
        ports(report.after_restart.rpc, report.after_restart.blob),
        "yes".to_owned(),
        ms(report.first.sync),
        ms(report.after_restart.sync),
        format!(
            "{} / {}",
            secs(report.first.rest_ready),
            secs(report.after_restart.rest_ready)
        ),
    ]
}

fn format_row(version: &str, cells: &[String; 6]) -> String {
    format!(
        "{version:<7} {:>15}  {:>19}  {:>7}  {:>11}  {:>15}  {:>26}",
        cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
    )
}
