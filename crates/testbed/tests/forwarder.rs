//! The Service networking stand-in: it listens on the "Service IP" for exactly the ports the
//! Service lists, forwards to the "pod" address at `targetPort`, follows the Service as it
//! changes, and closes everything on drop.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use testbed::forwarder::{EventKind, Forwarder, ForwarderConfig, Route};
use testbed::kube_api::ApiServerConfig;
use testbed::service_bed::{NAMESPACE, SERVICE, ServiceBed};

const LIMIT: Duration = Duration::from_secs(10);

/// A "Service IP" and a "pod" address of a loopback /24 of this test's own, so that tests
/// running at once (and a demo on 127.0.0.2) never share a port.
fn addresses() -> (IpAddr, IpAddr) {
    let (a, b) = (fastrand::u8(1..=254), fastrand::u8(..));
    (
        IpAddr::V4(Ipv4Addr::new(127, a, b, 2)),
        IpAddr::V4(Ipv4Addr::new(127, a, b, 3)),
    )
}

/// A "pod" server on `address` that answers every line with "pod:" and the line.
fn echo_server(address: IpAddr) -> u16 {
    let listener = TcpListener::bind((address, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0u8; 1024];
                while let Ok(count) = stream.read(&mut buffer) {
                    if count == 0 {
                        return;
                    }
                    let mut answer = b"pod:".to_vec();
                    answer.extend_from_slice(&buffer[..count]);
                    if stream.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A port free on both addresses right now.
fn free_port_on(address: IpAddr) -> u16 {
    TcpListener::bind((address, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn round_trip(address: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"hello")?;
    let mut answer = [0u8; 64];
    let count = stream.read(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer[..count]).into_owned())
}

fn refuses(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionRefused)
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {LIMIT:?}: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn service(ports: Value) -> Value {
    json!({"metadata": {"name": "jm"}, "spec": {"ports": ports}})
}

/// A Service held in memory, changed by the test.
fn shared_service(
    initial: Value,
) -> (Arc<Mutex<Option<Value>>>, testbed::forwarder::ServiceSource) {
    let holder = Arc::new(Mutex::new(Some(initial)));
    let source = Arc::clone(&holder);
    (holder, Box::new(move || source.lock().unwrap().clone()))
}

#[test]
fn forwards_the_stand_ins_service_ports_and_follows_a_patch_of_the_port() {
    let (service_ip, pod_ip) = addresses();
    let first_target = echo_server(pod_ip);
    let bed =
        Arc::new(ServiceBed::start(ApiServerConfig::default(), Duration::from_secs(600)).unwrap());
    let first_port = free_port_on(service_ip);
    bed.api
        .edit_service(NAMESPACE, SERVICE, |service| {
            service["spec"]["ports"][0]["port"] = json!(first_port);
            service["spec"]["ports"][0]["targetPort"] = json!(first_target);
        })
        .unwrap();
    let forwarder = Forwarder::for_service_bed(
        ForwarderConfig::new(service_ip, pod_ip),
        Arc::clone(&bed),
        SERVICE,
    )
    .unwrap();
    let first = Route {
        port: first_port,
        target_port: first_target,
    };
    forwarder.wait_routing(first, LIMIT).unwrap();
    // The Service's other ports (blob 6124, rest 8081) are listed too.
    assert_eq!(forwarder.routes().len(), 3, "{:?}", forwarder.routes());
    assert_eq!(
        round_trip(SocketAddr::new(service_ip, first_port)).unwrap(),
        "pod:hello"
    );

    // A port-sync-like patch: both port and targetPort move to the pod's new port.
    let second_target = echo_server(pod_ip);
    let second_port = free_port_on(service_ip);
    bed.api
        .edit_service(NAMESPACE, SERVICE, |service| {
            service["spec"]["ports"][0]["port"] = json!(second_port);
            service["spec"]["ports"][0]["targetPort"] = json!(second_target);
        })
        .unwrap();
    let second = Route {
        port: second_port,
        target_port: second_target,
    };
    forwarder.wait_routing(second, LIMIT).unwrap();
    assert!(!forwarder.is_routing(first));
    assert!(refuses(SocketAddr::new(service_ip, first_port)));
    assert_eq!(
        round_trip(SocketAddr::new(service_ip, second_port)).unwrap(),
        "pod:hello"
    );
    let kinds: Vec<EventKind> = forwarder.events().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::Closed(first)), "{kinds:?}");
    assert!(kinds.contains(&EventKind::Opened(second)), "{kinds:?}");
    assert_eq!(forwarder.counters().forwarded, 2);

    // The Service deleted: nothing listens any more.
    bed.api.delete_service(NAMESPACE, SERVICE).unwrap();
    wait_until("every listener closed", || forwarder.routes().is_empty());
    assert!(refuses(SocketAddr::new(service_ip, second_port)));
}

#[test]
fn a_target_port_nothing_listens_on_closes_the_connection_and_is_counted() {
    let (service_ip, pod_ip) = addresses();
    let port = free_port_on(service_ip);
    let dead_target = free_port_on(pod_ip);
    let (_holder, source) = shared_service(service(json!([
        {"name": "rpc", "port": port, "targetPort": dead_target}
    ])));
    let forwarder = Forwarder::start(ForwarderConfig::new(service_ip, pod_ip), source).unwrap();
    forwarder
        .wait_routing(
            Route {
                port,
                target_port: dead_target,
            },
            LIMIT,
        )
        .unwrap();
    // Accepted (the Service port is open), then closed without an answer.
    let answer = round_trip(SocketAddr::new(service_ip, port));
    assert!(
        answer.as_ref().is_ok_and(String::is_empty) || answer.is_err(),
        "{answer:?}"
    );
    wait_until("the refused pod connection is counted", || {
        forwarder.counters().pod_unreachable == 1
    });
    assert_eq!(forwarder.counters().forwarded, 0);
}

#[test]
fn a_busy_port_is_reported_once_and_opened_when_it_frees_up() {
    let (service_ip, pod_ip) = addresses();
    let target = echo_server(pod_ip);
    let squatter = TcpListener::bind((service_ip, 0)).unwrap();
    let port = squatter.local_addr().unwrap().port();
    let (_holder, source) = shared_service(service(json!([
        {"name": "rpc", "port": port, "targetPort": target}
    ])));
    let forwarder = Forwarder::start(ForwarderConfig::new(service_ip, pod_ip), source).unwrap();
    let route = Route {
        port,
        target_port: target,
    };
    wait_until("the bind failure is reported", || {
        forwarder
            .events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::BindFailed(failed, _) if failed == route))
    });
    // Many polls later, still one report.
    thread::sleep(Duration::from_millis(200));
    let failures = forwarder
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::BindFailed(..)))
        .count();
    assert_eq!(failures, 1);

    drop(squatter);
    forwarder.wait_routing(route, LIMIT).unwrap();
    assert_eq!(
        round_trip(SocketAddr::new(service_ip, port)).unwrap(),
        "pod:hello"
    );
}

