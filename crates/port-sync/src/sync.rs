//! The loop: JobManager polls and Service watch events feed one state (what the JobManager
//! wants, what the Service has); whenever either changes, plan and patch; every failure is
//! retried with capped, jittered backoff until the Service matches, and the desired ports are
//! never dropped on a failure.
//!
//! The pacing rules (`poll_delay`, `Retry`) are pure and tested here; `run` is the I/O shell.

use crate::flink::{JobManager, JobManagerError};
use crate::metrics::SharedMetrics;
use crate::plan::{Plan, in_sync, plan};
use crate::ports::{DesiredPorts, PortMapping};
use crate::service::{ApiFailure, FailureKind, ServiceEvent, ServiceHandle};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, error, info, warn};

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

/// Another writer undoing our patches (a webhook, a controller, an `apply` loop): the first
/// revert is repaired at once (a one-off `helm upgrade`), repeated ones at a pace that halves
/// each time down to one repair per `DAMPING_MAX`, so a fight never becomes a PATCH storm.
#[derive(Debug, Default)]
pub struct Damping {
    /// When our last patch landed, and the ports it wrote. Taken by the revert that undoes it.
    last_patch: Option<(Instant, DesiredPorts)>,
    /// Reverts in a row, each within `REVERT_WINDOW` of the patch it undid.
    reverts: u32,
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
            n => DAMPING_MIN
                .saturating_mul(1 << (n - 2).min(16))
                .min(DAMPING_MAX),
        };
        Some(Revert {
            in_a_row: self.reverts,
            hold,
        })
    }
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
/// wrong Service, but never before a Retry-After the server gave (`held_until`).
pub fn retry_when_api_answers(
    retry_at: Option<Instant>,
    held_until: Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    let retry_at = retry_at?;
    let earliest = held_until.map_or(now, |held| held.max(now));
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
    jobmanager: JobManager,
    service: ServiceHandle,
    options: SyncOptions,
    metrics: SharedMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let (news_sender, mut news) = mpsc::channel(16);
    let watcher = tokio::spawn(watch_service(service.clone(), news_sender));
    let mut state = Loop::new(jobmanager, service, options, metrics);
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

struct Loop {
    jobmanager: JobManager,
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
    /// The end of the last Retry-After the API server gave: no retry runs before it.
    retry_held_until: Option<Instant>,
    damping: Damping,
    /// No repair of a reverted patch before this (`Damping`); cleared when the JobManager's
    /// ports change.
    repair_held_until: Option<Instant>,
    jobmanager_problem: Quiet,
    service_problem: Quiet,
    /// The last patch printed in --dry-run, not to print it every second.
    printed_patch: Option<serde_json::Value>,
}

impl Loop {
    fn new(
        jobmanager: JobManager,
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
            retry_held_until: None,
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
                    JobManagerError::Fetch(_) => "jobmanager_unreachable",
                    JobManagerError::Config(_) => "jobmanager_bad_answer",
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
            WatchNews::Live => self.watch_live = true,
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
                self.service_problem.report(&failure.message);
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

    /// One attempt to make the Service match; on failure schedules a retry.
    async fn reconcile(&mut self) {
        self.dirty = false;
        let Some(desired) = self.desired.clone() else {
            return; // nothing to compare with until the JobManager answers
        };
        if !self.observed_fresh || self.observed.is_none() {
            match self.service.get().await {
                Ok(service) => self.observe(service),
                Err(failure) => return self.failed(&failure),
            }
        }
        let Some(current) = self.observed.as_ref() else {
            return;
        };
        match plan(current, &desired) {
            Ok(None) => self.matched(&desired),
            Ok(Some(plan)) if self.options.dry_run => self.print_dry_run(&plan),
            Ok(Some(plan)) => {
                if self.damped(&desired) {
                    return;
                }
                self.apply(&plan, &desired).await;
            }
            Err(problem) => {
                self.metrics.lock().in_sync = false;
                self.metrics.lock().count_error("service_ports");
                self.service_problem.report(&format!(
                    "Service {}: {problem}",
                    self.service.display_name()
                ));
                // The watch re-plans as soon as the Service changes; this retry covers a
                // watch that is down.
                self.schedule_retry(Some(RETRY_MAX));
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
                self.failed(&failure);
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

    fn failed(&mut self, failure: &ApiFailure) {
        self.metrics.lock().in_sync = false;
        self.count_api_error(failure);
        if failure.kind == FailureKind::Forbidden {
            error!("{}", failure.message);
        } else if failure.kind == FailureKind::Conflict {
            // The expected race: a watch event older than our own last patch, or someone
            // else's edit. The `test` ops caught it; a re-read settles it.
            info!("{}", failure.message);
        } else {
            self.service_problem.report(&failure.message);
        }
        self.schedule_retry(failure.retry_after);
    }

    fn count_api_error(&self, failure: &ApiFailure) {
        let kind = match failure.kind {
            FailureKind::Forbidden => "api_forbidden",
            FailureKind::Unauthorized => "api_unauthorized",
            FailureKind::NotFound => "api_not_found",
            FailureKind::Conflict => "api_conflict",
            FailureKind::RateLimited => "api_rate_limited",
            FailureKind::Unavailable => "api_unavailable",
            FailureKind::Gone => "api_gone",
            FailureKind::Other => "api_other",
        };
        self.metrics.lock().count_error(kind);
    }

    fn schedule_retry(&mut self, at_least: Option<Duration>) {
        let now = Instant::now();
        let delay = self.retry.next_delay(at_least);
        debug!(?delay, "retrying");
        self.retry_at = Some(now + delay);
        self.retry_held_until = at_least.map(|asked| now + asked);
    }

    /// The API server answered the watch: a retry pending since a failure runs now (or when
    /// its Retry-After ends), and the backoff starts again from its shortest step.
    fn api_answered(&mut self) {
        if self.retry_at.is_none() {
            return;
        }
        self.retry_at =
            retry_when_api_answers(self.retry_at, self.retry_held_until, Instant::now());
        self.retry.reset();
    }
}

/// Keeps a watch of the one Service open, forwarding what it reports. Starts with version "0"
/// (the server first sends the Service as it is), resumes from the last version seen, and
/// starts afresh when that version is too old (410).
async fn watch_service(service: ServiceHandle, news: mpsc::Sender<WatchNews>) {
    let mut version = "0".to_owned();
    let mut retry = Retry::default();
    loop {
        let stream = match service.watch(&version).await {
            Ok(stream) => stream,
            Err(failure) => {
                let pause = retry.next_delay(failure.retry_after);
                if news.send(WatchNews::Failed(failure)).await.is_err() {
                    return;
                }
                sleep(pause).await;
                continue;
            }
        };
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
                    pause = Some(retry.next_delay(failure.retry_after));
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
