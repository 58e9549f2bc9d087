//! A bounded HTTP load for zero-downtime tests: a few workers looping GETs
//! (at most 200,000 requests or 300 s), each response counted under the
//! test phase current when its request was sent. Workers either open a new
//! connection per request, or keep one open across requests and never
//! retry, as a connection pool does: a request sent on a connection the
//! proxy closes is a failure, and the next one opens a new connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::{body, http_get};

/// How the load's workers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// A new connection per request (`Connection: close`).
    Fresh,
    /// One connection kept open across requests; no retry.
    KeepAlive,
}

/// A keep-alive HTTP/1.1 client of one connection that never retries.
struct KeepAlive {
    address: std::net::SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    /// `GET path` on the open connection (opened first when there is none);
    /// answers the status line, headers and body as [`http_get`] does.
    async fn get(&mut self, path: &str) -> Result<String, String> {
        let answer = tokio::time::timeout(Duration::from_secs(10), self.exchange(path)).await;
        let answer = answer.unwrap_or_else(|_| Err("no answer within 10 s".into()));
        if answer.is_err() {
            self.stream = None;
        }
        answer
    }

    async fn exchange(&mut self, path: &str) -> Result<String, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.address)
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.address);
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending on a kept-alive connection: {e}"))?;
        let mut head = String::new();
        let (mut length, mut close) = (0usize, false);
        loop {
            let mut line = String::new();
            let read = stream
                .read_line(&mut line)
                .await
                .map_err(|e| format!("reading the response: {e}"))?;
            if read == 0 {
                return Err("the proxy closed the kept-alive connection before answering".into());
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().map_err(|_| format!("bad {line:?}"))?;
            }
            close |= lower.starts_with("connection:") && lower.contains("close");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        stream
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        if close {
            // The proxy said so: not a failure, the next request reconnects.
            self.stream = None;
        }
        Ok(format!("{head}{}", String::from_utf8_lossy(&body)))
    }
}

/// What the load saw, by the test phase in which each request was sent.
#[derive(Default, Debug)]
pub struct Tally {
    /// phase → version → responses
    pub versions: BTreeMap<u8, BTreeMap<String, u64>>,
    pub failures: Vec<String>,
    pub total: u64,
}

/// A bounded load through nginx: `workers` loops of GETs, each request
/// tagged with the phase current when it was sent.
async fn load(
    address: std::net::SocketAddr,
    path: String,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    workers: usize,
    connections: Connections,
) -> Tally {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (phase, stop, path) = (Arc::clone(&phase), Arc::clone(&stop), path.clone());
        let sent = Arc::clone(&sent);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut kept = KeepAlive {
                address,
                stream: None,
            };
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && tally.total < 200_000
            {
                let sent_in = phase.load(Ordering::SeqCst);
                tally.total += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                let answer = match connections {
                    Connections::Fresh => http_get(address, &path).await,
                    Connections::KeepAlive => kept.get(&path).await,
                };
                match answer {
                    Ok(response) if response.starts_with("HTTP/1.1 200") => {
                        let version = body(&response).trim().to_string();
                        *tally
                            .versions
                            .entry(sent_in)
                            .or_default()
                            .entry(version)
                            .or_default() += 1;
                    }
                    Ok(response) => tally.failures.push(format!(
                        "phase {sent_in}: {}",
                        response.lines().next().unwrap_or("empty response")
                    )),
                    Err(error) => tally.failures.push(format!("phase {sent_in}: {error}")),
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.expect("load task");
        total.total += tally.total;
        total.failures.extend(tally.failures);
        for (phase, versions) in tally.versions {
            for (version, count) in versions {
                *total
                    .versions
                    .entry(phase)
                    .or_default()
                    .entry(version)
                    .or_default() += count;
            }
        }
    }
    total
}

/// [`load`] on a thread and runtime of its own, so it never slows the
/// programs under test that share the test's runtime.
pub struct Load {
    pub phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Tally>>,
}

impl Load {
    /// Workers with a new connection per request.
    pub fn start(address: std::net::SocketAddr, path: &str, workers: usize) -> Self {
        Self::start_with(address, path, workers, Connections::Fresh)
    }

    pub fn start_with(
        address: std::net::SocketAddr,
        path: &str,
        workers: usize,
        connections: Connections,
    ) -> Self {
        let phase = Arc::new(AtomicU8::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (phase, stop, path) = (Arc::clone(&phase), Arc::clone(&stop), path.to_string());
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the load")
                    .block_on(load(address, path, phase, stop, sent, workers, connections))
            })
        };
        Load {
            phase,
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Requests sent from now on count under `phase`.
    pub fn enter(&self, phase: u8) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// Stops the workers and answers what they saw (joining the load's
    /// thread off the async runtime, which may serve the registry).
    pub async fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join")
            .expect("the load thread")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
