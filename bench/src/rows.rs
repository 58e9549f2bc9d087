//! The registry's core rows beside etcd's: reads (with their ceiling and
//! CPU), the watch fan-out (with its ceiling, CPU and the 10,000-watcher
//! row) and memory (with each server's floor). `main.rs` splits off here to
//! stay short.

use std::time::Duration;

use switchyard_client::ClientOptions;

use crate::stats::{self, CpuSpent, Row, Samples};
use crate::{Args, Sizes, Workload, ceiling, etcd, many, registry};

/// Rows with no etcd counterpart: name, unit, value.
pub type Single = (String, &'static str, f64);

/// Reads beside etcd's, the CPU per read of each side, the unary ceiling,
/// and (with `writes` from the same run) writes as a share of it.
pub async fn reads(
    args: &Args,
    plain: &registry::Target,
    sizes: Sizes,
    writes: Option<&Samples>,
) -> anyhow::Result<(Vec<Row>, Vec<Single>)> {
    eprintln!(
        "reads: {} gets of a 10-instance service, {} clients",
        sizes.reads, sizes.clients
    );
    let cpu = CpuSpent::start(Some(args.registry_pid))?;
    let ours = registry::reads(plain, sizes).await?;
    let our_cpu = cpu.per(sizes.reads)?;
    let cpu = CpuSpent::start(Some(args.etcd_pid))?;
    let theirs = etcd::reads(&args.etcd, sizes).await?;
    let their_cpu = cpu.per(sizes.reads)?;
    let mut rows = stats::throughput_rows("reads", &ours, &theirs);
    rows.extend(stats::cpu_rows("reads", "op", our_cpu, their_cpu));
    let cpu = CpuSpent::start(Some(args.registry_pid))?;
    let ceiling = ceiling::reads(&args.registry, sizes).await?.throughput();
    let (server, client) = cpu.per(sizes.reads)?;
    let share = |samples: &Samples| 100.0 * samples.throughput() / ceiling.max(1e-9);
    let mut single: Vec<Single> = vec![
        ("reads_ceiling".into(), "ops/s", ceiling),
        (
            "reads_ceiling_cpu_per_op".into(),
            "us",
            server.unwrap_or(0.0) + client,
        ),
        ("reads_of_ceiling".into(), "%", share(&ours)),
    ];
    if let Some(writes) = writes {
        // The same unary ceiling: a write does a read's work and more.
        single.push(("writes_of_ceiling".into(), "%", share(writes)));
    }
    if args.runs(Workload::Security) {
        single.extend(crate::security_rows(args, "reads", &ours, sizes).await?);
    }
    Ok((rows, single))
}

/// The fan-out beside etcd's, the CPU per receipt of each side, the
/// fan-out ceiling, and the 10,000-watcher rows.
pub async fn watch(
    args: &Args,
    plain: &registry::Target,
    sizes: Sizes,
) -> anyhow::Result<(Vec<Row>, Vec<Single>)> {
    eprintln!(
        "watch fan-out: {} watchers, {} flips",
        sizes.watchers, sizes.flips
    );
    let ours = registry::fan_out(plain, sizes, Some(args.registry_pid)).await?;
    let theirs = etcd::fan_out(&args.etcd, sizes, Some(args.etcd_pid)).await?;
    let mut rows = stats::latency_rows("watch", &ours.each, &theirs.each);
    rows.extend(stats::percentile_rows(
        "watch_last",
        &ours.last,
        &theirs.last,
        &[("p50", 50.0), ("p99", 99.0)],
    ));
    rows.extend(stats::percentile_rows(
        "watch_spread",
        &ours.spread,
        &theirs.spread,
        &[("p99", 99.0)],
    ));
    rows.extend(stats::cpu_rows(
        "watch",
        "receipt",
        (ours.server_cpu_us, ours.client_cpu_us),
        (theirs.server_cpu_us, theirs.client_cpu_us),
    ));
    let ceiling = ceiling::fan_out(sizes).await?;
    let single = stats::watch_ceiling_rows(&ours, &ceiling);
    let pids = (args.registry_pid, args.etcd_pid);
    rows.extend(many::watchers(plain, &args.etcd, pids, sizes).await?);
    Ok((rows, single))
}

/// Each server's RSS before (the floor) and after loading `sizes.loaded`
/// instances, and the difference: what the data itself costs.
pub async fn memory(
    args: &Args,
    options: &ClientOptions,
    sizes: Sizes,
) -> anyhow::Result<Vec<Row>> {
    eprintln!("memory: RSS after loading {} instances", sizes.loaded);
    let registry = registry::Target {
        url: args
            .memory_registry
            .clone()
            .unwrap_or_else(|| args.registry.clone()),
        options: options.clone(),
    };
    let etcd = args.memory_etcd.as_deref().unwrap_or(&args.etcd);
    let pids = (
        args.memory_registry_pid.unwrap_or(args.registry_pid),
        args.memory_etcd_pid.unwrap_or(args.etcd_pid),
    );
    let empty = (stats::rss_mib(pids.0)?, stats::rss_mib(pids.1)?);
    registry::load(&registry, sizes.loaded).await?;
    etcd::load(etcd, sizes.loaded).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = (stats::rss_mib(pids.0)?, stats::rss_mib(pids.1)?);
    Ok(vec![
        Row::lower_is_better("rss_empty", "MiB", empty.0, empty.1),
        Row::lower_is_better(
            &format!("rss_after_{}_instances", sizes.loaded),
            "MiB",
            loaded.0,
            loaded.1,
        ),
        Row::lower_is_better(
            &format!("rss_of_{}_instances", sizes.loaded),
            "MiB",
            loaded.0 - empty.0,
            loaded.1 - empty.1,
        ),
    ])
}
