//! A ZooKeeper leader restarted under the running streaming job: the article's setup (Flink in
//! application mode, 1 s checkpoints, an exactly-once FileSink) on a 3-member ensemble, whose
//! leader is killed and started again while the job runs. Every member then stops serving until
//! a new leader is elected, so every Flink client sees its connection SUSPENDED; what Flink does
//! next depends on `high-availability.zookeeper.client.tolerate-suspended-connections`: false
//! (Flink's default) gives up leadership at once and recovers the job from its checkpoint when
//! the connection is back; true keeps leadership unless the session is LOST.
//!
//! The TaskManager reaches the JobManager by pod address: the question is Flink's, the Service
//! and port-sync play no part in it (the JobManager keeps its process and ports).

use crate::failover::{LIMIT, finish, is_terminal, job_status, tail, wait_for};
use fixtures::flink::{
    ExactlyOnce, Flink, JobManager, JobManagerConfig, StreamingJob, TaskManager, TaskManagerConfig,
};
use fixtures::ports::free_port;
use fixtures::process::Echo;
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The Flink setting this drill is about.
pub const TOLERATE_SUSPENDED: &str =
    "high-availability.zookeeper.client.tolerate-suspended-connections";

#[derive(Debug, Clone)]
pub struct ZookeeperRestartConfig {
    /// `tolerate-suspended-connections`.
    pub tolerate_suspended: bool,
    /// How long the killed leader stays down before it starts again.
    pub down_for: Duration,
    pub count: u64,
    pub rate: u64,
    pub checkpoints_before_restart: u64,
    /// Flink settings for every process, after the drill's own.
    pub flink_settings: Vec<(String, String)>,
    pub zookeeper_tick_ms: u32,
    pub echo: Echo,
}

impl ZookeeperRestartConfig {
    pub fn new(tolerate_suspended: bool) -> ZookeeperRestartConfig {
        ZookeeperRestartConfig {
            tolerate_suspended,
            down_for: Duration::ZERO,
            count: 40_000,
            rate: 2_000,
            checkpoints_before_restart: 2,
            flink_settings: Vec::new(),
            zookeeper_tick_ms: 500,
            echo: Echo::Quiet,
        }
    }
}

