//! The project's test bed, used by tests, benchmarks and the demo: real ZooKeeper servers from
//! Debian's `zookeeperd` (3.8) and, for the version checks, from the ZooKeeper jars inside
//! PyPI's Flink and pyspark archives (3.4 – 3.9), real Flink from PyPI's wheels, the Kubernetes API stand-in (the one
//! part that cannot be real here) with the JobManager Service, a fake JobManager REST and TCP
//! peers that misbehave on purpose, and the process handling that makes sure every server a
//! test starts is stopped when the test ends, also on panic.

pub mod dns;
pub mod failover;
pub mod fake_jobmanager;
pub mod fake_peer;
pub mod flink;
pub mod forwarder;
pub mod helm;
pub mod image;
pub mod kube_api;
pub mod load;
pub mod matrix;
pub mod pods;
pub mod ports;
pub mod process;
pub mod scenario;
pub mod service_bed;
pub mod soak;
pub mod stand_in_images;
pub mod zookeeper;
pub mod zookeeper_versions;
