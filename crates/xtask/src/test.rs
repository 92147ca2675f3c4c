//! `cargo xtask test`: the whole suite, as CI runs it. Installs what the tests need, checks
//! formatting and lints, builds the binaries the end-to-end tests drive, then runs every test
//! (unit, real-server integration, doc tests), and last a 5-minute fault soak of port-sync.

use crate::install;
use crate::run::{Result, cargo, step};

pub fn run() -> Result {
    install::debian_packages(&[
        install::ZOOKEEPER,
        install::PODMAN,
        install::RUNC,
        install::DNSMASQ,
        install::CA_CERTIFICATES,
    ])?;
    install::nextest()?;
    install::flink()?;
    // The oldest Flink of the matrix, for tests/port_sync_matrix.rs (downloads only when missing).
    testbed::flink::Flink::install(testbed::matrix::VERSIONS[0])
        .map_err(|error| error.to_string())?;
    testbed::helm::install_library().map_err(|error| error.to_string())?;
    // Built here, not inside a test: a cold static release build takes minutes.
    crate::image::run()?;

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step("check formatting", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("lint", clippy)?;

    crate::supply_chain::check()?;

    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    step("build the binaries the end-to-end tests drive", build)?;

    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"]);
    step("run the doc tests", doc)?;

    let mut nextest = cargo();
    nextest.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    step("run the tests", nextest)?;

    // Last, so that its table of figures closes the output: 5 minutes of faults and
    // JobManager restarts against port-sync, with the fixed seed.
    crate::soak::run(CI_SOAK_MINUTES, testbed::soak::DEFAULT_SEED, None, None)
}

/// How long CI's fault soak plays its schedule (`cargo xtask soak` defaults to 10).
const CI_SOAK_MINUTES: u64 = 5;