/// Seconds after the leader's kill at which each was first seen.
#[derive(Debug, Clone, Default)]
pub struct Disruption {
    /// A majority serves again (a new leader elected).
    pub quorum_back: Option<Duration>,
    /// The job was seen not RUNNING (or the REST API without a leader).
    pub job_interrupted: Option<Duration>,
    /// RUNNING again after an interruption.
    pub job_running_again: Option<Duration>,
    /// A checkpoint completed after the restart.
    pub first_checkpoint: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ZookeeperRestartReport {
    pub tolerate_suspended: bool,
    pub disruption: Disruption,
    /// The JobManager log's job state changes away from RUNNING after the restart.
    pub job_state_changes: Vec<String>,
    /// Whether the JobManager's log says it lost leadership after the restart.
    pub leadership_revoked: bool,
    pub exactly_once: ExactlyOnce,
    pub final_state: String,
}

/// How long the drill watches after the restart: beyond the session timeout, so that a late
/// effect (a LOST session) is seen too.
const WATCH: Duration = Duration::from_secs(30);

pub fn run(
    flink: &Flink,
    config: &ZookeeperRestartConfig,
) -> Result<ZookeeperRestartReport, String> {
    let context = |what: &'static str| move |error: std::io::Error| format!("{what}: {error}");
    let work = tempfile::Builder::new()
        .prefix("drills-zookeeper-restart-")
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
    let mut zookeeper = Ensemble::new(EnsembleConfig {
        tick_ms: config.zookeeper_tick_ms,
        ..EnsembleConfig::ensemble(3)
    })
    .map_err(context("write the ZooKeeper ensemble"))?;
    zookeeper.start_all().map_err(context("start ZooKeeper"))?;
    zookeeper
        .wait_majority_serving(LIMIT)
        .map_err(context("wait for a ZooKeeper majority"))?;

    let jobmanager_address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let mut jobmanager_config = JobManagerConfig::new(&zookeeper.connect_string())
        .advertised_address(jobmanager_address)
        .bind_address(jobmanager_address)
        .rest_port(free_port())
        .set(
            "execution.checkpointing.dir",
            &format!("file://{}", work.path().join("checkpoints").display()),
        )
        .set("web.refresh-interval", "100")
        .set("rest.cache.execution-graph.timeout", "100 ms")
        .set("rest.cache.checkpoint-statistics.timeout", "100 ms")
        .set(TOLERATE_SUSPENDED, &config.tolerate_suspended.to_string())
        .application(job.application())
        .echo(config.echo.clone());
    for (key, value) in &config.flink_settings {
        jobmanager_config = jobmanager_config.set(key, value);
    }
    let mut jobmanager =
        JobManager::start(flink, jobmanager_config).map_err(context("start the JobManager"))?;
    jobmanager
        .wait_rest_ready(LIMIT)
        .map_err(context("wait for the JobManager"))?;
    let mut taskmanager_config = TaskManagerConfig::for_jobmanager(&jobmanager)
        .advertised_address(jobmanager_address)
        .bind_address(jobmanager_address)
        .user_jar(&job.jar)
        .set(TOLERATE_SUSPENDED, &config.tolerate_suspended.to_string())
        .echo(config.echo.clone());
    for (key, value) in &config.flink_settings {
        taskmanager_config = taskmanager_config.set(key, value);
    }
    let _taskmanager =
        TaskManager::start(flink, taskmanager_config).map_err(context("start the TaskManager"))?;

    let latest_before = wait_for(LIMIT, "checkpoints before the restart", || {
        let status = job_status(&jobmanager)?;
        (status.state == "RUNNING"
            && status.completed_checkpoints >= config.checkpoints_before_restart)
            .then_some(status.latest_checkpoint_id)
    })
    .map_err(|error| format!("{error}\n{}", tail(&jobmanager.log())))?;
    let leader = (0..zookeeper.len())
        .find(|&index| {
            zookeeper
                .ask(index, "srvr")
                .is_ok_and(|answer| answer.contains("Mode: leader"))
        })
        .ok_or("no ZooKeeper member says it leads")?;
    let log_before = jobmanager.log().len();

    let killed = Instant::now();
    zookeeper.stop(leader);
    std::thread::sleep(config.down_for);
    zookeeper
        .start(leader)
        .map_err(context("start the ZooKeeper leader again"))?;
    let mut seen = Disruption::default();
    while killed.elapsed() < WATCH {
        let now = Some(killed.elapsed());
        if seen.quorum_back.is_none() && zookeeper.serving_count() * 2 > zookeeper.len() {
            seen.quorum_back = now;
        }
        match job_status(&jobmanager) {
            Some(status) if status.state == "RUNNING" => {
                if seen.job_interrupted.is_some() && seen.job_running_again.is_none() {
                    seen.job_running_again = now;
                }
                if seen.first_checkpoint.is_none() && status.latest_checkpoint_id > latest_before {
                    seen.first_checkpoint = now;
                }
            }
            Some(status) if is_terminal(&status.state) => break,
            _ => {
                if seen.job_interrupted.is_none() {
                    seen.job_interrupted = now;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let (final_state, exactly_once) = finish(&mut jobmanager, &job)?;
    let log = jobmanager.log();
    let after = log.get(log_before..).unwrap_or("");
    Ok(ZookeeperRestartReport {
        tolerate_suspended: config.tolerate_suspended,
        disruption: seen,
        job_state_changes: job_state_changes(after),
        leadership_revoked: leadership_revoked(after),
        exactly_once,
        final_state,
    })
}

/// "Job NAME (ID) switched from state RUNNING to X." lines of a JobManager log, as "RUNNING
/// to X", but for the job's normal end (FINISHED).
pub fn job_state_changes(jobmanager_log: &str) -> Vec<String> {
    jobmanager_log
        .lines()
        .filter(|line| line.contains("switched from state RUNNING to"))
        .filter(|line| line.contains("Job ") && !line.contains("to FINISHED"))
        .filter_map(|line| {
            let at = line.find("switched from state ")?;
            Some(
                line[at + "switched from state ".len()..]
                    .trim_end_matches('.')
                    .to_owned(),
            )
        })
        .collect()
}

/// Whether a JobManager log says a component lost its ZooKeeper leadership.
pub fn leadership_revoked(jobmanager_log: &str) -> bool {
    jobmanager_log.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.contains("revok") && line.contains("leadership")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_state_changes_are_read_from_the_jobmanagers_log() {
        let log = "2026-12-06 INFO JobMaster [] - Job count to 40000 (abc) switched from state RUNNING to SUSPENDED.\n\
                   2026-12-06 INFO Execution [] - Source: Sequence (1/1) switched from state RUNNING to CANCELING.\n\
                   2026-12-06 INFO JobMaster [] - Job count to 40000 (abc) switched from state CREATED to RUNNING.\n\
                   2026-12-06 INFO JobMaster [] - Job count to 40000 (abc) switched from state RUNNING to FINISHED.\n";
        assert_eq!(job_state_changes(log), ["RUNNING to SUSPENDED"]);
        assert!(!leadership_revoked(log));
        assert!(leadership_revoked(
            "INFO DefaultLeaderElectionService [] - Revoking leadership of JobMaster."
        ));
    }
}
