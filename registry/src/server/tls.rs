//! TLS on the registry's listener (rustls, with ring): the certificate and
//! key from PEM files, client certificates verified against a CA when one
//! is given (required or optional), and the certificate re-read on SIGHUP
//! without dropping a connection: new handshakes get the new one, open
//! connections and their watch streams carry on.
//!
//! The handshake runs in the registry's own accept loop (`incoming.rs`)
//! rather than tonic's, because tonic's TLS configuration is fixed for the
//! life of the server and cannot rotate a certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// Where the registry's TLS material is, as the flags name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate (needs `client_ca`).
    pub require_client_cert: bool,
}

/// The listener's TLS: an acceptor whose certificate can be replaced.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Rotating>,
    files: TlsFiles,
}

impl Tls {
    /// Reads the files and builds the acceptor; the error says which file
    /// is wrong.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Self> {
        let provider = Arc::new(ring::default_provider());
        let current = Arc::new(Rotating {
            key: RwLock::new(certified_key(files, &provider)?),
        });
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?;
        let builder = match &files.client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(path)? {
                    roots.add(cert).with_context(|| {
                        format!("{} holds a certificate that is not a CA", path.display())
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
                let verifier = if files.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .with_context(|| format!("using {} as the client CA", path.display()))?,
                )
            }
            None => {
                anyhow::ensure!(
                    !files.require_client_cert,
                    "--tls-require-client-cert needs --tls-client-ca, the CA that signs them"
                );
                builder.with_no_client_auth()
            }
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&current) as Arc<_>);
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files: files.clone(),
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Re-reads the certificate and key; on error the old ones stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let provider = ring::default_provider();
        let key = certified_key(&self.files, &provider)?;
        match self.current.key.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }
}

/// The certificate every handshake gets; replaced on reload.
#[derive(Debug)]
struct Rotating {
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Rotating {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = match self.key.read() {
            Ok(key) => key,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(Arc::clone(&key))
    }
}

fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = certificates(&files.cert)?;
    let pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        anyhow::anyhow!(
            "{} holds no PEM private key ({error}): give the key of --tls-cert",
            files.key.display()
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "{} and {} do not make a usable certificate and key",
            files.cert.display(),
            files.key.display()
        )
    })?;
    Ok(Arc::new(key))
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow::anyhow!("{} is not PEM: {error}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
