//! Every kind of bad input to the registry's gRPC API, each refused with
//! the field it names and nothing changed, on both backends.

use switchyard_client::Code;
use switchyard_model::Color;
use switchyard_proto::v1;
use switchyard_tests::{TestRegistry, instance};

fn raw_instance(service: &str, id: &str, address: &str, port: u32, color: i32) -> v1::Instance {
    v1::Instance {
        id: id.into(),
        service: service.into(),
        color,
        address: address.into(),
        port,
        ..Default::default()
    }
}

async fn bad_input_is_refused_with_a_named_field_and_changes_nothing() {
    let registry = TestRegistry::start().await;
    let mut grpc = registry.grpc().await;
    let client = registry.client();
    client
        .register(&instance("web", "ok", 8080, Some(Color::Blue)), None)
        .await
        .expect("a valid registration");
    let before = client.get_service("web").await.expect("get").0;

    let register = |instance: v1::Instance| v1::RegisterRequest {
        instance: Some(instance),
        session_id: 0,
    };
    let cases: Vec<(&str, v1::RegisterRequest, Code, &str)> = vec![
        (
            "uppercase service",
            register(raw_instance("Web", "x", "127.0.0.1", 80, 0)),
            Code::InvalidArgument,
            "service",
        ),
        (
            "dotted service",
            register(raw_instance("web.api", "x", "127.0.0.1", 80, 0)),
            Code::InvalidArgument,
            "service",
        ),
        (
            "port 0",
            register(raw_instance("web", "x", "127.0.0.1", 0, 0)),
            Code::InvalidArgument,
            "port",
        ),
        (
            "port 65536",
            register(raw_instance("web", "x", "127.0.0.1", 65536, 0)),
            Code::InvalidArgument,
            "port",
        ),
        (
            "unknown color",
            register(raw_instance("web", "x", "127.0.0.1", 80, 7)),
            Code::InvalidArgument,
            "color",
        ),
        (
            "empty id",
            register(raw_instance("web", "", "127.0.0.1", 80, 0)),
            Code::InvalidArgument,
            "id",
        ),
        (
            "id with a slash",
            register(raw_instance("web", "a/b", "127.0.0.1", 80, 0)),
            Code::InvalidArgument,
            "id",
        ),
        (
            "hostname address",
            register(raw_instance("web", "x", "example.com", 80, 0)),
            Code::InvalidArgument,
            "address",
        ),
        (
            "0.0.0.0 address",
            register(raw_instance("web", "x", "0.0.0.0", 80, 0)),
            Code::InvalidArgument,
            "address",
        ),
        (
            "no instance",
            v1::RegisterRequest {
                instance: None,
                session_id: 0,
            },
            Code::InvalidArgument,
            "instance",
        ),
        (
            "unknown session",
            v1::RegisterRequest {
                instance: Some(raw_instance("web", "x", "127.0.0.1", 80, 0)),
                session_id: 42,
            },
            Code::NotFound,
            "session",
        ),
        (
            "id of another service",
            register(raw_instance("api", "ok", "127.0.0.1", 80, 0)),
            Code::FailedPrecondition,
            "ok",
        ),
    ];
    for (what, request, code, field) in cases {
        let status = grpc.register(request).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().contains(field),
            "{what}: {:?} names {field}",
            status.message()
        );
    }

    // Oversize requests: over the documented 4 MiB.
    let mut huge = raw_instance("web", "big", "127.0.0.1", 80, 0);
    huge.metadata
        .insert("blob".into(), "x".repeat(5 * 1024 * 1024));
    let status = grpc.register(register(huge)).await.expect_err("oversize");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("limit"), "{}", status.message());

    // Too many instances in one SyncNode.
    let session = client.open_session("node-x", 30).await.expect("open").0;
    let many: Vec<v1::Instance> = (0..=switchyard_model::validate::MAX_SYNC_INSTANCES)
        .map(|n| raw_instance("web", &format!("m{n}"), "127.0.0.1", 80, 0))
        .collect();
    let status = grpc
        .sync_node(v1::SyncNodeRequest {
            session_id: session,
            node: "node-x".into(),
            instances: many,
        })
        .await
        .expect_err("too many");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("instances"),
        "{}",
        status.message()
    );

    // Unknown things.
    let status = grpc
        .get_service(v1::GetServiceRequest {
            name: "nope".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(status.code(), Code::NotFound);
    let status = grpc
        .deregister(v1::DeregisterRequest { id: "nope".into() })
        .await
        .expect_err("unknown instance");
    assert_eq!(status.code(), Code::NotFound);
    let status = grpc
        .sync_node(v1::SyncNodeRequest {
            session_id: 77,
            node: "node-x".into(),
            instances: vec![],
        })
        .await
        .expect_err("unknown session");
    assert_eq!(status.code(), Code::NotFound);

    // Colors: bad enum, CAS mismatch naming the current color.
    let status = grpc
        .set_active_color(v1::SetActiveColorRequest {
            service: "web".into(),
            color: 9,
            expected_color: 0,
            lock_token: 0,
            take_offline: false,
        })
        .await
        .expect_err("bad color");
    assert_eq!(status.code(), Code::InvalidArgument);
    client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    let before = before.max(client.get_service("web").await.expect("get").0);
    let status = grpc
        .set_active_color(v1::SetActiveColorRequest {
            service: "web".into(),
            color: v1::Color::Green as i32,
            expected_color: v1::Color::None as i32,
            lock_token: 0,
            take_offline: false,
        })
        .await
        .expect_err("mismatch");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("blue"), "{}", status.message());
    let status = grpc
        .open_session(v1::OpenSessionRequest {
            node: "n".into(),
            ttl_seconds: 0,
        })
        .await
        .expect_err("zero ttl");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Nothing above changed anything, and the server still works.
    let (after, web) = client.get_service("web").await.expect("get");
    assert_eq!(after, before, "rejected requests changed nothing");
    assert_eq!(web.instances.len(), 1);
    assert_eq!(web.active_color, Some(Color::Blue));
    client
        .register(&instance("web", "still-fine", 8081, None), None)
        .await
        .expect("the server still takes valid writes");
}

on_both_backends!(bad_input_is_refused_with_a_named_field_and_changes_nothing,);
