//! Real ZooKeeper servers from Debian's `zookeeperd` (3.8, on the machine's Java), or of another
//! version from jars (`zookeeper_versions`: ZooKeeper inside Flink's and Spark's PyPI archives),
//! each with its own config, data dir and loopback ports: a standalone server, or an ensemble
//! whose members a test starts and stops to make a quorum appear and disappear.

use crate::ports::free_port;
use crate::process::{Echo, Process};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Debian's launcher; `start-foreground` execs the JVM, so killing the child kills ZooKeeper.
pub const ZK_SERVER_SH: &str = "/usr/share/zookeeper/bin/zkServer.sh";

/// A small heap and the client compiler: a test server holds a few znodes, and starts faster.
/// The class path repeats zkServer.sh's and adds the servlet API: Debian's zookeeper.jar names
/// Jetty in its manifest but not servlet-api.jar, so without it the AdminServer silently falls
/// back to a dummy. The JVM takes the last `-cp`, and these flags come after the script's.
const SERVER_JVMFLAGS: &str = "-Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/servlet-api.jar";

/// The JVM flags of a jar-started server: as Debian's, plus no log4j 1 JMX beans (3.4 registers
/// them by default and fails without log4j 1 on the class path; later versions ignore it), and
/// log4j 2's default console configuration at INFO (it has no config file here), so that a
/// failure message can show what the server said.
const JAR_SERVER_JVMFLAGS: &[&str] = &[
    "-Xmx128m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Dzookeeper.jmx.log4j.disable=true",
    "-Dlog4j2.level=INFO",
];

/// Which ZooKeeper a member runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Server {
    /// Debian's `zookeeperd` through its `zkServer.sh` (3.8.0 on Debian 12).
    #[default]
    Debian,
    /// `java -cp CLASS_PATH <package_prefix>org.apache.zookeeper.server.quorum.QuorumPeerMain
    /// zoo.cfg`, which runs a standalone server or an ensemble member as the config says.
    Jars(JarServer),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JarServer {
    /// Java class path entries; `dir/*` takes every jar in `dir`.
    pub class_path: Vec<String>,
    /// What stands before `org.apache.zookeeper` in the class names: empty for ZooKeeper's own
    /// jars, `org.apache.flink.shaded.zookeeper3.` for the copy Flink shades.
    pub package_prefix: String,
}

impl JarServer {
    pub fn main_class(&self) -> String {
        format!(
            "{}org.apache.zookeeper.server.quorum.QuorumPeerMain",
            self.package_prefix
        )
    }

    /// The `java` command that starts a server with the config at `config`.
    pub fn command(&self, config: &Path) -> Command {
        let mut command = Command::new("java");
        command
            .args(JAR_SERVER_JVMFLAGS)
            .arg("-cp")
            .arg(self.class_path.join(":"))
            .arg(self.main_class())
            .arg(config);
        command
    }
}

/// The four-letter words a server allows (`4lw.commands.whitelist`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whitelist {
    /// Not set: ZooKeeper's default, `srvr` only.
    Default,
    /// Exactly these words, e.g. `"srvr,ruok"`, `"ruok"` or `"*"`.
    Words(String),
}

#[derive(Debug, Clone)]
pub struct EnsembleConfig {
    /// 1 makes a standalone server; more make an ensemble.
    pub members: usize,
    pub whitelist: Whitelist,
    /// The Jetty AdminServer; off unless a test is about it (two on one port collide, so each
    /// member gets its own when on).
    pub admin_server: bool,
    /// ZooKeeper's tick; 500 ms lets a second member make a majority serve in about a second.
    pub tick_ms: u32,
    /// Debian's 3.8 unless set.
    pub server: Server,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            members: 1,
            whitelist: Whitelist::Default,
            admin_server: false,
            tick_ms: 500,
            server: Server::Debian,
        }
    }
}

