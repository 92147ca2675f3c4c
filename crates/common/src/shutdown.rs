//! The signal that ends either binary. Kubernetes stops a container with SIGTERM; a person at a
//! terminal uses Ctrl-C (SIGINT).
//!
//! The listeners are made once, at start-up, and kept for the life of the process. A listener
//! made later treats every signal delivered before it as already seen (tokio's listeners
//! subscribe to a channel at its current version), so a program that made a new one for each
//! phase could lose a SIGTERM that fell between two phases and run on until the SIGKILL.

use tokio::signal::unix::{SignalKind, signal};

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
}

impl Signal {
    /// The exit code a shell would report for a process killed by this signal (128 + number),
    /// so that an init container stopped by SIGTERM never reads as "ready" (0).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Terminate => 143,
            Signal::Interrupt => 130,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        }
    }
}

/// SIGTERM and SIGINT listeners for the whole run: make them first thing, then wait on the same
/// value in every phase.
pub struct Signals {
    /// `None` only when the process has no signal support at all; then nothing would ever
    /// arrive, so `recv` waits forever.
    listeners: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Installs the handlers. Needs a tokio runtime's context (`Runtime::enter` or inside
    /// `block_on`).
    pub fn register() -> Signals {
        let listeners = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => None,
        };
        Signals { listeners }
    }

    /// Resolves when SIGTERM or SIGINT arrives, including one that arrived while nobody was
    /// waiting. Cancel-safe: a `select!` that drops it loses no signal.
    pub async fn recv(&mut self) -> Signal {
        let Some((term, int)) = &mut self.listeners else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => Signal::Terminate,
            _ = int.recv() => Signal::Interrupt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SIGTERM sent while nobody is awaiting `recv` (the gap between two `select!`s) must
    /// still be seen by the next `recv`.
    #[tokio::test]
    async fn a_signal_between_two_waits_is_not_lost() {
        let mut signals = Signals::register();
        let sent = std::process::Command::new("kill")
            .args(["-s", "TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        // Let the runtime's signal driver turn while nobody awaits `recv`: with handlers
        // registered per wait (the old `wait_for_signal` in each `select!`) the SIGTERM is
        // consumed here and lost.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let received = tokio::time::timeout(std::time::Duration::from_secs(30), signals.recv())
            .await
            .expect("the SIGTERM sent before recv was awaited arrives");
        assert_eq!(received, Signal::Terminate);
    }
}
