//! The loop: JobManager polls and Service watch events feed one state (what the JobManager
//! wants, what the Service has); whenever either changes, plan and patch; every failure is
//! retried with capped, jittered backoff until the Service matches, and the desired ports are
//! never dropped on a failure.
//!
//! The pacing rules (`poll_delay`, `Retry`, `Damping`, `Forbidden`) are pure and tested here;
//! `run` is the I/O shell, tested in process against a scripted API server (`mock_api`).

use crate::flink::{JobManagerError, PortSource};
use crate::metrics::{ErrorKind, SharedMetrics};
use crate::plan::{Plan, in_sync, plan};
use crate::ports::{DesiredPorts, PortMapping};
use crate::service::{ApiFailure, FailureKind, ServiceEvent, ServiceHandle, Verb};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, info, warn};

/// How often to ask a JobManager that has not answered (yet): a new JobManager's ports are
/// patched within about this long of its REST API coming up.
pub const FAST_POLL: Duration = Duration::from_millis(100);
/// Poll fast for this long after the JobManager stops answering (it restarts in ~5 s);
/// after that the pause doubles every `SLOWDOWN_STEP` up to `--interval`.
pub const FAST_PHASE: Duration = Duration::from_secs(30);
const SLOWDOWN_STEP: Duration = Duration::from_secs(10);
/// Retries of failed API calls start here and double, with jitter, up to `RETRY_MAX`.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// Our patch undone by someone else within this long of landing counts as a revert. Short on
/// purpose: damping exists so that a fight never becomes a PATCH storm, and a writer slower than
/// this costs at most one repair per window (12 a minute), while an outside edit every few
/// seconds or minutes (a person, a CI `apply`) is repaired at once instead of ever later.
pub const REVERT_WINDOW: Duration = Duration::from_secs(5);
/// Repairs of repeated reverts wait this long after the second, doubling up to `DAMPING_MAX`.
pub const DAMPING_MIN: Duration = Duration::from_secs(1);
pub const DAMPING_MAX: Duration = Duration::from_secs(300);

/// A verb the API server refuses (403) is tried again after this long, then after twice as
/// long each time up to `FORBIDDEN_MAX`: a missing permission comes back when a person edits
/// the Role, in minutes, and retrying it every few seconds only fills the log and the audit log.
pub const FORBIDDEN_MIN: Duration = Duration::from_secs(30);
pub const FORBIDDEN_MAX: Duration = Duration::from_secs(300);

/// Another writer undoing our patches (a webhook, a controller, an `apply` loop): the first
/// revert is repaired at once (a one-off `helm upgrade`), repeated ones at a pace that halves
/// each time down to one repair per `DAMPING_MAX`, so a fight never becomes a PATCH storm.
#[derive(Debug)]
pub struct Damping {
    /// When our last patch landed, and the ports it wrote. Taken by the revert that undoes it.
    last_patch: Option<(Instant, DesiredPorts)>,
    /// Reverts in a row, each within `REVERT_WINDOW` of the patch it undid.
    reverts: u32,
    /// The longest hold: `DAMPING_MAX`; zero turns damping off (to measure what it saves).
    max_hold: Duration,
}

impl Default for Damping {
    fn default() -> Self {
        Self {
            last_patch: None,
            reverts: 0,
            max_hold: DAMPING_MAX,
        }
    }
}

/// One of our patches undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revert {
    /// 1 for the first of an episode.
    pub in_a_row: u32,
    /// How long to wait before repairing it.
    pub hold: Duration,
}

impl Damping {
    /// Counts reverts but never holds a repair: the behaviour damping replaced, for comparison.
    #[cfg(test)]
    fn off() -> Self {
        Self {
            max_hold: Duration::ZERO,
            ..Self::default()
        }
    }

    pub fn patched(&mut self, now: Instant, desired: &DesiredPorts) {
        self.last_patch = Some((now, desired.clone()));
    }

    /// The Service no longer holds `desired`. A revert when it undoes our last patch of these
    /// same ports (a JobManager that moved is never damped).
    pub fn undone(&mut self, now: Instant, desired: &DesiredPorts) -> Option<Revert> {
        let (at, patched) = self.last_patch.take()?;
        if &patched != desired {
            self.reverts = 0;
            return None;
        }
        self.reverts = if now.duration_since(at) <= REVERT_WINDOW {
            self.reverts + 1
        } else {
            1
        };
        let hold = match self.reverts {
            0 | 1 => Duration::ZERO,
            n => DAMPING_MIN.saturating_mul(1 << (n - 2).min(16)),
        };
        Some(Revert {
            in_a_row: self.reverts,
            hold: hold.min(self.max_hold),
        })
    }
}

/// The pause after the `in_a_row`-th refusal in a row (from 1) of one verb: 30 s, 60 s,
/// 120 s, 240 s, then 300 s for good.
pub fn forbidden_pause(in_a_row: u32) -> Duration {
    FORBIDDEN_MIN
        .saturating_mul(1 << in_a_row.saturating_sub(1).min(16))
        .min(FORBIDDEN_MAX)
}

/// One verb's 403s: an episode runs from its first refusal until the verb next succeeds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    in_a_row: u32,
    until: Option<Instant>,
}

/// A refusal, as `Forbidden::refused` sorts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The first of its episode: the one to tell the operator about.
    pub first: bool,
    /// Not to be tried again before this.
    pub until: Instant,
}

impl Forbidden {
    pub fn refused(&mut self, now: Instant) -> Refusal {
        self.in_a_row += 1;
        let until = now + forbidden_pause(self.in_a_row);
        self.until = Some(until);
        Refusal {
            first: self.in_a_row == 1,
            until,
        }
    }

    /// The verb succeeded; true when that ends an episode.
    pub fn allowed(&mut self) -> bool {
        let ended = self.in_a_row > 0;
        *self = Self::default();
        ended
    }

    /// When the verb may be tried again, while that is still to come.
    pub fn held_until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|until| *until > now)
    }
}

/// "30s, 60s, 120s, 240s, then every 300s", for messages.
fn forbidden_schedule() -> String {
    let mut steps = Vec::new();
    let mut in_a_row = 1;
    while forbidden_pause(in_a_row) < FORBIDDEN_MAX {
        steps.push(format!("{}s", forbidden_pause(in_a_row).as_secs()));
        in_a_row += 1;
    }
    format!(
        "{}, then every {}s",
        steps.join(", "),
        FORBIDDEN_MAX.as_secs()
    )
}

