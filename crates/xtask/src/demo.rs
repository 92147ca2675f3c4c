//! `cargo xtask demo`: the project working on this machine with real servers, narrated. zk-wait
//! holds a JobManager "pod" until a real 3-member ZooKeeper ensemble serves (a lone member says
//! imok but serves nothing); a real Flink JobManager in ZooKeeper HA mode advertises the
//! Service's address while binding random ports on its pod address; a real TaskManager cannot
//! register through the Service until port-sync makes the Service follow those ports; a job runs
//! to completion; and after a JobManager restart on new ports everything follows again.
//!
//! Then the article's purpose: a streaming job in application mode (1 s checkpoints, an
//! exactly-once FileSink) behind the Service that port-sync keeps right, its JobManager killed
//! mid-stream; the job resumes from its last checkpoint and the output is checked exactly once.
//!
//! The steps live in `drills::scenario` and `drills::failover`, which the CI tests
//! `tests/demo.rs` and `tests/failover.rs` run too.

use crate::install;
use crate::run::{Result, cargo, step, target_dir};
use drills::failover::{self, FailoverConfig, Variant};
use drills::scenario::{self, ScenarioConfig};
use fixtures::flink::{DEFAULT_VERSION, Flink};
use fixtures::process::stop_children_on_signal;

pub fn run() -> Result {
    stop_children_on_signal();
    install::debian_packages(&[install::ZOOKEEPER, install::JDK])?;
    install::flink()?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "zk-wait", "-p", "port-sync"]);
    step("build zk-wait and port-sync", build)?;
    let release = target_dir().join("release");

    let config = ScenarioConfig::new(&release.join("zk-wait"), &release.join("port-sync"));
    let report = scenario::run(config)?;

    eprintln!(
        "\nThe article's streaming job: application mode (bin/standalone-job.sh, the job's jar \
         in usrlib/), numbers 1..30000 at 2000/s, a checkpoint every second, an exactly-once \
         FileSink; a TaskManager reaching the JobManager through the Service that port-sync \
         keeps right. After two checkpoints the JobManager is SIGKILLed and started again at \
         once, as Kubernetes restarts a crashed container (about a minute)."
    );
    let streaming = failover::run(
        &Flink::install(DEFAULT_VERSION).map_err(|error| error.to_string())?,
        &FailoverConfig::new(Variant::PortSync(release.join("port-sync"))),
    )?;
    for line in streaming.story() {
        eprintln!("  {line}");
    }

    eprintln!("\nSummary:");
    for line in report.summary() {
        eprintln!("  - {line}");
    }
    for line in streaming.story() {
        eprintln!("  - streaming job: {line}");
    }
    if !streaming.exactly_once.holds() || streaming.restored_checkpoint.is_none() {
        return Err("the streaming job lost or repeated records, or started from scratch".into());
    }
    eprintln!("\ndemo: done");
    Ok(())
}
