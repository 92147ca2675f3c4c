//! The project's purpose end to end: a streaming job in Flink's application mode (1 s
//! checkpoints, an exactly-once FileSink) whose JobManager is SIGKILLed mid-stream and started
//! again, with the TaskManager reaching it through the Service that port-sync keeps right.
//! The job must run again, resume from a checkpoint (not from scratch), and its committed output
//! must hold every record exactly once. Timings belong to `cargo xtask failover`, not here.
//!
//! Real: Flink 2.3 (JobManager, TaskManager, the job), ZooKeeper 3.8, port-sync (the built
//! binary). Stand-in: the Kubernetes API server; the forwarder plays kube-proxy.

use drills::failover::{FailoverConfig, Variant, run};
use e2e::binary;
use fixtures::flink::{DEFAULT_VERSION, Flink};

#[test]
fn a_streaming_job_survives_a_killed_jobmanager_exactly_once_behind_port_sync() {
    let flink = Flink::install(DEFAULT_VERSION).unwrap();
    let config = FailoverConfig::new(Variant::PortSync(binary("port-sync")));
    let report = run(&flink, &config).unwrap_or_else(|error| panic!("{error}"));
    eprintln!("{report:#?}");

    let milestones = &report.milestones;
    assert!(milestones.leader.is_some(), "a new leader: {report:#?}");
    assert!(
        milestones.service_right.is_some(),
        "port-sync put the new ports on the Service: {report:#?}"
    );
    assert!(
        milestones.job_running.is_some(),
        "the job ran again: {report:#?}"
    );
    assert!(
        milestones.first_checkpoint.is_some(),
        "the restored job checkpointed: {report:#?}"
    );
    let restored = report
        .restored_checkpoint
        .expect("the new JobManager restored the job from a checkpoint, not from scratch");
    assert!(
        restored >= 1 && restored <= report.checkpoints_before_kill + 1,
        "restored from checkpoint {restored}, {} completed before the kill",
        report.checkpoints_before_kill
    );
    assert!(
        report.exactly_once.holds(),
        "{} ({report:#?})",
        report.exactly_once
    );
    assert!(
        report.final_state.starts_with("FINISHED"),
        "{}",
        report.final_state
    );
}
