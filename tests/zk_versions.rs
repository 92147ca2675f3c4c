//! zk-wait, the built binary, against real ZooKeeper servers of other release lines than
//! Debian's 3.8 (tests/zk_wait.rs covers that one in depth), started by the test bed from jars
//! (`drills::zookeeper_versions`): 3.7.2 shaded in Flink 2.3's flink-dist (installed for the
//! Flink tests anyway), 3.4.14 from Flink 1.14.6's jars and 3.9.5 from pyspark 4.3.0's, the
//! oldest and newest lines, which `cargo xtask test` installs before the tests run. For each: a
//! standalone server with the default whitelist is ready; a lone member of a 3-member ensemble
//! says `imok` but is not ready; two members are. `cargo xtask zookeeper-versions` runs every
//! line 3.4 - 3.9 in every whitelist setting.

use e2e::{Finished, command, run};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use fixtures::zookeeper_releases::source;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const JVM_START: Duration = Duration::from_secs(60);

fn once(connect: &str) -> Finished {
    let mut zk_wait = command("zk-wait", "ZK_WAIT_");
    zk_wait.args(["--zookeeper", connect, "--once"]);
    run("zk-wait", zk_wait, LIMIT)
}

fn check(version: &str) {
    let source = source(version).unwrap_or_else(|| panic!("no ZooKeeper {version} known"));
    let server = source
        .install()
        .unwrap_or_else(|error| panic!("ZooKeeper {version}: {error}"));

    // Standalone, whitelist unset: 3.5.3+ allow srvr only, 3.4.10+ every word.
    let standalone =
        Ensemble::start_standalone(EnsembleConfig::standalone().server(server.clone()))
            .unwrap_or_else(|error| panic!("ZooKeeper {version}: {error}"));
    let srvr = standalone.ask(0, "srvr").unwrap();
    assert!(
        srvr.starts_with(&format!("Zookeeper version: {version}-")),
        "not the expected server:\n{srvr}"
    );
    let connect = standalone.connect_string();
    let ready = once(&connect);
    assert_eq!(ready.code, Some(0), "{version}: {}", ready.said());
    assert!(ready.row(&connect).contains("ready (standalone)"));
    let ruok = if source.line() == "3.4" {
        "imok"
    } else {
        "not whitelisted"
    };
    assert!(
        ready.row(&connect).ends_with(ruok),
        "{version}: {}",
        ready.said()
    );
    drop(standalone);

    let mut ensemble = Ensemble::new(
        EnsembleConfig::ensemble(3)
            .whitelist("srvr,ruok")
            .server(server),
    )
    .unwrap();
    let connect = ensemble.connect_string();
    let first = ensemble.client_address(0).to_string();
    ensemble.start(0).unwrap();
    ensemble.wait_listening(0, JVM_START).unwrap();
    assert_eq!(ensemble.ask(0, "ruok").unwrap(), "imok");
    let alone = once(&connect);
    assert_eq!(alone.code, Some(1), "{version}: {}", alone.said());
    assert!(
        alone.row(&first).contains("not serving") && alone.row(&first).ends_with("imok"),
        "{version}: {}",
        alone.said()
    );

    ensemble.start(1).unwrap();
    ensemble
        .wait_majority_serving(JVM_START)
        .unwrap_or_else(|error| panic!("{error}\n{}\n{}", ensemble.output(0), ensemble.output(1)));
    let joined = once(&connect);
    assert_eq!(joined.code, Some(0), "{version}: {}", joined.said());
    assert!(
        joined
            .stdout
            .contains("ready: 2 of 3 servers ready, majority needs 2"),
        "{version}: {}",
        joined.said()
    );
}

#[test]
fn zookeeper_3_7_from_flink_2_3_is_waited_for_as_3_8_is() {
    check("3.7.2");
}

#[test]
fn zookeeper_3_4_the_oldest_line_is_waited_for_as_3_8_is() {
    check("3.4.14");
}

#[test]
fn zookeeper_3_9_the_newest_line_is_waited_for_as_3_8_is() {
    check("3.9.5");
}
