//! `switchyard-bench`: the same workloads against a Switchyard registry and
//! against etcd, with the same client concurrency, in one run; prints a
//! table and writes `bench.json` (and the figures for BENCHMARKS.md).
//! `scripts/bench.sh` starts both servers on the same disk and calls this.
#![forbid(unsafe_code)]

mod agent;
mod ceiling;
mod deploy;
mod dns;
mod etcd;
mod many;
mod registry;
mod rows;
mod scale;
mod scrape;
mod sizes;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

pub use sizes::{Scale, Sizes, Workload};
use stats::Row;

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
    /// A registry of its own for the delivery rows (nginx renders every
    /// service it holds), and the label its agent follows; the image is
    /// `--agent-image`. Needs nginx and busybox.
    #[arg(long, requires_all = ["deploy_label", "agent_image"])]
    deploy_registry: Option<String>,
    #[arg(long)]
    deploy_label: Option<String>,
    /// A registry of its own for the scrape rows, and its metrics address
    /// (`host:port`).
    #[arg(long, requires = "scrape_metrics")]
    scrape_registry: Option<String>,
    #[arg(long)]
    scrape_metrics: Option<String>,
    /// The DNS address of `--scrape-registry` (`--dns-listen`): adds the
    /// DNS rows.
    #[arg(long, requires = "scrape_registry")]
    dns: Option<std::net::SocketAddr>,
    /// A registry with --auth (plaintext) and its admin token: adds the
    /// rows that price checking a credential.
    #[arg(long, requires = "auth_token_file")]
    auth_registry: Option<String>,
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// A registry with --auth and TLS, its token and its CA.
    #[arg(long, requires_all = ["tls_token_file", "tls_ca"])]
    tls_registry: Option<String>,
    #[arg(long)]
    tls_token_file: Option<PathBuf>,
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// How to reach the registries under test (`--ca`, `--cert`, `--key`,
    /// `--token`, `--token-file`, as cdctl takes them).
    #[command(flatten)]
    access: switchyard_client::args::ClientAccessArgs,
    /// The cd-registry binary and a data directory for the scale rows
    /// (this run starts, restarts and stops that registry itself).
    #[arg(long, requires = "scale_dir")]
    scale_registry_bin: Option<PathBuf>,
    #[arg(long)]
    scale_dir: Option<PathBuf>,
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
    // Rows with no etcd counterpart: the agent's, the cost of security.
    let mut single_rows: Vec<(String, &str, f64)> = Vec::new();
    let options = args.access.client_options(Duration::from_secs(30))?;
    let target = |url: &str| registry::Target {
        url: url.to_string(),
        options: options.clone(),
    };
    let plain = target(&args.registry);

    let mut writes = None;
    if args.runs(Workload::Writes) {
        eprintln!(
            "writes: {} ops, {} clients, one session/lease each",
            sizes.writes, sizes.clients
        );
        let ours = registry::writes(&plain, sizes).await?;
        let theirs = etcd::writes(&args.etcd, sizes).await?;
        rows.extend(stats::throughput_rows("writes", &ours, &theirs));
        if args.runs(Workload::Security) {
            single_rows.extend(security_rows(&args, "writes", &ours, sizes).await?);
        }
        writes = Some(ours);
    }

    if args.runs(Workload::Reads) {
        let (anchored, single) = rows::reads(&args, &plain, sizes, writes.as_ref()).await?;
        rows.extend(anchored);
        single_rows.extend(single);
    }
    if args.runs(Workload::Watch) {
        let (anchored, single) = rows::watch(&args, &plain, sizes).await?;
        rows.extend(anchored);
        single_rows.extend(single);
    }
    if args.runs(Workload::Memory) {
        rows.extend(rows::memory(&args, &options, sizes).await?);
    }

    if let (true, Some(url), Some(metrics)) = (
        args.runs(Workload::Scrape),
        &args.scrape_registry,
        &args.scrape_metrics,
    ) {
        eprintln!(
            "scrape: {} services, {} instances, {} scrapes; throughput with a scrape a second",
            sizes.services, sizes.loaded, sizes.scrapes
        );
        let (anchored, single) = scrape::rows(&target(url), metrics, &args.etcd, sizes).await?;
        rows.extend(anchored);
        single_rows.extend(single);
    }

    if let (true, Some(bin), Some(dir)) = (
        args.runs(Workload::Scale),
        &args.scale_registry_bin,
        &args.scale_dir,
    ) {
        eprintln!(
            "scale: {} instances, a snapshot under writes, a restart",
            sizes.scale_instances
        );
        single_rows.extend(
            scale::rows(scale::Setup {
                bin,
                dir: dir.clone(),
                options: options.clone(),
                instances: sizes.scale_instances,
                clients: sizes.clients,
                history_revisions: sizes.scale_history_revisions,
            })
            .await?,
        );
    }
    single_rows.extend(dns_rows(&args, &options, sizes).await?);
    single_rows.extend(agent_rows(&args, &plain, sizes).await?);
    single_rows.extend(deploy_rows(&args, sizes).await?);
    print_and_write(&args, &rows, &single_rows)
}

