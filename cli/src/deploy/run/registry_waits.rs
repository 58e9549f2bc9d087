//! What a deploy waits for in the registry: its new instances passing,
//! instances gone or back, and proxies that applied a revision. Each wait
//! has a deadline and says on timeout what it saw.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_client::view::ServiceView;
use switchyard_client::{ClientError, Code, RegistryClient};
use switchyard_model::{Color, Health, Instance, ProxyStatus, Service};

use super::super::report::millis;
use super::{Deploy, Failure};

impl Deploy<'_> {
    /// Step 5: follows the service on the registry's watch until every
    /// replica this deploy started passes; answers their targets.
    pub(super) async fn new_targets_when_healthy(&mut self) -> Result<Vec<String>, Failure> {
        self.targets_when_passing(self.settings.replicas as usize)
            .await
    }

    /// Waits, briefly, until the proxies have rendered the new color's
    /// instances (their preview routes): then a pre-test through a proxy
    /// reaches them, and the flip costs each proxy one pass. A flip that
    /// lands while a proxy is still rendering the new instances waits for
    /// that pass and then makes another (with nginx, one reload became two:
    /// about 270 ms instead of 135). A proxy that does not catch up within
    /// [`PRE_FLIP_PATIENCE`] is left to the flip's own wait.
    pub(super) async fn proxies_see_new(&self) {
        let Ok((_, service)) = self.client.get_service(&self.settings.service).await else {
            return;
        };
        let revision = service
            .instances
            .iter()
            .filter(|i| i.color == Some(self.next))
            .map(|i| i.mod_revision)
            .max()
            .unwrap_or(0);
        let patience = self.settings.proxy_timeout.min(PRE_FLIP_PATIENCE);
        let stale = self.settings.proxy_stale;
        if let Err(failure) = proxies_at(self.client, revision, patience, stale).await {
            tracing::info!(
                reason = failure.message(),
                "proxies have not rendered the new instances yet; going on"
            );
        }
    }

    /// Follows the service until `wanted` instances of what this deploy
    /// started pass; answers their targets.
    pub(super) async fn targets_when_passing(&self, wanted: usize) -> Result<Vec<String>, Failure> {
        let deadline = Instant::now() + self.settings.health_timeout;
        let ours: HashSet<String> = self
            .runtime
            .deployed_by(&self.record.id)
            .await?
            .into_iter()
            .map(|unit| unit.id)
            .collect();
        let runtime = self.runtime.clone();
        let mut seen = 0;
        let found = follow_until(self.client, &self.settings.service, deadline, |service| {
            let passing: Vec<String> = service
                .instances
                .iter()
                .filter(|i| runtime.owned_by(i, &ours) && i.health == Health::Passing)
                .map(Instance::target)
                .collect();
            seen = passing.len();
            (passing.len() >= wanted).then_some(passing)
        })
        .await?;
        found.ok_or_else(|| {
            Failure::HealthTimeout(format!(
                "{seen} of {wanted} instances of {} passing in the registry after {:?}: check \
                 the containers' logs and health, and that cd-agent runs on this node",
                self.next, self.settings.health_timeout
            ))
        })
    }

    /// Follows the service's instances on the registry's watch until
    /// `done` holds, for at most `patience`.
    pub(super) async fn wait_registry(
        &self,
        what: &str,
        patience: Duration,
        done: impl Fn(&[Instance]) -> bool,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + patience;
        let held = follow_until(self.client, &self.settings.service, deadline, |service| {
            done(&service.instances).then_some(())
        })
        .await?;
        held.ok_or_else(|| {
            Failure::Error(anyhow::anyhow!(
                "waited {patience:?} for {what} in the registry: is cd-agent running on this node?"
            ))
        })
    }
}