impl EnsembleConfig {
    pub fn standalone() -> Self {
        EnsembleConfig::default()
    }

    pub fn ensemble(members: usize) -> Self {
        EnsembleConfig {
            members,
            ..EnsembleConfig::default()
        }
    }

    pub fn whitelist(mut self, words: &str) -> Self {
        self.whitelist = Whitelist::Words(words.to_owned());
        self
    }

    pub fn admin_server(mut self, on: bool) -> Self {
        self.admin_server = on;
        self
    }

    pub fn server(mut self, server: Server) -> Self {
        self.server = server;
        self
    }

    /// Sets the whitelist as given: `Whitelist::Default` leaves it unset.
    pub fn with_whitelist(mut self, whitelist: Whitelist) -> Self {
        self.whitelist = whitelist;
        self
    }
}

struct Member {
    id: usize,
    client_port: u16,
    admin_port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    process: Option<Process>,
}

/// An ensemble whose members are written to disk at once and started one by one on demand.
/// Dropping it stops every member and removes its files.
pub struct Ensemble {
    members: Vec<Member>,
    server: Server,
    // Dropped last, after the members' processes.
    dir: TempDir,
}

impl Ensemble {
    /// Writes each member's config and data dir; starts nothing.
    pub fn new(config: EnsembleConfig) -> io::Result<Ensemble> {
        if config.server == Server::Debian {
            check_installed()?;
        }
        assert!(config.members >= 1, "an ensemble has at least one member");
        let dir = tempfile::Builder::new().prefix("testbed-zk-").tempdir()?;
        let quorum_ports: Vec<(u16, u16)> = (0..config.members)
            .map(|_| (free_port(), free_port()))
            .collect();
        let mut members = Vec::new();
        for id in 1..=config.members {
            let member_dir = dir.path().join(format!("zk-{id}"));
            let data_dir = member_dir.join("data");
            std::fs::create_dir_all(&data_dir)?;
            std::fs::write(data_dir.join("myid"), format!("{id}\n"))?;
            let client_port = free_port();
            let admin_port = free_port();
            let config_path = member_dir.join("zoo.cfg");
            let text = member_config(&config, &data_dir, client_port, admin_port, &quorum_ports);
            std::fs::write(&config_path, text)?;
            members.push(Member {
                id,
                client_port,
                admin_port,
                config_path,
                log_path: member_dir.join("server.log"),
                process: None,
            });
        }
        Ok(Ensemble {
            members,
            server: config.server,
            dir,
        })
    }

