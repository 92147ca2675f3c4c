//! The demo's scenario (`cargo xtask demo`), the same code path with shorter pauses, with each
//! step asserted: zk-wait holds until a majority serves; a TaskManager cannot register with a
//! JobManager on random ports behind a Service without port-sync, and can with it; a job runs to
//! FINISHED through the Service; after a JobManager restart on new ports the TaskManager
//! registers again.

use drills::scenario::{self, Addresses, Narrator, ScenarioConfig};
use e2e::binary;
use std::time::Duration;

#[test]
fn the_demo_scenario_registers_the_taskmanager_only_with_port_sync_and_runs_a_job_across_a_restart()
{
    let config = ScenarioConfig {
        // Its own loopback net: a demo or another run on the machine may use 127.0.0.2.
        addresses: Addresses::random(),
        lone_member_for: Duration::from_secs(2),
        without_port_sync_for: Duration::from_secs(12),
        // Flink retries a failed connection every 10 s by default; 2 s keeps the test short.
        taskmanager_retry_delay: Some(Duration::from_secs(2)),
        echo: false,
        narrator: Narrator::new("scenario"),
        ..ScenarioConfig::new(&binary("zk-wait"), &binary("port-sync"))
    };
    let report = scenario::run(config).unwrap_or_else(|error| panic!("{error}"));
    for line in report.summary() {
        eprintln!("summary: {line}");
    }

    assert_eq!(report.zk_wait.lone_member_ruok, "imok");
    assert!(!report.zk_wait.lone_member_serving);
    assert!(report.zk_wait.waited_while_alone);
    assert_eq!(report.zk_wait.exit_code, Some(0));

    let (rpc, blob) = report.first_ports;
    assert!(rpc != 6123 && blob != 6124, "random ports: {rpc} {blob}");
    assert_eq!(
        report.without_port_sync.most_registered, 0,
        "no TaskManager registers without port-sync"
    );
    assert!(
        !report.without_port_sync.connection_errors.is_empty(),
        "the TaskManager logs its failing connections"
    );

    let synced = &report.with_port_sync;
    assert_eq!(synced.live_ports, (rpc, blob));
    let rpc_entry = synced
        .service_after
        .iter()
        .find(|p| p.name == "rpc")
        .unwrap();
    assert_eq!(rpc_entry.port, i64::from(rpc));
    assert_eq!(
        synced.registered, 1,
        "the TaskManager registers with port-sync"
    );
    assert!(
        synced
            .metrics
            .iter()
            .any(|l| l.starts_with("port_sync_patches_total")),
        "{:?}",
        synced.metrics
    );

    assert_eq!(report.job.state, "FINISHED", "{:?}", report.job);
    assert!(
        report
            .job
            .result_line
            .as_deref()
            .is_some_and(|line| line.contains("= 333338333350000")),
        "{:?}",
        report.job
    );

    let restart = &report.restart;
    assert_eq!(restart.old_ports, (rpc, blob));
    assert_ne!(restart.sync.live_ports.0, rpc, "a new random RPC port");
    assert_eq!(
        restart.sync.registered, 1,
        "the TaskManager registers again after the JobManager's restart"
    );
}
