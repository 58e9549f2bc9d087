//! The answers of [`Zone::answer`] for each kind of name.

use super::*;
use switchyard_model::Health;
use switchyard_model::watch::WatchEvent;

fn instance(id: &str, address: &str, port: u16, color: Color, health: Health) -> Instance {
    Instance {
        id: id.into(),
        service: "web".into(),
        color: Some(color),
        node: "n1".into(),
        address: address.parse().expect("ip"),
        port,
        tags: vec![],
        metadata: Default::default(),
        health,
        session: None,
        create_revision: 1,
        mod_revision: 1,
    }
}

fn view() -> ServiceView {
    let mut web = Service::new("web");
    web.active_color = Some(Color::Blue);
    web.instances = vec![
        instance("b1", "10.0.0.1", 8001, Color::Blue, Health::Passing),
        instance("b2", "10.0.0.2", 8002, Color::Blue, Health::Critical),
        instance("b3", "fd00::3", 8003, Color::Blue, Health::Passing),
        instance("g1", "10.0.0.4", 8004, Color::Green, Health::Passing),
    ];
    let mut view = ServiceView::default();
    view.apply(&WatchEvent::Snapshot {
        revision: 42,
        services: vec![web, Service::new("idle")],
        complete: true,
    });
    view
}

fn zone() -> Zone {
    Zone::new("switchyard", 1).expect("zone")
}

fn ask(name: &str, kind: RecordType) -> Answer {
    let name = LowerName::new(&Name::from_ascii(name).expect("name"));
    zone().answer(&view(), &name, kind)
}

/// The data of the answer records, as text.
fn data(answer: &Answer) -> Vec<String> {
    match answer {
        Answer::Found { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
        other => panic!("no records: {other:?}"),
    }
}

#[test]
fn a_service_answers_its_live_passing_instances_whatever_the_case() {
    assert_eq!(
        data(&ask("web.service.switchyard.", RecordType::A)),
        ["10.0.0.1"]
    );
    assert_eq!(
        data(&ask("WeB.Service.SwitchYard.", RecordType::A)),
        ["10.0.0.1"]
    );
    assert_eq!(
        data(&ask("web.service.switchyard.", RecordType::AAAA)),
        ["fd00::3"]
    );
    assert_eq!(
        data(&ask("green.web.service.switchyard.", RecordType::A)),
        ["10.0.0.4"]
    );
    assert_eq!(
        ask("web.service.switchyard.", RecordType::TXT),
        Answer::NoData
    );
    assert_eq!(
        ask("idle.service.switchyard.", RecordType::A),
        Answer::NoData
    );
}

#[test]
fn srv_gives_ports_and_targets_that_resolve_to_the_instances() {
    let answer = ask("_web._tcp.service.switchyard.", RecordType::SRV);
    assert_eq!(
        data(&answer),
        [
            "1 65535 8001 0a000001.addr.switchyard.",
            "1 65535 8003 fd000000000000000000000000000003.addr.switchyard."
        ]
    );
    let Answer::Found { additionals, .. } = answer else {
        panic!("found")
    };
    assert_eq!(additionals.len(), 2, "{additionals:?}");
    assert_eq!(
        data(&ask("0a000001.addr.switchyard.", RecordType::A)),
        ["10.0.0.1"]
    );
}

#[test]
fn during_a_canary_srv_weights_give_each_color_its_share_and_a_stays_live() {
    let mut view = view();
    if let Some(web) = view.services.get_mut("web") {
        web.canary_weight = 20;
    }
    let name = LowerName::new(&Name::from_ascii("_web._tcp.service.switchyard.").expect("name"));
    // 80% over 2 blue servers, 20% over 1 green: server weights 256 each
    // for blue and 128 for green (a fifth of 640), times 256 in SRV.
    assert_eq!(
        data(&zone().answer(&view, &name, RecordType::SRV)),
        [
            "1 65535 8001 0a000001.addr.switchyard.",
            "1 65535 8003 fd000000000000000000000000000003.addr.switchyard.",
            "1 32768 8004 0a000004.addr.switchyard."
        ]
    );
    let live = LowerName::new(&Name::from_ascii("web.service.switchyard.").expect("name"));
    assert_eq!(
        data(&zone().answer(&view, &live, RecordType::A)),
        ["10.0.0.1"],
        "A answers cannot weigh: the live color only"
    );
}

#[test]
fn unknown_names_are_nxdomain_and_other_zones_refused() {
    for name in [
        "nope.service.switchyard.",
        "purple.web.service.switchyard.",
        "_nope._tcp.service.switchyard.",
        "zz.addr.switchyard.",
        // An address no instance has (127.0.0.1): no rebinding.
        "7f000001.addr.switchyard.",
        "a.b.c.d.switchyard.",
    ] {
        assert_eq!(ask(name, RecordType::A), Answer::NxDomain, "{name}");
    }
    assert_eq!(ask("example.com.", RecordType::A), Answer::Refused);
    let soa = data(&ask("switchyard.", RecordType::SOA));
    assert!(soa[0].contains(" 42 "), "serial is the revision: {soa:?}");
}