/// The DNS rows (no etcd counterpart), when `--dns` is given.
async fn dns_rows(
    args: &Args,
    options: &switchyard_client::ClientOptions,
    sizes: Sizes,
) -> anyhow::Result<Vec<(String, &'static str, f64)>> {
    let (true, Some(server), Some(url)) =
        (args.runs(Workload::Dns), args.dns, &args.scrape_registry)
    else {
        return Ok(Vec::new());
    };
    eprintln!(
        "dns: {} A queries over UDP, {} clients, then as many refused (the ceiling)",
        sizes.reads, sizes.clients
    );
    let target = registry::Target {
        url: url.clone(),
        options: options.clone(),
    };
    let figures = dns::measure(&target, server, sizes.clients, sizes.reads).await?;
    let (answered, ceiling) = (figures.answered.throughput(), figures.ceiling.throughput());
    Ok(vec![
        ("dns_queries".into(), "ops/s", answered),
        ("dns_p50".into(), "ms", figures.answered.percentile_ms(50.0)),
        ("dns_p99".into(), "ms", figures.answered.percentile_ms(99.0)),
        ("dns_ceiling".into(), "ops/s", ceiling),
        (
            "dns_of_ceiling".into(),
            "%",
            100.0 * answered / ceiling.max(1e-9),
        ),
    ])
}

/// The agent's rows (no etcd counterpart), when the agent flags are given.
async fn agent_rows(
    args: &Args,
    registry: &registry::Target,
    sizes: Sizes,
) -> anyhow::Result<Vec<(String, &'static str, f64)>> {
    let (true, Some(pid), Some(image), Some(label)) = (
        args.runs(Workload::Agent),
        args.agent_pid,
        &args.agent_image,
        &args.agent_label,
    ) else {
        return Ok(Vec::new());
    };
    eprintln!(
        "agent: docker run → visible for {} containers, then 10 s idle",
        sizes.containers
    );
    let figures = agent::measure(registry, image, label, pid, sizes.containers).await?;
    let visible = &figures.start_to_visible;
    Ok(vec![
        (
            "agent_start_to_visible_p50".into(),
            "ms",
            visible.percentile_ms(50.0),
        ),
        (
            "agent_start_to_visible_p99".into(),
            "ms",
            visible.percentile_ms(99.0),
        ),
        (
            "agent_event_to_visible_p50".into(),
            "ms",
            figures.event_to_visible.percentile_ms(50.0),
        ),
        (
            "agent_event_to_visible_p99".into(),
            "ms",
            figures.event_to_visible.percentile_ms(99.0),
        ),
        ("agent_idle_rss".into(), "MiB", figures.idle_rss_mib),
        ("agent_idle_cpu".into(), "%", figures.idle_cpu_percent),
    ])
}

