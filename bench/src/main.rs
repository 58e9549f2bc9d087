//! `switchyard-bench`: the same workloads against a Switchyard registry and
//! against etcd, with the same client concurrency, in one run; prints a
//! table and writes `bench.json` (and the figures for BENCHMARKS.md).
//! `scripts/bench.sh` starts both servers on the same disk and calls this.
#![forbid(unsafe_code)]

mod agent;
mod etcd;
mod registry;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::json;

use stats::Row;

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
}

/// Workload sizes for one scale.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub clients: usize,
    pub writes: usize,
    pub reads: usize,
    pub watchers: usize,
    pub flips: usize,
    pub loaded: usize,
    pub containers: usize,
}

impl Scale {
    fn sizes(self) -> Sizes {
        match self {
            Scale::Smoke => Sizes {
                clients: 8,
                writes: 400,
                reads: 400,
                watchers: 10,
                flips: 5,
                loaded: 1_000,
                containers: 3,
            },
            Scale::Full => Sizes {
                clients: 64,
                writes: 100_000,
                reads: 100_000,
                watchers: 1_000,
                flips: 200,
                loaded: 100_000,
                containers: 50,
            },
        }
    }
}

/// Switchyard's registry and etcd, side by side.
#[derive(Debug, Parser)]
#[command(name = "switchyard-bench", version, about)]
struct Args {
    /// The registry under test.
    #[arg(long)]
    registry: String,
    /// The etcd to compare with.
    #[arg(long)]
    etcd: String,
    /// Process ids, for resident memory.
    #[arg(long)]
    registry_pid: u32,
    #[arg(long)]
    etcd_pid: u32,
    /// A fresh pair for the memory workload (default: the pair above).
    #[arg(long, requires_all = ["memory_registry_pid", "memory_etcd", "memory_etcd_pid"])]
    memory_registry: Option<String>,
    #[arg(long)]
    memory_registry_pid: Option<u32>,
    #[arg(long)]
    memory_etcd: Option<String>,
    #[arg(long)]
    memory_etcd_pid: Option<u32>,
    #[arg(long, value_enum, default_value = "full")]
    scale: Scale,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: PathBuf,
    /// The agent's process id, an image it follows and the label that
    /// selects its containers: adds the agent rows (needs Docker).
    #[arg(long, requires_all = ["agent_image", "agent_label"])]
    agent_pid: Option<u32>,
    #[arg(long)]
    agent_image: Option<String>,
    #[arg(long)]
    agent_label: Option<String>,
    /// Run only these workloads (comma-separated), e.g. to profile one.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
}

impl Args {
    fn runs(&self, workload: Workload) -> bool {
        self.only.is_empty() || self.only.contains(&workload)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchyard-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchyard-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let sizes = args.scale.sizes();
    let mut rows: Vec<Row> = Vec::new();

    if args.runs(Workload::Writes) {
        eprintln!(
            "writes: {} ops, {} clients, one session/lease each",
            sizes.writes, sizes.clients
        );
        let ours = registry::writes(&args.registry, sizes).await?;
        let theirs = etcd::writes(&args.etcd, sizes).await?;
        rows.extend(stats::throughput_rows("writes", &ours, &theirs));
    }

    if args.runs(Workload::Reads) {
        eprintln!(
            "reads: {} gets of a 10-instance service, {} clients",
            sizes.reads, sizes.clients
        );
        let ours = registry::reads(&args.registry, sizes).await?;
        let theirs = etcd::reads(&args.etcd, sizes).await?;
        rows.extend(stats::throughput_rows("reads", &ours, &theirs));
    }

    if args.runs(Workload::Watch) {
        eprintln!(
            "watch fan-out: {} watchers, {} flips",
            sizes.watchers, sizes.flips
        );
        let ours = registry::fan_out(&args.registry, sizes).await?;
        let theirs = etcd::fan_out(&args.etcd, sizes).await?;
        rows.extend(stats::latency_rows("watch", &ours, &theirs));
    }

    if args.runs(Workload::Memory) {
        eprintln!("memory: RSS after loading {} instances", sizes.loaded);
        let registry = args.memory_registry.as_deref().unwrap_or(&args.registry);
        let etcd = args.memory_etcd.as_deref().unwrap_or(&args.etcd);
        registry::load(registry, sizes.loaded).await?;
        etcd::load(etcd, sizes.loaded).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ours = stats::rss_mib(args.memory_registry_pid.unwrap_or(args.registry_pid))?;
        let theirs = stats::rss_mib(args.memory_etcd_pid.unwrap_or(args.etcd_pid))?;
        rows.push(Row::lower_is_better(
            &format!("rss_after_{}_instances", sizes.loaded),
            "MiB",
            ours,
            theirs,
        ));
    }

    // Rows with no etcd counterpart: the agent's.
    let mut agent_rows: Vec<(&str, &str, f64)> = Vec::new();
    if let (true, Some(pid), Some(image), Some(label)) = (
        args.runs(Workload::Agent),
        args.agent_pid,
        &args.agent_image,
        &args.agent_label,
    ) {
        eprintln!(
            "agent: docker run → visible for {} containers, then 10 s idle",
            sizes.containers
        );
        let figures = agent::measure(&args.registry, image, label, pid, sizes.containers).await?;
        let visible = &figures.start_to_visible;
        agent_rows.push((
            "agent_start_to_visible_p50",
            "ms",
            visible.percentile_ms(50.0),
        ));
        agent_rows.push((
            "agent_start_to_visible_p99",
            "ms",
            visible.percentile_ms(99.0),
        ));
        agent_rows.push(("agent_idle_rss", "MiB", figures.idle_rss_mib));
        agent_rows.push(("agent_idle_cpu", "%", figures.idle_cpu_percent));
    }

    println!(
        "{:<34} {:>8} {:>14} {:>14} {:>8}",
        "name", "unit", "switchyard", "etcd", "ratio"
    );
    for row in &rows {
        println!(
            "{:<34} {:>8} {:>14.2} {:>14.2} {:>8.2}",
            row.name, row.unit, row.switchyard, row.etcd, row.ratio
        );
    }
    for (name, unit, value) in &agent_rows {
        println!("{name:<34} {unit:>8} {value:>14.2} {:>14} {:>8}", "-", "-");
    }
    let mut results: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            json!({
                "name": row.name,
                "unit": row.unit,
                "switchyard": row.switchyard,
                "etcd": row.etcd,
                "ratio": row.ratio,
            })
        })
        .collect();
    // etcd has no agent: no etcd figure, no ratio.
    results.extend(agent_rows.iter().map(|(name, unit, value)| {
        json!({"name": name, "unit": unit, "switchyard": value, "etcd": null, "ratio": null})
    }));
    let document = json!({
        "scale": format!("{:?}", args.scale).to_lowercase(),
        "results": results,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&document)? + "\n")?;
    Ok(())
}
