//! The real binaries as child processes: find (and if needed build) them,
//! start `cd-registry` on `127.0.0.1:0` and learn its address from its log,
//! kill it with SIGKILL or SIGTERM, run `cdctl`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::workspace_root;

/// The folder cargo puts debug binaries in.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debug")
}

/// Path of one of the workspace's binaries, built once per test run so the
/// tests never run a stale one.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build for the binaries");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
    let path = target_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// `cd-registry` as a child process.
pub struct RegistryProcess {
    pub child: Child,
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    /// Every log line so far (JSON), for tests that check what it said.
    pub log: Log,
}

/// The log lines a child process wrote to standard error so far.
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// How many log lines so far contain `needle`.
pub fn lines_with(log: &Log, needle: &str) -> usize {
    log.lock()
        .map(|lines| lines.iter().filter(|line| line.contains(needle)).count())
        .unwrap_or(0)
}

impl RegistryProcess {
    /// Starts the real binary on `127.0.0.1:0` with `data_dir`; waits until
    /// its log says where it listens.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Self {
        Self::start_on(data_dir, "127.0.0.1:0", extra_args)
    }

    /// Starts the real binary on `listen` (e.g. the port of an earlier run).
    pub fn start_on(data_dir: &Path, listen: &str, extra_args: &[&str]) -> Self {
        Self::start_command(
            Command::new(binary("cd-registry")),
            data_dir,
            listen,
            extra_args,
        )
    }

    /// Starts the real binary with at most `descriptors` open files
    /// (`prlimit`, from util-linux), as a unit's `LimitNOFILE` would.
    pub fn start_with_descriptor_limit(
        data_dir: &Path,
        descriptors: u32,
        extra_args: &[&str],
    ) -> Self {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={descriptors}:{descriptors}"))
            .arg("--")
            .arg(binary("cd-registry"));
        Self::start_command(command, data_dir, "127.0.0.1:0", extra_args)
    }

    fn start_command(
        mut command: Command,
        data_dir: &Path,
        listen: &str,
        extra_args: &[&str],
    ) -> Self {
        // Many registries run at once here: no metrics listener unless a
        // test asks for one with --metrics-listen.
        command
            .env("SWITCHYARD_METRICS_LISTEN", "off")
            .args(["--listen", listen, "--log-format", "json", "--data-dir"])
            .arg(data_dir)
            .args(extra_args);
        let (child, address, log) = spawn_logging(command, "cd-registry listening");
        RegistryProcess {
            child,
            address,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_9(&mut self) {
        kill_9(&mut self.child);
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        kill_9(&mut self.child);
    }
}

/// SIGKILL and reap.
fn kill_9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, then the exit status.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -TERM failed");
    child.wait().expect("waiting for the child to exit")
}

/// Spawns a program that logs JSON to standard error and waits for the line
/// `message` with an `address` field; keeps draining its log afterwards
/// (echoed to the test's output, which cargo shows when a test fails).
fn spawn_logging(mut command: Command, message: &'static str) -> (Child, SocketAddr, Log) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let (found, address) = std::sync::mpsc::channel();
    let log = Log::default();
    let lines = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut lines) = lines.lock() {
                lines.push(line.clone());
            }
            if let Some(sender) = &found
                && let Some(address) = logged_address(&line, message)
            {
                let _ = sender.send(address);
                found = None;
            }
            if std::env::var_os("SWITCHYARD_TEST_LOGS").is_some() {
                eprintln!("{line}");
            }
        }
    });
    let address = address
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no {message:?} line in the log of {command:?}"));
    (child, address, log)
}

fn logged_address(line: &str, message: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != message {
        return None;
    }
    fields.get("address")?.as_str()?.parse().ok()
}

/// `cd-agent` as a child process.
pub struct AgentProcess {
    pub child: Child,
    /// Where its /healthz answers.
    pub healthz: SocketAddr,
    /// Every log line so far (JSON).
    pub log: Log,
}

impl AgentProcess {
    /// Starts the agent against `registry_url`, advertising 127.0.0.1
    /// (unless `extra_args` say `--advertise-ip`), following only containers labelled `only_label` (so tests sharing one
    /// engine do not see each other's containers).
    pub fn start(registry_url: &str, only_label: &str, extra_args: &[&str]) -> Self {
        Self::start_with_env(registry_url, only_label, extra_args, &[])
    }

    pub fn start_with_env(
        registry_url: &str,
        only_label: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(binary("cd-agent"));
        command.args(["--registry", registry_url]);
        if !extra_args.contains(&"--advertise-ip") {
            command.args(["--advertise-ip", "127.0.0.1"]);
        }
        command
            .args(["--only-label", only_label, "--healthz", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(extra_args)
            .envs(env.iter().copied());
        let (child, healthz, log) = spawn_logging(command, "healthz listening");
        AgentProcess {
            child,
            healthz,
            log,
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_9(&mut self) {
        kill_9(&mut self.child);
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        kill_9(&mut self.child);
    }
}

/// Deploys in tests start containers unless a test asks for Swarm: tests
/// run side by side, and while one holds a swarm `auto` would pick Swarm.
const RUNTIME: (&str, &str) = ("SWITCHYARD_RUNTIME", "containers");

/// Runs `cdctl` against `registry_url` (deploys: `--runtime containers`).
pub fn cdctl(registry_url: &str, args: &[&str]) -> Output {
    Command::new(binary("cdctl"))
        .env(RUNTIME.0, RUNTIME.1)
        .arg("--registry")
        .arg(registry_url)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running cdctl")
}

/// Runs `cdctl` and parses its standard output as JSON; panics with its
/// standard error when it fails.
pub fn cdctl_json(registry_url: &str, args: &[&str]) -> serde_json::Value {
    let output = cdctl(registry_url, args);
    assert!(
        output.status.success(),
        "cdctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "cdctl {args:?} printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Runs `cdctl` without blocking the async runtime (tests that serve a
/// registry in-process need their worker threads), with extra environment
/// (which may set `SWITCHYARD_RUNTIME` too).
pub async fn cdctl_async(registry_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(binary("cdctl"))
        .env(RUNTIME.0, RUNTIME.1)
        .arg("--registry")
        .arg(registry_url)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running cdctl")
}

/// A child process stopped with SIGKILL when dropped (`cdctl template`,
/// nginx, …), for programs whose log the test does not read.
pub struct Background {
    pub child: Child,
}

impl Background {
    pub fn spawn(mut command: Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("SWITCHYARD_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
        Background { child }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        kill_9(&mut self.child);
    }
}

/// A finished program's exit code and output, for assertion messages.
pub fn explain(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A process's resident memory, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("reading /proc/{pid}/status: {error}"));
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS line in /proc/{pid}/status"));
    kib * 1024
}

/// Write system calls (`write`, `writev`, `pwrite`, …) a process has made,
/// from `/proc/PID/io`.
pub fn write_calls(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_else(|error| panic!("reading /proc/{pid}/io: {error}"));
    io.lines()
        .find_map(|line| line.strip_prefix("syscw:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no syscw line in /proc/{pid}/io"))
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|error| panic!("reading /proc/{pid}/stat: {error}"));
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks =
        |index: usize| -> u64 { fields.get(index).and_then(|f| f.parse().ok()).unwrap_or(0) };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 1000 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}
