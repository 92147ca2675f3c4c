//! The oldest Flink of the compatibility matrix (`drills::matrix::VERSIONS`, run in full by
//! `cargo xtask matrix`): port-sync, the built binary, against a real Flink 1.18 JobManager in
//! ZooKeeper HA mode (`flink-conf.yaml`) and the API stand-in. The Service gets the live rpc and
//! blob ports and follows a restart. The newest version has its own test,
//! tests/port_sync_flink.rs. `cargo xtask test` installs this version before the tests run, so
//! the download does not count against the test's time limit.

use drills::matrix::{VERSIONS, check_version};
use e2e::binary;

#[test]
fn the_oldest_flink_of_the_matrix_gets_its_live_ports_synced_and_followed_after_a_restart() {
    let oldest = VERSIONS[0];
    let report =
        check_version(oldest, &binary("port-sync")).unwrap_or_else(|error| panic!("{error}"));
    eprintln!("{report:?}");
}
