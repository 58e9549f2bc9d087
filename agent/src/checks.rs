//! Health checks the agent runs itself, for containers without a Docker
//! HEALTHCHECK that ask for one by label (`switchyard.check.http=/path`,
//! `switchyard.check.tcp`). One task per instance; results go back to the
//! agent's loop, which re-syncs when a health changes.
//!
//! The HTTP check sends one `GET` and reads only the status line: that is
//! all a liveness check needs, so no HTTP client library is pulled in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use switchyard_model::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::discover::{Check, CheckKind};

/// A check result for one instance.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub instance_id: String,
    pub health: Health,
}

/// The running checks, keyed by instance id.
pub struct Checks {
    running: HashMap<String, (Check, SocketAddr, JoinHandle<()>)>,
    results: mpsc::Sender<CheckResult>,
}

impl Checks {
    pub fn new(results: mpsc::Sender<CheckResult>) -> Self {
        Checks {
            running: HashMap::new(),
            results,
        }
    }

    /// Runs exactly the checks in `wanted`: starts new ones, restarts
    /// changed ones, stops the rest.
    pub fn reconcile(&mut self, wanted: HashMap<String, (Check, SocketAddr)>) {
        self.running.retain(|id, (check, target, task)| {
            let keep = wanted.get(id) == Some(&(check.clone(), *target));
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, (check, target)) in wanted {
            if self.running.contains_key(&id) {
                continue;
            }
            let task = tokio::spawn(run_check(
                id.clone(),
                check.clone(),
                target,
                self.results.clone(),
            ));
            self.running.insert(id, (check, target, task));
        }
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        for (_, (_, _, task)) in self.running.drain() {
            task.abort();
        }
    }
}

async fn run_check(
    instance_id: String,
    check: Check,
    target: SocketAddr,
    results: mpsc::Sender<CheckResult>,
) {
    let timeout = check.interval.min(Duration::from_secs(5));
    let mut ticker = tokio::time::interval(check.interval);
    loop {
        ticker.tick().await;
        let passed = probe(&check.kind, target, timeout).await;
        let health = if passed {
            Health::Passing
        } else {
            Health::Critical
        };
        let result = CheckResult {
            instance_id: instance_id.clone(),
            health,
        };
        if results.send(result).await.is_err() {
            return;
        }
    }
}

/// Runs one check: whether the instance at `target` passes it.
pub async fn probe(kind: &CheckKind, target: SocketAddr, timeout: Duration) -> bool {
    match kind {
        CheckKind::Http { path } => http_ok(target, path, timeout).await,
        CheckKind::Tcp => tokio::time::timeout(timeout, TcpStream::connect(target))
            .await
            .is_ok_and(|connected| connected.is_ok()),
    }
}

/// Whether `GET path` on `target` answers 2xx or 3xx within `timeout`.
pub async fn http_ok(target: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(target).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {target}\r\nUser-Agent: cd-agent\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let mut read = 0;
        while read < 12 {
            let n = stream.read(&mut head[read..]).await.ok()?;
            if n == 0 {
                break;
            }
            read += n;
        }
        // "HTTP/1.x NNN ..."
        let line = std::str::from_utf8(&head[..read]).ok()?;
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn tcp_checks_pass_while_something_listens() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("address");
        assert!(probe(&CheckKind::Tcp, target, TIMEOUT).await);
        drop(listener);
        assert!(!probe(&CheckKind::Tcp, target, TIMEOUT).await);
    }

    #[tokio::test]
    async fn http_checks_read_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut stream, _) = listener.accept().await.expect("accept");
                let mut request = [0u8; 256];
                let _ = stream.read(&mut request).await;
                let answer = format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let http = CheckKind::Http {
            path: "/ready".into(),
        };
        assert!(probe(&http, target, TIMEOUT).await, "200 passes");
        assert!(!probe(&http, target, TIMEOUT).await, "503 fails");
        server.await.expect("server");
    }
}
