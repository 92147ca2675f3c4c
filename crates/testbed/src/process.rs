//! Child processes that never outlive their owner: killed (SIGKILL) and reaped on drop, also
//! when a test panics. Their output is captured line by line, with the time each line came, so
//! tests can assert on it and the demo can show it as it happens.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub stream: Stream,
    pub text: String,
}

/// Where a process's output goes besides the capture.
#[derive(Debug, Clone)]
pub enum Echo {
    /// Captured only.
    Quiet,
    /// Also printed to this process's stderr, each line behind the prefix (the demo's view).
    Prefixed(String),
}

pub struct Process {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
    readers: Vec<JoinHandle<()>>,
    exit: Option<(ExitStatus, Instant)>,
}

impl Process {
    /// Starts `command` with stdin closed and both output streams captured.
    pub fn spawn(name: &str, mut command: Command, echo: Echo) -> io::Result<Process> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot start {name} ({:?}): {error}", command.get_program()),
            )
        })?;
        register(child.id());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(read_lines(
                stdout,
                Stream::Stdout,
                lines.clone(),
                echo.clone(),
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(read_lines(stderr, Stream::Stderr, lines.clone(), echo));
        }
        Ok(Process {
            name: name.to_owned(),
            child,
            lines,
            readers,
            exit: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`) with the system's `kill`.
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        let status = Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -s {signal} {} ({}) failed: {status}",
                self.pid(),
                self.name
            )))
        }
    }

    /// The exit status and when it was seen, if the process has ended. Polled every
    /// millisecond by `wait_timeout`, so the time is good to about a millisecond.
    pub fn try_exit(&mut self) -> io::Result<Option<(ExitStatus, Instant)>> {
        if self.exit.is_none()
            && let Some(status) = self.child.try_wait()?
        {
            self.exit = Some((status, Instant::now()));
            unregister(self.child.id());
            self.join_readers();
        }
        Ok(self.exit)
    }

    /// Waits at most `limit` for the process to end.
    pub fn wait_timeout(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((status, _)) = self.try_exit()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Like `wait_timeout`, but an overrun is an error that shows what the process said.
    pub fn expect_exit(&mut self, limit: Duration) -> ExitStatus {
        match self.wait_timeout(limit) {
            Ok(Some(status)) => status,
            Ok(None) => panic!(
                "{} did not exit within {limit:?}; its output so far:\n{}",
                self.name,
                self.output()
            ),
            Err(error) => panic!("cannot wait for {}: {error}", self.name),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit(), Ok(None))
    }

    /// Waits until a line satisfying `matches` has been printed, for at most `limit`.
    pub fn wait_for_line(&self, limit: Duration, matches: impl Fn(&str) -> bool) -> Option<Line> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| matches(&line.text)) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn text_of(&self, stream: Stream) -> String {
        self.lines()
            .into_iter()
            .filter(|line| line.stream == stream)
            .map(|line| line.text + "\n")
            .collect()
    }

    pub fn stdout(&self) -> String {
        self.text_of(Stream::Stdout)
    }

    pub fn stderr(&self) -> String {
        self.text_of(Stream::Stderr)
    }

    /// Both streams, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout of {name}\n{}--- stderr of {name}\n{}",
            self.stdout(),
            self.stderr(),
            name = self.name
        )
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exit = Some((status, Instant::now()));
            }
            unregister(self.child.id());
            self.join_readers();
        }
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Children alive now, so that a signal can stop them: Drop does not run when the owner is
/// ended by SIGTERM or Ctrl-C.
static LIVE_CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn register(pid: u32) {
    if let Ok(mut live) = LIVE_CHILDREN.lock() {
        live.push(pid);
    }
}

fn unregister(pid: u32) {
    if let Ok(mut live) = LIVE_CHILDREN.lock() {
        live.retain(|&p| p != pid);
    }
}

/// For long-running owners (the demo, benchmarks): on SIGINT or SIGTERM, kill every child
/// still alive and exit with the signal's code. Tests need not call it: nextest ends a test's
/// whole process group.
pub fn stop_children_on_signal() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        thread::spawn(|| {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            let signal = runtime
                .block_on(async { sidecar_common::shutdown::Signals::register().recv().await });
            let live: Vec<u32> = LIVE_CHILDREN.lock().map(|l| l.clone()).unwrap_or_default();
            for pid in &live {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &pid.to_string()])
                    .status();
            }
            eprintln!(
                "\n{} received: stopped {} child process(es)",
                signal.name(),
                live.len()
            );
            std::process::exit(i32::from(signal.exit_code()));
        });
    });
}

fn read_lines(
    stream: impl Read + Send + 'static,
    which: Stream,
    lines: Arc<Mutex<Vec<Line>>>,
    echo: Echo,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buffer)
                .trim_end_matches(['\n', '\r'])
                .to_owned();
            if let Echo::Prefixed(prefix) = &echo {
                eprintln!("{prefix}{text}");
            }
            if let Ok(mut lines) = lines.lock() {
                lines.push(Line {
                    at: Instant::now(),
                    stream: which,
                    text,
                });
            }
        }
    })
}
