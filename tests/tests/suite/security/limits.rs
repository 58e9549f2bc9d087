//! Every listener bounds what one source may hold and closes what it holds
//! idle: the gRPC port, the metrics and dashboard port, DNS over TCP. A
//! second loopback address (127.0.0.2) is a second source. Also: a caller
//! without a credential is refused before its request body is read, and
//! one principal cannot take every watch stream.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cd_registry::dns::{DnsConfig, TcpLimits, Zone};
use switchyard_proto::v1;
use switchyard_tests::{TestRegistry, eventually, free_port, instance, patience};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tonic::Code;

use crate::auth::{client, secured_with, token};

const HOME: [u8; 4] = [127, 0, 0, 1];
const ELSEWHERE: [u8; 4] = [127, 0, 0, 2];
/// What an HTTP/2 client sends first, and an empty SETTINGS frame.
const H2_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source");
    socket.connect(to).await.expect("connect")
}

/// Whether the other end closes `stream` (reads until the end, discarding
/// what the server says first) within the tests' patience.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 4096];
    let ended = tokio::time::timeout(patience(), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    });
    ended.await.is_ok()
}

/// A watch of every service on a connection of its own from `from`.
async fn watch_from(
    from: [u8; 4],
    registry: &TestRegistry,
) -> Result<tonic::Streaming<v1::WatchResponse>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(registry.url())
        .expect("url")
        .local_address(Some(IpAddr::from(from)))
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let mut api = v1::registry_client::RegistryClient::new(channel);
    let request = v1::WatchRequest::default();
    Ok(api.watch(request).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_port_caps_each_source_and_closes_idle_connections() {
    let registry = TestRegistry::start_with(|config| {
        config.limits.max_connections_per_source = 3;
        config.limits.idle_timeout = Duration::from_millis(500);
    })
    .await;
    // Three connections from one source, each busy with a watch.
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(watch_from(ELSEWHERE, &registry).await.expect("a watch"));
    }
    let fourth = watch_from(ELSEWHERE, &registry).await;
    assert!(
        fourth.is_err(),
        "a fourth connection from the source is refused"
    );
    let mut silent = connect_from(ELSEWHERE, registry.address).await;
    silent.write_all(H2_START).await.expect("write");
    assert!(closed(&mut silent).await, "closed at once");

    // Another source gets in, and its connection, once idle, is closed.
    let mut idle = connect_from(HOME, registry.address).await;
    idle.write_all(H2_START).await.expect("write");
    assert!(closed(&mut idle).await, "an idle connection is closed");
    // Calls kept the busy ones open past the idle timeout: they still see
    // a change made now.
    let client = registry.client();
    client
        .register(&instance("late", "late-1", 8080, None), None)
        .await
        .expect("register");
    for stream in &mut busy {
        let seen = tokio::time::timeout(patience(), async {
            loop {
                match stream.message().await {
                    Ok(Some(update)) if format!("{update:?}").contains("late-1") => return,
                    Ok(Some(_)) => continue,
                    other => panic!("the busy watch ended: {other:?}"),
                }
            }
        });
        seen.await.expect("the busy watch saw the change");
    }
    // The source's places come back when its connections close.
    drop(busy);
    eventually(patience(), || async {
        watch_from(ELSEWHERE, &registry)
            .await
            .map(drop)
            .map_err(|status| status.to_string())
    })
    .await;
}

/// A registry serving metrics, with the HTTP listener's limits adjusted.
async fn with_metrics(per_source: usize, header_timeout: Duration) -> (TestRegistry, SocketAddr) {
    let metrics = SocketAddr::from((HOME, free_port()));
    let registry = TestRegistry::start_with(|config| {
        config.metrics_listen = Some(metrics);
        config.limits.http.per_source = per_source;
        config.limits.http.header_read_timeout = header_timeout;
    })
    .await;
    (registry, metrics)
}

