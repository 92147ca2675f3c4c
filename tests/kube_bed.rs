//! port-sync's tests' view of the test bed's `ServiceBed`: the stand-in holding the JobManager
//! Service, and port-sync commands pointed at it.

use crate::command;
use fixtures::process::Process;
use kube_stand_in::ApiServerConfig;
use kube_stand_in::service_bed::ServiceBed;
pub use kube_stand_in::service_bed::{NAMESPACE, SERVICE, USER};
use std::ops::Deref;
use std::process::Command;
use std::time::{Duration, Instant};

pub const LIMIT: Duration = Duration::from_secs(60);

pub struct Bed(ServiceBed);

impl Deref for Bed {
    type Target = ServiceBed;

    fn deref(&self) -> &ServiceBed {
        &self.0
    }
}

impl Bed {
    pub fn new(config: ApiServerConfig) -> Bed {
        Bed::with_token_lifetime(config, Duration::from_secs(3600))
    }

    /// Like `new`, with port-sync's first token valid only this long.
    pub fn with_token_lifetime(config: ApiServerConfig, lifetime: Duration) -> Bed {
        Bed(ServiceBed::start(config, lifetime).expect("the API stand-in starts"))
    }

    pub fn port_sync(&self, jobmanager: &str, extra: &[&str]) -> Command {
        let mut command = command("port-sync", "PORT_SYNC_");
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(ServiceBed::port_sync_args(jobmanager))
            .args(extra);
        command
    }

    /// (port, targetPort) of the Service's port `name`.
    pub fn port(&self, name: &str) -> (i64, serde_json::Value) {
        self.port_of(SERVICE, name).unwrap_or_else(|| {
            panic!(
                "no port {name} in {:?}",
                self.api.get_service(NAMESPACE, SERVICE)
            )
        })
    }

    pub fn holds(&self, rpc: u16, blob: u16) -> bool {
        self.exposes(SERVICE, "rpc", rpc) && self.exposes(SERVICE, "blob", blob)
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
}
