//! The stand-in's TLS: a CA made fresh at every start, and a server certificate for
//! 127.0.0.1, localhost and the address it listens on, signed by it, so clients verify the server exactly as they verify
//! a real cluster (against the kubeconfig's certificate-authority-data), never skipping it.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

pub(crate) struct ServerTls {
    /// The CA certificate in PEM, for kubeconfigs and test clients.
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
}

fn tls_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("kube-api stand-in TLS set-up: {error}"))
}

pub(crate) fn make_server_tls(address: IpAddr) -> io::Result<ServerTls> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "testbed kube-api stand-in CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(tls_error)?)
        .map_err(tls_error)?;

    // The names clients use for the server; rcgen makes IP SANs of the addresses.
    let mut names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    if !address.is_loopback() {
        names.push(address.to_string());
    }
    let mut server_params = CertificateParams::new(names).map_err(tls_error)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_key = KeyPair::generate().map_err(tls_error)?;
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .map_err(tls_error)?;

    // ring, like port-sync's kube client: one crypto provider across the workspace.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .map_err(tls_error)?;
    // Only HTTP/1.1 is served; saying so keeps clients that offer h2 from trying it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    Ok(ServerTls {
        ca_pem: ca.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