/// Who last set `spec.ports`, from `metadata.managedFields`: "manager (operation at time)".
pub fn ports_writer(service: &Service) -> Option<String> {
    let sets_ports =
        |entry: &&k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|fields| fields.0.get("f:spec"))
                .is_some_and(|spec| spec.get("f:ports").is_some())
        };
    let entry = service
        .metadata
        .managed_fields
        .as_ref()?
        .iter()
        .filter(sets_ports)
        .max_by_key(|entry| entry.time.as_ref().map(|time| time.0))?;
    Some(format!(
        "{} ({} at {})",
        entry.manager.as_deref().unwrap_or("an unnamed manager"),
        entry.operation.as_deref().unwrap_or("an unnamed operation"),
        entry
            .time
            .as_ref()
            .map_or_else(|| "an unknown time".to_owned(), |time| time.0.to_string())
    ))
}

/// Everything that shapes the loop; the CLI fills it.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub mappings: Vec<PortMapping>,
    pub interval: Duration,
    pub dry_run: bool,
}

/// The pause before the next JobManager poll. `unanswered_for` is None while it answers.
pub fn poll_delay(unanswered_for: Option<Duration>, interval: Duration) -> Duration {
    let Some(waited) = unanswered_for else {
        return interval;
    };
    if waited < FAST_PHASE {
        return FAST_POLL.min(interval);
    }
    let doublings = ((waited - FAST_PHASE).as_secs() / SLOWDOWN_STEP.as_secs()).min(16);
    FAST_POLL
        .saturating_mul(1 << doublings)
        .min(interval.max(FAST_POLL))
}

/// Whether a Service at `incoming` resourceVersion is older than the one at `seen`. Kubernetes
/// calls resourceVersions opaque, but every API server backed by etcd issues increasing
/// integers; only when both parse as such is an event judged stale, so an unusual server
/// just costs a refused patch and a re-read, as before.
pub fn is_stale(seen: Option<&str>, incoming: Option<&str>) -> bool {
    match (
        seen.and_then(|v| v.parse::<u64>().ok()),
        incoming.and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(seen), Some(incoming)) => incoming < seen,
        _ => false,
    }
}

/// Backoff between retries of a failing step: exponential from `RETRY_MIN`, capped at
/// `RETRY_MAX`, with "equal jitter" (a random delay between half the step and the whole of it,
/// so instances that failed together spread out, yet no pause ever exceeds the cap), and never
/// shorter than what the server asked for (429's Retry-After). Reset by a success.
pub struct Retry {
    backoff: ExponentialBackoff,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            backoff: Self::fresh(),
        }
    }
}

impl Retry {
    fn fresh() -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN)
            .with_max_delay(RETRY_MAX)
            .without_max_times()
            .build()
    }

    pub fn next_delay(&mut self, server_asked: Option<Duration>) -> Duration {
        let step = self.backoff.next().unwrap_or(RETRY_MAX);
        let jittered = step / 2 + step.mul_f64(fastrand::f64() / 2.0);
        server_asked.map_or(jittered, |asked| asked.max(jittered))
    }

    pub fn reset(&mut self) {
        self.backoff = Self::fresh();
    }
}

/// When a pending retry should run once the API server has just answered us (a watch opened or
/// sent an event): now, since waiting out a backoff that grew during an outage only prolongs a
/// wrong Service, but never before the end of a Retry-After the server gave
/// (`retry_after_until`). A verb refused with 403 keeps its own pace: `reconcile` checks it.
pub fn retry_when_api_answers(
    retry_at: Option<Instant>,
    retry_after_until: Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    let retry_at = retry_at?;
    let earliest = retry_after_until.map_or(now, |held| held.max(now));
    Some(retry_at.min(earliest))
}

/// Logs a problem at `warn` when it is new and at `debug` while it repeats, so a failure
/// retried for an hour reads as one line plus the metrics.
#[derive(Default)]
struct Quiet {
    last: Option<String>,
}

impl Quiet {
    fn report(&mut self, message: &str) {
        if self.last.as_deref() == Some(message) {
            debug!("still: {message}");
        } else {
            warn!("{message}");
            self.last = Some(message.to_owned());
        }
    }

    fn clear(&mut self) -> bool {
        self.last.take().is_some()
    }
}

/// What woke the loop.
enum Wake {
    Stop,
    Watch(WatchNews),
    Retry,
    Poll,
}

/// What the watch task tells the loop.
#[derive(Debug)]
enum WatchNews {
    Live,
    Event(ServiceEvent),
    Failed(ApiFailure),
}

/// Runs until `stop` turns true. Returns only then; every failure inside is retried.
pub async fn run(
    jobmanager: impl PortSource,
    service: ServiceHandle,
    options: SyncOptions,
    metrics: SharedMetrics,
    stop: watch::Receiver<bool>,
) {
    run_loop(Loop::new(jobmanager, service, options, metrics), stop).await;
}

async fn run_loop<J: PortSource>(mut state: Loop<J>, mut stop: watch::Receiver<bool>) {
    let (news_sender, mut news) = mpsc::channel(16);
    let watcher = tokio::spawn(watch_service(state.service.clone(), news_sender));
    info!(
        service = %state.service.display_name(),
        jobmanager = %state.jobmanager.config_url(),
        ports = %state.options.mappings.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "keeping the Service's ports equal to the JobManager's"
    );
    let mut next_poll = Instant::now();
    let mut unanswered_since: Option<Instant> = None;
    loop {
        if state.dirty && state.retry_at.is_none() {
            state.reconcile().await;
        }
        let retry_at = state.retry_at;
        let woken_by = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => Wake::Stop,
            Some(message) = news.recv() => Wake::Watch(message),
            () = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => Wake::Retry,
            () = sleep_until(next_poll) => Wake::Poll,
        };
        match woken_by {
            Wake::Stop => break,
            Wake::Watch(message) => state.hear(message),
            Wake::Retry => {
                state.retry_at = None;
                state.dirty = true;
            }
            Wake::Poll => {
                // A GET may be dropped half-way without harm; a PATCH (in reconcile) is not.
                let answered = tokio::select! {
                    answered = state.poll_jobmanager() => answered,
                    _ = stop.wait_for(|stopping| *stopping) => break,
                };
                let now = Instant::now();
                unanswered_since = if answered {
                    None
                } else {
                    unanswered_since.or(Some(now))
                };
                next_poll = now
                    + poll_delay(
                        unanswered_since.map(|since| now - since),
                        state.options.interval,
                    );
            }
        }
    }
    watcher.abort();
    info!("stopped");
}

