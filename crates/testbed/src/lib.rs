//! The project's test bed: real ZooKeeper servers from Debian's `zookeeperd`, fake TCP peers
//! that misbehave on purpose, and the process handling that makes sure every server a test
//! starts is stopped when the test ends, also on panic. Tests, benchmarks and the demo use it.

pub mod fake_jobmanager;
pub mod fake_peer;
pub mod flink;
pub mod kube_api;
pub mod ports;
pub mod process;
pub mod service_bed;
pub mod zookeeper;
