//! zk-wait's parser and judgement against every captured answer of every ZooKeeper version in
//! `tests/fixtures/zookeeper-*/manifest.json` (written by `cargo xtask zookeeper-versions`, or
//! by hand for a version that cannot be run, marked `"kind": "documented"`). Each manifest says
//! what each answer must be read as (decided from the raw text, not by this parser) and what
//! the real zk-wait binary concluded against the live server; a new capture is tested without
//! touching this file.

use crate::four_letter::{Reply, Word, parse_reply};
use crate::state::{Exchange, judge};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
struct Manifest {
    zookeeper: String,
    kind: String,
    files: Vec<FixtureFile>,
    #[serde(default)]
    zk_wait_runs: Vec<ZkWaitRun>,
}

#[derive(Debug, Deserialize)]
struct FixtureFile {
    file: String,
    word: String,
    setting: String,
    expect: String,
}

#[derive(Debug, Deserialize)]
struct ZkWaitRun {
    setting: String,
    exit: Option<i32>,
    state: String,
}

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Every `zookeeper-*/manifest.json`, with its directory.
fn manifests() -> Vec<(PathBuf, Manifest)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(fixtures_root()).expect("tests/fixtures exists") {
        let dir = entry.expect("a readable dir entry").path();
        let is_zookeeper = dir
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("zookeeper-"));
        let manifest_path = dir.join("manifest.json");
        if !is_zookeeper || !manifest_path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest_path).expect("a readable manifest");
        let manifest: Manifest = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", manifest_path.display()));
        found.push((dir, manifest));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// `stat` answers like `srvr` (a `Mode:` line, or not serving), so it is read as `srvr`.
fn word(name: &str) -> Word {
    match name {
        "ruok" => Word::Ruok,
        "srvr" | "stat" => Word::Srvr,
        other => panic!("a fixture of a word zk-wait cannot read: {other}"),
    }
}

fn read(dir: &Path, file: &FixtureFile) -> Vec<u8> {
    std::fs::read(dir.join(&file.file))
        .unwrap_or_else(|error| panic!("{}: {error}", dir.join(&file.file).display()))
}

/// Whether `reply` is what `expect` says; an expectation this test does not know fails.
fn matches_expectation(reply: &Reply, expect: &str, reported_version: &str) -> bool {
    match expect.split_once(':') {
        Some(("serving", mode)) => matches!(
            reply,
            Reply::Serving { mode: parsed, version }
                if parsed.to_string() == mode
                    && version.as_deref() == Some(reported_version)
        ),
        Some(("not-whitelisted", refused)) => {
            matches!(reply, Reply::NotWhitelisted { word } if word == refused)
        }
        None if expect == "not-serving" => *reply == Reply::NotServing,
        None if expect == "imok" => *reply == Reply::Imok,
        _ => panic!("unknown expectation {expect:?} in a manifest"),
    }
}

#[test]
fn every_fixture_of_every_version_is_read_as_its_manifest_says() {
    let manifests = manifests();
    let lines: BTreeSet<String> = manifests
        .iter()
        .map(|(_, manifest)| {
            manifest
                .zookeeper
                .split('.')
                .take(2)
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect();
    // Guards against a walk that finds nothing and so proves nothing.
    for line in ["3.4", "3.5", "3.6", "3.7", "3.8", "3.9"] {
        assert!(
            lines.contains(line),
            "no fixtures of ZooKeeper {line}: {lines:?}"
        );
    }
    let mut checked = 0;
    let mut failures = Vec::new();
    for (dir, manifest) in &manifests {
        assert!(
            ["captured", "documented"].contains(&manifest.kind.as_str()),
            "{}: kind {:?}",
            dir.display(),
            manifest.kind
        );
        assert!(!manifest.files.is_empty(), "{}: no files", dir.display());
        for file in &manifest.files {
            let reply = parse_reply(word(&file.word), &read(dir, file));
            if !matches_expectation(&reply, &file.expect, &manifest.zookeeper) {
                failures.push(format!(
                    "{}/{}: expected {}, parsed {reply:?}",
                    dir.display(),
                    file.file,
                    file.expect
                ));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 6 * 10, "only {checked} fixtures checked");
}

#[test]
fn each_setting_is_judged_as_the_real_binary_judged_the_live_server() {
    let mut checked = 0;
    for (dir, manifest) in manifests() {
        for run in &manifest.zk_wait_runs {
            let in_setting = |word: &str| {
                manifest
                    .files
                    .iter()
                    .find(|file| file.setting == run.setting && file.word == word)
            };
            // The binary's table shows the first member; in an ensemble that is member 1.
            let srvr = manifest
                .files
                .iter()
                .find(|file| {
                    file.setting == run.setting && file.file.ends_with("srvr-member-1.txt")
                })
                .or_else(|| in_setting("srvr"))
                .unwrap_or_else(|| panic!("{}: no srvr in {}", dir.display(), run.setting));
            let srvr = Exchange::Answered(parse_reply(Word::Srvr, &read(&dir, srvr)));
            let ruok = in_setting("ruok")
                .map(|file| Exchange::Answered(parse_reply(Word::Ruok, &read(&dir, file))));
            let state = judge(&srvr, ruok.as_ref(), false);
            assert_eq!(
                state.to_string(),
                run.state,
                "{} {}: the captured answers are judged otherwise than the live server was",
                dir.display(),
                run.setting
            );
            // A one-server connect string: ready exactly when zk-wait --once exited 0.
            if !run.setting.ends_with("-of-3") {
                assert_eq!(
                    state.is_ready(),
                    run.exit == Some(0),
                    "{} {}: {state} but zk-wait exited {:?}",
                    dir.display(),
                    run.setting,
                    run.exit
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 6 * 6, "only {checked} zk-wait runs checked");
}
