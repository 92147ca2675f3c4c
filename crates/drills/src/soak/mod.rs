//! The fault soak: port-sync (the built binary) against a real Flink JobManager in ZooKeeper HA
//! mode and the API stand-in, while a seeded schedule ([`schedule`]) injects every fault the
//! stand-in knows and restarts the JobManager every 60–90 s. A monitor samples the Service
//! (in-process, from the stand-in's store) about every 20 ms and the JobManager's live ports,
//! and [`tracker`] turns the samples into wrong intervals; at the end the faults are cleared and
//! the Service must equal the JobManager's live ports. Figures: faults injected, restarts, wrong
//! intervals and their repair times, lost updates, port-sync's RSS and open descriptors at start
//! and end, the requests the stand-in saw and port-sync's own counters.
//!
//! Three threads: the JobManager's (restarts on command, polls its REST: every 20 ms while it
//! is away, every 250 ms while it answers), the monitor's, and the caller's, which plays the
//! schedule.

pub mod schedule;
pub mod tracker;

use fixtures::flink::{DEFAULT_VERSION, Flink, JobManager, JobManagerConfig, rest};
use fixtures::ports::free_port;
use fixtures::process::{Echo, Process};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use kube_stand_in::service_bed::{NAMESPACE, SERVICE, ServiceBed, USER};
use kube_stand_in::{Fault, FaultOn, RequestRecord};
use schedule::{Action, Edit, Event, FaultKind, Field, Schedule};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};
use tracker::{Cause, Desired, Ending, ServicePorts, Tracker, WrongInterval};

/// The seed `cargo xtask soak` uses unless told otherwise (and CI uses).
pub const DEFAULT_SEED: u64 = 20_261_127;
/// A wrong interval not repaired this long after its cause (time the API server was down
/// excluded) is a lost update. Generous: port-sync's retries back off to at most 5 s (10 s
/// with jitter), 429s ask for 1 s as the real server's do, and a fault takes one request.
pub const LOST_BOUND: Duration = Duration::from_secs(60);
/// port-sync's open descriptors may end this many above where they started: one more pooled
/// connection to the API server (kube keeps idle ones) and one to the JobManager's REST.
pub const FD_SLACK: usize = 2;
/// port-sync's RSS may end this much above where it started (allocator arenas and caches that
/// settle after the first minutes); a leak per request or per event would grow far past it.
pub const RSS_SLACK_KIB: u64 = 2048;
/// Sampling period of the monitor: repair times are good to about this.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// For `BURST` after an edit or a JobManager answer the monitor samples every `BURST_EVERY`.
pub const BURST: Duration = Duration::from_millis(500);
pub const BURST_EVERY: Duration = Duration::from_millis(2);
/// How often the JobManager's REST is asked while it is away (a refused connection is cheap).
const AWAY_POLL: Duration = Duration::from_millis(10);
/// After the schedule, with every fault cleared, the Service must stay right this long.
const QUIET: Duration = Duration::from_secs(10);
const JVM_START: Duration = Duration::from_secs(240);
/// Budget from the first token's issue to the schedule's start (port-sync's first sync).
const SETUP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub length: Duration,
    pub seed: u64,
    /// The port-sync binary to run.
    pub port_sync: PathBuf,
    pub flink_version: String,
}

impl SoakConfig {
    pub fn new(length: Duration, seed: u64, port_sync: PathBuf) -> Self {
        Self {
            length,
            seed,
            port_sync,
            flink_version: DEFAULT_VERSION.to_owned(),
        }
    }
}

/// What the JobManager's thread and the monitor share with the schedule.
#[derive(Default)]
struct Shared {
    state: Mutex<SharedState>,
    stop_monitor: AtomicBool,
}

