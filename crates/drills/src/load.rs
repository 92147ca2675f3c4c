//! Load: many port-sync processes, each keeping its own JobManager Service, against one API
//! stand-in and one fake JobManager, as many Flink clusters (one chart release each) share one
//! Kubernetes cluster. After a warm-up in which every instance syncs its Service, a steady-state
//! window is measured: the requests each instance sends to the API server, by verb, from the
//! stand-in's request log (told apart by the service account each instance authenticates as),
//! the requests to the JobManager, open connections, CPU time and RSS from /proc. The figures are
//! then scaled to 1,000 Flink clusters and set beside kube-apiserver's in-flight limits.
//!
//! RBAC as the chart makes it per release: every instance has its own service account and token,
//! and its own copy of rbac/role.yaml whose `resourceNames` name its own Service
//! ([`ApiServerConfig::with_role_copy`]), so each instance may touch its Service and no other.
//!
//! The arithmetic (tallies, rates, extrapolation, /proc parsing) is pure and tested here; `run`
//! is the I/O around it.

use fixtures::fake_jobmanager::{Answer, FakeJobManager};
use fixtures::ports::free_port;
use fixtures::process::{Echo, Process};
use kube_stand_in::service_bed::{NAMESPACE, ServiceBed};
use kube_stand_in::{ApiServerConfig, RequestKind, RequestRecord};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

/// The ports the fake JobManager reports: not the Services' 6123/6124, so every instance
/// must patch once during the warm-up.
pub const RPC_PORT: u16 = 41_123;
pub const BLOB_PORT: u16 = 41_124;
/// How many Flink clusters the figures are scaled to.
pub const CLUSTERS: usize = 1000;
/// kube-apiserver's defaults: `--max-requests-inflight` (read-only requests) and
/// `--max-mutating-requests-inflight`. With API Priority and Fairness (on by default) their sum
/// is the server's total concurrency, shared among the priority levels.
pub const MAX_REQUESTS_INFLIGHT: usize = 400;
pub const MAX_MUTATING_REQUESTS_INFLIGHT: usize = 200;
/// A conservative latency for a real API server's GET, PATCH or watch start (etcd behind it).
pub const CONSERVATIVE_LATENCY: Duration = Duration::from_millis(100);
/// How long all instances may take to sync their Services after they start.
const WARM_UP_LIMIT: Duration = Duration::from_secs(180);
/// After the last Service is synced: time for trailing requests (watch events, a watch
/// start) to pass before the steady state is measured.
const SETTLE: Duration = Duration::from_secs(5);

pub fn service_name(instance: usize) -> String {
    format!("flink-jobmanager-{instance}")
}

pub fn service_account(instance: usize) -> String {
    format!("port-sync-{instance}")
}

pub fn user(instance: usize) -> String {
    format!(
        "system:serviceaccount:{NAMESPACE}:{}",
        service_account(instance)
    )
}

/// Requests of one client, by verb as RBAC names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerbCounts {
    pub get: usize,
    pub list: usize,
    /// Watches started (each then stays open: a long-running request).
    pub watch: usize,
    pub patch: usize,
    /// create, update, delete, discovery: port-sync sends none of these.
    pub other: usize,
    /// Answered with a code of 400 or more, or not answered.
    pub errors: usize,
}

impl VerbCounts {
    pub fn count(&mut self, record: &RequestRecord) {
        match record.kind {
            RequestKind::Get => self.get += 1,
            RequestKind::List => self.list += 1,
            RequestKind::Watch => self.watch += 1,
            RequestKind::Patch => self.patch += 1,
            RequestKind::Create
            | RequestKind::Update
            | RequestKind::Delete
            | RequestKind::Other => self.other += 1,
        }
        if record.status.is_none_or(|code| code >= 400) {
            self.errors += 1;
        }
    }

    pub fn total(&self) -> usize {
        self.get + self.list + self.watch + self.patch + self.other
    }

    /// Requests that take a read-only seat: GET, LIST and watch starts.
    pub fn read_only(&self) -> usize {
        self.get + self.list + self.watch
    }

    /// Requests that take a mutating seat (PATCH; create, update and delete would).
    pub fn mutating(&self) -> usize {
        self.patch + self.other
    }

