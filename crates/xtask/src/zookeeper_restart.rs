//! `cargo xtask zookeeper-restart`: the streaming job on a 3-member ZooKeeper whose leader is
//! killed and started again mid-stream, with `tolerate-suspended-connections` false (Flink's
//! default) and true, interleaved; prints what the job went through and exactly-once per
//! setting. The work is in `drills::zookeeper_restart`.

use crate::install;
use crate::run::Result;
use drills::zookeeper_restart::{
    self, Disruption, TOLERATE_SUSPENDED, ZookeeperRestartConfig, ZookeeperRestartReport,
};
use fixtures::flink::{DEFAULT_VERSION, Flink};
use fixtures::process::stop_children_on_signal;
use std::time::Duration;

pub fn run(runs: usize, chart: bool) -> Result {
    stop_children_on_signal();
    install::debian_packages(&[install::ZOOKEEPER])?;
    install::flink()?;
    let flink = Flink::install(DEFAULT_VERSION).map_err(|error| error.to_string())?;
    let (flink_settings, zookeeper_tick_ms) = if chart {
        let values = crate::run::workspace_root().join("helm/flink-ha/values.yaml");
        let text = std::fs::read_to_string(&values)
            .map_err(|error| format!("read {}: {error}", values.display()))?;
        (
            drills::failover::chart_recovery_settings(&text)?
                .into_iter()
                .filter(|(key, _)| key != TOLERATE_SUSPENDED)
                .collect(),
            drills::failover::CHART_ZOOKEEPER_TICK_MS,
        )
    } else {
        (
            Vec::new(),
            ZookeeperRestartConfig::new(false).zookeeper_tick_ms,
        )
    };
    let mut reports: [Vec<ZookeeperRestartReport>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=runs {
        for (index, tolerate) in [false, true].into_iter().enumerate() {
            eprintln!(
                "==> ZooKeeper leader restart {round}/{runs}: {TOLERATE_SUSPENDED}: {tolerate}"
            );
            let config = ZookeeperRestartConfig {
                flink_settings: flink_settings.clone(),
                zookeeper_tick_ms,
                ..ZookeeperRestartConfig::new(tolerate)
            };
            let report = zookeeper_restart::run(&flink, &config)?;
            eprintln!("    {}", one_line(&report));
            reports[index].push(report);
        }
    }
    let with: Vec<String> = flink_settings
        .iter()
        .map(|(key, value)| format!("{key}: {value}"))
        .collect();
    println!(
        "\nZooKeeper leader killed and started again under the streaming job (Flink \
         {DEFAULT_VERSION} application mode, 3 members, tickTime {zookeeper_tick_ms} ms, {runs} \
         runs each{}): seconds from the kill, median (min-max)\n",
        if with.is_empty() {
            String::new()
        } else {
            format!(", with {}", with.join(", "))
        }
    );
    println!(
        "| {TOLERATE_SUSPENDED} | quorum back | job interrupted | job RUNNING again | first checkpoint after | job left RUNNING (per run) | exactly-once |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for runs in &reports {
        let column = |pick: fn(&Disruption) -> Option<Duration>| spread(runs, pick);
        let exact = runs.iter().filter(|r| r.exactly_once.holds()).count();
        println!(
            "| {} | {} | {} | {} | {} | {} | {exact}/{} |",
            runs[0].tolerate_suspended,
            column(|d| d.quorum_back),
            column(|d| d.job_interrupted),
            column(|d| d.job_running_again),
            column(|d| d.first_checkpoint),
            runs.iter()
                .map(|r| {
                    if r.job_state_changes.is_empty() {
                        "no".to_owned()
                    } else {
                        r.job_state_changes.join(", ")
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            runs.len(),
        );
        failures.extend(
            runs.iter()
                .filter(|r| !r.exactly_once.holds())
                .map(one_line),
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "runs that lost or repeated records:\n{}",
            failures.join("\n")
        ))
    }
}

fn spread(runs: &[ZookeeperRestartReport], pick: fn(&Disruption) -> Option<Duration>) -> String {
    crate::stats::spread(runs.iter().map(|r| pick(&r.disruption)))
}

fn one_line(report: &ZookeeperRestartReport) -> String {
    let at = |value: Option<Duration>| {
        value.map_or_else(|| "–".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()))
    };
    let d = &report.disruption;
    format!(
        "quorum {}, interrupted {}, RUNNING again {}, checkpoint {}; state changes {:?}; \
         leadership revoked: {}; {}; {}",
        at(d.quorum_back),
        at(d.job_interrupted),
        at(d.job_running_again),
        at(d.first_checkpoint),
        report.job_state_changes,
        report.leadership_revoked,
        report.final_state,
        report.exactly_once
    )
}
