//! A Flink TaskManager in ZooKeeper HA mode: it learns the JobManager's address from
//! ZooKeeper (what the JobManager published as `jobmanager.rpc.address` and its live RPC
//! port), as the chart's TaskManagers do.

use super::Flink;
use super::daemon::{Daemon, Ha, Launch, SMALL_JVM_OPTIONS};
use super::jobmanager::JobManager;
use crate::process::Echo;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct TaskManagerConfig {
    pub zookeeper_quorum: String,
    /// Must be the JobManager's.
    pub cluster_id: String,
    /// Must be the JobManager's: HA services read blobs and job graphs from it.
    pub ha_storage_dir: PathBuf,
    /// `taskmanager.host`: what the TaskManager tells the JobManager to call it back at.
    pub advertised_address: IpAddr,
    /// `taskmanager.bind-host`.
    pub bind_address: IpAddr,
    /// `taskmanager.numberOfTaskSlots`.
    pub slots: u32,
    /// `taskmanager.memory.process.size`; about the smallest Flink's default fractions allow.
    pub process_memory: String,
    /// More settings, written last, so they override the ones above.
    pub extra: Vec<(String, String)>,
    /// An application's jar, put in `usrlib/` of the TaskManager's own Flink home (application
    /// mode ships no user code to TaskManagers).
    pub user_jar: Option<PathBuf>,
    pub echo: Echo,
}

impl TaskManagerConfig {
    /// A TaskManager of `jobmanager`'s cluster: same quorum, cluster id and HA storage.
    pub fn for_jobmanager(jobmanager: &JobManager) -> TaskManagerConfig {
        let config = jobmanager.config();
        TaskManagerConfig::new(
            &config.zookeeper_quorum,
            &config.cluster_id,
            jobmanager.ha_storage_dir(),
        )
    }

    pub fn new(zookeeper_quorum: &str, cluster_id: &str, ha_storage_dir: &Path) -> Self {
        TaskManagerConfig {
            zookeeper_quorum: zookeeper_quorum.to_owned(),
            cluster_id: cluster_id.to_owned(),
            ha_storage_dir: ha_storage_dir.to_owned(),
            advertised_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            slots: 1,
            process_memory: "1024m".to_owned(),
            extra: Vec::new(),
            user_jar: None,
            echo: Echo::Quiet,
        }
    }

    pub fn user_jar(mut self, jar: &Path) -> Self {
        self.user_jar = Some(jar.to_path_buf());
        self
    }

    pub fn advertised_address(mut self, address: IpAddr) -> Self {
        self.advertised_address = address;
        self
    }

    pub fn bind_address(mut self, address: IpAddr) -> Self {
        self.bind_address = address;
        self
    }

    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn echo(mut self, echo: Echo) -> Self {
        self.echo = echo;
        self
    }
}

/// A running (or stopped) TaskManager; dropping it kills the JVM and removes its files.
pub struct TaskManager {
    config: TaskManagerConfig,
    daemon: Daemon,
}

impl TaskManager {
    /// Writes the config and launches `bin/taskmanager.sh start-foreground`; returns at once
    /// (see [`JobManager::wait_taskmanagers`]).
    pub fn start(flink: &Flink, config: TaskManagerConfig) -> io::Result<TaskManager> {
        let prepared = Daemon::prepare(
            flink,
            "testbed-flink-tm-",
            &Ha {
                quorum: &config.zookeeper_quorum,
                cluster_id: &config.cluster_id,
                storage_dir: Some(&config.ha_storage_dir),
            },
        )?;
        let mut settings = prepared.settings;
        settings.set("taskmanager.host", config.advertised_address.to_string());
        settings.set("taskmanager.bind-host", config.bind_address.to_string());
        settings.set("taskmanager.numberOfTaskSlots", config.slots.to_string());
        settings.set(
            "taskmanager.memory.process.size",
            config.process_memory.as_str(),
        );
        settings.set("env.java.opts.taskmanager", SMALL_JVM_OPTIONS);
        for (key, value) in &config.extra {
            settings.set(key.as_str(), value.as_str());
        }
        let launch = match &config.user_jar {
            None => Launch::of(flink, "taskmanager.sh"),
            Some(jar) => Launch::with_user_jar(
                flink,
                "taskmanager.sh",
                jar,
                &prepared.dir.path().join("home"),
            )?,
        };
        let daemon = Daemon::start(
            flink,
            launch,
            "flink-taskmanager",
            config.echo.clone(),
            prepared.dir,
            &settings,
        )?;
        Ok(TaskManager { config, daemon })
    }

    pub fn config(&self) -> &TaskManagerConfig {
        &self.config
    }

    /// Config dir, logs and temp files of this TaskManager.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// Kills the JVM (SIGKILL) and starts it again with the same config.
    pub fn restart(&mut self) -> io::Result<()> {
        self.daemon.restart()
    }

    /// Kills the JVM (SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    /// The JVM's pid (the script execs it), while started.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// An error, with the log, if the JVM has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        self.daemon.check_alive()
    }

    /// Flink's console log of every run so far, for failure messages.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}
