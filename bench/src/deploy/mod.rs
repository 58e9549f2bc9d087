//! The delivery rows: what a deploy costs beyond its containers and its
//! tests, how long from a flip until every nginx proxy serves it, and a
//! rollback including its proxy. Each runs the real `cdctl` against a
//! registry of its own (a fresh one, so nginx renders one service) with an
//! agent following the containers, and nginx proxies rendered by
//! `cdctl template` and reloaded by `examples/nginx/reload.sh`, the README's
//! recipe. The anchor is nginx's own reload (`reload.sh` alone, on the same
//! proxy): no flip through nginx can be faster. Last, the same flip through
//! HAProxy in runtime mode (no reload), against the same anchor.

mod haproxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stats::Samples;

const SERVICE: &str = "bench-deploy";
/// Steps whose time is Docker's (creating, stopping, removing containers)
/// or the user's tests: what is left of a deploy is Switchyard's overhead.
const NOT_OURS: [&str; 5] = [
    "start containers",
    "clear leftovers",
    "stop old",
    "pre-test",
    "post-test",
];

/// What the delivery workload measured.
pub struct DeployFigures {
    /// Wall time minus Docker and tests, one replica, one proxy.
    pub overhead_1: Samples,
    /// The same with `Setup::many` replicas.
    pub overhead_many: Samples,
    /// Flip sent (the step begins) → every proxy applied, one proxy.
    pub flip_to_proxies_1: Samples,
    /// The same with five nginx proxies.
    pub flip_to_proxies_5: Samples,
    /// `cdctl rollback` from start to exit (it waits for the proxy).
    pub rollback_1: Samples,
    /// `reload.sh` alone on one proxy: nginx's own reload.
    pub nginx_reload: Samples,
    /// Flip sent → HAProxy in runtime mode applied it (the only proxy).
    pub flip_to_haproxy_runtime: Samples,
}

/// Where and how to deploy.
pub struct Setup {
    pub registry: String,
    pub image: String,
    /// `key=value` put on every container (the agent follows only those).
    pub label: String,
    pub runs: usize,
    /// Replicas of the larger deploy (10 in the published run).
    pub many: u32,
}

/// Runs the whole workload; every process it starts is stopped on return.
pub fn measure(setup: &Setup) -> anyhow::Result<DeployFigures> {
    let work = std::env::temp_dir().join(format!("switchyard-bench-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = measure_in(setup, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn measure_in(setup: &Setup, work: &Path) -> anyhow::Result<DeployFigures> {
    let cdctl = sibling("cdctl")?;
    let deployer = Deployer {
        cdctl: &cdctl,
        setup,
    };
    deployer.deploy(1, false)?;
    let mut proxies = vec![Proxy::start(&cdctl, &setup.registry, work, 0)?];
    proxies[0].wait_serving(SERVICE)?;

    let (mut overhead_1, mut flip_1, mut rollback_1) = (vec![], vec![], vec![]);
    for _ in 0..setup.runs {
        let deploy = deployer.deploy(1, true)?;
        overhead_1.push(deploy.overhead());
        flip_1.push(deploy.flip_to_proxies());
        rollback_1.push(deployer.rollback()?);
    }
    let mut overhead_many = vec![];
    for _ in 0..setup.runs {
        overhead_many.push(deployer.deploy(setup.many, false)?.overhead());
    }
    let nginx_reload = (0..setup.runs)
        .map(|_| proxies[0].reload())
        .collect::<anyhow::Result<Vec<_>>>()?;
    for n in 1..5 {
        let proxy = Proxy::start(&cdctl, &setup.registry, work, n)?;
        proxy.wait_serving(SERVICE)?;
        proxies.push(proxy);
    }
    let mut flip_5 = vec![];
    for _ in 0..setup.runs {
        flip_5.push(deployer.deploy(1, false)?.flip_to_proxies());
    }
    // The nginx proxies go; their last reports turn stale (3 s for these
    // deploys) and are not waited for.
    proxies.clear();
    let runtime = haproxy::RuntimeProxy::start(&cdctl, &setup.registry, work)?;
    runtime.wait_serving(SERVICE)?;
    std::thread::sleep(Duration::from_millis(3_500));
    let mut flip_runtime = vec![];
    for _ in 0..setup.runs {
        let deploy = deployer.deploy_with(1, false, &["--proxy-stale", "3s"])?;
        flip_runtime.push(deploy.flip_to_proxies());
    }
    drop(runtime);
    deployer.remove()?;
    Ok(DeployFigures {
        overhead_1: samples(overhead_1),
        overhead_many: samples(overhead_many),
        flip_to_proxies_1: samples(flip_1),
        flip_to_proxies_5: samples(flip_5),
        rollback_1: samples(rollback_1),
        nginx_reload: samples(nginx_reload),
        flip_to_haproxy_runtime: samples(flip_runtime),
    })
}

fn samples(latencies: Vec<Duration>) -> Samples {
    Samples {
        latencies,
        elapsed: Duration::from_secs(1),
    }
}

/// A binary next to this one (`cargo build` puts them side by side).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the workspace first",
        path.display()
    );
    Ok(path)
}

