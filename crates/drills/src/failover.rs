//! The article's setup under a JobManager failure: a streaming job in application mode with 1 s
//! checkpoints and an exactly-once FileSink, a TaskManager, ZooKeeper HA; the JobManager is
//! killed mid-stream and started again at once (a container restart). One run of one variant:
//! how the TaskManager reaches the JobManager (its pod address, or a Service kept right by
//! port-sync or by the article's shell loop, or a Service with pinned ports and no sidecar). It
//! reports the milestones after the kill, the checkpoint restored and whether the output holds
//! every record exactly once.
//!
//! Real: Flink 2.3, ZooKeeper, port-sync (the built binary), the shell loop (sh, curl, jq),
//! kube's client. Stand-in: the Kubernetes API server, and the forwarder playing kube-proxy
//! (optionally with kube-proxy's sync delay, and dropping attempts to unlisted ports).

use crate::scenario::Addresses;
use fixtures::flink::{
    ExactlyOnce, Flink, JobManager, JobManagerConfig, StreamingJob, TaskManager, TaskManagerConfig,
    restored_checkpoint,
};
use fixtures::forwarder::{Forwarder, ForwarderConfig, Unlisted};
use fixtures::ports::free_port;
use fixtures::process::{Echo, Process};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use kube_stand_in::ApiServerConfig;
use kube_stand_in::service_bed::{NAMESPACE, SERVICE, ServiceBed};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the TaskManager reaches the JobManager.
#[derive(Debug, Clone)]
pub enum Variant {
    /// `jobmanager.rpc.address` is the JobManager's pod address: Flink's own recommendation.
    PodIp,
    /// The Service address, random RPC and blob ports, port-sync (this binary) patching the
    /// Service.
    PortSync(PathBuf),
    /// The Service address, random RPC and blob ports, the article's sidecar loop (this
    /// script, tests/bench/port-sync-loop.sh) patching the Service: every second curl and jq
    /// read the RPC port and a JSON Patch sets the Service's first port (rpc) to it. It never
    /// touches the blob port.
    ShellLoop(PathBuf),
    /// The Service address, RPC and blob pinned to the Service's 6123 and 6124: no sidecar.
    Pinned,
}

impl Variant {
    pub fn name(&self) -> &'static str {
        match self {
            Variant::PodIp => "pod IP, no Service",
            Variant::PortSync(_) => "Service + port-sync",
            Variant::ShellLoop(_) => "Service + the article's shell loop",
            Variant::Pinned => "Service, pinned ports, no sidecar",
        }
    }
}

/// How the JobManager goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: a crashed container. Its ZooKeeper session lives on until it expires.
    Kill,
    /// SIGTERM, SIGKILL after the grace period: a pod deletion, `helm upgrade` with the
    /// Recreate strategy.
    Term,
}

/// The kubelet's default `terminationGracePeriodSeconds`.
const TERMINATION_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct FailoverConfig {
    pub variant: Variant,
    pub stop: Stop,
    /// The job writes 1..=count ...
    pub count: u64,
    /// ... this many a second.
    pub rate: u64,
    /// Completed checkpoints to wait for before the kill, so that the kill is mid-stream.
    pub checkpoints_before_kill: u64,
    /// Flink settings for every process, after the test bed's own (the levers measured).
    pub flink_settings: Vec<(String, String)>,
    /// ZooKeeper's tickTime: the server clamps a session timeout to [2, 20] ticks, so this
    /// bounds how long the old JobManager's session outlives its kill (500 ms: at most 10 s;
    /// the chart's 2000 ms: at most 40 s).
    pub zookeeper_tick_ms: u32,
    /// The forwarder's kube-proxy sync delay: a Service change reaches the "Service IP" this
    /// long after it is made.
    pub proxy_sync_delay: Duration,
    /// What a dial of a port the Service does not list meets at the "Service IP".
    pub proxy_unlisted: Unlisted,
    pub echo: Echo,
}

