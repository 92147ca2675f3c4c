//! A Flink JobManager (standalone session cluster, or application mode with one job) in
//! ZooKeeper HA mode. Its RPC and blob
//! server ports are random unless pinned, as in a default HA deployment; port-sync's tests and
//! the demo read them back from `/jobmanager/config`.

use super::Flink;
use super::daemon::{self, Daemon, Ha, Launch, SMALL_JVM_OPTIONS};
use super::rest::{self, Endpoint, Response};
use super::tls::RestTls;
use crate::ports::free_port;
use crate::process::Echo;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Each REST request of the helpers below; Flink answers in milliseconds once up.
const REST_REQUEST_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct JobManagerConfig {
    /// `high-availability.zookeeper.quorum`, e.g. `Ensemble::connect_string()`.
    pub zookeeper_quorum: String,
    /// `high-availability.cluster-id`; random by default, so clusters sharing a ZooKeeper
    /// stay apart.
    pub cluster_id: String,
    /// `jobmanager.rpc.address`: what the JobManager publishes in ZooKeeper and so where
    /// TaskManagers connect (the demo's "Service" address).
    pub advertised_address: IpAddr,
    /// `jobmanager.bind-host`, `rest.bind-address` and `rest.address`: where every socket
    /// listens (the demo's "pod" address).
    pub bind_address: IpAddr,
    /// `rest.port`; `None`: a free port, chosen once and kept across restarts.
    pub rest_port: Option<u16>,
    /// `high-availability.jobmanager.port`; 0: a random port at every start.
    pub rpc_port: u16,
    /// `blob.server.port`; 0: a random port at every start.
    pub blob_port: u16,
    /// `jobmanager.memory.process.size`.
    pub process_memory: String,
    /// `high-availability.storageDir` (as a local dir); `None`: inside the JobManager's dir.
    pub ha_storage_dir: Option<PathBuf>,
    /// More settings, written last, so they override the ones above.
    pub extra: Vec<(String, String)>,
    /// With REST SSL on: the client that reads the REST API (trusting the REST CA alone).
    pub rest_tls: Option<Arc<rustls::ClientConfig>>,
    /// `Some`: application mode (`standalone-job.sh`), running this one job; `None`: a session
    /// cluster (`jobmanager.sh`).
    pub application: Option<Application>,
    pub echo: Echo,
}

/// The one job of an application-mode JobManager, as the article runs it: the job's jar in
/// `usrlib/` of the JobManager's Flink home, its main class named on the command line.
#[derive(Debug, Clone)]
pub struct Application {
    pub jar: PathBuf,
    pub class: String,
    pub args: Vec<String>,
}

impl JobManagerConfig {
    pub fn new(zookeeper_quorum: &str) -> JobManagerConfig {
        JobManagerConfig {
            zookeeper_quorum: zookeeper_quorum.to_owned(),
            cluster_id: daemon::default_cluster_id(),
            advertised_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rest_port: None,
            rpc_port: 0,
            blob_port: 0,
            process_memory: "768m".to_owned(),
            ha_storage_dir: None,
            extra: Vec::new(),
            rest_tls: None,
            application: None,
            echo: Echo::Quiet,
        }
    }

    /// Application mode: runs `application`'s job (see [`Application`]).
    pub fn application(mut self, application: Application) -> Self {
        self.application = Some(application);
        self
    }