/// Follows `service` on the registry's watch until `check` answers for it
/// (an absent service has no instances), or `deadline` passes (`None`).
/// The first answer comes from the watch's snapshot, so a condition that
/// already holds returns at once; every change is checked the moment it
/// arrives. A broken stream resumes from the last revision seen (a reset
/// brings a fresh snapshot); only errors that are not the registry being
/// unreachable end the wait.
pub(super) async fn follow_until<T>(
    client: &RegistryClient,
    service: &str,
    deadline: Instant,
    mut check: impl FnMut(&Service) -> Option<T>,
) -> Result<Option<T>, ClientError> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let filter = [service.to_string()];
    let absent = Service::new(service);
    let mut view = ServiceView::default();
    loop {
        let opened = tokio::time::timeout_at(deadline, client.watch(&filter, view.revision)).await;
        let stream = match opened {
            Err(_) => return Ok(None),
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) if error.is_unreachable() => {
                // Not a poll of the state: the registry is away; the client
                // has already tried every URL it knows.
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RETRY)).await;
                continue;
            }
            Ok(Err(error)) => return Err(error),
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Ok(None),
                Ok(Some(Ok(event))) => event,
                // Ended or cut: resume from `view.revision`.
                Ok(None) => break,
                Ok(Some(Err(error))) if error.is_resumable() => break,
                Ok(Some(Err(error))) => return Err(error),
            };
            if view.apply(&event) && view.revision > 0 {
                let current = view.services.get(service).unwrap_or(&absent);
                if let Some(answer) = check(current) {
                    return Ok(Some(answer));
                }
            }
        }
    }
}

/// How soon a wait tries the registry again when it was unreachable.
const RETRY: Duration = Duration::from_millis(200);

/// Waits until every proxy that reported within `stale` has applied
/// `revision`; answers a summary naming the silent ones not waited for.
/// Follows the reports as they are written (`WatchProxies`); a proxy that
/// falls silent while behind is let go the moment it turns stale.
/// How long a deploy waits for proxies to render its new instances
/// before going on without them.
const PRE_FLIP_PATIENCE: Duration = Duration::from_secs(2);

pub(super) async fn proxies_at(
    client: &RegistryClient,
    revision: u64,
    timeout: Duration,
    stale: Duration,
) -> Result<String, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (done, reports) = follow_reports(client, deadline, |reports| {
        reports
            .verdict(revision, stale)
            .map_err(|behind| behind.next_stale)
    })
    .await?;
    done.ok_or_else(|| reports.too_late(revision, timeout, stale))
}

/// Waits until no proxy that reported within `stale` has a request in
/// flight to `color` of `service`, for at most `timeout`; answers what it
/// saw either way (the caller stops the color then). Proxies that do not
/// count connections (nginx) are not waited for.
pub(super) async fn drained(
    client: &RegistryClient,
    service: &str,
    color: Color,
    timeout: Duration,
    stale: Duration,
) -> Result<String, Failure> {
    if timeout.is_zero() {
        return Ok("not drained (--drain-timeout 0s)".into());
    }
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let (done, reports) = follow_reports(client, deadline, |reports| {
        reports
            .in_flight(service, color, stale)
            .map_err(|busy| busy.next_stale)
    })
    .await?;
    Ok(match done {
        Some(0) => format!("no proxy counts requests to {color}; not drained"),
        Some(counting) => format!(
            "drained in {} ms ({counting} proxies counting)",
            millis(started.elapsed())
        ),
        None => {
            let busy = match reports.in_flight(service, color, stale) {
                Err(busy) => busy.names.join(", "),
                Ok(_) => "no report arrived".into(),
            };
            format!("drain timeout {timeout:?}, stopped with requests in flight: {busy}")
        }
    })
}

/// Follows the proxies' reports (`WatchProxies`) until `judge` answers
/// (`Ok`), or `deadline` (`None`); `judge` tells when to look again even
/// without a new report (a proxy turning stale). Answers the reports seen.
async fn follow_reports<T>(
    client: &RegistryClient,
    deadline: tokio::time::Instant,
    mut judge: impl FnMut(&Reports) -> Result<T, Option<tokio::time::Instant>>,
) -> Result<(Option<T>, Reports), Failure> {
    let mut reports = Reports::default();
    loop {
        let opened = tokio::time::timeout_at(deadline, client.watch_proxies()).await;
        let stream = match opened {
            Err(_) => return Ok((None, reports)),
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) if error.is_unreachable() => {
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RETRY)).await;
                continue;
            }
            Ok(Err(error)) if error.code() == Some(Code::Unimplemented) => {
                return Err(Failure::Error(anyhow::anyhow!(
                    "the registry at {} does not stream proxy reports (WatchProxies): \
                     upgrade cd-registry to this cdctl's version",
                    client.current_url()
                )));
            }
            Ok(Err(error)) => return Err(error.into()),
        };
        let mut stream = std::pin::pin!(stream);
        let mut first = true;
        loop {
            // Judged only once a full list arrived.
            let wake = match reports.seen.then(|| judge(&reports)) {
                Some(Ok(answer)) => return Ok((Some(answer), reports)),
                Some(Err(next)) => next.map_or(deadline, |at| at.min(deadline)),
                None => deadline,
            };
            let message = tokio::select! {
                message = stream.next() => message,
                () = tokio::time::sleep_until(wake) => {
                    if wake >= deadline {
                        return Ok((None, reports));
                    }
                    continue;
                }
            };
            match message {
                Some(Ok((proxies, now_ms))) => {
                    reports.take(proxies, now_ms, first);
                    first = false;
                }
                None => break,
                Some(Err(error)) if error.is_resumable() => break,
                Some(Err(error)) => return Err(error.into()),
            }
        }
    }
}