/// `GET /metrics` from `from` on a connection of its own: whether it
/// answered 200.
async fn scrape_from(from: [u8; 4], metrics: SocketAddr) -> bool {
    let mut stream = connect_from(from, metrics).await;
    let request = "GET /metrics HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_caps_each_source_and_closes_slow_and_idle_clients() {
    let (_registry, metrics) = with_metrics(2, Duration::from_secs(120)).await;
    let _held = [
        connect_from(HOME, metrics).await,
        connect_from(HOME, metrics).await,
    ];
    let mut third = connect_from(HOME, metrics).await;
    assert!(
        closed(&mut third).await,
        "a third connection is closed at once"
    );
    assert!(
        !scrape_from(HOME, metrics).await,
        "nor is the source served"
    );
    assert!(scrape_from(ELSEWHERE, metrics).await, "another source is");

    let (_registry, metrics) = with_metrics(2, Duration::from_millis(300)).await;
    // Headers sent a byte at a time and never finished...
    let mut slow = connect_from(HOME, metrics).await;
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHo")
        .await
        .expect("write");
    assert!(closed(&mut slow).await, "a slow sender is closed");
    // ...and a kept-alive connection with no next request are closed.
    let mut kept = connect_from(HOME, metrics).await;
    kept.write_all(b"GET /metrics HTTP/1.1\r\nHost: registry\r\n\r\n")
        .await
        .expect("write");
    assert!(
        closed(&mut kept).await,
        "an idle kept-alive connection is closed"
    );
    assert!(scrape_from(HOME, metrics).await, "the places came back");
}

/// A registry answering DNS, with its TCP listener's limits.
async fn with_dns(tcp: TcpLimits, udp_rate: Option<u32>) -> (TestRegistry, SocketAddr) {
    let dns = SocketAddr::from((HOME, free_port()));
    let registry = TestRegistry::start_with(|config| {
        config.dns = Some(DnsConfig {
            listen: dns,
            zone: Zone::new("switchyard.", 1).expect("zone"),
            tcp,
            udp_rate,
        });
    })
    .await;
    (registry, dns)
}

/// An A query for `name` with ID 0x1234 and RD, as bytes.
fn a_query(name: &str) -> Vec<u8> {
    let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    message
}

