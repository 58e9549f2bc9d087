//! `switchyard-bench`: the same workloads against a Switchyard registry and
//! against etcd, with the same client concurrency, in one run; prints a
//! table and writes `bench.json` (and the figures for BENCHMARKS.md).
//! `scripts/bench.sh` starts both servers on the same disk and calls this.
#![forbid(unsafe_code)]

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

/// Workload sizes for one scale.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub clients: usize,
    pub writes: usize,
    pub reads: usize,
    pub watchers: usize,
    pub flips: usize,
    pub loaded: usize,
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
            },
            Scale::Full => Sizes {
                clients: 64,
                writes: 100_000,
                reads: 100_000,
                watchers: 1_000,
                flips: 200,
                loaded: 100_000,
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
    #[arg(long, value_enum, default_value = "full")]
    scale: Scale,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: PathBuf,
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

    eprintln!(
        "writes: {} ops, {} clients, one session/lease each",
        sizes.writes, sizes.clients
    );
    let ours = registry::writes(&args.registry, sizes).await?;
    let theirs = etcd::writes(&args.etcd, sizes).await?;
    rows.extend(stats::throughput_rows("writes", &ours, &theirs));

    eprintln!(
        "reads: {} gets of a 10-instance service, {} clients",
        sizes.reads, sizes.clients
    );
    let ours = registry::reads(&args.registry, sizes).await?;
    let theirs = etcd::reads(&args.etcd, sizes).await?;
    rows.extend(stats::throughput_rows("reads", &ours, &theirs));

    eprintln!(
        "watch fan-out: {} watchers, {} flips",
        sizes.watchers, sizes.flips
    );
    let ours = registry::fan_out(&args.registry, sizes).await?;
    let theirs = etcd::fan_out(&args.etcd, sizes).await?;
    rows.extend(stats::latency_rows("watch", &ours, &theirs));

    eprintln!("memory: RSS after loading {} instances", sizes.loaded);
    registry::load(&args.registry, sizes.loaded).await?;
    etcd::load(&args.etcd, sizes.loaded).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ours = stats::rss_mib(args.registry_pid)?;
    let theirs = stats::rss_mib(args.etcd_pid)?;
    rows.push(Row::lower_is_better(
        &format!("rss_after_{}_instances", sizes.loaded),
        "MiB",
        ours,
        theirs,
    ));

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
    let document = json!({
        "scale": format!("{:?}", args.scale).to_lowercase(),
        "results": rows.iter().map(|row| json!({
            "name": row.name,
            "unit": row.unit,
            "switchyard": row.switchyard,
            "etcd": row.etcd,
            "ratio": row.ratio,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&document)? + "\n")?;
    Ok(())
}
