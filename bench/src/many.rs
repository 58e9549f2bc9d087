//! The large fan-out row: 10,000 watchers (100 at the smoke scale) of one
//! service, beside etcd with as many, and each server's memory with them
//! all open (`bench/src/main.rs` splits off here to stay short).

use crate::stats::{self, Row};
use crate::{Sizes, etcd, registry};

/// The large fan-out: flip sent → the last of `many_watchers` watchers,
/// and each server's resident memory with them all open.
pub async fn watchers(
    plain: &registry::Target,
    etcd_url: &str,
    (registry_pid, etcd_pid): (u32, u32),
    sizes: Sizes,
) -> anyhow::Result<Vec<Row>> {
    let many = Sizes {
        watchers: sizes.many_watchers,
        flips: sizes.many_flips,
        ..sizes
    };
    eprintln!(
        "watch fan-out: {} watchers, {} flips",
        many.watchers, many.flips
    );
    let ours = registry::fan_out(plain, many, Some(registry_pid)).await?;
    let theirs = etcd::fan_out(etcd_url, many, Some(etcd_pid)).await?;
    let mut rows = stats::percentile_rows(
        &format!("watch_{}_last", many.watchers),
        &ours.last,
        &theirs.last,
        &[("p50", 50.0), ("p99", 99.0)],
    );
    rows.push(Row::lower_is_better(
        &format!("rss_with_{}_watchers", many.watchers),
        "MiB",
        ours.rss_mib.unwrap_or(0.0),
        theirs.rss_mib.unwrap_or(0.0),
    ));
    Ok(rows)
}