struct Deployer<'a> {
    cdctl: &'a Path,
    setup: &'a Setup,
}

/// One deploy as `cdctl -o json` summed it up, and its wall time.
struct Deployed {
    wall: Duration,
    steps: Vec<(String, Duration)>,
}

impl Deployed {
    fn step(&self, name: &str) -> Duration {
        self.steps
            .iter()
            .filter(|(step, _)| step == name)
            .map(|(_, took)| *took)
            .sum()
    }

    fn overhead(&self) -> Duration {
        NOT_OURS
            .iter()
            .fold(self.wall, |left, step| left.saturating_sub(self.step(step)))
    }

    fn flip_to_proxies(&self) -> Duration {
        self.step("flip color") + self.step("wait proxies")
    }
}

impl Deployer<'_> {
    fn cdctl(&self) -> Command {
        let mut command = Command::new(self.cdctl);
        command.args(["--registry", &self.setup.registry]);
        command
    }

    /// `cdctl deploy` of the bench service; fails unless it promoted.
    fn deploy(&self, replicas: u32, keep_old: bool) -> anyhow::Result<Deployed> {
        self.deploy_with(replicas, keep_old, &[])
    }

    /// [`Deployer::deploy`] with `extra` flags.
    fn deploy_with(
        &self,
        replicas: u32,
        keep_old: bool,
        extra: &[&str],
    ) -> anyhow::Result<Deployed> {
        let mut command = self.cdctl();
        command.args([
            "-o",
            "json",
            "deploy",
            SERVICE,
            "--image",
            &self.setup.image,
        ]);
        command.args([
            "--port",
            "80",
            "--publish-ip",
            "127.0.0.1",
            "--stop-timeout",
            "1s",
        ]);
        command.args([
            "--label",
            &self.setup.label,
            "--replicas",
            &replicas.to_string(),
        ]);
        command.args(extra);
        if keep_old {
            command.arg("--keep-old");
        }
        let started = Instant::now();
        let output = command.stderr(Stdio::piped()).output()?;
        let wall = started.elapsed();
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        anyhow::ensure!(
            output.status.success() && summary["outcome"] == "promoted",
            "cdctl deploy did not promote: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let steps = summary["steps"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|step| {
                let name = step["name"].as_str().unwrap_or_default().to_string();
                (
                    name,
                    Duration::from_millis(step["duration_ms"].as_u64().unwrap_or(0)),
                )
            })
            .collect();
        let deployed = Deployed { wall, steps };
        if std::env::var_os("SWITCHYARD_BENCH_VERBOSE").is_some() {
            eprintln!(
                "deploy {replicas}: {} ms, {:?}",
                wall.as_millis(),
                deployed.steps
            );
        }
        Ok(deployed)
    }

    /// `cdctl rollback` to the kept color, from start to exit.
    fn rollback(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let output = self.cdctl().args(["rollback", SERVICE]).output()?;
        let took = started.elapsed();
        anyhow::ensure!(
            output.status.success(),
            "cdctl rollback failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(took)
    }

    /// Removes the service's containers (the agent deregisters them).
    fn remove(&self) -> anyhow::Result<()> {
        let output = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label={}", self.setup.label),
            ])
            .output()?;
        let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output()?;
        }
        Ok(())
    }
}

/// nginx in a prefix of its own and the `cdctl template` following the
/// registry for it; both stopped when dropped.
struct Proxy {
    prefix: PathBuf,
    listen: String,
    nginx: Child,
    template: Child,
}