impl FailoverConfig {
    pub fn new(variant: Variant) -> FailoverConfig {
        FailoverConfig {
            variant,
            stop: Stop::Kill,
            count: 30_000,
            rate: 2_000,
            checkpoints_before_kill: 2,
            flink_settings: Vec::new(),
            zookeeper_tick_ms: 500,
            proxy_sync_delay: Duration::ZERO,
            proxy_unlisted: Unlisted::Refuse,
            echo: Echo::Quiet,
        }
    }
}

/// Seconds after the kill at which each milestone was first seen (`None`: never, within the
/// run's limit).
#[derive(Debug, Clone, Default)]
pub struct Milestones {
    /// The new JobManager's REST socket answers at all (503 while it waits for leadership):
    /// its JVM is up.
    pub jobmanager_up: Option<Duration>,
    /// `/jobmanager/config` answers 200: the new JobManager leads.
    pub leader: Option<Duration>,
    /// The Service lists the new JobManager's live ports (port-sync and pinned variants; the
    /// RPC port alone for the shell loop, which keeps no other).
    pub service_right: Option<Duration>,
    /// The job is RUNNING again on the new JobManager.
    pub job_running: Option<Duration>,
    /// A checkpoint completed after the restore.
    pub first_checkpoint: Option<Duration>,
    /// The TaskManager is registered at the new ResourceManager.
    pub taskmanager_registered: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct FailoverReport {
    pub variant: &'static str,
    pub stop: Stop,
    /// With SIGTERM: how long the JobManager's JVM took to end.
    pub shutdown_took: Option<Duration>,
    pub milestones: Milestones,
    /// The checkpoint the new JobManager restored the job from (`None`: from scratch), and
    /// Flink's log line that says so.
    pub restored_checkpoint: Option<u64>,
    pub restore_line: Option<String>,
    /// Completed checkpoints before the kill.
    pub checkpoints_before_kill: u64,
    /// Times the TaskManager waited out `cluster.registration.error-delay` after the kill.
    pub registration_error_delays: usize,
    pub exactly_once: ExactlyOnce,
    /// The job's final state on the last JobManager.
    pub final_state: String,
}

/// How long any one wait of a run may take before the run fails.
pub(crate) const LIMIT: Duration = Duration::from_secs(120);

impl FailoverReport {
    /// What happened after the kill, in a few lines for a person: how long the job was down
    /// and where the time went, the checkpoint it resumed from, and the output's verdict.
    pub fn story(&self) -> Vec<String> {
        let at = |value: Option<Duration>| {
            value.map_or_else(
                || "never".to_owned(),
                |d| format!("{:.1}s", d.as_secs_f64()),
            )
        };
        let m = &self.milestones;
        vec![
            format!(
                "the job was down {} ({}): the new JobManager's JVM answered at {}, it led at {} \
                 (when ZooKeeper expired the killed one's session), the Service was right at {}, \
                 the job RUNNING again at {}, its first checkpoint after the restore at {}; the \
                 TaskManager registered at {} ({} registration error-delay(s) waited out)",
                at(m.job_running),
                self.variant,
                at(m.jobmanager_up),
                at(m.leader),
                at(m.service_right),
                at(m.job_running),
                at(m.first_checkpoint),
                at(m.taskmanager_registered),
                self.registration_error_delays
            ),
            match (self.restored_checkpoint, &self.restore_line) {
                (Some(id), Some(line)) => format!(
                    "resumed from checkpoint {id} ({} completed before the kill): {}",
                    self.checkpoints_before_kill,
                    line.trim()
                ),
                _ => "NOT resumed from a checkpoint: the job started from scratch".to_owned(),
            },
            format!("output: {} ({})", self.exactly_once, self.final_state),
        ]
    }
}

/// Runs the scenario once. Every process it starts is stopped when it returns.
pub fn run(flink: &Flink, config: &FailoverConfig) -> Result<FailoverReport, String> {
    let context = |what: &'static str| move |error: std::io::Error| format!("{what}: {error}");
    let work = tempfile::Builder::new()
        .prefix("testbed-failover-")
        .tempdir()
        .map_err(context("make the run's dir"))?;
    let job = StreamingJob::compile(
        flink,
        &work.path().join("job"),
        config.count,
        config.rate,
        &work.path().join("output"),
    )
    .map_err(context("compile the streaming job"))?;
    let zookeeper = Ensemble::start_standalone(EnsembleConfig {
        tick_ms: config.zookeeper_tick_ms,
        ..EnsembleConfig::standalone()
    })
    .map_err(context("start ZooKeeper"))?;
    let addresses = Addresses::random();
    let rest_port = free_port();
    let behind_service = !matches!(config.variant, Variant::PodIp);
    let (rpc_port, blob_port) = match config.variant {
        Variant::Pinned => (6123, 6124),
        _ => (0, 0),
    };
    let mut jobmanager_config = JobManagerConfig::new(&zookeeper.connect_string())
        .advertised_address(if behind_service {
            addresses.service
        } else {
            addresses.jobmanager_pod
        })
        .bind_address(addresses.jobmanager_pod)
        .rest_port(rest_port)
        .rpc_port(rpc_port)
        .blob_port(blob_port)
        .set(
            "execution.checkpointing.dir",
            &format!("file://{}", work.path().join("checkpoints").display()),
        )
        // Job and checkpoint details straight from the JobManager, not from 3 s caches.
        .set("web.refresh-interval", "100")
        .set("rest.cache.execution-graph.timeout", "100 ms")
        .set("rest.cache.checkpoint-statistics.timeout", "100 ms")
        .application(job.application())
        .echo(config.echo.clone());
    for (key, value) in &config.flink_settings {
        jobmanager_config = jobmanager_config.set(key, value);
    }

    let bed = if behind_service {
        Some(Arc::new(
            ServiceBed::start(ApiServerConfig::default(), Duration::from_secs(24 * 3600))
                .map_err(context("start the Kubernetes API stand-in"))?,
        ))
    } else {
        None
    };
    let _forwarder = match &bed {
        Some(bed) => Some(
            Forwarder::for_service_bed(
                ForwarderConfig {
                    sync_delay: config.proxy_sync_delay,
                    unlisted: config.proxy_unlisted,
                    ..ForwarderConfig::new(addresses.service, addresses.jobmanager_pod)
                },
                Arc::clone(bed),
                SERVICE,
            )
            .map_err(context("start the forwarder"))?,
        ),
        None => None,
    };
    let scratch = work.path().join("kube");
    let _sidecar = match (&config.variant, &bed) {
        (Variant::PortSync(binary), Some(bed)) => {
            let mut command = Command::new(binary);
            command
                .env("KUBECONFIG", &bed.kubeconfig)
                .env_remove("KUBERNETES_SERVICE_HOST")
                .args(ServiceBed::port_sync_args(&format!(
                    "http://{}:{rest_port}",
                    addresses.jobmanager_pod
                )))
                .args(["--listen", &format!("127.0.0.1:{}", free_port())]);
            Some(
                Process::spawn("port-sync", command, config.echo.clone())
                    .map_err(context("start port-sync"))?,
            )
        }
        (Variant::ShellLoop(script), Some(bed)) => {
            std::fs::create_dir_all(&scratch).map_err(context("make the loop's dir"))?;
            let ca_file = scratch.join("ca.pem");
            std::fs::write(&ca_file, bed.api.ca_pem()).map_err(context("write the API's CA"))?;
            // The same Service and service account as port-sync: its Role (get, list, watch,
            // patch on this one Service) is all the loop needs.
            let mut command = Command::new("sh");
            command
                .arg(script)
                .env(
                    "JM_URL",
                    format!("http://{}:{rest_port}", addresses.jobmanager_pod),
                )
                .env("API_URL", bed.api.url())
                .env("CA_FILE", &ca_file)
                .env("TOKEN_FILE", &bed.token_file)
                .env("NAMESPACE", NAMESPACE)
                .env("SERVICE", SERVICE);
            Some(
                Process::spawn("shell loop", command, config.echo.clone())
                    .map_err(context("start the shell loop"))?,
            )
        }
        _ => None,
    };

    let mut jobmanager =
        JobManager::start(flink, jobmanager_config).map_err(context("start the JobManager"))?;
    jobmanager
        .wait_rest_ready(LIMIT)
        .map_err(context("wait for the JobManager"))?;
    let mut taskmanager_config = TaskManagerConfig::for_jobmanager(&jobmanager)
        .advertised_address(addresses.taskmanager_pod)
        .bind_address(addresses.taskmanager_pod)
        .user_jar(&job.jar)
        .echo(config.echo.clone());
    for (key, value) in &config.flink_settings {
        taskmanager_config = taskmanager_config.set(key, value);
    }
    let taskmanager =
        TaskManager::start(flink, taskmanager_config).map_err(context("start the TaskManager"))?;

    let before_kill = wait_for(LIMIT, "checkpoints before the kill", || {
        let status = job_status(&jobmanager)?;
        (status.state == "RUNNING"
            && status.completed_checkpoints >= config.checkpoints_before_kill)
            .then_some(status.completed_checkpoints)
    })
    .map_err(|error| format!("{error}\n{}", tail(&jobmanager.log())))?;
    let taskmanager_log_before = taskmanager.log().len();

    let killed = Instant::now();
    let shutdown_took = match config.stop {
        Stop::Kill => {
            jobmanager
                .restart()
                .map_err(context("kill and restart the JobManager"))?;
            None
        }
        Stop::Term => Some(
            jobmanager
                .restart_after_sigterm(TERMINATION_GRACE)
                .map_err(context("stop (SIGTERM) and restart the JobManager"))?,
        ),
    };
    let rpc_only = matches!(config.variant, Variant::ShellLoop(_));
    let milestones = watch_recovery(&jobmanager, bed.as_deref(), rpc_only, killed, before_kill)?;

    let (final_state, exactly_once) = finish(&mut jobmanager, &job)?;
    let taskmanager_log = taskmanager.log();
    let jobmanager_log = jobmanager.log();
    let restored = restored_checkpoint(&jobmanager_log);
    Ok(FailoverReport {
        variant: config.variant.name(),
        stop: config.stop,
        shutdown_took,
        milestones,
        restored_checkpoint: restored.map(|(id, _)| id),
        restore_line: restored.map(|(_, line)| line.to_owned()),
        checkpoints_before_kill: before_kill,
        registration_error_delays: registration_error_delays(
            taskmanager_log.get(taskmanager_log_before..).unwrap_or(""),
        ),
        exactly_once,
        final_state,
    })
}

/// The recovery settings of the chart's `flinkConfiguration` (ZooKeeper client timeouts and
/// the TaskManagers' registration timing), from the text of its values.yaml: what the chart
/// renders into every Flink pod's configuration, so the drill can measure recovery with it.
pub fn chart_recovery_settings(values_yaml: &str) -> Result<Vec<(String, String)>, String> {
    let values: serde_json::Value = serde_saphyr::from_str(values_yaml)
        .map_err(|error| format!("the chart's values.yaml does not parse: {error}"))?;
    let configuration = values
        .get("flinkConfiguration")
        .and_then(serde_json::Value::as_object)
        .ok_or("the chart's values.yaml has no flinkConfiguration map")?;
    Ok(configuration
        .iter()
        .filter(|(key, _)| {
            key.starts_with("cluster.registration.")
                || key.starts_with("high-availability.zookeeper.client.")
        })
        .map(|(key, value)| {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            (key.clone(), text)
        })
        .collect())
}

/// The chart's JobManager port settings (`highAvailability.jobManagerPort`, `blobServerPort`)
/// as the Flink keys it renders them into: a range each, of which Flink binds the first free
/// port, so a JobManager restarted in its pod (or a new pod) takes the same ports again.
pub fn chart_port_settings(values_yaml: &str) -> Result<Vec<(String, String)>, String> {
    let values: serde_json::Value = serde_saphyr::from_str(values_yaml)
        .map_err(|error| format!("the chart's values.yaml does not parse: {error}"))?;
    let text = |pointer: &str| -> Result<String, String> {
        let value = values
            .pointer(pointer)
            .ok_or_else(|| format!("the chart's values.yaml has no {pointer}"))?;
        Ok(value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned))
    };
    Ok(vec![
        (
            "high-availability.jobmanager.port".to_owned(),
            text("/highAvailability/jobManagerPort")?,
        ),
        ("blob.server.port".to_owned(), text("/blobServerPort")?),
    ])
}

