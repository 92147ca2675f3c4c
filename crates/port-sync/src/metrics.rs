//! What port-sync knows about its own health, and its rendering in the Prometheus text format.
//! Pure: the sync loop writes these numbers, `serve` reads them.

use crate::ports::DesiredPorts;
use crate::service::{FailureKind, Verb};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};

/// What `port_sync_errors_total` counts, by its `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    JobManagerUnreachable,
    JobManagerBadAnswer,
    /// The Service's ports cannot be planned (a `--port` name missing, a clash).
    ServicePorts,
    /// A call to the API server, labelled by `FailureKind::metric_label`.
    Api(FailureKind),
}

impl ErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::JobManagerUnreachable => "jobmanager_unreachable",
            ErrorKind::JobManagerBadAnswer => "jobmanager_bad_answer",
            ErrorKind::ServicePorts => "service_ports",
            ErrorKind::Api(kind) => kind.metric_label(),
        }
    }

    /// Every kind, so that each series exists (at 0) from the start and rate() works on the
    /// first error.
    pub fn all() -> impl Iterator<Item = ErrorKind> {
        [
            ErrorKind::JobManagerUnreachable,
            ErrorKind::JobManagerBadAnswer,
            ErrorKind::ServicePorts,
        ]
        .into_iter()
        .chain(FailureKind::ALL.iter().copied().map(ErrorKind::Api))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub patches_total: u64,
    /// Our patches that someone else undid within `sync::REVERT_WINDOW`.
    pub reverted_total: u64,
    pub errors_total: BTreeMap<&'static str, u64>,
    /// Per verb: the API server refuses it (403) and has not allowed it since.
    pub forbidden: BTreeMap<Verb, bool>,
    /// The mapped ports as the Service last showed them.
    pub service_ports: BTreeMap<String, i32>,
    /// The ports as the JobManager last reported them.
    pub desired_ports: DesiredPorts,
    /// Unix time of the last check that found the Service matching the JobManager.
    pub last_sync_seconds: Option<f64>,
    pub jobmanager_reachable: bool,
    /// The Service matched the JobManager at the last check: what /readyz reports.
    pub in_sync: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            patches_total: 0,
            reverted_total: 0,
            errors_total: ErrorKind::all().map(|kind| (kind.label(), 0)).collect(),
            forbidden: Verb::ALL.into_iter().map(|verb| (verb, false)).collect(),
            service_ports: BTreeMap::new(),
            desired_ports: DesiredPorts::default(),
            last_sync_seconds: None,
            jobmanager_reachable: false,
            in_sync: false,
        }
    }
}

impl Metrics {
    pub fn count_error(&mut self, kind: ErrorKind) {
        *self.errors_total.entry(kind.label()).or_insert(0) += 1;
    }

    /// The Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "port_sync_patches_total",
            "counter",
            "JSON Patches the API server accepted.",
        );
        let _ = writeln!(out, "port_sync_patches_total {}", self.patches_total);

        header(
            &mut out,
            "port_sync_reverted_total",
            "counter",
            "Our patches that another writer undid within 5 s of landing (sync::REVERT_WINDOW).",
        );
        let _ = writeln!(out, "port_sync_reverted_total {}", self.reverted_total);

        header(
            &mut out,
            "port_sync_errors_total",
            "counter",
            "Failed steps, by kind.",
        );
        for (kind, count) in &self.errors_total {
            let _ = writeln!(out, "port_sync_errors_total{{kind=\"{kind}\"}} {count}");
        }

        header(
            &mut out,
            "port_sync_forbidden",
            "gauge",
            "1 while the API server refuses this verb on the Service (403), until it next allows it.",
        );
        for (verb, forbidden) in &self.forbidden {
            let _ = writeln!(
                out,
                "port_sync_forbidden{{verb=\"{}\"}} {}",
                verb.as_str(),
                u8::from(*forbidden)
            );
        }

        header(
            &mut out,
            "port_sync_service_port",
            "gauge",
            "The mapped ports as the Service last showed them.",
        );
        for (name, port) in &self.service_ports {
            let _ = writeln!(out, "port_sync_service_port{{name=\"{name}\"}} {port}");
        }

        header(
            &mut out,
            "port_sync_jobmanager_port",
            "gauge",
            "The mapped ports as the JobManager last reported them.",
        );
        for (name, port) in self.desired_ports.iter() {
            let _ = writeln!(out, "port_sync_jobmanager_port{{name=\"{name}\"}} {port}");
        }

        header(
            &mut out,
            "port_sync_last_sync_timestamp_seconds",
            "gauge",
            "Unix time of the last check that found the Service matching the JobManager (0: never).",
        );
        let _ = writeln!(
            out,
            "port_sync_last_sync_timestamp_seconds {:.3}",
            self.last_sync_seconds.unwrap_or(0.0)
        );

        header(
            &mut out,
            "port_sync_jobmanager_reachable",
            "gauge",
            "1 when the JobManager gave valid ports at the last poll.",
        );
        let _ = writeln!(
            out,
            "port_sync_jobmanager_reachable {}",
            u8::from(self.jobmanager_reachable)
        );

        header(
            &mut out,
            "port_sync_in_sync",
            "gauge",
            "1 when the Service matched the JobManager at the last check.",
        );
        let _ = writeln!(out, "port_sync_in_sync {}", u8::from(self.in_sync));
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The metrics shared by the sync loop (writer) and the HTTP server (reader). A std Mutex is
/// right here: every critical section is a few field updates, never held across an await.
#[derive(Debug, Clone, Default)]
pub struct SharedMetrics(Arc<Mutex<Metrics>>);

