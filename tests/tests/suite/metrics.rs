//! Metrics as an operator sees them: a real Prometheus scrapes the
//! registry, an agent and a `cdctl template` during real blue-green
//! deploys, and the test asks Prometheus's HTTP API, not the endpoints.
//! Also the shipped alert rules, checked and unit-tested by `promtool`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use switchyard_tests::docker::{LabelledContainers, TestImage, unique};
use switchyard_tests::process::{AgentProcess, Background, RegistryProcess, cdctl_async, explain};
use switchyard_tests::{eventually, free_port, patience, workspace_root};

use super::proxy::template_command;

/// Prometheus on loopback with its own data, scraping every second.
pub(crate) struct Prometheus {
    pub address: SocketAddr,
    _process: Background,
}

impl Prometheus {
    pub(crate) fn start(dir: &Path, targets: &[(&str, SocketAddr)]) -> Self {
        let jobs: String = targets
            .iter()
            .map(|(job, address)| {
                format!(
                    "  - job_name: {job}\n    static_configs:\n      - targets: ['{address}']\n"
                )
            })
            .collect();
        let config = dir.join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"
        );
        std::fs::write(&config, text).expect("prometheus.yml");
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .args(["--log.level=warn"]);
        Prometheus {
            address,
            _process: Background::spawn(command),
        }
    }

    /// The value of `query`'s single sample, if it has exactly one.
    fn value(&self, query: &str) -> Result<f64, String> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    char::from(b).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        let url = format!("http://{}/api/v1/query?query={encoded}", self.address);
        let output = Command::new("busybox")
            .args(["wget", "-qO-", &url])
            .output()
            .map_err(|e| e.to_string())?;
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(|e| format!("{query}: {e}"))?;
        let result = answer["data"]["result"]
            .as_array()
            .ok_or_else(|| format!("{query}: {answer}"))?;
        match result.as_slice() {
            [one] => one["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{query}: {one}")),
            other => Err(format!("{query}: {} samples: {answer}", other.len())),
        }
    }

    pub(crate) async fn until(&self, query: &str, wanted: impl Fn(f64) -> bool) -> f64 {
        eventually(patience(), || {
            let got = self.value(query);
            let ok = got.as_ref().is_ok_and(|v| wanted(*v));
            async move {
                match got {
                    Ok(v) if ok => Ok(v),
                    other => Err(format!("{query} = {other:?}")),
                }
            }
        })
        .await
    }
}