/// The chart's ZooKeeper `tickTime` (in its zoo.cfg template).
pub const CHART_ZOOKEEPER_TICK_MS: u32 = 2000;

/// Polls every 50 ms until every milestone is seen or the limit passes.
fn watch_recovery(
    jobmanager: &JobManager,
    bed: Option<&ServiceBed>,
    rpc_only: bool,
    killed: Instant,
    checkpoints_before_kill: u64,
) -> Result<Milestones, String> {
    let mut seen = Milestones::default();
    let mark = |slot: &mut Option<Duration>, reached: bool| {
        if reached && slot.is_none() {
            *slot = Some(killed.elapsed());
        }
    };
    while killed.elapsed() < LIMIT {
        if seen.jobmanager_up.is_none() {
            mark(
                &mut seen.jobmanager_up,
                jobmanager.rest_get("/jobmanager/config").is_ok(),
            );
        }
        let live_ports = jobmanager.live_ports().ok();
        mark(&mut seen.leader, live_ports.is_some());
        if let (Some((rpc, blob)), Some(bed)) = (live_ports, bed) {
            mark(
                &mut seen.service_right,
                bed.exposes(SERVICE, "rpc", rpc)
                    && (rpc_only || bed.exposes(SERVICE, "blob", blob)),
            );
        }
        if let Some(status) = job_status(jobmanager) {
            mark(&mut seen.job_running, status.state == "RUNNING");
            // Checkpoint ids go on from the restored one, so a count above the one before
            // the kill is a checkpoint of the new attempt.
            mark(
                &mut seen.first_checkpoint,
                status.latest_checkpoint_id > checkpoints_before_kill,
            );
        }
        mark(
            &mut seen.taskmanager_registered,
            jobmanager.taskmanagers().is_ok_and(|count| count >= 1),
        );
        let done = seen.leader.is_some()
            && (bed.is_none() || seen.service_right.is_some())
            && seen.job_running.is_some()
            && seen.first_checkpoint.is_some()
            && seen.taskmanager_registered.is_some();
        if done {
            return Ok(seen);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "the job did not recover within {LIMIT:?} of the kill: {seen:?}\n{}",
        tail(&jobmanager.log())
    ))
}

