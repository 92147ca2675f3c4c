//! The soak's fault schedule, as pure code: a seed and a length give the same timeline of
//! events every time, so a failing soak can be replayed with its seed.
//!
//! Two timelines are merged. JobManager restarts come every 60–90 s. Every other fault kind
//! comes in rounds: each round holds each kind once, in a shuffled order, 4–12 s apart, so a
//! round ends within 8 + 8 × 12 = 104 s and any schedule of 2 minutes or more holds every kind.

use kube_stand_in::FaultOn;
use std::time::Duration;

/// A small deterministic PRNG (splitmix64, Steele, Lea and Flood 2014): plenty for a schedule,
/// and no dependency whose output could change under us between versions.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high` (the modulo bias is below 2^-40 for the ranges used here).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        let span = high - low;
        if span == u64::MAX {
            return self.next_u64();
        }
        low + self.next_u64() % (span + 1)
    }

    pub fn millis_between(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(self.between(low_ms, high_ms))
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.between(1, denominator) <= numerator
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.between(0, items.len() as u64 - 1) as usize]
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            let other = self.between(0, index as u64) as usize;
            items.swap(index, other);
        }
    }
}

/// Every kind of fault the soak injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    ServerError500,
    Unavailable503,
    TooManyRequests,
    ConnectionReset,
    Delay,
    ApiDown,
    TokenRotation,
    OutsideEdit,
    PortsReordered,
    JobManagerRestart,
}

impl FaultKind {
    /// The kinds that come in rounds: all but the JobManager restart, which has its own pace.
    const IN_ROUNDS: [FaultKind; 9] = [
        FaultKind::ServerError500,
        FaultKind::Unavailable503,
        FaultKind::TooManyRequests,
        FaultKind::ConnectionReset,
        FaultKind::Delay,
        FaultKind::ApiDown,
        FaultKind::TokenRotation,
        FaultKind::OutsideEdit,
        FaultKind::PortsReordered,
    ];

    /// Every kind: those in rounds, then the JobManager restart.
    pub const ALL: [FaultKind; 10] = {
        let mut all = [FaultKind::JobManagerRestart; 10];
        let mut index = 0;
        while index < Self::IN_ROUNDS.len() {
            all[index] = Self::IN_ROUNDS[index];
            index += 1;
        }
        all
    };

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ServerError500 => "500",
            FaultKind::Unavailable503 => "503",
            FaultKind::TooManyRequests => "429 + Retry-After",
            FaultKind::ConnectionReset => "connection reset",
            FaultKind::Delay => "delayed answer",
            FaultKind::ApiDown => "API server down",
            FaultKind::TokenRotation => "token rotation",
            FaultKind::OutsideEdit => "outside edit",
            FaultKind::PortsReordered => "ports reordered",
            FaultKind::JobManagerRestart => "JobManager restart",
        }
    }
}

/// Which of the two synced Service ports an outside edit breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortName {
    Rpc,
    Blob,
}

impl PortName {
    pub fn as_str(self) -> &'static str {
        match self {
            PortName::Rpc => "rpc",
            PortName::Blob => "blob",
        }
    }

    /// What the chart creates: what `helm upgrade` would put back.
    pub fn chart_default(self) -> u16 {
        match self {
            PortName::Rpc => 6123,
            PortName::Blob => 6124,
        }
    }
}

/// Which field of the entry an outside edit changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Port,
    TargetPort,
    Both,
}

