//! The project's whole story on one machine, with real servers: zk-wait holding a JobManager
//! "pod" until a real ZooKeeper ensemble serves; a real Flink JobManager in ZooKeeper HA mode
//! that advertises the Service's address but binds random ports on its "pod" address; the
//! Service in the Kubernetes API stand-in and a forwarder playing kube-proxy for it; a real
//! TaskManager that cannot register until port-sync makes the Service follow the JobManager's
//! ports; a real job run to completion; and a JobManager restart that port-sync follows.
//!
//! `cargo xtask demo` and the CI test `tests/demo.rs` both call [`run`]: one code path, the
//! demo with longer pauses and process output shown, the test asserting on the [`Report`].

use fixtures::flink::{Flink, JobManager, JobManagerConfig, TaskManager, TaskManagerConfig, rest};
use fixtures::forwarder::{EventKind, Forwarder, ForwarderConfig, Route};
use fixtures::ports::free_port;
use fixtures::process::{Echo, Process};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use kube_stand_in::ApiServerConfig;
use kube_stand_in::service_bed::{NAMESPACE, SERVICE, ServiceBed};
use serde_json::Value;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The chart's Service ports: the forwarder binds these on the Service address from the start.
const SERVICE_PORTS: [u16; 3] = [6123, 6124, 8081];
/// The chart's `rest.port`; the JobManager binds it on the pod address, so the Service's
/// `rest` entry (8081 -> 8081) reaches it without port-sync.
const REST_PORT: u16 = 8081;
/// A ZooKeeper member or a Flink JVM starts in 5-15 s on a busy 2-core machine.
const JVM_START: Duration = Duration::from_secs(120);
/// A JobManager restart waits for ZooKeeper to expire the killed leader's session (10 s with
/// the test bed's ZooKeeper) before the new one leads.
const JOBMANAGER_RESTART: Duration = Duration::from_secs(150);
/// port-sync polls every second; a patch follows within about that.
const SERVICE_SYNC: Duration = Duration::from_secs(60);
/// A TaskManager retries its ResourceManager connection every `cluster.registration.error-delay`
/// (10 s by default) and then needs a few seconds to register.
const TASKMANAGER_REGISTRATION: Duration = Duration::from_secs(120);
/// Compiling the job and the `bin/flink run` client JVM, job included.
const JOB_LIMIT: Duration = Duration::from_secs(240);
/// The example job: the sum of the squares of 1..=N.
const JOB_N: u64 = 100_000;

/// Where the scenario's "Service IP", JobManager "pod" and TaskManager "pod" live on loopback
/// (all of 127.0.0.0/8 is local on Linux, so no set-up is needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub service: IpAddr,
    pub jobmanager_pod: IpAddr,
    pub taskmanager_pod: IpAddr,
}

impl Addresses {
    /// 127.0.0.2 (Service), .3 (JobManager pod), .4 (TaskManager pod): easy to read in a demo.
    pub fn well_known() -> Addresses {
        Addresses::in_net(0, 0)
    }

    /// The same layout in a random 127.A.B.0/24, so that runs at once (tests, a demo by
    /// someone else on the machine) never compete for the fixed Service ports.
    pub fn random() -> Addresses {
        Addresses::in_net(fastrand::u8(1..=254), fastrand::u8(..))
    }

    fn in_net(a: u8, b: u8) -> Addresses {
        let address = |d| IpAddr::V4(Ipv4Addr::new(127, a, b, d));
        Addresses {
            service: address(2),
            jobmanager_pod: address(3),
            taskmanager_pod: address(4),
        }
    }

    /// Whether the fixed ports (the Service's, and REST on the JobManager pod) are free.
    pub fn are_free(&self) -> bool {
        SERVICE_PORTS
            .iter()
            .all(|&port| TcpListener::bind((self.service, port)).is_ok())
            && TcpListener::bind((self.jobmanager_pod, REST_PORT)).is_ok()
    }

    /// The well-known addresses when their ports are free, else a random free net.
    pub fn pick() -> Addresses {
        std::iter::once(Addresses::well_known())
            .chain(std::iter::repeat_with(Addresses::random).take(50))
            .find(Addresses::are_free)
            .unwrap_or_else(Addresses::random)
    }
}

/// Prints one line per event, with the time since the scenario began.
pub struct Narrator {
    started: Instant,
    label: String,
}

impl Narrator {
    pub fn new(label: &str) -> Narrator {
        Narrator {
            started: Instant::now(),
            label: label.to_owned(),
        }
    }

    pub fn say(&self, what: &str) {
        eprintln!(
            "\n[{:>6.1}s] {}: {what}",
            self.started.elapsed().as_secs_f64(),
            self.label
        );
    }

