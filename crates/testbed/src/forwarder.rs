//! Service networking for the test bed, as kube-proxy does it for a ClusterIP Service: listen on
//! the "Service IP" for exactly the ports the Service lists, and forward each connection to the
//! "pod" address at the entry's `targetPort`. The Service is read again every `poll_interval`,
//! so a changed port closes the old listener and opens the new one, as kube-proxy rewrites its
//! rules when the Service changes.
//!
//! Loopback aliases need no set-up on Linux (all of 127.0.0.0/8 is local), so the "Service IP"
//! and the "pod" address are two loopback addresses, e.g. 127.0.0.2 and 127.0.0.3.
//!
//! It runs on its own thread with its own tokio runtime; dropping the [`Forwarder`] closes every
//! listener and connection.

use crate::service_bed::{NAMESPACE, ServiceBed};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle as TaskHandle;

/// Older events are dropped beyond this many, so a long run cannot grow without bound.
const EVENT_HISTORY: usize = 1000;

/// Reads the Service as it is now: `None` when it does not exist.
pub type ServiceSource = Box<dyn FnMut() -> Option<Value> + Send>;

#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Where the listeners bind: the "Service IP".
    pub service_address: IpAddr,
    /// Where connections go: the "pod" address, at each entry's `targetPort`.
    pub pod_address: IpAddr,
    /// How often the Service is read again; kube-proxy reacts within milliseconds of a watch
    /// event, 20 ms polling is as close as matters here.
    pub poll_interval: Duration,
    /// Bound on connecting to the pod; a connection that cannot reach it is closed.
    pub connect_timeout: Duration,
    /// Connections forwarded at once over all ports; more are closed at once on accept.
    pub max_connections: usize,
}

impl ForwarderConfig {
    pub fn new(service_address: IpAddr, pod_address: IpAddr) -> ForwarderConfig {
        ForwarderConfig {
            service_address,
            pod_address,
            poll_interval: Duration::from_millis(20),
            connect_timeout: Duration::from_secs(2),
            max_connections: 256,
        }
    }
}

/// One forwarded Service port: `service_address:port` to `pod_address:target_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub port: u16,
    pub target_port: u16,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.port, self.target_port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A listener opened on the Service address.
    Opened(Route),
    /// A listener closed: the Service no longer lists the route (or the Service is gone).
    Closed(Route),
    /// The port could not be bound; retried at every poll, reported once until it changes.
    BindFailed(Route, String),
    /// A Service entry the forwarder cannot follow (a named or out-of-range `targetPort`,
    /// a protocol other than TCP); reported once until it changes.
    Unsupported(String),
}

#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub kind: EventKind,
}

/// Counters over the forwarder's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted on a Service port and connected to the pod.
    pub forwarded: u64,
    /// Connections accepted whose pod address refused or timed out: the Service points at a
    /// port nothing listens on.
    pub pod_unreachable: u64,
    /// Connections closed at once because `max_connections` were open.
    pub over_limit: u64,
}

#[derive(Default)]
struct State {
    open: BTreeMap<Route, TaskHandle<()>>,
    events: VecDeque<Event>,
    /// Problems already reported, so a persistent one is one event, not one per poll.
    reported_problems: Vec<EventKind>,
    counters: Counters,
}

impl State {
    fn record(&mut self, kind: EventKind) {
        if self.events.len() == EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at: Instant::now(),
            kind,
        });
    }

    fn report_problem(&mut self, kind: EventKind) {
        if !self.reported_problems.contains(&kind) {
            self.reported_problems.push(kind.clone());
            self.record(kind);
        }
    }
}

