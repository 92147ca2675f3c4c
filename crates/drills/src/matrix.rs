//! One row of the Flink compatibility matrix: port-sync (the built binary) against a real
//! JobManager of one Flink version in ZooKeeper HA mode and the Kubernetes API stand-in. The
//! Service must get the live rpc and blob ports, and get them again after the JobManager is
//! killed and restarts on new random ports. Shared by `cargo xtask matrix` (every version) and
//! the CI test (the oldest version; the newest has its own, longer test).

use fixtures::flink::{Flink, JobManager, JobManagerConfig, rest};
use fixtures::ports::free_port;
use fixtures::process::{Echo, Process};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use kube_stand_in::ApiServerConfig;
use kube_stand_in::service_bed::{SERVICE, ServiceBed};
use std::io;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The newest patch of each Flink minor release that runs on Java 17 and whose jars PyPI's
/// `apache-flink-libraries` carries (`pip index versions apache-flink-libraries`), oldest first.
pub const VERSIONS: &[&str] = &[
    "1.18.1", "1.19.3", "1.20.5", "2.0.2", "2.1.3", "2.2.1", "2.3.0",
];

/// From a JobManager's (re)start to its REST answering: 5-15 s here, plus up to ZooKeeper's
/// 10 s session timeout after a restart before the new JobManager wins the election; the rest
/// is headroom for a loaded 2-core machine.
const REST_READY_LIMIT: Duration = Duration::from_secs(90);
/// port-sync reacts in milliseconds; this only bounds a failure.
const SYNC_LIMIT: Duration = Duration::from_secs(30);
/// How often the REST API and the stand-in's store are polled: finer than the figures reported.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// What one JobManager start showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// The live `jobmanager.rpc.port` and `blob.server.port` from `/jobmanager/config`.
    pub rpc: u16,
    pub blob: u16,
    /// From the (re)start to the first 200 from `/jobmanager/config`.
    pub rest_ready: Duration,
    /// From that first 200 to the Service holding both live ports.
    pub sync: Duration,
}

/// The matrix row of one version: the first start, then the restart.
#[derive(Debug, Clone)]
pub struct VersionReport {
    pub version: String,
    pub first: Round,
    pub after_restart: Round,
}

/// Runs the check for Flink `version` (installing it into the cache when missing) with the
/// port-sync binary at `port_sync`. Starts its own ZooKeeper, stand-in and JobManager and stops
/// them all before it returns, also on failure. Any failure is an error that says what was
/// wrong, with the JobManager's or port-sync's output.
pub fn check_version(version: &str, port_sync: &Path) -> io::Result<VersionReport> {
    let flink = Flink::install(version)?;
    let zookeeper = Ensemble::start_standalone(EnsembleConfig::standalone())?;
    let bed = ServiceBed::start(ApiServerConfig::default(), Duration::from_secs(3600))?;
    let rest_port = free_port();
    let rest_url = format!("http://127.0.0.1:{rest_port}");

    // Started before the JobManager, as a sidecar starts beside it in the pod.
    let mut sidecar = Process::spawn(
        "port-sync",
        port_sync_command(port_sync, &bed, &rest_url),
        Echo::Quiet,
    )?;
    let mut jobmanager = JobManager::start(
        &flink,
        JobManagerConfig::new(&zookeeper.connect_string()).rest_port(rest_port),
    )?;
    let first = observe_round(&mut jobmanager, &bed, &mut sidecar)
        .map_err(|error| in_version(version, "first start", error))?;
    jobmanager.restart()?;
    let after_restart = observe_round(&mut jobmanager, &bed, &mut sidecar)
        .map_err(|error| in_version(version, "after the restart", error))?;
    if (first.rpc, first.blob) == (after_restart.rpc, after_restart.blob) {
        // Random ports repeat only by chance; then the restart proved nothing about following.
        return Err(in_version(
            version,
            "after the restart",
            io::Error::other(format!(
                "the JobManager bound the same rpc {} and blob {} again, so following a change \
                 was not tested; run again",
                first.rpc, first.blob
            )),
        ));
    }
    Ok(VersionReport {
        version: version.to_owned(),
        first,
        after_restart,
    })
}

/// port-sync pointed at the stand-in's Service and `jobmanager_url`, with none of the
/// caller's `PORT_SYNC_*` settings and no in-cluster config leaking in.
fn port_sync_command(binary: &Path, bed: &ServiceBed, jobmanager_url: &str) -> Command {
    let mut command = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PORT_SYNC_") {
            command.env_remove(key);
        }
    }
    command
        .env("KUBECONFIG", &bed.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(ServiceBed::port_sync_args(jobmanager_url))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())]);
    command
}

/// Waits for the JobManager's REST to answer, reads the live ports from that first answer, and
/// waits for the Service to hold them.
fn observe_round(
    jobmanager: &mut JobManager,
    bed: &ServiceBed,
    sidecar: &mut Process,
) -> io::Result<Round> {
    let started = Instant::now();
    let (answered_at, rpc, blob) = wait_rest_answers(jobmanager)?;
    let rest_ready = answered_at - started;
    if rpc == 0 || blob == 0 {
        return Err(io::Error::other(format!(
            "/jobmanager/config reports rpc {rpc} and blob {blob}: HA mode binds real ports"
        )));
    }
    let deadline = answered_at + SYNC_LIMIT;
    loop {
        if bed.exposes(SERVICE, "rpc", rpc) && bed.exposes(SERVICE, "blob", blob) {
            return Ok(Round {
                rpc,
                blob,
                rest_ready,
                sync: answered_at.elapsed(),
            });
        }
        if !sidecar.is_running() {
            return Err(io::Error::other(format!(
                "port-sync exited; its output:\n{}",
                sidecar.output()
            )));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the Service did not hold rpc {rpc} and blob {blob} within {SYNC_LIMIT:?} \
                     after the JobManager answered; it holds rpc {:?} and blob {:?}; \
                     port-sync's output:\n{}",
                    bed.port_of(SERVICE, "rpc"),
                    bed.port_of(SERVICE, "blob"),
                    sidecar.output()
                ),
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `/jobmanager/config` until it answers 200 (the JobManager leads and serves); returns
/// when, and the rpc and blob ports of that answer. Fails at once if the JVM exits.
fn wait_rest_answers(jobmanager: &mut JobManager) -> io::Result<(Instant, u16, u16)> {
    let deadline = Instant::now() + REST_READY_LIMIT;
    loop {
        if let Ok(answer) = rest::get(
            jobmanager.rest_address(),
            "/jobmanager/config",
            Duration::from_millis(500),
        ) && answer.status == 200
        {
            let answered_at = Instant::now();
            let config = rest::parse_config_entries(&answer.body)?;
            let port = |key: &str| {
                config
                    .get(key)
                    .and_then(|value| value.parse::<u16>().ok())
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("/jobmanager/config has no port in {key}: {:?}", config),
                        )
                    })
            };
            return Ok((
                answered_at,
                port("jobmanager.rpc.port")?,
                port("blob.server.port")?,
            ));
        }
        if !jobmanager.is_running() {
            return Err(io::Error::other(format!(
                "the JobManager exited before its REST answered; its log:\n{}",
                log_tail(&jobmanager.log(), 80)
            )));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the JobManager's REST did not answer 200 within {REST_READY_LIMIT:?}; the \
                     end of its log:\n{}",
                    log_tail(&jobmanager.log(), 80)
                ),
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn in_version(version: &str, when: &str, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("Flink {version}, {when}: {error}"))
}
