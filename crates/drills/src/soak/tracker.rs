//! Judging the Service, sample by sample, as pure code: when is it wrong, since when, and how
//! did each wrong interval end.
//!
//! The Service is wrong when its rpc or blob entry (port or targetPort) differs from the
//! JobManager's live ports. Those are known only while the JobManager answers: from its first
//! answer after a (re)start until the next restart. An interval starts at its cause: the
//! JobManager's first answer (new ports) or an outside edit's landing, whichever is later, and
//! ends at the first sample that finds the Service right again. A restart while it is open cuts
//! it short: nothing can be judged while the JobManager is away.

use std::time::{Duration, Instant};

/// (rpc, blob), each as (port, targetPort); `None` for a missing entry or a named targetPort.
pub type ServicePorts = [(Option<i64>, Option<i64>); 2];

/// The ports the JobManager serves on, and since when it has been answering with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desired {
    pub rpc: u16,
    pub blob: u16,
    pub since: Instant,
}

impl Desired {
    pub fn matches(&self, service: &ServicePorts) -> bool {
        let want = |port: u16| (Some(i64::from(port)), Some(i64::from(port)));
        service[0] == want(self.rpc) && service[1] == want(self.blob)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The JobManager answered with ports the Service did not have.
    JobManagerAnswered,
    /// An outside edit landed.
    OutsideEdit,
    /// The Service turned wrong with neither: something (port-sync?) wrote a wrong value.
    Unexplained,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A sample found the Service right again.
    Repaired,
    /// The JobManager was restarted (or stopped answering) first.
    CutByRestart,
    /// Still wrong when the soak stopped looking.
    StillOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongInterval {
    pub cause: Cause,
    pub started: Instant,
    pub ended: Instant,
    pub ending: Ending,
    /// The JobManager answered with new ports and the Service already had them at the first
    /// sample: it was wrong for a moment no sample saw, and `ended` is an upper bound.
    pub unseen: bool,
}

impl WrongInterval {
    pub fn duration(&self) -> Duration {
        self.ended.saturating_duration_since(self.started)
    }
}

#[derive(Debug, Default)]
pub struct Tracker {
    open: Option<(Cause, Instant)>,
    /// The last sample that found the Service right, while the JobManager answered.
    last_right: Option<Instant>,
    /// The last sample taken while the JobManager answered.
    last_sample: Option<Instant>,
    pub intervals: Vec<WrongInterval>,
    /// Wrong moments no sample saw: repaired between two samples.
    pub unseen: usize,
    /// The ports of the last JobManager that answered.
    previous_ports: Option<(u16, u16)>,
}

impl Tracker {
    /// One sample at `now`: the JobManager's ports (None while it does not answer), the
    /// Service's ports, and when the last outside edit landed (edits are recorded only while
    /// the JobManager answers, and always leave a port wrong).
    pub fn sample(
        &mut self,
        now: Instant,
        desired: Option<Desired>,
        service: &ServicePorts,
        last_edit: Option<Instant>,
    ) {
        let Some(desired) = desired else {
            self.close(now, Ending::CutByRestart);
            self.last_right = None;
            self.last_sample = None;
            return;
        };
        let previous_sample = self.last_sample.replace(now);
        let ports = (desired.rpc, desired.blob);
        let new_ports =
            previous_sample.is_none() && self.previous_ports.is_some_and(|seen| seen != ports);
        self.previous_ports = Some(ports);
        let edit = last_edit.filter(|&at| at <= now);
        if desired.matches(service) {
            if self.open.is_none() {
                // Wrong and repaired again between two samples: count it, with this sample's
                // time as an upper bound of the repair.
                let unseen_cause = if new_ports {
                    Some((Cause::JobManagerAnswered, desired.since.min(now)))
                } else {
                    edit.zip(previous_sample)
                        .filter(|(edit, previous)| edit > previous)
                        .map(|(edit, _)| (Cause::OutsideEdit, edit))
                };
                if let Some((cause, started)) = unseen_cause {
                    self.unseen += 1;
                    self.intervals.push(WrongInterval {
                        cause,
                        started,
                        ended: now,
                        ending: Ending::Repaired,
                        unseen: true,
                    });
                }
            }
            self.close(now, Ending::Repaired);
            self.last_right = Some(now);
            return;
        }
        if self.open.is_some() {
            return;
        }
        let (cause, started) = match (self.last_right, edit) {
            // Right before: only an edit since then explains the change.
            (Some(right), Some(edit)) if edit >= right => (Cause::OutsideEdit, edit),
            (Some(right), _) => (Cause::Unexplained, right),
            (None, Some(edit)) if edit > desired.since => (Cause::OutsideEdit, edit),
            (None, _) => (Cause::JobManagerAnswered, desired.since.min(now)),
        };
        self.open = Some((cause, started));
    }

    /// Ends the observation: an interval still open is recorded as such.
    pub fn finish(&mut self, now: Instant) {
        self.close(now, Ending::StillOpen);
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    fn close(&mut self, now: Instant, ending: Ending) {
        if let Some((cause, started)) = self.open.take() {
            self.intervals.push(WrongInterval {
                cause,
                started,
                ended: now,
                ending,
                unseen: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ports(rpc: u16, blob: u16) -> ServicePorts {
        let both = |p: u16| (Some(i64::from(p)), Some(i64::from(p)));
        [both(rpc), both(blob)]
    }

    #[test]
    fn a_restart_opens_at_the_answer_and_closes_at_the_repair() {
        let t0 = Instant::now();
        let mut tracker = Tracker::default();
        let old = Desired {
            rpc: 1,
            blob: 2,
            since: t0,
        };
        tracker.sample(t0, Some(old), &ports(1, 2), None);
        tracker.sample(t0 + 10 * MS, None, &ports(1, 2), None);
        let new = Desired {
            rpc: 3,
            blob: 4,
            since: t0 + 100 * MS,
        };
        tracker.sample(t0 + 110 * MS, Some(new), &ports(1, 2), None);
        tracker.sample(t0 + 130 * MS, Some(new), &ports(3, 2), None);
        assert!(tracker.is_open());
        tracker.sample(t0 + 150 * MS, Some(new), &ports(3, 4), None);
        assert_eq!(
            tracker.intervals,
            [WrongInterval {
                cause: Cause::JobManagerAnswered,
                started: t0 + 100 * MS,
                ended: t0 + 150 * MS,
                ending: Ending::Repaired,
                unseen: false,
            }]
        );
        // The first sight of the first JobManager is no change of ports.
        assert_eq!(tracker.unseen, 0);
        // Restarted again, and port-sync was faster than the first sample.
        tracker.sample(t0 + 200 * MS, None, &ports(3, 4), None);
        let newer = Desired {
            rpc: 5,
            blob: 6,
            since: t0 + 300 * MS,
        };
        tracker.sample(t0 + 310 * MS, Some(newer), &ports(5, 6), None);
        assert_eq!(tracker.unseen, 1);
        assert_eq!(tracker.intervals[1].duration(), 10 * MS);
        assert!(tracker.intervals[1].unseen);
    }

    #[test]
    fn an_edit_opens_at_its_landing_and_an_unexplained_change_is_flagged() {
        let t0 = Instant::now();
        let mut tracker = Tracker::default();
        let desired = Some(Desired {
            rpc: 1,
            blob: 2,
            since: t0,
        });
        tracker.sample(t0 + 10 * MS, desired, &ports(1, 2), None);
        let edit = t0 + 15 * MS;
        tracker.sample(t0 + 30 * MS, desired, &ports(6123, 2), Some(edit));
        tracker.sample(t0 + 50 * MS, desired, &ports(1, 2), Some(edit));
        // Wrong again with no edit since the last right sample.
        tracker.sample(t0 + 70 * MS, desired, &ports(1, 9), Some(edit));
        tracker.sample(t0 + 90 * MS, None, &ports(1, 9), Some(edit));
        let summary: Vec<_> = tracker
            .intervals
            .iter()
            .map(|i| (i.cause, i.duration(), i.ending))
            .collect();
        assert_eq!(
            summary,
            [
                (Cause::OutsideEdit, 35 * MS, Ending::Repaired),
                (Cause::Unexplained, 40 * MS, Ending::CutByRestart),
            ]
        );
    }

    #[test]
    fn an_edit_repaired_between_two_samples_counts_with_an_upper_bound() {
        let t0 = Instant::now();
        let mut tracker = Tracker::default();
        let desired = Some(Desired {
            rpc: 1,
            blob: 2,
            since: t0,
        });
        tracker.sample(t0 + 10 * MS, desired, &ports(1, 2), None);
        tracker.sample(t0 + 30 * MS, desired, &ports(1, 2), Some(t0 + 25 * MS));
        // The same edit, seen again by the next sample, is not counted twice.
        tracker.sample(t0 + 50 * MS, desired, &ports(1, 2), Some(t0 + 25 * MS));
        assert_eq!(tracker.unseen, 1);
        assert_eq!(tracker.intervals.len(), 1);
        assert_eq!(tracker.intervals[0].cause, Cause::OutsideEdit);
        assert_eq!(tracker.intervals[0].duration(), 5 * MS);
        assert!(tracker.intervals[0].unseen);
    }

    #[test]
    fn an_edit_while_the_jobmanager_was_away_counts_from_its_answer() {
        let t0 = Instant::now();
        let mut tracker = Tracker::default();
        let desired = Some(Desired {
            rpc: 1,
            blob: 2,
            since: t0 + 100 * MS,
        });
        tracker.sample(t0 + 120 * MS, desired, &ports(5, 2), Some(t0 + 50 * MS));
        tracker.finish(t0 + 200 * MS);
        assert_eq!(tracker.intervals[0].cause, Cause::JobManagerAnswered);
        assert_eq!(tracker.intervals[0].started, t0 + 100 * MS);
        assert_eq!(tracker.intervals[0].ending, Ending::StillOpen);
    }

    #[test]
    fn a_named_or_missing_target_port_is_wrong() {
        let desired = Desired {
            rpc: 1,
            blob: 2,
            since: Instant::now(),
        };
        assert!(desired.matches(&ports(1, 2)));
        assert!(!desired.matches(&[(Some(1), None), (Some(2), Some(2))]));
        assert!(!desired.matches(&[(Some(1), Some(1)), (None, None)]));
    }
}
