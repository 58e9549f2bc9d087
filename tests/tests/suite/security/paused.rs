//! A paused deploy's record is data another principal can write: what
//! `cdctl promote` runs comes from its own flags, and the leftovers a record
//! names are checked against the engine before anything touches them.

use std::path::Path;

use switchyard_model::{Color, Deployment, Outcome};
use switchyard_tests::docker::{TestContainer, unique};
use switchyard_tests::process::explain;

use crate::deploy::Fixture;

/// Rewrites the paused record's state as `forge` says, as any client with
/// deploy rights on the service could (RecordDeployment).
async fn forge(f: &Fixture, change: impl FnOnce(&mut serde_json::Value)) -> Deployment {
    let client = f.registry.client();
    let mut record = f.history().await.remove(0);
    assert_eq!(record.outcome, Outcome::Paused, "{record:?}");
    let original = record.clone();
    let mut paused: serde_json::Value =
        serde_json::from_str(&record.metadata["paused"]).expect("paused state");
    change(&mut paused);
    record.metadata.insert("paused".into(), paused.to_string());
    client.record_deployment(&record).await.expect("forged");
    original
}

fn never_ran(marker: &Path) {
    assert!(
        !marker.exists(),
        "the record's command ran: {} exists",
        marker.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_paused_record_never_runs_its_command_or_touches_other_containers() {
    let f = Fixture::start().await;
    let first = f.deploy(&f.v1.tag, &[], &[]).await;
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));
    let paused = f
        .deploy(
            &f.v2.tag,
            &["--manual-promotion", "--post-test", "true"],
            &[],
        )
        .await;
    assert_eq!(paused.status.code(), Some(0), "{}", explain(&paused));
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("MARKER");
    let command = format!("touch {}", marker.display());

    // The review's attack: the post-test rewritten on the record.
    let honest = forge(&f, |paused| {
        paused["post_test"] = command.clone().into();
        paused["proxy_url"] = "http://127.0.0.1:1/evil".into();
    })
    .await;
    let refused = f.cdctl(&["promote", &f.service]).await;
    assert_eq!(
        refused.status.code(),
        Some(2),
        "promoting a post-tested deploy without a post-test is refused: {}",
        explain(&refused)
    );
    assert!(
        explain(&refused).contains("--post-test"),
        "{}",
        explain(&refused)
    );
    never_ran(&marker);

    // A leftover that is another service's container: abort refuses to
    // rename or start it.
    let victim_name = unique("victim");
    let victim = TestContainer {
        id: switchyard_tests::docker::docker_ok(&[
            "create",
            "--name",
            &victim_name,
            "--label",
            &f.label,
            "--label",
            "switchyard.service=someone-else",
            &f.v1.tag,
        ]),
    };
    forge(&f, |paused| {
        paused["retired"] = serde_json::json!([{
            "id": victim.id,
            "name": format!("{}-green-1", f.service),
            "was_running": true,
        }]);
    })
    .await;
    let aborted = f.cdctl(&["abort", &f.service]).await;
    assert_ne!(aborted.status.code(), Some(0), "{}", explain(&aborted));
    assert!(
        explain(&aborted).contains("refusing"),
        "{}",
        explain(&aborted)
    );
    let state = switchyard_tests::docker::docker_ok(&[
        "inspect",
        "-f",
        "{{.Name}} {{.State.Running}}",
        &victim.id,
    ]);
    assert_eq!(
        state,
        format!("/{victim_name} false"),
        "the victim is untouched"
    );
    never_ran(&marker);

    // With its leftovers as the deploy wrote them (the command still
    // forged), promote runs its own post-test only.
    let mut restored = honest.clone();
    let mut paused: serde_json::Value =
        serde_json::from_str(&honest.metadata["paused"]).expect("paused state");
    paused["post_test"] = command.clone().into();
    restored
        .metadata
        .insert("paused".into(), paused.to_string());
    f.registry
        .client()
        .record_deployment(&restored)
        .await
        .expect("rewritten");
    let promoted = f
        .cdctl(&["promote", &f.service, "--post-test", "true"])
        .await;
    assert_eq!(promoted.status.code(), Some(0), "{}", explain(&promoted));
    never_ran(&marker);
    assert_eq!(f.settled().await.active_color, Some(Color::Green));
    assert_eq!(f.history().await[0].outcome, Outcome::Promoted);
}

/// The review's sequence: v1, v2 with --keep-old, v1 again paused. The other
/// color now holds the paused deploy's unpromoted instances, so `cdctl
/// rollback` refuses (as the dashboard's button does) and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_while_a_deploy_is_paused_is_refused_and_the_live_color_stays() {
    let f = Fixture::start().await;
    for (image, extra) in [(&f.v1.tag, vec![]), (&f.v2.tag, vec!["--keep-old"])] {
        let done = f.deploy(image, &extra, &[]).await;
        assert_eq!(done.status.code(), Some(0), "{}", explain(&done));
    }
    let paused = f.deploy(&f.v1.tag, &["--manual-promotion"], &[]).await;
    assert_eq!(paused.status.code(), Some(0), "{}", explain(&paused));
    let before = f.settled().await;
    assert_eq!(before.active_color, Some(Color::Green));

    let refused = f.cdctl(&["rollback", &f.service]).await;
    assert_eq!(refused.status.code(), Some(5), "{}", explain(&refused));
    assert!(
        explain(&refused).contains("paused for promotion"),
        "{}",
        explain(&refused)
    );
    assert_eq!(f.settled().await, before, "nothing moved");
    let aborted = f.cdctl(&["abort", &f.service]).await;
    assert_eq!(aborted.status.code(), Some(0), "{}", explain(&aborted));
    assert_eq!(f.settled().await.active_color, Some(Color::Green));
}
