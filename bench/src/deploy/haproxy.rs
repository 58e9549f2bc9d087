//! HAProxy in runtime mode for the delivery rows: master-worker HAProxy
//! configured from `examples/haproxy-runtime/`, followed by `cdctl template
//! --haproxy-runtime` through its master socket; both stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct RuntimeProxy {
    listen: String,
    haproxy: Child,
    template: Child,
}

/// `examples/haproxy-runtime` of this checkout.
fn example() -> anyhow::Result<PathBuf> {
    let path = std::env::current_dir()?.join("examples/haproxy-runtime");
    anyhow::ensure!(
        path.join("haproxy.cfg.j2").exists(),
        "run the bench from the repository's root (examples/haproxy-runtime/ is not here)"
    );
    Ok(path)
}

impl RuntimeProxy {
    pub fn start(cdctl: &Path, registry: &str, work: &Path) -> anyhow::Result<Self> {
        let dir = work.join("haproxy");
        std::fs::create_dir_all(&dir)?;
        let listen = format!("127.0.0.1:{}", super::free_port()?);
        let conf = dir.join("haproxy.cfg");
        let master = dir.join("master.sock");
        let template = example()?.join("haproxy.cfg.j2");
        let template_command = |extra: &[&str]| {
            let mut command = Command::new(cdctl);
            command
                .args(["--registry", registry, "template", "--template"])
                .arg(&template)
                .arg("--out")
                .arg(&conf)
                .args(["--proxy-id", "bench-haproxy", "--report-interval", "1s"])
                .args(extra)
                .env("HAPROXY_SOCKET", dir.join("admin.sock"))
                .env("PROXY_LISTEN", &listen);
            command
        };
        let first = template_command(&["--once"]).output()?;
        anyhow::ensure!(first.status.success(), "the first render failed");
        let haproxy = Command::new("haproxy")
            .arg("-W")
            .arg("-S")
            .arg(&master)
            .arg("-f")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let master_text = master.to_string_lossy().into_owned();
        let reload = format!("{} {master_text}", example()?.join("reload.sh").display());
        let template = template_command(&[
            "--haproxy-runtime",
            &master_text,
            "--check",
            "haproxy -c -q -f {path}",
            "--reload",
            &reload,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
        Ok(RuntimeProxy {
            listen,
            haproxy,
            template,
        })
    }

    /// Until HAProxy answers for `service`.
    pub fn wait_serving(&self, service: &str) -> anyhow::Result<()> {
        super::wait_serving("HAProxy", &self.listen, service)
    }
}

impl Drop for RuntimeProxy {
    fn drop(&mut self) {
        let _ = self.template.kill();
        let _ = self.template.wait();
        // SIGTERM: the master stops its worker too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.haproxy.id().to_string()])
            .status();
        let _ = self.haproxy.wait();
    }
}
