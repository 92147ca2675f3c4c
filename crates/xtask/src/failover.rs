//! `cargo xtask failover`: the article's streaming job (application mode, 1 s checkpoints,
//! exactly-once FileSink) with its JobManager SIGKILLed mid-stream and restarted, each variant
//! of how the TaskManager reaches the JobManager run in turn (interleaved, so drift on a shared
//! machine falls on every variant alike); prints each milestone's median and min-max after the
//! kill, the registration error-delays hit and exactly-once per variant. The work is in
//! `drills::failover`.

use crate::install;
use crate::run::{Result, build_debug_binary};
use drills::failover::{self, FailoverConfig, FailoverReport, Milestones, Stop, Variant};
use fixtures::flink::{DEFAULT_VERSION, Flink};
use fixtures::forwarder::Unlisted;
use fixtures::process::stop_children_on_signal;
use std::time::Duration;

/// The scenario's switches besides the variants and Flink settings.
pub struct Options {
    pub chart: bool,
    pub sigterm: bool,
    pub proxy_sync_delay: Duration,
    pub proxy_unlisted: Unlisted,
}

pub fn run(runs: usize, variants: &[String], settings: &[String], options: Options) -> Result {
    let Options {
        chart,
        sigterm,
        proxy_sync_delay,
        proxy_unlisted,
    } = options;
    stop_children_on_signal();
    install::debian_packages(&[install::ZOOKEEPER])?;
    if variants.iter().any(|name| name == "shell-loop") {
        install::debian_packages(&[install::CURL, install::JQ])?;
    }
    install::flink()?;
    let port_sync = build_debug_binary("port-sync")?;
    let flink = Flink::install(DEFAULT_VERSION).map_err(|error| error.to_string())?;
    let (mut flink_settings, chart_ports) = if chart {
        let values = crate::run::workspace_root().join("helm/flink-ha/values.yaml");
        let text = std::fs::read_to_string(&values)
            .map_err(|error| format!("read {}: {error}", values.display()))?;
        (
            failover::chart_recovery_settings(&text)?,
            failover::chart_port_settings(&text)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let given = settings
        .iter()
        .map(|setting| {
            setting
                .split_once('=')
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                .ok_or_else(|| format!("--flink-setting {setting:?}: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    flink_settings.extend(given);
    let zookeeper_tick_ms = if chart {
        failover::CHART_ZOOKEEPER_TICK_MS
    } else {
        FailoverConfig::new(Variant::PodIp).zookeeper_tick_ms
    };
    let variants = variants
        .iter()
        .map(|name| match name.as_str() {
            "pod-ip" => Ok(Variant::PodIp),
            "port-sync" => Ok(Variant::PortSync(port_sync.clone())),
            "shell-loop" => Ok(Variant::ShellLoop(
                crate::run::workspace_root().join("tests/bench/port-sync-loop.sh"),
            )),
            "pinned" => Ok(Variant::Pinned),
            other => Err(format!(
                "--variants: unknown variant {other:?}; known: pod-ip, port-sync, shell-loop, \
                 pinned"
            )),
        })
        .collect::<Result<Vec<_>>>()?;

    let mut reports: Vec<Vec<FailoverReport>> = vec![Vec::new(); variants.len()];
    for round in 1..=runs {
        for (index, variant) in variants.iter().enumerate() {
            eprintln!("==> failover run {round}/{runs}: {}", variant.name());
            // The chart's port ranges for every variant but pinned (whose single ports are
            // the point); a --flink-setting given on the command line comes after and wins.
            let mut settings = match variant {
                Variant::Pinned => Vec::new(),
                _ => chart_ports.clone(),
            };
            settings.extend(flink_settings.iter().cloned());
            let config = FailoverConfig {
                flink_settings: settings,
                zookeeper_tick_ms,
                stop: if sigterm { Stop::Term } else { Stop::Kill },
                proxy_sync_delay,
                proxy_unlisted,
                ..FailoverConfig::new(variant.clone())
            };
            let report = failover::run(&flink, &config)?;
            eprintln!("    {}", one_line(&report));
            reports[index].push(report);
        }
    }

    let stopped = if sigterm {
        "SIGTERM to the JobManager (it shuts down, then starts again at once)"
    } else {
        "SIGKILL"
    };
    let with = if flink_settings.is_empty() && chart_ports.is_empty() {
        String::new()
    } else {
        let mut shown: Vec<String> = flink_settings
            .iter()
            .map(|(key, value)| format!("{key}: {value}"))
            .collect();
        shown.extend(
            chart_ports
                .iter()
                .map(|(key, value)| format!("{key}: {value} (not for pinned)")),
        );
        format!(", with {}", shown.join(", "))
    };
    let sync = if proxy_sync_delay.is_zero() {
        "at once".to_owned()
    } else {
        format!("after {} ms", proxy_sync_delay.as_millis())
    };
    let unlisted = match proxy_unlisted {
        Unlisted::Refuse => "refused",
        Unlisted::Drop => "dropped",
    };
    println!(
        "\nJobManager failover of a streaming job (Flink {DEFAULT_VERSION} application mode, \
         ZooKeeper tickTime {zookeeper_tick_ms} ms, {runs} runs each{with}; the kube-proxy \
         stand-in applies a Service change {sync}, an unlisted port is \
         {unlisted}): seconds from the {stopped}, median (min-max)\n"
    );
    println!(
        "| variant | new leader | Service right | job RUNNING again | first checkpoint after restore | TaskManager registered | error-delays hit | restored from a checkpoint | exactly-once |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for runs in &reports {
        let name = runs[0].variant;
        let column = |pick: fn(&Milestones) -> Option<Duration>| spread(runs, pick);
        let restored = runs
            .iter()
            .filter(|r| r.restored_checkpoint.is_some())
            .count();
        let exact = runs.iter().filter(|r| r.exactly_once.holds()).count();
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {restored}/{n} | {exact}/{n} |",
            column(|m| m.leader),
            column(|m| m.service_right),
            column(|m| m.job_running),
            column(|m| m.first_checkpoint),
            column(|m| m.taskmanager_registered),
            runs.iter()
                .map(|r| r.registration_error_delays.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            n = runs.len(),
        );
        for report in runs {
            if !report.exactly_once.holds() || report.restored_checkpoint.is_none() {
                failures.push(format!("{name}: {}", one_line(report)));
            }
        }
    }
    // Leadership comes when ZooKeeper expires the killed JobManager's session, and its spread
    // between runs hides the sidecar's share: the same milestones counted from each run's own
    // new leader.
    println!("\nThe same runs, seconds after each run's new leader, median (min-max):\n");
    println!(
        "| variant | Service right | job RUNNING again | first checkpoint after restore | TaskManager registered |"
    );
    println!("|---|---|---|---|---|");
    for runs in &reports {
        let column = |pick: fn(&Milestones) -> Option<Duration>| {
            crate::stats::spread(runs.iter().map(|r| {
                let leader = r.milestones.leader?;
                Some(pick(&r.milestones)?.saturating_sub(leader))
            }))
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            runs[0].variant,
            column(|m| m.service_right),
            column(|m| m.job_running),
            column(|m| m.first_checkpoint),
            column(|m| m.taskmanager_registered),
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "runs that lost or repeated records, or started from scratch:\n{}",
            failures.join("\n")
        ))
    }
}

fn spread(runs: &[FailoverReport], pick: fn(&Milestones) -> Option<Duration>) -> String {
    crate::stats::spread(runs.iter().map(|r| pick(&r.milestones)))
}

fn one_line(report: &FailoverReport) -> String {
    let at = |value: Option<Duration>| {
        value.map_or_else(|| "–".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()))
    };
    let m = &report.milestones;
    format!(
        "leader {}, Service {}, RUNNING {}, checkpoint {}, TaskManager {}; error-delays {}; \
         restored from {:?} ({} before the kill); {}",
        at(m.leader),
        at(m.service_right),
        at(m.job_running),
        at(m.first_checkpoint),
        at(m.taskmanager_registered),
        report.registration_error_delays,
        report.restored_checkpoint,
        report.checkpoints_before_kill,
        report.exactly_once
    )
}
