//! A bounded HTTP load for zero-downtime tests: a few workers looping GETs
//! (at most 200,000 requests or 300 s), each response counted under the
//! test phase current when its request was sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::{body, http_get};

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
    workers: usize,
) -> Tally {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (phase, stop, path) = (Arc::clone(&phase), Arc::clone(&stop), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && tally.total < 200_000
            {
                let sent_in = phase.load(Ordering::SeqCst);
                tally.total += 1;
                match http_get(address, &path).await {
                    Ok(response) if response.starts_with("HTTP/1.1 200") => {
                        let version = body(&response).trim().to_string();
                        *tally
                            .versions
                            .entry(sent_in)
                            .or_default()
                            .entry(version)
                            .or_default() += 1;
                    }
                    Ok(response) => tally.failures.push(
                        response
                            .lines()
                            .next()
                            .unwrap_or("empty response")
                            .to_string(),
                    ),
                    Err(error) => tally.failures.push(error),
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
    thread: Option<std::thread::JoinHandle<Tally>>,
}

impl Load {
    pub fn start(address: std::net::SocketAddr, path: &str, workers: usize) -> Self {
        let phase = Arc::new(AtomicU8::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (phase, stop, path) = (Arc::clone(&phase), Arc::clone(&stop), path.to_string());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the load")
                    .block_on(load(address, path, phase, stop, workers))
            })
        };
        Load {
            phase,
            stop,
            thread: Some(thread),
        }
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