struct Loop<J> {
    jobmanager: J,
    service: ServiceHandle,
    options: SyncOptions,
    metrics: SharedMetrics,
    /// The ports the JobManager last reported: kept through its outages and our failures.
    desired: Option<DesiredPorts>,
    /// The Service as last seen (get, patch answer or watch event).
    observed: Option<Service>,
    /// False when `observed` may be stale (after a failed patch, or while the watch is down):
    /// read it again before planning.
    observed_fresh: bool,
    watch_live: bool,
    /// Something changed since the last reconcile.
    dirty: bool,
    retry: Retry,
    retry_at: Option<Instant>,
    /// The end of the last Retry-After the API server gave (429): no retry runs before it.
    retry_after_until: Option<Instant>,
    /// Per verb, its 403s: a refused get or patch is not tried again before
    /// `Forbidden::held_until`; the watch task paces its own retries and reports here.
    forbidden: BTreeMap<Verb, Forbidden>,
    damping: Damping,
    /// No repair of a reverted patch before this (`Damping`); cleared when the JobManager's
    /// ports change.
    repair_held_until: Option<Instant>,
    jobmanager_problem: Quiet,
    service_problem: Quiet,
    /// The last patch printed in --dry-run, not to print it every second.
    printed_patch: Option<serde_json::Value>,
}

impl<J: PortSource> Loop<J> {
    fn new(
        jobmanager: J,
        service: ServiceHandle,
        options: SyncOptions,
        metrics: SharedMetrics,
    ) -> Self {
        Self {
            jobmanager,
            service,
            options,
            metrics,
            desired: None,
            observed: None,
            observed_fresh: false,
            watch_live: false,
            dirty: false,
            retry: Retry::default(),
            retry_at: None,
            retry_after_until: None,
            forbidden: BTreeMap::new(),
            damping: Damping::default(),
            repair_held_until: None,
            jobmanager_problem: Quiet::default(),
            service_problem: Quiet::default(),
            printed_patch: None,
        }
    }

    /// Asks the JobManager; true when it gave valid ports.
    async fn poll_jobmanager(&mut self) -> bool {
        match self.jobmanager.desired_ports(&self.options.mappings).await {
            Ok(desired) => {
                if self.jobmanager_problem.clear() || self.desired.is_none() {
                    info!("the JobManager answers: {desired}");
                }
                if self.desired.as_ref() != Some(&desired) {
                    if let Some(old) = &self.desired {
                        info!("the JobManager's ports changed: {old} -> {desired}");
                    }
                    self.desired = Some(desired.clone());
                    self.repair_held_until = None;
                }
                {
                    let mut metrics = self.metrics.lock();
                    metrics.jobmanager_reachable = true;
                    metrics.desired_ports = desired;
                }
                // Compare again on every answer: cheap (no request while the watch is live)
                // and catches anything a lost watch event would miss.
                if !self.watch_live {
                    self.observed_fresh = false;
                }
                self.dirty = true;
                true
            }
            Err(problem) => {
                let kind = match &problem {
                    JobManagerError::Fetch(_) => ErrorKind::JobManagerUnreachable,
                    JobManagerError::Config(_) => ErrorKind::JobManagerBadAnswer,
                };
                {
                    let mut metrics = self.metrics.lock();
                    metrics.jobmanager_reachable = false;
                    metrics.in_sync = false;
                    metrics.count_error(kind);
                }
                // Before the first answer, a refused connection is the normal start-up;
                // say so once, quietly. A refused certificate is not: it is reported.
                let message = format!("{problem} ({})", self.jobmanager.config_url());
                let starting =
                    matches!(&problem, JobManagerError::Fetch(fetch) if !fetch.is_certificate());
                if self.desired.is_none() && starting {
                    if self.jobmanager_problem.last.is_none() {
                        info!("waiting for the JobManager: {message}");
                        self.jobmanager_problem.last = Some(message);
                    }
                } else {
                    self.jobmanager_problem.report(&message);
                }
                false
            }
        }
    }

    fn hear(&mut self, news: WatchNews) {
        if matches!(news, WatchNews::Live | WatchNews::Event(_)) {
            self.api_answered();
        }
        match news {
            WatchNews::Live => {
                self.watch_live = true;
                self.allowed(Verb::Watch);
            }
            WatchNews::Event(ServiceEvent::Changed(service))
                if is_stale(
                    self.observed
                        .as_ref()
                        .and_then(|seen| seen.metadata.resource_version.as_deref()),
                    service.metadata.resource_version.as_deref(),
                ) =>
            {
                // The watch stream lags our own PATCH answer: an event older than the Service
                // we already hold would only make us patch again and be refused (422).
                debug!(
                    resource_version = service.metadata.resource_version.as_deref().unwrap_or(""),
                    "a watch event older than the Service already seen; ignored"
                );
            }
            WatchNews::Event(ServiceEvent::Changed(service)) => {
                debug!(
                    resource_version = service.metadata.resource_version.as_deref().unwrap_or(""),
                    "the Service changed"
                );
                self.observe(*service);
                self.dirty = true;
            }
            WatchNews::Event(ServiceEvent::Deleted) => {
                warn!("Service {} was deleted", self.service.display_name());
                self.observed = None;
                self.observed_fresh = false;
                self.dirty = true;
            }
            WatchNews::Failed(failure) => {
                self.watch_live = false;
                self.observed_fresh = false;
                self.count_api_error(&failure);
                if failure.kind == FailureKind::Forbidden {
                    self.refused(Verb::Watch, &failure);
                } else {
                    self.service_problem.report(&failure.message);
                }
            }
        }
    }

    fn observe(&mut self, service: Service) {
        let mut metrics = self.metrics.lock();
        metrics.service_ports = crate::plan::describe_ports(&service)
            .into_iter()
            .filter(|(name, _, _)| self.options.mappings.iter().any(|m| &m.port_name == name))
            .map(|(name, port, _)| (name, port))
            .collect();
        drop(metrics);
        self.observed = Some(service);
        self.observed_fresh = true;
    }

    /// True when `verb` was refused (403) and its next try is still to come; the loop comes
    /// back when it is due.
    fn held(&mut self, verb: Verb) -> bool {
        let now = Instant::now();
        let Some(until) = self
            .forbidden
            .get(&verb)
            .and_then(|forbidden| forbidden.held_until(now))
        else {
            return false;
        };
        self.retry_at = Some(until);
        true
    }

