//! Verification as production needs it: the load balancer is dialled, but TLS and HTTP speak
//! as the public host its ACM certificate names (the domain's DNS need not point there yet);
//! the service requires an API key, presented in a header; the symbol comes from the service's
//! own list. The stand-in for the load balancer is a TLS terminator on 127.0.0.1 with a
//! certificate for `markets.test` from a test CA, in front of a real tickstream server.
//!
//! The probe trusts the platform's roots, read from `SSL_CERT_FILE` when set; the test runs
//! its scenario in a child process of itself with that variable pointing at the test CA.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tickstream_deployer::report::Reporter;
use tickstream_deployer::verify::{self, ApiKey, Target};

const CHILD: &str = "TICKSTREAM_VERIFY_TEST_DIR";
const NAME: &str =
    "verify::verification_dials_the_load_balancer_as_the_public_host_and_presents_the_key";

#[test]
fn verification_dials_the_load_balancer_as_the_public_host_and_presents_the_key() {
    let Some(dir) = std::env::var_os(CHILD) else {
        // The parent: make the CA and the certificate, then run the scenario with them trusted.
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "tickstream test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["markets.test".to_string()])
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("ca");
        std::fs::write(dir.path().join("leaf.pem"), leaf.pem()).expect("leaf");
        std::fs::write(dir.path().join("leaf.key"), leaf_key.serialize_pem()).expect("key");
        let status = Command::new(std::env::current_exe().expect("this test"))
            .args(["--exact", NAME, "--nocapture"])
            .env(CHILD, dir.path())
            .env("SSL_CERT_FILE", dir.path().join("ca.pem"))
            .status()
            .expect("run the scenario");
        assert!(
            status.success(),
            "the scenario failed (its output is above)"
        );
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(scenario(&dir));
}

/// A TLS terminator for `markets.test` in front of `backend`, as a load balancer is.
async fn load_balancer(dir: &std::path::Path, backend: std::net::SocketAddr) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    tickstream_deployer::tls();
    let certs = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .expect("pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    port
}

async fn scenario(dir: &std::path::Path) {
    let config = tickstream::config::Config {
        api_keys: vec!["k-verify".into()],
        sim_symbols: vec!["SPY".into(), "AAPL".into()],
        ..tickstream::config::Config::default()
    };
    let state = tickstream::AppState::new(config).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend = listener.local_addr().expect("addr");
    tokio::spawn(tickstream::run(listener, state, std::future::pending()));
    let port = load_balancer(dir, backend).await;
    let public = format!("wss://markets.test:{port}/ws");
    let lb = format!("127.0.0.1:{port}");

    // Through the load balancer, as the public host, with the key: verified.
    let report = Reporter::recording();
    let verified = verify::websocket(
        &Target {
            url: public.clone(),
            connect_to: Some(lb.clone()),
            api_key: Some(ApiKey::new("k-verify".into())),
        },
        Duration::from_secs(30),
        &report,
    )
    .await
    .expect("verified");
    assert_eq!(
        verified.symbol, "SPY",
        "the service's first symbol, not a fixed one"
    );
    assert!(
        verified.sample.contains("\"symbol\":\"SPY\""),
        "{}",
        verified.sample
    );
    assert!(
        report
            .lines()
            .iter()
            .any(|l| l.contains("markets.test does not resolve yet")),
        "{:?}",
        report.lines()
    );

    // Without a key the service answers 401: said at once, with where a key comes from.
    let err = verify::websocket(
        &Target {
            url: public.clone(),
            connect_to: Some(lb.clone()),
            api_key: None,
        },
        Duration::from_secs(30),
        &Reporter::recording(),
    )
    .await
    .expect_err("a key is required");
    assert!(err.to_string().contains("DEPLOY_VERIFY_API_KEY"), "{err}");

    // The load balancer's own name is not the certificate's: that is why the public URL exists.
    let err = verify::websocket(
        &Target {
            url: format!("wss://127.0.0.1:{port}/ws"),
            connect_to: None,
            api_key: Some(ApiKey::new("k-verify".into())),
        },
        Duration::from_secs(2),
        &Reporter::recording(),
    )
    .await
    .expect_err("the name check fails");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}
