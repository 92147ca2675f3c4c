//! The JobManager's side: the body of `GET /jobmanager/config` (a JSON array of
//! `{"key": …, "value": …}`) turned into the ports the Service should have. `parse_config` is
//! pure; `JobManager` is the thin HTTP edge that fetches the body with bounded time and size.

use crate::ports::{DesiredPorts, PortMapping, PortPair};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Flink's answer is a few KiB; a body near this cap is not the config endpoint.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Bounds on each request: the JobManager is on the same pod, so anything slower is a hang.
/// Connecting (TCP); then each wait for bytes of the answer (its head, counted from the start
/// of the request, then each piece of its body); and the whole exchange.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Which bound of a request fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No TCP connection within `CONNECT_TIMEOUT`.
    Connect,
    /// No bytes of the answer for `READ_TIMEOUT`.
    Read,
    /// The whole exchange took longer than `REQUEST_TIMEOUT`.
    Request,
}

/// Why the body of `/jobmanager/config` gave no ports. Each message names the key and the
/// value it saw and what was expected; nothing is patched from such an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// An HTML page (a proxy's or Flink's own error page) instead of JSON.
    Html {
        start: String,
    },
    NotJson {
        detail: String,
        start: String,
    },
    /// JSON, but not an array of `{key, value}` objects.
    WrongShape {
        found: String,
    },
    KeyMissing {
        key: String,
        port_name: String,
    },
    NotAPort {
        key: String,
        value: String,
        problem: PortProblem,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProblem {
    NotANumber,
    /// Port 0 asks the OS for a random port: the JobManager has not bound it (yet).
    Zero,
    TooLarge,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const EXPECTED: &str = "expected a JSON array of {\"key\": …, \"value\": …} objects";
        match self {
            ConfigError::Html { start } => write!(
                f,
                "the JobManager answered with an HTML page, not its configuration ({EXPECTED}); \
                 does --jobmanager-url point at Flink's REST endpoint? The page starts: {start:?}"
            ),
            ConfigError::NotJson { detail, start } => write!(
                f,
                "the JobManager's answer is not JSON ({detail}); {EXPECTED}. It starts: {start:?}"
            ),
            ConfigError::WrongShape { found } => {
                write!(
                    f,
                    "the JobManager's answer has the wrong shape: {found}; {EXPECTED}"
                )
            }
            ConfigError::KeyMissing { key, port_name } => write!(
                f,
                "the JobManager's configuration has no key {key} (mapped to Service port \
                 {port_name} by --port {port_name}={key}); check the key's spelling"
            ),
            ConfigError::NotAPort {
                key,
                value,
                problem,
            } => {
                let why = match problem {
                    PortProblem::NotANumber => "not a port number",
                    PortProblem::Zero => {
                        "port 0 (random): the JobManager has not reported the port it bound"
                    }
                    PortProblem::TooLarge => "above 65535",
                };
                write!(
                    f,
                    "the JobManager reports {key} = {value:?}, which is {why}; expected a port \
                     number from 1 to 65535"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Finds each mapped key in the body of `GET /jobmanager/config` and reads its value as a port:
/// the port Flink advertises. Where Flink has a bind-port setting for that key
/// ([`PortMapping::bind_key`]) and it is set, the server listens there instead, and that is the
/// target port; otherwise it listens on the advertised port. Flink reports values as strings
/// ("44215"); a JSON number is taken too.
pub fn parse_config(body: &[u8], mappings: &[PortMapping]) -> Result<DesiredPorts, ConfigError> {
    let document: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        let start = excerpt(body);
        if start.trim_start().starts_with('<') {
            ConfigError::Html { start }
        } else {
            ConfigError::NotJson {
                detail: error.to_string(),
                start,
            }
        }
    })?;
    let entries = document.as_array().ok_or_else(|| ConfigError::WrongShape {
        found: format!("a JSON {}", kind_of(&document)),
    })?;
    let mut desired = DesiredPorts::default();
    for mapping in mappings {
        let value =
            find_value(entries, &mapping.flink_key)?.ok_or_else(|| ConfigError::KeyMissing {
                key: mapping.flink_key.clone(),
                port_name: mapping.port_name.clone(),
            })?;
        let port = parse_port(&mapping.flink_key, value)?;
        let target_port = match mapping.bind_key() {
            Some(bind_key) => match find_value(entries, bind_key)? {
                Some(bind_value) => parse_port(bind_key, bind_value)?,
                None => port,
            },
            None => port,
        };
        desired.insert_pair(&mapping.port_name, PortPair { port, target_port });
    }
    Ok(desired)
}

/// The value of the first entry whose key is `key`, as text.
fn find_value<'a>(
    entries: &'a [serde_json::Value],
    key: &str,
) -> Result<Option<&'a serde_json::Value>, ConfigError> {
    for (index, entry) in entries.iter().enumerate() {
        let (Some(entry_key), Some(value)) = (
            entry.get("key").and_then(|k| k.as_str()),
            entry.get("value"),
        ) else {
            return Err(ConfigError::WrongShape {
                found: format!(
                    "entry {index} is {}, not an object with a string \"key\" and a \"value\"",
                    short_json(entry)
                ),
            });
        };
        if entry_key == key {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

fn parse_port(key: &str, value: &serde_json::Value) -> Result<u16, ConfigError> {
    let text = match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Number(number) => number.to_string(),
        other => other.to_string(),
    };
    // The value goes into a log line on every poll: keep it short, however long the answer.
    let problem = |problem| ConfigError::NotAPort {
        key: key.to_owned(),
        value: truncate(&text, 80),
        problem,
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(problem(PortProblem::NotANumber));
    }
    match text.parse::<u64>() {
        Ok(0) => Err(problem(PortProblem::Zero)),
        Ok(port) => u16::try_from(port).map_err(|_| problem(PortProblem::TooLarge)),
        // All digits yet no u64: far above 65535.
        Err(_) => Err(problem(PortProblem::TooLarge)),
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn short_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    truncate(&text, 80)
}

/// The first bytes of a body, as text, for an error message.
fn excerpt(body: &[u8]) -> String {
    let head = &body[..body.len().min(120)];
    truncate(&String::from_utf8_lossy(head), 80)
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Why the JobManager could not be asked: it is not there (yet), its TLS certificate was
/// refused, it answered with an HTTP error, or its answer was too big or too slow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    Unreachable(String),
    /// The TLS handshake refused the JobManager's certificate. `detail` is rustls's word;
    /// `ca_file` the `--jobmanager-ca` it was checked against (`None`: the system's roots).
    Certificate {
        problem: CertificateProblem,
        detail: String,
        ca_file: Option<PathBuf>,
    },
    Timeout(TimeoutKind),
    Status {
        code: u16,
        start: String,
    },
    TooLarge,
}

/// What was wrong with a refused certificate, for the advice that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateProblem {
    /// Not signed by a trusted CA (or the signature does not verify): the usual case of a
    /// JobManager with its own CA and no `--jobmanager-ca`, or the wrong one.
    NotTrusted,
    /// Trusted, but it names neither the host nor the IP address of `--jobmanager-url`.
    WrongName,
    /// Expired, not yet valid, not for servers, and the like.
    Other,
}

impl FetchError {
    /// A refused certificate: no restart of the JobManager will change it.
    pub fn is_certificate(&self) -> bool {
        matches!(self, FetchError::Certificate { .. })
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Unreachable(why) => write!(f, "the JobManager is not answering: {why}"),
            FetchError::Certificate {
                problem: CertificateProblem::NotTrusted,
                detail,
                ca_file: None,
            } => write!(
                f,
                "the JobManager's TLS certificate is not trusted ({detail}): it was checked \
                 against the system's trust store; give the CA that signed it with \
                 --jobmanager-ca FILE (PEM)"
            ),
            FetchError::Certificate {
                problem: CertificateProblem::NotTrusted,
                detail,
                ca_file: Some(file),
            } => write!(
                f,
                "the JobManager's TLS certificate is not trusted ({detail}) by the CA(s) in \
                 --jobmanager-ca {}; is that the CA that signed the JobManager's REST \
                 certificate (security.ssl.rest.keystore)?",
                file.display()
            ),
            FetchError::Certificate {
                problem: CertificateProblem::WrongName,
                detail,
                ..
            } => write!(
                f,
                "the JobManager's TLS certificate does not name the host of --jobmanager-url \
                 ({detail}); use a host name or IP address the certificate lists"
            ),
            FetchError::Certificate {
                problem: CertificateProblem::Other,
                detail,
                ..
            } => write!(f, "the JobManager's TLS certificate is refused: {detail}"),
            FetchError::Timeout(TimeoutKind::Connect) => write!(
                f,
                "the JobManager did not accept a connection within {:?} (connect timeout)",
                CONNECT_TIMEOUT
            ),
            FetchError::Timeout(TimeoutKind::Read) => write!(
                f,
                "the JobManager did not answer within {:?} (read timeout: it took the \
                 connection but sent nothing, or stopped in the middle of its answer)",
                READ_TIMEOUT
            ),
            FetchError::Timeout(TimeoutKind::Request) => write!(
                f,
                "the JobManager did not answer within {:?} in all (request timeout: its answer \
                 came, but too slowly)",
                REQUEST_TIMEOUT
            ),
            FetchError::Status { code, start } => write!(
                f,
                "the JobManager answered HTTP {code} to /jobmanager/config; the body starts: {start:?}"
            ),
            FetchError::TooLarge => write!(
                f,
                "the JobManager's answer is larger than {} KiB, which /jobmanager/config never is; \
                 does --jobmanager-url point at Flink's REST endpoint?",
                MAX_BODY_BYTES / 1024
            ),
        }
    }
}

impl std::error::Error for FetchError {}

/// Either half of asking the JobManager for ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobManagerError {
    Fetch(FetchError),
    Config(ConfigError),
}

impl fmt::Display for JobManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobManagerError::Fetch(error) => error.fmt(f),
            JobManagerError::Config(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for JobManagerError {}

/// Why a client for the JobManager could not be made: always bad input (exit 2).
#[derive(Debug)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// `--jobmanager-url`: an http or https URL with a host, no credentials; a path prefix (for a
/// REST endpoint behind a proxy) is kept, a query or fragment dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobManagerUrl(http::Uri);

impl JobManagerUrl {
    pub fn path(&self) -> &str {
        self.0.path()
    }

    /// The host as written (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        self.0.host().unwrap_or_default()
    }

    /// The port as written; `None`: the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.0.port_u16()
    }

    /// `http://h:8081` and `http://h:8081/` give `http://h:8081/jobmanager/config`;
    /// `https://h/flink` gives `https://h/flink/jobmanager/config`.
    pub fn config_url(&self) -> http::Uri {
        let mut parts = self.0.clone().into_parts();
        let prefix = self.0.path().trim_end_matches('/');
        parts.path_and_query = Some(
            format!("{prefix}/jobmanager/config")
                .parse()
                .expect("a valid path with a plain suffix is a valid path"),
        );
        http::Uri::from_parts(parts).expect("scheme and authority are kept")
    }
}