pub(crate) struct JobStatus {
    pub state: String,
    pub completed_checkpoints: u64,
    pub latest_checkpoint_id: u64,
}

/// The one job's state and checkpoint counts, from the REST API.
pub(crate) fn job_status(jobmanager: &JobManager) -> Option<JobStatus> {
    let overview = jobmanager.rest_get("/jobs/overview").ok()?;
    let overview: serde_json::Value = serde_json::from_str(&overview.body).ok()?;
    let job = overview.get("jobs")?.as_array()?.first()?;
    let id = job.get("jid")?.as_str()?;
    let state = job.get("state")?.as_str()?.to_owned();
    let checkpoints = jobmanager
        .rest_get(&format!("/jobs/{id}/checkpoints"))
        .ok()
        .and_then(|response| serde_json::from_str::<serde_json::Value>(&response.body).ok());
    let completed_checkpoints = checkpoints
        .as_ref()
        .and_then(|c| c.pointer("/counts/completed")?.as_u64())
        .unwrap_or(0);
    let latest_checkpoint_id = checkpoints
        .as_ref()
        .and_then(|c| c.pointer("/latest/completed/id")?.as_u64())
        .unwrap_or(0);
    Some(JobStatus {
        state,
        completed_checkpoints,
        latest_checkpoint_id,
    })
}

