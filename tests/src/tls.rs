//! Test certificates made with rcgen: a CA, server certificates for
//! `127.0.0.1` and `localhost`, client certificates (optionally expired,
//! optionally with a URI SAN), and revocation lists, all written as PEM
//! files in a temporary folder the way an operator would hand them to the
//! programs.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};

/// A CA and the certificates it signed, as files.
pub struct TestPki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate as DER, to compare with what a peer presented.
    pub der: Vec<u8>,
    /// Its serial number, to revoke it by.
    pub serial: Vec<u8>,
}

/// What to put in a certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Leaf<'a> {
    pub name: &'a str,
    pub client: bool,
    pub expired: bool,
    pub uri: Option<&'a str>,
    /// More names for a server certificate, beside `127.0.0.1` and
    /// `localhost` (e.g. a Swarm service's DNS name).
    pub also: &'a [&'a str],
}

impl TestPki {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).expect("writing the CA");
        TestPki {
            issuer: Issuer::new(params, key),
            dir,
            ca,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self, name: &str) -> CertFiles {
        self.leaf(Leaf {
            name,
            ..Leaf::default()
        })
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> CertFiles {
        self.leaf(Leaf {
            name,
            client: true,
            ..Leaf::default()
        })
    }

    pub fn leaf(&self, leaf: Leaf<'_>) -> CertFiles {
        let names = if leaf.client {
            Vec::new()
        } else {
            ["127.0.0.1", "localhost"]
                .iter()
                .chain(leaf.also)
                .map(|name| name.to_string())
                .collect()
        };
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.name);
        params.extended_key_usages = vec![if leaf.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if let Some(uri) = leaf.uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().expect("a URI SAN")));
        }
        if leaf.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let serial: [u8; 16] = rand::random();
        // Positive, as RFC 5280 wants serial numbers.
        let serial = [&[0x01][..], &serial[1..]].concat();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signing");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{}.pem", leaf.name)),
            key: self.dir.path().join(format!("{}-key.pem", leaf.name)),
            der: cert.der().to_vec(),
            serial,
        };
        std::fs::write(&files.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("writing a key");
        files
    }
}

impl TestPki {
    /// Writes the CA's revocation list naming `revoked` (numbered
    /// `number`, as a CA numbers the lists it issues) to `file` in the
    /// folder; answers its path.
    pub fn revocation_list(&self, file: &str, number: u64, revoked: &[&CertFiles]) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|cert| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&cert.serial),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let list = params.signed_by(&self.issuer).expect("signing the list");
        let path = self.dir.path().join(file);
        std::fs::write(&path, list.pem().expect("PEM")).expect("writing the list");
        path
    }
}

/// `path` as a flag value.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// How a client reaches a registry with TLS and a token: the same access
/// as options for the test's own client and as the environment cdctl,
/// cd-agent and `cdctl template` read (`SWITCHYARD_CA`, …).
#[derive(Debug, Clone)]
pub struct Access {
    pub ca: PathBuf,
    /// The client certificate, for mutual TLS.
    pub identity: Option<CertFiles>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
}

impl Access {
    /// The same CA and certificate with another token.
    pub fn with_token(&self, token_file: PathBuf) -> Access {
        Access {
            token_file: Some(token_file),
            ..self.clone()
        }
    }

    pub fn options(&self) -> switchyard_client::ClientOptions {
        let read = |path: &Path| std::fs::read(path).expect("a PEM file");
        let token = self.token_file.as_ref().map(|file| {
            let text = std::fs::read_to_string(file).expect("a token file");
            text.trim().to_string()
        });
        switchyard_client::ClientOptions {
            tls: switchyard_client::ClientTls {
                ca: Some(read(&self.ca)),
                identity: self
                    .identity
                    .as_ref()
                    .map(|files| (read(&files.cert), read(&files.key))),
            },
            token,
            ..switchyard_client::ClientOptions::default()
        }
    }

    pub fn client(&self, url: &str) -> switchyard_client::RegistryClient {
        switchyard_client::RegistryClient::with_options(url, &self.options()).expect("a client")
    }

    /// A client of the registry at `url`, once that registry answers it
    /// (within `patience`).
    pub async fn client_when_serving(
        &self,
        url: &str,
        patience: std::time::Duration,
    ) -> switchyard_client::RegistryClient {
        let client = self.client(url);
        let client_ref = &client;
        crate::eventually(patience, || async move {
            client_ref.list_services().await.map_err(|e| e.to_string())
        })
        .await;
        client
    }

    /// The environment of a Switchyard program with this access.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("SWITCHYARD_CA", arg(&self.ca).to_string())];
        if let Some(files) = &self.identity {
            env.push(("SWITCHYARD_CERT", arg(&files.cert).to_string()));
            env.push(("SWITCHYARD_KEY", arg(&files.key).to_string()));
        }
        if let Some(file) = &self.token_file {
            env.push(("SWITCHYARD_TOKEN_FILE", arg(file).to_string()));
        }
        env
    }
}

/// `env` as the `(&str, &str)` pairs `cdctl_async` takes.
pub fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
