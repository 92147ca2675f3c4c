//! The command line, a contract: the Helm chart, the demo and users drive zk-wait through it.
//! Public so that the chart's tests parse rendered arguments with these very definitions.

use crate::connect_string::ConnectString;
use crate::quorum::Requirement;
use crate::wait::WaitOptions;
use clap::Parser;
use clap::builder::BoolishValueParser;
use sidecar_common::duration::parse_positive_duration;
use sidecar_common::logging::LogFormat;
use std::time::Duration;

const EXIT_CODES: &str = "\
Exit codes:
  0    the requirement holds: ZooKeeper is serving
  1    not ready: --timeout passed, or --once found too few servers ready
  2    bad usage or input, or a server refuses both srvr and ruok (4lw.commands.whitelist),
       so that no wait could ever judge it
  130  stopped by SIGINT;  143  stopped by SIGTERM";

/// Waits until a ZooKeeper ensemble is serving: `srvr` reports a Mode (standalone, leader,
/// follower, observer) on enough servers. `ruok`/`imok` is asked too and shown, but a lone
/// ensemble member says imok while it serves nothing, so it never counts alone.
#[derive(Debug, Clone, Parser)]
#[command(name = "zk-wait", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// ZooKeeper connect string, as Flink's high-availability.zookeeper.quorum takes it:
    /// host[:port],... with an optional /chroot (not probed); IPv6 in brackets; port 2181
    /// when omitted.
    #[arg(long, env = "ZK_WAIT_ZOOKEEPER", value_name = "CONNECT")]
    pub zookeeper: ConnectString,

    /// How many of the listed servers must serve.
    #[arg(long, env = "ZK_WAIT_REQUIRE", value_enum, default_value_t = Requirement::Majority)]
    pub require: Requirement,

    /// Give up after this long with exit code 1 (e.g. 5m). Default: wait for ever, and let
    /// Kubernetes decide the pod's fate.
    #[arg(long, env = "ZK_WAIT_TIMEOUT", value_name = "DUR", value_parser = parse_positive_duration)]
    pub timeout: Option<Duration>,

    /// One round: print the table, exit 0 if the requirement holds, else 1.
    #[arg(long, env = "ZK_WAIT_ONCE", value_parser = BoolishValueParser::new(), default_value_t = false)]
    pub once: bool,

    /// Bound on each of resolving a name, connecting, and reading an answer.
    #[arg(long, env = "ZK_WAIT_PROBE_TIMEOUT", value_name = "DUR", default_value = "2s", value_parser = parse_positive_duration)]
    pub probe_timeout: Duration,

    /// Longest pause between rounds (rounds back off exponentially, with jitter, up to this).
    #[arg(long, env = "ZK_WAIT_MAX_INTERVAL", value_name = "DUR", default_value = "250ms", value_parser = parse_positive_duration)]
    pub max_interval: Duration,

    /// At most one progress line this often while waiting.
    #[arg(long, env = "ZK_WAIT_PROGRESS_EVERY", value_name = "DUR", default_value = "5s", value_parser = parse_positive_duration)]
    pub progress_every: Duration,

    /// Log and summary format.
    #[arg(long, env = "ZK_WAIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Also log each probe.
    #[arg(short, long, env = "ZK_WAIT_VERBOSE", value_parser = BoolishValueParser::new(), default_value_t = false)]
    pub verbose: bool,
}

impl Cli {
    pub fn wait_options(&self) -> WaitOptions {
        WaitOptions {
            servers: self.zookeeper.servers.clone(),
            requirement: self.require,
            timeout: self.timeout,
            once: self.once,
            probe_timeout: self.probe_timeout,
            max_interval: self.max_interval,
            progress_every: self.progress_every,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let cli = Cli::try_parse_from(["zk-wait", "--zookeeper", "zk:2181"]).unwrap();
        assert_eq!(cli.require, Requirement::Majority);
        assert_eq!(cli.timeout, None);
        assert!(!cli.once);
        assert_eq!(cli.probe_timeout, Duration::from_secs(2));
        assert_eq!(cli.max_interval, Duration::from_millis(250));
        assert_eq!(cli.log_format, LogFormat::Text);
    }

    #[test]
    fn bad_values_are_usage_errors_that_name_the_flag() {
        for (flag, value, said) in [
            ("--zookeeper", "zk:0", "port 0"),
            ("--timeout", "0s", "longer than zero"),
            ("--probe-timeout", "2", "has no unit"),
            ("--require", "most", "possible values: any, majority, all"),
        ] {
            let mut args = vec!["zk-wait", "--zookeeper", "zk", flag, value];
            if flag == "--zookeeper" {
                args.truncate(3);
                args[2] = value;
            }
            let error = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(error.exit_code(), 2);
            let message = error.to_string();
            assert!(message.contains(flag), "{message}");
            assert!(message.contains(said), "{message}");
        }
    }
}