    pub fn cluster_id(mut self, id: &str) -> Self {
        self.cluster_id = id.to_owned();
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

    pub fn rest_port(mut self, port: u16) -> Self {
        self.rest_port = Some(port);
        self
    }

    pub fn rpc_port(mut self, port: u16) -> Self {
        self.rpc_port = port;
        self
    }

    pub fn blob_port(mut self, port: u16) -> Self {
        self.blob_port = port;
        self
    }

    pub fn ha_storage_dir(mut self, dir: &Path) -> Self {
        self.ha_storage_dir = Some(dir.to_owned());
        self
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }

    /// REST over HTTPS only (`security.ssl.rest.*`) with `tls`'s stores, which must outlive
    /// the JobManager; the helpers below then read the REST API over TLS, verified.
    pub fn rest_tls(mut self, tls: &RestTls) -> Self {
        self.extra.extend(tls.flink_settings());
        self.rest_tls = Some(tls.client_config());
        self
    }

    pub fn echo(mut self, echo: Echo) -> Self {
        self.echo = echo;
        self
    }
}

/// A running (or stopped) JobManager; dropping it kills the JVM and removes its files.
pub struct JobManager {
    config: JobManagerConfig,
    rest_port: u16,
    storage_dir: PathBuf,
    daemon: Daemon,
}

impl JobManager {
    /// Writes the config and launches `bin/jobmanager.sh start-foreground`; returns at once
    /// (see [`JobManager::wait_rest_ready`]).
    pub fn start(flink: &Flink, config: JobManagerConfig) -> io::Result<JobManager> {
        let prepared = Daemon::prepare(
            flink,
            "testbed-flink-jm-",
            &Ha {
                quorum: &config.zookeeper_quorum,
                cluster_id: &config.cluster_id,
                storage_dir: config.ha_storage_dir.as_deref(),
            },
        )?;
        let rest_port = config.rest_port.unwrap_or_else(free_port);
        let mut settings = prepared.settings;
        let bind = config.bind_address.to_string();
        settings.set(
            "jobmanager.rpc.address",
            config.advertised_address.to_string(),
        );
        settings.set("jobmanager.bind-host", bind.as_str());
        settings.set("rest.address", bind.as_str());
        settings.set("rest.bind-address", bind.as_str());
        settings.set("rest.port", rest_port.to_string());
        settings.set(
            "high-availability.jobmanager.port",
            config.rpc_port.to_string(),
        );
        settings.set("blob.server.port", config.blob_port.to_string());
        settings.set(
            "jobmanager.memory.process.size",
            config.process_memory.as_str(),
        );
        settings.set(
            "web.tmpdir",
            prepared
                .dir
                .path()
                .join("tmp")
                .join("web")
                .display()
                .to_string(),
        );
        settings.set("env.java.opts.jobmanager", SMALL_JVM_OPTIONS);
        for (key, value) in &config.extra {
            settings.set(key.as_str(), value.as_str());
        }
        let launch = match &config.application {
            None => Launch::of(flink, "jobmanager.sh"),
            Some(application) => Launch {
                args: ["--job-classname".to_owned(), application.class.clone()]
                    .into_iter()
                    .chain(application.args.iter().cloned())
                    .collect(),
                ..Launch::with_user_jar(
                    flink,
                    "standalone-job.sh",
                    &application.jar,
                    &prepared.dir.path().join("home"),
                )?
            },
        };
        let daemon = Daemon::start(
            flink,
            launch,
            "flink-jobmanager",
            config.echo.clone(),
            prepared.dir,
            &settings,
        )?;
        Ok(JobManager {
            config,
            rest_port,
            storage_dir: prepared.storage_dir,
            daemon,
        })
    }

    pub fn config(&self) -> &JobManagerConfig {
        &self.config
    }

    pub fn rest_address(&self) -> SocketAddr {
        SocketAddr::new(self.config.bind_address, self.rest_port)
    }