impl fmt::Display for JobManagerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobManagerUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let example = "e.g. http://127.0.0.1:8081";
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "{text:?} has no scheme; use http or https, e.g. http://{text}"
            ));
        };
        if !matches!(scheme, "http" | "https") {
            return Err(format!(
                "{text:?} has scheme {scheme:?}; use http or https, {example}"
            ));
        }
        // Flink's REST paths never carry a query or fragment; the URL's are dropped.
        let without_fragment = rest.split('#').next().unwrap_or_default();
        let uri: http::Uri = format!("{scheme}://{without_fragment}")
            .parse()
            .map_err(|error| format!("{text:?} is not a URL ({error}); {example}"))?;
        let Some(authority) = uri.authority() else {
            return Err(format!("{text:?} is not a URL (it has no host); {example}"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "{text:?} carries credentials, which would show in logs; Flink's REST API takes none"
            ));
        }
        if authority.host().is_empty() {
            return Err(format!("{text:?} is not a URL (it has no host); {example}"));
        }
        let mut parts = uri.into_parts();
        let path = parts
            .path_and_query
            .as_ref()
            .map_or("/", |path_and_query| path_and_query.path())
            .to_owned();
        parts.path_and_query = Some(
            path.parse()
                .map_err(|error| format!("{text:?} is not a URL ({error}); {example}"))?,
        );
        http::Uri::from_parts(parts)
            .map(Self)
            .map_err(|error| format!("{text:?} is not a URL ({error}); {example}"))
    }
}

