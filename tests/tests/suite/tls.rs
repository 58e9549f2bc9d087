//! TLS between clients and the registry, with certificates made in the test
//! (rcgen): server TLS verified against the right CA only, mutual TLS that
//! refuses missing, expired and foreign client certificates, rotation on
//! SIGHUP that keeps open streams, revocation lists and a new client CA
//! taken on SIGHUP, and `https://` that is never plaintext.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use switchyard_client::{ClientError, ClientOptions, ClientTls, RegistryClient};
use switchyard_model::watch::WatchEvent;
use switchyard_tests::process::{RegistryProcess, cdctl_async, explain, lines_with};
use switchyard_tests::tls::{Leaf, TestPki, arg};
use switchyard_tests::{eventually, instance};
use tokio_rustls::rustls;

/// A registry serving TLS with a certificate of `pki`, plus extra flags.
fn tls_registry(pki: &TestPki, data: &str, extra: &[&str]) -> RegistryProcess {
    let server = pki.server("server");
    let mut args = vec![
        "--tls-cert",
        arg(&server.cert),
        "--tls-key",
        arg(&server.key),
    ];
    args.extend_from_slice(extra);
    RegistryProcess::start(&pki.dir().join(data), &args)
}

fn https(registry: &RegistryProcess) -> String {
    format!("https://{}", registry.address)
}

/// `cdctl services` against `url` with `flags`: its exit code.
async fn services(url: &str, flags: &[&str]) -> Option<i32> {
    let mut args = vec!["--timeout", "3s"];
    args.extend_from_slice(flags);
    args.push("services");
    let output = cdctl_async(url, &args, &[]).await;
    if !output.status.success() {
        println!("cdctl {flags:?}: {}", explain(&output));
    }
    output.status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_ca_the_client_names() {
    let pki = TestPki::new("right");
    let other = TestPki::new("other");
    let registry = tls_registry(&pki, "data", &[]);
    let url = https(&registry);
    assert_eq!(services(&url, &["--ca", arg(&pki.ca)]).await, Some(0));
    assert_ne!(
        services(&url, &["--ca", arg(&other.ca)]).await,
        Some(0),
        "wrong CA"
    );
    assert_ne!(
        services(&url, &[]).await,
        Some(0),
        "the system's roots do not know it"
    );
    let plaintext = format!("http://{}", registry.address);
    assert_ne!(
        services(&plaintext, &[]).await,
        Some(0),
        "no plaintext on a TLS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_missing_expired_and_foreign_client_certificates() {
    let pki = TestPki::new("mtls");
    let other = TestPki::new("foreign");
    let registry = tls_registry(
        &pki,
        "data",
        &["--tls-client-ca", arg(&pki.ca), "--tls-require-client-cert"],
    );
    let url = https(&registry);
    let ca = ["--ca", arg(&pki.ca)];
    let good = pki.client("agent-a");
    let expired = pki.leaf(Leaf {
        name: "old",
        client: true,
        expired: true,
        ..Leaf::default()
    });
    let foreign = other.client("intruder");
    for (files, accepted) in [(&good, true), (&expired, false), (&foreign, false)] {
        let flags = [
            ca[0],
            ca[1],
            "--cert",
            arg(&files.cert),
            "--key",
            arg(&files.key),
        ];
        let code = services(&url, &flags).await;
        assert_eq!(
            code == Some(0),
            accepted,
            "{}: exit {code:?}",
            files.cert.display()
        );
    }
    assert_ne!(services(&url, &ca).await, Some(0), "no client certificate");
}

/// The certificate a fresh TLS connection to `address` is shown.
async fn presented_certificate(address: std::net::SocketAddr, ca: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("a CA certificate")).expect("a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let tls = connector.connect(name, tcp).await.expect("a TLS handshake");
    let chain = tls.get_ref().1.peer_certificates().expect("a certificate");
    chain[0].to_vec()
}

async fn next_event(
    watch: &mut (impl futures::Stream<Item = Result<WatchEvent, ClientError>> + Unpin),
) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(watch))
        .await
        .expect("an event within 10s")
        .expect("open")
        .expect("no error")
}