    pub fn sum<'a>(counts: impl IntoIterator<Item = &'a VerbCounts>) -> VerbCounts {
        counts
            .into_iter()
            .fold(VerbCounts::default(), |sum, c| VerbCounts {
                get: sum.get + c.get,
                list: sum.list + c.list,
                watch: sum.watch + c.watch,
                patch: sum.patch + c.patch,
                other: sum.other + c.other,
                errors: sum.errors + c.errors,
            })
    }
}

/// The requests in `[from, to)` of each user in `users` (by index), and how many requests in
/// that time came from anybody else (or were not authenticated).
pub fn tally(
    records: &[RequestRecord],
    users: &[String],
    from: SystemTime,
    to: SystemTime,
) -> (Vec<VerbCounts>, usize) {
    let index: std::collections::HashMap<&str, usize> = users
        .iter()
        .enumerate()
        .map(|(i, user)| (user.as_str(), i))
        .collect();
    let mut counts = vec![VerbCounts::default(); users.len()];
    let mut strangers = 0;
    for record in records.iter().filter(|r| r.at >= from && r.at < to) {
        match record.identity.as_deref().and_then(|u| index.get(u)) {
            Some(&i) => counts[i].count(record),
            None => strangers += 1,
        }
    }
    (counts, strangers)
}

