//! `cargo xtask`: the project's own commands. `test` runs the whole suite (CI calls it),
//! `demo` shows the project working on this machine, `bench` measures.

mod bench_port_sync;
mod bench_zk_wait;
mod checkers;
mod demo;
mod failover;
mod fuzz;
mod image;
mod install;
mod load;
mod matrix;
mod run;
mod soak;
mod stats;
mod supply_chain;
mod test;
mod zookeeper_restart;
mod zookeeper_versions;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "The project's own commands")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the tests need when missing, then lint and run the whole test suite.
    Test,
    /// Show the project working: zk-wait, a Flink cluster behind a Service, port-sync.
    Demo,
    /// Build the container image (both binaries, FROM scratch) with podman.
    Image,
    /// The chart, image and RBAC manifests judged by their users' tools: kubernetes-validate,
    /// checkov, yamllint, hadolint, kubectl kustomize (installed when missing).
    Checkers,
    /// cargo-deny over the dependency tree (advisories, licenses, bans, sources), as the suite
    /// runs it; the RustSec database from RUSTSEC_ADVISORY_DB, a snapshot beside the repository,
    /// or fetched.
    SupplyChain,
    /// port-sync against a real JobManager of each Flink version (1.18 - 2.3): live ports
    /// synced, a restart followed; prints a table, fails if any version fails.
    Matrix {
        /// Flink versions to run, comma-separated (default: the latest patch of each minor).
        #[arg(long, value_delimiter = ',')]
        versions: Option<Vec<String>>,
    },
    /// zk-wait against a real ZooKeeper of each line 3.4 - 3.9 in every whitelist setting and
    /// as a 3-member ensemble; captures the answers into tests/fixtures/zookeeper-<version>/
    /// and prints a table; fails if any version fails.
    ZookeeperVersions {
        /// ZooKeeper versions or lines to run, comma-separated (default: all, 3.4 - 3.9).
        #[arg(long, value_delimiter = ',')]
        versions: Option<Vec<String>>,
    },
    /// Measure a binary against the usual shell loop it replaces.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Many port-sync processes, each with its own Service, against one API stand-in and one
    /// fake JobManager: requests per minute to each in steady state, scaled to 1,000 clusters.
    Load {
        /// port-sync processes (Flink clusters) to run.
        #[arg(long, default_value_t = 50)]
        instances: usize,
        /// Minutes of steady state to measure, after all have synced.
        #[arg(long, default_value_t = 3)]
        minutes: u64,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Run this port-sync binary instead of building the release one.
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
    },
    /// port-sync against a real JobManager and the API stand-in while a seeded schedule injects
    /// every fault the stand-in knows and restarts the JobManager; prints the figures, fails on
    /// a lost update, a wrong write, a 401, RSS or descriptor growth, or port-sync exiting.
    Soak {
        /// Length of the fault schedule, in minutes (the final checks add about half a minute).
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Seed of the schedule: the same seed plays the same faults at the same times.
        #[arg(long, default_value_t = drills::soak::DEFAULT_SEED)]
        seed: u64,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Soak this port-sync binary instead of building the release one.
        #[arg(long)]
        port_sync: Option<std::path::PathBuf>,
    },
    /// The article's streaming job (application mode, checkpoints, exactly-once sink) with its
    /// JobManager killed mid-stream, per variant of how TaskManagers reach the JobManager: the
    /// recovery milestones' medians, error-delays hit, restored checkpoint, exactly-once.
    Failover {
        /// Runs of each variant (interleaved).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Variants, comma-separated: pod-ip, port-sync, shell-loop (the article's sidecar
        /// loop, tests/bench/port-sync-loop.sh), pinned.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "pod-ip,port-sync,shell-loop,pinned"
        )]
        variants: Vec<String>,
        /// A Flink setting for JobManager and TaskManager, KEY=VALUE (repeat for more): the
        /// levers measured, e.g. `cluster.registration.error-delay=1 s`.
        #[arg(long = "flink-setting")]
        flink_settings: Vec<String>,
        /// Recover with the chart's configuration: its flinkConfiguration's recovery settings
        /// (ZooKeeper client timeouts, registration delays), its JobManager port ranges (all
        /// variants but pinned) and its ZooKeeper tickTime.
        #[arg(long)]
        chart: bool,
        /// Stop the JobManager with SIGTERM (a pod deletion) instead of SIGKILL (a crash).
        #[arg(long)]
        sigterm: bool,
        /// kube-proxy's sync delay in the forwarder: a Service change reaches the Service
        /// address this long after it is made (e.g. 1s, iptables' default minSyncPeriod).
        #[arg(long, value_parser = sidecar_common::duration::parse_duration, default_value = "0s")]
        proxy_sync_delay: std::time::Duration,
        /// What a dial of a port the Service does not list meets: refuse (at once) or drop
        /// (no answer; the client's SYN is retransmitted until its connect timeout).
        #[arg(long, default_value = "refuse")]
        proxy_unlisted: fixtures::forwarder::Unlisted,
    },
    /// Run each cargo-fuzz target (crates/fuzz) for a bounded time; fail on any crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// The streaming job on a 3-member ZooKeeper whose leader is killed and started again
    /// mid-stream, with tolerate-suspended-connections false and true: what the job goes
    /// through, exactly-once.
    ZookeeperRestart {
        /// Runs of each setting (interleaved).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// With the chart's recovery settings and ZooKeeper tickTime.
        #[arg(long)]
        chart: bool,
    },
}

#[derive(Subcommand)]
enum BenchTarget {
    /// Detection latency, peak RSS and binary size of zk-wait versus the `nc` init loop.
    ZkWait {
        /// Runs to take the median of.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Sync latency, steady-state CPU, peak RSS and binary size of port-sync versus the
    /// curl/jq sidecar loop, against a real JobManager and the API stand-in.
    PortSync {
        /// JobManager starts (the first, then restarts) to take the median of.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Seconds of steady state over which CPU time is measured.
        #[arg(long, default_value_t = 60)]
        steady_secs: u64,
    },
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().task {
        Task::Test => test::run(),
        Task::Demo => demo::run(),
        Task::Image => image::run(),
        Task::Checkers => checkers::run(),
        Task::SupplyChain => supply_chain::check(),
        Task::Matrix { versions } => matrix::run(versions),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Failover {
            runs,
            variants,
            flink_settings,
            chart,
            sigterm,
            proxy_sync_delay,
            proxy_unlisted,
        } => failover::run(
            runs,
            &variants,
            &flink_settings,
            failover::Options {
                chart,
                sigterm,
                proxy_sync_delay,
                proxy_unlisted,
            },
        ),
        Task::ZookeeperVersions { versions } => zookeeper_versions::run(versions),
        Task::ZookeeperRestart { runs, chart } => zookeeper_restart::run(runs, chart),
        Task::Load {
            instances,
            minutes,
            json,
            binary,
        } => load::run(instances, minutes, json, binary),
        Task::Soak {
            minutes,
            seed,
            json,
            port_sync,
        } => soak::run(minutes, seed, json.as_deref(), port_sync.as_deref()),
        Task::Bench {
            target: BenchTarget::ZkWait { runs },
        } => bench_zk_wait::run(runs),
        Task::Bench {
            target: BenchTarget::PortSync { runs, steady_secs },
        } => bench_port_sync::run(runs, steady_secs),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}