    /// A line under the last event: a value, a log line.
    pub fn detail(&self, what: &str) {
        eprintln!("           | {what}");
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

pub struct ScenarioConfig {
    pub zk_wait: PathBuf,
    pub port_sync: PathBuf,
    pub flink_version: String,
    pub addresses: Addresses,
    /// How long the lone first ZooKeeper member runs before the second one starts.
    pub lone_member_for: Duration,
    /// How long, at least, the TaskManager is watched failing before port-sync starts.
    pub without_port_sync_for: Duration,
    /// The TaskManager's `cluster.registration.error-delay`; `None`: Flink's default (10 s).
    pub taskmanager_retry_delay: Option<Duration>,
    /// Show zk-wait's and port-sync's own output as it comes.
    pub echo: bool,
    pub narrator: Narrator,
}

impl ScenarioConfig {
    /// The demo's pacing with the given binaries.
    pub fn new(zk_wait: &Path, port_sync: &Path) -> ScenarioConfig {
        ScenarioConfig {
            zk_wait: zk_wait.to_owned(),
            port_sync: port_sync.to_owned(),
            flink_version: fixtures::flink::DEFAULT_VERSION.to_owned(),
            addresses: Addresses::pick(),
            lone_member_for: Duration::from_secs(4),
            without_port_sync_for: Duration::from_secs(30),
            taskmanager_retry_delay: None,
            echo: true,
            narrator: Narrator::new("demo"),
        }
    }
}

/// One entry of the Service's `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: i64,
    pub target_port: Value,
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}->{}", self.name, self.port, self.target_port)
    }
}

fn show_ports(ports: &[ServicePort]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone)]
pub struct ZkWaitFacts {
    /// What the lone first member answered to `ruok` (`imok`).
    pub lone_member_ruok: String,
    /// Whether the lone member reported a `Mode:` to `srvr` (it must not).
    pub lone_member_serving: bool,
    /// Whether zk-wait was still waiting after the lone member had run `lone_member_for`.
    pub waited_while_alone: bool,
    pub exit_code: Option<i32>,
    /// From the second member's start to zk-wait's exit.
    pub released_after: Duration,
}

#[derive(Debug, Clone)]
pub struct WithoutPortSyncFacts {
    pub watched_for: Duration,
    /// The most TaskManagers `/taskmanagers` listed meanwhile (0 is the point).
    pub most_registered: usize,
    /// The TaskManager's log lines about failing to reach the JobManager.
    pub connection_errors: Vec<String>,
    /// Connections the forwarder accepted but could not take anywhere.
    pub forwarder_pod_unreachable: u64,
}

#[derive(Debug, Clone)]
pub struct SyncFacts {
    /// The JobManager's live `(rpc, blob)` ports.
    pub live_ports: (u16, u16),
    pub service_before: Vec<ServicePort>,
    pub service_after: Vec<ServicePort>,
    /// From port-sync's start (or the JobManager answering again) to the Service holding the ports.
    pub service_synced_after: Duration,
    /// From the same moment to the TaskManager being listed in `/taskmanagers`.
    pub registered_after: Duration,
    pub registered: usize,
    /// port-sync's `/metrics`, its own lines without comments.
    pub metrics: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct JobFacts {
    pub id: String,
    pub name: String,
    /// As `/jobs/overview` reports it: `FINISHED` is the point.
    pub state: String,
    pub took: Duration,
    /// What the job printed on the TaskManager.
    pub result_line: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RestartFacts {
    pub old_ports: (u16, u16),
    /// From the kill to the new JobManager answering REST (leader again).
    pub jobmanager_back_after: Duration,
    pub sync: SyncFacts,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub addresses: Addresses,
    pub zk_wait: ZkWaitFacts,
    pub first_ports: (u16, u16),
    pub without_port_sync: WithoutPortSyncFacts,
    pub with_port_sync: SyncFacts,
    pub job: JobFacts,
    pub restart: RestartFacts,
    pub took: Duration,
}

impl Report {
    /// A short summary, one line per step.
    pub fn summary(&self) -> Vec<String> {
        let (rpc, blob) = self.first_ports;
        let (new_rpc, new_blob) = self.restart.sync.live_ports;
        vec![
            format!(
                "zk-wait: held while the lone member said {:?} without serving, released with \
                 exit code {} {:.1}s after a majority could form",
                self.zk_wait.lone_member_ruok,
                self.zk_wait
                    .exit_code
                    .map_or("none (a signal)".to_owned(), |code| code.to_string()),
                self.zk_wait.released_after.as_secs_f64()
            ),
            format!(
                "without port-sync: JobManager on random ports rpc {rpc} blob {blob}, Service \
                 at 6123/6124: {} TaskManager(s) registered in {:.0}s, {} connection error(s) \
                 in the TaskManager's log",
                self.without_port_sync.most_registered,
                self.without_port_sync.watched_for.as_secs_f64(),
                self.without_port_sync.connection_errors.len()
            ),
            format!(
                "with port-sync: Service synced in {:.1}s, TaskManager registered {:.1}s after \
                 port-sync started",
                self.with_port_sync.service_synced_after.as_secs_f64(),
                self.with_port_sync.registered_after.as_secs_f64()
            ),
            format!(
                "example job {} {}: {} in {:.1}s{}",
                self.job.name,
                self.job.id,
                self.job.state,
                self.job.took.as_secs_f64(),
                self.job
                    .result_line
                    .as_deref()
                    .map(|line| format!(" ({line})"))
                    .unwrap_or_default()
            ),
            format!(
                "JobManager restart: leader again {:.1}s after the kill, on rpc {new_rpc} blob \
                 {new_blob}; Service synced {:.1}s and TaskManager registered again {:.1}s after \
                 the kill",
                self.restart.jobmanager_back_after.as_secs_f64(),
                self.restart.sync.service_synced_after.as_secs_f64(),
                self.restart.sync.registered_after.as_secs_f64()
            ),
            format!("all in {:.0}s", self.took.as_secs_f64()),
        ]
    }
}

/// Runs the whole scenario and stops every process it started, also on failure (the error
/// carries the relevant logs).
pub fn run(config: ScenarioConfig) -> Result<Report, String> {
    let flink = Flink::install(&config.flink_version).map_err(context("install Flink"))?;
    let work = tempfile::Builder::new()
        .prefix("testbed-scenario-")
        .tempdir()
        .map_err(context("make the scenario's dir"))?;
    let mut scenario = Scenario {
        port_sync: None,
        port_sync_metrics: None,
        taskmanager: None,
        forwarder: None,
        jobmanager: None,
        bed: None,
        zk_wait: None,
        ensemble: None,
        config,
        flink,
        work,
    };
    let report = scenario.run_steps();
    scenario
        .narrator()
        .say("stopping every process the scenario started");
    drop(scenario);
    report
}

/// What the scenario runs, in the order it is stopped (fields drop in declaration order).
struct Scenario {
    port_sync: Option<Process>,
    port_sync_metrics: Option<SocketAddr>,
    taskmanager: Option<TaskManager>,
    forwarder: Option<Forwarder>,
    jobmanager: Option<JobManager>,
    bed: Option<Arc<ServiceBed>>,
    zk_wait: Option<Process>,
    ensemble: Option<Ensemble>,
    config: ScenarioConfig,
    flink: Flink,
    work: TempDir,
}

type Outcome<T> = Result<T, String>;

fn context(what: &str) -> impl FnOnce(io::Error) -> String + '_ {
    move |error| format!("cannot {what}: {error}")
}

impl Scenario {
    fn narrator(&self) -> &Narrator {
        &self.config.narrator
    }