#[derive(Default)]
struct SharedState {
    desired: Option<Desired>,
    /// The last ports the JobManager answered with, kept through its restarts.
    last_known: Option<(u16, u16)>,
    last_edit: Option<Instant>,
    jobmanager_error: Option<String>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

enum Command {
    Restart,
    Stop,
}

#[derive(Debug, Default, Clone)]
struct JobManagerFigures {
    restarts: usize,
    /// From each restart to the first answer.
    answered_after: Vec<Duration>,
    /// Times it stopped answering, or changed ports, without being restarted.
    on_its_own: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
}

#[derive(Debug, Default)]
struct MonitorFigures {
    samples: u64,
    peak_fds: usize,
    /// Longest gap between two samples (a sign of a starved machine).
    longest_gap: Duration,
}

/// Everything measured; `failures()` says whether the soak passed.
#[derive(Debug)]
pub struct SoakReport {
    pub seed: u64,
    /// When the schedule started: interval times are shown from here.
    pub started: Instant,
    pub length: Duration,
    pub elapsed: Duration,
    pub binary: PathBuf,
    /// Events by kind, in FaultKind::ALL order.
    pub events: Vec<(FaultKind, usize)>,
    pub injected_requests: usize,
    pub pending_at_end: usize,
    pub restarts: usize,
    pub restart_answered_after: Vec<Duration>,
    pub jobmanager_on_its_own: usize,
    pub intervals: Vec<WrongInterval>,
    pub unseen: usize,
    pub down_windows: Vec<(Instant, Instant)>,
    pub lost_intervals: usize,
    pub final_right: bool,
    pub final_detail: String,
    pub other_entries_intact: bool,
    pub usage_start: (u64, usize),
    pub usage_end: (u64, usize),
    pub peak_rss_kib: u64,
    pub peak_fds: usize,
    pub samples: u64,
    pub longest_sample_gap: Duration,
    pub requests: BTreeMap<String, usize>,
    pub unauthorized: usize,
    pub conflicts: usize,
    pub port_sync_metrics: Vec<(String, String)>,
    pub port_sync_running: bool,
    pub port_sync_log_lines: usize,
    /// The end of port-sync's log, for a failure's message.
    pub port_sync_log_tail: String,
    pub jobmanager_error: Option<String>,
}

/// Runs the soak; `Err` only when it could not run (setup failed). Whether port-sync passed
/// is in the report's `failures()`.
pub fn run(config: &SoakConfig) -> Result<SoakReport, String> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |error: std::io::Error| format!("{what}: {error}")
    };
    let schedule = Schedule::generate(config.seed, config.length);
    eprintln!(
        "soak: seed {}, {} s, {} events ({}), port-sync {}",
        config.seed,
        config.length.as_secs(),
        schedule.events.len(),
        FaultKind::ALL
            .iter()
            .map(|kind| format!("{} {}", schedule.count(*kind), kind.name()))
            .collect::<Vec<_>>()
            .join(", "),
        config.port_sync.display()
    );

    let zookeeper = Ensemble::start_standalone(EnsembleConfig::standalone())
        .map_err(fail("start ZooKeeper"))?;
    let flink = Flink::install(&config.flink_version).map_err(fail("install Flink"))?;
    let bed = ServiceBed::start(
        kube_stand_in::ApiServerConfig::default(),
        Duration::from_secs(3600),
    )
    .map_err(fail("start the API stand-in"))?;
    let rest_port = free_port();
    let mut jobmanager = JobManager::start(
        &flink,
        JobManagerConfig::new(&zookeeper.connect_string()).rest_port(rest_port),
    )
    .map_err(fail("start the JobManager"))?;
    jobmanager
        .wait_rest_ready(JVM_START)
        .map_err(fail("the JobManager's first start"))?;
    let first_ports = jobmanager.live_ports().map_err(fail("live ports"))?;
    let answered = Instant::now();

    // port-sync never sees the stand-in's first (hour-long) token: it starts with one that
    // lives until the schedule's first rotation plus the overlap.
    bed.api
        .rotate_token(&bed.token_file, USER, schedule.first_token_lifetime(SETUP))
        .map_err(fail("write the first token"))?;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut command = std::process::Command::new(&config.port_sync);
    command
        .env("KUBECONFIG", &bed.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(ServiceBed::port_sync_args(&jobmanager.rest_url()))
        .args(["--listen", &listen.to_string()]);
    for (key, _) in std::env::vars() {
        if key.starts_with("PORT_SYNC_") {
            command.env_remove(key);
        }
    }
    let mut port_sync =
        Process::spawn("port-sync", command, Echo::Quiet).map_err(fail("start port-sync"))?;
    let synced_by = Instant::now() + Duration::from_secs(30);
    while !(bed.exposes(SERVICE, "rpc", first_ports.0)
        && bed.exposes(SERVICE, "blob", first_ports.1))
    {
        if Instant::now() > synced_by || !port_sync.is_running() {
            return Err(format!(
                "port-sync did not make the first sync within 30 s:\n{}",
                port_sync.output()
            ));
        }
        sleep(Duration::from_millis(20));
    }
    // Settled: the watch is open and the first answers are in.
    sleep(Duration::from_secs(2));
    let pid = port_sync.pid();
    let usage_start = usage(pid).map_err(fail("read port-sync's /proc"))?;
    eprintln!(
        "soak: port-sync synced rpc {} blob {}; RSS {} KiB, {} open descriptors",
        first_ports.0, first_ports.1, usage_start.rss_kib, usage_start.fds
    );

    let shared = Shared::default();
    {
        let mut state = shared.lock();
        state.desired = Some(Desired {
            rpc: first_ports.0,
            blob: first_ports.1,
            since: answered,
        });
        state.last_known = Some(first_ports);
    }
    bed.api.faults().clear_requests();

    let (commands, received) = mpsc::channel();
    let started = Instant::now();
    let outcome = std::thread::scope(|scope| {
        let jobmanager_thread = scope.spawn(|| jobmanager_loop(&mut jobmanager, &shared, received));
        let monitor_thread = scope.spawn(|| monitor_loop(&bed, &shared, pid));
        let played = play(&schedule, &bed, &shared, &commands, &mut port_sync, started);
        let finale = played.and_then(|down_windows| {
            finale(&bed, &shared, &mut port_sync).map(|final_state| (down_windows, final_state))
        });
        shared.stop_monitor.store(true, Ordering::SeqCst);
        let _ = commands.send(Command::Stop);
        let (tracker, monitor) = monitor_thread.join().expect("the monitor does not panic");
        let jobmanager_figures = jobmanager_thread
            .join()
            .expect("the JobManager's thread does not panic");
        finale.map(|(down, final_state)| (down, final_state, tracker, monitor, jobmanager_figures))
    });
    let (down_windows, final_state, tracker, monitor, jobmanager_figures) =
        outcome.map_err(|error| format!("{error}\nport-sync's output:\n{}", port_sync.output()))?;

    let port_sync_running = port_sync.is_running();
    let usage_end = usage(pid).unwrap_or_default();
    let peak_rss_kib = status_field_kib(pid, "VmHWM:").unwrap_or(0);
    let port_sync_metrics = rest::get(listen, "/metrics", Duration::from_secs(2))
        .map(|answer| parse_metrics(&answer.body))
        .unwrap_or_default();
    let requests = bed.api.requests();
    let pending_at_end = final_state.pending_at_end;

    let lost_intervals = tracker
        .intervals
        .iter()
        .filter(|interval| is_lost(interval, &down_windows))
        .count();
    let jobmanager_error = shared.lock().jobmanager_error.clone();
    Ok(SoakReport {
        seed: config.seed,
        started,
        length: config.length,
        elapsed: started.elapsed(),
        binary: config.port_sync.clone(),
        events: FaultKind::ALL
            .iter()
            .map(|kind| (*kind, schedule.count(*kind)))
            .collect(),
        injected_requests: schedule
            .events
            .iter()
            .map(|event| event.action.injected_requests())
            .sum(),
        pending_at_end,
        restarts: jobmanager_figures.restarts,
        restart_answered_after: jobmanager_figures.answered_after,
        jobmanager_on_its_own: jobmanager_figures.on_its_own,
        intervals: tracker.intervals,
        unseen: tracker.unseen,
        down_windows,
        lost_intervals,
        final_right: final_state.right,
        final_detail: final_state.detail,
        other_entries_intact: final_state.other_entries_intact,
        usage_start: (usage_start.rss_kib, usage_start.fds),
        usage_end: (usage_end.rss_kib, usage_end.fds),
        peak_rss_kib,
        peak_fds: monitor.peak_fds.max(usage_start.fds).max(usage_end.fds),
        samples: monitor.samples,
        longest_sample_gap: monitor.longest_gap,
        unauthorized: requests.iter().filter(|r| r.status == Some(401)).count(),
        conflicts: requests
            .iter()
            .filter(|r| r.method == "PATCH" && matches!(r.status, Some(409 | 422)))
            .count(),
        requests: count_requests(&requests),
        port_sync_metrics,
        port_sync_running,
        port_sync_log_lines: port_sync.lines().len(),
        port_sync_log_tail: tail(&port_sync.output(), 8000).to_owned(),
        jobmanager_error,
    })
}

