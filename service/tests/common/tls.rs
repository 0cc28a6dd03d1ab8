//! TLS for local venue doubles: a throwaway CA, a certificate for 127.0.0.1 signed by it, and
//! the CA's PEM file for the server under test to trust (`--tls-ca-file`), so `wss://` and
//! `https://` are exercised exactly as against a venue, certificate checks included.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

pub struct TestTls {
    _dir: tempfile::TempDir,
    /// The CA certificate, PEM.
    pub ca_file: PathBuf,
    /// The server's certificate and key, PEM (for servers that read files: redis-server).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub acceptor: TlsAcceptor,
}

impl TestTls {
    /// A CA and a server certificate for `names` (IP addresses or DNS names).
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // A name of its own, as distinct CAs have.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("tickstream venue double CA {n}"),
        );
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write the CA");
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, leaf.pem()).expect("write the certificate");
        std::fs::write(&key_file, leaf_key.serialize_pem()).expect("write the key");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("server config");
        Self {
            _dir: dir,
            ca_file,
            cert_file,
            key_file,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }
}
