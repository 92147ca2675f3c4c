//! What JobManagers and TaskManagers share: a private dir (config, logs, pid file, temp files),
//! the ZooKeeper HA settings, and the launch through the distribution's own script with
//! `start-foreground`, which execs the JVM: the child's pid is the JVM's, so killing the child
//! (on drop, also on panic) kills Flink.

use super::config::{self, Settings};
use super::{Flink, major_version};
use crate::process::{Echo, Process};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The client compiler and the serial collector: a test cluster does little work, and each
/// JVM starts about a second sooner with fewer threads on a 2-core machine.
pub(super) const SMALL_JVM_OPTIONS: &str = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC";

/// Set in the environment of every Flink launch to its private dir. Every process the launch
/// script starts inherits it, also one orphaned when the script is killed half-way (the
/// script runs `java ... BashJavaUtils` before it execs Flink's JVM), so they can all be found
/// and killed.
const OWNER_VARIABLE: &str = "TESTBED_FLINK_DIR";

/// Variables the launch scripts honour that a developer's shell could leak into a test.
const INHERITED_FLINK_VARIABLES: &[&str] = &[
    "FLINK_HOME",
    "_FLINK_HOME_DETERMINED",
    "FLINK_CONF_DIR",
    "FLINK_LIB_DIR",
    "FLINK_OPT_DIR",
    "FLINK_PLUGINS_DIR",
    "FLINK_BIN_DIR",
    "FLINK_LOG_DIR",
    "FLINK_PID_DIR",
    "FLINK_ENV_JAVA_OPTS",
    "FLINK_ENV_JAVA_OPTS_JM",
    "FLINK_ENV_JAVA_OPTS_TM",
    "FLINK_IDENT_STRING",
    "JVM_ARGS",
    "STD_REDIRECT_TO_FILE",
    "HADOOP_CLASSPATH",
];

/// The ZooKeeper HA part of a config, the same for a JobManager and its TaskManagers.
pub(super) struct Ha<'a> {
    pub quorum: &'a str,
    pub cluster_id: &'a str,
    /// `high-availability.storageDir`; `None`: `ha/` in the private dir.
    pub storage_dir: Option<&'a Path>,
}

/// A private dir and the settings every Flink process of the test bed starts from.
pub(super) struct Prepared {
    pub dir: TempDir,
    pub storage_dir: PathBuf,
    pub settings: Settings,
}

/// What to run: a script of a Flink home's `bin/` and the arguments after `start-foreground`.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    /// The distribution's root, or a private copy of it (application mode: its own `usrlib/`).
    pub home: PathBuf,
    /// `jobmanager.sh`, `taskmanager.sh` or `standalone-job.sh`.
    pub script: &'static str,
    pub args: Vec<String>,
}

impl Launch {
    pub(super) fn of(flink: &Flink, script: &'static str) -> Launch {
        Launch {
            home: flink.home().to_path_buf(),
            script,
            args: Vec::new(),
        }
    }

    /// `script` of a Flink home of the process's own at `home`: `bin/` copied (the scripts
    /// find the home from their own path), each jar of `lib/` and the `plugins/` folder linked
    /// to the distribution's, and `usrlib/` holding `jar`. Application mode needs the job's jar
    /// there on the JobManager (its entry point loads the job from it) and on every TaskManager
    /// (nothing ships it to them), as in the article's images.
    pub(super) fn with_user_jar(
        flink: &Flink,
        script: &'static str,
        jar: &Path,
        home: &Path,
    ) -> io::Result<Launch> {
        let bin = home.join("bin");
        let lib = home.join("lib");
        let usrlib = home.join("usrlib");
        for dir in [&bin, &lib, &usrlib] {
            fs::create_dir_all(dir)?;
        }
        for entry in fs::read_dir(flink.home().join("bin"))? {
            let entry = entry?;
            fs::copy(entry.path(), bin.join(entry.file_name()))?;
        }
        // Each jar linked, not the folder: the scripts list `lib/` with `find`, which does not
        // descend into a linked folder.
        for entry in fs::read_dir(flink.home().join("lib"))? {
            let entry = entry?;
            std::os::unix::fs::symlink(entry.path(), lib.join(entry.file_name()))?;
        }
        std::os::unix::fs::symlink(flink.home().join("plugins"), home.join("plugins"))?;
        let name = jar
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{} names no file", jar.display())))?;
        fs::copy(jar, usrlib.join(name))?;
        Ok(Launch {
            home: home.to_path_buf(),
            script,
            args: Vec::new(),
        })
    }
}