    fn run_steps(&mut self) -> Outcome<Report> {
        let addresses = self.config.addresses;
        self.narrator().say(&format!(
            "loopback addresses: Service IP {}, JobManager pod {}, TaskManager pod {}",
            addresses.service, addresses.jobmanager_pod, addresses.taskmanager_pod
        ));
        let zk_wait = self.zookeeper_and_zk_wait()?;
        let first_ports = self.jobmanager_behind_the_service()?;
        let without_port_sync = self.taskmanager_without_port_sync(first_ports)?;
        let with_port_sync = self.start_port_sync()?;
        let job = self.run_example_job()?;
        let restart = self.restart_jobmanager()?;
        Ok(Report {
            addresses,
            zk_wait,
            first_ports,
            without_port_sync,
            with_port_sync,
            job,
            restart,
            took: self.narrator().elapsed(),
        })
    }

    fn echo(&self, prefix: &str) -> Echo {
        if self.config.echo {
            Echo::Prefixed(format!("    {prefix} | "))
        } else {
            Echo::Quiet
        }
    }

    /// zk-wait starts first, as the JobManager pod's init container; the members follow one
    /// at a time.
    fn zookeeper_and_zk_wait(&mut self) -> Outcome<ZkWaitFacts> {
        let ensemble = Ensemble::new(EnsembleConfig::ensemble(3).whitelist("srvr,ruok"))
            .map_err(context("configure ZooKeeper"))?;
        let connect = ensemble.connect_string();
        let ensemble = self.ensemble.insert(ensemble);
        self.config.narrator.say(&format!(
            "a 3-member ZooKeeper ensemble is configured at {connect}; no member runs yet"
        ));

        self.config
            .narrator
            .say("starting zk-wait, as the JobManager pod's init container would");
        let mut command = Command::new(&self.config.zk_wait);
        command.args(["--zookeeper", &connect, "--progress-every", "1s"]);
        let echo = if self.config.echo {
            Echo::Prefixed("    zk-wait | ".into())
        } else {
            Echo::Quiet
        };
        let zk_wait = self
            .zk_wait
            .insert(Process::spawn("zk-wait", command, echo).map_err(context("start zk-wait"))?);
        sleep(Duration::from_secs(1));

        self.config
            .narrator
            .say("starting ZooKeeper member 1 of 3 alone");
        ensemble.start(0).map_err(context("start member 1"))?;
        ensemble
            .wait_listening(0, JVM_START)
            .map_err(context("wait for member 1"))?;
        let ruok = ensemble.ask(0, "ruok").unwrap_or_else(|e| e.to_string());
        let srvr = ensemble.ask(0, "srvr").unwrap_or_else(|e| e.to_string());
        self.config.narrator.say(&format!(
            "member 1 answers ruok with {:?} but srvr with {:?}: the usual `ruok | grep imok` \
             init loop would release the JobManager now, into an ensemble with no quorum",
            ruok.trim(),
            srvr.trim()
        ));
        sleep(self.config.lone_member_for);
        let waited_while_alone = zk_wait.is_running();
        if !waited_while_alone {
            return Err(format!(
                "zk-wait released with one member of three:\n{}",
                zk_wait.output()
            ));
        }
        self.config
            .narrator
            .say("zk-wait is still waiting, as it should");

        self.config
            .narrator
            .say("starting ZooKeeper member 2 of 3: a majority can form");
        let second_started = Instant::now();
        ensemble.start(1).map_err(context("start member 2"))?;
        let status = match zk_wait.wait_timeout(JVM_START) {
            Ok(Some(status)) => status,
            _ => {
                return Err(format!(
                    "zk-wait did not exit within {JVM_START:?} of member 2's start:\n{}\n{}",
                    zk_wait.output(),
                    ensemble.output(1)
                ));
            }
        };
        let released_after = second_started.elapsed();
        self.config.narrator.say(&format!(
            "zk-wait exited with {} {:.1}s after member 2 was started (JVM start and leader \
             election included); {} of 3 members serve",
            status
                .code()
                .map_or("a signal".into(), |c| format!("code {c}")),
            released_after.as_secs_f64(),
            ensemble.serving_count(),
        ));
        if status.code() != Some(0) {
            return Err(format!(
                "zk-wait did not report ready:\n{}",
                zk_wait.output()
            ));
        }
        Ok(ZkWaitFacts {
            lone_member_ruok: ruok.trim().to_owned(),
            lone_member_serving: srvr.contains("Mode:"),
            waited_while_alone,
            exit_code: status.code(),
            released_after,
        })
    }