    /// How the test bed reads the REST API: plain, or TLS when REST SSL is on.
    pub fn rest_endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.rest_address(),
            tls: self.config.rest_tls.clone(),
        }
    }

    /// `http://BIND:REST_PORT`, or `https://…` with REST SSL on.
    pub fn rest_url(&self) -> String {
        self.rest_endpoint().url()
    }

    /// The `high-availability.storageDir` in use (TaskManagers of the cluster share it).
    pub fn ha_storage_dir(&self) -> &Path {
        &self.storage_dir
    }

    /// Config dir, logs and temp files of this JobManager.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// `GET path` from the REST API, whatever the status.
    pub fn rest_get(&self, path: &str) -> io::Result<Response> {
        self.rest_endpoint().get(path, REST_REQUEST_LIMIT)
    }

    /// Waits until `GET /jobmanager/config` answers 200 — the JobManager has won the leader
    /// election in ZooKeeper and serves — and returns the time since its (re)start. Fails at
    /// once, with the log, if the JVM exits.
    pub fn wait_rest_ready(&mut self, limit: Duration) -> io::Result<Duration> {
        let endpoint = self.rest_endpoint();
        daemon::wait_until(&mut self.daemon, limit, "REST ready", || {
            endpoint
                .get("/jobmanager/config", Duration::from_secs(1))
                .map(|response| response.status == 200)
        })
    }

    /// The running configuration as `/jobmanager/config` reports it, with the bound ports.
    pub fn live_config(&self) -> io::Result<BTreeMap<String, String>> {
        let response = self.rest_get("/jobmanager/config")?;
        if response.status != 200 {
            return Err(io::Error::other(format!(
                "GET {}/jobmanager/config answered {}: {}",
                self.rest_url(),
                response.status,
                response.body
            )));
        }
        rest::parse_config_entries(&response.body)
    }

    /// `(jobmanager.rpc.port, blob.server.port)` as the running JobManager reports them.
    pub fn live_ports(&self) -> io::Result<(u16, u16)> {
        let config = self.live_config()?;
        let port = |key: &str| -> io::Result<u16> {
            let value = config.get(key).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("/jobmanager/config has no {key}"),
                )
            })?;
            value.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("/jobmanager/config reports {key} = {value:?}, not a port"),
                )
            })
        };
        Ok((port("jobmanager.rpc.port")?, port("blob.server.port")?))
    }

    /// How many TaskManagers are registered, from `/taskmanagers`.
    pub fn taskmanagers(&self) -> io::Result<usize> {
        let response = self.rest_get("/taskmanagers")?;
        let registered = (response.status == 200)
            .then(|| count_taskmanagers(&response.body))
            .flatten();
        registered.ok_or_else(|| {
            io::Error::other(format!(
                "GET {}/taskmanagers answered {}: {}",
                self.rest_url(),
                response.status,
                response.body
            ))
        })
    }

    /// Waits until exactly `count` TaskManagers are registered; returns the time since the
    /// JobManager's (re)start.
    pub fn wait_taskmanagers(&mut self, count: usize, limit: Duration) -> io::Result<Duration> {
        let endpoint = self.rest_endpoint();
        let what = format!("{count} TaskManager(s) registered");
        daemon::wait_until(&mut self.daemon, limit, &what, || {
            let response = endpoint.get("/taskmanagers", Duration::from_secs(1))?;
            Ok(count_taskmanagers(&response.body) == Some(count))
        })
    }

    /// Kills the JVM (SIGKILL) and starts it again with the same config: new random RPC and
    /// blob ports, the same REST port. Returns at once; wait with `wait_rest_ready`. The new
    /// JobManager becomes leader once ZooKeeper has expired the killed one's session (at
    /// most the negotiated session timeout, 10 s with the test bed's ZooKeeper).
    pub fn restart(&mut self) -> io::Result<()> {
        self.daemon.restart()
    }

    /// Stops the JVM with SIGTERM (SIGKILL after `grace`), as a pod deletion or a `helm
    /// upgrade` with the Recreate strategy does, and starts it again at once. Returns how long
    /// the JVM took to end.
    pub fn restart_after_sigterm(&mut self, grace: Duration) -> io::Result<Duration> {
        self.daemon.restart_after_sigterm(grace)
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

    /// Flink's console log of every run so far, for failure messages.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// `/taskmanagers` answers `{"taskmanagers": [...]}`.
fn count_taskmanagers(body: &str) -> Option<usize> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("taskmanagers")?.as_array().map(Vec::len)
}
