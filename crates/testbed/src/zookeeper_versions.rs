//! Real ZooKeeper servers of each release line 3.4 – 3.9, from what these machines can fetch:
//! Debian's `zookeeperd` (3.8), the ZooKeeper that Flink ships shaded in its PyPI archives
//! (3.4, 3.5, 3.7), and the plain ZooKeeper jars inside PyPI's `pyspark` archives (3.6, 3.9).
//! Each runs through [`crate::zookeeper::Ensemble`] (same configs, ports and process handling as
//! Debian's), and [`capture`] records what each answers in every whitelist setting it has, for
//! zk-wait's parser tests (`tests/fixtures/zookeeper-<version>/`) and `cargo xtask
//! zookeeper-versions`.

use crate::flink::{Flink, cache_dir, install_flink_jars, install_source_archive_files};
use crate::process::{Echo, Process};
use crate::zookeeper::{Ensemble, EnsembleConfig, JarServer, Server, Whitelist};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Flink shades ZooKeeper under this package.
const FLINK_SHADED_PREFIX: &str = "org.apache.flink.shaded.zookeeper3.";

/// Where one ZooKeeper release comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Debian's `zookeeperd` package (`apt-get install zookeeperd`).
    Debian,
    /// An installed Flink distribution (`Flink::install`), ZooKeeper shaded in `flink-dist`.
    Flink { flink: &'static str },
    /// Only the jars of PyPI's `apache-flink-libraries` source archive: `lib/`'s
    /// `flink-shaded-zookeeper-<version>.jar`, plus `flink-dist` (slf4j) and log4j.
    FlinkJars { flink: &'static str },
    /// The plain ZooKeeper jars and their dependencies in PyPI's `pyspark` source archive.
    PySpark { pyspark: &'static str },
}

/// One ZooKeeper release that can be run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The release, as its `srvr` reports it (before the `-<commit>`).
    pub zookeeper: &'static str,
    pub origin: Origin,
    /// The download the first install makes, in MB (0 when it reuses something the tests
    /// install anyway).
    pub download_mb: u32,
}

/// Oldest first: one release of each line from 3.4 to 3.9.
pub const SOURCES: &[Source] = &[
    Source {
        zookeeper: "3.4.14",
        origin: Origin::FlinkJars { flink: "1.14.6" },
        download_mb: 221,
    },
    Source {
        zookeeper: "3.5.9",
        origin: Origin::FlinkJars { flink: "1.16.3" },
        download_mb: 228,
    },
    Source {
        zookeeper: "3.6.3",
        origin: Origin::PySpark { pyspark: "3.5.9" },
        download_mb: 318,
    },
    Source {
        zookeeper: "3.7.2",
        origin: Origin::Flink { flink: "2.3.0" },
        download_mb: 0,
    },
    Source {
        zookeeper: "3.8.0",
        origin: Origin::Debian,
        download_mb: 0,
    },
    Source {
        zookeeper: "3.9.5",
        origin: Origin::PySpark { pyspark: "4.3.0" },
        download_mb: 456,
    },
];

/// The jars a pyspark archive must give for a ZooKeeper server (its `deps/jars/`).
const PYSPARK_JARS: &[&str] = &[
    "jars/zookeeper-*.jar",
    "jars/netty-*.jar",
    "jars/slf4j-api-*.jar",
    "jars/metrics-core-*.jar",
    "jars/commons-io-*.jar",
    "jars/snappy-java-*.jar",
    "jars/log4j-api-*.jar",
    "jars/log4j-core-*.jar",
    "jars/log4j-slf4j*-impl-*.jar",
];

/// The jars of an `apache-flink-libraries` archive that a shaded ZooKeeper server needs.
const FLINK_JARS: &[&str] = &[
    "lib/flink-shaded-zookeeper-*.jar",
    "lib/flink-dist*.jar",
    "lib/log4j-*.jar",
];

impl Source {
    /// `3.4.14` -> `(3, 4, 14)`.
    pub fn numbers(&self) -> (u32, u32, u32) {
        let mut parts = self
            .zookeeper
            .split('.')
            .map(|part| part.parse::<u32>().unwrap_or(0));
        (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        )
    }

    /// `3.4`.
    pub fn line(&self) -> String {
        let (major, minor, _) = self.numbers();
        format!("{major}.{minor}")
    }

    /// Where the server comes from, for tables and manifests.
    pub fn describe(&self) -> String {
        match self.origin {
            Origin::Debian => "Debian 12 zookeeperd (zkServer.sh)".to_owned(),
            Origin::Flink { flink } => {
                format!("shaded in flink-dist-{flink}.jar (PyPI apache-flink-libraries {flink})")
            }
            Origin::FlinkJars { flink } => format!(
                "flink-shaded-zookeeper-{}.jar (PyPI apache-flink-libraries {flink}, lib/)",
                self.zookeeper
            ),
            Origin::PySpark { pyspark } => format!(
                "zookeeper-{}.jar (PyPI pyspark {pyspark} source archive, deps/jars/)",
                self.zookeeper
            ),
        }
    }

    /// Short form for the table.
    pub fn short(&self) -> String {
        match self.origin {
            Origin::Debian => "Debian zookeeperd".to_owned(),
            Origin::Flink { flink } | Origin::FlinkJars { flink } => format!("Flink {flink}"),
            Origin::PySpark { pyspark } => format!("pyspark {pyspark}"),
        }
    }

    /// `4lw.commands.whitelist` came with 3.4.10 and 3.5.3: before, every word was allowed.
    pub fn has_whitelist(&self) -> bool {
        let (_, minor, patch) = self.numbers();
        match minor {
            0..=3 => false,
            4 => patch >= 10,
            5 => patch >= 3,
            _ => true,
        }
    }

    /// What an unset whitelist allows, as the admin guide of that line documents it.
    pub fn documented_default_whitelist(&self) -> &'static str {
        let (_, minor, _) = self.numbers();
        if !self.has_whitelist() {
            "none (every word allowed)"
        } else if minor == 4 {
            "* (every word but wchc, wchp)"
        } else {
            "srvr"
        }
    }

    /// The whitelist settings this version can be started with.
    pub fn whitelist_settings(&self) -> Vec<Whitelist> {
        if !self.has_whitelist() {
            return vec![Whitelist::Default];
        }
        vec![
            Whitelist::Default,
            Whitelist::Words("ruok,srvr".into()),
            Whitelist::Words("*".into()),
            Whitelist::Words("ruok".into()),
        ]
    }

    /// Downloads (once, into the cache) and unpacks what this version needs; returns how to
    /// start it.
    pub fn install(&self) -> io::Result<Server> {
        match self.origin {
            Origin::Debian => Ok(Server::Debian),
            Origin::Flink { flink } => {
                let flink = Flink::install(flink)?;
                Ok(Server::Jars(JarServer {
                    class_path: vec![jars_in(&flink.home().join("lib"))],
                    package_prefix: FLINK_SHADED_PREFIX.to_owned(),
                }))
            }
            Origin::FlinkJars { flink } => {
                let name = format!("zookeeper-{}-flink-{flink}", self.zookeeper);
                let home = install_flink_jars(&cache_dir()?, flink, &name, FLINK_JARS)?;
                Ok(Server::Jars(JarServer {
                    class_path: vec![jars_in(&home.join("lib"))],
                    package_prefix: FLINK_SHADED_PREFIX.to_owned(),
                }))
            }
            Origin::PySpark { pyspark } => {
                let name = format!("zookeeper-{}-pyspark-{pyspark}", self.zookeeper);
                let home = install_source_archive_files(
                    &cache_dir()?,
                    "pyspark",
                    pyspark,
                    &name,
                    PYSPARK_JARS,
                )?;
                Ok(Server::Jars(JarServer {
                    class_path: vec![jars_in(&home.join("jars"))],
                    package_prefix: String::new(),
                }))
            }
        }
    }
}

fn jars_in(dir: &Path) -> String {
    format!("{}/*", dir.display())
}

/// The source of `version` (`3.7.2`, or a line such as `3.7`).
pub fn source(version: &str) -> Option<&'static Source> {
    SOURCES
        .iter()
        .find(|source| source.zookeeper == version || source.line() == version)
}

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
    fn whitelist_history() {
        let at = |zookeeper| Source {
            zookeeper,
            origin: Origin::Debian,
            download_mb: 0,
        };
        assert!(!at("3.4.9").has_whitelist());
        assert!(at("3.4.10").has_whitelist());
        assert!(!at("3.5.2").has_whitelist());
        assert!(at("3.5.3").has_whitelist());
        assert_eq!(
            at("3.4.14").documented_default_whitelist(),
            "* (every word but wchc, wchp)"
        );
        assert_eq!(at("3.9.5").documented_default_whitelist(), "srvr");
        assert_eq!(at("3.4.9").whitelist_settings(), vec![Whitelist::Default]);
        assert_eq!(at("3.6.3").whitelist_settings().len(), 4);
        assert_eq!(source("3.7").map(|s| s.zookeeper), Some("3.7.2"));
    }

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
