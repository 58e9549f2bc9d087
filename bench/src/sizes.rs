//! How big each workload is at each scale, and the workloads' names.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scale {
    /// Seconds: proves the bench still runs (the test suite uses it).
    Smoke,
    /// The published figures.
    Full,
}

/// One part of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Writes,
    Reads,
    Watch,
    Memory,
    Agent,
    /// Reads and writes with `--auth`, and with `--auth` and TLS.
    Security,
    /// Deploys, flips and rollbacks through `cdctl` and nginx proxies.
    Deploy,
    /// Scrapes of a registry of many services, and what they cost.
    Scrape,
    /// DNS queries answered by the scrape rows' registry.
    Dns,
    /// A registry of its own with 1,000,000 instances: memory, snapshot,
    /// restart.
    Scale,
}

/// Workload sizes for one scale.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub clients: usize,
    pub writes: usize,
    pub reads: usize,
    pub watchers: usize,
    pub flips: usize,
    /// Watchers and flips of the large fan-out row.
    pub many_watchers: usize,
    pub many_flips: usize,
    pub loaded: usize,
    pub containers: usize,
    /// Deploys (and rollbacks) per delivery row.
    pub deploys: usize,
    /// Replicas of the larger deploy.
    pub replicas: u32,
    /// Services the scraped registry holds (`loaded` instances among them).
    pub services: usize,
    /// Scrapes timed, one after the other.
    pub scrapes: usize,
    /// Instances of the scale rows' registry.
    pub scale_instances: usize,
    /// Its `--history-revisions` (None: the default), which decides how
    /// many writes make a snapshot due.
    pub scale_history_revisions: Option<u64>,
}

impl Scale {
    pub fn sizes(self) -> Sizes {
        match self {
            Scale::Smoke => Sizes {
                clients: 8,
                writes: 400,
                reads: 400,
                watchers: 10,
                flips: 5,
                many_watchers: 100,
                many_flips: 3,
                loaded: 1_000,
                containers: 3,
                deploys: 1,
                replicas: 2,
                services: 20,
                scrapes: 5,
                scale_instances: 5_000,
                scale_history_revisions: Some(300),
            },
            Scale::Full => Sizes {
                clients: 64,
                writes: 100_000,
                reads: 100_000,
                watchers: 1_000,
                flips: 200,
                many_watchers: 10_000,
                many_flips: 20,
                loaded: 100_000,
                containers: 50,
                deploys: 10,
                replicas: 10,
                services: 1_000,
                scrapes: 50,
                scale_instances: 1_000_000,
                scale_history_revisions: None,
            },
        }
    }
}