/// Where the sync loop and `--once` learn the ports: the JobManager in the product, a scripted
/// source in the loop's in-process tests.
pub trait PortSource {
    /// What is asked, for messages: the JobManager's `/jobmanager/config` URL.
    fn config_url(&self) -> &http::Uri;

    /// The mapped ports as the source reports them now.
    fn desired_ports(
        &self,
        mappings: &[PortMapping],
    ) -> impl Future<Output = Result<DesiredPorts, JobManagerError>> + Send;
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The JobManager's REST endpoint, with a client bounded in time and body size.
#[derive(Debug, Clone)]
pub struct JobManager {
    client: HttpsClient,
    config_url: http::Uri,
    /// `--jobmanager-ca`, named when the JobManager's certificate is refused.
    ca_file: Option<PathBuf>,
}

impl JobManager {
    /// `base` is `--jobmanager-url`; `ca_file` is a PEM bundle that alone is trusted for an
    /// https URL (without it: the system's trust store, as kube's client uses).
    pub fn new(base: &JobManagerUrl, ca_file: Option<&Path>) -> Result<Self, SetupError> {
        // Our TLS shares kube's crypto provider (ring); installing it is idempotent and fails
        // only when one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = match ca_file {
            Some(path) => rustls::ClientConfig::builder()
                .with_root_certificates(trusted_roots(path)?)
                .with_no_client_auth(),
            None => {
                use rustls_platform_verifier::BuilderVerifierExt;
                rustls::ClientConfig::builder()
                    .with_platform_verifier()
                    .map_err(|error| {
                        SetupError(format!("cannot read the system's trust store: {error}"))
                    })?
                    .with_no_client_auth()
            }
        };
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            config_url: base.config_url(),
            ca_file: ca_file.map(Path::to_owned),
        })
    }

    /// `GET /jobmanager/config`, the body read up to `MAX_BODY_BYTES`, within the bounds.
    pub async fn fetch_config(&self) -> Result<Vec<u8>, FetchError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange())
            .await
            .unwrap_or(Err(FetchError::Timeout(TimeoutKind::Request)))
    }

    async fn exchange(&self) -> Result<Vec<u8>, FetchError> {
        let request = http::Request::get(self.config_url.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("port-sync/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .expect("a GET of a valid URI with constant headers is a valid request");
        let response = read_within(self.client.request(request))
            .await?
            .map_err(|error| self.fetch_error(&error))?;
        let too_large = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|length| length > MAX_BODY_BYTES as u64);
        if too_large {
            return Err(FetchError::TooLarge);
        }
        let status = response.status();
        let mut incoming = response.into_body();
        let mut body = Vec::new();
        while let Some(frame) = read_within(incoming.frame()).await? {
            let frame = frame.map_err(|error| self.fetch_error(&error))?;
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                code: status.as_u16(),
                start: excerpt(&body),
            });
        }
        Ok(body)
    }

    fn fetch_error(&self, error: &(dyn std::error::Error + 'static)) -> FetchError {
        if connect_timed_out(error) {
            return FetchError::Timeout(TimeoutKind::Connect);
        }
        failure_of(error, self.ca_file.as_deref())
    }
}

