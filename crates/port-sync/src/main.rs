use port_sync::cli::Cli;
use sidecar_common::{logging, shutdown};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    logging::init(cli.log_format, cli.verbose);
    // One thread is plenty for a few connections and keeps the sidecar's footprint small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime needs no resources that can be missing");
    // Signal listeners first, before any work: a SIGTERM at any moment after this is seen.
    let signals = runtime.block_on(async { shutdown::Signals::register() });
    let code = runtime.block_on(port_sync::app::run(cli, signals));
    // Leave behind whatever a signal interrupted (the grace period is already spent).
    runtime.shutdown_background();
    ExitCode::from(code)
}
