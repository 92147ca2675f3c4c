//! What tests inject and what they observe: the next N requests of a kind fail (500, 503,
//! 429 with Retry-After, a connection closed without an answer) or answer late; the whole
//! server goes down for a while; and a log of every request with its outcome, so a test can
//! assert what a client did (say, that it sent no PATCH).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// What a request asks for, as RBAC names its verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    /// Discovery, /version, unknown paths.
    Other,
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOn {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    Any,
}

impl FaultOn {
    fn covers(self, kind: RequestKind) -> bool {
        matches!(
            (self, kind),
            (FaultOn::Any, _)
                | (FaultOn::Get, RequestKind::Get)
                | (FaultOn::List, RequestKind::List)
                | (FaultOn::Watch, RequestKind::Watch)
                | (FaultOn::Create, RequestKind::Create)
                | (FaultOn::Update, RequestKind::Update)
                | (FaultOn::Patch, RequestKind::Patch)
                | (FaultOn::Delete, RequestKind::Delete)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this code in the form the real server answers it: a Status for 500 and
    /// 504, the draining server's 503 Status with `Retry-After: 1`, the throttling filters'
    /// plain-text 429 with `Retry-After: 1`.
    Status(u16),
    /// 429 in the throttling filters' plain-text form, with this `Retry-After`. The real
    /// filters always send 1 ([`crate::SERVER_RETRY_AFTER_SECS`]); other values are
    /// for tests of how a client honours the header.
    TooManyRequests { retry_after_secs: u64 },
    /// Close the connection without an answer.
    Reset,
    /// Answer normally, this much later.
    Delay(Duration),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string, percent-encoded as sent.
    pub query: String,
    pub content_type: Option<String>,
    /// The authenticated user, if the token was good.
    pub identity: Option<String>,
    pub kind: RequestKind,
    /// The answer's code; `None` when the connection was closed without one.
    pub status: Option<u16>,
    /// When the request arrived.
    pub at: SystemTime,
    /// From its arrival to its answer's head (for a watch: to the start of the event stream,
    /// the part API Priority and Fairness charges a seat for), or to the injected reset.
    pub took: Duration,
}

struct PendingFault {
    on: FaultOn,
    remaining: usize,
    fault: Fault,
}

pub(crate) enum ListenerCommand {
    /// Stop listening and cut every connection, then listen again after the duration.
    /// `ack` is answered once the server is down.
    Down {
        duration: Duration,
        ack: std::sync::mpsc::Sender<()>,
    },
}

#[derive(Default)]
struct State {
    pending: VecDeque<PendingFault>,
    log: Vec<RequestRecord>,
}

/// A handle to the fault injection and request log of one server; cheap to clone.
#[derive(Clone)]
pub struct Faults {
    state: Arc<Mutex<State>>,
    listener: mpsc::UnboundedSender<ListenerCommand>,
}

impl Faults {
    pub(crate) fn new(listener: mpsc::UnboundedSender<ListenerCommand>) -> Self {
        Faults {
            state: Arc::default(),
            listener,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves nothing half-written here.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `count` requests covered by `on` meet `fault`. Faults queue in order: a
    /// request takes the first pending fault that covers it.
    pub fn fail_next(&self, on: FaultOn, count: usize, fault: Fault) {
        if count > 0 {
            self.state().pending.push_back(PendingFault {
                on,
                remaining: count,
                fault,
            });
        }
    }

    /// Drops every pending fault.
    pub fn clear(&self) {
        self.state().pending.clear();
    }

    /// How many requests still have a fault waiting for them.
    pub fn pending(&self) -> usize {
        self.state().pending.iter().map(|p| p.remaining).sum()
    }

    /// Takes the server down: it stops listening (connections are refused), open
    /// connections and watches are cut, and after `duration` it listens again on the same
    /// port. Returns once the server is down.
    pub fn down_for(&self, duration: Duration) {
        let (ack, done) = std::sync::mpsc::channel();
        if self
            .listener
            .send(ListenerCommand::Down { duration, ack })
            .is_ok()
        {
            // Bounded: a server that is shutting down never answers.
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().log.clone()
    }

    pub fn clear_requests(&self) {
        self.state().log.clear();
    }

    pub(crate) fn take(&self, kind: RequestKind) -> Option<Fault> {
        let mut state = self.state();
        let index = state.pending.iter().position(|p| p.on.covers(kind))?;
        let pending = &mut state.pending[index];
        pending.remaining -= 1;
        let fault = pending.fault.clone();
        if pending.remaining == 0 {
            state.pending.remove(index);
        }
        Some(fault)
    }

    pub(crate) fn log(&self, record: RequestRecord) {
        self.state().log.push(record);
    }
}
