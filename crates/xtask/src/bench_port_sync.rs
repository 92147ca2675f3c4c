//! `cargo xtask bench port-sync`: port-sync side by side, in the same runs, with the curl/jq
//! sidecar loop it replaces (tests/bench/port-sync-loop.sh), both against the same real Flink
//! JobManager (ZooKeeper HA mode) and the API stand-in, each keeping its own Service.
//!
//! (a) Sync latency: from the moment the JobManager's REST first answers after a (re)start to
//!     the moment the Service exposes the new RPC port; an observer polls REST about every 5 ms
//!     and the stand-in's store about every 2 ms. (b) CPU time over a steady state in which
//!     nothing changes, from /proc (the loop's includes its curl, jq and sleep children).
//!     (c) port-sync's peak RSS (VmHWM), and the stripped release binary's size.

use crate::install;
use crate::run::{Result, cargo, step, workspace_root};
use crate::stats::{mark, median, millis, ratio};
use fixtures::flink::{DEFAULT_VERSION, Flink, JobManager, JobManagerConfig, rest};
use fixtures::ports::free_port;
use fixtures::process::{Echo, Process, stop_children_on_signal};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use kube_stand_in::ApiServerConfig;
use kube_stand_in::service_bed::{NAMESPACE, SERVICE, ServiceBed};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

const LOOP_SERVICE: &str = "flink-jobmanager-loop";
const JVM_START: Duration = Duration::from_secs(180);
const SYNC_LIMIT: Duration = Duration::from_secs(30);

pub fn run(runs: usize, steady_secs: u64) -> Result {
    stop_children_on_signal();
    install::debian_packages(&[install::ZOOKEEPER, install::CURL, install::JQ])?;
    install::flink()?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "port-sync"]);
    step("build port-sync (release)", build)?;
    let binary = workspace_root().join("target/release/port-sync");
    let fail = |e: std::io::Error| e.to_string();

    let zookeeper = Ensemble::start_standalone(EnsembleConfig::standalone()).map_err(fail)?;
    let flink = Flink::install(DEFAULT_VERSION).map_err(fail)?;
    let bed = ServiceBed::start(ApiServerConfig::default(), Duration::from_secs(24 * 3600))
        .map_err(fail)?;
    bed.create_jobmanager_service(LOOP_SERVICE).map_err(fail)?;
    let scratch = tempfile::tempdir().map_err(fail)?;
    let ca_file = scratch.path().join("ca.pem");
    let admin_token = scratch.path().join("admin-token");
    std::fs::write(&ca_file, bed.api.ca_pem()).map_err(fail)?;
    // The loop's Service is not the one port-sync's narrow Role names: the loop gets the
    // admin token (it was usually given far more than that anyway).
    std::fs::write(&admin_token, bed.api.admin_token()).map_err(fail)?;

    let rest_port = free_port();
    let rest_url = format!("http://127.0.0.1:{rest_port}");
    let mut port_sync_command = Command::new(&binary);
    port_sync_command
        .env("KUBECONFIG", &bed.kubeconfig)
        .args(ServiceBed::port_sync_args(&rest_url))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())]);
    let mut loop_command = Command::new("sh");
    loop_command
        .arg(workspace_root().join("tests/bench/port-sync-loop.sh"))
        .env("JM_URL", &rest_url)
        .env("API_URL", bed.api.url())
        .env("CA_FILE", &ca_file)
        .env("TOKEN_FILE", &admin_token)
        .env("NAMESPACE", NAMESPACE)
        .env("SERVICE", LOOP_SERVICE);
    let mut port_sync =
        Process::spawn("port-sync", port_sync_command, Echo::Quiet).map_err(fail)?;
    let mut shell_loop = Process::spawn("shell loop", loop_command, Echo::Quiet).map_err(fail)?;

    let mut jobmanager = JobManager::start(
        &flink,
        JobManagerConfig::new(&zookeeper.connect_string()).rest_port(rest_port),
    )
    .map_err(fail)?;
    eprintln!(
        "\n{:>4}  {:>6}  {:>9}  {:>10}",
        "run", "rpc", "port-sync", "shell loop"
    );
    let mut latencies = Vec::new();
    for index in 1..=runs {
        if index > 1 {
            jobmanager.restart().map_err(fail)?;
        }
        let (answered_at, rpc) = wait_rest_answers(&jobmanager)?;
        let port_sync_at = wait_exposed(&bed, SERVICE, rpc)?;
        let loop_at = wait_exposed(&bed, LOOP_SERVICE, rpc)?;
        let pair = (port_sync_at - answered_at, loop_at - answered_at);
        eprintln!(
            "{index:>4}  {rpc:>6}  {:>7.0}ms  {:>8.0}ms",
            millis(pair.0),
            millis(pair.1)
        );
        latencies.push(pair);
    }
    for process in [&mut port_sync, &mut shell_loop] {
        if !process.is_running() {
            return Err(format!("{} stopped:\n{}", process.name(), process.output()));
        }
    }

    eprintln!("\nsteady state: {steady_secs} s with nothing to change");
    let ticks = clock_ticks_per_second()?;
    let before = (cpu_ticks(port_sync.pid())?, cpu_ticks(shell_loop.pid())?);
    sleep(Duration::from_secs(steady_secs));
    let after = (cpu_ticks(port_sync.pid())?, cpu_ticks(shell_loop.pid())?);
    let cpu = |b: u64, a: u64| Duration::from_secs_f64(a.saturating_sub(b) as f64 / ticks);
    let (port_sync_cpu, loop_cpu) = (cpu(before.0, after.0), cpu(before.1, after.1));
    let peak_rss_kib = peak_rss_kib(port_sync.pid())?;
    let size = std::fs::metadata(&binary).map_err(fail)?.len();

    let port_sync_median = median(latencies.iter().map(|l| l.0).collect());
    let loop_median = median(latencies.iter().map(|l| l.1).collect());
    let window = steady_secs as f64;
    println!(
        "\nport-sync benchmark, {runs} JobManager starts (real Flink {DEFAULT_VERSION}, ZooKeeper HA)"
    );
    println!(
        "  sync latency, median: port-sync {:.0} ms, shell loop {:.0} ms (ratio {:.3})",
        millis(port_sync_median),
        millis(loop_median),
        ratio(port_sync_median, loop_median)
    );
    println!(
        "  CPU time over {steady_secs} s of steady state: port-sync {:.3} s ({:.3}% of a core), \
         shell loop {:.3} s ({:.2}% of a core); ratio 1/{:.0}",
        port_sync_cpu.as_secs_f64(),
        100.0 * port_sync_cpu.as_secs_f64() / window,
        loop_cpu.as_secs_f64(),
        100.0 * loop_cpu.as_secs_f64() / window,
        ratio(loop_cpu, port_sync_cpu)
    );
    println!(
        "  port-sync peak RSS: {:.1} MB",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "  port-sync stripped release binary: {:.2} MB ({size} bytes)",
        size as f64 / 1_048_576.0
    );
    println!(
        "  targets: latency <= 200 ms [{}], CPU <= 1/20 of the loop's [{}], RSS <= 12 MB [{}], binary <= 8 MB [{}]",
        mark(millis(port_sync_median) <= 200.0),
        mark(port_sync_cpu.as_secs_f64() * 20.0 <= loop_cpu.as_secs_f64()),
        mark(peak_rss_kib <= 12 * 1024),
        mark(size <= 8 * 1024 * 1024),
    );
    Ok(())
}

