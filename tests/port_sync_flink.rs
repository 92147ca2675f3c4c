//! port-sync, the built binary, against a real Flink 2.3 JobManager in ZooKeeper HA mode (the
//! PyPI jars on the machine's Java 17, with a real ZooKeeper 3.8) and the test bed's Kubernetes
//! API stand-in. Real: Flink, ZooKeeper, the binary, kube's client, TLS, the shipped RBAC rules.
//! Stand-in: the API server only.

use e2e::kube_bed::{Bed, LIMIT};
use e2e::run;
use fixtures::flink::{DEFAULT_VERSION, Flink, JobManager, JobManagerConfig};
use fixtures::ports::free_port;
use fixtures::process::{Echo, Process};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use kube_stand_in::ApiServerConfig;
use serde_json::json;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A JobManager answers REST in 5-15 s here; a restart waits for ZooKeeper to expire the
/// killed one's session too.
const JVM_START: Duration = Duration::from_secs(120);

#[test]
fn started_before_the_jobmanager_it_syncs_the_live_ports_and_follows_three_restarts() {
    let zookeeper = Ensemble::start_standalone(EnsembleConfig::standalone()).unwrap();
    let flink = Flink::install(DEFAULT_VERSION).unwrap();
    let bed = Bed::new(ApiServerConfig::default());
    let rest_port = free_port();
    let rest_url = format!("http://127.0.0.1:{rest_port}");

    let mut sidecar = Process::spawn(
        "port-sync",
        bed.port_sync(
            &rest_url,
            &["--listen", &format!("127.0.0.1:{}", free_port())],
        ),
        Echo::Quiet,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(sidecar.is_running(), "{}", sidecar.output());
    assert!(
        bed.holds(6123, 6124),
        "nothing to sync before the JobManager answers"
    );
    assert_eq!(bed.patches(), 0);

    let mut jobmanager = JobManager::start(
        &flink,
        JobManagerConfig::new(&zookeeper.connect_string()).rest_port(rest_port),
    )
    .unwrap();
    let mut seen = Vec::new();
    for round in 0..4 {
        if round > 0 {
            jobmanager.restart().unwrap();
        }
        jobmanager.wait_rest_ready(JVM_START).unwrap();
        let answered = Instant::now();
        let (rpc, blob) = jobmanager.live_ports().unwrap();
        assert!(rpc != 0 && blob != 0, "random ports are bound in HA mode");
        bed.wait_holds(rpc, blob, &sidecar);
        eprintln!(
            "round {round}: rpc {rpc} blob {blob}, Service synced {:?} after REST answered",
            answered.elapsed()
        );
        seen.push((rpc, blob));
    }
    seen.dedup();
    assert_eq!(
        seen.len(),
        4,
        "each restart binds new random ports: {seen:?}"
    );
    assert!(sidecar.is_running(), "{}", sidecar.output());
}

/// How the JobManager's RPC port is configured, and what it then advertises and listens on.
struct BindCase {
    name: &'static str,
    /// `jobmanager.rpc.bind-port`, if set.
    bind_port: Option<u16>,
    /// `high-availability.jobmanager.port`; `None`: the test bed's "0" (Flink's default).
    ha_range: Option<(u16, u16)>,
}

/// Flink advertises `jobmanager.rpc.port` (TaskManagers dial it, so it is the Service's
/// `port`) and listens on `jobmanager.rpc.bind-port` when set (the Service's `targetPort`).
/// For each way of configuring it, against a real JobManager: after `port-sync --once` the
/// Service has port = advertised, targetPort = listened-on, and that targetPort accepts a
/// connection. The blob server has no bind-port (BlobServer listens on the one port it
/// reports), so blob keeps port = targetPort.
///
/// With `PORT_SYNC_CAPTURE_DIR` set, each case's raw `/jobmanager/config` is written there as
/// `jobmanager-config-<case>.json` (how tests/fixtures/flink-2.3.0 got them).
#[test]
fn the_service_targets_the_port_flink_listens_on_with_and_without_a_bind_port() {
    let zookeeper = Ensemble::start_standalone(EnsembleConfig::standalone()).unwrap();
    let flink = Flink::install(DEFAULT_VERSION).unwrap();
    let range_start = free_port();
    let cases = [
        BindCase {
            name: "no-bind-port",
            bind_port: None,
            ha_range: None,
        },
        BindCase {
            name: "bind-port-ha-port-default",
            bind_port: Some(free_port()),
            ha_range: None,
        },
        BindCase {
            name: "bind-port-ha-range",
            bind_port: Some(free_port()),
            ha_range: Some((range_start, range_start.saturating_add(3))),
        },
    ];
    for case in cases {
        let bed = Bed::new(ApiServerConfig::default());
        let mut config = JobManagerConfig::new(&zookeeper.connect_string());
        if let Some(bind_port) = case.bind_port {
            config = config.set("jobmanager.rpc.bind-port", &bind_port.to_string());
        }
        if let Some((first, last)) = case.ha_range {
            config = config.set(
                "high-availability.jobmanager.port",
                &format!("{first}-{last}"),
            );
        }
        let mut jobmanager = JobManager::start(&flink, config).unwrap();
        jobmanager.wait_rest_ready(JVM_START).unwrap();
        let live = jobmanager.live_config().unwrap();
        if let Some(dir) = std::env::var_os("PORT_SYNC_CAPTURE_DIR") {
            let body = jobmanager.rest_get("/jobmanager/config").unwrap().body;
            let file =
                std::path::Path::new(&dir).join(format!("jobmanager-config-{}.json", case.name));
            std::fs::write(&file, body).unwrap();
        }
        let (advertised, blob) = jobmanager.live_ports().unwrap();
        let listening = case.bind_port.unwrap_or(advertised);
        assert_eq!(
            live.get("jobmanager.rpc.bind-port").map(String::as_str),
            case.bind_port.map(|port| port.to_string()).as_deref(),
            "{}: Flink reports the bind port it was given",
            case.name
        );
        match (case.bind_port, case.ha_range) {
            (Some(bind_port), None) => assert_eq!(
                advertised, bind_port,
                "{}: with the HA port at its default Flink advertises the bind port",
                case.name
            ),
            (Some(bind_port), Some((first, last))) => {
                assert!(
                    (first..=last).contains(&advertised) && advertised != bind_port,
                    "{}: Flink advertises {advertised}, expected a port of {first}-{last}",
                    case.name
                );
                assert!(
                    TcpStream::connect(("127.0.0.1", advertised)).is_err(),
                    "{}: nothing listens on the advertised port {advertised}, so a targetPort \
                     equal to it would reach nothing",
                    case.name
                );
            }
            _ => {}
        }

        let finished = run(
            "port-sync",
            bed.port_sync(&jobmanager.rest_url(), &["--once"]),
            LIMIT,
        );
        assert_eq!(finished.code, Some(0), "{}: {}", case.name, finished.said());
        assert_eq!(
            bed.port("rpc"),
            (i64::from(advertised), json!(listening)),
            "{}: {}",
            case.name,
            finished.said()
        );
        assert_eq!(
            bed.port("blob"),
            (i64::from(blob), json!(blob)),
            "{}",
            case.name
        );
        for (what, port) in [("rpc targetPort", listening), ("blob targetPort", blob)] {
            TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|error| {
                panic!("{}: the {what} {port} reaches nothing: {error}", case.name)
            });
        }
        eprintln!(
            "{}: advertised {advertised}, listening {listening}, blob {blob}",
            case.name
        );
        jobmanager.stop();
    }
}
