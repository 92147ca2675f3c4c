//! zk-wait: holds a Flink JobManager's pod until its ZooKeeper ensemble is serving.
//!
//! The pure parts (connect strings, four-letter answers, server states, the quorum rule, the
//! report) know nothing of sockets or clocks; `probe` and `wait` are the I/O edges.

pub mod cli;
pub mod connect_string;
pub mod four_letter;
pub mod probe;
pub mod quorum;
pub mod report;
pub mod state;
pub mod wait;

#[cfg(test)]
mod fixture_tests;