    /// The API stand-in with the chart's Service, the JobManager, and the forwarder; returns
    /// the JobManager's live (rpc, blob) ports.
    fn jobmanager_behind_the_service(&mut self) -> Outcome<(u16, u16)> {
        let addresses = self.config.addresses;
        let bed = ServiceBed::start(ApiServerConfig::default(), Duration::from_secs(24 * 3600))
            .map_err(context("start the Kubernetes API stand-in"))?;
        let bed = Arc::clone(self.bed.insert(Arc::new(bed)));
        self.config.narrator.say(&format!(
            "Kubernetes API stand-in at {} holds Service {NAMESPACE}/{SERVICE} as the chart \
             creates it, and port-sync's RBAC from rbac/ (get/list/watch/patch of that Service \
             only)",
            bed.api.url()
        ));
        self.config.narrator.detail(&format!(
            "Service ports: {}",
            show_ports(&service_ports(&bed))
        ));

        let quorum = self
            .ensemble
            .as_ref()
            .map(Ensemble::connect_string)
            .unwrap_or_default();
        self.config.narrator.say(&format!(
            "starting a Flink {} JobManager in ZooKeeper HA mode: jobmanager.rpc.address {} \
             (the Service, what it publishes in ZooKeeper), every socket bound on {} (its pod), \
             RPC and blob ports random (0), as Flink's HA default",
            self.flink.version(),
            addresses.service,
            addresses.jobmanager_pod
        ));
        let config = JobManagerConfig::new(&quorum)
            .advertised_address(addresses.service)
            .bind_address(addresses.jobmanager_pod)
            .rest_port(REST_PORT)
            .set("parallelism.default", "2");
        let jobmanager =
            JobManager::start(&self.flink, config).map_err(context("start the JobManager"))?;
        let jobmanager = self.jobmanager.insert(jobmanager);
        let took = jobmanager
            .wait_rest_ready(JVM_START)
            .map_err(context("wait for the JobManager"))?;
        let ports = jobmanager
            .live_ports()
            .map_err(context("read the JobManager's ports"))?;
        self.config.narrator.say(&format!(
            "JobManager leads after {:.1}s: RPC on {pod}:{}, blob server on {pod}:{}, REST on \
             {pod}:{REST_PORT}; it published {}:{} in ZooKeeper",
            took.as_secs_f64(),
            ports.0,
            ports.1,
            addresses.service,
            ports.0,
            pod = addresses.jobmanager_pod,
        ));

        let forwarder = Forwarder::for_service_bed(
            ForwarderConfig::new(addresses.service, addresses.jobmanager_pod),
            Arc::clone(&bed),
            SERVICE,
        )
        .map_err(context("start the forwarder"))?;
        let forwarder = self.forwarder.insert(forwarder);
        for port in SERVICE_PORTS {
            forwarder
                .wait_routing(
                    Route {
                        port,
                        target_port: port,
                    },
                    Duration::from_secs(10),
                )
                .map_err(context("open the Service's ports"))?;
        }
        self.config.narrator.say(&format!(
            "forwarder (kube-proxy's part) listens on {} at the Service's ports ({}), forwarding \
             each to {} at its targetPort",
            addresses.service,
            show_routes(&forwarder.routes()),
            addresses.jobmanager_pod
        ));
        Ok(ports)
    }

