//! The Kubernetes side of port-sync's tests: the test bed's API stand-in holding the JobManager
//! Service as the chart creates it, and a kubeconfig that reaches it with port-sync's own
//! service-account token, so every request goes through the RBAC rules of rbac/role.yaml.

use crate::command;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use testbed::kube_api::{ApiServer, ApiServerConfig};
use testbed::process::Process;

pub const NAMESPACE: &str = "flink";
pub const SERVICE: &str = "flink-jobmanager";
pub const USER: &str = "system:serviceaccount:flink:port-sync";
pub const LIMIT: Duration = Duration::from_secs(60);

/// The stand-in holding the JobManager Service as the chart creates it, and a kubeconfig that
/// reaches it with port-sync's service-account token.
pub struct Bed {
    pub api: ApiServer,
    /// The token file the kubeconfig names, as a projected service-account token would be.
    pub token_file: PathBuf,
    kubeconfig: PathBuf,
    _dir: TempDir,
}

impl Bed {
    pub fn new(config: ApiServerConfig) -> Bed {
        Bed::with_token_lifetime(config, Duration::from_secs(3600))
    }

    /// Like `new`, with port-sync's first token valid only this long.
    pub fn with_token_lifetime(config: ApiServerConfig, lifetime: Duration) -> Bed {
        let api = ApiServer::start(config).unwrap();
        api.create_service(
            NAMESPACE,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": SERVICE, "namespace": NAMESPACE},
                "spec": {"selector": {"app": "flink"}, "ports": [
                    {"name": "rpc", "port": 6123, "targetPort": 6123},
                    {"name": "blob", "port": 6124, "targetPort": 6124},
                    {"name": "rest", "port": 8081, "targetPort": 8081},
                ]}
            }),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        api.rotate_token(&token_file, USER, lifetime).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig, &token_file, NAMESPACE)
            .unwrap();
        Bed {
            api,
            token_file,
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn port_sync(&self, jobmanager: &str, extra: &[&str]) -> Command {
        let mut command = command("port-sync", "PORT_SYNC_");
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(["--service", SERVICE, "--namespace", NAMESPACE])
            .args(["--jobmanager-url", jobmanager])
            .args(["--port", "rpc=jobmanager.rpc.port"])
            .args(["--port", "blob=blob.server.port"])
            .args(extra);
        command
    }

    /// (port, targetPort) of the Service's port `name`.
    pub fn port(&self, name: &str) -> (i64, Value) {
        let service = self.api.get_service(NAMESPACE, SERVICE).unwrap();
        let entry = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name} in {service}"))
            .clone();
        (entry["port"].as_i64().unwrap(), entry["targetPort"].clone())
    }

    pub fn holds(&self, rpc: u16, blob: u16) -> bool {
        self.port("rpc") == (i64::from(rpc), json!(rpc))
            && self.port("blob") == (i64::from(blob), json!(blob))
    }

    /// Waits until the Service holds these ports; the failure shows what it holds.
    pub fn wait_holds(&self, rpc: u16, blob: u16, process: &Process) {
        let deadline = Instant::now() + LIMIT;
        while !self.holds(rpc, blob) {
            assert!(
                Instant::now() < deadline,
                "the Service never held rpc {rpc} and blob {blob}: {:?} {:?}\n{}",
                self.port("rpc"),
                self.port("blob"),
                process.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn patches(&self) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count()
    }
}
