//! The command line, a contract: the Helm chart, the demo and users drive port-sync through it.
//! Public so that the chart's tests parse rendered arguments with these very definitions.

use crate::flink::JobManagerUrl;
use crate::ports::PortMapping;
use clap::builder::BoolishValueParser;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use sidecar_common::duration::parse_positive_duration;
use sidecar_common::logging::LogFormat;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Kubernetes connection: kube's standard inference. In a pod: the service account's token
(re-read as it rotates), the cluster CA and KUBERNETES_SERVICE_HOST/PORT. Elsewhere: KUBECONFIG
or ~/.kube/config and its current context. TLS verification is never switched off.
The service account needs get, list, watch and patch on this one Service (rbac/role.yaml).

HTTP on --listen: /healthz (alive), /readyz (200 when the Service matched the JobManager at
the last check, else 503), /metrics (Prometheus text).

Exit codes:
  0    in sync (--once), or stopped by SIGTERM/SIGINT
  1    --once: not in sync afterwards (JobManager or API server unreachable, the patch failed,
       or --dry-run with a change pending)
  2    bad usage or input: a bad flag or env var, no Kubernetes credentials, --listen busy,
       an unreadable --jobmanager-ca; with --once also a Service without a mapped port name
       or a JobManager answer that holds no valid port for a mapped key";

/// Keeps a Kubernetes Service's ports equal to the live ports of the Flink JobManager beside
/// it: each mapped Service port gets `port` and `targetPort` equal to the value the
/// JobManager reports at GET /jobmanager/config, by one JSON Patch that tests what it changes.
#[derive(Debug, Clone, Parser)]
#[command(name = "port-sync", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The Service to keep in sync (in --namespace).
    #[arg(long, env = "PORT_SYNC_SERVICE", value_name = "NAME", value_parser = dns_label)]
    pub service: String,

    /// The Service's namespace. Default: the pod's namespace in a cluster, else the
    /// kubeconfig context's (else "default").
    #[arg(long, env = "PORT_SYNC_NAMESPACE", value_name = "NS", value_parser = dns_label)]
    pub namespace: Option<String>,

    /// Flink's REST endpoint (http or https; a path prefix is kept).
    #[arg(long, env = "PORT_SYNC_JOBMANAGER_URL", value_name = "URL",
          default_value = "http://127.0.0.1:8081", value_parser = jobmanager_url)]
    pub jobmanager_url: JobManagerUrl,

    /// PEM file of the CA(s) to trust, alone, for an https --jobmanager-url. Default: the
    /// system's trust store.
    #[arg(long, env = "PORT_SYNC_JOBMANAGER_CA", value_name = "FILE")]
    pub jobmanager_ca: Option<PathBuf>,

    /// Service port NAME follows the Flink config key FLINK_KEY; repeat for more ports (the
    /// env var takes a comma-separated list).
    #[arg(
        long = "port",
        env = "PORT_SYNC_PORT",
        value_name = "NAME=FLINK_KEY",
        value_delimiter = ',',
        default_value = "rpc=jobmanager.rpc.port"
    )]
    pub ports: Vec<PortMapping>,

    /// How often to ask the JobManager once it answers (until then: about every 100ms).
    #[arg(long, env = "PORT_SYNC_INTERVAL", value_name = "DUR", default_value = "1s",
          value_parser = parse_positive_duration)]
    pub interval: Duration,

    /// Address for /healthz, /readyz and /metrics (not opened with --once).
    #[arg(long, env = "PORT_SYNC_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:8099",
          value_parser = listen_address)]
    pub listen: SocketAddr,

    /// One round: read the JobManager and the Service, patch if needed, print what it saw and
    /// did; exit 0 when in sync afterwards, else 1.
    #[arg(long, env = "PORT_SYNC_ONCE", value_parser = BoolishValueParser::new(), default_value_t = false)]
    pub once: bool,

    /// Print the JSON Patch it would send (on stdout) and change nothing.
    #[arg(long, env = "PORT_SYNC_DRY_RUN", value_parser = BoolishValueParser::new(), default_value_t = false)]
    pub dry_run: bool,

    /// Log format (logs go to stderr); also the format of --once's report.
    #[arg(long, env = "PORT_SYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Also log each request.
    #[arg(short, long, env = "PORT_SYNC_VERBOSE", value_parser = BoolishValueParser::new(), default_value_t = false)]
    pub verbose: bool,
}

impl Cli {
    /// Parses the process's arguments and env vars; on a bad value prints the message and
    /// exits 2 (clap's usage-error code), as for any usage error.
    pub fn parse_checked() -> Self {
        Self::try_parse_checked_from(std::env::args_os()).unwrap_or_else(|error| error.exit())
    }

