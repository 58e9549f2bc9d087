//! A pass of HAProxy's runtime mode: the Runtime API brings the running
//! HAProxy to the view (instances, flips, drains) with no reload; the
//! configuration file is still written so that a restart starts from the
//! same servers; a reload happens only when the set of backends changes
//! (the configuration rendered without instances differs, or HAProxy lacks
//! a backend for a service). Between passes the requests in flight per
//! color are polled and reported when they change, which is what a deploy
//! waits on before it stops a drained color.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use switchyard_model::{Color, ColorConnections};
use tokio::time::Instant;

use super::haproxy::{RuntimeSocket, Stats};
use super::{Proxy, haproxy_runtime, render};

/// How long a pass waits for a reloaded HAProxy to serve every backend.
const RELOAD_PATIENCE: Duration = Duration::from_secs(10);

/// HAProxy's runtime mode: the socket and what the passes remember.
pub struct HaproxyRuntime {
    socket: RuntimeSocket,
    /// Each output rendered from [`render::structure_context`] at the last
    /// pass (None before the first).
    structure: Option<Vec<String>>,
    /// Color of every server ever seen, so a server draining after its
    /// instance left is still counted under its color.
    colors: BTreeMap<(String, String), Color>,
    /// Requests in flight per service and color, as last read.
    pub connections: Vec<ColorConnections>,
    /// HAProxy is in step but the files are not written yet.
    files_behind: bool,
}

impl HaproxyRuntime {
    pub fn new(socket: PathBuf) -> Self {
        HaproxyRuntime {
            socket: RuntimeSocket::new(socket),
            structure: None,
            colors: BTreeMap::new(),
            connections: Vec::new(),
            files_behind: false,
        }
    }

    /// Reads HAProxy's servers and the requests in flight per color;
    /// answers whether those counts changed.
    async fn read(&mut self) -> anyhow::Result<(Stats, bool)> {
        let stats = match self.socket.stats().await {
            Ok(stats) => stats,
            Err(error) => {
                self.socket.forget();
                return Err(error);
            }
        };
        self.colors.retain(|(backend, server), _| {
            stats
                .backends
                .get(backend)
                .is_some_and(|servers| servers.contains_key(server))
        });
        let counted = haproxy_runtime::sessions_by_color(&stats, &self.colors)
            .into_iter()
            .map(|((service, color), connections)| ColorConnections {
                service,
                color,
                connections,
            })
            .collect::<Vec<_>>();
        let changed = counted != self.connections;
        self.connections = counted;
        Ok((stats, changed))
    }
}