/// `count` events over `window`, per minute.
pub fn per_minute(count: f64, window: Duration) -> f64 {
    count * 60.0 / window.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// How long the clients asked their watches to last: the smallest `timeoutSeconds` of the
/// watch requests in `records`. A client starts its next watch when one ends, so one watch
/// start per this period is the steady state even when a window too short sees none.
pub fn watch_period(records: &[RequestRecord]) -> Option<Duration> {
    records
        .iter()
        .filter(|r| r.kind == RequestKind::Watch)
        .filter_map(|r| {
            r.query.split('&').find_map(|pair| {
                pair.strip_prefix("timeoutSeconds=")
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .min()
        .map(Duration::from_secs)
}

/// Watch starts per minute in steady state: what was measured, or one per `period` when the
/// window was too short to see the renewals (the larger of the two).
pub fn steady_watch_rate(measured_per_minute: f64, period: Option<Duration>) -> f64 {
    let by_design = period.map_or(0.0, |p| 60.0 / p.as_secs_f64().max(1.0));
    measured_per_minute.max(by_design)
}

/// Steady-state rates of one average instance, per minute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub get: f64,
    pub list: f64,
    pub watch: f64,
    pub patch: f64,
    pub other: f64,
    pub jobmanager: f64,
}

impl Rates {
    pub fn read_only(&self) -> f64 {
        self.get + self.list + self.watch
    }

    pub fn mutating(&self) -> f64 {
        self.patch + self.other
    }

    pub fn api(&self) -> f64 {
        self.read_only() + self.mutating()
    }
}

/// The figures for many clusters, each with one port-sync at `rates`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extrapolation {
    pub clusters: usize,
    /// Requests per second to the API server that take a seat (watch starts included).
    pub read_only_per_second: f64,
    pub mutating_per_second: f64,
    /// Requests per second to the JobManagers (each cluster's to its own).
    pub jobmanager_per_second: f64,
    /// Watches open at any time (one per port-sync): long-running, no seat once started.
    pub open_watches: usize,
}

impl Extrapolation {
    pub fn api_per_second(&self) -> f64 {
        self.read_only_per_second + self.mutating_per_second
    }

    /// Requests in flight on average at this latency (Little's law: rate × time in system),
    /// read-only and mutating.
    pub fn in_flight(&self, latency: Duration) -> (f64, f64) {
        let seconds = latency.as_secs_f64();
        (
            self.read_only_per_second * seconds,
            self.mutating_per_second * seconds,
        )
    }
}

pub fn extrapolate(rates: &Rates, clusters: usize) -> Extrapolation {
    let scale = clusters as f64 / 60.0;
    Extrapolation {
        clusters,
        read_only_per_second: rates.read_only() * scale,
        mutating_per_second: rates.mutating() * scale,
        jobmanager_per_second: rates.jobmanager * scale,
        open_watches: clusters,
    }
}

/// utime + stime of a process, in clock ticks, from the text of `/proc/<pid>/stat`.
pub fn cpu_ticks_of(stat: &str) -> Option<u64> {
    // The command name in parentheses may hold spaces; the fields after it are fixed.
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// Established TCP connections whose local port is `port` (the server's side of each
/// connection to a server listening there), from the text of `/proc/net/tcp`.
pub fn established_on_port(proc_net_tcp: &str, port: u16) -> usize {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|address| address.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// port-sync's `--interval` as the chart sets it: `sidecars.portSync.interval` in
/// helm/flink-ha/values.yaml.
pub fn chart_interval() -> io::Result<String> {
    let path = fixtures::image::workspace_root().join("helm/flink-ha/values.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let values: Value = serde_saphyr::from_str(&text)
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    values
        .pointer("/sidecars/portSync/interval")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            io::Error::other(format!(
                "{} has no sidecars.portSync.interval",
                path.display()
            ))
        })
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The port-sync binary.
    pub binary: PathBuf,
    pub instances: usize,
    /// The steady-state window measured.
    pub window: Duration,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub instances: usize,
    pub binary: PathBuf,
    pub interval: String,
    /// From the first process started to the last Service synced.
    pub warm_up: Duration,
    /// All instances' requests from the start to the window (warm-up and settling).
    pub warm_up_counts: VerbCounts,
    pub window: Duration,
    /// Each instance's requests in the window.
    pub per_instance: Vec<VerbCounts>,
    /// Requests in the window from no instance (none expected).
    pub strangers: usize,
    /// Requests to the fake JobManager in the window, all instances.
    pub jobmanager_requests: usize,
    /// The watch period the instances asked for (`timeoutSeconds`).
    pub watch_period: Option<Duration>,
    /// Mean time the stand-in took per request of an instance (for watches: to the stream's
    /// start), over the whole run, and how many requests that mean is of.
    pub mean_latency: Duration,
    pub latency_samples: usize,
    /// Established connections to the API stand-in at the window's end.
    pub api_connections: usize,
    /// CPU time of all instances in the window.
    pub cpu: Duration,
    /// Sum of the instances' VmRSS at the window's end, and the largest VmHWM.
    pub rss_kib_total: u64,
    pub peak_rss_kib_max: u64,
}

impl LoadReport {
    fn minutes_rate(&self, count: usize) -> f64 {
        per_minute(count as f64, self.window) / self.instances.max(1) as f64
    }

    /// One average instance's steady-state rates per minute (watch starts: at least one per
    /// watch period, see [`steady_watch_rate`]).
    pub fn rates(&self) -> Rates {
        let total = VerbCounts::sum(&self.per_instance);
        Rates {
            get: self.minutes_rate(total.get),
            list: self.minutes_rate(total.list),
            watch: steady_watch_rate(self.minutes_rate(total.watch), self.watch_period),
            patch: self.minutes_rate(total.patch),
            other: self.minutes_rate(total.other),
            jobmanager: self.minutes_rate(self.jobmanager_requests),
        }
    }

    /// The measured (not design-adjusted) rate of one verb per instance per minute: mean,
    /// smallest and largest over the instances.
    fn spread(&self, pick: impl Fn(&VerbCounts) -> usize) -> (f64, f64, f64) {
        let each: Vec<f64> = self
            .per_instance
            .iter()
            .map(|c| per_minute(pick(c) as f64, self.window))
            .collect();
        let mean = each.iter().sum::<f64>() / each.len().max(1) as f64;
        let min = each.iter().copied().fold(f64::INFINITY, f64::min);
        let max = each.iter().copied().fold(0.0, f64::max);
        (mean, if min.is_finite() { min } else { 0.0 }, max)
    }

    pub fn extrapolation(&self) -> Extrapolation {
        extrapolate(&self.rates(), CLUSTERS)
    }

    /// The report as a table, for people.
    pub fn table(&self) -> String {
        let n = self.instances;
        let minutes = self.window.as_secs_f64() / 60.0;
        let total = VerbCounts::sum(&self.per_instance);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "load: {n} port-sync processes (--interval {}), each with its own Service, service \
             account and Role, against one API stand-in and one fake JobManager",
            self.interval
        );
        let _ = writeln!(
            out,
            "  warm-up: all {n} Services synced {:.1} s after the first start; {} requests in all \
             until the window (GET {}, PATCH {}, WATCH {}, LIST {}, other {})",
            self.warm_up.as_secs_f64(),
            self.warm_up_counts.total(),
            self.warm_up_counts.get,
            self.warm_up_counts.patch,
            self.warm_up_counts.watch,
            self.warm_up_counts.list,
            self.warm_up_counts.other,
        );
        let _ = writeln!(
            out,
            "  steady state measured over {:.0} s ({minutes:.1} min)\n",
            self.window.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "{:<34} {:>22} {:>12} {:>18}",
            "requests (measured in the window)",
            "per instance/min",
            format!("all {n}/min"),
            format!("per {CLUSTERS} clusters/s")
        );
        let scale = CLUSTERS as f64 / n.max(1) as f64 / 60.0;
        let mut row = |label: &str, count: usize, pick: &dyn Fn(&VerbCounts) -> usize| {
            let (mean, min, max) = self.spread(pick);
            let all = per_minute(count as f64, self.window);
            let _ = writeln!(
                out,
                "{label:<34} {:>22} {all:>12.2} {:>18.3}",
                format!("{mean:.2} ({min:.2}-{max:.2})"),
                all * scale
            );
        };
        row("API GET", total.get, &|c| c.get);
        row("API PATCH", total.patch, &|c| c.patch);
        row("API LIST", total.list, &|c| c.list);
        row("API WATCH starts", total.watch, &|c| c.watch);
        row("API other", total.other, &|c| c.other);
        row("API all", total.total(), &|c| c.total());
        let jm_each = self.minutes_rate(self.jobmanager_requests);
        let jm_all = per_minute(self.jobmanager_requests as f64, self.window);
        let _ = writeln!(
            out,
            "{:<34} {:>22} {jm_all:>12.2} {:>18.3}",
            "JobManager GET /jobmanager/config",
            format!("{jm_each:.2} (all/{n})"),
            jm_all * scale
        );
        let rates = self.rates();
        let _ = writeln!(
            out,
            "{:<34} {:>22} {:>12.2} {:>18.3}",
            "API all, steady state (*)",
            format!("{:.3}", rates.api()),
            rates.api() * n as f64,
            rates.api() * CLUSTERS as f64 / 60.0
        );
        let _ = writeln!(
            out,
            "(min-max over the instances in brackets; * watch starts counted at least once per \
             watch period, see below)"
        );
        let _ = writeln!(
            out,
            "\n  error answers in the window: {}; requests from no instance: {}",
            total.errors, self.strangers
        );
        if let Some(period) = self.watch_period {
            let _ = writeln!(
                out,
                "  watches: each instance keeps one open and asks the server to end it after \
                 timeoutSeconds={}, then starts the next: one start every {} s = {:.3}/min per \
                 instance in steady state, also when a window is too short to see one",
                period.as_secs(),
                period.as_secs(),
                60.0 / period.as_secs_f64()
            );
        }
        let _ = writeln!(
            out,
            "  open connections to the API server at the end: {} ({:.2} per instance: its watch, \
             plus any idle keep-alive)",
            self.api_connections,
            self.api_connections as f64 / n.max(1) as f64
        );
        let _ = writeln!(
            out,
            "  CPU time of all {n} processes in the window: {:.2} s ({:.3}% of a core; {:.4}% \
             each); RSS {:.1} MB in all ({:.1} MB each), largest peak {:.1} MB",
            self.cpu.as_secs_f64(),
            100.0 * self.cpu.as_secs_f64() / self.window.as_secs_f64(),
            100.0 * self.cpu.as_secs_f64() / self.window.as_secs_f64() / n.max(1) as f64,
            self.rss_kib_total as f64 / 1024.0,
            self.rss_kib_total as f64 / 1024.0 / n.max(1) as f64,
            self.peak_rss_kib_max as f64 / 1024.0
        );

        let e = self.extrapolation();
        let (observed_ro, observed_mut) = e.in_flight(self.mean_latency);
        let (safe_ro, safe_mut) = e.in_flight(CONSERVATIVE_LATENCY);
        let _ = writeln!(
            out,
            "\nper {CLUSTERS} Flink clusters (one port-sync each; steady state, watch starts at \
             least one per watch period):"
        );
        let _ = writeln!(
            out,
            "  to the API server: {:.2} requests/s ({:.2} read-only: GET {:.2}, LIST {:.2}, WATCH \
             starts {:.2}; {:.2} mutating)",
            e.api_per_second(),
            e.read_only_per_second,
            rates.get * CLUSTERS as f64 / 60.0,
            rates.list * CLUSTERS as f64 / 60.0,
            rates.watch * CLUSTERS as f64 / 60.0,
            e.mutating_per_second
        );
        let _ = writeln!(
            out,
            "  in flight (rate x latency): {:.4} read-only + {:.4} mutating at the stand-in's mean \
             {:.1} ms ({} requests); {:.3} + {:.3} at a conservative {} ms",
            observed_ro,
            observed_mut,
            self.mean_latency.as_secs_f64() * 1000.0,
            self.latency_samples,
            safe_ro,
            safe_mut,
            CONSERVATIVE_LATENCY.as_millis()
        );
        let _ = writeln!(
            out,
            "  kube-apiserver defaults: --max-requests-inflight {MAX_REQUESTS_INFLIGHT} (read-only), \
             --max-mutating-requests-inflight {MAX_MUTATING_REQUESTS_INFLIGHT}; with API Priority \
             and Fairness {} seats in all, shared among priority levels: {:.4}% of them at 100 ms",
            MAX_REQUESTS_INFLIGHT + MAX_MUTATING_REQUESTS_INFLIGHT,
            100.0 * (safe_ro + safe_mut)
                / (MAX_REQUESTS_INFLIGHT + MAX_MUTATING_REQUESTS_INFLIGHT) as f64
        );
        let _ = writeln!(
            out,
            "  open watches: {} (long-running: no in-flight seat once started)",
            e.open_watches
        );
        let _ = writeln!(
            out,
            "  to the JobManagers: {:.0} requests/s in all, {:.2}/s per cluster to its own \
             JobManager (not the API server)",
            e.jobmanager_per_second,
            e.jobmanager_per_second / CLUSTERS as f64
        );
        out
    }

    /// The report as JSON, for tools.
    pub fn json(&self) -> Value {
        let counts = |c: &VerbCounts| {
            json!({
                "get": c.get, "list": c.list, "watch": c.watch, "patch": c.patch,
                "other": c.other, "errors": c.errors,
            })
        };
        let rates = self.rates();
        let e = self.extrapolation();
        let (observed_ro, observed_mut) = e.in_flight(self.mean_latency);
        let (safe_ro, safe_mut) = e.in_flight(CONSERVATIVE_LATENCY);
        json!({
            "instances": self.instances,
            "binary": self.binary,
            "interval": self.interval,
            "warm_up_seconds": self.warm_up.as_secs_f64(),
            "warm_up_requests": counts(&self.warm_up_counts),
            "window_seconds": self.window.as_secs_f64(),
            "window_requests": counts(&VerbCounts::sum(&self.per_instance)),
            "per_instance_window_requests": self.per_instance.iter().map(counts).collect::<Vec<_>>(),
            "requests_from_no_instance": self.strangers,
            "jobmanager_requests": self.jobmanager_requests,
            "watch_period_seconds": self.watch_period.map(|p| p.as_secs()),
            "per_instance_per_minute": {
                "get": rates.get, "list": rates.list, "watch_starts": rates.watch,
                "patch": rates.patch, "other": rates.other, "api": rates.api(),
                "jobmanager": rates.jobmanager,
            },
            "mean_latency_ms": self.mean_latency.as_secs_f64() * 1000.0,
            "latency_samples": self.latency_samples,
            "api_connections": self.api_connections,
            "cpu_seconds": self.cpu.as_secs_f64(),
            "rss_kib_total": self.rss_kib_total,
            "peak_rss_kib_max": self.peak_rss_kib_max,
            "per_1000_clusters": {
                "api_requests_per_second": e.api_per_second(),
                "read_only_per_second": e.read_only_per_second,
                "mutating_per_second": e.mutating_per_second,
                "jobmanager_requests_per_second": e.jobmanager_per_second,
                "open_watches": e.open_watches,
                "in_flight_at_observed_latency": {"read_only": observed_ro, "mutating": observed_mut},
                "in_flight_at_100ms": {"read_only": safe_ro, "mutating": safe_mut},
                "max_requests_inflight": MAX_REQUESTS_INFLIGHT,
                "max_mutating_requests_inflight": MAX_MUTATING_REQUESTS_INFLIGHT,
            },
        })
    }
}

/// Runs `config.instances` port-sync processes until all have synced, measures the steady
/// state over `config.window`, and reports. Fails if any instance does not sync in time, or
/// exits, or if its Service no longer holds the ports at the end.
pub fn run(config: &LoadConfig) -> Result<LoadReport, String> {
    let fail = |e: io::Error| e.to_string();
    let n = config.instances;
    if n == 0 {
        return Err("--instances must be at least 1".into());
    }
    let interval = chart_interval().map_err(fail)?;
    let mut api_config = ApiServerConfig::default();
    for i in 0..n {
        api_config = api_config.with_role_copy(&service_name(i), &service_account(i));
    }
    let lifetime = Duration::from_secs(24 * 3600);
    let bed = ServiceBed::start(api_config, lifetime).map_err(fail)?;
    let dir = tempfile::Builder::new()
        .prefix("testbed-load-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let jobmanager = FakeJobManager::start(Answer::ports(RPC_PORT, BLOB_PORT));
    let users: Vec<String> = (0..n).map(user).collect();

    let mut processes = Vec::with_capacity(n);
    let started = Instant::now();
    let started_at = SystemTime::now();
    for (i, user) in users.iter().enumerate() {
        bed.create_jobmanager_service(&service_name(i))
            .map_err(fail)?;
        let token_file = dir.path().join(format!("token-{i}"));
        bed.api
            .rotate_token(&token_file, user, lifetime)
            .map_err(fail)?;
        let kubeconfig = dir.path().join(format!("kubeconfig-{i}"));
        bed.api
            .write_kubeconfig(&kubeconfig, &token_file, NAMESPACE)
            .map_err(fail)?;
        processes.push(spawn(config, i, &kubeconfig, &jobmanager.url(), &interval)?);
    }
    eprintln!("load: started {n} port-sync processes; waiting for every Service to sync");

    let synced = |i: usize| {
        bed.exposes(&service_name(i), "rpc", RPC_PORT)
            && bed.exposes(&service_name(i), "blob", BLOB_PORT)
    };
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        check_running(&mut processes)?;
        pending.retain(|&i| !synced(i));
        if started.elapsed() > WARM_UP_LIMIT {
            let first = pending[0];
            return Err(format!(
                "{} of {n} Services not synced within {WARM_UP_LIMIT:?} (e.g. {}); its port-sync \
                 said:\n{}",
                pending.len(),
                service_name(first),
                processes[first].output()
            ));
        }
        sleep(Duration::from_millis(50));
    }
    let warm_up = started.elapsed();
    eprintln!(
        "load: all {n} Services synced after {:.1} s; settling for {SETTLE:?}",
        warm_up.as_secs_f64()
    );
    sleep(SETTLE);
    check_running(&mut processes)?;

    let ticks_per_second = clock_ticks_per_second()?;
    let window_start = SystemTime::now();
    let cpu_before = cpu_ticks(&processes)?;
    let jobmanager_before = jobmanager.requests();
    eprintln!(
        "load: measuring the steady state for {:.0} s",
        config.window.as_secs_f64()
    );
    let measuring = Instant::now();
    let mut last_said = Instant::now();
    while measuring.elapsed() < config.window {
        check_running(&mut processes)?;
        if last_said.elapsed() >= Duration::from_secs(30) {
            eprintln!(
                "load: {:.0} s of {:.0} s",
                measuring.elapsed().as_secs_f64(),
                config.window.as_secs_f64()
            );
            last_said = Instant::now();
        }
        let left = config.window.saturating_sub(measuring.elapsed());
        sleep(left.min(Duration::from_millis(500)));
    }
    let window = measuring.elapsed();
    let jobmanager_requests = jobmanager.requests() - jobmanager_before;
    let cpu_after = cpu_ticks(&processes)?;
    let window_end = SystemTime::now();
    let api_connections = std::fs::read_to_string("/proc/net/tcp")
        .map(|text| established_on_port(&text, bed.api.port()))
        .unwrap_or(0);
    let mut rss_kib_total = 0;
    let mut peak_rss_kib_max = 0;
    for process in &processes {
        let status = std::fs::read_to_string(format!("/proc/{}/status", process.pid()))
            .map_err(|e| e.to_string())?;
        rss_kib_total += status_kib(&status, "VmRSS").unwrap_or(0);
        peak_rss_kib_max = peak_rss_kib_max.max(status_kib(&status, "VmHWM").unwrap_or(0));
    }
    check_running(&mut processes)?;
    if let Some(i) = (0..n).find(|&i| !synced(i)) {
        return Err(format!(
            "{} lost its ports during the window; its port-sync said:\n{}",
            service_name(i),
            processes[i].output()
        ));
    }

    let records = bed.api.requests();
    let (per_instance, strangers) = tally(&records, &users, window_start, window_end);
    let (warm_up_all, _) = tally(&records, &users, started_at, window_start);
    let mine: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| {
            r.identity
                .as_deref()
                .is_some_and(|u| users.iter().any(|x| x == u))
        })
        .collect();
    let latency_samples = mine.len();
    let mean_latency = if mine.is_empty() {
        Duration::ZERO
    } else {
        mine.iter().map(|r| r.took).sum::<Duration>() / u32::try_from(mine.len()).unwrap_or(1)
    };
    let cpu_ticks_used = cpu_after.saturating_sub(cpu_before);
    Ok(LoadReport {
        instances: n,
        binary: config.binary.clone(),
        interval,
        warm_up,
        warm_up_counts: VerbCounts::sum(&warm_up_all),
        window,
        per_instance,
        strangers,
        jobmanager_requests,
        watch_period: watch_period(&records),
        mean_latency,
        latency_samples,
        api_connections,
        cpu: Duration::from_secs_f64(cpu_ticks_used as f64 / ticks_per_second),
        rss_kib_total,
        peak_rss_kib_max,
    })
}

fn spawn(
    config: &LoadConfig,
    instance: usize,
    kubeconfig: &Path,
    jobmanager_url: &str,
    interval: &str,
) -> Result<Process, String> {
    let mut command = Command::new(&config.binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PORT_SYNC_") {
            command.env_remove(key);
        }
    }
    command
        .env("KUBECONFIG", kubeconfig)
        .args(["--service", &service_name(instance)])
        .args(["--namespace", NAMESPACE])
        .args(["--jobmanager-url", jobmanager_url])
        .args(["--port", "rpc=jobmanager.rpc.port"])
        .args(["--port", "blob=blob.server.port"])
        .args(["--interval", interval])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())]);
    Process::spawn(&format!("port-sync-{instance}"), command, Echo::Quiet)
        .map_err(|e| e.to_string())
}

