//! The registry's DNS interface, asked with Debian's `dig`: A and SRV
//! answers that match the registry before and after a flip, NXDOMAIN with
//! an SOA, names in any case, a 200-instance answer truncated over UDP (to
//! the buffer the client offered) and whole over TCP, and random packets that never stop it answering.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;

use cd_registry::dns::{DnsConfig, TcpLimits, Zone};
use switchyard_client::RegistryClient;
use switchyard_model::{Color, Instance};
use switchyard_tests::upstream::Upstream;
use switchyard_tests::{TestRegistry, eventually, free_port, instance, patience};

/// A registry answering DNS for `switchyard.` with a TTL of 1 s.
pub(crate) async fn registry_with_dns() -> (TestRegistry, SocketAddr) {
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let registry = TestRegistry::start_with(|config| {
        config.dns = Some(DnsConfig {
            listen: dns,
            zone: Zone::new("switchyard.", 1).expect("zone"),
            tcp: TcpLimits::default(),
            udp_rate: None,
        });
    })
    .await;
    (registry, dns)
}

/// `dig @DNS ARGS` (plus `+short` unless `full`): its output.
pub(crate) fn dig(dns: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("dig")
        .arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string(), "+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("running dig (install dnsutils)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// dig's `MSG SIZE  rcvd: N`.
fn message_size(output: &str) -> Option<usize> {
    let (_, after) = output.split_once("MSG SIZE  rcvd: ")?;
    after.split_whitespace().next()?.parse().ok()
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// `service` with instances `10.9.0.N:800N` (`ids` by color), live `blue`.
async fn register(client: &RegistryClient, service: &str, colors: &[(u8, Color)]) {
    for (n, color) in colors {
        let mut one: Instance = instance(
            service,
            &format!("{service}-{n}"),
            8000 + *n as u16,
            Some(*color),
        );
        one.address = format!("10.9.0.{n}").parse().expect("address");
        client.register(&one, None).await.expect("register");
    }
    client
        .set_active_color(service, Some(Color::Blue), None, 0)
        .await
        .expect("live color");
}

/// What the registry says `service`'s live addresses and SRV records are.
async fn expected(client: &RegistryClient, service: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (_, state) = client.get_service(service).await.expect("service");
    let live: Vec<&Instance> = state.live_instances().collect();
    let a = live.iter().map(|i| i.address.to_string()).collect();
    let srv = live
        .iter()
        .map(|i| {
            let std::net::IpAddr::V4(v4) = i.address else {
                panic!("IPv4 in this test")
            };
            let hex: String = v4.octets().iter().map(|b| format!("{b:02x}")).collect();
            // Without a canary every live server weighs the most (65535).
            format!("1 65535 {} {hex}.addr.switchyard.", i.port)
        })
        .collect();
    (a, srv)
}

/// Waits until dig's A and SRV answers for `service` match the registry.
async fn until_dns_matches(client: &RegistryClient, dns: SocketAddr, service: &str) {
    eventually(patience(), || async move {
        let (a, srv) = expected(client, service).await;
        let got_a = lines(&dig(
            dns,
            &[&format!("{service}.service.switchyard"), "A", "+short"],
        ));
        let srv_name = format!("_{service}._tcp.service.switchyard");
        let got_srv = lines(&dig(dns, &[&srv_name, "SRV", "+short"]));
        if got_a == a && got_srv == srv && !a.is_empty() {
            Ok(())
        } else {
            Err(format!("A {got_a:?} vs {a:?}; SRV {got_srv:?} vs {srv:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_live_instances_before_and_after_a_flip() {
    let (registry, dns) = registry_with_dns().await;
    let client = registry.client();
    register(
        &client,
        "web",
        &[(1, Color::Blue), (2, Color::Blue), (3, Color::Green)],
    )
    .await;
    until_dns_matches(&client, dns, "web").await;
    assert_eq!(
        lines(&dig(dns, &["WeB.SERVICE.switchYARD", "A", "+short"])),
        lines("10.9.0.1\n10.9.0.2"),
        "names are case-insensitive"
    );
    assert_eq!(
        lines(&dig(dns, &["green.web.service.switchyard", "A", "+short"])),
        lines("10.9.0.3"),
        "a color's preview"
    );
    client
        .set_active_color("web", Some(Color::Green), Some(Color::Blue), 0)
        .await
        .expect("flip");
    until_dns_matches(&client, dns, "web").await;
    assert_eq!(
        lines(&dig(dns, &["web.service.switchyard", "A", "+short"])),
        lines("10.9.0.3")
    );
    let unknown = dig(dns, &["nope.service.switchyard", "A"]);
    assert!(unknown.contains("status: NXDOMAIN"), "{unknown}");
    assert!(
        unknown.contains("SOA\tns.switchyard. hostmaster.switchyard."),
        "the SOA for negative caching: {unknown}"
    );
    let outside = dig(dns, &["example.com", "A"]);
    assert!(outside.contains("status: REFUSED"), "{outside}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let (registry, dns) = registry_with_dns().await;
    let client = registry.client();
    let many: Vec<Instance> = (0..200u16)
        .map(|n| {
            let mut one = instance("big", &format!("big-{n}"), 8080, Some(Color::Blue));
            one.address = format!("10.8.{}.{}", n / 100, n % 100 + 1)
                .parse()
                .expect("address");
            one
        })
        .collect();
    for one in &many {
        client.register(one, None).await.expect("register");
    }
    client
        .set_active_color("big", Some(Color::Blue), None, 0)
        .await
        .expect("live color");
    eventually(patience(), || async move {
        let over_tcp = lines(&dig(
            dns,
            &["big.service.switchyard", "A", "+short", "+tcp"],
        ));
        match over_tcp.len() {
            200 => Ok(()),
            n => Err(format!("{n} addresses over TCP")),
        }
    })
    .await;
    let udp_only = dig(
        dns,
        &[
            "big.service.switchyard",
            "A",
            "+notcp",
            "+ignore",
            "+bufsize=1232",
        ],
    );
    assert!(udp_only.contains(" tc"), "truncated over UDP: {udp_only}");
    // No bigger than the buffer the client offers: a small query must not
    // buy a large answer (what reflection attacks amplify with).
    for (bufsize, largest) in [
        ("+bufsize=1232", 1232),
        ("+bufsize=600", 600),
        ("+noedns", 512),
    ] {
        let answer = dig(
            dns,
            &["big.service.switchyard", "A", "+notcp", "+ignore", bufsize],
        );
        let size = message_size(&answer);
        assert!(
            size.is_some_and(|size| size <= largest && size > largest / 2),
            "{bufsize}: {size:?} bytes: {answer}"
        );
    }
    // dig's default: UDP, then TCP when truncated.
    let followed = lines(&dig(dns, &["big.service.switchyard", "A", "+short"]));
    assert_eq!(followed.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_packets_never_stop_the_dns_interface() {
    use rand::Rng;
    let (registry, dns) = registry_with_dns().await;
    let client = registry.client();
    register(&client, "web", &[(1, Color::Blue)]).await;
    until_dns_matches(&client, dns, "web").await;
    // A valid query to mutate, as dig would send it.
    let valid: Vec<u8> = [
        &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
        b"\x03web\x07service\x0aswitchyard\x00",
        &[0, 1, 0, 1],
    ]
    .concat();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut rng = rand::rng();
    for round in 0..3_000 {
        let packet: Vec<u8> = if round % 2 == 0 {
            let mut mutated = valid.clone();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..mutated.len());
                mutated[at] = rng.random();
            }
            mutated.truncate(rng.random_range(1..=mutated.len()));
            mutated
        } else {
            (0..rng.random_range(0..600))
                .map(|_| rng.random())
                .collect()
        };
        let _ = socket.send_to(&packet, dns);
    }
    for _ in 0..50 {
        use std::io::Write;
        if let Ok(mut tcp) = std::net::TcpStream::connect(dns) {
            let junk: Vec<u8> = (0..rng.random_range(0..300))
                .map(|_| rng.random())
                .collect();
            let _ = tcp.write_all(&junk);
        }
    }
    until_dns_matches(&client, dns, "web").await;
    client
        .get_service("web")
        .await
        .expect("the registry still serves");
}

/// HAProxy's `server-template … resolvers` pointed at the registry's DNS
/// (SRV records: address, port and weight) follows a canary and a flip with
/// no reload and no cdctl: at 25 % green takes its share of 2,000 requests
/// (within 5 points), and the time from the flip to HAProxy serving only
/// the new color is printed (TTL 1 s, HAProxy `hold valid 1s`: 3 s at most
/// by the arithmetic of both caches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_resolvers_follow_a_canary_and_a_flip_through_dns() {
    let (registry, dns) = registry_with_dns().await;
    let client = registry.client();
    let upstreams = [
        ("b", Color::Blue, Upstream::answering("blue\n").await),
        ("g", Color::Green, Upstream::answering("green\n").await),
    ];
    for (id, color, upstream) in &upstreams {
        let one = instance("web", id, upstream.address.port(), Some(*color));
        client.register(&one, None).await.expect("register");
    }
    client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("live color");
    let dir = tempfile::tempdir().expect("a folder for HAProxy");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    maxconn 256\n\
             resolvers switchyard\n    nameserver registry {dns}\n    accepted_payload_size 1232\n\
             \x20   hold valid 1s\n    hold obsolete 0s\n    timeout resolve 100ms\n    timeout retry 100ms\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             frontend http\n    bind {listen}\n    default_backend web\n\
             backend web\n    server-template s 1-4 _web._tcp.service.switchyard resolvers switchyard \
             resolve-prefer ipv4 init-addr none\n"
        ),
    )
    .expect("haproxy.cfg");
    let _haproxy = super::haproxy_runtime::Haproxy::start(&config, dir.path().join("master.sock"));
    let only = |version: &'static str| async move {
        for _ in 0..10 {
            match switchyard_tests::http_get(listen, "/").await {
                Ok(answer) if switchyard_tests::body(&answer).trim() == version => {}
                other => return Err(format!("{other:?}")),
            }
        }
        Ok(())
    };
    eventually(patience(), || only("blue")).await;
    client
        .set_canary_weight("web", (25, false), 0, Some(Color::Blue), 0)
        .await
        .expect("25% to green");
    eventually(patience(), || async move {
        match switchyard_tests::http_get(listen, "/").await {
            Ok(answer) if switchyard_tests::body(&answer).trim() == "green" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let share = super::examples::green_share(listen, "/", 2_000).await;
    println!("HAProxy resolvers: canary 25%, green answered {share:.1}% of 2,000");
    assert!((share - 25.0).abs() <= 5.0, "green {share:.1}%");
    let flipped = std::time::Instant::now();
    client
        .set_active_color("web", Some(Color::Green), Some(Color::Blue), 0)
        .await
        .expect("flip");
    eventually(patience(), || only("green")).await;
    println!(
        "HAProxy resolvers followed the flip through DNS in {} ms (TTL 1 s, hold valid 1 s)",
        flipped.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addr_names_answer_only_the_addresses_of_instances() {
    let (registry, dns) = registry_with_dns().await;
    let client = registry.client();
    register(&client, "web", &[(1, Color::Blue)]).await;
    until_dns_matches(&client, dns, "web").await;
    // 10.9.0.1 is web-1's; 127.0.0.1 and 169.254.169.254 are nobody's.
    let known = dig(dns, &["0a090001.addr.switchyard", "A", "+short"]);
    assert_eq!(known.trim(), "10.9.0.1");
    for name in ["7f000001.addr.switchyard", "a9fea9fe.addr.switchyard"] {
        let answer = dig(dns, &[name, "A"]);
        assert!(answer.contains("status: NXDOMAIN"), "{name}: {answer}");
    }
}
