//! The few things zk-wait and port-sync both need and that are the same logic in each:
//! parsing durations such as `250ms`, setting up logging in text or JSON, and waiting for
//! SIGTERM/SIGINT.

pub mod duration;
pub mod logging;
pub mod shutdown;
