//! The Kubernetes side of everything that runs port-sync here (tests, benchmarks, the demo): the
//! API stand-in holding the JobManager Service as the chart creates it, and a kubeconfig that
//! reaches it with port-sync's own service-account token, so every request goes through the
//! RBAC rules of rbac/role.yaml.

use crate::{ApiServer, ApiServerConfig, RequestRecord};
use serde_json::{Value, json};
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

pub const NAMESPACE: &str = "flink";
/// The Service name rbac/role.yaml grants.
pub const SERVICE: &str = "flink-jobmanager";
pub const USER: &str = "system:serviceaccount:flink:port-sync";

pub struct ServiceBed {
    pub api: ApiServer,
    /// The token file the kubeconfig names, as a projected service-account token would be.
    pub token_file: PathBuf,
    pub kubeconfig: PathBuf,
    _dir: TempDir,
}

impl ServiceBed {
    /// The stand-in with `SERVICE` created, port-sync's first token valid for `token_lifetime`.
    pub fn start(config: ApiServerConfig, token_lifetime: Duration) -> io::Result<ServiceBed> {
        let api = ApiServer::start(config)?;
        let dir = tempfile::Builder::new().prefix("testbed-kube-").tempdir()?;
        let token_file = dir.path().join("token");
        api.rotate_token(&token_file, USER, token_lifetime)?;
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig, &token_file, NAMESPACE)?;
        let bed = ServiceBed {
            api,
            token_file,
            kubeconfig,
            _dir: dir,
        };
        bed.create_jobmanager_service(SERVICE)?;
        Ok(bed)
    }

    /// A Service as the chart renders it: rpc 6123, blob 6124, rest 8081.
    pub fn create_jobmanager_service(&self, name: &str) -> io::Result<()> {
        self.api
            .create_service(
                NAMESPACE,
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"selector": {"app": "flink"}, "ports": [
                        {"name": "rpc", "port": 6123, "targetPort": 6123},
                        {"name": "blob", "port": 6124, "targetPort": 6124},
                        {"name": "rest", "port": 8081, "targetPort": 8081},
                    ]}
                }),
            )
            .map(drop)
            .map_err(|error| io::Error::other(format!("{error:?}")))
    }

    /// (port, targetPort) of port `name` of Service `service`.
    pub fn port_of(&self, service: &str, name: &str) -> Option<(i64, Value)> {
        let object = self.api.get_service(NAMESPACE, service)?;
        let entry = object["spec"]["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)?
            .clone();
        Some((entry["port"].as_i64()?, entry["targetPort"].clone()))
    }

    /// Whether port `name` of `service` has `port` and `targetPort` both equal to `value`.
    pub fn exposes(&self, service: &str, name: &str, value: u16) -> bool {
        self.port_of(service, name) == Some((i64::from(value), json!(value)))
    }

    /// The arguments that point port-sync at `SERVICE`, its rpc and blob ports.
    pub fn port_sync_args(jobmanager_url: &str) -> Vec<String> {
        [
            "--service",
            SERVICE,
            "--namespace",
            NAMESPACE,
            "--jobmanager-url",
            jobmanager_url,
            "--port",
            "rpc=jobmanager.rpc.port",
            "--port",
            "blob=blob.server.port",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    pub fn patches(&self) -> usize {
        self.patch_requests().len()
    }

    /// Every PATCH the stand-in has logged, in order.
    pub fn patch_requests(&self) -> Vec<RequestRecord> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect()
    }
}
