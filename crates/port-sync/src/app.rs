//! Wires the command line to the parts: makes the clients, runs one round (`--once`) or the
//! loop with its HTTP endpoints, and stops cleanly on SIGTERM/SIGINT.

use crate::cli::Cli;
use crate::flink::JobManager;
use crate::metrics::SharedMetrics;
use crate::service::ServiceHandle;
use crate::sync::SyncOptions;
use sidecar_common::logging::LogFormat;
use sidecar_common::shutdown;
use std::io::Write;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

/// How long a stopping loop may take to finish the request it is in (a patch is never cut
/// short on purpose); well inside the 1 s the pod's shutdown is promised.
pub const STOP_GRACE: Duration = Duration::from_millis(800);

/// Runs port-sync as the command line says; returns the exit code.
pub async fn run(cli: Cli, mut signals: shutdown::Signals) -> u8 {
    let jobmanager = match JobManager::new(&cli.jobmanager_url, cli.jobmanager_ca.as_deref()) {
        Ok(jobmanager) => jobmanager,
        Err(problem) => {
            error!("{problem}");
            return 2;
        }
    };
    let service = tokio::select! {
        connected = ServiceHandle::connect(cli.namespace.as_deref(), &cli.service) => match connected {
            Ok(service) => service,
            Err(problem) => {
                error!(
                    "cannot set up the Kubernetes client: {problem}; in a pod it needs the service \
                     account token and KUBERNETES_SERVICE_HOST/PORT, elsewhere KUBECONFIG or ~/.kube/config"
                );
                return 2;
            }
        },
        signal = signals.recv() => return stopped_by(signal),
    };
    if cli.once {
        return run_once(&cli, &jobmanager, &service, &mut signals).await;
    }

    let listener = match TcpListener::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(problem) => {
            error!("--listen {}: cannot listen there: {problem}", cli.listen);
            return 2;
        }
    };
    let metrics = SharedMetrics::default();
    let server = tokio::spawn(crate::serve::serve(listener, metrics.clone()));
    info!(listen = %cli.listen, "serving /healthz, /readyz and /metrics");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let options = SyncOptions {
        mappings: cli.ports.clone(),
        interval: cli.interval,
        dry_run: cli.dry_run,
    };
    let mut sync = tokio::spawn(crate::sync::run(
        jobmanager, service, options, metrics, stopping,
    ));
    let code = tokio::select! {
        signal = signals.recv() => {
            info!("{} received; stopping", signal.name());
            let _ = stop.send(true);
            if tokio::time::timeout(STOP_GRACE, &mut sync).await.is_err() {
                warn!("a request to the API server was still under way after {STOP_GRACE:?}; leaving it");
                sync.abort();
            }
            0
        }
        ended = &mut sync => {
            // The loop only ends when told to; anything else is a bug worth a loud exit.
            error!("the sync loop ended by itself: {ended:?}");
            1
        }
    };
    server.abort();
    code
}

async fn run_once(
    cli: &Cli,
    jobmanager: &JobManager,
    service: &ServiceHandle,
    signals: &mut shutdown::Signals,
) -> u8 {
    let round = crate::once::once(jobmanager, service, &cli.ports, cli.dry_run);
    let report = tokio::select! {
        report = round => report,
        signal = signals.recv() => return stopped_by(signal),
    };
    let text = match cli.log_format {
        LogFormat::Text => report.to_text(),
        LogFormat::Json => report.to_json() + "\n",
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    report.exit_code
}

/// A stop asked for by Kubernetes (SIGTERM) or a person (SIGINT) is a clean exit.
fn stopped_by(signal: shutdown::Signal) -> u8 {
    info!("{} received; stopping", signal.name());
    0
}
