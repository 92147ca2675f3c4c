//! `cargo xtask zookeeper-versions`: zk-wait against a real ZooKeeper of each release line
//! 3.4 – 3.9 (`fixtures::zookeeper_releases::SOURCES`, or `--versions`), each started in every
//! whitelist setting it supports and as a 3-member ensemble. Captures the raw answers into
//! `tests/fixtures/zookeeper-<version>/` with a manifest (zk-wait's unit tests read them all),
//! and prints one table row per version; fails if any version fails.

use crate::install;
use crate::run::{Result, build_debug_binary, workspace_root};
use drills::zookeeper_versions::{self, CaptureReport};
use fixtures::process::stop_children_on_signal;
use fixtures::zookeeper_releases::{self, SOURCES, Source};
use zk_wait::four_letter::{Reply, Word, parse_reply};

pub fn run(versions: Option<Vec<String>>) -> Result {
    stop_children_on_signal();
    let sources: Vec<&Source> = match versions {
        None => SOURCES.iter().collect(),
        Some(versions) => versions
            .iter()
            .map(|version| {
                zookeeper_releases::source(version).ok_or_else(|| {
                    format!(
                        "no ZooKeeper {version} here; known: {}",
                        SOURCES
                            .iter()
                            .map(|source| source.zookeeper)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?,
    };
    install::debian_packages(&[install::ZOOKEEPER])?;
    // Downloads first, each with its progress shown.
    for source in &sources {
        eprintln!(
            "==> install ZooKeeper {} from {} (downloads ~{} MB only when missing)",
            source.zookeeper,
            source.describe(),
            source.download_mb
        );
        source
            .install()
            .map_err(|error| format!("installing ZooKeeper {}: {error}", source.zookeeper))?;
    }
    let zk_wait = build_debug_binary("zk-wait")?;
    let fixtures = workspace_root().join("tests").join("fixtures");

    let mut rows = Vec::new();
    for source in &sources {
        eprintln!(
            "==> ZooKeeper {}: each whitelist setting, then a 3-member ensemble",
            source.zookeeper
        );
        let out = zookeeper_versions::fixture_dir(&fixtures, source.zookeeper);
        let outcome = zookeeper_versions::capture(source, &zk_wait, &out);
        match &outcome {
            Ok(_) => eprintln!("    captured into {}", out.display()),
            Err(error) => eprintln!("    ZooKeeper {} FAILED: {error}", source.zookeeper),
        }
        rows.push((source, outcome));
    }

    println!(
        "\nZooKeeper versions: zk-wait --once ({}) against real servers on Java 17; exit codes \
         per whitelist setting (unset / ruok,srvr / * / ruok), then a lone member of 3 and two \
         of 3",
        zk_wait.display()
    );
    let header = [
        "ZooKeeper",
        "source",
        "default whitelist (seen)",
        "srvr Mode (parsed)",
        "ruok (unset / *)",
        "srvr when only ruok is listed",
        "zk-wait exit",
        "lone of 3",
        "two of 3",
    ];
    println!("| {} |", header.join(" | "));
    println!(
        "|{}",
        header.iter().map(|_| "---|").collect::<Vec<_>>().join("")
    );
    for (source, outcome) in &rows {
        let cells = match outcome {
            Ok(report) => cells(report),
            Err(error) => vec![
                source.zookeeper.to_owned(),
                source.short(),
                format!("FAILED: {}", first_line(&error.to_string())),
            ],
        };
        println!("| {} |", cells.join(" | "));
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(source, _)| source.zookeeper)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} ZooKeeper versions failed: {} (the errors are above)",
            failed.len(),
            rows.len(),
            failed.join(", ")
        ))
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn cells(report: &CaptureReport) -> Vec<String> {
    let manifest = &report.manifest;
    let fixture = |setting: &str, word: &str| {
        manifest
            .files
            .iter()
            .find(|file| file.setting == setting && file.word == word)
    };
    let dir = zookeeper_versions::fixture_dir(
        &workspace_root().join("tests").join("fixtures"),
        report.source.zookeeper,
    );
    let read = |setting: &str, word: &str| {
        fixture(setting, word)
            .and_then(|file| std::fs::read(dir.join(&file.file)).ok())
            .unwrap_or_default()
    };
    // The default whitelist as seen: which of the three words an unset whitelist allowed.
    let allowed: Vec<&str> = ["srvr", "ruok", "stat"]
        .into_iter()
        .filter(|word| {
            fixture("whitelist-unset", word)
                .is_some_and(|file| !file.expect.starts_with("not-whitelisted"))
        })
        .collect();
    let mode = match parse_reply(Word::Srvr, &read("whitelist-unset", "srvr")) {
        Reply::Serving { mode, .. } => mode.to_string(),
        other => format!("{other:?}"),
    };
    let ruok = |setting: &str| match parse_reply(Word::Ruok, &read(setting, "ruok")) {
        Reply::Imok => "imok".to_owned(),
        Reply::NotWhitelisted { .. } => "refused".to_owned(),
        other => format!("{other:?}"),
    };
    let exit = |setting: &str| {
        manifest
            .zk_wait_runs
            .iter()
            .find(|run| run.setting == setting)
            .map(|run| {
                let code = run.exit.map_or("?".to_owned(), |code| code.to_string());
                (code, run.state.clone())
            })
            .unwrap_or_else(|| ("-".into(), "-".into()))
    };
    let per_setting: Vec<String> = [
        "whitelist-unset",
        "whitelist-ruok-srvr",
        "whitelist-star",
        "whitelist-ruok",
    ]
    .iter()
    .map(|setting| exit(setting).0)
    .collect();
    let (lone_code, lone_state) = exit("lone-member-of-3");
    let (two_code, two_state) = exit("two-of-3");
    vec![
        manifest
            .zookeeper
            .split('-')
            .next()
            .unwrap_or(report.source.zookeeper)
            .to_owned(),
        report.source.short(),
        if allowed.len() == 3 {
            "all three".to_owned()
        } else {
            allowed.join(", ")
        },
        mode,
        format!("{} / {}", ruok("whitelist-unset"), ruok("whitelist-star")),
        match fixture("whitelist-ruok", "srvr") {
            Some(file) if file.expect.starts_with("serving") => "allowed".to_owned(),
            Some(file) => file.expect.clone(),
            None => "-".to_owned(),
        },
        per_setting.join(" / "),
        format!("{lone_code}: {lone_state}"),
        format!("{two_code}: {two_state}"),
    ]
}