struct Shared {
    config: ForwarderConfig,
    state: Mutex<State>,
    connections: Arc<Semaphore>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct Forwarder {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts following the Service that `source` reads; the first listeners open within one
    /// poll.
    pub fn start(config: ForwarderConfig, source: ServiceSource) -> io::Result<Forwarder> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config,
            state: Mutex::new(State::default()),
        });
        let (shutdown, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(format!("forwarder-{}", shared.config.service_address))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    runtime.block_on(follow(Arc::clone(&shared), source, stopped));
                    // Dropping the runtime drops every listener and connection task.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                }
            })?;
        Ok(Forwarder {
            shared,
            shutdown,
            thread: Some(thread),
        })
    }

    /// Follows Service `service` of the bed's stand-in (in [`NAMESPACE`]).
    pub fn for_service_bed(
        config: ForwarderConfig,
        bed: Arc<ServiceBed>,
        service: &str,
    ) -> io::Result<Forwarder> {
        let service = service.to_owned();
        Forwarder::start(
            config,
            Box::new(move || bed.api.get_service(NAMESPACE, &service)),
        )
    }

    pub fn config(&self) -> &ForwarderConfig {
        &self.shared.config
    }

    /// The routes listening now, by Service port.
    pub fn routes(&self) -> Vec<Route> {
        self.shared.state().open.keys().copied().collect()
    }

    /// Whether `service_address:port` is open and forwards to `pod_address:target_port`.
    pub fn is_routing(&self, route: Route) -> bool {
        self.shared.state().open.contains_key(&route)
    }

    /// Waits until `route` listens; the error lists what does.
    pub fn wait_routing(&self, route: Route, limit: Duration) -> io::Result<Duration> {
        let started = Instant::now();
        let deadline = started + limit;
        loop {
            if self.is_routing(route) {
                return Ok(started.elapsed());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the forwarder did not open {route} within {limit:?}; it routes {:?}; \
                         its events: {:?}",
                        self.routes(),
                        self.events()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every event so far (the newest [`EVENT_HISTORY`]), oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.shared.state().events.iter().cloned().collect()
    }

    pub fn counters(&self) -> Counters {
        self.shared.state().counters
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the Service every poll and makes the listeners match it, until shut down.
async fn follow(
    shared: Arc<Shared>,
    mut source: ServiceSource,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(shared.config.poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        let wanted = match source() {
            Some(service) => routes_of(&service),
            None => Ok(Vec::new()),
        };
        let (routes, unsupported) = match wanted {
            Ok(routes) => (routes, Vec::new()),
            Err((routes, problems)) => (routes, problems),
        };
        reconcile(&shared, &routes, unsupported);
    }
}

/// The TCP routes a Service lists, and the entries it cannot follow.
#[allow(clippy::type_complexity)]
fn routes_of(service: &Value) -> Result<Vec<Route>, (Vec<Route>, Vec<String>)> {
    let mut routes = Vec::new();
    let mut problems = Vec::new();
    let entries = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for entry in entries {
        let name = entry["name"].as_str().unwrap_or("(unnamed)");
        let protocol = entry["protocol"].as_str().unwrap_or("TCP");
        let port = entry["port"].as_u64().and_then(|p| u16::try_from(p).ok());
        // An absent targetPort means the same as port, as in Kubernetes.
        let target = match &entry["targetPort"] {
            Value::Null => port,
            target => target.as_u64().and_then(|p| u16::try_from(p).ok()),
        };
        match (protocol, port, target) {
            ("TCP", Some(port), Some(target_port)) if port != 0 && target_port != 0 => {
                routes.push(Route { port, target_port });
            }
            _ => problems.push(format!(
                "port {name}: protocol {protocol}, port {}, targetPort {} cannot be forwarded",
                entry["port"], entry["targetPort"]
            )),
        }
    }
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err((routes, problems))
    }
}

fn reconcile(shared: &Arc<Shared>, wanted: &[Route], unsupported: Vec<String>) {
    let mut state = shared.state();
    // A problem that went away may come back later: report it again then.
    let current_problems: Vec<EventKind> = unsupported
        .iter()
        .cloned()
        .map(EventKind::Unsupported)
        .collect();
    state.reported_problems.retain(|kind| match kind {
        EventKind::Unsupported(_) => current_problems.contains(kind),
        EventKind::BindFailed(route, _) => wanted.contains(route),
        _ => false,
    });
    for problem in current_problems {
        state.report_problem(problem);
    }

    let stale: Vec<Route> = state
        .open
        .keys()
        .filter(|route| !wanted.contains(route))
        .copied()
        .collect();
    for route in stale {
        if let Some(task) = state.open.remove(&route) {
            // Ends the accept loop, which closes the listener; connections already forwarded
            // stay up, as conntrack keeps them through a kube-proxy rule change.
            task.abort();
        }
        state.record(EventKind::Closed(route));
    }

    for &route in wanted {
        if state.open.contains_key(&route) {
            continue;
        }
        // Two entries with the same port cannot both listen; the first wins, as the API
        // server would refuse the second anyway.
        if state.open.keys().any(|open| open.port == route.port) {
            continue;
        }
        match listen(shared.config.service_address, route.port) {
            Ok(listener) => {
                let task = tokio::spawn(accept_loop(Arc::clone(shared), listener, route));
                state.open.insert(route, task);
                state.reported_problems.retain(
                    |kind| !matches!(kind, EventKind::BindFailed(failed, _) if *failed == route),
                );
                state.record(EventKind::Opened(route));
            }
            Err(error) => state.report_problem(EventKind::BindFailed(route, error.to_string())),
        }
    }
}

fn listen(address: IpAddr, port: u16) -> io::Result<tokio::net::TcpListener> {
    let socket = match address {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // A port closed a moment ago may have connections in TIME_WAIT; it must open again.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(address, port))?;
    socket.listen(128)
}

async fn accept_loop(shared: Arc<Shared>, listener: tokio::net::TcpListener, route: Route) {
    let target = SocketAddr::new(shared.config.pod_address, route.target_port);
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or the like: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            shared.state().counters.over_limit += 1;
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _permit = permit;
            let connected =
                tokio::time::timeout(shared.config.connect_timeout, TcpStream::connect(target))
                    .await;
            let Ok(Ok(mut pod)) = connected else {
                shared.state().counters.pod_unreachable += 1;
                return;
            };
            shared.state().counters.forwarded += 1;
            let mut client = client;
            let _ = client.set_nodelay(true);
            let _ = pod.set_nodelay(true);
            // Ends when either side closes or fails; Flink's RPC connections stay open for as
            // long as both ends live, so there is no idle limit.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut pod).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_follow_port_and_target_port_and_skip_what_cannot_be_forwarded() {
        let service = json!({"spec": {"ports": [
            {"name": "rpc", "port": 6123, "targetPort": 41234},
            {"name": "blob", "port": 6124},
            {"name": "web", "port": 80, "targetPort": "http"},
            {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
        ]}});
        let (routes, problems) = routes_of(&service).unwrap_err();
        assert_eq!(
            routes,
            [
                Route {
                    port: 6123,
                    target_port: 41234
                },
                Route {
                    port: 6124,
                    target_port: 6124
                }
            ]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("web"), "{problems:?}");
        assert_eq!(routes_of(&json!({"spec": {}})).unwrap(), []);
    }
}
