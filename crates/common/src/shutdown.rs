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