/// An outside edit that leaves one synced port wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    pub port: PortName,
    pub field: Field,
    /// The wrong value; the run moves it by one should it equal the right one by chance.
    pub value: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The next `count` requests covered by `on` answer `code` (500, or 503 in the form a
    /// draining kube-apiserver sends: a Status and `Retry-After: 1`); then, if
    /// `trigger` is set, an outside edit gives port-sync something to request.
    Status {
        code: u16,
        on: FaultOn,
        count: usize,
        trigger: Option<Edit>,
    },
    /// 429 as kube-apiserver's throttling filters send it: plain text, `Retry-After: 1`.
    TooManyRequests {
        retry_after_secs: u64,
        on: FaultOn,
        count: usize,
        trigger: Option<Edit>,
    },
    /// Connections closed without an answer.
    Reset {
        on: FaultOn,
        count: usize,
        trigger: Option<Edit>,
    },
    /// The next request covered by `on` is answered this much later.
    Delay {
        delay: Duration,
        on: FaultOn,
        trigger: Option<Edit>,
    },
    /// The API server stops listening and cuts every connection for `duration`; with
    /// `edit_while_down`, the Service is edited half-way through (the watch misses it live).
    ApiDown {
        duration: Duration,
        edit_while_down: Option<Edit>,
    },
    /// A new token in the token file, valid for `valid_for`; the old one stays valid until its
    /// own expiry, which is at least `TOKEN_OVERLAP` after this rotation.
    TokenRotation {
        valid_for: Duration,
    },
    OutsideEdit(Edit),
    /// Races port-sync's patch: the next PATCH is held `patch_delay`, an outside edit makes
    /// port-sync send one, and `swap_after` later two entries of `spec.ports` swap places, so the
    /// held patch's `test` ops (which pin each entry's index) may fail with 422.
    PortsReordered {
        edit: Edit,
        patch_delay: Duration,
        swap_after: Duration,
        swap: (usize, usize),
    },
    JobManagerRestart,
}

impl Action {
    pub fn kind(&self) -> FaultKind {
        match self {
            Action::Status { code: 500, .. } => FaultKind::ServerError500,
            Action::Status { .. } => FaultKind::Unavailable503,
            Action::TooManyRequests { .. } => FaultKind::TooManyRequests,
            Action::Reset { .. } => FaultKind::ConnectionReset,
            Action::Delay { .. } => FaultKind::Delay,
            Action::ApiDown { .. } => FaultKind::ApiDown,
            Action::TokenRotation { .. } => FaultKind::TokenRotation,
            Action::OutsideEdit(_) => FaultKind::OutsideEdit,
            Action::PortsReordered { .. } => FaultKind::PortsReordered,
            Action::JobManagerRestart => FaultKind::JobManagerRestart,
        }
    }

    /// Requests this action sets up to fail or be held (0 for the rest).
    pub fn injected_requests(&self) -> usize {
        match self {
            Action::Status { count, .. }
            | Action::TooManyRequests { count, .. }
            | Action::Reset { count, .. } => *count,
            Action::Delay { .. } | Action::PortsReordered { .. } => 1,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// From the start of the schedule.
    pub at: Duration,
    pub action: Action,
}

/// A rotated-out token stays valid this long after the next rotation: kube re-reads the token
/// file about once a minute, so port-sync must have switched well within it.
pub const TOKEN_OVERLAP: Duration = Duration::from_secs(100);
/// The last token lives this long past the schedule's end: through the final checks.
pub const LAST_TOKEN_TAIL: Duration = Duration::from_secs(3600);

const RESTART_GAP_MS: (u64, u64) = (60_000, 90_000);
const FIRST_EVENT_MS: (u64, u64) = (3_000, 8_000);
const EVENT_GAP_MS: (u64, u64) = (4_000, 12_000);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub length: Duration,
    /// Sorted by `at`, all within `length`.
    pub events: Vec<Event>,
}

impl Schedule {
    pub fn generate(seed: u64, length: Duration) -> Schedule {
        let mut rng = SplitMix64::new(seed);
        let mut events = Vec::new();

        let mut at = rng.millis_between(RESTART_GAP_MS.0, RESTART_GAP_MS.1);
        while at < length {
            events.push(Event {
                at,
                action: Action::JobManagerRestart,
            });
            at += rng.millis_between(RESTART_GAP_MS.0, RESTART_GAP_MS.1);
        }

        let mut at = rng.millis_between(FIRST_EVENT_MS.0, FIRST_EVENT_MS.1);
        'rounds: loop {
            let mut round = FaultKind::IN_ROUNDS;
            rng.shuffle(&mut round);
            for kind in round {
                if at >= length {
                    break 'rounds;
                }
                let action = make_action(kind, &mut rng);
                events.push(Event { at, action });
                at += rng.millis_between(EVENT_GAP_MS.0, EVENT_GAP_MS.1);
            }
        }
        events.sort_by_key(|event| event.at);