/// Waits for the application's job to end (its JobManager exits with it, or the job reaches a
/// terminal state), then judges the committed output: the final state and the verdict.
pub(crate) fn finish(
    jobmanager: &mut JobManager,
    job: &StreamingJob,
) -> Result<(String, ExactlyOnce), String> {
    let final_state = wait_for(
        Duration::from_secs(job.count / job.rate.max(1)) + LIMIT,
        "the job to finish",
        || {
            if !jobmanager.is_running() {
                return Some("FINISHED (application JobManager exited)".to_owned());
            }
            job_status(jobmanager)
                .filter(|status| is_terminal(&status.state))
                .map(|status| status.state)
        },
    )
    .map_err(|error| format!("{error}\n{}", tail(&jobmanager.log())))?;
    let exactly_once = job
        .judge_output()
        .map_err(|error| format!("read the job's output: {error}"))?;
    Ok((final_state, exactly_once))
}

pub(crate) fn is_terminal(state: &str) -> bool {
    matches!(state, "FINISHED" | "FAILED" | "CANCELED")
}

/// The TaskManager logs one "… retrying in 10000 ms" line each time it waits out
/// `cluster.registration.error-delay` before dialling the ResourceManager again.
pub fn registration_error_delays(taskmanager_log: &str) -> usize {
    taskmanager_log
        .lines()
        .filter(|line| line.contains("ResourceManager") && line.contains("retrying in"))
        .count()
}