/// Polls REST until `/jobmanager/config` answers with an RPC port; returns when and which.
fn wait_rest_answers(jobmanager: &JobManager) -> Result<(Instant, u16)> {
    let deadline = Instant::now() + JVM_START;
    while Instant::now() < deadline {
        if let Ok(answer) = rest::get(
            jobmanager.rest_address(),
            "/jobmanager/config",
            Duration::from_millis(500),
        ) && answer.status == 200
        {
            let at = Instant::now();
            let entries = rest::parse_config_entries(&answer.body).map_err(|e| e.to_string())?;
            let rpc = entries
                .get("jobmanager.rpc.port")
                .and_then(|port| port.parse().ok())
                .ok_or("no jobmanager.rpc.port in /jobmanager/config")?;
            return Ok((at, rpc));
        }
        sleep(Duration::from_millis(5));
    }
    Err(format!(
        "the JobManager's REST did not answer within {JVM_START:?}:\n{}",
        jobmanager.log()
    ))
}

fn wait_exposed(bed: &ServiceBed, service: &str, rpc: u16) -> Result<Instant> {
    let deadline = Instant::now() + SYNC_LIMIT;
    while Instant::now() < deadline {
        if bed.exposes(service, "rpc", rpc) {
            return Ok(Instant::now());
        }
        sleep(Duration::from_millis(2));
    }
    Err(format!(
        "{service} did not expose rpc {rpc} within {SYNC_LIMIT:?}"
    ))
}

/// utime + stime + cutime + cstime of a process, in clock ticks: its own CPU time and that of
/// the children it has waited for (the loop's curl, jq and sleep).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // The command name in parentheses may hold spaces; the fields after it are fixed.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("odd /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state); utime is field 14.
    fields[11..15]
        .iter()
        .map(|field| field.parse::<u64>().map_err(|e| e.to_string()))
        .sum()
}

fn clock_ticks_per_second() -> Result<f64> {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| "getconf CLK_TCK gave no number".into())
}

fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM in /proc status".into())
}