    /// A TaskManager configured like the chart's: it finds the JobManager through ZooKeeper,
    /// at the Service address and the random RPC port the Service does not list.
    fn taskmanager_without_port_sync(
        &mut self,
        (rpc, _): (u16, u16),
    ) -> Outcome<WithoutPortSyncFacts> {
        let addresses = self.config.addresses;
        let jobmanager = self.jobmanager.as_ref().ok_or("no JobManager")?;
        let mut config = TaskManagerConfig::for_jobmanager(jobmanager)
            .advertised_address(addresses.taskmanager_pod)
            .bind_address(addresses.taskmanager_pod)
            .slots(2)
            .set("jobmanager.rpc.address", &addresses.service.to_string())
            .set("rest.address", &addresses.service.to_string())
            .set("parallelism.default", "2");
        if let Some(delay) = self.config.taskmanager_retry_delay {
            config = config.set(
                "cluster.registration.error-delay",
                &format!("{}ms", delay.as_millis()),
            );
        }
        self.config.narrator.say(&format!(
            "starting a Flink TaskManager like the chart's (its pod {}): it reads the \
             JobManager's address from ZooKeeper, {}:{rpc}, a port the Service does not list. \
             port-sync is NOT running yet",
            addresses.taskmanager_pod, addresses.service
        ));
        let taskmanager =
            TaskManager::start(&self.flink, config).map_err(context("start the TaskManager"))?;
        let started = Instant::now();
        let taskmanager = self.taskmanager.insert(taskmanager);
        let jobmanager = self.jobmanager.as_ref().ok_or("no JobManager")?;
        let service_text = addresses.service.to_string();
        let mut most_registered = 0;
        let mut last_shown: Option<Instant> = None;
        let mut connection_errors: Vec<String>;
        // Long enough to show, and until the TaskManager has said it cannot connect.
        let deadline = started
            + self
                .config
                .without_port_sync_for
                .max(TASKMANAGER_REGISTRATION);
        loop {
            taskmanager
                .check_alive()
                .map_err(context("keep the TaskManager running"))?;
            let answer = jobmanager.rest_get("/taskmanagers");
            let registered = answer
                .as_ref()
                .ok()
                .and_then(|response| count_taskmanagers(&response.body))
                .unwrap_or(0);
            most_registered = most_registered.max(registered);
            connection_errors = connection_errors_in(&taskmanager.log(), &service_text);
            if last_shown.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                last_shown = Some(Instant::now());
                let body = answer.map_or_else(|e| e.to_string(), |r| r.body);
                self.config.narrator.say(&format!(
                    "GET {}/taskmanagers: {}; the TaskManager's log has {} connection error(s) \
                     so far",
                    jobmanager.rest_url(),
                    shorten(&body, 120),
                    connection_errors.len()
                ));
            }
            let shown_enough = started.elapsed() >= self.config.without_port_sync_for
                && !connection_errors.is_empty();
            if shown_enough || most_registered > 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the TaskManager logged no connection error within {:?}; its log:\n{}",
                    TASKMANAGER_REGISTRATION,
                    tail(&taskmanager.log(), 80)
                ));
            }
            sleep(Duration::from_secs(1));
        }
        let facts = WithoutPortSyncFacts {
            watched_for: started.elapsed(),
            most_registered,
            connection_errors,
            forwarder_pod_unreachable: self
                .forwarder
                .as_ref()
                .map_or(0, |f| f.counters().pod_unreachable),
        };
        if facts.most_registered > 0 {
            return Err(format!(
                "the TaskManager registered without port-sync: the scenario's premise (a \
                 Service at 6123 cannot reach a JobManager on a random port) failed; \
                 TaskManager log:\n{}",
                tail(&taskmanager.log(), 80)
            ));
        }
        self.config.narrator.say(&format!(
            "after {:.0}s: still no TaskManager registered. The TaskManager's connection errors \
             (the newest {}):",
            facts.watched_for.as_secs_f64(),
            facts.connection_errors.len().min(3)
        ));
        for line in facts.connection_errors.iter().rev().take(3).rev() {
            self.config
                .narrator
                .detail(&shorten(log_message(line), 420));
        }
        Ok(facts)
    }

    fn start_port_sync(&mut self) -> Outcome<SyncFacts> {
        let jobmanager = self.jobmanager.as_ref().ok_or("no JobManager")?;
        let bed = self.bed.clone().ok_or("no API stand-in")?;
        let metrics_address = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut command = Command::new(&self.config.port_sync);
        for (key, _) in std::env::vars() {
            if key.starts_with("PORT_SYNC_") {
                command.env_remove(key);
            }
        }
        command
            .env("KUBECONFIG", &bed.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(ServiceBed::port_sync_args(&jobmanager.rest_url()))
            .args(["--listen", &metrics_address.to_string()]);
        self.config.narrator.say(&format!(
            "starting port-sync, as the JobManager pod's sidecar: --service {SERVICE} \
             --jobmanager-url {} --port rpc=jobmanager.rpc.port --port blob=blob.server.port, \
             with a service-account token bound to rbac/role.yaml; metrics on {metrics_address}",
            jobmanager.rest_url()
        ));
        let echo = self.echo("port-sync");
        let before = self.snapshot();
        let started = Instant::now();
        self.port_sync =
            Some(Process::spawn("port-sync", command, echo).map_err(context("start port-sync"))?);
        self.port_sync_metrics = Some(metrics_address);
        self.follow(started, "port-sync's start", before, metrics_address)
    }

    /// Waits for the Service to hold the JobManager's live ports, the forwarder to open them
    /// and the TaskManager to register; `since` is when the wait began.
    fn follow(
        &mut self,
        since: Instant,
        since_what: &str,
        (service_before, events_before): (Vec<ServicePort>, usize),
        metrics_address: SocketAddr,
    ) -> Outcome<SyncFacts> {
        let bed = self.bed.clone().ok_or("no API stand-in")?;
        let jobmanager = self.jobmanager.as_ref().ok_or("no JobManager")?;
        let live_ports = jobmanager
            .live_ports()
            .map_err(context("read the JobManager's ports"))?;
        let (rpc, blob) = live_ports;
        let port_sync = self.port_sync.as_mut().ok_or("no port-sync")?;
        let deadline = Instant::now() + SERVICE_SYNC;
        while !(bed.exposes(SERVICE, "rpc", rpc) && bed.exposes(SERVICE, "blob", blob)) {
            if Instant::now() >= deadline || !port_sync.is_running() {
                return Err(format!(
                    "the Service did not follow the JobManager's ports rpc {rpc} blob {blob} \
                     within {SERVICE_SYNC:?}; it holds {}; port-sync:\n{}",
                    show_ports(&service_ports(&bed)),
                    port_sync.output()
                ));
            }
            sleep(Duration::from_millis(20));
        }
        let service_synced_after = since.elapsed();
        let service_after = service_ports(&bed);
        let narrator = &self.config.narrator;
        narrator.say(&format!(
            "the Service holds the JobManager's ports {:.1}s after {since_what}:",
            service_synced_after.as_secs_f64()
        ));
        narrator.detail(&format!("before: {}", show_ports(&service_before)));
        narrator.detail(&format!("after:  {}", show_ports(&service_after)));

        let forwarder = self.forwarder.as_ref().ok_or("no forwarder")?;
        for port in [rpc, blob] {
            forwarder
                .wait_routing(
                    Route {
                        port,
                        target_port: port,
                    },
                    Duration::from_secs(10),
                )
                .map_err(context("follow the Service"))?;
        }
        narrator.say(&format!(
            "forwarder follows the Service: {}; it now listens on {} at {}",
            forwarder_changes(forwarder, events_before),
            self.config.addresses.service,
            show_routes(&forwarder.routes())
        ));

        let taskmanager = self.taskmanager.as_mut().ok_or("no TaskManager")?;
        let deadline = Instant::now() + TASKMANAGER_REGISTRATION;
        let registered = loop {
            taskmanager
                .check_alive()
                .map_err(context("keep the TaskManager running"))?;
            let registered = jobmanager.taskmanagers().unwrap_or(0);
            if registered > 0 {
                break registered;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the TaskManager did not register within {TASKMANAGER_REGISTRATION:?} of \
                     the Service holding rpc {rpc} blob {blob}; TaskManager log:\n{}\n\
                     JobManager log:\n{}",
                    tail(&taskmanager.log(), 60),
                    tail(&jobmanager.log(), 40)
                ));
            }
            sleep(Duration::from_millis(200));
        };
        let registered_after = since.elapsed();
        narrator.say(&format!(
            "GET {}/taskmanagers: {registered} registered, {:.1}s after {since_what} (Flink's \
             registration retry included)",
            jobmanager.rest_url(),
            registered_after.as_secs_f64()
        ));
        let metrics = port_sync_metrics(metrics_address);
        narrator.say(&format!(
            "port-sync's /metrics (http://{metrics_address}/metrics):"
        ));
        for line in &metrics {
            narrator.detail(line);
        }
        Ok(SyncFacts {
            live_ports,
            service_before,
            service_after,
            service_synced_after,
            registered_after,
            registered,
            metrics,
        })
    }

    /// Compiles a tiny DataStream job against the distribution's jars and submits it with
    /// `bin/flink run` to the Service's REST port.
    fn run_example_job(&mut self) -> Outcome<JobFacts> {
        let started = Instant::now();
        let jar = self.compile_job()?;
        let service = self.config.addresses.service;
        let rest = format!("{service}:{REST_PORT}");
        self.config.narrator.say(&format!(
            "submitting the example job with `bin/flink run -m {rest}` (through the Service and \
             the forwarder): the sum of the squares of 1..{JOB_N}, parallelism 2"
        ));
        let log_dir = self.work.path().join("client-log");
        fs::create_dir_all(&log_dir).map_err(context("make the client's log dir"))?;
        let mut command = Command::new(self.flink.home().join("bin").join("flink"));
        for variable in ["FLINK_CONF_DIR", "FLINK_HOME", "FLINK_LOG_DIR", "JVM_ARGS"] {
            command.env_remove(variable);
        }
        command
            .args(["run", "-m", &rest])
            .arg(&jar)
            .arg(JOB_N.to_string())
            .env("FLINK_CONF_DIR", self.flink.home().join("conf"))
            .env("FLINK_LOG_DIR", &log_dir)
            .current_dir(self.work.path());
        let mut client = Process::spawn("flink run", command, self.echo("flink run"))
            .map_err(context("start bin/flink run"))?;
        let status = client
            .wait_timeout(JOB_LIMIT)
            .map_err(context("wait for bin/flink run"))?;
        let output = client.output();
        if status.is_none_or(|status| !status.success()) {
            let taskmanager_log = self.taskmanager.as_ref().map(|t| tail(&t.log(), 40));
            return Err(format!(
                "bin/flink run did not succeed within {JOB_LIMIT:?} ({status:?}):\n{output}\n\
                 TaskManager log:\n{}",
                taskmanager_log.unwrap_or_default()
            ));
        }
        let id = output
            .lines()
            .find_map(|line| line.split("JobID").nth(1))
            .map(|rest| rest.trim().trim_start_matches(':').trim().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| format!("bin/flink run named no JobID:\n{output}"))?;
        let jobmanager = self.jobmanager.as_ref().ok_or("no JobManager")?;
        let overview = jobmanager
            .rest_get("/jobs/overview")
            .map_err(context("read /jobs/overview"))?;
        let (name, state) = job_in_overview(&overview.body, &id)
            .ok_or_else(|| format!("job {id} is not in /jobs/overview: {}", overview.body))?;
        let result_line = self.taskmanager.as_ref().and_then(|t| {
            t.log()
                .lines()
                .find(|l| l.contains("sum of squares"))
                .map(str::to_owned)
        });
        let took = started.elapsed();
        let narrator = &self.config.narrator;
        narrator.say(&format!(
            "GET {}/jobs/overview: job {id} {name:?} is {state} ({:.1}s with compiling)",
            jobmanager.rest_url(),
            took.as_secs_f64()
        ));
        if let Some(line) = &result_line {
            narrator.detail(&format!("the TaskManager printed: {}", line.trim()));
        }
        Ok(JobFacts {
            id,
            name,
            state,
            took,
            result_line,
        })
    }

    /// `javac` and `jar` of the machine's JDK, against `lib/*` of the distribution.
    fn compile_job(&self) -> Outcome<PathBuf> {
        let dir = self.work.path().join("job");
        let classes = dir.join("classes");
        fs::create_dir_all(&classes).map_err(context("make the job's dir"))?;
        let source = dir.join("SumOfSquares.java");
        fs::write(&source, JOB_SOURCE).map_err(context("write the job's source"))?;
        let jar = dir.join("sum-of-squares.jar");
        self.config.narrator.say(
            "compiling the example job (SumOfSquares.java, a DataStream job in batch mode) \
             with the machine's javac against the distribution's lib/*.jar",
        );
        let mut javac = Command::new("javac");
        javac
            .arg("-cp")
            .arg(self.flink.home().join("lib").join("*"))
            .arg("-d")
            .arg(&classes)
            .arg(&source);
        run_tool("javac", javac)?;
        let mut pack = Command::new("jar");
        pack.arg("--create")
            .arg("--file")
            .arg(&jar)
            .args(["--main-class", "SumOfSquares", "-C"])
            .arg(&classes)
            .arg(".");
        run_tool("jar", pack)?;
        Ok(jar)
    }

    /// Kills the JobManager (as a crashed container) and starts it again: new random ports,
    /// which port-sync, the forwarder and the TaskManager follow.
    fn restart_jobmanager(&mut self) -> Outcome<RestartFacts> {
        let jobmanager = self.jobmanager.as_mut().ok_or("no JobManager")?;
        let old_ports = jobmanager
            .live_ports()
            .map_err(context("read the JobManager's ports"))?;
        self.config.narrator.say(
            "killing the JobManager (SIGKILL, as a crashed container) and starting it again; \
             the new one leads once ZooKeeper expires the old one's session (about 10 s)",
        );
        let before = (
            self.bed.as_deref().map(service_ports).unwrap_or_default(),
            self.forwarder.as_ref().map_or(0, |f| f.events().len()),
        );
        let killed = Instant::now();
        jobmanager
            .restart()
            .map_err(context("restart the JobManager"))?;
        jobmanager
            .wait_rest_ready(JOBMANAGER_RESTART)
            .map_err(context("wait for the restarted JobManager"))?;
        let jobmanager_back_after = killed.elapsed();
        let new_ports = jobmanager
            .live_ports()
            .map_err(context("read the JobManager's new ports"))?;
        self.config.narrator.say(&format!(
            "JobManager leads again {:.1}s after the kill: rpc {} -> {}, blob {} -> {}",
            jobmanager_back_after.as_secs_f64(),
            old_ports.0,
            new_ports.0,
            old_ports.1,
            new_ports.1
        ));
        let metrics_address = self.metrics_address()?;
        let sync = self.follow(killed, "the kill", before, metrics_address)?;
        Ok(RestartFacts {
            old_ports,
            jobmanager_back_after,
            sync,
        })
    }

    /// The Service's ports and the forwarder's event count now, to show what changes next.
    fn snapshot(&self) -> (Vec<ServicePort>, usize) {
        (
            self.bed.as_deref().map(service_ports).unwrap_or_default(),
            self.forwarder.as_ref().map_or(0, |f| f.events().len()),
        )
    }

    /// Where the running port-sync serves `/metrics` (its `--listen`).
    fn metrics_address(&self) -> Outcome<SocketAddr> {
        self.port_sync_metrics
            .ok_or_else(|| "port-sync is not running".to_owned())
    }
}