    /// One attempt to make the Service match; on failure schedules a retry.
    async fn reconcile(&mut self) {
        self.dirty = false;
        let Some(desired) = self.desired.clone() else {
            return; // nothing to compare with until the JobManager answers
        };
        if !self.observed_fresh || self.observed.is_none() {
            if self.held(Verb::Get) {
                return;
            }
            match self.service.get().await {
                Ok(service) => {
                    self.allowed(Verb::Get);
                    self.observe(service);
                }
                Err(failure) => return self.failed(Verb::Get, &failure),
            }
        }
        let Some(current) = self.observed.as_ref() else {
            return;
        };
        match plan(current, &desired) {
            Ok(None) => self.matched(&desired),
            Ok(Some(plan)) if self.options.dry_run => self.print_dry_run(&plan),
            Ok(Some(plan)) => {
                if self.held(Verb::Patch) || self.damped(&desired) {
                    return;
                }
                self.apply(&plan, &desired).await;
            }
            Err(problem) => {
                self.metrics.lock().in_sync = false;
                self.metrics.lock().count_error(ErrorKind::ServicePorts);
                self.service_problem.report(&format!(
                    "Service {}: {problem}",
                    self.service.display_name()
                ));
                // Only a change to the Service (or to --port) helps: the watch re-plans as
                // soon as the Service changes, and this covers a watch that is down.
                self.retry_at = Some(Instant::now() + RETRY_MAX);
            }
        }
    }

    async fn apply(&mut self, plan: &Plan, desired: &DesiredPorts) {
        for change in &plan.changes {
            info!("patching Service {}: {change}", self.service.display_name());
        }
        debug!(patch = %plan.patch_json(), "JSON Patch");
        match self.service.patch(&plan.patch).await {
            Ok(patched) => {
                self.allowed(Verb::Patch);
                self.metrics.lock().patches_total += 1;
                let now_matches = in_sync(&patched, desired);
                self.observe(patched);
                if now_matches {
                    self.damping.patched(Instant::now(), desired);
                    self.matched(desired);
                } else {
                    // Someone else's change landed with ours; plan again.
                    self.dirty = true;
                }
            }
            Err(failure) => {
                // Whatever failed, the Service as we saw it is no longer to be trusted.
                self.observed_fresh = false;
                self.failed(Verb::Patch, &failure);
            }
        }
    }

    /// True when the repair must wait (another writer keeps undoing our patch); the loop
    /// comes back to it when the hold ends.
    fn damped(&mut self, desired: &DesiredPorts) -> bool {
        let now = Instant::now();
        if let Some(until) = self.repair_held_until {
            if now < until {
                self.retry_at = Some(until);
                return true;
            }
            self.repair_held_until = None;
            return false;
        }
        let Some(revert) = self.damping.undone(now, desired) else {
            return false;
        };
        self.metrics.lock().reverted_total += 1;
        if revert.hold.is_zero() {
            return false;
        }
        if revert.in_a_row == 2 {
            let writer = self
                .observed
                .as_ref()
                .and_then(ports_writer)
                .unwrap_or_else(|| "metadata.managedFields names no writer of spec.ports".into());
            warn!(
                "another writer keeps undoing our ports on Service {} (last set by {writer}); \
                 repairing at a slowing pace, at most every {}s (port_sync_reverted_total counts)",
                self.service.display_name(),
                DAMPING_MAX.as_secs()
            );
        }
        debug!(hold = ?revert.hold, in_a_row = revert.in_a_row, "repair of a reverted patch held");
        self.repair_held_until = Some(now + revert.hold);
        self.retry_at = Some(now + revert.hold);
        true
    }

    fn matched(&mut self, desired: &DesiredPorts) {
        if self.service_problem.clear() || !self.metrics.lock().in_sync {
            info!(
                "Service {} matches the JobManager: {desired}",
                self.service.display_name()
            );
        }
        self.retry.reset();
        self.retry_at = None;
        let mut metrics = self.metrics.lock();
        metrics.in_sync = true;
        metrics.last_sync_seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|since| since.as_secs_f64());
    }

    fn print_dry_run(&mut self, plan: &Plan) {
        self.metrics.lock().in_sync = false;
        let patch = plan.patch_json();
        if self.printed_patch.as_ref() != Some(&patch) {
            for change in &plan.changes {
                info!(
                    "dry run: would patch Service {}: {change}",
                    self.service.display_name()
                );
            }
            println!("{patch}");
            self.printed_patch = Some(patch);
        }
    }

    fn failed(&mut self, verb: Verb, failure: &ApiFailure) {
        self.metrics.lock().in_sync = false;
        self.count_api_error(failure);
        match failure.kind {
            FailureKind::Forbidden => {
                self.retry_at = Some(self.refused(verb, failure));
                return;
            }
            // The expected race: a watch event older than our own last patch, or someone
            // else's edit. The `test` ops caught it; a re-read settles it.
            FailureKind::Conflict => info!("{}", failure.message),
            _ => self.service_problem.report(&failure.message),
        }
        self.schedule_retry(failure.retry_after);
    }

    /// A 403 for `verb`: said once per episode, with the rule that fixes it, and shown by
    /// `port_sync_forbidden` until the verb succeeds. Returns when to try it again.
    fn refused(&mut self, verb: Verb, failure: &ApiFailure) -> Instant {
        let refusal = self
            .forbidden
            .entry(verb)
            .or_default()
            .refused(Instant::now());
        self.metrics.lock().forbidden.insert(verb, true);
        if refusal.first {
            let meanwhile = if verb == Verb::Watch {
                format!(
                    "meanwhile the Service is read every {:?} instead of watched",
                    self.options.interval
                )
            } else {
                "meanwhile the Service is not kept in sync".to_owned()
            };
            warn!(
                "{}; {meanwhile}; trying to {} again after {} (port_sync_forbidden{{verb=\"{}\"}} is 1 \
                 until it succeeds)",
                failure.message,
                verb.as_str(),
                forbidden_schedule(),
                verb.as_str()
            );
        } else {
            debug!("still forbidden: {}", failure.message);
        }
        refusal.until
    }

    /// `verb` succeeded: a 403 episode of it, if any, is over.
    fn allowed(&mut self, verb: Verb) {
        let ended = self
            .forbidden
            .get_mut(&verb)
            .is_some_and(Forbidden::allowed);
        if ended {
            self.metrics.lock().forbidden.insert(verb, false);
            info!(
                "allowed to {} Service {} again",
                verb.as_str(),
                self.service.display_name()
            );
        }
    }

    fn count_api_error(&self, failure: &ApiFailure) {
        self.metrics
            .lock()
            .count_error(ErrorKind::Api(failure.kind));
    }

    fn schedule_retry(&mut self, retry_after: Option<Duration>) {
        let now = Instant::now();
        let delay = self.retry.next_delay(retry_after);
        debug!(?delay, "retrying");
        self.retry_at = Some(now + delay);
        self.retry_after_until = retry_after.map(|asked| now + asked);
    }

    /// The API server answered the watch: a retry pending since a failure runs now (or when
    /// its Retry-After ends), and the backoff starts again from its shortest step.
    fn api_answered(&mut self) {
        if self.retry_at.is_none() {
            return;
        }
        self.retry_at =
            retry_when_api_answers(self.retry_at, self.retry_after_until, Instant::now());
        self.retry.reset();
    }
}

