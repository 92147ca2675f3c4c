//! Logging set-up shared by both binaries: human text by default, one JSON object a line for
//! log collectors. Logs go to stderr so that stdout carries only results (tables, patches).

use clap::ValueEnum;
use std::io::IsTerminal;
use tracing::level_filters::LevelFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `verbose` adds debug lines (each probe, each request).
pub fn init(format: LogFormat, verbose: bool) {
    let level = if verbose {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // A second call (tests that run the library twice in one process) keeps the first
    // subscriber, which is what they want.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
