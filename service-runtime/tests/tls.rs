//! The TLS acceptor: self-signed at first start and reused, configured
//! files, errors naming the file, and a real handshake over loopback.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use service_runtime::tls::self_signed_paths;
use service_runtime::{TlsConfig, TlsError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

fn client_trusting(cert_pem: &std::path::Path) -> TlsConnector {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn self_signed_certificate_is_made_once_and_completes_a_handshake() {
    let root = tempfile::tempdir().unwrap();
    let config = msgconf::Config::new();
    let tls = TlsConfig::from_config(&config, root.path()).unwrap();
    assert!(tls.is_self_signed());
    let (cert, key) = self_signed_paths(root.path());
    assert_eq!(tls.cert_file(), cert);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read(&cert).unwrap();

    // reused at the next start
    let again = TlsConfig::from_config(&config, root.path()).unwrap();
    assert_eq!(std::fs::read(&cert).unwrap(), first);
    assert!(again.is_self_signed());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = again.acceptor();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        tls.write_all(b"* OK secure\r\n").await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = client_trusting(&cert).connect(name, tcp).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "* OK secure\r\n");
    server.await.unwrap();
}

#[test]
fn configured_files_are_relative_to_config_and_errors_name_the_file() {
    let root = tempfile::tempdir().unwrap();
    // make a certificate to point at
    let made = tempfile::tempdir().unwrap();
    let (cert, key) = service_runtime::tls::ensure_self_signed(made.path()).unwrap();
    let certs = root.path().join("config/certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&cert, certs.join("server.pem")).unwrap();
    std::fs::copy(&key, certs.join("server.key")).unwrap();

    let mut config = msgconf::Config::new();
    config
        .set("service.ssl.certfile", "certs/server.pem")
        .unwrap();
    config
        .set("service.ssl.keyfile", "certs/server.key")
        .unwrap();
    let tls = TlsConfig::from_config(&config, root.path()).unwrap();
    assert!(!tls.is_self_signed());
    assert_eq!(tls.cert_file(), certs.join("server.pem"));
    assert!(!self_signed_paths(root.path()).0.exists());

    // a missing file
    config
        .set("service.ssl.keyfile", "certs/missing.key")
        .unwrap();
    let e = TlsConfig::from_config(&config, root.path()).unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }));
    let text = e.to_string();
    assert!(
        text.contains(&certs.join("missing.key").display().to_string()),
        "{text}"
    );
    assert!(text.contains("private key"), "{text}");

    // a file that is not PEM
    std::fs::write(certs.join("junk.pem"), "not a certificate").unwrap();
    config
        .set("service.ssl.keyfile", "certs/server.key")
        .unwrap();
    config
        .set("service.ssl.certfile", "certs/junk.pem")
        .unwrap();
    let text = TlsConfig::from_config(&config, root.path())
        .unwrap_err()
        .to_string();
    assert!(text.contains("junk.pem"), "{text}");

    // only one of the two
    let mut config = msgconf::Config::new();
    config
        .set("service.ssl.certfile", "certs/server.pem")
        .unwrap();
    let text = TlsConfig::from_config(&config, root.path())
        .unwrap_err()
        .to_string();
    assert!(text.contains("service.ssl.keyfile"), "{text}");
}
