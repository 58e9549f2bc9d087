//! Docker for tests, through the `docker` command a user would type: test
//! images built `FROM scratch` with Debian's static busybox, and guards that
//! remove every container, network and image a test made, also when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs `docker ARGS`; answers its output whatever the exit status.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("running docker")
}

/// Runs `docker ARGS` and answers its trimmed standard output; panics with
/// its standard error when it fails.
pub fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A unique suffix for names, labels and tags of one test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// An image built for one test; removed when dropped.
pub struct TestImage {
    pub tag: String,
}

impl TestImage {
    /// busybox httpd serving `version` at `/` on port 80, and after N
    /// seconds at `/cgi-bin/slow?N` (a long request). With a healthcheck, the container is healthy while `/www/healthy` exists
    /// (flip it with [`TestContainer::exec`]).
    pub fn httpd(version: &str, healthcheck: bool) -> Self {
        let name = unique("switchyard-test-httpd");
        let context = Self::httpd_context(version, healthcheck, &name);
        Self::build(context.path(), &name)
    }

    /// The build context of [`Self::httpd`]'s image, for tests whose code
    /// under test builds it (`name` makes it unique).
    pub fn httpd_context(version: &str, healthcheck: bool, name: &str) -> tempfile::TempDir {
        // One COPY of a whole root holding a file unique to this image: no
        // two tests share an image id or any intermediate image, so one
        // test's cleanup never touches another's containers or the build
        // cache another build is using at that moment.
        let context = tempfile::tempdir().expect("a build context");
        let root = context.path().join("rootfs");
        let www = root.join("www");
        std::fs::create_dir_all(&www).expect("www");
        std::fs::create_dir_all(root.join("bin")).expect("bin");
        std::fs::write(www.join("index.html"), format!("{version}\n")).expect("index.html");
        let cgi = www.join("cgi-bin");
        std::fs::create_dir_all(&cgi).expect("cgi-bin");
        let slow = format!(
            "#!/bin/busybox sh\n/bin/busybox sleep \"${{QUERY_STRING:-5}}\"\n\
             echo 'Content-Type: text/plain'\necho\necho {version}\n"
        );
        std::fs::write(cgi.join("slow"), slow).expect("cgi-bin/slow");
        std::fs::set_permissions(
            cgi.join("slow"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod cgi-bin/slow");
        std::fs::write(www.join(".image"), name).expect(".image");
        std::fs::copy(BUSYBOX, root.join("bin/busybox"))
            .expect("copying /bin/busybox (install busybox-static)");
        let health = if healthcheck {
            "HEALTHCHECK --interval=1s --timeout=1s --retries=1 \
             CMD [\"/bin/busybox\", \"test\", \"-f\", \"/www/healthy\"]\n"
        } else {
            ""
        };
        let dockerfile = format!(
            "FROM scratch\nCOPY rootfs /\nEXPOSE 80\n{health}\
             ENTRYPOINT [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n"
        );
        std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
        context
    }

    /// Builds the Dockerfile in `context` as `name:test`.
    pub fn build(context: &Path, name: &str) -> Self {
        let tag = format!("{name}:test");
        let context = context.to_string_lossy().into_owned();
        docker_ok(&["build", "-q", "-t", &tag, &context]);
        TestImage { tag }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        // Containers of the image first: an image still in use would only
        // lose its tag and stay behind, dangling.
        let ancestor = format!("ancestor={}", self.tag);
        if let Ok(listing) = String::from_utf8(docker(&["ps", "-aq", "--filter", &ancestor]).stdout)
        {
            for id in listing.split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

/// A container removed (with `rm -f`) when dropped.
pub struct TestContainer {
    pub id: String,
}

impl TestContainer {
    /// `docker run -d ARGS`.
    pub fn run(args: &[&str]) -> Self {
        let mut full = vec!["run", "-d"];
        full.extend_from_slice(args);
        TestContainer {
            id: docker_ok(&full),
        }
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// The host port published for container port 80 on 127.0.0.1.
    pub fn published_port(&self) -> u16 {
        let mapping = docker_ok(&["port", &self.id, "80/tcp"]);
        mapping
            .lines()
            .next()
            .and_then(|line| line.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no published port in {mapping:?}"))
    }

    /// The container's IP on `network`.
    pub fn ip_on(&self, network: &str) -> String {
        let template = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        docker_ok(&["inspect", "-f", &template, &self.id])
    }

    pub fn exec(&self, command: &[&str]) {
        let mut args = vec!["exec", self.id.as_str()];
        args.extend_from_slice(command);
        docker_ok(&args);
    }

    pub fn docker(&self, verb: &str) {
        docker_ok(&[verb, &self.id]);
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.id]);
    }
}

/// A user-defined network removed when dropped.
pub struct TestNetwork {
    pub name: String,
}

impl TestNetwork {
    pub fn create(extra: &[&str]) -> Self {
        let name = unique("switchyard-test-net");
        let mut args = vec!["network", "create"];
        args.extend_from_slice(extra);
        args.push(&name);
        docker_ok(&args);
        TestNetwork { name }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// The Docker socket of this machine.
pub fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// A Unix-socket proxy in front of the Docker socket that a test can stop
/// (cutting every connection, the event stream included) and start again.
pub struct SocketProxy {
    pub path: PathBuf,
    target: PathBuf,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl SocketProxy {
    /// Listens on `path`, forwarding to the Docker socket.
    pub fn start(path: &Path) -> Self {
        let proxy = SocketProxy {
            path: path.to_path_buf(),
            target: docker_socket(),
            tasks: Default::default(),
        };
        proxy.resume();
        proxy
    }

    /// `DOCKER_HOST` for clients of the proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Cuts every connection and stops listening.
    pub fn cut(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for task in tasks.drain(..) {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// Listens again.
    pub fn resume(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener =
            tokio::net::UnixListener::bind(&self.path).expect("binding the proxy socket");
        let target = self.target.clone();
        let tasks = std::sync::Arc::clone(&self.tasks);
        let accept_tasks = std::sync::Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let connection = tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                accept_tasks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(connection);
            }
        });
        tasks.lock().unwrap_or_else(|p| p.into_inner()).push(accept);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A single-node swarm for one test: joined if the engine already is a
/// manager, otherwise created on 127.0.0.1 and left again (with the
/// `docker_gwbridge` network it brings) when dropped. Tests holding one run
/// one at a time.
pub struct TestSwarm {
    created: bool,
    gwbridge_existed: bool,
    _exclusive: std::sync::MutexGuard<'static, ()>,
}

static SWARM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held by the tests that load the machine for a minute (the zero-downtime
/// loads through nginx and HAProxy): they run one at a time, and never
/// beside a swarm test, whose agent must follow Docker's events on time on
/// two cores. (Not with [`TestSwarm`] in the same test: one lock.)
pub fn exclusive() -> Exclusive {
    Exclusive {
        _guard: SWARM.lock().unwrap_or_else(|p| p.into_inner()),
    }
}

/// The machine to one heavy test (see [`exclusive`]) until dropped. Each
/// test runs on a runtime of its own, so holding it across awaits blocks
/// no other test's runtime.
pub struct Exclusive {
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl TestSwarm {
    pub fn start() -> Self {
        let exclusive = SWARM.lock().unwrap_or_else(|p| p.into_inner());
        let gwbridge_existed = docker(&["network", "inspect", "docker_gwbridge"])
            .status
            .success();
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let created = state != "active";
        if created {
            docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        }
        TestSwarm {
            created,
            gwbridge_existed,
            _exclusive: exclusive,
        }
    }

    /// This engine's Swarm node id.
    pub fn node_id(&self) -> String {
        docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])
    }
}

impl Drop for TestSwarm {
    fn drop(&mut self) {
        if self.created {
            let _ = docker(&["swarm", "leave", "--force"]);
            if !self.gwbridge_existed {
                let _ = docker(&["network", "rm", "docker_gwbridge"]);
            }
        }
    }
}

/// A Swarm service removed (and waited for) when dropped.
pub struct TestService {
    pub name: String,
}

impl TestService {
    /// `docker service create --detach --name NAME ARGS`.
    pub fn create(args: &[&str]) -> Self {
        let name = unique("switchyard-test-svc");
        let mut full = vec![
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            name.as_str(),
        ];
        full.extend_from_slice(args);
        docker_ok(&full);
        TestService { name }
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        let _ = docker(&["service", "rm", &self.name]);
        // Task containers go away asynchronously; wait so the network can go.
        let label = format!("label=com.docker.swarm.service.name={}", self.name);
        for _ in 0..100 {
            let left = docker(&["ps", "-aq", "--filter", &label]);
            if left.stdout.iter().all(u8::is_ascii_whitespace) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Removes every container carrying `label` when dropped: for containers a
/// program under test (e.g. `cdctl deploy`) created.
pub struct LabelledContainers {
    pub label: String,
}

impl LabelledContainers {
    pub fn ids(&self) -> Vec<String> {
        let filter = format!("label={}", self.label);
        docker_ok(&["ps", "-aq", "--no-trunc", "--filter", &filter])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for LabelledContainers {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = docker(&["rm", "-f", &id]);
        }
    }
}

/// Removes every Swarm service carrying `label` when dropped (services a
/// program under test, e.g. `cdctl deploy --runtime swarm`, created), and
/// waits until their task containers are gone.
pub struct LabelledServices {
    pub label: String,
}

impl Drop for LabelledServices {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label);
        let listing = docker(&["service", "ls", "-q", "--filter", &filter]);
        for id in String::from_utf8_lossy(&listing.stdout).split_whitespace() {
            let _ = docker(&["service", "rm", id]);
        }
        wait_gone(&filter);
    }
}

/// Waits (up to 30 s) until no container matches the `docker ps` filter.
fn wait_gone(filter: &str) {
    for _ in 0..300 {
        let left = docker(&["ps", "-aq", "--filter", filter]);
        if left.stdout.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Builds Switchyard's own images with `scripts/build-images.sh` (the
/// helper users run too) under tags unique to the test; each is removed
/// when dropped. `names`: registry, agent, proxy.
pub fn switchyard_images(names: &[&str]) -> Vec<TestImage> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf();
    let mut command = Command::new("bash");
    command.arg(root.join("scripts/build-images.sh"));
    let mut images = Vec::new();
    for name in names {
        let tag = format!("{}:test", unique(&format!("switchyard-test-{name}")));
        command.arg(format!("--{name}-tag")).arg(&tag);
        images.push(TestImage { tag });
    }
    let status = command.status().expect("running scripts/build-images.sh");
    assert!(status.success(), "scripts/build-images.sh {names:?} failed");
    images
}

/// A stack deployed with `docker stack deploy`, removed (with its network
/// and volumes) when dropped.
pub struct TestStack {
    pub name: String,
    volumes: Vec<String>,
    /// The network the stack made (`SWITCHYARD_NETWORK`), waited for.
    network: Option<String>,
}

impl TestStack {
    /// `docker stack deploy -c COMPOSE NAME` with `env` for the file's
    /// `${...}` settings.
    pub fn deploy(compose: &Path, env: &[(&str, String)]) -> Self {
        Self::deploy_files(&[compose], env)
    }

    /// `docker stack deploy -c FILE -c FILE … NAME`: later files add to
    /// and override earlier ones.
    pub fn deploy_files(files: &[&Path], env: &[(&str, String)]) -> Self {
        let name = unique("sy").replace('-', "");
        let mut args = vec!["stack".to_string(), "deploy".to_string()];
        for file in files {
            args.extend(["-c".to_string(), file.to_string_lossy().into_owned()]);
        }
        args.push(name.clone());
        let output = Command::new("docker")
            .args(&args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .expect("running docker stack deploy");
        assert!(
            output.status.success(),
            "docker stack deploy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        TestStack {
            volumes: vec![format!("{name}_registry-data")],
            network: env
                .iter()
                .find(|(k, _)| *k == "SWITCHYARD_NETWORK")
                .map(|(_, v)| v.clone()),
            name,
        }
    }

    /// The stack's service `service` (its full name).
    pub fn service(&self, service: &str) -> String {
        format!("{}_{service}", self.name)
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let _ = docker(&["stack", "rm", &self.name]);
        wait_gone(&format!("label=com.docker.stack.namespace={}", self.name));
        for volume in &self.volumes {
            let _ = docker(&["volume", "rm", volume]);
        }
        // Swarm removes the network a moment after its services.
        if let Some(network) = &self.network {
            for _ in 0..300 {
                if !docker(&["network", "inspect", network]).status.success() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}
