//! `cargo xtask zookeeper-versions`: [`capture`] runs each release of
//! [`fixtures::zookeeper_releases`] in every whitelist setting it has and records what it answers,
//! for zk-wait's parser tests (`tests/fixtures/zookeeper-<version>/`).

use fixtures::process::{Echo, Process};
use fixtures::zookeeper::{Ensemble, EnsembleConfig, Whitelist};
use fixtures::zookeeper_releases::Source;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The folder name of a whitelist setting in a fixture directory.
pub fn setting_name(whitelist: &Whitelist) -> String {
    match whitelist {
        Whitelist::Default => "whitelist-unset".to_owned(),
        Whitelist::Words(words) if words == "*" => "whitelist-star".to_owned(),
        Whitelist::Words(words) => format!("whitelist-{}", words.replace(',', "-")),
    }
}

/// What a fixture directory's `manifest.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The release as `srvr` reports it, e.g. `3.4.14-4c25d480...`.
    pub zookeeper: String,
    /// `captured` from a real server, or `documented` (written by hand from the admin guide).
    pub kind: String,
    pub source: String,
    pub documented_default_whitelist: String,
    /// UTC, when captured.
    pub captured_at: String,
    pub java: String,
    pub command: String,
    pub files: Vec<FixtureFile>,
    /// zk-wait `--once` (the built binary) against the live server of each setting.
    pub zk_wait_runs: Vec<ZkWaitRun>,
}

/// One captured answer and what it must be read as.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FixtureFile {
    /// Relative to the manifest.
    pub file: String,
    /// The word that was sent.
    pub word: String,
    /// The server's setting: `whitelist-unset`, `whitelist-ruok-srvr`, ..., or `lone-member-of-3`,
    /// `two-of-3` (an ensemble with `4lw.commands.whitelist=*`).
    pub setting: String,
    /// What the answer must be read as, decided from the raw text without zk-wait's parser:
    /// `serving:<mode>`, `not-serving`, `imok`, `not-whitelisted:<word>`.
    pub expect: String,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZkWaitRun {
    pub setting: String,
    /// zk-wait's exit code: 0 ready, 1 not ready, 2 unjudgeable.
    pub exit: Option<i32>,
    /// The STATE and RUOK cells of its table (the first server's row).
    pub state: String,
    pub ruok: String,
}

/// Classifies a raw answer by its text alone, independent of zk-wait's parser.
pub fn classify(answer: &str) -> String {
    const REFUSED: &str = " is not executed because it is not in the whitelist.";
    let trimmed = answer.trim();
    if trimmed == "This ZooKeeper instance is not currently serving requests" {
        return "not-serving".into();
    }
    if trimmed == "imok" {
        return "imok".into();
    }
    if let Some(word) = trimmed.strip_suffix(REFUSED) {
        return format!("not-whitelisted:{word}");
    }
    if let Some(mode) = answer.lines().find_map(|line| line.strip_prefix("Mode: ")) {
        return format!("serving:{}", mode.trim());
    }
    format!(
        "unclassified:{}",
        trimmed.chars().take(40).collect::<String>()
    )
}

/// What [`capture`] saw, for the table.
#[derive(Debug, Clone)]
pub struct CaptureReport {
    pub source: Source,
    pub manifest: Manifest,
}

/// Words asked in every setting: the two zk-wait asks, and `stat` (like `srvr`, and refused by
/// the default whitelist since 3.5.3, so it shows the refusal text).
const WORDS: &[&str] = &["srvr", "ruok", "stat"];

/// A JVM that is slow to start on a loaded 2-core machine still starts well within this.
const START_LIMIT: Duration = Duration::from_secs(90);

