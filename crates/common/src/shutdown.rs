//! The signal that ends either binary. Kubernetes stops a container with SIGTERM; a person at a
//! terminal uses Ctrl-C (SIGINT).

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

/// SIGTERM and SIGINT handlers registered once, at start. Registering them anew for each
/// `select!` would leave gaps between one registration being dropped and the next being made;
/// tokio has by then replaced the default action, so a signal landing in such a gap was lost and
/// the process ran on until SIGKILL.
pub struct Signals {
    handlers: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Registers the handlers; call first thing inside the runtime. Without signal support at
    /// all nothing can arrive, and [`Signals::recv`] then waits forever.
    pub fn register() -> Signals {
        let handlers = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => None,
        };
        Signals { handlers }
    }

    /// Resolves when SIGTERM or SIGINT has arrived since registration (or since the last call
    /// that returned); may be awaited again and again, e.g. in one `select!` after another.
    pub async fn recv(&mut self) -> Signal {
        let Some((term, int)) = self.handlers.as_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => Signal::Terminate,
            _ = int.recv() => Signal::Interrupt,
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives. Registering the handlers can only fail when the
/// process has no signal support at all; then nothing would ever arrive, so it waits forever.
pub async fn wait_for_signal() -> Signal {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => Signal::Terminate,
        _ = int.recv() => Signal::Interrupt,
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