/// The delivery rows (no etcd counterpart; nginx's reload is the anchor),
/// when a deploy registry is given.
async fn deploy_rows(
    args: &Args,
    sizes: Sizes,
) -> anyhow::Result<Vec<(String, &'static str, f64)>> {
    let (true, Some(registry), Some(label), Some(image)) = (
        args.runs(Workload::Deploy),
        &args.deploy_registry,
        &args.deploy_label,
        &args.agent_image,
    ) else {
        return Ok(Vec::new());
    };
    eprintln!(
        "deploy: {} deploys and rollbacks of each kind through nginx, then HAProxy's runtime mode",
        sizes.deploys
    );
    let setup = deploy::Setup {
        registry: registry.clone(),
        image: image.clone(),
        label: label.clone(),
        runs: sizes.deploys,
        many: sizes.replicas,
    };
    let figures = tokio::task::spawn_blocking(move || deploy::measure(&setup)).await??;
    let reload = figures.nginx_reload.percentile_ms(50.0);
    let flip_1 = figures.flip_to_proxies_1.percentile_ms(50.0);
    let flip_5 = figures.flip_to_proxies_5.percentile_ms(50.0);
    let runtime = &figures.flip_to_haproxy_runtime;
    Ok(vec![
        (
            "deploy_overhead_1_replica_p50".into(),
            "ms",
            figures.overhead_1.percentile_ms(50.0),
        ),
        (
            format!("deploy_overhead_{}_replicas_p50", sizes.replicas),
            "ms",
            figures.overhead_many.percentile_ms(50.0),
        ),
        ("flip_to_1_nginx_p50".into(), "ms", flip_1),
        ("flip_to_5_nginx_p50".into(), "ms", flip_5),
        (
            "rollback_1_nginx_p50".into(),
            "ms",
            figures.rollback_1.percentile_ms(50.0),
        ),
        ("nginx_reload_p50".into(), "ms", reload),
        // The anchor over ours: 1 would mean a flip costs no more than
        // nginx reloading itself.
        (
            "flip_to_1_nginx_vs_reload".into(),
            "x",
            reload / flip_1.max(0.01),
        ),
        (
            "flip_to_5_nginx_vs_reload".into(),
            "x",
            reload / flip_5.max(0.01),
        ),
        (
            "flip_to_haproxy_runtime_p50".into(),
            "ms",
            runtime.percentile_ms(50.0),
        ),
        (
            "flip_to_haproxy_runtime_p99".into(),
            "ms",
            runtime.percentile_ms(99.0),
        ),
        // Above 1: faster than nginx could even reload.
        (
            "flip_to_haproxy_runtime_vs_reload".into(),
            "x",
            reload / runtime.percentile_ms(50.0).max(0.01),
        ),
    ])
}

/// The table on standard output, and the JSON file.
fn print_and_write(
    args: &Args,
    rows: &[Row],
    single_rows: &[(String, &str, f64)],
) -> anyhow::Result<()> {
    println!(
        "{:<34} {:>8} {:>14} {:>14} {:>8}",
        "name", "unit", "switchyard", "etcd", "ratio"
    );
    for row in rows {
        println!(
            "{:<34} {:>8} {:>14.2} {:>14.2} {:>8.2}",
            row.name, row.unit, row.switchyard, row.etcd, row.ratio
        );
    }
    for (name, unit, value) in single_rows {
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
    // etcd has no agent (and runs plain): no etcd figure, no ratio.
    results.extend(single_rows.iter().map(|(name, unit, value)| {
        json!({"name": name, "unit": unit, "switchyard": value, "etcd": null, "ratio": null})
    }));
    let document = json!({
        "scale": format!("{:?}", args.scale).to_lowercase(),
        "results": results,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&document)? + "\n")?;
    Ok(())
}

/// `workload` ("writes" or "reads") against the registries with `--auth`
/// and with `--auth` + TLS given on the command line: the throughput and
/// p99 of each, and the throughput lost against `plain` (the same workload
/// on the plain registry, this run) in percent.
async fn security_rows(
    args: &Args,
    workload: &str,
    plain: &stats::Samples,
    sizes: Sizes,
) -> anyhow::Result<Vec<(String, &'static str, f64)>> {
    let mut targets = Vec::new();
    if let (Some(url), Some(token)) = (&args.auth_registry, &args.auth_token_file) {
        targets.push(("auth", url, token, None));
    }
    if let (Some(url), Some(token), Some(ca)) =
        (&args.tls_registry, &args.tls_token_file, &args.tls_ca)
    {
        targets.push(("auth_tls", url, token, Some(ca.clone())));
    }
    let mut rows = Vec::new();
    for (suffix, url, token_file, ca) in targets {
        let access = switchyard_client::args::ClientAccessArgs {
            ca,
            cert: None,
            key: None,
            token: None,
            token_file: Some(token_file.clone()),
        };
        let target = registry::Target {
            url: url.clone(),
            options: access.client_options(Duration::from_secs(30))?,
        };
        eprintln!("{workload} with {suffix}");
        let samples = match workload {
            "writes" => registry::writes(&target, sizes).await?,
            _ => registry::reads(&target, sizes).await?,
        };
        let cost = 100.0 * (1.0 - samples.throughput() / plain.throughput().max(1e-9));
        rows.push((
            format!("{workload}_{suffix}"),
            "ops/s",
            samples.throughput(),
        ));
        rows.push((
            format!("{workload}_{suffix}_p99"),
            "ms",
            samples.percentile_ms(99.0),
        ));
        rows.push((format!("{workload}_{suffix}_cost"), "%", cost));
    }
    Ok(rows)
}
