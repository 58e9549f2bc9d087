//! `examples/pipeline/run-local.sh` end to end: three environments on one
//! engine; v1 through staging and production-like, stopped before
//! production (continuous delivery), then promoted; v2, whose
//! production-readiness test fails in production-like, never reaches
//! production, and `--require` refuses it there afterwards.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use switchyard_client::RegistryClient;
use switchyard_model::Color;
use switchyard_tests::docker::{TestImage, docker, unique};
use switchyard_tests::process::{binary, explain};
use switchyard_tests::{free_port, workspace_root};

struct Pipeline {
    dir: tempfile::TempDir,
    name: String,
    service: String,
    ports: [u16; 3],
}

impl Pipeline {
    fn new() -> Self {
        Pipeline {
            dir: tempfile::tempdir().expect("a folder for the pipeline"),
            name: unique("pipeline"),
            service: unique("pl"),
            ports: [free_port(), free_port(), free_port()],
        }
    }

    /// `run-local.sh ARGS`; production-readiness fails for v2.
    fn run(&self, args: &[&str]) -> Output {
        let bin = binary("cdctl");
        let ports = self.ports.map(|p| p.to_string()).join(" ");
        Command::new("bash")
            .arg(workspace_root().join("examples/pipeline/run-local.sh"))
            .args(args)
            .env("PIPELINE_DIR", self.dir.path())
            .env("PIPELINE_NAME", &self.name)
            .env("PIPELINE_PORTS", ports)
            .env("SERVICE", &self.service)
            .env("BIN", bin.parent().expect("the binaries' folder"))
            .env("READINESS_TEST", "test \"$PIPELINE_VERSION\" != v2")
            .env_remove("SWITCHYARD_REGISTRY")
            .env_remove("SWITCHYARD_RUNTIME")
            .output()
            .expect("run-local.sh")
    }

    fn client(&self, environment: usize) -> RegistryClient {
        RegistryClient::new(&format!("http://127.0.0.1:{}", self.ports[environment])).expect("url")
    }

    /// The live color, instance ids and live images of the service in one
    /// environment (nothing when it is not registered there).
    async fn state(&self, environment: usize) -> (Option<Color>, BTreeSet<String>, Vec<String>) {
        match self.client(environment).get_service(&self.service).await {
            Ok((_, found)) => (
                found.active_color,
                found.instances.iter().map(|i| i.id.clone()).collect(),
                found
                    .live_instances()
                    .filter_map(|i| i.metadata.get("image").cloned())
                    .collect(),
            ),
            Err(_) => (None, BTreeSet::new(), Vec::new()),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
        for version in ["v1", "v2"] {
            let _ = docker(&["rmi", "-f", &format!("{}:{version}", self.service)]);
        }
    }
}

fn ran(what: &str, output: &Output) {
    assert_eq!(output.status.code(), Some(0), "{what}: {}", explain(output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_pipeline_promotes_one_image_and_stops_a_failing_one_before_production() {
    let _heavy = switchyard_tests::docker::exclusive();
    let pipeline = Pipeline::new();
    let contexts = ["v1", "v2"].map(|v| TestImage::httpd_context(v, false, &unique(v)));
    let context = |n: usize| contexts[n].path().to_string_lossy().into_owned();
    ran("up", &pipeline.run(&["up"]));
    let v1 = format!("{}:v1", pipeline.service);

    // Continuous delivery: v1 stops before production, then is promoted.
    ran("release v1", &pipeline.run(&["release", "v1", &context(0)]));
    for environment in [0, 1] {
        assert_eq!(pipeline.state(environment).await.2, [v1.as_str()]);
    }
    assert_eq!(
        pipeline.state(2).await.0,
        None,
        "production waits for a person"
    );
    ran("promote v1", &pipeline.run(&["promote", "v1"]));
    let production = pipeline.state(2).await;
    assert_eq!(production.2, [v1.as_str()]);

    // v2 fails production-like's readiness test: production untouched.
    let failed = pipeline.run(&["release", "v2", &context(1), "--deploy-production"]);
    assert_ne!(failed.status.code(), Some(0), "{}", explain(&failed));
    assert_eq!(
        pipeline.state(1).await.2,
        [v1.as_str()],
        "production-like rolled back"
    );
    assert_eq!(pipeline.state(2).await, production, "production untouched");
    let label = format!("label=switchyard.pipeline-env={}-production", pipeline.name);
    let containers = docker(&["ps", "-q", "--filter", &label]);
    assert_eq!(
        String::from_utf8_lossy(&containers.stdout).lines().count(),
        1
    );

    // And production refuses it.
    let refused = pipeline.run(&["promote", "v2"]);
    assert_eq!(refused.status.code(), Some(5), "{}", explain(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("production-like has no promoted deploy"),
        "{stderr}"
    );
    assert_eq!(pipeline.state(2).await, production, "production untouched");
}