impl Proxy {
    fn start(cdctl: &Path, registry: &str, work: &Path, n: usize) -> anyhow::Result<Proxy> {
        let prefix = work.join(format!("nginx-{n}"));
        std::fs::create_dir_all(&prefix)?;
        let listen = format!("127.0.0.1:{}", free_port()?);
        let conf = prefix.join("nginx.conf");
        let template = examples()?.join("nginx.conf.j2");
        let proxy_id = format!("bench-nginx-{n}");
        let template_command = |extra: &[&str]| {
            let mut command = Command::new(cdctl);
            command
                .args(["--registry", registry, "template", "--template"])
                .arg(&template)
                .arg("--out")
                .arg(&conf)
                .args(["--proxy-id", &proxy_id])
                .args(extra)
                .env("NGINX_PREFIX", &prefix)
                .env("PROXY_LISTEN", &listen);
            command
        };
        let first = template_command(&["--once"]).output()?;
        anyhow::ensure!(first.status.success(), "the first render failed");
        let nginx = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .spawn()?;
        let prefix_text = prefix.to_string_lossy().into_owned();
        let check = format!("nginx -t -q -p {prefix_text} -c {{path}}");
        let reload = format!(
            "{} {prefix_text} {listen}",
            examples()?.join("reload.sh").display()
        );
        let template = template_command(&["--check", &check, "--reload", &reload])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Proxy {
            prefix,
            listen,
            nginx,
            template,
        })
    }

    /// Until nginx answers for `service` (the follower has started).
    fn wait_serving(&self, service: &str) -> anyhow::Result<()> {
        wait_serving("nginx", &self.listen, service)
    }

    /// `reload.sh` on the configuration already served: nginx's reload and
    /// the retirement of the old worker, nothing of Switchyard's. Waits
    /// first until nginx serves what the file on disk says (the follower
    /// may be reloading after a late deregistration).
    fn reload(&self) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let revision = loop {
            let on_disk = self.rendered_revision()?;
            if self.served_revision()? == on_disk {
                break on_disk;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nginx never served revision {on_disk}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let started = Instant::now();
        let status = Command::new(examples()?.join("reload.sh"))
            .arg(&self.prefix)
            .arg(&self.listen)
            .env("SWITCHYARD_REVISION", revision)
            .stderr(Stdio::null())
            .status()?;
        let took = started.elapsed();
        anyhow::ensure!(status.success(), "reload.sh failed");
        Ok(took)
    }

    fn served_revision(&self) -> anyhow::Result<String> {
        let url = format!("http://{}/__switchyard/revision", self.listen);
        let served = Command::new("busybox")
            .args(["wget", "-qO-", &url])
            .output()?;
        Ok(String::from_utf8_lossy(&served.stdout).trim().to_string())
    }

    /// The revision in the rendered file's header comment.
    fn rendered_revision(&self) -> anyhow::Result<String> {
        let conf = std::fs::read_to_string(self.prefix.join("nginx.conf"))?;
        conf.lines()
            .find_map(|line| line.split("from registry revision ").nth(1))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('.')
                    .to_string()
            })
            .ok_or_else(|| anyhow::anyhow!("no revision in the rendered nginx.conf"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.template.kill();
        let _ = self.template.wait();
        // SIGTERM: the master stops its workers too (Child::kill would
        // leave them running).
        let _ = Command::new("kill")
            .args(["-TERM", &self.nginx.id().to_string()])
            .status();
        let _ = self.nginx.wait();
    }
}

/// `examples/nginx` of this checkout (scripts/bench.sh runs from its root).
fn examples() -> anyhow::Result<PathBuf> {
    let path = std::env::current_dir()?.join("examples/nginx");
    anyhow::ensure!(
        path.join("reload.sh").exists(),
        "run the bench from the repository's root (examples/nginx/ is not here)"
    );
    Ok(path)
}

/// Until the proxy (`what`) at `listen` answers for `service`.
fn wait_serving(what: &str, listen: &str, service: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://{listen}/{service}/");
    while Instant::now() < deadline {
        let status = Command::new("busybox")
            .args(["wget", "-qO-", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{what} at {listen} did not serve {service} within 30 s")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