impl PortSource for JobManager {
    fn config_url(&self) -> &http::Uri {
        &self.config_url
    }

    /// Asks for the configuration and reads the mapped ports from it.
    async fn desired_ports(
        &self,
        mappings: &[PortMapping],
    ) -> Result<DesiredPorts, JobManagerError> {
        let body = self.fetch_config().await.map_err(JobManagerError::Fetch)?;
        parse_config(&body, mappings).map_err(JobManagerError::Config)
    }
}

/// `work`, or a read timeout when it brings nothing for `READ_TIMEOUT`.
async fn read_within<T>(work: impl Future<Output = T>) -> Result<T, FetchError> {
    tokio::time::timeout(READ_TIMEOUT, work)
        .await
        .map_err(|_| FetchError::Timeout(TimeoutKind::Read))
}

/// The roots of `--jobmanager-ca`: every certificate of the PEM bundle, and at least one.
fn trusted_roots(path: &Path) -> Result<rustls::RootCertStore, SetupError> {
    let problem = |what: String| SetupError(format!("--jobmanager-ca {}: {what}", path.display()));
    let pem = std::fs::read(path).map_err(|error| problem(format!("cannot read it: {error}")))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| problem(format!("not a PEM certificate bundle: {error}")))?;
    if certificates.is_empty() {
        return Err(problem(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|error| {
            problem(format!(
                "holds a certificate that is not a valid CA: {error}"
            ))
        })?;
    }
    Ok(roots)
}

/// A TCP connect that ran out of `CONNECT_TIMEOUT`: hyper-util's connector reports it as an
/// `io::Error` of kind `TimedOut` among the causes.
fn connect_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// `error` and its causes, outermost first. An `io::Error` that wraps another error hands it
/// out only by `get_ref` (its `source()` skips it), so that is followed first.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |cause| {
        let wrapped = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        wrapped.or_else(|| cause.source())
    })
}