/// An A query for `name` over TCP from `from`: whether it was answered.
async fn query_from(from: [u8; 4], dns: SocketAddr, name: &str) -> bool {
    let mut stream = connect_from(from, dns).await;
    let message = a_query(name);
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&message);
    if stream.write_all(&framed).await.is_err() {
        return false;
    }
    let mut length = [0u8; 2];
    let answered = tokio::time::timeout(patience(), stream.read_exact(&mut length)).await;
    if !matches!(answered, Ok(Ok(_))) {
        return false;
    }
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).await.is_ok() && answer.starts_with(&[0x12, 0x34])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_over_tcp_caps_each_source_and_closes_idle_connections() {
    let long = TcpLimits {
        per_source: 2,
        idle: Duration::from_secs(120),
        ..TcpLimits::default()
    };
    let (_registry, dns) = with_dns(long, None).await;
    let name = "web.service.switchyard.";
    assert!(query_from(HOME, dns, name).await, "answered over TCP");
    let _held = [connect_from(HOME, dns).await, connect_from(HOME, dns).await];
    eventually(patience(), || async {
        // The answered connection's place is given back once it closes.
        let mut third = connect_from(HOME, dns).await;
        if closed(&mut third).await {
            Ok(())
        } else {
            Err("a third connection was kept".to_string())
        }
    })
    .await;
    assert!(!query_from(HOME, dns, name).await, "the source is full");
    assert!(
        query_from(ELSEWHERE, dns, name).await,
        "another source is answered"
    );

    let short = TcpLimits {
        idle: Duration::from_millis(300),
        ..long
    };
    let (_registry, dns) = with_dns(short, None).await;
    let mut idle = connect_from(HOME, dns).await;
    assert!(closed(&mut idle).await, "an idle connection is closed");
    let mut half = connect_from(HOME, dns).await;
    half.write_all(&[0, 40, 0x12]).await.expect("write");
    assert!(
        closed(&mut half).await,
        "half a query is not waited for forever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_take_every_watch_stream() {
    let (registry, admin_token) = secured_with(|config| {
        config.limits.max_watchers_per_principal = 2;
    })
    .await;
    let admin = client(&registry, &admin_token);
    let greedy = client(&registry, &token(&admin, "reader", None, &[]).await);
    let other = client(&registry, &token(&admin, "reader", None, &[]).await);
    let _first = greedy.watch(&[], 0).await.expect("a watch");
    let _second = greedy.watch(&[], 0).await.expect("a watch");
    let third = greedy.watch(&[], 0).await.err().and_then(|e| e.code());
    assert_eq!(third, Some(Code::ResourceExhausted));
    assert!(
        other.watch(&[], 0).await.is_ok(),
        "another token still watches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_credential_is_refused_before_its_body_is_read() {
    let (registry, _admin) = secured_with(|_| {}).await;
    let stream = TcpStream::connect(registry.address).await.expect("connect");
    let (h2, connection) = h2::client::handshake(stream).await.expect("HTTP/2");
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{}/switchyard.v1.Registry/Register",
        registry.address
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (response, mut body) = h2.send_request(request, false).expect("send");
    // A message that says it is 60 MiB long, and its first kilobyte: a
    // server that reads the body before it authenticates waits for the rest.
    let mut start = vec![0u8];
    start.extend_from_slice(&(60u32 << 20).to_be_bytes());
    start.extend_from_slice(&[0u8; 1024]);
    body.send_data(bytes::Bytes::from(start), false)
        .expect("send data");
    let response = tokio::time::timeout(patience(), response)
        .await
        .expect("answered without the rest of the body")
        .expect("a response");
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    assert_eq!(status.as_deref(), Some("16"), "UNAUTHENTICATED");
}

/// One UDP query from `from`: the answer's truncated bit and record count.
async fn udp_query(socket: &tokio::net::UdpSocket, dns: SocketAddr, name: &str) -> (bool, u16) {
    socket.send_to(&a_query(name), dns).await.expect("send");
    let mut answer = [0u8; 1500];
    let (length, _) = tokio::time::timeout(patience(), socket.recv_from(&mut answer))
        .await
        .expect("an answer to every query")
        .expect("receive");
    assert!(length >= 12, "a DNS header");
    (
        answer[2] & 0x02 != 0,
        u16::from_be_bytes([answer[6], answer[7]]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_over_udp_answers_a_source_past_its_rate_truncated() {
    let rate = 10;
    let (registry, dns) = with_dns(TcpLimits::default(), Some(rate)).await;
    let client = registry.client();
    let mut web = instance("web", "web-1", 8080, Some(switchyard_model::Color::Blue));
    web.address = "10.9.0.1".parse().expect("ip");
    client.register(&web, None).await.expect("register");
    client
        .set_active_color("web", Some(switchyard_model::Color::Blue), None, 0)
        .await
        .expect("live");
    let name = "web.service.switchyard.";
    let home = tokio::net::UdpSocket::bind(SocketAddr::from((HOME, 0)))
        .await
        .expect("bind");
    eventually(patience(), || async {
        match udp_query(&home, dns, name).await {
            (false, 1) => Ok(()),
            other => Err(format!("not answered yet: {other:?}")),
        }
    })
    .await;
    let started = std::time::Instant::now();
    let mut whole = 0;
    let mut truncated = 0;
    for _ in 0..100 {
        match udp_query(&home, dns, name).await {
            (false, 1) => whole += 1,
            (true, 0) => truncated += 1,
            other => panic!("neither whole nor truncated-empty: {other:?}"),
        }
    }
    // At most a burst of the rate and the rate for the time it took.
    let allowed = rate as f64 * (1.0 + started.elapsed().as_secs_f64()) + 1.0;
    assert!(
        f64::from(whole) <= allowed && truncated > 0,
        "{whole} whole and {truncated} truncated answers (at most {allowed:.0} whole)"
    );
    let elsewhere = tokio::net::UdpSocket::bind(SocketAddr::from((ELSEWHERE, 0)))
        .await
        .expect("bind");
    assert_eq!(
        udp_query(&elsewhere, dns, name).await,
        (false, 1),
        "another source is answered whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_that_stop_reporting_are_forgotten() {
    let registry = TestRegistry::start_with(|config| {
        config.forget_proxies_after = Duration::from_secs(2);
    })
    .await;
    let client = registry.client();
    let report = |id: &str| switchyard_model::ProxyStatus {
        proxy_id: id.to_string(),
        healthy: true,
        ..Default::default()
    };
    client.report_proxy(&report("gone")).await.expect("report");
    // `kept` goes on reporting, as `cdctl template` does (every 10 s by
    // default; here faster than the test's expiry).
    let reporter = client.clone();
    let keeping = tokio::spawn(async move {
        loop {
            if reporter.report_proxy(&report("kept")).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    eventually(patience(), || async {
        let (proxies, _) = client.list_proxies().await.map_err(|e| e.to_string())?;
        let ids: Vec<&str> = proxies.iter().map(|p| p.proxy_id.as_str()).collect();
        if ids == ["kept"] {
            Ok(())
        } else {
            Err(format!("proxies: {ids:?}"))
        }
    })
    .await;
    keeping.abort();
}