pub(super) struct Daemon {
    launch: Launch,
    name: String,
    echo: Echo,
    process: Option<Process>,
    started_at: Instant,
    earlier_runs_output: String,
    // Declared last so it is removed after the process above has been killed.
    dir: TempDir,
}

impl Daemon {
    /// Makes the private dir (`conf/`, `log/`, `pid/`, `tmp/`) and the settings every Flink
    /// process of the test bed gets: HA, temp dirs inside the private dir (a killed JVM cannot
    /// clean up, and `/tmp` would fill with its leftovers), and the distribution's JVM options.
    pub(super) fn prepare(flink: &Flink, prefix: &str, ha: &Ha) -> io::Result<Prepared> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        for sub in ["conf", "log", "pid", "tmp"] {
            fs::create_dir_all(dir.path().join(sub))?;
        }
        let storage_dir = ha
            .storage_dir
            .map_or_else(|| dir.path().join("ha"), Path::to_path_buf);
        fs::create_dir_all(&storage_dir)?;
        let tmp = dir.path().join("tmp");
        let mut settings = Settings::default();
        if major_version(flink.version()) >= 2 {
            settings.set("high-availability.type", "zookeeper");
        } else {
            // 1.16+ also know `high-availability.type`; the old key works in every 1.x.
            settings.set("high-availability", "zookeeper");
        }
        settings.set("high-availability.zookeeper.quorum", ha.quorum);
        settings.set(
            "high-availability.storageDir",
            format!("file://{}", storage_dir.display()),
        );
        settings.set("high-availability.cluster-id", ha.cluster_id);
        settings.set("io.tmp.dirs", tmp.display().to_string());
        let java_options = format!(
            "{} -Djava.io.tmpdir={}",
            config::default_java_options(flink)?,
            tmp.display()
        );
        settings.set("env.java.opts.all", java_options.trim());
        Ok(Prepared {
            dir,
            storage_dir,
            settings,
        })
    }

    /// Writes the config dir and launches the script.
    pub(super) fn start(
        flink: &Flink,
        launch: Launch,
        name: &str,
        echo: Echo,
        dir: TempDir,
        settings: &Settings,
    ) -> io::Result<Daemon> {
        config::write_config_dir(flink, settings, &dir.path().join("conf"))?;
        let mut daemon = Daemon {
            launch,
            name: name.to_owned(),
            echo,
            process: None,
            started_at: Instant::now(),
            earlier_runs_output: String::new(),
            dir,
        };
        daemon.launch()?;
        Ok(daemon)
    }

    fn launch(&mut self) -> io::Result<()> {
        let dir = self.dir.path();
        let mut command = Command::new(self.launch.home.join("bin").join(self.launch.script));
        for variable in INHERITED_FLINK_VARIABLES {
            command.env_remove(variable);
        }
        command
            .arg("start-foreground")
            .args(&self.launch.args)
            .env("FLINK_CONF_DIR", dir.join("conf"))
            .env("FLINK_LOG_DIR", dir.join("log"))
            .env("FLINK_PID_DIR", dir.join("pid"))
            .env(OWNER_VARIABLE, dir)
            .current_dir(dir);
        self.started_at = Instant::now();
        self.process = Some(Process::spawn(&self.name, command, self.echo.clone())?);
        Ok(())
    }

    /// Kills the JVM (SIGKILL, as a crashed container) and starts it again from the same
    /// config dir.
    pub(super) fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    /// Sends SIGTERM (as the kubelet does on pod deletion), waits at most `grace` for the JVM to
    /// end (SIGKILL after it, as the kubelet does after `terminationGracePeriodSeconds`), then
    /// starts it again from the same config dir. Returns how long the JVM took to end.
    pub(super) fn restart_after_sigterm(&mut self, grace: Duration) -> io::Result<Duration> {
        let asked = Instant::now();
        if let Some(process) = self.process.as_mut() {
            process.signal("TERM")?;
            process.wait_timeout(grace)?;
        }
        let ended = asked.elapsed();
        self.stop();
        self.launch()?;
        Ok(ended)
    }

    /// Kills the JVM (SIGKILL) and reaps it, and kills whatever else its launch started; its
    /// output stays in [`Daemon::log`].
    pub(super) fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
            self.earlier_runs_output.push_str(&process.output());
        }
        kill_processes_of(self.dir.path());
    }

    pub(super) fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::is_running)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    pub(super) fn started_at(&self) -> Instant {
        self.started_at
    }

    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Everything the JVM printed (Flink's console log), earlier runs first.
    pub(super) fn log(&self) -> String {
        let current = self
            .process
            .as_ref()
            .map(Process::output)
            .unwrap_or_default();
        format!("{}{current}", self.earlier_runs_output)
    }

    /// The last `lines` lines of [`Daemon::log`], for error messages.
    pub(super) fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// An error if the JVM has ended, with what it printed.
    pub(super) fn check_alive(&mut self) -> io::Result<()> {
        let exit = match self.process.as_mut() {
            None => return Err(io::Error::other(format!("{} is stopped", self.name))),
            Some(process) => process.try_exit()?,
        };
        match exit {
            None => Ok(()),
            Some((status, _)) => Err(io::Error::other(format!(
                "{} exited ({status}) {:.1?} after its start; last lines of its log:\n{}",
                self.name,
                self.started_at.elapsed(),
                self.log_tail(60)
            ))),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Live processes started for the Flink daemon whose private dir is `dir` (its JVM, and the
/// helper JVMs of its launch script), found by the marker in their environment.
pub fn processes_of(dir: &Path) -> Vec<u32> {
    let mut marker = OsString::from(format!("{OWNER_VARIABLE}="));
    marker.push(dir.as_os_str());
    let mut marker = marker.into_encoded_bytes();
    marker.push(0);
    let own_pid = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own_pid)
        .filter(|pid| {
            // A process that ended meanwhile, or another user's, cannot be read: not ours.
            fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ.starts_with(&marker[..])
                    || environ
                        .windows(marker.len() + 1)
                        .any(|window| window[0] == 0 && window[1..] == marker[..])
            })
        })
        .collect()
}

/// SIGKILLs every process of [`processes_of`] until none is left; an orphan killed here is
/// reaped by init, so its environment disappears.
fn kill_processes_of(dir: &Path) {
    for _ in 0..100 {
        let pids = processes_of(dir);
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-s", "KILL"])
            .args(pids.iter().map(u32::to_string))
            .stderr(std::process::Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `ready` every 100 ms until it says yes, the JVM dies, or `limit` passes; returns the
/// time since the (re)start.
pub(super) fn wait_until(
    daemon: &mut Daemon,
    limit: Duration,
    what: &str,
    mut ready: impl FnMut() -> io::Result<bool>,
) -> io::Result<Duration> {
    let deadline = Instant::now() + limit;
    loop {
        daemon.check_alive()?;
        let last = ready();
        if let Ok(true) = last {
            return Ok(daemon.started_at().elapsed());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{}: {what} not within {limit:?} (last check: {last:?}); last lines of its \
                     log:\n{}",
                    daemon.name(),
                    daemon.log_tail(60)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(super) fn default_cluster_id() -> String {
    format!("testbed-{:08x}", fastrand::u32(..))
}
