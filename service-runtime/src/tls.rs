//! The TLS acceptor of the services: the certificate and key named by
//! `service.ssl.certfile` and `service.ssl.keyfile` (relative to
//! `<root>/config`), or, when neither is set, a self-signed certificate
//! for this host made at first start in `<root>/config/tls/` and reused
//! afterwards.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use msgconf::registry::names;
use msgconf::Config;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Why the TLS acceptor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// One of the two file parameters is set without the other.
    #[error(
        "{set} is set but {missing} is not: set both, or neither for a self-signed certificate"
    )]
    OnlyOne {
        /// The parameter that is set.
        set: &'static str,
        /// The parameter that is missing.
        missing: &'static str,
    },
    /// A certificate or key file is missing, unreadable or not PEM.
    #[error("cannot read TLS {what} file {}: {source}", path.display())]
    Read {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The problem.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("TLS certificate file {} holds no certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("TLS certificate {} and key {} are not usable: {source}", cert.display(), key.display())]
    Invalid {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The self-signed certificate could not be made.
    #[error("cannot make a self-signed TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The self-signed certificate could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
}

/// A TLS acceptor and where its certificate came from.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    cert_file: PathBuf,
    key_file: PathBuf,
    self_signed: bool,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

/// Where the self-signed certificate and key live: `<root>/config/tls/`.
pub fn self_signed_paths(root: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join("config").join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

impl TlsConfig {
    /// Builds the acceptor from the configured files, or from the
    /// self-signed certificate (made now if it does not exist yet).
    pub fn from_config(config: &Config, root: &Path) -> Result<TlsConfig, TlsError> {
        let base = root.join("config");
        let cert_set = !config.get_str(names::SSL_CERT_FILE).is_empty();
        let key_set = !config.get_str(names::SSL_KEY_FILE).is_empty();
        match (cert_set, key_set) {
            (true, true) => TlsConfig::from_files(
                &config.get_path(names::SSL_CERT_FILE, &base),
                &config.get_path(names::SSL_KEY_FILE, &base),
            ),
            (true, false) => Err(TlsError::OnlyOne {
                set: names::SSL_CERT_FILE,
                missing: names::SSL_KEY_FILE,
            }),
            (false, true) => Err(TlsError::OnlyOne {
                set: names::SSL_KEY_FILE,
                missing: names::SSL_CERT_FILE,
            }),
            (false, false) => {
                let (cert, key) = ensure_self_signed(root)?;
                let mut tls = TlsConfig::from_files(&cert, &key)?;
                tls.self_signed = true;
                Ok(tls)
            }
        }
    }

    /// Builds the acceptor from a PEM certificate chain and a PEM private key.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<TlsConfig, TlsError> {
        let read_err = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Read { what, path, source }
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
            .map_err(read_err("certificate", cert_file))?
            .collect::<Result<_, _>>()
            .map_err(read_err("certificate", cert_file))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert_file.to_path_buf(),
            });
        }
        let key =
            PrivateKeyDer::from_pem_file(key_file).map_err(read_err("private key", key_file))?;
        let invalid = |source| TlsError::Invalid {
            cert: cert_file.to_path_buf(),
            key: key_file.to_path_buf(),
            source,
        };
        let server =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(invalid)?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(invalid)?;
        Ok(TlsConfig {
            server: Arc::new(server),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            self_signed: false,
        })
    }

    /// Offers these ALPN protocols (e.g. `h2`, `http/1.1` for mshttpd).
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> TlsConfig {
        let mut server = (*self.server).clone();
        server.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        self.server = Arc::new(server);
        self
    }

    /// The acceptor for implicit TLS and STARTTLS/STLS.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.clone())
    }

    /// The rustls server configuration.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The certificate file in use.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The key file in use.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// True when the self-signed certificate is in use.
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }
}

/// Makes the self-signed certificate (for this host name and `localhost`)
/// and its key (mode 0600) in `<root>/config/tls/` unless both exist;
/// returns their paths.
pub fn ensure_self_signed(root: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert, key) = self_signed_paths(root);
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let mut names = vec!["localhost".to_string()];
    if let Some(host) = crate::log::full_hostname() {
        if host != "localhost" {
            names.insert(0, host);
        }
    }
    let made = rcgen::generate_simple_self_signed(names)?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    if let Some(dir) = cert.parent() {
        fs::create_dir_all(dir).map_err(write_err(dir))?;
    }
    write_new(&key, made.key_pair.serialize_pem().as_bytes(), 0o600).map_err(write_err(&key))?;
    write_new(&cert, made.cert.pem().as_bytes(), 0o644).map_err(write_err(&cert))?;
    tracing::info!(
        "made a self-signed TLS certificate in {}; set {} and {} to use your own",
        cert.display(),
        names::SSL_CERT_FILE,
        names::SSL_KEY_FILE
    );
    Ok((cert, key))
}

/// Writes `path` through a temporary file created with `mode`, then renames.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
