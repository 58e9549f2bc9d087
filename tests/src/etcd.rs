//! Real etcd (Debian's etcd-server, 3.4) for tests: one member or a
//! three-member cluster on loopback ports with temporary data directories,
//! stopped (and their directories removed) when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually, free_port};

/// One etcd member.
pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    child: Option<Child>,
    initial_cluster: String,
}

/// An etcd cluster of one or more members on loopback.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster answers.
    pub async fn start(size: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = format!("switchyard-test-{:08x}", rand::random::<u32>());
        let mut members: Vec<EtcdMember> = (0..size)
            .map(|index| EtcdMember {
                name: format!("member-{index}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("member-{index}")),
                child: None,
                initial_cluster: String::new(),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for member in &mut members {
            member.initial_cluster = initial_cluster.clone();
            member.start(&token);
        }
        let cluster = EtcdCluster { members, _dir: dir };
        let endpoints = cluster.endpoints();
        eventually(Duration::from_secs(60), || {
            let endpoints = endpoints.clone();
            async move {
                let mut client = etcd_client::Client::connect(&endpoints, None)
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .put("switchyard-test-ready", "1", None)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        })
        .await;
        cluster
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// `--etcd-endpoints` for the registry.
    pub fn endpoints_flag(&self) -> String {
        self.endpoints().join(",")
    }

    /// Compacts the history through `revision` (etcd does it on request).
    pub async fn compact(&self, revision: u64) {
        let mut client = etcd_client::Client::connect(self.endpoints(), None)
            .await
            .expect("connecting to etcd");
        client
            .compact(i64::try_from(revision).unwrap_or(i64::MAX), None)
            .await
            .expect("compacting");
    }
}

impl EtcdMember {
    fn start(&mut self, token: &str) {
        let child = Command::new("etcd")
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                token,
            ])
            .args(["--max-txn-ops", "32768", "--max-request-bytes", "10485760"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd (install etcd-server)");
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}
