//! port-sync, the built binary, against a real Flink 2.3 JobManager in ZooKeeper HA mode (the
//! PyPI jars on the machine's Java 17, with a real ZooKeeper 3.8) and the test bed's Kubernetes
//! API stand-in. Real: Flink, ZooKeeper, the binary, kube's client, TLS, the shipped RBAC rules.
//! Stand-in: the API server only.

use e2e::kube_bed::Bed;
use std::time::{Duration, Instant};
use testbed::flink::{DEFAULT_VERSION, Flink, JobManager, JobManagerConfig};
use testbed::kube_api::ApiServerConfig;
use testbed::ports::free_port;
use testbed::process::{Echo, Process};
use testbed::zookeeper::{Ensemble, EnsembleConfig};

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