const JOB_SOURCE: &str = r#"import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/** The sum of the squares of 1..N, computed on the cluster and printed by the TaskManager. */
public class SumOfSquares {
    public static void main(String[] args) throws Exception {
        long n = args.length > 0 ? Long.parseLong(args[0]) : 1000L;
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setRuntimeMode(RuntimeExecutionMode.BATCH);
        env.fromSequence(1, n)
            .map(x -> x * x).returns(Types.LONG)
            .keyBy(x -> 0, Types.INT)
            .reduce(Long::sum)
            .map(sum -> "sum of squares 1.." + n + " = " + sum).returns(Types.STRING)
            .print();
        env.execute("sum of squares");
    }
}
"#;

fn run_tool(name: &str, command: Command) -> Outcome<()> {
    let mut process = Process::spawn(name, command, Echo::Quiet).map_err(context(name))?;
    match process.wait_timeout(JOB_LIMIT) {
        Ok(Some(status)) if status.success() => Ok(()),
        outcome => Err(format!(
            "{name} failed ({outcome:?}):\n{}",
            process.output()
        )),
    }
}

/// `/jobs/overview` answers `{"jobs": [{"jid", "name", "state", ...}]}`.
fn job_in_overview(body: &str, id: &str) -> Option<(String, String)> {
    let overview: Value = serde_json::from_str(body).ok()?;
    let job = overview["jobs"]
        .as_array()?
        .iter()
        .find(|job| job["jid"] == id)?;
    Some((
        job["name"].as_str()?.to_owned(),
        job["state"].as_str()?.to_owned(),
    ))
}

