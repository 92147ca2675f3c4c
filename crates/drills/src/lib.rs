//! Whole programs over the fixtures and the Kubernetes API stand-in, each a scenario with a
//! verdict and a report: the demo's [`scenario`], the streaming job's [`failover`] and its
//! [`zookeeper_restart`], the fault
//! [`soak`], the [`load`] run, the Flink version [`matrix`] and the [`zookeeper_versions`]
//! capture. `cargo xtask` wraps them as commands; `tests/` runs the short forms in CI.
//!
//! A drill must not grow reusable servers or API behaviour (those belong in `fixtures` and
//! `kube-stand-in`, where every test can use them), nor printing beyond its report: xtask
//! decides what to show.

pub mod failover;
pub mod load;
pub mod matrix;
pub mod scenario;
pub mod soak;
pub mod zookeeper_restart;
pub mod zookeeper_versions;
