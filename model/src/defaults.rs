//! Defaults more than one place uses, named once: the deploy settings'
//! (cdctl's flags, its settings file and environments, a resumed deploy,
//! the dashboard's buttons) and the proxies'.

use std::time::Duration;

/// How long a deploy's lock lives without being renewed (`--lock-ttl`),
/// and the TTL of the locks `cdctl rollback` and the dashboard take.
pub const LOCK_TTL: Duration = Duration::from_secs(30);
/// How long new instances have to pass their checks (`--health-timeout`).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a container is given to stop before it is killed (`--stop-timeout`).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a flip waits for the proxies to apply it (`--proxy-timeout`).
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(30);
/// A proxy silent this long is not waited for (`--proxy-stale`).
pub const PROXY_STALE: Duration = Duration::from_secs(30);
/// How long the old color's requests may take to finish (`--drain-timeout`).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a canary step bakes before the next (`--bake`).
pub const BAKE: Duration = Duration::from_secs(60);
/// How often a canary's Prometheus analysis is asked (`--analysis-interval`).
pub const ANALYSIS_INTERVAL: Duration = Duration::from_secs(10);

/// Whole seconds of `duration`, as the lock RPCs take a TTL.
pub fn whole_seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}