/// SIGHUP to `registry`, and wait for its log to say it reloaded.
async fn hang_up(registry: &RegistryProcess, reloads_before: usize) {
    let pid = registry.child.id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(hup.success());
    eventually(Duration::from_secs(10), || async {
        match lines_with(&registry.log, "TLS certificate") {
            n if n > reloads_before => Ok(()),
            _ => Err("not reloaded yet".to_string()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificates_and_a_new_client_ca_take_effect_on_sighup() {
    let pki = TestPki::new("revoking");
    let other = TestPki::new("joining");
    let kept = pki.client("kept");
    let stolen = pki.client("stolen");
    let newcomer = other.client("newcomer");
    let client_ca = pki.dir().join("client-ca.pem");
    std::fs::copy(&pki.ca, &client_ca).expect("copy the CA");
    let crl = pki.revocation_list("client.crl", 1, &[]);
    let registry = tls_registry(
        &pki,
        "data",
        &[
            "--tls-client-ca",
            arg(&client_ca),
            "--tls-client-crl",
            arg(&crl),
            "--tls-require-client-cert",
        ],
    );
    let url = https(&registry);
    let accepted = |files: &switchyard_tests::tls::CertFiles| {
        let flags = [
            "--ca".to_string(),
            arg(&pki.ca).to_string(),
            "--cert".to_string(),
            arg(&files.cert).to_string(),
            "--key".to_string(),
            arg(&files.key).to_string(),
        ];
        let url = url.clone();
        async move {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            services(&url, &flags).await == Some(0)
        }
    };
    assert!(accepted(&kept).await && accepted(&stolen).await);
    assert!(!accepted(&newcomer).await, "another CA's client");

    // The CA revokes `stolen`; the operator adds the other CA and its
    // list (a CA without one is refused, as nginx and OpenSSL do); SIGHUP.
    let lists = [
        pki.revocation_list("revoking.crl", 2, &[&stolen]),
        other.revocation_list("joining.crl", 1, &[]),
    ]
    .map(|list| std::fs::read_to_string(list).expect("a list"));
    std::fs::write(&crl, lists.concat()).expect("write the lists");
    let both = [
        std::fs::read_to_string(&pki.ca).expect("CA"),
        std::fs::read_to_string(&other.ca).expect("CA"),
    ]
    .concat();
    std::fs::write(&client_ca, both).expect("write the CAs");
    hang_up(&registry, lines_with(&registry.log, "TLS certificate")).await;
    assert!(!accepted(&stolen).await, "a revoked certificate is refused");
    assert!(accepted(&kept).await, "the others still get in");
    assert!(accepted(&newcomer).await, "the new CA's clients get in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_and_keeps_open_watch_streams() {
    let pki = TestPki::new("rotate");
    let first = pki.server("server");
    let registry = RegistryProcess::start(
        &pki.dir().join("data"),
        &["--tls-cert", arg(&first.cert), "--tls-key", arg(&first.key)],
    );
    let options = ClientOptions {
        tls: ClientTls::from_files(Some(&pki.ca), None, None).expect("CA"),
        ..ClientOptions::default()
    };
    let client = RegistryClient::with_options(&https(&registry), &options).expect("client");
    let watch = client.watch(&[], 0).await.expect("a watch over TLS");
    let mut watch = Box::pin(watch);
    assert!(matches!(
        next_event(&mut watch).await,
        WatchEvent::Snapshot { .. }
    ));
    assert_eq!(
        presented_certificate(registry.address, &pki.ca).await,
        first.der
    );

    // A new certificate in the same files, then SIGHUP.
    let second = pki.server("server");
    assert_ne!(first.der, second.der);
    hang_up(&registry, 0).await;
    assert_eq!(
        presented_certificate(registry.address, &pki.ca).await,
        second.der
    );
    // The stream opened before the rotation still follows the registry.
    let revision = client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register over TLS");
    loop {
        match next_event(&mut watch).await {
            WatchEvent::Changes { revision: at, .. } if at == revision => break,
            WatchEvent::Progress { .. } => continue,
            other => panic!("expected the registration, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_url_is_never_spoken_to_in_plaintext() {
    // Something listening where the https:// URL points: the first bytes it
    // gets must be a TLS handshake record, never HTTP/2's plaintext preface.
    let bait = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://{}", bait.local_addr().expect("address"));
    let reader = std::thread::spawn(move || {
        let (mut socket, _) = bait.accept().expect("cdctl connects");
        let mut first = [0u8; 1];
        socket.read_exact(&mut first).expect("a first byte");
        first[0]
    });
    let code = services(&url, &[]).await;
    assert_ne!(code, Some(0));
    assert_eq!(
        reader.join().expect("reader"),
        0x16,
        "a TLS handshake record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_holds_its_session_over_mutual_tls() {
    let pki = TestPki::new("agent");
    let registry = tls_registry(
        &pki,
        "data",
        &["--tls-client-ca", arg(&pki.ca), "--tls-require-client-cert"],
    );
    let node = pki.client("node-a");
    let _agent = switchyard_tests::process::AgentProcess::start(
        &https(&registry),
        "switchyard.test=tls-agent-none",
        &[
            "--ca",
            arg(&pki.ca),
            "--cert",
            arg(&node.cert),
            "--key",
            arg(&node.key),
        ],
    );
    eventually(Duration::from_secs(20), || async {
        match lines_with(&registry.log, "session opened") {
            0 => Err("no session yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spiffe_certificate_is_an_agent_or_proxy_identity_and_never_its_common_name() {
    let pki = TestPki::new("spiffe");
    let registry = tls_registry(
        &pki,
        "data",
        &[
            "--auth",
            "--tls-client-ca",
            arg(&pki.ca),
            "--tls-require-client-cert",
        ],
    );
    let as_holder = |files: &switchyard_tests::tls::CertFiles| {
        let tls = ClientTls::from_files(Some(&pki.ca), Some(&files.cert), Some(&files.key));
        let options = ClientOptions {
            tls: tls.expect("TLS files"),
            ..ClientOptions::default()
        };
        RegistryClient::with_options(&https(&registry), &options).expect("client")
    };
    let leaf = |name, uri| Leaf {
        name,
        client: true,
        expired: false,
        uri,
        also: &[],
    };
    let node_a = as_holder(&pki.leaf(leaf("node-a-cert", Some("spiffe://switchyard/node/node-a"))));
    node_a.list_services().await.expect("an agent reads");
    node_a
        .open_session("node-a", 60)
        .await
        .expect("its own node");
    let refused = node_a
        .open_session("node-b", 60)
        .await
        .expect_err("another node");
    assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied));
    let edge = as_holder(&pki.leaf(leaf("edge-cert", Some("spiffe://switchyard/proxy/edge-1"))));
    let report = |id: &str| switchyard_model::ProxyStatus {
        proxy_id: id.into(),
        applied_revision: 0,
        healthy: true,
        ..Default::default()
    };
    edge.report_proxy(&report("edge-1"))
        .await
        .expect("its own report");
    let refused = edge
        .report_proxy(&report("edge-2"))
        .await
        .expect_err("another proxy");
    assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied));
    // A certificate named "admin" in its CN only is nobody.
    let named = as_holder(&pki.leaf(leaf("admin", None)));
    let refused = named.list_services().await.expect_err("no identity");
    assert_eq!(refused.code(), Some(tonic::Code::Unauthenticated));
}

/// One etcd member serving clients over TLS with client certificates
/// required, its peer port plain on loopback.
struct SecureEtcd {
    child: std::process::Child,
    url: String,
    _data: tempfile::TempDir,
}

impl SecureEtcd {
    fn start(pki: &TestPki) -> Self {
        let server = pki.server("etcd");
        let data = tempfile::tempdir().expect("tempdir");
        let url = format!("https://127.0.0.1:{}", switchyard_tests::free_port());
        let peer = format!("http://127.0.0.1:{}", switchyard_tests::free_port());
        let child = std::process::Command::new("etcd")
            .args(["--name", "secure", "--data-dir"])
            .arg(data.path())
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("secure={peer}")])
            .args([
                "--cert-file",
                arg(&server.cert),
                "--key-file",
                arg(&server.key),
            ])
            .args(["--trusted-ca-file", arg(&pki.ca), "--client-cert-auth"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcd");
        SecureEtcd {
            child,
            url,
            _data: data,
        }
    }
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_reaches_an_etcd_that_requires_tls_and_a_user() {
    let pki = TestPki::new("etcd");
    let etcd = SecureEtcd::start(&pki);
    let client_cert = pki.client("registry");
    let tls = || {
        let read = |path: &std::path::Path| std::fs::read(path).expect("PEM");
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&pki.ca)))
            .identity(etcd_client::Identity::from_pem(
                read(&client_cert.cert),
                read(&client_cert.key),
            ))
    };
    // `etcdctl user add root; user grant-role root root; auth enable`.
    let mut admin = eventually(Duration::from_secs(20), || async {
        let options = etcd_client::ConnectOptions::new().with_tls(tls());
        let mut client = etcd_client::Client::connect([etcd.url.clone()], Some(options))
            .await
            .map_err(|e| e.to_string())?;
        client.status().await.map_err(|e| e.to_string())?;
        Ok(client)
    })
    .await;
    admin
        .user_add("root", "s3cret", None)
        .await
        .expect("user add");
    let _ = admin.role_add("root").await;
    admin
        .user_grant_role("root", "root")
        .await
        .expect("grant root");
    admin.auth_enable().await.expect("auth enable");

    let password = pki.dir().join("etcd-password");
    std::fs::write(&password, "s3cret\n").expect("password file");
    let mut flags = vec![
        "--store",
        "etcd",
        "--etcd-endpoints",
        &etcd.url,
        "--etcd-ca",
        arg(&pki.ca),
        "--etcd-cert",
        arg(&client_cert.cert),
        "--etcd-key",
        arg(&client_cert.key),
    ];
    // Without the user, etcd refuses the registry, which says so and exits.
    let refused = std::process::Command::new("timeout")
        .arg("30")
        .arg(switchyard_tests::process::binary("cd-registry"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(pki.dir().join("unused"))
        .args(&flags)
        .output()
        .expect("cd-registry");
    assert!(!refused.status.success(), "{}", explain(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("etcd"),
        "{}",
        explain(&refused)
    );

    flags.extend([
        "--etcd-user",
        "root",
        "--etcd-password-file",
        arg(&password),
    ]);
    let registry = RegistryProcess::start(&pki.dir().join("data"), &flags);
    let client = RegistryClient::new(&registry.url()).expect("client");
    let revision = client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("a write through TLS and etcd's auth");
    let (read_at, web) = client.get_service("web").await.expect("read");
    assert!(read_at >= revision);
    assert_eq!(web.instances.len(), 1);
}