fn service_ports(bed: &ServiceBed) -> Vec<ServicePort> {
    bed.api
        .get_service(NAMESPACE, SERVICE)
        .and_then(|service| {
            service
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
        })
        .unwrap_or_default()
        .iter()
        .map(|entry| ServicePort {
            name: entry["name"].as_str().unwrap_or("").to_owned(),
            port: entry["port"].as_i64().unwrap_or(0),
            target_port: entry["targetPort"].clone(),
        })
        .collect()
}

/// The TaskManager's log lines that say it could not reach the JobManager at the Service.
fn connection_errors_in(log: &str, service: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains(service))
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            [
                "refused",
                "could not",
                "failed",
                "unreachable",
                "timeout",
                "timed out",
            ]
            .iter()
            .any(|word| lower.contains(word))
        })
        .map(str::to_owned)
        .collect()
}

/// port-sync's own metric lines (no comments), or the error in one line.
fn port_sync_metrics(address: SocketAddr) -> Vec<String> {
    match rest::get(address, "/metrics", Duration::from_secs(2)) {
        Ok(response) => response
            .body
            .lines()
            .filter(|line| line.starts_with("port_sync_"))
            .map(str::to_owned)
            .collect(),
        Err(error) => vec![format!("(cannot read /metrics: {error})")],
    }
}