    /// A standalone server, already serving.
    pub fn start_standalone(config: EnsembleConfig) -> io::Result<Ensemble> {
        let mut ensemble = Ensemble::new(EnsembleConfig {
            members: 1,
            ..config
        })?;
        ensemble.start(0)?;
        // ZooKeeper 3.5.3+ always allows srvr, whatever the whitelist says (zkServer.sh
        // needs it), so it can confirm serving here in every whitelist setting.
        ensemble.wait_serving(0, Duration::from_secs(60))?;
        Ok(ensemble)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...`, as Flink's quorum setting and zk-wait take it.
    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_address(&self, index: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.members[index].client_port))
    }

    pub fn admin_port(&self, index: usize) -> u16 {
        self.members[index].admin_port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts member `index` (0-based) in the background; returns once its JVM is launched.
    pub fn start(&mut self, index: usize) -> io::Result<()> {
        let member = &mut self.members[index];
        if member.process.is_some() {
            return Ok(());
        }
        let mut command = match &self.server {
            Server::Debian => {
                let mut command = Command::new(ZK_SERVER_SH);
                command
                    .arg("start-foreground")
                    .arg(&member.config_path)
                    .env("SERVER_JVMFLAGS", SERVER_JVMFLAGS);
                command
            }
            Server::Jars(jars) => jars.command(&member.config_path),
        };
        command.current_dir(
            member
                .config_path
                .parent()
                .expect("configs live in a member dir"),
        );
        let name = format!("zookeeper-{}", member.id);
        let process = Process::spawn(&name, command, Echo::Quiet)?;
        member.process = Some(process);
        Ok(())
    }

    /// Stops member `index` at once (SIGKILL, as a node failure would).
    pub fn stop(&mut self, index: usize) {
        if let Some(mut process) = self.members[index].process.take() {
            process.kill();
            let _ = std::fs::write(&self.members[index].log_path, process.output());
        }
    }

    pub fn start_all(&mut self) -> io::Result<()> {
        (0..self.len()).try_for_each(|index| self.start(index))
    }

    /// What member `index` answers to `word` right now.
    pub fn ask(&self, index: usize, word: &str) -> io::Result<String> {
        four_letter_word(self.client_address(index), word, Duration::from_secs(2))
    }

    pub fn is_serving(&self, index: usize) -> bool {
        self.ask(index, "srvr")
            .is_ok_and(|answer| answer.contains("Mode:"))
    }

    /// Waits until member `index` reports a `Mode:`; the error carries its output.
    pub fn wait_serving(&self, index: usize, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.is_serving(index) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "ZooKeeper member {} did not serve within {limit:?}; last answer: {:?}\n{}",
            index + 1,
            self.ask(index, "srvr"),
            self.output(index)
        )))
    }

    /// Waits until more than half of the members report a `Mode:`.
    pub fn wait_majority_serving(&self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.serving_count() > self.len() / 2 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "no majority of the {} ZooKeeper members served within {limit:?}",
            self.len()
        )))
    }

    pub fn serving_count(&self) -> usize {
        (0..self.len())
            .filter(|&index| self.is_serving(index))
            .count()
    }

    /// Waits until member `index` accepts connections (it may not serve yet).
    pub fn wait_listening(&self, index: usize, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self
                .ask(index, "srvr")
                .is_ok_and(|answer| !answer.is_empty())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "ZooKeeper member {} did not listen within {limit:?}\n{}",
            index + 1,
            self.output(index)
        )))
    }

    /// What member `index` printed, for failure messages.
    pub fn output(&self, index: usize) -> String {
        match &self.members[index].process {
            Some(process) => process.output(),
            None => std::fs::read_to_string(&self.members[index].log_path).unwrap_or_default(),
        }
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut process) = member.process.take() {
                process.kill();
            }
        }
    }
}

fn member_config(
    config: &EnsembleConfig,
    data_dir: &Path,
    client_port: u16,
    admin_port: u16,
    quorum_ports: &[(u16, u16)],
) -> String {
    let mut text = format!(
        "tickTime={}\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={client_port}\n\
         clientPortAddress=127.0.0.1\nadmin.enableServer={}\nadmin.serverAddress=127.0.0.1\n\
         admin.serverPort={admin_port}\n",
        config.tick_ms,
        data_dir.display(),
        config.admin_server,
    );
    if let Whitelist::Words(words) = &config.whitelist {
        let _ = writeln!(text, "4lw.commands.whitelist={words}");
    }
    if quorum_ports.len() > 1 {
        for (id, (peer, election)) in quorum_ports.iter().enumerate() {
            let _ = writeln!(text, "server.{}=127.0.0.1:{peer}:{election}", id + 1);
        }
    }
    text
}

fn check_installed() -> io::Result<()> {
    if Path::new(ZK_SERVER_SH).exists() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{ZK_SERVER_SH} is missing: install Debian's zookeeperd \
                 (apt-get install zookeeperd), or run `cargo xtask test`, which does"
            ),
        ))
    }
}

/// Asks `word` over a fresh connection and reads the answer to its end.
pub fn four_letter_word(address: SocketAddr, word: &str, limit: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    stream.write_all(word.as_bytes())?;
    let mut answer = String::new();
    stream.take(1 << 20).read_to_string(&mut answer)?;
    Ok(answer)
}
