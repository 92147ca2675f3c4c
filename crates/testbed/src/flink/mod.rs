//! Real Apache Flink for tests and the demo: a distribution unpacked from PyPI's wheels into a
//! cache outside the source tree, and JobManagers and TaskManagers in ZooKeeper HA mode, each
//! with its own config dir and loopback addresses, killed on drop like every process here.
//!
//! PyPI is the one registry these machines reach that carries Flink: `apache-flink-libraries`
//! holds the jars (`lib/`, `opt/`, `plugins/`, `bin/bash-java-utils.jar`) and `apache-flink`
//! the launch scripts (`bin/`) and default `conf/`. Unzipping both wheels' `pyflink/` into one
//! folder gives a distribution laid out like the binary tarball.

mod config;
mod daemon;
mod install;
mod jobmanager;
pub mod rest;
mod streaming_job;
mod taskmanager;
mod tls;

pub use daemon::processes_of;
pub use install::{
    InstallActions, cache_dir, install_flink_jars, install_lock, install_source_archive_files,
};
pub use jobmanager::{Application, JobManager, JobManagerConfig};
pub use streaming_job::{ExactlyOnce, StreamingJob, restored_checkpoint};
pub use taskmanager::{TaskManager, TaskManagerConfig};
pub use tls::RestTls;

use std::io;
use std::path::{Path, PathBuf};

/// The Flink release the project targets; the version matrix passes others (1.18 – 2.3).
pub const DEFAULT_VERSION: &str = "2.3.0";

/// An unpacked Flink distribution in the cache.
#[derive(Debug, Clone)]
pub struct Flink {
    version: String,
    home: PathBuf,
    actions: InstallActions,
}

impl Flink {
    /// Makes Flink `version` ready in [`cache_dir`], downloading its wheels only when they are
    /// not cached yet and unpacking them only when no earlier call did. Safe to call from
    /// several processes at once.
    pub fn install(version: &str) -> io::Result<Flink> {
        Flink::install_in(&cache_dir()?, version)
    }

    /// Like [`Flink::install`], with the cache at `cache` (wheels in `cache/wheels`, the
    /// distribution in `cache/flink-VERSION`).
    pub fn install_in(cache: &Path, version: &str) -> io::Result<Flink> {
        let (home, actions) = install::install(cache, version)?;
        Ok(Flink {
            version: version.to_owned(),
            home,
            actions,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// 1 or 2: the config file and a few keys differ between them.
    pub fn major_version(&self) -> u32 {
        major_version(&self.version)
    }

    /// The distribution's root (`bin/`, `conf/`, `lib/`, ...).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// What this call had to do; both false when the distribution was already there.
    pub fn actions(&self) -> InstallActions {
        self.actions
    }
}

fn major_version(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0)
}
