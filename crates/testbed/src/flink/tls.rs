//! REST SSL for test JobManagers (`security.ssl.rest.*`): a small CA and a server certificate
//! for 127.0.0.1 and localhost signed by it, made by the JDK's own `keytool` as an operator
//! would, in PKCS12 stores Flink reads; the CA also as PEM, for port-sync's `--jobmanager-ca`
//! and the test bed's own REST reader.
//!
//! `keytool -genkeypair -signer` (JDK 17) makes and signs the server key pair in one step, the
//! same as `-certreq`, `-gencert` and importing the reply, with three JVM starts fewer (each
//! takes 1-3 s on the shared machine). The CA's key is deleted from the server keystore
//! afterwards, so Flink's key manager sees one key, the server's.
//!
//! keytool comes with the JRE (openjdk-17-jre-headless here), which Debian's zookeeperd
//! pulls in and Flink needs anyway.

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tempfile::TempDir;

const SERVER_ALIAS: &str = "rest";
const CA_ALIAS: &str = "ca";
/// Certificates live this many days: long enough for any test run, short if one leaks.
const VALIDITY_DAYS: &str = "2";

/// A CA, a server keystore and a truststore in a private dir, removed on drop: keep this
/// alive while a JobManager using it runs (it reads the stores at every start).
pub struct RestTls {
    dir: TempDir,
    password: String,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for RestTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestTls")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl RestTls {
    /// Makes the CA and the stores with `keytool` (`$JAVA_HOME/bin/keytool` when set, else
    /// the one on PATH); a few seconds.
    pub fn make() -> io::Result<RestTls> {
        let dir = tempfile::Builder::new()
            .prefix("testbed-flink-tls-")
            .tempdir()?;
        let password = format!("testbed-{:016x}", fastrand::u64(..));
        let keystore = dir.path().join("keystore.p12");
        let truststore = dir.path().join("truststore.p12");
        let ca_pem = dir.path().join("ca.pem");
        let store = |path: &Path| -> Vec<OsString> {
            vec![
                "-keystore".into(),
                path.into(),
                "-storetype".into(),
                "PKCS12".into(),
                "-storepass".into(),
                password.as_str().into(),
            ]
        };
        // EC P-256: fast to make, and both the JDK's TLS and rustls (ring) speak it.
        let key = ["-keyalg", "EC", "-groupname", "secp256r1"];
        keytool(
            "make the CA",
            store(&keystore),
            &[
                &["-genkeypair", "-alias", CA_ALIAS],
                &["-dname", "CN=flink-ha-sidecars testbed REST CA"],
                &["-validity", VALIDITY_DAYS],
                &["-ext", "bc:c=ca:true,pathlen:0"],
                &["-ext", "ku:c=keyCertSign,cRLSign"],
                &key,
            ],
        )?;
        keytool(
            "make the server certificate",
            store(&keystore),
            &[
                &["-genkeypair", "-alias", SERVER_ALIAS, "-signer", CA_ALIAS],
                &["-dname", "CN=flink-jobmanager"],
                &["-validity", VALIDITY_DAYS],
                &["-ext", "san=ip:127.0.0.1,dns:localhost"],
                &["-ext", "eku=serverAuth"],
                &["-ext", "ku:c=digitalSignature"],
                &key,
            ],
        )?;
        let mut export = store(&keystore);
        export.extend(["-file".into(), ca_pem.clone().into()]);
        keytool(
            "export the CA as PEM",
            export,
            &[&["-exportcert", "-rfc", "-alias", CA_ALIAS]],
        )?;
        let mut import = store(&truststore);
        import.extend(["-file".into(), ca_pem.clone().into()]);
        keytool(
            "make the truststore",
            import,
            &[&["-importcert", "-noprompt", "-alias", CA_ALIAS]],
        )?;
        keytool(
            "remove the CA's key from the server keystore",
            store(&keystore),
            &[&["-delete", "-alias", CA_ALIAS]],
        )?;
        let client = client_config(&fs::read(&ca_pem)?)?;
        Ok(RestTls {
            dir,
            password,
            client,
        })
    }

    /// The CA certificate in PEM, for `--jobmanager-ca`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// PKCS12: the server's key and its chain (server certificate, CA).
    pub fn keystore(&self) -> PathBuf {
        self.dir.path().join("keystore.p12")
    }

    /// PKCS12: the CA as a trusted certificate.
    pub fn truststore(&self) -> PathBuf {
        self.dir.path().join("truststore.p12")
    }

    /// The Flink settings that turn REST SSL on with these stores.
    pub fn flink_settings(&self) -> Vec<(String, String)> {
        let path = |p: PathBuf| p.display().to_string();
        [
            ("security.ssl.rest.enabled", "true".to_owned()),
            ("security.ssl.rest.keystore", path(self.keystore())),
            ("security.ssl.rest.keystore-type", "PKCS12".to_owned()),
            ("security.ssl.rest.keystore-password", self.password.clone()),
            // PKCS12 keeps one password for the store and its keys.
            ("security.ssl.rest.key-password", self.password.clone()),
            ("security.ssl.rest.truststore", path(self.truststore())),
            ("security.ssl.rest.truststore-type", "PKCS12".to_owned()),
            (
                "security.ssl.rest.truststore-password",
                self.password.clone(),
            ),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// A rustls client (ring) that trusts this CA alone.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.client)
    }
}

fn keytool(what: &str, store: Vec<OsString>, args: &[&[&str]]) -> io::Result<()> {
    let program = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("keytool"))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("keytool"));
    let mut command = Command::new(&program);
    // keytool is a JVM: the client compiler and the serial collector start it sooner.
    command.args(["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"]);
    command.args(args.iter().flat_map(|group| group.iter()));
    command.args(store);
    let output = command.output().map_err(|error| {
        io::Error::new(
            error.kind(),
            format!(
                "cannot run {} to {what} (a JDK is needed): {error}",
                program.display()
            ),
        )
    })?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "keytool could not {what} ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

fn client_config(ca_pem: &[u8]) -> io::Result<Arc<rustls::ClientConfig>> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        let certificate =
            certificate.map_err(|error| invalid(format!("keytool's CA PEM: {error}")))?;
        roots
            .add(certificate)
            .map_err(|error| invalid(format!("keytool's CA certificate: {error}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("keytool's CA PEM holds no certificate".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