/// Keeps a watch of the one Service open, forwarding what it reports. Starts with version "0"
/// (the server first sends the Service as it is), resumes from the last version seen, and
/// starts afresh when that version is too old (410). A refused watch (403) is tried again at
/// `Forbidden`'s pace, every other failure with `Retry`'s backoff.
async fn watch_service(service: ServiceHandle, news: mpsc::Sender<WatchNews>) {
    let mut version = "0".to_owned();
    let mut retry = Retry::default();
    let mut forbidden = Forbidden::default();
    loop {
        let stream = match service.watch(&version).await {
            Ok(stream) => stream,
            Err(failure) => {
                let pause = watch_pause(&failure, &mut retry, &mut forbidden);
                if news.send(WatchNews::Failed(failure)).await.is_err() {
                    return;
                }
                sleep(pause).await;
                continue;
            }
        };
        forbidden.allowed();
        if news.send(WatchNews::Live).await.is_err() {
            return;
        }
        let opened = Instant::now();
        let mut stream = std::pin::pin!(stream);
        let mut pause = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok((event, seen_version)) => {
                    retry.reset();
                    if let Some(seen) = seen_version {
                        version = seen;
                    }
                    if news.send(WatchNews::Event(event)).await.is_err() {
                        return;
                    }
                }
                Err(failure) if failure.kind == FailureKind::Gone => {
                    version = "0".to_owned();
                    break;
                }
                Err(failure) => {
                    pause = Some(watch_pause(&failure, &mut retry, &mut forbidden));
                    if news.send(WatchNews::Failed(failure)).await.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
        // A watch the server ends at once, again and again, must not become a busy loop.
        if pause.is_none() && opened.elapsed() < Duration::from_secs(1) {
            pause = Some(retry.next_delay(None));
        }
        if let Some(pause) = pause {
            sleep(pause).await;
        }
    }
}

/// How long the watch task waits after `failure` before watching again.
fn watch_pause(failure: &ApiFailure, retry: &mut Retry, forbidden: &mut Forbidden) -> Duration {
    if failure.kind == FailureKind::Forbidden {
        let now = Instant::now();
        forbidden.refused(now).until - now
    } else {
        retry.next_delay(failure.retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_writer_that_keeps_undoing_our_patch_is_repaired_at_a_halving_pace() {
        let ports = DesiredPorts::from([("rpc", 41001), ("blob", 42001)]);
        let mut damping = Damping::default();
        let mut now = Instant::now();
        let mut holds = Vec::new();
        for _ in 0..14 {
            damping.patched(now, &ports);
            now += Duration::from_millis(50);
            let revert = damping.undone(now, &ports).expect("our patch was undone");
            holds.push(revert.hold);
            now += revert.hold;
        }
        let expected: Vec<Duration> = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        assert_eq!(holds, expected);
        // Nothing to undo until we patch again: one revert per patch.
        assert_eq!(damping.undone(now, &ports), None);
    }

    #[test]
    fn a_revert_after_the_window_or_of_other_ports_starts_afresh() {
        let ports = DesiredPorts::from([("rpc", 41001), ("blob", 42001)]);
        let moved = DesiredPorts::from([("rpc", 41002), ("blob", 42001)]);
        let mut damping = Damping::default();
        let now = Instant::now();
        damping.patched(now, &ports);
        assert_eq!(damping.undone(now, &ports).unwrap().in_a_row, 1);
        damping.patched(now, &ports);
        assert_eq!(damping.undone(now, &ports).unwrap().hold, SECOND);
        // Our patch held longer than the window: a new episode, repaired at once.
        damping.patched(now, &ports);
        let late = damping
            .undone(now + REVERT_WINDOW + SECOND, &ports)
            .unwrap();
        assert_eq!((late.in_a_row, late.hold), (1, Duration::ZERO));
        // The JobManager moved: not a revert, never damped.
        damping.patched(now, &ports);
        assert_eq!(damping.undone(now, &moved), None);
    }

    #[test]
    fn a_refused_verb_is_tried_again_after_30s_doubling_to_5_minutes() {
        let pauses: Vec<u64> = (1..=7).map(|n| forbidden_pause(n).as_secs()).collect();
        assert_eq!(pauses, [30, 60, 120, 240, 300, 300, 300]);
        assert_eq!(
            forbidden_schedule(),
            "30s, 60s, 120s, 240s, then every 300s"
        );
    }

    #[test]
    fn a_forbidden_episode_is_told_once_and_ends_when_the_verb_succeeds() {
        let now = Instant::now();
        let mut forbidden = Forbidden::default();
        assert!(!forbidden.allowed(), "no episode to end");
        let first = forbidden.refused(now);
        assert_eq!((first.first, first.until), (true, now + 30 * SECOND));
        assert_eq!(forbidden.held_until(now), Some(now + 30 * SECOND));
        assert_eq!(forbidden.held_until(now + 30 * SECOND), None);
        let second = forbidden.refused(now + 30 * SECOND);
        assert_eq!((second.first, second.until), (false, now + 90 * SECOND));
        assert!(forbidden.allowed(), "the episode ends");
        assert_eq!(forbidden.held_until(now), None);
        let again = forbidden.refused(now + 100 * SECOND);
        assert_eq!((again.first, again.until), (true, now + 130 * SECOND));
    }

    #[test]
    fn the_writer_of_spec_ports_is_named_from_managed_fields() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "flink-jobmanager", "managedFields": [
                {"manager": "helm", "operation": "Update", "time": "2026-12-03T09:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:ports": {}}}},
                {"manager": "kubectl-label", "operation": "Update", "time": "2026-12-03T10:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}},
                {"manager": "ports-webhook", "operation": "Update", "time": "2026-12-03T09:30:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:ports": {}}}}
            ]}
        }))
        .unwrap();
        assert_eq!(
            ports_writer(&service).as_deref(),
            Some("ports-webhook (Update at 2026-12-03T09:30:00Z)")
        );
        assert_eq!(ports_writer(&Service::default()), None);
    }

    #[test]
    fn an_answering_jobmanager_is_asked_every_interval() {
        assert_eq!(poll_delay(None, SECOND), SECOND);
        assert_eq!(poll_delay(None, 5 * SECOND), 5 * SECOND);
    }

    #[test]
    fn a_silent_jobmanager_is_asked_every_100ms_for_the_first_30s() {
        for waited in [Duration::ZERO, 6 * SECOND, 29 * SECOND] {
            assert_eq!(poll_delay(Some(waited), SECOND), FAST_POLL, "{waited:?}");
        }
    }

    #[test]
    fn then_the_pause_doubles_up_to_the_interval() {
        assert_eq!(poll_delay(Some(30 * SECOND), 5 * SECOND), FAST_POLL);
        assert_eq!(poll_delay(Some(40 * SECOND), 5 * SECOND), 2 * FAST_POLL);
        assert_eq!(poll_delay(Some(50 * SECOND), 5 * SECOND), 4 * FAST_POLL);
        assert_eq!(poll_delay(Some(3600 * SECOND), 5 * SECOND), 5 * SECOND);
        assert_eq!(poll_delay(Some(3600 * SECOND), SECOND), SECOND);
    }

    #[test]
    fn an_interval_below_100ms_is_kept_while_fast() {
        let fast = Duration::from_millis(50);
        assert_eq!(poll_delay(Some(SECOND), fast), fast);
    }

    #[test]
    fn retries_back_off_with_a_cap_and_reset_on_success() {
        let mut retry = Retry::default();
        let delays: Vec<Duration> = (0..20).map(|_| retry.next_delay(None)).collect();
        assert!(
            delays[0] >= RETRY_MIN / 2 && delays[0] <= RETRY_MIN,
            "{delays:?}"
        );
        // Equal jitter: between half a step and a whole one, never past the cap.
        assert!(delays.iter().all(|d| *d <= RETRY_MAX), "{delays:?}");
        assert!(delays[19] >= RETRY_MAX / 2, "{delays:?}");
        retry.reset();
        assert!(retry.next_delay(None) <= RETRY_MIN);
    }

    #[test]
    fn jitter_spreads_the_capped_delay_over_its_upper_half() {
        let mut retry = Retry::default();
        let capped: Vec<Duration> = (0..200).map(|_| retry.next_delay(None)).skip(10).collect();
        assert!(
            capped
                .iter()
                .all(|d| *d >= RETRY_MAX / 2 && *d <= RETRY_MAX)
        );
        let distinct: std::collections::BTreeSet<_> = capped.iter().collect();
        assert!(
            distinct.len() > 100,
            "jitter spreads: {} distinct",
            distinct.len()
        );
    }

    #[test]
    fn an_answering_api_server_brings_a_pending_retry_forward_but_not_past_retry_after() {
        let now = Instant::now();
        let later = now + 4 * SECOND;
        // A backoff grown during an outage: run now.
        assert_eq!(retry_when_api_answers(Some(later), None, now), Some(now));
        // A 429 asked for 2 s: not before then.
        let held = now + 2 * SECOND;
        assert_eq!(
            retry_when_api_answers(Some(later), Some(held), now),
            Some(held)
        );
        // A Retry-After already over: now.
        let past = now.checked_sub(SECOND).unwrap_or(now);
        assert_eq!(
            retry_when_api_answers(Some(later), Some(past), now),
            Some(now)
        );
        // Sooner than that already, or nothing pending: unchanged.
        let soon = now + Duration::from_millis(10);
        assert_eq!(
            retry_when_api_answers(Some(soon), None, now + SECOND),
            Some(soon)
        );
        assert_eq!(retry_when_api_answers(None, None, now), None);
    }

    #[test]
    fn only_a_provably_older_service_is_stale() {
        assert!(is_stale(Some("42"), Some("41")));
        assert!(!is_stale(Some("42"), Some("42")));
        assert!(!is_stale(Some("42"), Some("43")));
        assert!(!is_stale(None, Some("41")));
        assert!(!is_stale(Some("42"), None));
        assert!(!is_stale(Some("abc"), Some("41")));
    }

    #[test]
    fn retry_after_is_honoured() {
        let mut retry = Retry::default();
        assert!(retry.next_delay(Some(3 * SECOND)) >= 3 * SECOND);
    }
}

