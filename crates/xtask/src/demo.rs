//! `cargo xtask demo`: the project working on this machine with real servers. For now it shows
//! zk-wait holding a "pod" while a real 3-member ZooKeeper ensemble comes up one member at a
//! time: the lone first member says imok but serves nothing, and zk-wait releases only when a
//! second member makes a majority.

use crate::install;
use crate::run::{Result, cargo, step, workspace_root};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use testbed::process::{Echo, Process, stop_children_on_signal};
use testbed::zookeeper::{Ensemble, EnsembleConfig};

const JVM_START: Duration = Duration::from_secs(60);

/// Prints one line per event, with the time since the demo began.
struct Narrator {
    started: Instant,
}

impl Narrator {
    fn say(&self, what: &str) {
        eprintln!(
            "\n[{:>6.1}s] demo: {what}",
            self.started.elapsed().as_secs_f64()
        );
    }
}

pub fn run() -> Result {
    stop_children_on_signal();
    install::debian_packages(&[install::ZOOKEEPER])?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "zk-wait"]);
    step("build zk-wait", build)?;

    let narrator = Narrator {
        started: Instant::now(),
    };
    let mut ensemble = Ensemble::new(EnsembleConfig::ensemble(3).whitelist("srvr,ruok"))
        .map_err(|e| e.to_string())?;
    let connect = ensemble.connect_string();
    narrator.say(&format!(
        "a 3-member ZooKeeper ensemble is configured at {connect}; no member runs yet"
    ));

    narrator.say("starting zk-wait, as the JobManager pod's init container would");
    let mut command = Command::new(workspace_root().join("target/release/zk-wait"));
    command.args(["--zookeeper", &connect, "--progress-every", "1s"]);
    let mut zk_wait = Process::spawn("zk-wait", command, Echo::Prefixed("    zk-wait | ".into()))
        .map_err(|e| e.to_string())?;
    sleep(Duration::from_secs(2));

    narrator.say("starting ZooKeeper member 1 of 3 alone");
    ensemble.start(0).map_err(|e| e.to_string())?;
    ensemble
        .wait_listening(0, JVM_START)
        .map_err(|e| e.to_string())?;
    let ruok = ensemble.ask(0, "ruok").unwrap_or_else(|e| e.to_string());
    let srvr = ensemble.ask(0, "srvr").unwrap_or_else(|e| e.to_string());
    narrator.say(&format!(
        "member 1 answers ruok with {:?} but srvr with {:?}: the usual `ruok | grep imok` \
         init loop would release the JobManager now, into an ensemble with no quorum",
        ruok.trim(),
        srvr.trim()
    ));
    sleep(Duration::from_secs(4));
    if !zk_wait.is_running() {
        return Err(format!(
            "zk-wait released with one member of three:\n{}",
            zk_wait.output()
        ));
    }
    narrator.say("zk-wait is still waiting, as it should");

    narrator.say("starting ZooKeeper member 2 of 3: a majority can form");
    let second_started = Instant::now();
    ensemble.start(1).map_err(|e| e.to_string())?;
    let status = zk_wait.expect_exit(JVM_START);
    let serving = ensemble.serving_count();
    narrator.say(&format!(
        "zk-wait exited with {} {:.1}s after member 2 was started (JVM start and leader \
         election included); {serving} of 3 members serve",
        status
            .code()
            .map_or("a signal".into(), |c| format!("code {c}")),
        second_started.elapsed().as_secs_f64(),
    ));
    if status.code() != Some(0) {
        return Err("zk-wait did not report ready".into());
    }
    narrator.say("the JobManager would start now. Stopping every process the demo started.");
    drop(ensemble);
    eprintln!("\ndemo: done");
    Ok(())
}