    /// `try_parse_from` plus the checks that span values (one name mapped twice).
    pub fn try_parse_checked_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Self::try_parse_from(args)?;
        cli.check()?;
        Ok(cli)
    }

    fn check(&self) -> Result<(), clap::Error> {
        let mut seen = HashSet::new();
        for mapping in &self.ports {
            if !seen.insert(mapping.port_name.as_str()) {
                return Err(Cli::command().error(
                    ErrorKind::ValueValidation,
                    format!(
                        "invalid value for '--port <NAME=FLINK_KEY>': the Service port {} is \
                         mapped twice; give each name one --port NAME=FLINK_KEY",
                        mapping.port_name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A Service name (DNS-1035 label) or namespace (DNS-1123 label): up to 63 of a-z, 0-9 and
/// '-', starting and ending with a letter or digit. The stricter Service rule (first a letter)
/// is left to the API server's 404, which names the Service.
fn dns_label(text: &str) -> Result<String, String> {
    let problem = if text.is_empty() {
        Some("it is empty")
    } else if text.len() > 63 {
        Some("it is longer than 63 characters")
    } else if !text
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("it may hold only a-z, 0-9 and '-'")
    } else if text.starts_with('-') || text.ends_with('-') {
        Some("it may not start or end with '-'")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(format!(
            "{text:?} is not a Kubernetes name: {problem} (e.g. flink-jobmanager)"
        )),
        None => Ok(text.to_owned()),
    }
}

fn jobmanager_url(text: &str) -> Result<JobManagerUrl, String> {
    text.parse()
}

fn listen_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("{text:?} is not IP:PORT; e.g. 0.0.0.0:8099, 127.0.0.1:8099 or [::]:8099")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let cli = Cli::try_parse_checked_from(["port-sync", "--service", "flink-jm"]).unwrap();
        assert_eq!(cli.service, "flink-jm");
        assert_eq!(cli.namespace, None);
        assert_eq!(cli.jobmanager_url.to_string(), "http://127.0.0.1:8081/");
        assert_eq!(cli.jobmanager_ca, None);
        assert_eq!(
            cli.ports,
            vec![PortMapping::new("rpc", "jobmanager.rpc.port")]
        );
        assert_eq!(cli.interval, Duration::from_secs(1));
        assert_eq!(cli.listen, "0.0.0.0:8099".parse().unwrap());
        assert!(!cli.once);
        assert!(!cli.dry_run);
        assert_eq!(cli.log_format, LogFormat::Text);
        assert!(!cli.verbose);
    }

    #[test]
    fn flags_as_the_chart_renders_them() {
        let cli = Cli::try_parse_checked_from([
            "port-sync",
            "--service=flink-jm",
            "--namespace=flink",
            "--jobmanager-url=https://localhost:8443/flink",
            "--jobmanager-ca=/etc/flink/ca.pem",
            "--port=rpc=jobmanager.rpc.port",
            "--port=blob=blob.server.port",
            "--interval=500ms",
            "--listen=127.0.0.1:9000",
            "--once",
            "--dry-run",
            "--log-format=json",
        ])
        .unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("flink"));
        assert_eq!(cli.jobmanager_url.path(), "/flink");
        assert_eq!(cli.jobmanager_ca, Some(PathBuf::from("/etc/flink/ca.pem")));
        assert_eq!(
            cli.ports,
            vec![
                PortMapping::new("rpc", "jobmanager.rpc.port"),
                PortMapping::new("blob", "blob.server.port"),
            ]
        );
        assert_eq!(cli.interval, Duration::from_millis(500));
        assert_eq!(cli.listen, "127.0.0.1:9000".parse().unwrap());
        assert!(cli.once && cli.dry_run);
        assert_eq!(cli.log_format, LogFormat::Json);
    }

    /// Env vars are process-wide and setting them is `unsafe` in edition 2024 (which the
    /// workspace forbids), so env var tests parse in a child process: this very test binary,
    /// running only `parse_in_child` with the env vars set.
    const CHILD_ARGS: &str = "PORT_SYNC_TEST_CHILD_ARGS";

    #[test]
    fn parse_in_child() {
        let Some(args) = std::env::var_os(CHILD_ARGS) else {
            return; // run as an ordinary test: nothing to do
        };
        let args: Vec<String> = serde_json::from_str(&args.to_string_lossy()).unwrap();
        match Cli::try_parse_checked_from(args) {
            Ok(cli) => println!("<<<{cli:?}>>>"),
            Err(error) => println!("<<<exit {}: {error}>>>", error.exit_code()),
        }
    }

    /// What `parse_in_child` printed: the parsed Cli's Debug form, or `exit 2: message`.
    fn parse_with_env(args: &[&str], vars: &[(&str, &str)]) -> String {
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "cli::tests::parse_in_child", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_ARGS, serde_json::to_string(args).unwrap())
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let start = stdout.find("<<<").expect("the child printed its parse") + 3;
        let end = stdout.rfind(">>>").unwrap();
        stdout[start..end].to_owned()
    }

    #[test]
    fn every_flag_has_its_env_var() {
        let vars = [
            ("PORT_SYNC_SERVICE", "flink-jm"),
            ("PORT_SYNC_NAMESPACE", "flink"),
            ("PORT_SYNC_JOBMANAGER_URL", "http://10.0.0.1:8081"),
            ("PORT_SYNC_JOBMANAGER_CA", "/ca.pem"),
            (
                "PORT_SYNC_PORT",
                "rpc=jobmanager.rpc.port,blob=blob.server.port",
            ),
            ("PORT_SYNC_INTERVAL", "2s"),
            ("PORT_SYNC_LISTEN", "[::]:8099"),
            ("PORT_SYNC_ONCE", "true"),
            ("PORT_SYNC_DRY_RUN", "1"),
            ("PORT_SYNC_LOG_FORMAT", "json"),
            ("PORT_SYNC_VERBOSE", "yes"),
        ];
        // The definition's env names are exactly the ones this test sets: none is forgotten.
        let declared: HashSet<String> = Cli::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env().map(|env| env.to_string_lossy().into_owned()))
            .collect();
        let tested: HashSet<String> = vars.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(declared, tested);

        let parsed = parse_with_env(&["port-sync"], &vars);
        for expected in [
            r#"service: "flink-jm""#,
            r#"namespace: Some("flink")"#,
            "jobmanager_url: JobManagerUrl(http://10.0.0.1:8081/)",
            r#"jobmanager_ca: Some("/ca.pem")"#,
            r#"PortMapping { port_name: "rpc", flink_key: "jobmanager.rpc.port" }"#,
            r#"PortMapping { port_name: "blob", flink_key: "blob.server.port" }"#,
            "interval: 2s",
            "listen: [::]:8099",
            "once: true",
            "dry_run: true",
            "log_format: Json",
            "verbose: true",
        ] {
            assert!(parsed.contains(expected), "{expected} not in {parsed}");
        }
    }

    #[test]
    fn a_flag_wins_over_its_env_var() {
        let parsed = parse_with_env(
            &["port-sync", "--service=s", "--interval=3s"],
            &[("PORT_SYNC_INTERVAL", "2s")],
        );
        assert!(parsed.contains("interval: 3s"), "{parsed}");
    }

    #[test]
    fn a_bad_env_var_is_a_usage_error_that_names_the_flag() {
        let parsed = parse_with_env(
            &["port-sync", "--service=s"],
            &[("PORT_SYNC_PORT", "rpc=jobmanager.rpc.port,blob")],
        );
        assert!(parsed.starts_with("exit 2: "), "{parsed}");
        assert!(parsed.contains("--port"), "{parsed}");
        assert!(parsed.contains("\"blob\" has no '='"), "{parsed}");
    }

    #[test]
    fn bad_values_are_usage_errors_that_name_the_flag() {
        for (flag, value, said) in [
            ("--service", "Flink_JM", "not a Kubernetes name"),
            ("--service", "", "it is empty"),
            ("--namespace", "-ns", "may not start or end with '-'"),
            ("--jobmanager-url", "127.0.0.1:8081", "use http or https"),
            ("--jobmanager-url", "http://", "not a URL"),
            ("--jobmanager-url", "ftp://jm:8081", "use http or https"),
            ("--jobmanager-url", "http://jm:80 81", "not a URL"),
            ("--jobmanager-url", "http://:8081", "no host"),
            (
                "--jobmanager-url",
                "http://u:p@jm:8081",
                "carries credentials",
            ),
            ("--port", "rpc", "write SERVICE_PORT_NAME=FLINK_KEY"),
            (
                "--port",
                "RPC=jobmanager.rpc.port",
                "not a valid Kubernetes port name",
            ),
            ("--interval", "0s", "longer than zero"),
            ("--interval", "1", "has no unit"),
            ("--listen", "8099", "not IP:PORT"),
            ("--listen", "localhost:8099", "not IP:PORT"),
            ("--log-format", "yaml", "possible values: text, json"),
            ("--once", "maybe", "--once"),
        ] {
            let argument = format!("{flag}={value}");
            let mut args = vec!["port-sync", "--service=s", &argument];
            if flag == "--service" {
                args.remove(1);
            }
            let error = Cli::try_parse_checked_from(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{argument}");
            let message = error.to_string();
            assert!(message.contains(flag), "{argument}: {message}");
            assert!(message.contains(said), "{argument}: {message}");
        }
    }

    #[test]
    fn the_service_is_required() {
        let error = Cli::try_parse_checked_from(["port-sync"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("--service <NAME>"));
    }

    #[test]
    fn a_port_name_mapped_twice_is_a_usage_error() {
        let error = Cli::try_parse_checked_from([
            "port-sync",
            "--service=s",
            "--port=rpc=jobmanager.rpc.port",
            "--port=rpc=blob.server.port",
        ])
        .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let message = error.to_string();
        assert!(message.contains("--port"), "{message}");
        assert!(message.contains("rpc is mapped twice"), "{message}");
    }

    #[test]
    fn the_help_documents_the_exit_codes_and_env_vars() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"));
        assert!(help.contains("PORT_SYNC_SERVICE"));
    }
}