/// The proxies' last reports as a wait has seen them, and the registry's
/// clock as of the last message (advanced by the time since).
#[derive(Default)]
struct Reports {
    proxies: std::collections::BTreeMap<String, ProxyStatus>,
    clock: Option<(u64, Instant)>,
    /// A full list arrived at least once.
    seen: bool,
}

/// Who still has to apply the revision, and when the first of them turns
/// stale (and is no longer waited for).
#[derive(Debug)]
struct Behind {
    names: Vec<String>,
    next_stale: Option<tokio::time::Instant>,
}

impl Reports {
    /// A message: the full list (`all`) or the reports written since.
    fn take(&mut self, proxies: Vec<ProxyStatus>, now_ms: u64, all: bool) {
        if all {
            self.proxies.clear();
            self.seen = true;
        }
        for proxy in proxies {
            self.proxies.insert(proxy.proxy_id.clone(), proxy);
        }
        self.clock = Some((now_ms, Instant::now()));
    }

    fn now_ms(&self) -> u64 {
        self.clock
            .map_or(0, |(ms, at)| ms.saturating_add(millis(at.elapsed())))
    }

    /// Done (a summary), or who is behind.
    fn verdict(&self, revision: u64, stale: Duration) -> Result<String, Behind> {
        let (now_ms, stale_ms) = (self.now_ms(), millis(stale));
        let age = |p: &ProxyStatus| now_ms.saturating_sub(p.reported_at_ms);
        let (live, silent): (Vec<&ProxyStatus>, Vec<&ProxyStatus>) =
            self.proxies.values().partition(|p| age(p) <= stale_ms);
        let behind: Vec<&ProxyStatus> = live
            .iter()
            .copied()
            .filter(|p| p.applied_revision < revision)
            .collect();
        if !behind.is_empty() {
            let soonest = behind.iter().map(|p| stale_ms - age(p)).min();
            return Err(Behind {
                names: behind.iter().map(|p| describe(p)).collect(),
                next_stale: soonest.map(|ms| {
                    tokio::time::Instant::now() + Duration::from_millis(ms.saturating_add(1))
                }),
            });
        }
        let mut summary = format!("{} proxies at revision {revision}", live.len());
        if !silent.is_empty() {
            let names: Vec<String> = silent
                .iter()
                .map(|p| format!("{} ({}s ago)", p.proxy_id, age(p) / 1000))
                .collect();
            summary.push_str(&format!("; not waited for, silent: {}", names.join(", ")));
        }
        Ok(summary)
    }

    /// How many live proxies count requests to `color` of `service` when
    /// none of them has one in flight; else who still has (a proxy that
    /// turns stale is let go).
    fn in_flight(&self, service: &str, color: Color, stale: Duration) -> Result<usize, Behind> {
        let (now_ms, stale_ms) = (self.now_ms(), millis(stale));
        let age = |p: &ProxyStatus| now_ms.saturating_sub(p.reported_at_ms);
        let counting: Vec<(&ProxyStatus, u64)> = self
            .proxies
            .values()
            .filter(|p| age(p) <= stale_ms)
            .filter_map(|p| Some((p, p.connections_to(service, color)?)))
            .collect();
        let busy: Vec<&(&ProxyStatus, u64)> = counting.iter().filter(|(_, n)| *n > 0).collect();
        if busy.is_empty() {
            return Ok(counting.len());
        }
        let soonest = busy.iter().map(|(p, _)| stale_ms - age(p)).min();
        Err(Behind {
            names: busy
                .iter()
                .map(|(p, n)| format!("{} ({n} to {color})", p.proxy_id))
                .collect(),
            next_stale: soonest.map(|ms| {
                tokio::time::Instant::now() + Duration::from_millis(ms.saturating_add(1))
            }),
        })
    }