/// A failed request as a `FetchError`, from its chain of causes. The client's own message
/// ("client error (Connect)") hides the cause; the innermost source ("Connection
/// refused", "invalid peer certificate: UnknownIssuer") is what helps, and a refused
/// certificate gets the advice that fits.
fn failure_of(error: &(dyn std::error::Error + 'static), ca_file: Option<&Path>) -> FetchError {
    let mut innermost = error;
    for cause in causes(error) {
        if let Some(rustls::Error::InvalidCertificate(certificate)) =
            cause.downcast_ref::<rustls::Error>()
        {
            let problem = match certificate {
                rustls::CertificateError::UnknownIssuer
                | rustls::CertificateError::BadSignature => CertificateProblem::NotTrusted,
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    CertificateProblem::WrongName
                }
                _ => CertificateProblem::Other,
            };
            return FetchError::Certificate {
                problem,
                detail: rustls::Error::InvalidCertificate(certificate.clone()).to_string(),
                ca_file: ca_file.map(Path::to_owned),
            };
        }
        innermost = cause;
    }
    FetchError::Unreachable(innermost.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURE: &[u8] =
        include_bytes!("../../../tests/fixtures/flink-2.3.0/jobmanager-config-ha.json");

    fn rpc_and_blob() -> Vec<PortMapping> {
        vec![
            PortMapping::new("rpc", "jobmanager.rpc.port"),
            PortMapping::new("blob", "blob.server.port"),
        ]
    }

    #[test]
    fn reads_the_bound_ports_from_a_real_flink_2_3_capture() {
        let desired = parse_config(CAPTURE, &rpc_and_blob()).unwrap();
        assert_eq!(
            desired,
            DesiredPorts::from([("rpc", 44215), ("blob", 33533)])
        );
    }

    /// Captured by `PORT_SYNC_CAPTURE_DIR=tests/fixtures/flink-2.3.0 cargo nextest run -p e2e
    /// --test port_sync_flink -E 'test(the_service_targets)'` (tests/fixtures/README.md).
    fn bind_port_capture(case: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/flink-2.3.0/jobmanager-config-{case}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn rpc_pair(case: &str) -> Option<PortPair> {
        parse_config(&bind_port_capture(case), &rpc_and_blob())
            .unwrap()
            .pair("rpc")
    }

    #[test]
    fn without_a_bind_port_flink_listens_on_the_port_it_advertises() {
        assert_eq!(rpc_pair("no-bind-port"), Some(PortPair::same(45513)));
    }

    #[test]
    fn with_a_bind_port_and_the_ha_port_at_its_default_flink_advertises_the_bind_port() {
        assert_eq!(
            rpc_pair("bind-port-ha-port-default"),
            Some(PortPair::same(45213))
        );
    }

    #[test]
    fn with_a_bind_port_and_a_pinned_ha_range_the_target_is_the_bind_port() {
        assert_eq!(
            rpc_pair("bind-port-ha-range"),
            Some(PortPair {
                port: 42601,
                target_port: 45151
            })
        );
        // The blob server has no bind port: it listens on what it reports.
        let desired = parse_config(&bind_port_capture("bind-port-ha-range"), &rpc_and_blob());
        assert_eq!(desired.unwrap().pair("blob"), Some(PortPair::same(37809)));
    }

    #[test]
    fn a_bad_bind_port_names_the_bind_port_key() {
        let body = br#"[{"key":"jobmanager.rpc.port","value":"6123"},
                        {"key":"jobmanager.rpc.bind-port","value":"none"}]"#;
        let error = parse_config(body, &rpc_and_blob()[..1]).unwrap_err();
        assert!(
            matches!(&error, ConfigError::NotAPort { key, .. } if key == "jobmanager.rpc.bind-port"),
            "{error:?}"
        );
    }

    #[test]
    fn a_missing_key_names_the_key_and_the_port() {
        let mappings = [PortMapping::new("rpc", "jobmanager.rpc.prot")];
        let error = parse_config(CAPTURE, &mappings).unwrap_err();
        assert_eq!(
            error,
            ConfigError::KeyMissing {
                key: "jobmanager.rpc.prot".into(),
                port_name: "rpc".into()
            }
        );
        assert!(error.to_string().contains("--port rpc=jobmanager.rpc.prot"));
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        for (value, problem, said) in [
            (
                r#""abc""#,
                PortProblem::NotANumber,
                "\"abc\", which is not a port number",
            ),
            (r#""""#, PortProblem::NotANumber, "not a port number"),
            (r#""-1""#, PortProblem::NotANumber, "not a port number"),
            (r#""0""#, PortProblem::Zero, "port 0 (random)"),
            (r#""65536""#, PortProblem::TooLarge, "above 65535"),
            (
                r#""99999999999999999999999""#,
                PortProblem::TooLarge,
                "above 65535",
            ),
            ("null", PortProblem::NotANumber, "\"null\""),
        ] {
            let body = format!(r#"[{{"key":"jobmanager.rpc.port","value":{value}}}]"#);
            let mappings = [PortMapping::new("rpc", "jobmanager.rpc.port")];
            let error = parse_config(body.as_bytes(), &mappings).unwrap_err();
            assert!(
                matches!(&error, ConfigError::NotAPort { key, problem: p, .. }
                    if key == "jobmanager.rpc.port" && *p == problem),
                "{value}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains("jobmanager.rpc.port"), "{message}");
            assert!(message.contains(said), "{message}");
            assert!(message.contains("from 1 to 65535"), "{message}");
        }
    }

    #[test]
    fn a_huge_bad_value_is_shortened_in_the_message() {
        // Logged on every poll: a megabyte-long value must not become a megabyte-long line.
        let value = "x".repeat(1 << 20);
        let body = format!(r#"[{{"key":"jobmanager.rpc.port","value":"{value}"}}]"#);
        let mappings = [PortMapping::new("rpc", "jobmanager.rpc.port")];
        let message = parse_config(body.as_bytes(), &mappings)
            .unwrap_err()
            .to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
        assert!(message.contains("jobmanager.rpc.port = \"xxx"), "{message}");
        assert!(message.contains("…"), "{message}");
        assert!(message.contains("not a port number"), "{message}");
    }

    #[test]
    fn a_json_number_value_is_taken_too() {
        let body = br#"[{"key":"jobmanager.rpc.port","value":6123}]"#;
        let mappings = [PortMapping::new("rpc", "jobmanager.rpc.port")];
        assert_eq!(
            parse_config(body, &mappings),
            Ok(DesiredPorts::from([("rpc", 6123)]))
        );
    }

    #[test]
    fn an_html_error_page_is_called_one() {
        let body = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>";
        let error = parse_config(body, &rpc_and_blob()).unwrap_err();
        assert!(matches!(error, ConfigError::Html { .. }), "{error:?}");
        assert!(error.to_string().contains("HTML page"));
        assert!(error.to_string().contains("502 Bad Gateway"));
    }

    #[test]
    fn text_that_is_not_json_is_shown() {
        let error = parse_config(b"not found", &rpc_and_blob()).unwrap_err();
        assert!(matches!(error, ConfigError::NotJson { .. }), "{error:?}");
        assert!(error.to_string().contains("\"not found\""));
    }

    #[test]
    fn json_of_the_wrong_shape_says_what_it_found() {
        for (body, said) in [
            (r#"{"errors":["Not found."]}"#, "a JSON object"),
            (
                r#"[["jobmanager.rpc.port","1"]]"#,
                "entry 0 is [\"jobmanager.rpc.port\",\"1\"]",
            ),
            (r#"[{"key":1,"value":"2"}]"#, "entry 0 is"),
        ] {
            let error = parse_config(body.as_bytes(), &rpc_and_blob()).unwrap_err();
            assert!(matches!(error, ConfigError::WrongShape { .. }), "{error:?}");
            assert!(error.to_string().contains(said), "{error}");
        }
    }

    /// A cause chain as the client's looks (against an untrusted server): hyper-util's
    /// error over an `io::Error` (Other) over the TLS stream's
    /// `io::Error` (InvalidData), which carries the rustls error.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn refused(certificate: rustls::CertificateError) -> Wrapper {
        Wrapper(std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(certificate),
        )))
    }

    #[test]
    fn an_untrusted_certificate_without_a_ca_file_asks_for_jobmanager_ca() {
        let error = failure_of(&refused(rustls::CertificateError::UnknownIssuer), None);
        assert!(error.is_certificate());
        let message = error.to_string();
        assert!(message.contains("not trusted"), "{message}");
        assert!(message.contains("UnknownIssuer"), "{message}");
        assert!(message.contains("system's trust store"), "{message}");
        assert!(message.contains("--jobmanager-ca FILE"), "{message}");
    }

    #[test]
    fn an_untrusted_certificate_with_a_ca_file_names_the_file() {
        let ca = Path::new("/etc/flink/tls/ca.pem");
        let error = failure_of(&refused(rustls::CertificateError::BadSignature), Some(ca));
        let message = error.to_string();
        assert!(message.contains("not trusted"), "{message}");
        assert!(
            message.contains("--jobmanager-ca /etc/flink/tls/ca.pem"),
            "{message}"
        );
        assert!(!message.contains("system's trust store"), "{message}");
    }

    #[test]
    fn a_certificate_for_another_name_says_so_and_not_to_change_the_ca() {
        let error = failure_of(&refused(rustls::CertificateError::NotValidForName), None);
        let message = error.to_string();
        assert!(message.contains("does not name the host"), "{message}");
        assert!(!message.contains("--jobmanager-ca"), "{message}");

        let error = failure_of(&refused(rustls::CertificateError::Expired), None);
        assert!(
            matches!(
                error,
                FetchError::Certificate {
                    problem: CertificateProblem::Other,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("refused"), "{error}");
    }

    #[test]
    fn other_failures_show_the_innermost_cause() {
        let refused = Wrapper(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(
            failure_of(&refused, None),
            FetchError::Unreachable("Connection refused (os error 111)".into())
        );
    }

    #[test]
    fn the_config_url_keeps_a_path_prefix() {
        let url = |s: &str| s.parse::<JobManagerUrl>().unwrap().config_url().to_string();
        assert_eq!(
            url("http://127.0.0.1:8081"),
            "http://127.0.0.1:8081/jobmanager/config"
        );
        assert_eq!(
            url("http://127.0.0.1:8081/"),
            "http://127.0.0.1:8081/jobmanager/config"
        );
        assert_eq!(
            url("https://jm.example/flink/?x=1#top"),
            "https://jm.example/flink/jobmanager/config"
        );
        assert_eq!(
            url("http://[::1]:8081/a/b/"),
            "http://[::1]:8081/a/b/jobmanager/config"
        );
        let parsed: JobManagerUrl = "https://jm.flink:8443/x".parse().unwrap();
        assert_eq!((parsed.host(), parsed.port()), ("jm.flink", Some(8443)));
    }

    #[test]
    fn each_timeout_names_itself_and_its_bound() {
        for (kind, said) in [
            (
                TimeoutKind::Connect,
                "connection within 2s (connect timeout)",
            ),
            (TimeoutKind::Read, "did not answer within 3s (read timeout"),
            (TimeoutKind::Request, "within 5s in all (request timeout"),
        ] {
            let message = FetchError::Timeout(kind).to_string();
            assert!(message.contains(said), "{message}");
        }
        let timed_out = Wrapper(std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timeout",
        )));
        assert!(connect_timed_out(&timed_out));
        assert!(!connect_timed_out(&refused(
            rustls::CertificateError::UnknownIssuer
        )));
    }

    /// Against a JobManager that sends its head and then a byte of body every second: no wait
    /// reaches the 3 s read timeout, so the 5 s bound on the whole request is the one that
    /// fires, and is named. Real time, as below.
    #[tokio::test]
    async fn a_trickling_jobmanager_is_a_request_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: JobManagerUrl = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let _trickling = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0; 1024];
            let _ = stream.read(&mut head).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                .await;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if stream.write_all(b" ").await.is_err() {
                    return;
                }
            }
        });
        let jobmanager = JobManager::new(&url, None).unwrap();
        let fetched = jobmanager.fetch_config().await;
        assert_eq!(fetched, Err(FetchError::Timeout(TimeoutKind::Request)));
        let message = fetched.unwrap_err().to_string();
        assert!(message.contains("within 5s in all"), "{message}");
    }

    /// Against a listener that takes the connection and never answers: a read timeout,
    /// named as one. Real time (3 s): on a paused clock tokio would advance to the connect
    /// timer while the loopback connect is still in flight.
    #[tokio::test]
    async fn a_silent_jobmanager_is_a_read_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: JobManagerUrl = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let _held = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(stream);
        });
        let jobmanager = JobManager::new(&url, None).unwrap();
        assert_eq!(
            jobmanager.fetch_config().await,
            Err(FetchError::Timeout(TimeoutKind::Read))
        );
    }
}