        // Each token must outlive the next rotation by TOKEN_OVERLAP.
        let rotations: Vec<usize> = (0..events.len())
            .filter(|&i| events[i].action.kind() == FaultKind::TokenRotation)
            .collect();
        for (n, &index) in rotations.iter().enumerate() {
            let this = events[index].at;
            let valid_for = match rotations.get(n + 1) {
                Some(&next) => events[next].at - this + TOKEN_OVERLAP,
                None => length.saturating_sub(this) + LAST_TOKEN_TAIL,
            };
            events[index].action = Action::TokenRotation { valid_for };
        }
        Schedule {
            seed,
            length,
            events,
        }
    }

    /// How long the token port-sync starts with must live, issued `setup` before the schedule
    /// starts: until the first rotation plus `TOKEN_OVERLAP`.
    pub fn first_token_lifetime(&self, setup: Duration) -> Duration {
        let first_rotation = self
            .events
            .iter()
            .find(|event| event.action.kind() == FaultKind::TokenRotation)
            .map_or(self.length + LAST_TOKEN_TAIL, |event| event.at);
        setup + first_rotation + TOKEN_OVERLAP
    }

    pub fn count(&self, kind: FaultKind) -> usize {
        self.events
            .iter()
            .filter(|event| event.action.kind() == kind)
            .count()
    }
}

fn make_edit(rng: &mut SplitMix64) -> Edit {
    let port = rng.pick(&[PortName::Rpc, PortName::Blob]);
    let field = rng.pick(&[Field::Port, Field::TargetPort, Field::Both]);
    // Half the time what `helm upgrade` would put back, else any unprivileged port.
    let value = if rng.chance(1, 2) {
        port.chart_default()
    } else {
        rng.between(1024, 65535) as u16
    };
    Edit { port, field, value }
}

/// Two times in three a fault comes with an edit, so that port-sync has a request to make
/// while it is pending; otherwise it waits for whatever comes next (a restart, a re-read).
fn maybe_trigger(rng: &mut SplitMix64) -> Option<Edit> {
    let edit = make_edit(rng);
    rng.chance(2, 3).then_some(edit)
}

const TARGETS: [FaultOn; 3] = [FaultOn::Any, FaultOn::Patch, FaultOn::Get];