    fn too_late(&self, revision: u64, timeout: Duration, stale: Duration) -> Failure {
        let behind = match self.verdict(revision, stale) {
            Err(behind) => behind.names.join(", "),
            Ok(_) => "no report arrived".to_string(),
        };
        Failure::Error(anyhow::anyhow!(
            "proxies did not apply revision {revision} within {timeout:?}: {behind}"
        ))
    }
}

fn describe(proxy: &ProxyStatus) -> String {
    if proxy.healthy {
        format!("{} (at {})", proxy.proxy_id, proxy.applied_revision)
    } else {
        format!(
            "{} (at {}, unhealthy: {})",
            proxy.proxy_id, proxy.applied_revision, proxy.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, applied: u64, reported_at_ms: u64) -> ProxyStatus {
        ProxyStatus {
            proxy_id: id.into(),
            applied_revision: applied,
            reported_at_ms,
            healthy: true,
            ..ProxyStatus::default()
        }
    }

    #[test]
    fn a_wait_is_done_when_every_live_proxy_applied_and_lets_silent_ones_go() {
        let stale = Duration::from_secs(30);
        let mut reports = Reports::default();
        // edge-2 last reported 60 s ago: silent, not waited for.
        let all = vec![report("edge-1", 7, 100_000), report("edge-2", 3, 40_000)];
        reports.take(all, 100_000, true);
        let behind = reports.verdict(9, stale).expect_err("edge-1 is behind");
        assert_eq!(behind.names, ["edge-1 (at 7)"]);
        assert!(behind.next_stale.is_some(), "edge-1 turns stale in 30 s");
        reports.take(vec![report("edge-1", 9, 100_050)], 100_050, false);
        let summary = reports.verdict(9, stale).expect("done");
        assert!(summary.starts_with("1 proxies at revision 9"), "{summary}");
        assert!(summary.contains("silent: edge-2 (60s ago)"), "{summary}");
    }

    #[test]
    fn a_color_is_drained_when_no_live_proxy_that_counts_has_a_request_to_it() {
        let stale = Duration::from_secs(30);
        let counting = |id: &str, blue: u64, at: u64| ProxyStatus {
            connections: vec![switchyard_model::ColorConnections {
                service: "web".into(),
                color: Color::Blue,
                connections: blue,
            }],
            ..report(id, 9, at)
        };
        let mut reports = Reports::default();
        // nginx-1 counts nothing; edge-2 is silent: neither is waited for.
        let all = vec![
            report("nginx-1", 9, 100_000),
            counting("edge-1", 2, 100_000),
            counting("edge-2", 5, 40_000),
        ];
        reports.take(all, 100_000, true);
        let busy = reports
            .in_flight("web", Color::Blue, stale)
            .expect_err("edge-1 has 2 in flight");
        assert_eq!(busy.names, ["edge-1 (2 to blue)"]);
        assert_eq!(reports.in_flight("web", Color::Green, stale).ok(), Some(1));
        assert_eq!(reports.in_flight("api", Color::Blue, stale).ok(), Some(0));
        reports.take(vec![counting("edge-1", 0, 100_200)], 100_200, false);
        assert_eq!(reports.in_flight("web", Color::Blue, stale).ok(), Some(1));
    }

    #[test]
    fn a_proxy_behind_that_falls_silent_is_let_go_once_stale() {
        let mut reports = Reports::default();
        reports.take(vec![report("edge-1", 1, 1_000)], 1_000, true);
        assert!(reports.verdict(5, Duration::from_secs(30)).is_err());
        // The same reports, judged with a stale period already passed.
        assert!(
            reports.verdict(5, Duration::ZERO).is_err(),
            "age 0 is still live"
        );
        reports.clock = Some((40_000, Instant::now()));
        let summary = reports.verdict(5, Duration::from_secs(30)).expect("let go");
        assert!(summary.contains("silent: edge-1"), "{summary}");
    }
}
