//! port-sync: keeps a Kubernetes Service's ports equal to the live RPC and blob ports of the
//! Flink JobManager beside it.
//!
//! Pure cores (`ports`, `plan`, `metrics`, `flink::parse_config`, the pacing rules in `sync`,
//! `serve::answer`, `service::describe_status`) know nothing of sockets, clocks or Kubernetes.
//! `flink::JobManager`, `service::ServiceHandle` and `serve::serve` are the I/O edges; `sync`
//! (the loop) and `once` (one round) drive them, taking the ports from any `flink::PortSource`
//! and the Service through any `kube::Client`, so that their tests run in process against
//! `mock_api`; `app` wires the command line to them.

pub mod app;
pub mod cli;
pub mod flink;
pub mod metrics;
#[cfg(test)]
mod mock_api;
pub mod once;
pub mod plan;
pub mod ports;
pub mod serve;
pub mod service;
pub mod sync;
