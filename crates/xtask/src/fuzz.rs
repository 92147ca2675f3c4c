//! `cargo xtask fuzz`: runs each cargo-fuzz target of crates/fuzz for a bounded time and fails on
//! any crash (a panic, a broken invariant, an allocation over the limit, a hang).
//!
//! cargo-fuzz wants a nightly toolchain for its default AddressSanitizer; this machine has only
//! stable, so the build runs with `RUSTC_BOOTSTRAP=1`, which lets stable rustc accept
//! `-Zsanitizer=address`. The sanitizer is worth it here even for safe code: its malloc hooks are
//! what let libFuzzer's `-malloc_limit_mb` catch one oversized allocation.

use crate::run::{Result, cargo, step, workspace_root};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Pinned, as cargo-deny is: its flags and output are what this module speaks.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const FUZZ_DIR: &str = "crates/fuzz";

struct Target {
    name: &'static str,
    /// Captured real answers (tests/fixtures) that seed the corpus beside crates/fuzz/seeds.
    fixtures: Option<&'static str>,
}

const TARGETS: [Target; 3] = [
    Target {
        name: "connect_string",
        fixtures: None,
    },
    Target {
        name: "four_letter_reply",
        fixtures: Some("tests/fixtures/zookeeper-3.8.0"),
    },
    Target {
        name: "jobmanager_config",
        fixtures: Some("tests/fixtures/flink-2.3.0"),
    },
];

/// The parsers read a few KiB at most: one allocation above this is a bug, not a need.
const MALLOC_LIMIT_MB: &str = "64";
/// Headroom for AddressSanitizer's shadow memory and quarantine on top of the parsers' own.
const RSS_LIMIT_MB: &str = "1024";
/// Seconds one input may take before it counts as a hang.
const INPUT_TIMEOUT_SECS: &str = "10";

/// What libFuzzer reported at the end of one run.
#[derive(Default)]
struct Figures {
    executions: Option<u64>,
    executions_per_second: Option<u64>,
    /// Edges covered (`cov:`) and features (`ft:`), from the last status line.
    coverage: Option<u64>,
    features: Option<u64>,
    corpus_entries: Option<u64>,
    peak_rss_mb: Option<u64>,
}

pub fn run(seconds: u64) -> Result {
    install_cargo_fuzz()?;
    let mut build = cargo_fuzz();
    build.args(["build", "--fuzz-dir", FUZZ_DIR]);
    step("build the fuzz targets (AddressSanitizer)", build)?;

    let mut report = Vec::new();
    for target in &TARGETS {
        let figures = run_target(target, seconds)?;
        report.push((target.name, figures));
    }
    eprintln!("==> fuzzing: {seconds} s per target, no crash");
    eprintln!(
        "    {:<18} {:>12} {:>9} {:>6} {:>7} {:>7} {:>8}",
        "target", "executions", "exec/s", "cov", "ft", "corpus", "peak RSS"
    );
    let show = |value: Option<u64>| value.map_or("?".to_owned(), |v| v.to_string());
    for (name, figures) in &report {
        eprintln!(
            "    {:<18} {:>12} {:>9} {:>6} {:>7} {:>7} {:>5} MB",
            name,
            show(figures.executions),
            show(figures.executions_per_second),
            show(figures.coverage),
            show(figures.features),
            show(figures.corpus_entries),
            show(figures.peak_rss_mb),
        );
    }
    Ok(())
}

fn install_cargo_fuzz() -> Result {
    let installed = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| {
            output.status.success()
                && String::from_utf8_lossy(&output.stdout).contains(CARGO_FUZZ_VERSION)
        });
    if installed {
        return Ok(());
    }
    let mut install = cargo();
    install.args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]);
    step("install cargo-fuzz", install)
}

fn cargo_fuzz() -> Command {
    let mut command = cargo();
    command.arg("fuzz").env("RUSTC_BOOTSTRAP", "1");
    command
}

/// Runs one target for `seconds`, echoing libFuzzer's output except its per-input progress
/// lines (thousands of them), and returns its closing figures.
fn run_target(target: &Target, seconds: u64) -> Result<Figures> {
    let root = workspace_root();
    // The first directory is the growing corpus libFuzzer writes to (kept between runs, ignored
    // by git); the others only seed it.
    let corpus = root.join(FUZZ_DIR).join("corpus").join(target.name);
    std::fs::create_dir_all(&corpus)
        .map_err(|error| format!("cannot create {}: {error}", corpus.display()))?;
    let mut corpora: Vec<PathBuf> =
        vec![corpus, root.join(FUZZ_DIR).join("seeds").join(target.name)];
    corpora.extend(target.fixtures.map(|fixtures| root.join(fixtures)));

    let mut command = cargo_fuzz();
    command
        .current_dir(&root)
        .args(["run", "--fuzz-dir", FUZZ_DIR, target.name])
        .args(&corpora)
        .arg("--")
        .args([
            format!("-max_total_time={seconds}"),
            format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
            format!("-rss_limit_mb={RSS_LIMIT_MB}"),
            format!("-timeout={INPUT_TIMEOUT_SECS}"),
            "-print_final_stats=1".to_owned(),
        ])
        .stderr(Stdio::piped());
    eprintln!("==> fuzz {} for {seconds} s", target.name);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot run cargo fuzz: {error}"))?;
    let mut figures = Figures::default();
    let mut crash_input: Option<String> = None;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.map_err(|error| format!("reading cargo fuzz's output: {error}"))?;
            read_figures(&line, &mut figures);
            if let Some(path) = line.split("Test unit written to ").nth(1) {
                crash_input = Some(path.trim().to_owned());
            }
            if !is_progress(&line) {
                eprintln!("    {line}");
            }
        }
    }
    let status = child
        .wait()
        .map_err(|error| format!("waiting for cargo fuzz: {error}"))?;
    eprintln!(
        "==> fuzz {}: done in {:.1}s",
        target.name,
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        return Ok(figures);
    }
    Err(match crash_input {
        Some(input) => format!(
            "fuzz target {} crashed ({status}); the input is {input}; replay it with \
             `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir {FUZZ_DIR} {} {input}`",
            target.name, target.name
        ),
        None => format!("fuzz target {} failed ({status})", target.name),
    })
}

/// libFuzzer's `#N NEW …` and `#N REDUCE …` lines: one per input that found something new.
fn is_progress(line: &str) -> bool {
    line.starts_with('#') && (line.contains(" NEW ") || line.contains(" REDUCE "))
}

/// Picks the figures out of libFuzzer's status lines (`#N DONE cov: 412 ft: 1203 corp: 310/9Kb
/// … exec/s: 52000 rss: 61Mb`) and final stats (`stat::number_of_executed_units: 3120000`).
fn read_figures(line: &str, figures: &mut Figures) {
    if let Some(value) = line.strip_prefix("stat::number_of_executed_units:") {
        figures.executions = value.trim().parse().ok();
    } else if let Some(value) = line.strip_prefix("stat::average_exec_per_sec:") {
        figures.executions_per_second = value.trim().parse().ok();
    } else if let Some(value) = line.strip_prefix("stat::peak_rss_mb:") {
        figures.peak_rss_mb = value.trim().parse().ok();
    } else if line.starts_with('#') {
        let field = |name: &str| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == name)?;
            let value = words.next()?;
            // `corp: 310/9Kb` counts entries before the slash.
            value.split('/').next()?.parse().ok()
        };
        figures.coverage = field("cov:").or(figures.coverage);
        figures.features = field("ft:").or(figures.features);
        figures.corpus_entries = field("corp:").or(figures.corpus_entries);
    }
}