/// Starts `source` in each of its whitelist settings (standalone) and as a 3-member ensemble
/// (`*`), records every answer into `out_dir` (replacing what was there) with a manifest, and
/// runs the zk-wait binary at `zk_wait` with `--once` against each. At most two JVMs at once.
pub fn capture(source: &Source, zk_wait: &Path, out_dir: &Path) -> io::Result<CaptureReport> {
    let server = source.install()?;
    let scratch = tempfile::Builder::new()
        .prefix("zk-capture-")
        .tempdir_in(out_dir.parent().unwrap_or(Path::new(".")))?;
    let mut files = Vec::new();
    let mut runs = Vec::new();
    let mut reported_version = String::new();

    for whitelist in source.whitelist_settings() {
        let setting = setting_name(&whitelist);
        let mut ensemble = Ensemble::new(
            EnsembleConfig::standalone()
                .with_whitelist(whitelist.clone())
                .server(server.clone()),
        )?;
        ensemble.start(0)?;
        wait_standalone_up(&ensemble)?;
        for word in WORDS {
            let answer = ensemble.ask(0, word)?;
            if let Some(version) = answer
                .lines()
                .find_map(|line| line.strip_prefix("Zookeeper version: "))
            {
                reported_version = version.split(',').next().unwrap_or("").trim().to_owned();
            }
            files.push(record(
                scratch.path(),
                &setting,
                word,
                &answer,
                &format!(
                    "`{word}` to a standalone server, {}",
                    describe_setting(&whitelist)
                ),
            )?);
        }
        runs.push(run_zk_wait(zk_wait, &ensemble, &setting)?);
    }

    // A 3-member ensemble allowing every word: one member alone, then two.
    let mut ensemble = Ensemble::new(
        EnsembleConfig::ensemble(3)
            .whitelist("*")
            .server(server.clone()),
    )?;
    ensemble.start(0)?;
    ensemble.wait_listening(0, START_LIMIT)?;
    // Let it settle into looking for peers (it never serves alone).
    std::thread::sleep(Duration::from_millis(1500));
    let setting = "lone-member-of-3";
    for word in WORDS {
        let answer = ensemble.ask(0, word)?;
        files.push(record(
            scratch.path(),
            setting,
            word,
            &answer,
            &format!(
                "`{word}` to the only running member of a 3-member ensemble (whitelist `*`): no \
                 quorum"
            ),
        )?);
    }
    runs.push(run_zk_wait(zk_wait, &ensemble, setting)?);
    ensemble.start(1)?;
    ensemble.wait_majority_serving(START_LIMIT)?;
    let setting = "two-of-3";
    for index in 0..2 {
        let answer = ensemble.ask(index, "srvr")?;
        let name = format!("srvr-member-{}", index + 1);
        files.push(record(
            scratch.path(),
            setting,
            &name,
            &answer,
            &format!(
                "`srvr` to member {} of a 3-member ensemble with two members running (a \
                 majority: one leads, one follows)",
                index + 1
            ),
        )?);
    }
    runs.push(run_zk_wait(zk_wait, &ensemble, setting)?);
    drop(ensemble);

    let manifest = Manifest {
        zookeeper: reported_version,
        kind: "captured".into(),
        source: source.describe(),
        documented_default_whitelist: source.documented_default_whitelist().into(),
        captured_at: utc_now(),
        java: java_version(),
        command: format!(
            "cargo xtask zookeeper-versions --versions {}",
            source.zookeeper
        ),
        files,
        zk_wait_runs: runs,
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(io::Error::other)? + "\n";
    std::fs::write(scratch.path().join("manifest.json"), text)?;
    // Replace the old capture of this version (its other files, such as hand-kept ones, stay).
    std::fs::create_dir_all(out_dir)?;
    for entry in std::fs::read_dir(scratch.path())? {
        let entry = entry?;
        let target = out_dir.join(entry.file_name());
        if target.is_dir() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::rename(entry.path(), target)?;
    }
    Ok(CaptureReport {
        source: *source,
        manifest,
    })
}

fn describe_setting(whitelist: &Whitelist) -> String {
    match whitelist {
        Whitelist::Default => "`4lw.commands.whitelist` unset (the default)".to_owned(),
        Whitelist::Words(words) => format!("`4lw.commands.whitelist={words}`"),
    }
}

fn record(
    dir: &Path,
    setting: &str,
    name: &str,
    answer: &str,
    what: &str,
) -> io::Result<FixtureFile> {
    let relative = format!("{setting}/{name}.txt");
    let path = dir.join(&relative);
    std::fs::create_dir_all(path.parent().expect("a file in a setting dir"))?;
    std::fs::write(&path, answer)?;
    let word = name.split('-').next().unwrap_or(name).to_owned();
    Ok(FixtureFile {
        file: relative,
        word,
        setting: setting.to_owned(),
        expect: classify(answer),
        what: what.to_owned(),
    })
}

/// A standalone server is up when `srvr` reports a `Mode:`; where the whitelist refuses
/// `srvr` (3.4 with `ruok` only), when `ruok` says `imok` and a moment has passed.
fn wait_standalone_up(ensemble: &Ensemble) -> io::Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    while Instant::now() < deadline {
        if let Ok(answer) = ensemble.ask(0, "srvr") {
            if answer.contains("Mode:") {
                return Ok(());
            }
            if classify(&answer).starts_with("not-whitelisted")
                && ensemble.ask(0, "ruok").is_ok_and(|ruok| ruok == "imok")
            {
                std::thread::sleep(Duration::from_millis(1000));
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::other(format!(
        "the server did not come up within {START_LIMIT:?}:\n{}",
        ensemble.output(0)
    )))
}

fn run_zk_wait(zk_wait: &Path, ensemble: &Ensemble, setting: &str) -> io::Result<ZkWaitRun> {
    let mut command = Command::new(zk_wait);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ZK_WAIT_") {
            command.env_remove(key);
        }
    }
    command.args(["--zookeeper", &ensemble.connect_string(), "--once"]);
    let mut process = Process::spawn("zk-wait", command, Echo::Quiet)?;
    let status = process
        .wait_timeout(Duration::from_secs(60))?
        .ok_or_else(|| io::Error::other(format!("zk-wait --once hung:\n{}", process.output())))?;
    let first = ensemble.client_address(0).to_string();
    let stdout = process.stdout();
    let row = stdout
        .lines()
        .find(|line| line.starts_with(&first))
        .unwrap_or_default();
    // SERVER  ADDRESS  STATE...  RUOK: columns are separated by two or more spaces.
    let cells: Vec<&str> = row
        .split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .collect();
    Ok(ZkWaitRun {
        setting: setting.to_owned(),
        exit: status.code(),
        state: cells.get(2).copied().unwrap_or("?").to_owned(),
        ruok: cells.get(3).copied().unwrap_or("?").to_owned(),
    })
}

fn java_version() -> String {
    Command::new("java")
        .arg("-version")
        .output()
        .ok()
        .and_then(|output| {
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The fixture directory of `version` under the workspace's `tests/fixtures`.
pub fn fixture_dir(fixtures: &Path, version: &str) -> PathBuf {
    fixtures.join(format!("zookeeper-{version}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_their_text() {
        assert_eq!(classify("imok"), "imok");
        assert_eq!(
            classify("ruok is not executed because it is not in the whitelist.\n"),
            "not-whitelisted:ruok"
        );
        assert_eq!(
            classify("This ZooKeeper instance is not currently serving requests\n"),
            "not-serving"
        );
        assert_eq!(
            classify("Zookeeper version: x\nMode: leader\n"),
            "serving:leader"
        );
        assert!(classify("hello").starts_with("unclassified:"));
    }
}
