//! TLS on the registry's listener (rustls, with ring): the certificate and
//! key from PEM files, client certificates verified against a CA when one
//! is given (required or optional) and checked against revocation lists
//! (`--tls-client-crl`), and all of it re-read on SIGHUP without dropping
//! a connection: new handshakes get the new configuration, open
//! connections and their watch streams carry on. A revoked client is
//! refused from its next connection on; revoke its token too to end what
//! it holds open.
//!
//! The handshake runs in the registry's own accept loop (`incoming.rs`)
//! rather than tonic's, because tonic's TLS configuration is fixed for the
//! life of the server and cannot rotate a certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer,
};
use tokio_rustls::rustls::server::{
    ClientHello, ResolvesServerCert, WantsServerCert, WebPkiClientVerifier,
};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ConfigBuilder, RootCertStore, ServerConfig};

/// Where the registry's TLS material is, as the flags name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates.
    pub client_ca: Option<PathBuf>,
    /// PEM certificate revocation lists of `client_ca`.
    pub client_crl: Option<PathBuf>,
    /// Refuse clients without a certificate (needs `client_ca`).
    pub require_client_cert: bool,
}

/// The listener's TLS: a configuration that a reload replaces whole.
#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    files: TlsFiles,
}

impl Tls {
    /// Reads the files and builds the configuration; the error says which
    /// file is wrong.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Self> {
        Ok(Tls {
            current: Arc::new(RwLock::new(server_config(files)?)),
            files: files.clone(),
        })
    }

    /// What the next handshake runs with.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(Arc::clone(&current))
    }

    /// Re-reads every file (certificate, key, client CA, revocation
    /// lists); on error the old configuration stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }
}

fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(ring::default_provider());
    let key = certified_key(files, &provider)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?;
    let builder = client_verifier(files, builder, provider)?;
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(key)));
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Client certificates as the files say: verified against the client CA
/// and its revocation lists, or not asked for.
fn client_verifier(
    files: &TlsFiles,
    builder: ConfigBuilder<ServerConfig, tokio_rustls::rustls::WantsVerifier>,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<ConfigBuilder<ServerConfig, WantsServerCert>> {
    let Some(path) = &files.client_ca else {
        anyhow::ensure!(
            !files.require_client_cert,
            "--tls-require-client-cert needs --tls-client-ca, the CA that signs them"
        );
        anyhow::ensure!(
            files.client_crl.is_none(),
            "--tls-client-crl needs --tls-client-ca, the CA whose revocations it lists"
        );
        return Ok(builder.with_no_client_auth());
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .with_context(|| format!("{} holds a certificate that is not a CA", path.display()))?;
    }
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
    if let Some(crl) = &files.client_crl {
        // Only leaves are looked up: a list from the client CA covers the
        // certificates it signed, and an unknown status stays an error.
        verifier = verifier
            .with_crls(revocation_lists(crl)?)
            .only_check_end_entity_revocation();
    }
    if !files.require_client_cert {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier
        .build()
        .with_context(|| format!("using {} as the client CA", path.display()))?;
    Ok(builder.with_client_cert_verifier(verifier))
}

fn revocation_lists(path: &Path) -> anyhow::Result<Vec<CertificateRevocationListDer<'static>>> {
    let pem = read(path)?;
    let lists = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow::anyhow!("{} is not PEM: {error}", path.display()))?;
    anyhow::ensure!(
        !lists.is_empty(),
        "{} holds no PEM revocation list (-----BEGIN X509 CRL-----)",
        path.display()
    );
    Ok(lists)
}

/// The certificate every handshake of one configuration gets.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
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