#[test]
fn dropping_the_forwarder_closes_listeners_and_open_connections() {
    let (service_ip, pod_ip) = addresses();
    let target = echo_server(pod_ip);
    let port = free_port_on(service_ip);
    let (holder, source) = shared_service(service(json!([
        {"name": "rpc", "port": port, "targetPort": target}
    ])));
    let forwarder = Forwarder::start(ForwarderConfig::new(service_ip, pod_ip), source).unwrap();
    let route = Route {
        port,
        target_port: target,
    };
    forwarder.wait_routing(route, LIMIT).unwrap();
    let mut open = TcpStream::connect(SocketAddr::new(service_ip, port)).unwrap();
    open.set_read_timeout(Some(LIMIT)).unwrap();
    open.write_all(b"x").unwrap();
    let mut answer = [0u8; 16];
    assert_eq!(open.read(&mut answer).unwrap(), 5);

    let dropped = Instant::now();
    drop(forwarder);
    assert!(
        dropped.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        dropped.elapsed()
    );
    assert!(refuses(SocketAddr::new(service_ip, port)));
    // The forwarded connection is cut: a read sees the end (or a reset).
    assert!(matches!(open.read(&mut answer), Ok(0) | Err(_)));
    // The Service is no longer read.
    assert_eq!(Arc::strong_count(&holder), 1);
}