impl SharedMetrics {
    pub fn lock(&self) -> MutexGuard<'_, Metrics> {
        // A panic while holding the lock leaves plain numbers behind, still worth showing.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_type() {
        let mut metrics = Metrics {
            patches_total: 3,
            reverted_total: 2,
            service_ports: [("rpc".to_owned(), 44215)].into(),
            desired_ports: DesiredPorts::from([("rpc", 44215)]),
            last_sync_seconds: Some(1_700_000_000.5),
            jobmanager_reachable: true,
            in_sync: true,
            ..Metrics::default()
        };
        metrics.count_error(ErrorKind::Api(FailureKind::Conflict));
        metrics.forbidden.insert(Verb::Watch, true);
        let text = metrics.render();
        for line in [
            "# TYPE port_sync_patches_total counter",
            "port_sync_patches_total 3",
            "# TYPE port_sync_reverted_total counter",
            "port_sync_reverted_total 2",
            "port_sync_errors_total{kind=\"api_conflict\"} 1",
            "port_sync_errors_total{kind=\"api_forbidden\"} 0",
            "port_sync_errors_total{kind=\"service_ports\"} 0",
            "port_sync_forbidden{verb=\"get\"} 0",
            "port_sync_forbidden{verb=\"watch\"} 1",
            "port_sync_forbidden{verb=\"patch\"} 0",
            "port_sync_service_port{name=\"rpc\"} 44215",
            "port_sync_jobmanager_port{name=\"rpc\"} 44215",
            "port_sync_last_sync_timestamp_seconds 1700000000.500",
            "port_sync_jobmanager_reachable 1",
            "port_sync_in_sync 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // Each family's HELP and TYPE come once, before its samples.
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(families, 9);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn every_error_kind_has_its_own_series_from_the_start() {
        let text = Metrics::default().render();
        let labels: std::collections::BTreeSet<&str> =
            ErrorKind::all().map(ErrorKind::label).collect();
        assert_eq!(labels.len(), 3 + FailureKind::ALL.len(), "{labels:?}");
        // The chart's alerts select these by name.
        for label in [
            "jobmanager_unreachable",
            "api_forbidden",
            "api_unauthorized",
            "api_unavailable",
            "api_rate_limited",
            "api_other",
        ] {
            assert!(labels.contains(label), "{label}");
        }
        for label in labels {
            let line = format!("port_sync_errors_total{{kind=\"{label}\"}} 0");
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn a_fresh_process_is_not_ready_and_has_never_synced() {
        let text = Metrics::default().render();
        assert!(text.contains("port_sync_in_sync 0\n"));
        assert!(text.contains("port_sync_last_sync_timestamp_seconds 0.000\n"));
        assert!(text.contains("port_sync_jobmanager_reachable 0\n"));
    }
}