/// `/taskmanagers` answers `{"taskmanagers": [...]}`.
fn count_taskmanagers(body: &str) -> Option<usize> {
    let value: Value = serde_json::from_str(body).ok()?;
    value.get("taskmanagers")?.as_array().map(Vec::len)
}

/// A Flink log line without its time, level and logger: `... [] - message`.
fn log_message(line: &str) -> &str {
    line.split_once("[] - ")
        .map_or(line, |(_, message)| message)
}

fn show_routes(routes: &[Route]) -> String {
    routes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The listeners the forwarder opened and closed since its `from`th event.
fn forwarder_changes(forwarder: &Forwarder, from: usize) -> String {
    let changes: Vec<String> = forwarder
        .events()
        .iter()
        .skip(from)
        .map(|event| match &event.kind {
            EventKind::Opened(route) => format!("opened {route}"),
            EventKind::Closed(route) => format!("closed {route}"),
            EventKind::BindFailed(route, error) => format!("cannot open {route}: {error}"),
            EventKind::Unsupported(what) => what.clone(),
        })
        .collect();
    if changes.is_empty() {
        "no change".to_owned()
    } else {
        changes.join(", ")
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn shorten(line: &str, limit: usize) -> String {
    match line.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_job_in_the_overview() {
        let body = r#"{"jobs":[{"jid":"a1","name":"sum of squares","state":"FINISHED"}]}"#;
        assert_eq!(
            job_in_overview(body, "a1"),
            Some(("sum of squares".to_owned(), "FINISHED".to_owned()))
        );
        assert_eq!(job_in_overview(body, "b2"), None);
    }

    #[test]
    fn connection_errors_name_the_service_address() {
        let log = "INFO all fine\n\
                   INFO Could not resolve ResourceManager address pekko.tcp://flink@127.0.0.2:41234/user/rpc/resourcemanager_*, retrying\n\
                   WARN Connection refused: /127.0.0.9:1\n";
        assert_eq!(connection_errors_in(log, "127.0.0.2").len(), 1);
    }

    #[test]
    fn well_known_addresses_are_the_readable_ones() {
        let addresses = Addresses::well_known();
        assert_eq!(addresses.service.to_string(), "127.0.0.2");
        assert_eq!(addresses.jobmanager_pod.to_string(), "127.0.0.3");
        let random = Addresses::random();
        assert_ne!(random.service, addresses.service);
    }
}