impl Proxy<'_> {
    /// One pass in runtime mode; answers what failed.
    pub(super) async fn runtime_pass(&mut self) -> Vec<String> {
        let structure_changed = self.structure_changed();
        let Some(haproxy) = self.runtime.as_mut() else {
            return Vec::new();
        };
        let stats = match haproxy.read().await {
            Ok((stats, _)) => stats,
            Err(error) => return vec![format!("{error:#}")],
        };
        let missing = haproxy_runtime::missing_backends(&self.view, &stats);
        if !structure_changed && missing.is_empty() {
            return match self.runtime_sync(stats).await {
                Ok(()) => {
                    // HAProxy is in step: the pass reports now, and the
                    // files (for the next start or reload) follow after.
                    if let Some(haproxy) = self.runtime.as_mut() {
                        haproxy.files_behind = true;
                    }
                    Vec::new()
                }
                Err(error) => vec![format!("{error:#}")],
            };
        }
        tracing::info!(
            ?missing,
            structure_changed,
            "backends changed: reloading HAProxy"
        );
        let (mut replaced, mut failures) = self.apply_outputs().await;
        if !failures.is_empty() {
            return failures;
        }
        if replaced.is_empty() {
            // Nothing new to write, yet HAProxy lacks backends: it runs an
            // older file; reload it.
            replaced = (0..self.outputs.len()).collect();
        }
        self.reload(replaced, &mut failures).await;
        if !failures.is_empty() {
            return failures;
        }
        match self.after_reload().await {
            Ok(stats) => self
                .runtime_sync(stats)
                .await
                .err()
                .map(|error| vec![format!("{error:#}")])
                .unwrap_or_default(),
            Err(error) => vec![format!("{error:#}")],
        }
    }

    /// After a pass has reported: writes the files HAProxy's runtime state
    /// already reflects (checked, never reloaded), so that a restart starts
    /// from the same servers; a refused file makes the proxy unhealthy.
    pub(super) async fn write_files_behind(&mut self) {
        let Some(haproxy) = self.runtime.as_mut() else {
            return;
        };
        if !std::mem::take(&mut haproxy.files_behind) {
            return;
        }
        let (_, refused) = self.apply_outputs().await;
        if !refused.is_empty() {
            self.healthy = false;
            self.message = refused.join("; ");
            self.report().await;
        }
    }

    /// Whether the configuration rendered without instances changed since
    /// the last pass (never on the first).
    fn structure_changed(&mut self) -> bool {
        let context = render::structure_context(&self.view);
        let rendered: Vec<String> = self
            .outputs
            .iter()
            .map(|output| {
                self.templates
                    .render(&output.template, &context)
                    .unwrap_or_else(|error| format!("{error:#}"))
            })
            .collect();
        let Some(haproxy) = self.runtime.as_mut() else {
            return false;
        };
        let changed = haproxy
            .structure
            .as_ref()
            .is_some_and(|before| *before != rendered);
        haproxy.structure = Some(rendered);
        changed
    }

    /// Waits until the reloaded HAProxy serves a backend for every service.
    async fn after_reload(&mut self) -> anyhow::Result<Stats> {
        let deadline = Instant::now() + RELOAD_PATIENCE;
        loop {
            let haproxy = self
                .runtime
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("not in runtime mode"))?;
            let read = haproxy.read().await;
            let missing = match &read {
                Ok((stats, _)) => haproxy_runtime::missing_backends(&self.view, stats).join(", "),
                Err(error) => format!("{error:#}"),
            };
            if let Ok((stats, _)) = read
                && missing.is_empty()
            {
                return Ok(stats);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "after the reload HAProxy still lacks backends: {missing}; the template must \
                 have one backend per service, named after it"
            );
            // HAProxy's new worker is starting: a short, bounded wait.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends HAProxy the commands that bring `stats` to the view.
    async fn runtime_sync(&mut self, stats: Stats) -> anyhow::Result<()> {
        if !self.args.allow_empty {
            let emptied = haproxy_runtime::emptied(&self.view, &stats);
            anyhow::ensure!(
                emptied.is_empty(),
                "refusing to take every server of {} out of rotation: keeping HAProxy as it is \
                 (run with --allow-empty to allow it)",
                emptied.join(", ")
            );
        }
        let plan = haproxy_runtime::plan(&self.view, &stats)?;
        let Some(haproxy) = self.runtime.as_mut() else {
            return Ok(());
        };
        haproxy_runtime::remember_colors(&self.view, &mut haproxy.colors);
        let deferred = haproxy_runtime::apply(&mut haproxy.socket, &plan).await?;
        if !plan.is_empty() {
            tracing::info!(
                commands = plan.len(),
                deferred,
                revision = self.view.revision,
                "HAProxy updated through its runtime API"
            );
        }
        // The counts after the change: a drained color shows what it still
        // has in flight.
        haproxy.read().await?;
        Ok(())
    }

    /// Between passes: reads the requests in flight and reports when they
    /// changed (a deploy waiting to stop a drained color hears at once).
    pub(super) async fn poll_connections(&mut self) {
        let Some(haproxy) = self.runtime.as_mut() else {
            return;
        };
        match haproxy.read().await {
            Ok((_, true)) => self.report().await,
            Ok((_, false)) => {}
            Err(error) => tracing::warn!("{error:#}"),
        }
    }
}
