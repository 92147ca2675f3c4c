//! Just enough HTTP to read Flink's REST API in tests: one blocking GET per connection with
//! the standard library, so the test bed needs no HTTP client. Flink's REST server answers
//! with a `content-length`, which is all this reads. A JobManager with REST SSL on
//! (`security.ssl.rest.enabled`) is read over rustls (ring, as everywhere in the workspace),
//! verified against its CA; the same HTTP reading serves both.

use rustls::pki_types::ServerName;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Flink's answers here are a few KB; a bigger one is not what a test expects.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Where a REST API listens: plain HTTP, or HTTPS verified with a rustls client config (made
/// by [`super::RestTls`] for the JobManagers of the test bed).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    pub fn http(address: SocketAddr) -> Endpoint {
        Endpoint { address, tls: None }
    }

    pub fn https(address: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Endpoint {
        Endpoint {
            address,
            tls: Some(tls),
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `http://ADDRESS` or `https://ADDRESS`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.address)
    }

    /// `GET path`, within `limit` for connecting and for each read and write (the TLS
    /// handshake included).
    pub fn get(&self, path: &str, limit: Duration) -> io::Result<Response> {
        let stream = TcpStream::connect_timeout(&self.address, limit)?;
        stream.set_read_timeout(Some(limit))?;
        stream.set_write_timeout(Some(limit))?;
        let target = Target {
            scheme: self.scheme(),
            address: self.address,
            path,
        };
        match &self.tls {
            None => exchange(stream, &target),
            Some(config) => {
                // The certificate is checked for the IP address the test bed connects to.
                let name = ServerName::from(self.address.ip());
                let connection = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(|error| io::Error::other(format!("GET {target}: {error}")))?;
                exchange(rustls::StreamOwned::new(connection, stream), &target)
            }
        }
    }
}

/// `GET path` from `address` over plain HTTP, within `limit` for connecting and for each read
/// and write.
pub fn get(address: SocketAddr, path: &str, limit: Duration) -> io::Result<Response> {
    Endpoint::http(address).get(path, limit)
}

/// What a request is for, in error messages: `GET https://127.0.0.1:8081/path: …`.
struct Target<'a> {
    scheme: &'static str,
    address: SocketAddr,
    path: &'a str,
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.address, self.path)
    }
}

/// One request and its answer on a fresh connection, plain or TLS.
fn exchange(mut stream: impl Read + Write, target: &Target<'_>) -> io::Result<Response> {
    let (path, address) = (target.path, target.address);
    stream.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    stream.flush()?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(end) = find(&received, b"\r\n\r\n") {
            break end;
        }
        let count = stream.read(&mut chunk)?;
        if count == 0 {
            return Err(bad_answer(
                target,
                "the connection closed before the headers ended",
            ));
        }
        received.extend_from_slice(&chunk[..count]);
        if received.len() > MAX_RESPONSE_BYTES {
            return Err(bad_answer(target, "headers over 16 MB"));
        }
    };
    let head = String::from_utf8_lossy(&received[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad_answer(target, &format!("no HTTP status line: {head:?}")))?;
    let mut content_length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                content_length = value.trim().parse::<usize>().ok();
            } else if name == "transfer-encoding" && !value.trim().eq_ignore_ascii_case("identity")
            {
                return Err(bad_answer(target, "a chunked answer (not supported here)"));
            }
        }
    }
    let mut body = received.split_off(header_end + 4);
    match content_length {
        Some(length) if length > MAX_RESPONSE_BYTES => {
            return Err(bad_answer(target, "a body over 16 MB"));
        }
        Some(length) => {
            while body.len() < length {
                let count = stream.read(&mut chunk)?;
                if count == 0 {
                    return Err(bad_answer(target, "the body ended early"));
                }
                body.extend_from_slice(&chunk[..count]);
            }
            body.truncate(length);
        }
        None => {
            (&mut stream)
                .take((MAX_RESPONSE_BYTES - body.len()) as u64)
                .read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `/jobmanager/config` and `/taskmanagers/<id>/config` answer `[{"key": .., "value": ..}]`.
pub fn parse_config_entries(body: &str) -> io::Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        key: String,
        value: String,
    }
    let entries: Vec<Entry> = serde_json::from_str(body).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a Flink config listing ({error}): {body}"),
        )
    })?;
    Ok(entries.into_iter().map(|e| (e.key, e.value)).collect())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn bad_answer(target: &Target<'_>, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("GET {target}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            // Byte by byte, so the reader must put the pieces together.
            for byte in answer {
                let _ = stream.write_all(&[*byte]);
            }
            // Keep-alive like Flink: the body's length, not the close, ends the answer.
            thread::sleep(Duration::from_secs(5));
        });
        address
    }

    #[test]
    fn reads_a_keep_alive_answer_by_its_content_length() {
        let address = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n\
              content-length: 19\r\n\r\n{\"taskmanagers\":[]}",
        );
        let response = get(address, "/taskmanagers", Duration::from_secs(2)).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "{\"taskmanagers\":[]}");
    }

    /// A CA and a server certificate for 127.0.0.1 signed by it: (server config, CA PEM).
    fn server_tls() -> (Arc<rustls::ServerConfig>, String) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        (Arc::new(config), ca.pem())
    }

    fn client_trusting(ca_pem: &str) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Answers one TLS connection with `answer`, keeping it open like Flink.
    fn serve_once_tls(config: Arc<rustls::ServerConfig>, answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let connection = rustls::ServerConnection::new(config).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut request = [0u8; 1024];
            if tls.read(&mut request).is_ok() {
                let _ = tls.write_all(answer);
                let _ = tls.flush();
            }
            thread::sleep(Duration::from_secs(5));
        });
        address
    }

    const CONFIG_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
        content-length: 36\r\n\r\n[{\"key\":\"rest.port\",\"value\":\"8081\"}]";

    #[test]
    fn reads_an_https_answer_from_a_server_its_ca_signed() {
        let (server, ca_pem) = server_tls();
        let address = serve_once_tls(server, CONFIG_ANSWER);
        let endpoint = Endpoint::https(address, client_trusting(&ca_pem));
        assert_eq!(endpoint.url(), format!("https://{address}"));
        let response = endpoint
            .get("/jobmanager/config", Duration::from_secs(5))
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(
            parse_config_entries(&response.body).unwrap()["rest.port"],
            "8081"
        );
    }

    #[test]
    fn refuses_an_https_server_another_ca_signed() {
        let (server, _) = server_tls();
        let (_, other_ca) = server_tls();
        let address = serve_once_tls(server, CONFIG_ANSWER);
        let error = Endpoint::https(address, client_trusting(&other_ca))
            .get("/jobmanager/config", Duration::from_secs(5))
            .unwrap_err();
        assert!(
            error.to_string().contains("invalid peer certificate"),
            "{error}"
        );
    }

    #[test]
    fn config_entries_become_a_map() {
        let map = parse_config_entries(
            r#"[{"key":"blob.server.port","value":"33533"},{"key":"jobmanager.rpc.port","value":"44215"}]"#,
        )
        .unwrap();
        assert_eq!(map["blob.server.port"], "33533");
        assert_eq!(map["jobmanager.rpc.port"], "44215");
        assert!(parse_config_entries("<html>503</html>").is_err());
    }
}
