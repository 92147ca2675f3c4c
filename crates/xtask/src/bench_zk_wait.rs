//! `cargo xtask bench zk-wait`: how soon zk-wait notices that a real ensemble serves, side by
//! side in the same runs with the usual shell init loop, plus zk-wait's peak RSS and binary size.
//!
//! Each run starts one member of a 3-member ensemble, then zk-wait and the shell loop, then the
//! member that completes the majority after a random 0.5-5 s (so neither poller gets a lucky
//! phase). An observer polling every member about every millisecond marks the moment a majority
//! first reports `Mode:`; each poller's latency runs from that moment to its exit.

use crate::install;
use crate::run::{Result, cargo, step, workspace_root};
use crate::stats::{mark, median, millis, ratio};
use fixtures::process::{Echo, Process, stop_children_on_signal};
use fixtures::zookeeper::{Ensemble, EnsembleConfig, four_letter_word};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

struct RunResult {
    delay: Duration,
    zk_wait: Duration,
    shell_loop: Duration,
    peak_rss_kib: u64,
}

pub fn run(runs: usize) -> Result {
    stop_children_on_signal();
    install::debian_packages(&[install::ZOOKEEPER, install::NETCAT, install::GNU_TIME])?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "zk-wait"]);
    step("build zk-wait (release)", build)?;
    let binary = workspace_root().join("target/release/zk-wait");

    let mut results = Vec::new();
    eprintln!(
        "\n{:>4}  {:>7}  {:>9}  {:>10}  {:>8}",
        "run", "delay", "zk-wait", "shell loop", "peak RSS"
    );
    for index in 1..=runs {
        let result = one_run(&binary)?;
        eprintln!(
            "{index:>4}  {:>6.2}s  {:>7.0}ms  {:>8.0}ms  {:>6.1}MB",
            result.delay.as_secs_f64(),
            millis(result.zk_wait),
            millis(result.shell_loop),
            result.peak_rss_kib as f64 / 1024.0
        );
        results.push(result);
    }

    let zk_median = median(results.iter().map(|r| r.zk_wait).collect());
    let shell_median = median(results.iter().map(|r| r.shell_loop).collect());
    let rss_max = results.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
    let size = std::fs::metadata(&binary).map_err(|e| e.to_string())?.len();
    println!("\nzk-wait benchmark, {runs} runs on a real 3-member ZooKeeper 3.8 ensemble");
    println!(
        "  detection latency, median: zk-wait {:.0} ms, shell loop {:.0} ms",
        millis(zk_median),
        millis(shell_median)
    );
    println!(
        "  ratio zk-wait / shell loop: {:.3} (1/{:.1})",
        ratio(zk_median, shell_median),
        ratio(shell_median, zk_median)
    );
    println!(
        "  zk-wait peak RSS, worst run: {:.1} MB",
        rss_max as f64 / 1024.0
    );
    println!(
        "  zk-wait stripped release binary: {:.2} MB ({size} bytes)",
        size as f64 / 1_048_576.0
    );
    println!(
        "  targets: median <= 150 ms [{}], <= 1/3 of the loop [{}], RSS <= 5 MB [{}], binary <= 3 MB [{}]",
        mark(millis(zk_median) <= 150.0),
        mark(ratio(zk_median, shell_median) <= 1.0 / 3.0),
        mark(rss_max <= 5 * 1024),
        mark(size <= 3 * 1024 * 1024),
    );
    Ok(())
}

fn one_run(binary: &std::path::Path) -> Result<RunResult> {
    let fail = |e: std::io::Error| e.to_string();
    let mut ensemble = Ensemble::new(EnsembleConfig::ensemble(3)).map_err(fail)?;
    ensemble.start(0).map_err(fail)?;
    ensemble.wait_listening(0, LIMIT).map_err(fail)?;

    let mut zk_wait_command = Command::new("/usr/bin/time");
    zk_wait_command
        .args(["-f", "peak_rss_kib=%M"])
        .arg(binary)
        .args(["--zookeeper", &ensemble.connect_string()]);
    let first = ensemble.client_address(0);
    let shell = format!(
        "until echo srvr | nc -w2 {} {} | grep -q Mode:; do sleep 1; done",
        first.ip(),
        first.port()
    );
    let mut shell_command = Command::new("sh");
    shell_command.args(["-c", &shell]);

    let observer = MajorityObserver::start(&ensemble);
    let mut zk_wait = Process::spawn("zk-wait", zk_wait_command, Echo::Quiet).map_err(fail)?;
    let mut shell_loop = Process::spawn("shell loop", shell_command, Echo::Quiet).map_err(fail)?;

    let delay = Duration::from_millis(fastrand::u64(500..=5000));
    thread::sleep(delay);
    ensemble.start(1).map_err(fail)?;

    let deadline = Instant::now() + LIMIT;
    let (mut zk_exit, mut shell_exit) = (None, None);
    while zk_exit.is_none() || shell_exit.is_none() {
        if Instant::now() > deadline {
            return Err(format!(
                "a poller did not finish within {LIMIT:?}:\n{}\n{}",
                zk_wait.output(),
                shell_loop.output()
            ));
        }
        if zk_exit.is_none() {
            zk_exit = zk_wait.try_exit().map_err(fail)?;
        }
        if shell_exit.is_none() {
            shell_exit = shell_loop.try_exit().map_err(fail)?;
        }
        thread::sleep(Duration::from_millis(1));
    }
    let majority_at = observer
        .finish()
        .ok_or("the observer never saw a majority serve")?;
    let (zk_status, zk_at) = zk_exit.expect("loop ends when both exited");
    let (_, shell_at) = shell_exit.expect("loop ends when both exited");
    if !zk_status.success() {
        return Err(format!("zk-wait failed: {}", zk_wait.output()));
    }
    let peak_rss_kib = zk_wait
        .stderr()
        .lines()
        .find_map(|line| line.strip_prefix("peak_rss_kib="))
        .and_then(|kib| kib.trim().parse().ok())
        .ok_or_else(|| format!("no peak RSS from /usr/bin/time: {}", zk_wait.output()))?;
    Ok(RunResult {
        delay,
        zk_wait: zk_at.saturating_duration_since(majority_at),
        shell_loop: shell_at.saturating_duration_since(majority_at),
        peak_rss_kib,
    })
}

/// Polls `srvr` on every member about every millisecond and keeps the first moment a majority
/// reported `Mode:`.
struct MajorityObserver {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Option<Instant>>,
}

impl MajorityObserver {
    fn start(ensemble: &Ensemble) -> MajorityObserver {
        let addresses: Vec<_> = (0..ensemble.len())
            .map(|i| ensemble.client_address(i))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let serving = addresses
                        .iter()
                        .filter(|address| {
                            four_letter_word(**address, "srvr", Duration::from_millis(200))
                                .is_ok_and(|answer| answer.contains("Mode:"))
                        })
                        .count();
                    if serving > addresses.len() / 2 {
                        return Some(Instant::now());
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                None
            })
        };
        MajorityObserver { stop, thread }
    }

    fn finish(self) -> Option<Instant> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().ok().flatten()
    }
}