/// The deploy a test runs: `cdctl -o json deploy`; answers its outcome.
async fn deploy(url: &str, service: &str, image: &str, label: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "-o", "json", "deploy", service, "--image", image, "--port", "80",
    ];
    args.extend([
        "--publish-ip",
        "127.0.0.1",
        "--label",
        label,
        "--stop-timeout",
        "1s",
    ]);
    args.extend_from_slice(extra);
    let output = cdctl_async(url, &args, &[]).await;
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no summary: {}", explain(&output)));
    summary["outcome"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_a_blue_green_deploy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let registry = RegistryProcess::start(
        &dir.path().join("registry"),
        &["--metrics-listen", &metrics.to_string()],
    );
    let url = registry.url();
    let label = format!("switchyard.test={}", unique("metrics"));
    let _containers = LabelledContainers {
        label: label.clone(),
    };
    let agent = AgentProcess::start(&url, &label, &["--ttl", "5s", "--resync", "1s"]);
    let (v1, v2) = (TestImage::httpd("v1", false), TestImage::httpd("v2", false));
    let service = unique("m");
    assert_eq!(
        deploy(&url, &service, &v1.tag, &label, &[]).await,
        "promoted"
    );

    let proxy_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let template = dir.path().join("t.j2");
    std::fs::write(
        &template,
        "{% for name, s in services|items %}{{ name }} {{ s.active_color }}\n{% endfor %}",
    )
    .expect("template");
    let listen = proxy_metrics.to_string();
    let template_log = dir.path().join("template.log");
    let mut command = template_command(
        &url,
        &template,
        &dir.path().join("out"),
        &[
            "--proxy-id",
            "prom-edge",
            "--report-interval",
            "1s",
            "--metrics-listen",
            &listen,
        ],
    );
    command
        .env("CDCTL_LOG", "cdctl=info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&template_log).expect("template log"));
    let _template = Background {
        child: command.spawn().expect("cdctl template"),
    };
    let prometheus = Prometheus::start(
        dir.path(),
        &[
            ("registry", metrics),
            ("agent", agent.healthz),
            ("template", proxy_metrics),
        ],
    );
    for job in ["registry", "agent", "template"] {
        prometheus
            .until(&format!("up{{job=\"{job}\"}}"), |v| v == 1.0)
            .await;
    }
    let promoted =
        format!("switchyard_deploys_total{{service=\"{service}\",outcome=\"promoted\"}}");
    let before = prometheus.until(&promoted, |v| v >= 1.0).await;
    let synced = prometheus
        .until("switchyard_agent_last_sync_timestamp_seconds", |v| v > 0.0)
        .await;

    // A blue-green deploy: green goes live, one more promoted deploy.
    assert_eq!(
        deploy(&url, &service, &v2.tag, &label, &[]).await,
        "promoted"
    );
    let live = format!("switchyard_live_color{{service=\"{service}\",color=\"green\"}}");
    prometheus.until(&live, |v| v == 1.0).await;
    prometheus.until(&promoted, |v| v == before + 1.0).await;
    prometheus
        .until("switchyard_proxy_revision_lag{proxy=\"prom-edge\"}", |v| {
            v == 0.0
        })
        .await;
    prometheus
        .until("switchyard_template_applied_revision", |v| v > 0.0)
        .await;
    prometheus
        .until("switchyard_agent_last_sync_timestamp_seconds", |v| {
            v > synced
        })
        .await;
    let handled = "sum(grpc_server_handled_total{grpc_method=\"SetActiveColor\",grpc_code=\"OK\"})";
    prometheus.until(handled, |v| v >= 2.0).await;
    // The embedded store's own figures, and the watch streams (the
    // template's and the registry's own).
    for (query, floor) in [
        ("switchyard_store_fsync_duration_seconds_count", 1.0),
        ("switchyard_store_commit_group_requests_count", 1.0),
        ("switchyard_store_keys", 1.0),
        ("switchyard_store_revision", 2.0),
        ("switchyard_store_size_bytes", 1.0),
        ("switchyard_watchers", 2.0),
        ("switchyard_store_backend{backend=\"sled\"}", 1.0),
    ] {
        prometheus.until(query, |v| v >= floor).await;
    }

    // A deploy whose pre-test fails: recorded as failed.
    let failed = format!("switchyard_deploys_total{{service=\"{service}\",outcome=\"failed\"}}");
    assert_eq!(
        deploy(&url, &service, &v1.tag, &label, &["--pre-test", "false"]).await,
        "failed"
    );
    prometheus.until(&failed, |v| v == 1.0).await;
    prometheus.until(&live, |v| v == 1.0).await;

    // Logs carry their context as span fields: the agent's sync its node,
    // the template's render its proxy and revision.
    let registered = agent
        .log
        .lock()
        .expect("log")
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["fields"]["message"] == "registered")
        .expect("the agent logged a registration");
    assert_eq!(registered["span"]["name"], "sync", "{registered}");
    assert!(
        registered["span"]["node"]
            .as_str()
            .is_some_and(|n| !n.is_empty()),
        "{registered}"
    );
    let rendered = std::fs::read_to_string(&template_log).expect("template log");
    assert!(
        rendered
            .lines()
            .any(|line| line.contains("render{proxy=prom-edge revision=")
                && line.contains("configuration replaced")),
        "{rendered}"
    );

    // Every metric the shipped dashboard queries exists.
    for name in dashboard_metrics() {
        let query = format!("count({{__name__=\"{name}\"}})");
        prometheus.until(&query, |v| v >= 1.0).await;
    }
}

/// The metric names in the Grafana dashboard's queries.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = workspace_root().join("deploy/prometheus/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let names: std::collections::BTreeSet<String> = panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_string))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|word| word.starts_with("switchyard_") || word.starts_with("grpc_server_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(names.len() >= 10, "too few metrics found: {names:?}");
    names
}

#[test]
fn the_shipped_alert_rules_pass_promtool() {
    let rules = workspace_root().join("deploy/prometheus/rules.yml");
    let check = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("running promtool (install prometheus)");
    assert!(check.status.success(), "{}", explain(&check));
    let test = Command::new("promtool")
        .args(["test", "rules"])
        .arg(workspace_root().join("deploy/prometheus/rules.test.yml"))
        .output()
        .expect("promtool test rules");
    assert!(test.status.success(), "{}", explain(&test));
    let config = Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(workspace_root().join("deploy/prometheus/prometheus.yml"))
        .output()
        .expect("promtool check config");
    assert!(config.status.success(), "{}", explain(&config));
}