pub(crate) fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("waited {limit:?} for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_port_ranges_are_read_from_its_values() {
        let values = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../helm/flink-ha/values.yaml"),
        )
        .unwrap();
        let settings = chart_port_settings(&values).unwrap();
        let keys: Vec<&str> = settings.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            ["high-availability.jobmanager.port", "blob.server.port"]
        );
        assert!(settings.iter().all(|(_, value)| !value.is_empty()));
    }

    #[test]
    fn the_charts_recovery_settings_are_read_from_its_values() {
        let values = include_str!("../../../helm/flink-ha/values.yaml");
        let settings = chart_recovery_settings(values).unwrap();
        let keys: Vec<&str> = settings.iter().map(|(key, _)| key.as_str()).collect();
        assert!(
            keys.contains(&"high-availability.zookeeper.client.session-timeout")
                && keys.contains(&"cluster.registration.error-delay"),
            "{settings:?}"
        );
        assert!(!keys.contains(&"parallelism.default"), "{settings:?}");
        assert!(chart_recovery_settings("flinkConfiguration: 3").is_err());
    }

    #[test]
    fn counts_the_taskmanagers_waits_for_the_resource_manager() {
        // The TaskManager's line when its first dial of the new ResourceManager is refused,
        // in the form Flink 2.3 logs it.
        let log = "2026-12-03 10:00:01,000 INFO  org.apache.flink.runtime.taskexecutor.TaskExecutor [] - Could not resolve ResourceManager address pekko.tcp://flink@127.0.0.2:40001/user/rpc/resourcemanager_1, retrying in 10000 ms: Could not connect to rpc endpoint under address pekko.tcp://flink@127.0.0.2:40001/user/rpc/resourcemanager_1.\n\
                   2026-12-03 10:00:11,000 INFO  org.apache.flink.runtime.taskexecutor.TaskExecutor [] - Successful registration at resource manager";
        assert_eq!(registration_error_delays(log), 1);
        assert_eq!(registration_error_delays(""), 0);
    }
}