/// Plays the schedule; returns the windows in which the API server was down.
fn play(
    schedule: &Schedule,
    bed: &ServiceBed,
    shared: &Shared,
    commands: &mpsc::Sender<Command>,
    port_sync: &mut Process,
    started: Instant,
) -> Result<Vec<(Instant, Instant)>, String> {
    let mut down_windows = Vec::new();
    for event in &schedule.events {
        wait_until(started + event.at, shared, port_sync)?;
        eprintln!(
            "soak: [{:6.1}s] {}",
            started.elapsed().as_secs_f64(),
            describe(event)
        );
        apply(event, bed, shared, commands, &mut down_windows)?;
    }
    wait_until(started + schedule.length, shared, port_sync)?;
    Ok(down_windows)
}

/// Sleeps until `deadline`, checking every 250 ms that port-sync runs and the JobManager
/// comes back.
fn wait_until(deadline: Instant, shared: &Shared, port_sync: &mut Process) -> Result<(), String> {
    loop {
        if !port_sync.is_running() {
            return Err("port-sync exited during the soak".to_owned());
        }
        if let Some(error) = shared.lock().jobmanager_error.clone() {
            return Err(error);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        sleep((deadline - now).min(Duration::from_millis(250)));
    }
}

fn apply(
    event: &Event,
    bed: &ServiceBed,
    shared: &Shared,
    commands: &mpsc::Sender<Command>,
    down_windows: &mut Vec<(Instant, Instant)>,
) -> Result<(), String> {
    let faults = bed.api.faults();
    let then_edit = |trigger: &Option<Edit>| match trigger {
        Some(edit) => edit_service(bed, shared, edit),
        None => Ok(()),
    };
    match &event.action {
        Action::Status {
            code,
            on,
            count,
            trigger,
        } => {
            faults.fail_next(*on, *count, Fault::Status(*code));
            then_edit(trigger)?;
        }
        Action::TooManyRequests {
            retry_after_secs,
            on,
            count,
            trigger,
        } => {
            faults.fail_next(
                *on,
                *count,
                Fault::TooManyRequests {
                    retry_after_secs: *retry_after_secs,
                },
            );
            then_edit(trigger)?;
        }
        Action::Reset { on, count, trigger } => {
            faults.fail_next(*on, *count, Fault::Reset);
            then_edit(trigger)?;
        }
        Action::Delay { delay, on, trigger } => {
            faults.fail_next(*on, 1, Fault::Delay(*delay));
            then_edit(trigger)?;
        }
        Action::ApiDown {
            duration,
            edit_while_down,
        } => {
            let from = Instant::now();
            bed.api.down_for(*duration);
            down_windows.push((from, from + *duration));
            if let Some(edit) = edit_while_down {
                sleep(*duration / 2);
                edit_service(bed, shared, edit)?;
            }
        }
        Action::TokenRotation { valid_for } => {
            bed.api
                .rotate_token(&bed.token_file, USER, *valid_for)
                .map_err(|error| format!("rotate the token: {error}"))?;
        }
        Action::OutsideEdit(edit) => edit_service(bed, shared, edit)?,
        Action::PortsReordered {
            edit,
            patch_delay,
            swap_after,
            swap,
        } => {
            faults.fail_next(FaultOn::Patch, 1, Fault::Delay(*patch_delay));
            edit_service(bed, shared, edit)?;
            sleep(*swap_after);
            // Not an edit of any port's value: the Service stays as right or wrong as it was.
            bed.api
                .edit_service(NAMESPACE, SERVICE, |service| {
                    if let Some(ports) = service["spec"]["ports"].as_array_mut()
                        && swap.1 < ports.len()
                    {
                        ports.swap(swap.0, swap.1);
                    }
                })
                .map_err(|error| format!("reorder the Service's ports: {error:?}"))?;
        }
        Action::JobManagerRestart => {
            commands
                .send(Command::Restart)
                .map_err(|_| "the JobManager's thread ended".to_owned())?;
        }
    }
    Ok(())
}

/// An outside edit that leaves `edit.port` wrong; its landing time goes to the monitor.
fn edit_service(bed: &ServiceBed, shared: &Shared, edit: &Edit) -> Result<(), String> {
    let right = {
        let state = shared.lock();
        state
            .desired
            .map(|d| (d.rpc, d.blob))
            .or(state.last_known)
            .map(|(rpc, blob)| match edit.port {
                schedule::PortName::Rpc => rpc,
                schedule::PortName::Blob => blob,
            })
    };
    let value = if Some(edit.value) == right {
        edit.value.checked_add(1).unwrap_or(1024)
    } else {
        edit.value
    };
    // Held across the edit: the monitor reads the Service and the edit's time under the same
    // lock, so it never sees the edit without its time (or the time before the edit lands).
    let mut state = shared.lock();
    // While the JobManager is away nothing is judged; its answer will be the later cause.
    if state.desired.is_some() {
        state.last_edit = Some(Instant::now());
    }
    let edited = bed
        .api
        .edit_service(NAMESPACE, SERVICE, |service| {
            let Some(ports) = service["spec"]["ports"].as_array_mut() else {
                return;
            };
            if let Some(entry) = ports
                .iter_mut()
                .find(|entry| entry["name"] == edit.port.as_str())
            {
                if edit.field != Field::TargetPort {
                    entry["port"] = json!(value);
                }
                if edit.field != Field::Port {
                    entry["targetPort"] = json!(value);
                }
            }
        })
        .map(drop)
        .map_err(|error| format!("edit the Service: {error:?}"));
    drop(state);
    edited
}

fn describe(event: &Event) -> String {
    let on = |on: &FaultOn| match on {
        FaultOn::Any => "any request",
        FaultOn::Get => "GET",
        FaultOn::Patch => "PATCH",
        FaultOn::List => "LIST",
        FaultOn::Watch => "WATCH",
        FaultOn::Create => "CREATE",
        FaultOn::Update => "UPDATE",
        FaultOn::Delete => "DELETE",
    };
    let edit = |edit: &Edit| {
        let field = match edit.field {
            Field::Port => "port",
            Field::TargetPort => "targetPort",
            Field::Both => "port+targetPort",
        };
        format!("edit {} {field}={}", edit.port.as_str(), edit.value)
    };
    let trigger = |trigger: &Option<Edit>| {
        trigger
            .as_ref()
            .map_or_else(String::new, |e| format!(", then {}", edit(e)))
    };
    match &event.action {
        Action::Status {
            code,
            on: target,
            count,
            trigger: t,
        } => format!("{code} on the next {count} {}{}", on(target), trigger(t)),
        Action::TooManyRequests {
            retry_after_secs,
            on: target,
            count,
            trigger: t,
        } => format!(
            "429 (Retry-After {retry_after_secs}s) on the next {count} {}{}",
            on(target),
            trigger(t)
        ),
        Action::Reset {
            on: target,
            count,
            trigger: t,
        } => format!("reset the next {count} {}{}", on(target), trigger(t)),
        Action::Delay {
            delay,
            on: target,
            trigger: t,
        } => format!("delay the next {} by {delay:?}{}", on(target), trigger(t)),
        Action::ApiDown {
            duration,
            edit_while_down,
        } => format!(
            "API server down for {duration:?}{}",
            edit_while_down
                .as_ref()
                .map_or_else(String::new, |e| format!(", {} half-way", edit(e)))
        ),
        Action::TokenRotation { valid_for } => {
            format!("rotate the token (new one valid {} s)", valid_for.as_secs())
        }
        Action::OutsideEdit(e) => edit(e),
        Action::PortsReordered {
            edit: e,
            patch_delay,
            swap_after,
            swap,
        } => format!(
            "hold the next PATCH {patch_delay:?}, {}, swap entries {} and {} {swap_after:?} later",
            edit(e),
            swap.0,
            swap.1
        ),
        Action::JobManagerRestart => "restart the JobManager (SIGKILL, start again)".to_owned(),
    }
}

struct FinalState {
    right: bool,
    detail: String,
    other_entries_intact: bool,
    pending_at_end: usize,
}

/// Clears the faults, waits for the API server and the JobManager, gives port-sync
/// `LOST_BOUND` to be right and `QUIET` to stay right, then compares.
fn finale(
    bed: &ServiceBed,
    shared: &Shared,
    port_sync: &mut Process,
) -> Result<FinalState, String> {
    let faults = bed.api.faults();
    let pending_at_end = faults.pending();
    faults.clear();
    eprintln!(
        "soak: schedule done; faults cleared ({pending_at_end} injected requests never came)"
    );
    let deadline = Instant::now() + JVM_START;
    while shared.lock().desired.is_none() {
        if Instant::now() > deadline {
            return Err("the JobManager did not answer after the schedule".to_owned());
        }
        wait_until(
            Instant::now() + Duration::from_millis(50),
            shared,
            port_sync,
        )?;
    }
    let deadline = Instant::now() + LOST_BOUND;
    while !service_right(bed, shared) && Instant::now() < deadline {
        wait_until(Instant::now() + SAMPLE_EVERY, shared, port_sync)?;
    }
    wait_until(Instant::now() + QUIET, shared, port_sync)?;
    let desired = shared.lock().desired;
    let service = service_ports(bed);
    let right = desired.is_some_and(|desired| desired.matches(&service));
    let show = |(port, target): (Option<i64>, Option<i64>)| {
        let show = |value: Option<i64>| value.map_or("-".to_owned(), |v| v.to_string());
        format!("{}/{}", show(port), show(target))
    };
    let detail = format!(
        "JobManager {}, Service rpc {} blob {} (port/targetPort)",
        desired.map_or("not answering".to_owned(), |d| format!(
            "rpc {} blob {}",
            d.rpc, d.blob
        )),
        show(service[0]),
        show(service[1])
    );
    let other_entries_intact = bed.port_of(SERVICE, "rest") == Some((8081, json!(8081)))
        && bed
            .api
            .get_service(NAMESPACE, SERVICE)
            .is_some_and(|s| s["spec"]["selector"] == json!({"app": "flink"}));
    Ok(FinalState {
        right,
        detail,
        other_entries_intact,
        pending_at_end,
    })
}

fn service_right(bed: &ServiceBed, shared: &Shared) -> bool {
    let desired = shared.lock().desired;
    desired.is_some_and(|desired| desired.matches(&service_ports(bed)))
}

/// The rpc and blob entries of the Service, from one read of it.
fn service_ports(bed: &ServiceBed) -> ServicePorts {
    let service = bed.api.get_service(NAMESPACE, SERVICE);
    let entry = |name: &str| {
        service
            .as_ref()
            .and_then(|s| s["spec"]["ports"].as_array())
            .and_then(|ports| ports.iter().find(|p| p["name"] == name))
            .map_or((None, None), |p| {
                (p["port"].as_i64(), p["targetPort"].as_i64())
            })
    };
    [entry("rpc"), entry("blob")]
}

fn jobmanager_loop(
    jobmanager: &mut JobManager,
    shared: &Shared,
    commands: mpsc::Receiver<Command>,
) -> JobManagerFigures {
    let mut figures = JobManagerFigures::default();
    let mut answering = true;
    let mut restarted_at: Option<Instant> = None;
    let mut away_since: Option<Instant> = None;
    loop {
        let pause = if answering {
            Duration::from_millis(250)
        } else {
            AWAY_POLL
        };
        match commands.recv_timeout(pause) {
            Ok(Command::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Command::Restart) => {
                shared.lock().desired = None;
                figures.restarts += 1;
                let now = Instant::now();
                restarted_at = Some(now);
                away_since = Some(now);
                answering = false;
                if let Err(error) = jobmanager.restart() {
                    shared.lock().jobmanager_error =
                        Some(format!("restart the JobManager: {error}"));
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        // An answer counts from when it was asked for: port-sync may have had the same
        // answer as early, and repair times should not come out shorter than they were.
        let asked = Instant::now();
        match jobmanager.live_ports() {
            Ok((rpc, blob)) => {
                let now = asked;
                let mut state = shared.lock();
                let changed = state.desired.is_none_or(|d| (d.rpc, d.blob) != (rpc, blob));
                if changed {
                    if answering {
                        // New ports without a restart: it restarted on its own.
                        figures.on_its_own += 1;
                    }
                    state.desired = Some(Desired {
                        rpc,
                        blob,
                        since: now,
                    });
                    state.last_known = Some((rpc, blob));
                }
                drop(state);
                if let Some(at) = restarted_at.take() {
                    let after = now - at;
                    figures.answered_after.push(after);
                    eprintln!(
                        "soak: the JobManager answers again after {:.1} s: rpc {rpc} blob {blob}",
                        after.as_secs_f64()
                    );
                }
                answering = true;
                away_since = None;
            }
            Err(_) => {
                if answering {
                    figures.on_its_own += 1;
                    shared.lock().desired = None;
                    away_since = Some(Instant::now());
                    answering = false;
                }
                if away_since.is_some_and(|since| since.elapsed() > JVM_START) {
                    shared.lock().jobmanager_error = Some(format!(
                        "the JobManager did not answer for {} s:\n{}",
                        JVM_START.as_secs(),
                        tail(&jobmanager.log(), 4000)
                    ));
                    away_since = None;
                }
            }
        }
    }
    figures
}

fn monitor_loop(bed: &ServiceBed, shared: &Shared, pid: u32) -> (Tracker, MonitorFigures) {
    let mut tracker = Tracker::default();
    let mut figures = MonitorFigures::default();
    let mut next_usage = Instant::now();
    let mut previous: Option<Instant> = None;
    while !shared.stop_monitor.load(Ordering::SeqCst) {
        // One consistent view: edits and the JobManager's answers are recorded under this lock.
        let (service, now, desired, last_edit) = {
            let state = shared.lock();
            let service = service_ports(bed);
            (service, Instant::now(), state.desired, state.last_edit)
        };
        tracker.sample(now, desired, &service, last_edit);
        figures.samples += 1;
        // Just after an edit or a JobManager answer, sample fast: most repairs take
        // milliseconds.
        let latest_cause = last_edit.max(desired.map(|d| d.since));
        let pause = if latest_cause.is_some_and(|at| now.saturating_duration_since(at) < BURST) {
            BURST_EVERY
        } else {
            SAMPLE_EVERY
        };
        if let Some(previous) = previous {
            figures.longest_gap = figures.longest_gap.max(now - previous);
        }
        previous = Some(now);
        if now >= next_usage {
            if let Ok(usage) = usage(pid) {
                figures.peak_fds = figures.peak_fds.max(usage.fds);
            }
            next_usage = now + Duration::from_secs(1);
        }
        sleep(pause);
    }
    tracker.finish(Instant::now());
    (tracker, figures)
}

fn is_lost(interval: &WrongInterval, down_windows: &[(Instant, Instant)]) -> bool {
    if interval.ending == Ending::StillOpen {
        return true;
    }
    let down: Duration = down_windows
        .iter()
        .map(|&(from, to)| {
            let from = from.max(interval.started);
            let to = to.min(interval.ended);
            to.saturating_duration_since(from)
        })
        .sum();
    interval.duration().saturating_sub(down) > LOST_BOUND
}

fn usage(pid: u32) -> std::io::Result<Usage> {
    let rss_kib = status_field_kib(pid, "VmRSS:")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Usage { rss_kib, fds })
}

fn status_field_kib(pid: u32, field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// `port_sync_patches_total` and the non-zero `port_sync_errors_total{kind}`.
fn parse_metrics(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|line| {
            line.starts_with("port_sync_patches_total")
                || (line.starts_with("port_sync_errors_total") && !line.ends_with(" 0"))
        })
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// "PATCH 200", "GET 503", "WATCH reset", ... with their counts.
fn count_requests(requests: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        let kind = format!("{:?}", request.kind).to_uppercase();
        let status = request
            .status
            .map_or_else(|| "reset".to_owned(), |code| code.to_string());
        *counts.entry(format!("{kind} {status}")).or_insert(0) += 1;
    }
    counts
}

fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn cause_name(cause: Cause) -> &'static str {
    match cause {
        Cause::JobManagerAnswered => "JobManager answered",
        Cause::OutsideEdit => "outside edit",
        Cause::Unexplained => "UNEXPLAINED",
    }
}

fn ending_name(ending: Ending) -> &'static str {
    match ending {
        Ending::Repaired => "repaired",
        Ending::CutByRestart => "cut short by a restart",
        Ending::StillOpen => "NEVER REPAIRED",
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

impl SoakReport {
    fn repairs(&self, cause: Option<Cause>) -> Vec<Duration> {
        let mut repairs: Vec<Duration> = self
            .intervals
            .iter()
            .filter(|i| i.ending == Ending::Repaired && cause.is_none_or(|c| c == i.cause))
            .map(WrongInterval::duration)
            .collect();
        repairs.sort();
        repairs
    }

    fn count(&self, cause: Cause) -> usize {
        self.intervals.iter().filter(|i| i.cause == cause).count()
    }

    fn cut(&self) -> usize {
        self.intervals
            .iter()
            .filter(|i| i.ending == Ending::CutByRestart)
            .count()
    }

    /// Wrong intervals never repaired in time, plus the final state if it is wrong and no
    /// interval already counts it.
    pub fn lost_updates(&self) -> usize {
        let still_open = self.intervals.iter().any(|i| i.ending == Ending::StillOpen);
        self.lost_intervals + usize::from(!self.final_right && !still_open)
    }

    /// Why the soak failed; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.lost_updates() > 0 {
            failures.push(format!(
                "{} lost update(s): the Service stayed wrong more than {} s after its cause, or \
                 was wrong at the end ({})",
                self.lost_updates(),
                LOST_BOUND.as_secs(),
                self.final_detail
            ));
        }
        if !self.final_right && self.lost_updates() == 0 {
            failures.push(format!("the final state is wrong: {}", self.final_detail));
        }
        let unexplained = self.count(Cause::Unexplained);
        if unexplained > 0 {
            failures.push(format!(
                "{unexplained} time(s) the Service turned wrong with no restart or outside edit \
                 to explain it: a wrong write"
            ));
        }
        if !self.other_entries_intact {
            failures.push("the rest port or the selector changed".to_owned());
        }
        if self.unauthorized > 0 {
            failures.push(format!(
                "{} request(s) answered 401: port-sync used a token after it expired",
                self.unauthorized
            ));
        }
        if !self.port_sync_running {
            failures.push("port-sync is not running at the end".to_owned());
        }
        if self.usage_end.1 > self.usage_start.1 + FD_SLACK {
            failures.push(format!(
                "port-sync's open descriptors grew from {} to {} (slack {FD_SLACK})",
                self.usage_start.1, self.usage_end.1
            ));
        }
        if self.usage_end.0 > self.usage_start.0 + RSS_SLACK_KIB {
            failures.push(format!(
                "port-sync's RSS grew from {} KiB to {} KiB (slack {RSS_SLACK_KIB} KiB)",
                self.usage_start.0, self.usage_end.0
            ));
        }
        if let Some(error) = &self.jobmanager_error {
            failures.push(error.clone());
        }
        failures
    }

    /// The figures as a table, one line each.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "| {name} | {value} |");
        };
        row(
            "seed, schedule length",
            format!(
                "{}, {} s (ran {:.0} s with the final checks)",
                self.seed,
                self.length.as_secs(),
                self.elapsed.as_secs_f64()
            ),
        );
        row(
            "faults injected",
            format!(
                "{} events: {}",
                self.events.iter().map(|(_, n)| n).sum::<usize>(),
                self.events
                    .iter()
                    .map(|(kind, n)| format!("{} {n}", kind.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        row(
            "requests set to fail or be held",
            format!(
                "{} ({} hit, {} never came and were cleared)",
                self.injected_requests,
                self.injected_requests.saturating_sub(self.pending_at_end),
                self.pending_at_end
            ),
        );
        let answered = {
            let mut sorted = self.restart_answered_after.clone();
            sorted.sort();
            sorted
        };
        row(
            "JobManager restarts",
            format!(
                "{} (answered again after {:.1}–{:.1} s); stopped or moved on its own: {}",
                self.restarts,
                answered.first().copied().unwrap_or_default().as_secs_f64(),
                answered.last().copied().unwrap_or_default().as_secs_f64(),
                self.jobmanager_on_its_own
            ),
        );
        let all = self.repairs(None);
        row(
            "times the Service was wrong",
            format!(
                "{} ({} after a JobManager answer, {} after an outside edit, {} unexplained); {} \
                 cut short by a restart; {} repaired between two samples (counted with the \
                 second sample's time, an upper bound)",
                self.intervals.len(),
                self.count(Cause::JobManagerAnswered),
                self.count(Cause::OutsideEdit),
                self.count(Cause::Unexplained),
                self.cut(),
                self.unseen
            ),
        );
        let total: Duration = self.intervals.iter().map(WrongInterval::duration).sum();
        row(
            "time to repair, all (median / p99 / max)",
            format!(
                "{} / {} / {} over {} repairs; wrong {:.1} s in all",
                ms(percentile(&all, 50)),
                ms(percentile(&all, 99)),
                ms(all.last().copied().unwrap_or_default()),
                all.len(),
                total.as_secs_f64()
            ),
        );
        for (name, cause) in [
            ("  after a JobManager answer", Cause::JobManagerAnswered),
            ("  after an outside edit", Cause::OutsideEdit),
        ] {
            let repairs = self.repairs(Some(cause));
            row(
                name,
                format!(
                    "{} / {} / {} over {}",
                    ms(percentile(&repairs, 50)),
                    ms(percentile(&repairs, 99)),
                    ms(repairs.last().copied().unwrap_or_default()),
                    repairs.len()
                ),
            );
        }
        row(
            "lost updates",
            format!(
                "{} (final state {}: {})",
                self.lost_updates(),
                if self.final_right { "right" } else { "WRONG" },
                self.final_detail
            ),
        );
        row(
            "port-sync RSS, start / end / peak",
            format!(
                "{} / {} / {} KiB",
                self.usage_start.0, self.usage_end.0, self.peak_rss_kib
            ),
        );
        row(
            "port-sync open descriptors, start / end / peak",
            format!(
                "{} / {} / {}",
                self.usage_start.1, self.usage_end.1, self.peak_fds
            ),
        );
        row(
            "requests the stand-in saw",
            self.requests
                .iter()
                .map(|(what, n)| format!("{what}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row(
            "PATCHes refused 409/422, answers 401",
            format!("{}, {}", self.conflicts, self.unauthorized),
        );
        row(
            "port-sync's /metrics",
            self.port_sync_metrics
                .iter()
                .map(|(name, value)| format!("{name} {value}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row(
            "monitor",
            format!(
                "{} samples, every {} ms ({} ms for {} ms after each edit or JobManager \
                 answer), longest gap {}",
                self.samples,
                SAMPLE_EVERY.as_millis(),
                BURST_EVERY.as_millis(),
                BURST.as_millis(),
                ms(self.longest_sample_gap)
            ),
        );
        row(
            "port-sync",
            format!(
                "{} ({}), {} log lines",
                self.binary.display(),
                if self.port_sync_running {
                    "still running"
                } else {
                    "EXITED"
                },
                self.port_sync_log_lines
            ),
        );
        out
    }

    /// One line per wrong interval: when (from the schedule's start), why, how long, how it
    /// ended.
    pub fn interval_lines(&self) -> Vec<String> {
        self.intervals
            .iter()
            .map(|interval| {
                format!(
                    "[{:6.1}s] {:<22} {:>6} {}{}",
                    interval
                        .started
                        .saturating_duration_since(self.started)
                        .as_secs_f64(),
                    cause_name(interval.cause),
                    ms(interval.duration()),
                    ending_name(interval.ending),
                    if interval.unseen {
                        " (between two samples: an upper bound)"
                    } else {
                        ""
                    }
                )
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let all = self.repairs(None);
        let millis = |d: Duration| d.as_secs_f64() * 1000.0;
        json!({
            "seed": self.seed,
            "length_secs": self.length.as_secs(),
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "events": self.events.iter().map(|(k, n)| (k.name().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "injected_requests": self.injected_requests,
            "injected_requests_never_came": self.pending_at_end,
            "jobmanager_restarts": self.restarts,
            "jobmanager_answered_after_secs": self.restart_answered_after.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(),
            "jobmanager_on_its_own": self.jobmanager_on_its_own,
            "wrong_intervals": self.intervals.len(),
            "wrong_after_jobmanager_answer": self.count(Cause::JobManagerAnswered),
            "wrong_after_outside_edit": self.count(Cause::OutsideEdit),
            "wrong_unexplained": self.count(Cause::Unexplained),
            "wrong_cut_by_restart": self.cut(),
            "wrong_repaired_between_two_samples": self.unseen,
            "repair_ms": {
                "count": all.len(),
                "median": millis(percentile(&all, 50)),
                "p99": millis(percentile(&all, 99)),
                "max": millis(all.last().copied().unwrap_or_default()),
            },
            "lost_updates": self.lost_updates(),
            "final_right": self.final_right,
            "final_detail": self.final_detail,
            "rss_kib": {"start": self.usage_start.0, "end": self.usage_end.0, "peak": self.peak_rss_kib},
            "fds": {"start": self.usage_start.1, "end": self.usage_end.1, "peak": self.peak_fds},
            "requests": self.requests,
            "patch_conflicts": self.conflicts,
            "unauthorized": self.unauthorized,
            "port_sync_metrics": self.port_sync_metrics.iter().cloned().collect::<BTreeMap<_, _>>(),
            "failures": self.failures(),
            "intervals": self.intervals.iter().map(|interval| json!({
                "at_secs": interval.started.saturating_duration_since(self.started).as_secs_f64(),
                "cause": cause_name(interval.cause),
                "ms": millis(interval.duration()),
                "ending": ending_name(interval.ending),
                "between_two_samples": interval.unseen,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50), Duration::from_millis(50));
        assert_eq!(percentile(&values, 99), Duration::from_millis(99));
        assert_eq!(percentile(&values[..3], 99), Duration::from_millis(3));
        assert_eq!(percentile(&[], 99), Duration::ZERO);
    }

    #[test]
    fn time_the_api_server_was_down_does_not_count_against_a_repair() {
        let t0 = Instant::now();
        let interval = |secs: u64, ending| WrongInterval {
            cause: Cause::OutsideEdit,
            started: t0,
            ended: t0 + Duration::from_secs(secs),
            ending,
            unseen: false,
        };
        assert!(!is_lost(&interval(59, Ending::Repaired), &[]));
        assert!(is_lost(&interval(61, Ending::Repaired), &[]));
        let down = [(t0 + Duration::from_secs(5), t0 + Duration::from_secs(10))];
        assert!(!is_lost(&interval(64, Ending::Repaired), &down));
        assert!(is_lost(&interval(1, Ending::StillOpen), &[]));
    }

    #[test]
    fn metrics_keep_patches_and_the_errors_that_happened() {
        let text = "# HELP x\nport_sync_patches_total 7\nport_sync_errors_total{kind=\"api_conflict\"} 2\n\
                    port_sync_errors_total{kind=\"api_gone\"} 0\nport_sync_in_sync 1\n";
        assert_eq!(
            parse_metrics(text),
            [
                ("port_sync_patches_total".to_owned(), "7".to_owned()),
                (
                    "port_sync_errors_total{kind=\"api_conflict\"}".to_owned(),
                    "2".to_owned()
                ),
            ]
        );
    }
}