fn check_running(processes: &mut [Process]) -> Result<(), String> {
    for process in processes.iter_mut() {
        if !process.is_running() {
            return Err(format!("{} exited:\n{}", process.name(), process.output()));
        }
    }
    Ok(())
}

fn cpu_ticks(processes: &[Process]) -> Result<u64, String> {
    processes
        .iter()
        .map(|process| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", process.pid()))
                .map_err(|e| format!("{}: {e}", process.name()))?;
            cpu_ticks_of(&stat).ok_or_else(|| format!("{}: odd /proc stat", process.name()))
        })
        .sum()
}

fn clock_ticks_per_second() -> Result<f64, String> {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| format!("getconf CLK_TCK: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| "getconf CLK_TCK gave no number".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn record(user: Option<&str>, kind: RequestKind, at: SystemTime, status: u16) -> RequestRecord {
        RequestRecord {
            method: "GET".into(),
            path: "/api/v1/namespaces/flink/services".into(),
            query: if kind == RequestKind::Watch {
                "fieldSelector=metadata.name%3Dx&timeoutSeconds=290&watch=true".into()
            } else {
                String::new()
            },
            content_type: None,
            identity: user.map(str::to_owned),
            kind,
            status: Some(status),
            at,
            took: Duration::from_millis(2),
        }
    }

    #[test]
    fn tally_counts_each_instance_by_verb_inside_the_window_only() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let users = vec![user(0), user(1)];
        let records = vec![
            record(Some(&users[0]), RequestKind::Get, t0 - MINUTE, 200), // before
            record(Some(&users[0]), RequestKind::Get, t0, 200),
            record(Some(&users[0]), RequestKind::Patch, t0 + MINUTE, 422),
            record(Some(&users[1]), RequestKind::Watch, t0 + MINUTE, 200),
            record(Some(&users[1]), RequestKind::List, t0 + MINUTE, 200),
            record(
                Some("system:serviceaccount:flink:port-sync"),
                RequestKind::Get,
                t0,
                200,
            ),
            record(None, RequestKind::Get, t0, 401),
            record(Some(&users[1]), RequestKind::Get, t0 + 2 * MINUTE, 200), // at the end
        ];
        let (counts, strangers) = tally(&records, &users, t0, t0 + 2 * MINUTE);
        assert_eq!(
            counts[0],
            VerbCounts {
                get: 1,
                patch: 1,
                errors: 1,
                ..VerbCounts::default()
            }
        );
        assert_eq!(
            counts[1],
            VerbCounts {
                watch: 1,
                list: 1,
                ..VerbCounts::default()
            }
        );
        assert_eq!(strangers, 2);
        let sum = VerbCounts::sum(&counts);
        assert_eq!((sum.total(), sum.read_only(), sum.mutating()), (4, 3, 1));
    }

    #[test]
    fn rates_are_per_minute() {
        assert!((per_minute(180.0, 3 * MINUTE) - 60.0).abs() < 1e-9);
        assert!((per_minute(1.0, Duration::from_secs(30)) - 2.0).abs() < 1e-9);
        assert_eq!(per_minute(0.0, MINUTE), 0.0);
    }

    #[test]
    fn the_watch_period_is_the_smallest_timeout_asked_for() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut records = vec![record(Some("a"), RequestKind::Watch, t0, 200)];
        records.push(RequestRecord {
            query: "watch=true&timeoutSeconds=120".into(),
            ..records[0].clone()
        });
        records.push(record(Some("a"), RequestKind::Get, t0, 200));
        assert_eq!(watch_period(&records), Some(Duration::from_secs(120)));
        assert_eq!(watch_period(&records[2..]), None);
    }

    #[test]
    fn a_short_window_still_counts_one_watch_start_per_period() {
        let period = Some(Duration::from_secs(290));
        assert!((steady_watch_rate(0.0, period) - 60.0 / 290.0).abs() < 1e-9);
        assert_eq!(steady_watch_rate(0.5, period), 0.5);
        assert_eq!(steady_watch_rate(0.0, None), 0.0);
    }

    #[test]
    fn extrapolation_scales_per_minute_rates_to_requests_per_second() {
        let rates = Rates {
            get: 0.0,
            list: 0.0,
            watch: 60.0 / 290.0,
            patch: 0.0,
            other: 0.0,
            jobmanager: 60.0,
        };
        let e = extrapolate(&rates, 1000);
        assert!((e.read_only_per_second - 1000.0 / 290.0).abs() < 1e-9);
        assert_eq!(e.mutating_per_second, 0.0);
        assert!((e.jobmanager_per_second - 1000.0).abs() < 1e-9);
        assert_eq!(e.open_watches, 1000);
        let (read_only, mutating) = e.in_flight(Duration::from_millis(100));
        assert!((read_only - 100.0 / 290.0).abs() < 1e-9);
        assert_eq!(mutating, 0.0);
        let busy = extrapolate(
            &Rates {
                patch: 6.0,
                get: 6.0,
                ..rates
            },
            1000,
        );
        assert!((busy.mutating_per_second - 100.0).abs() < 1e-9);
        assert!((busy.api_per_second() - (200.0 + 1000.0 / 290.0)).abs() < 1e-9);
    }

    #[test]
    fn proc_fields_are_read() {
        let stat = "4242 (port sync) S 1 4242 4242 0 -1 4194560 300 0 0 0 17 5 0 0 20 0 1 0 \
                    12345 1000 200 18446744073709551615";
        assert_eq!(cpu_ticks_of(stat), Some(22));
        assert_eq!(cpu_ticks_of("garbage"), None);
        let status = "Name:\tport-sync\nVmHWM:\t    7300 kB\nVmRSS:\t    6100 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(6100));
        assert_eq!(status_kib(status, "VmHWM"), Some(7300));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn established_connections_are_counted_on_the_servers_port() {
        // Port 0x1F90 = 8080: two established server-side, one listening, one client-side.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:1F90 0100007F:A001 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:1F90 0100007F:A002 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:A001 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4 1
   4: 0100007F:1F90 0100007F:A003 06 00000000:00000000 00:00000000 00000000     0        0 5 1";
        assert_eq!(established_on_port(table, 8080), 2);
        assert_eq!(established_on_port(table, 8081), 0);
    }

    #[test]
    fn the_interval_is_the_charts() {
        let interval = chart_interval().expect("values.yaml names port-sync's interval");
        assert!(
            sidecar_common::duration::parse_positive_duration(&interval).is_ok(),
            "{interval}"
        );
    }
}