/// The loop itself, in process: a scripted API server (`mock_api`) and JobManager, on paused
/// time (minutes of it take milliseconds), each test asserting the requests the loop sent.
#[cfg(test)]
mod loop_tests {
    use super::*;
    use crate::mock_api::{MockApi, MockJobManager, Sent, chart_service};
    use serde_json::{Value, json};

    const INTERVAL: Duration = Duration::from_secs(1);
    const SERVICE: &str = "/api/v1/namespaces/flink/services/flink-jobmanager";
    const WATCH: &str = "/api/v1/namespaces/flink/services";

    fn ports() -> DesiredPorts {
        DesiredPorts::from([("rpc", 41001), ("blob", 42001)])
    }

    fn options(dry_run: bool) -> SyncOptions {
        SyncOptions {
            mappings: vec![
                PortMapping::new("rpc", "jobmanager.rpc.port"),
                PortMapping::new("blob", "blob.server.port"),
            ],
            interval: INTERVAL,
            dry_run,
        }
    }

    /// The patch from the chart's ports to `ports()`, exactly as it goes on the wire.
    fn chart_to_ports_patch() -> Value {
        json!([
            {"op": "test", "path": "/spec/ports/2/name", "value": "blob"},
            {"op": "test", "path": "/spec/ports/2/port", "value": 6124},
            {"op": "test", "path": "/spec/ports/2/targetPort", "value": 6124},
            {"op": "test", "path": "/spec/ports/1/name", "value": "rpc"},
            {"op": "test", "path": "/spec/ports/1/port", "value": 6123},
            {"op": "test", "path": "/spec/ports/1/targetPort", "value": 6123},
            {"op": "replace", "path": "/spec/ports/2/port", "value": 42001},
            {"op": "replace", "path": "/spec/ports/2/targetPort", "value": 42001},
            {"op": "replace", "path": "/spec/ports/1/port", "value": 41001},
            {"op": "replace", "path": "/spec/ports/1/targetPort", "value": 41001},
        ])
    }

