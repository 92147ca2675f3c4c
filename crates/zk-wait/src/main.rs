use clap::Parser;
use sidecar_common::{logging, shutdown};
use std::io::Write;
use std::process::ExitCode;
use zk_wait::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose);
    // One thread is plenty for a handful of sockets and keeps the init container small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime needs no resources that can be missing");
    // Signal listeners first, before any work: a SIGTERM at any moment after this is seen.
    let mut signals = runtime.block_on(async { shutdown::Signals::register() });
    let options = cli.wait_options();
    let code = runtime.block_on(async {
        tokio::select! {
            outcome = zk_wait::wait::wait(&options) => {
                let summary = match cli.log_format {
                    logging::LogFormat::Text => outcome.summary.to_text(),
                    logging::LogFormat::Json => outcome.summary.to_json() + "\n",
                };
                let _ = std::io::stdout().write_all(summary.as_bytes());
                outcome.exit_code()
            }
            signal = signals.recv() => {
                tracing::warn!("{} received; stopping without a verdict", signal.name());
                signal.exit_code()
            }
        }
    });
    // Leave lookups still blocked in the resolver behind rather than wait for them.
    runtime.shutdown_background();
    ExitCode::from(code)
}