fn make_action(kind: FaultKind, rng: &mut SplitMix64) -> Action {
    match kind {
        FaultKind::ServerError500 | FaultKind::Unavailable503 => Action::Status {
            code: if kind == FaultKind::ServerError500 {
                500
            } else {
                503
            },
            on: rng.pick(&TARGETS),
            count: rng.between(1, 3) as usize,
            trigger: maybe_trigger(rng),
        },
        FaultKind::TooManyRequests => Action::TooManyRequests {
            // The only value the real throttling filters send.
            retry_after_secs: kube_stand_in::SERVER_RETRY_AFTER_SECS,
            on: rng.pick(&TARGETS),
            count: rng.between(1, 2) as usize,
            trigger: maybe_trigger(rng),
        },
        FaultKind::ConnectionReset => Action::Reset {
            on: rng.pick(&TARGETS),
            count: rng.between(1, 3) as usize,
            trigger: maybe_trigger(rng),
        },
        FaultKind::Delay => Action::Delay {
            delay: rng.millis_between(300, 3000),
            on: rng.pick(&[FaultOn::Any, FaultOn::Patch]),
            trigger: maybe_trigger(rng),
        },
        FaultKind::ApiDown => {
            let duration = rng.millis_between(2000, 8000);
            let edit = make_edit(rng);
            Action::ApiDown {
                duration,
                edit_while_down: rng.chance(1, 2).then_some(edit),
            }
        }
        // The lifetime is filled in once every rotation's time is known.
        FaultKind::TokenRotation => Action::TokenRotation {
            valid_for: Duration::ZERO,
        },
        FaultKind::OutsideEdit => Action::OutsideEdit(make_edit(rng)),
        FaultKind::PortsReordered => Action::PortsReordered {
            edit: make_edit(rng),
            patch_delay: rng.millis_between(800, 2000),
            swap_after: rng.millis_between(150, 500),
            swap: rng.pick(&[(0, 1), (0, 2), (1, 2)]),
        },
        FaultKind::JobManagerRestart => Action::JobManagerRestart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn splitmix64_matches_the_reference_output() {
        // The first outputs for seed 1234567 of the reference C implementation.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(rng.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn ranges_stay_in_bounds_and_shuffles_keep_every_item() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            let value = rng.between(4, 12);
            assert!((4..=12).contains(&value));
        }
        assert_eq!(rng.between(5, 5), 5);
        let mut items: Vec<u32> = (0..20).collect();
        rng.shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        assert_ne!(items, sorted, "20 items shuffled into order: 1 in 20!");
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let a = Schedule::generate(42, FIVE_MINUTES);
        assert_eq!(a, Schedule::generate(42, FIVE_MINUTES));
        assert_ne!(a.events, Schedule::generate(43, FIVE_MINUTES).events);
    }

    #[test]
    fn every_fault_kind_is_in_every_schedule_of_two_minutes_or_more() {
        for seed in 0..500 {
            for minutes in [2, 5, 10] {
                let schedule = Schedule::generate(seed, Duration::from_secs(minutes * 60));
                for kind in FaultKind::ALL {
                    assert!(
                        schedule.count(kind) > 0,
                        "seed {seed}, {minutes} min: no {}",
                        kind.name()
                    );
                }
            }
        }
    }

    #[test]
    fn events_are_sorted_within_the_length_and_restarts_60_to_90_s_apart() {
        for seed in 0..200 {
            let schedule = Schedule::generate(seed, FIVE_MINUTES);
            assert!(schedule.events.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(schedule.events.iter().all(|e| e.at < FIVE_MINUTES));
            let restarts: Vec<Duration> = schedule
                .events
                .iter()
                .filter(|e| e.action == Action::JobManagerRestart)
                .map(|e| e.at)
                .collect();
            assert!((3..=5).contains(&restarts.len()), "{restarts:?}");
            let mut previous = Duration::ZERO;
            for at in restarts {
                let gap = at - previous;
                assert!(gap >= Duration::from_secs(60) && gap <= Duration::from_secs(90));
                previous = at;
            }
        }
    }

    #[test]
    fn each_token_outlives_the_next_rotation_by_the_overlap() {
        for seed in 0..200 {
            let schedule = Schedule::generate(seed, FIVE_MINUTES);
            let rotations: Vec<(Duration, Duration)> = schedule
                .events
                .iter()
                .filter_map(|e| match e.action {
                    Action::TokenRotation { valid_for } => Some((e.at, valid_for)),
                    _ => None,
                })
                .collect();
            for pair in rotations.windows(2) {
                assert_eq!(pair[0].0 + pair[0].1, pair[1].0 + TOKEN_OVERLAP);
            }
            let (last_at, last_valid) = *rotations.last().unwrap();
            assert!(last_at + last_valid >= FIVE_MINUTES + LAST_TOKEN_TAIL);
            let setup = Duration::from_secs(60);
            assert_eq!(
                schedule.first_token_lifetime(setup),
                setup + rotations[0].0 + TOKEN_OVERLAP
            );
        }
    }

    #[test]
    fn reorders_swap_two_distinct_entries_and_the_swap_lands_while_the_patch_is_held() {
        for seed in 0..200 {
            for event in Schedule::generate(seed, FIVE_MINUTES).events {
                if let Action::PortsReordered {
                    patch_delay,
                    swap_after,
                    swap,
                    ..
                } = event.action
                {
                    assert!(swap.0 < swap.1 && swap.1 <= 2);
                    assert!(swap_after + Duration::from_millis(300) <= patch_delay);
                }
            }
        }
    }
}