    /// `0.100 GET /api/...?query`: a request as the assertions read it.
    fn line(sent: &Sent) -> String {
        let query = if sent.query.is_empty() {
            String::new()
        } else {
            format!("?{}", sent.query)
        };
        format!(
            "{:.3} {} {}{query}",
            sent.at.as_secs_f64(),
            sent.method,
            sent.path
        )
    }

    fn lines(sent: &[Sent]) -> Vec<String> {
        sent.iter().map(line).collect()
    }

    fn watch_from(version: &str, at: f64) -> String {
        format!(
            "{at:.3} GET {WATCH}?&watch=true&timeoutSeconds=290&fieldSelector=metadata.name%3D\
             flink-jobmanager&allowWatchBookmarks=true&resourceVersion={version}"
        )
    }

    /// Puts the chart's ports back, as a webhook or a `helm upgrade` would.
    fn revert(service: &mut Value) {
        service["spec"]["ports"] = chart_service()["spec"]["ports"].clone();
        service["metadata"]["managedFields"] = json!([{
            "manager": "ports-webhook", "operation": "Update", "time": "2026-12-06T21:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:ports": {}}}
        }]);
    }

    struct Running {
        started: Instant,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        metrics: SharedMetrics,
    }

    impl Running {
        /// Lets simulated time run until `at` (seconds since start).
        async fn until(&self, at: f64) {
            sleep_until(self.started + Duration::from_secs_f64(at)).await;
        }

        async fn stop_at(self, at: f64) -> SharedMetrics {
            self.until(at).await;
            self.stop.send(true).expect("the loop listens");
            self.task.await.expect("the loop ends cleanly");
            self.metrics
        }
    }

    /// Starts the loop against `api`. Its JobManager answers `ports()` from 50 ms on, so the
    /// first poll that finds it (at 100 ms) comes after the watch has opened.
    fn start(api: &MockApi, options: SyncOptions, damping: Damping) -> Running {
        let started = Instant::now();
        let jobmanager = MockJobManager::silent();
        let metrics = SharedMetrics::default();
        let (stop, stopping) = watch::channel(false);
        let mut state = Loop::new(jobmanager.clone(), api.handle(), options, metrics.clone());
        state.damping = damping;
        let task = tokio::spawn(run_loop(state, stopping));
        tokio::spawn(async move {
            sleep(Duration::from_millis(50)).await;
            jobmanager.answer(ports());
        });
        Running {
            started,
            stop,
            task,
            metrics,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_event_older_than_our_patch_is_ignored() {
        let api = MockApi::new(chart_service());
        let running = start(&api, options(false), Damping::default());
        running.until(1.5).await;
        // The watch delivers, late, the Service as it was before our patch (version 10 < 11).
        api.send_event("MODIFIED", chart_service());
        running.stop_at(5.0).await;
        let sent = api.sent();
        assert_eq!(
            lines(&sent),
            [watch_from("0", 0.0), format!("0.100 PATCH {SERVICE}")]
        );
        assert_eq!(
            sent[1].content_type.as_deref(),
            Some("application/json-patch+json")
        );
        assert_eq!(sent[1].body.as_ref(), Some(&chart_to_ports_patch()));
        assert_eq!(api.service()["metadata"]["resourceVersion"], "11");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_retry_runs_as_soon_as_the_watch_reopens() {
        let api = MockApi::new(chart_service());
        api.refuse("get", 503);
        api.refuse("patch", 503);
        let running = start(&api, options(false), Damping::default());
        // Failures until the backoff has reached its cap (2.5 to 5 s between tries).
        while api.count("get") < 8 {
            sleep(Duration::from_millis(10)).await;
        }
        let failures = api.sent().len();
        let last_failure = api.sent()[failures - 1].at.as_secs_f64();
        api.allow("get");
        api.allow("patch");
        // The server ends the watch; port-sync opens another at once, from the version it saw.
        api.end_watches();
        let reopened = Instant::now() - running.started;
        running.stop_at(60.0).await;
        let sent = api.sent();
        let at = reopened.as_secs_f64();
        assert!(at - last_failure < 0.011, "{at} {last_failure}");
        assert_eq!(
            lines(&sent[failures..]),
            [
                watch_from("10", at),
                format!("{at:.3} GET {SERVICE}"),
                format!("{at:.3} PATCH {SERVICE}"),
            ]
        );
    }

    /// A writer that puts the chart's ports back 50 ms after each of our patches: the times
    /// of our PATCHes in the first `seconds`, and the reverts counted.
    async fn patches_against_a_reverting_writer(damping: Damping, seconds: f64) -> (Vec<f64>, u64) {
        let api = MockApi::new(chart_service());
        api.after_patch(|api| {
            let api = api.clone();
            tokio::spawn(async move {
                sleep(Duration::from_millis(50)).await;
                api.edit(revert);
            });
        });
        let running = start(&api, options(false), damping);
        let metrics = running.stop_at(seconds).await;
        let reverted = metrics.lock().reverted_total;
        (api.times("patch"), reverted)
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_undoes_every_patch_is_repaired_at_a_halving_pace() {
        let (damped, reverted) =
            patches_against_a_reverting_writer(Damping::default(), 300.0).await;
        // Undamped, every revert is repaired at once: a PATCH per 50 ms, steady from the
        // start, so 10 s of it tell the rate (5 minutes would take seconds of real time).
        let (undamped, _) = patches_against_a_reverting_writer(Damping::off(), 10.0).await;
        let rate = (undamped.len() - 1) as f64 / (undamped[undamped.len() - 1] - undamped[0]);
        println!(
            "PATCHes in 5 simulated minutes against a writer reverting each one 50 ms after it \
             lands: {} damped; undamped {rate:.1} a second ({} in the first 10 s), so about {:.0} \
             in 5 minutes",
            damped.len(),
            undamped.len(),
            rate * 300.0
        );
        // Repaired at once the first time, then after 1, 2, 4 ... 128 s (plus the writer's
        // 50 ms each time); the next would be 256 s later, past the 5 minutes.
        let gaps: Vec<String> = damped
            .windows(2)
            .map(|pair| format!("{:.2}", pair[1] - pair[0]))
            .collect();
        assert_eq!(
            gaps,
            [
                "0.05", "1.05", "2.05", "4.05", "8.05", "16.05", "32.05", "64.05", "128.05"
            ]
        );
        assert_eq!(format!("{:.2}", damped[0]), "0.10");
        assert_eq!(reverted, 10);
        let undamped_gaps: std::collections::BTreeSet<String> = undamped
            .windows(2)
            .map(|pair| format!("{:.2}", pair[1] - pair[0]))
            .collect();
        assert_eq!(undamped_gaps.into_iter().collect::<Vec<_>>(), ["0.05"]);
        assert_eq!(undamped.len(), 198);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dry_run_sends_no_patch() {
        let api = MockApi::new(chart_service());
        let running = start(&api, options(true), Damping::default());
        // The Service changes under it too: still no patch, the watch alone reads it.
        running.until(10.0).await;
        api.edit(|service| service["metadata"]["labels"] = json!({"edited": "yes"}));
        let metrics = running.stop_at(60.0).await;
        assert_eq!(lines(&api.sent()), [watch_from("0", 0.0)]);
        assert!(!metrics.lock().in_sync);
        assert_eq!(metrics.lock().patches_total, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_forbidden_watch_is_tried_again_after_minutes_while_the_service_is_read_every_interval()
     {
        let api = MockApi::new(chart_service());
        api.refuse("watch", 403);
        let running = start(&api, options(false), Damping::default());
        running.until(600.0).await;
        let watches = api.times("watch");
        // What the watch's retries cost before: the same backoff as any failure, capped at 5 s.
        let mut backoff = Retry::default();
        let mut elapsed = Duration::ZERO;
        let mut before = 0;
        while elapsed < Duration::from_secs(600) {
            before += 1;
            elapsed += backoff.next_delay(None);
        }
        println!(
            "watch attempts in 10 simulated minutes under a 403: {} (at {watches:?} s); \
             with the backoff of other failures (the old pacing): about {before}",
            watches.len()
        );
        assert_eq!(watches, [0.0, 30.0, 90.0, 210.0, 450.0]);
        {
            let metrics = running.metrics.lock();
            assert_eq!(metrics.forbidden.get(&Verb::Watch), Some(&true));
            assert_eq!(metrics.forbidden.get(&Verb::Get), Some(&false));
            assert_eq!(metrics.errors_total.get("api_forbidden"), Some(&5));
            assert!(metrics.in_sync);
        }

        // The Role gains watch: the next try (at 750 s) opens the watch, and reading stops.
        api.allow("watch");
        let metrics = running.stop_at(800.0).await;
        assert_eq!(metrics.lock().forbidden.get(&Verb::Watch), Some(&false));
        let gets = api.times("get");
        let expected: Vec<String> = (0..750).map(|tick| format!("{}.100", tick)).collect();
        let gets: Vec<String> = gets.iter().map(|at| format!("{at:.3}")).collect();
        assert_eq!(
            gets, expected,
            "a GET every --interval until the watch opens"
        );
        assert_eq!(api.times("watch"), [0.0, 30.0, 90.0, 210.0, 450.0, 750.0]);
        assert_eq!(api.times("patch"), [0.1]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outside_change_is_repaired_from_the_next_read_while_watch_is_forbidden() {
        let api = MockApi::new(chart_service());
        api.refuse("watch", 403);
        let running = start(&api, options(false), Damping::default());
        running.until(20.05).await;
        api.edit(revert);
        running.stop_at(22.0).await;
        let sent = api.sent();
        let after: Vec<Sent> = sent
            .into_iter()
            .filter(|sent| sent.at.as_secs_f64() > 20.0)
            .collect();
        // Read (and repaired) at the next poll, one --interval later at most.
        assert_eq!(
            lines(&after),
            [
                format!("20.100 GET {SERVICE}"),
                format!("20.100 PATCH {SERVICE}"),
                format!("21.100 GET {SERVICE}"),
            ]
        );
        assert_eq!(after[1].body.as_ref(), Some(&chart_to_ports_patch()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_forbidden_patch_is_tried_again_at_its_own_pace_until_allowed() {
        let api = MockApi::new(chart_service());
        api.refuse("patch", 403);
        let running = start(&api, options(false), Damping::default());
        running.until(600.0).await;
        assert_eq!(
            running.metrics.lock().forbidden.get(&Verb::Patch),
            Some(&true)
        );
        assert!(!running.metrics.lock().in_sync);
        api.allow("patch");
        let metrics = running.stop_at(800.0).await;
        // The first try needs no read (the watch gave the Service); each later one reads first,
        // since a refused patch leaves the Service as seen in doubt.
        assert_eq!(api.times("patch"), [0.1, 30.1, 90.1, 210.1, 450.1, 750.1]);
        assert_eq!(api.times("get"), [30.1, 90.1, 210.1, 450.1, 750.1]);
        assert_eq!(api.times("watch"), [0.0]);
        let metrics = metrics.lock();
        assert_eq!(metrics.forbidden.get(&Verb::Patch), Some(&false));
        assert!(metrics.in_sync);
        assert_eq!(metrics.patches_total, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_cannot_be_planned_is_planned_again_on_its_next_change() {
        let mut service = chart_service();
        service["spec"]["ports"].as_array_mut().unwrap().pop();
        let api = MockApi::new(service);
        let running = start(&api, options(false), Damping::default());
        running.until(1.0).await;
        // Someone adds the missing blob port: planned (and patched) from the watch event at
        // once, not after the 5 s the retry of a plan error waits.
        api.edit(|service| {
            service["spec"]["ports"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "blob", "port": 6124, "targetPort": 6124, "protocol": "TCP"}));
        });
        let metrics = running.stop_at(10.0).await;
        assert_eq!(
            lines(&api.sent()),
            [watch_from("0", 0.0), format!("1.000 PATCH {SERVICE}")]
        );
        assert_eq!(metrics.lock().errors_total.get("service_ports"), Some(&1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_holds_even_when_the_watch_answers() {
        let api = MockApi::new(chart_service());
        api.refuse_once("patch", 429, Some(3));
        let running = start(&api, options(false), Damping::default());
        running.until(1.0).await;
        // A watch event would bring a backoff forward, but not past what the server asked.
        api.edit(|service| service["metadata"]["labels"] = json!({"edited": "yes"}));
        running.stop_at(10.0).await;
        assert_eq!(api.times("patch"), [0.1, 3.1]);
        assert_eq!(api.count("get"), 0);
    }
}
