//! `cdctl template`: keeps proxy configurations in step with the registry,
//! like consul-template, fed by the registry's Watch.
//!
//! A snapshot, then deltas, applied to a local [`ServiceView`]. The first
//! render is immediate; later ones wait for `--wait MIN` of quiet but never
//! longer than `MAX` after the first change. After a disconnect the watch
//! resumes from the last revision (so nothing is re-rendered unless something
//! changed), trying each registry URL in turn. After every pass the proxy
//! reports the revision it applied (and every `--report-interval` as a
//! heartbeat), which `cdctl deploy` waits for.

mod apply;
mod escape;
mod haproxy;
mod haproxy_runtime;
mod metrics;
mod passes;
pub mod render;

use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;
use tracing::Instrument;

use anyhow::Context;
use futures::{Stream, StreamExt};
use switchyard_client::view::ServiceView;
use switchyard_client::{ClientError, RegistryClient};
use switchyard_model::ProxyStatus;
use switchyard_model::watch::WatchEvent;
use tokio::time::Instant;

use crate::args::TemplateArgs;
use apply::{Applied, Commands, Output};
use metrics::TemplateMetrics;
use passes::HaproxyRuntime;
use render::Templates;

/// How often runtime mode reads the requests in flight per color between
/// passes (reported only when they change), and how often a failed pass is
/// considered for another try.
const CONNECTIONS_POLL: Duration = Duration::from_millis(250);

/// How soon a failed pass (a refused check, a failed reload, HAProxy away)
/// is tried again with the same view; doubled after each failure, up to
/// [`RETRY_LONGEST`]. Without it a proxy would stay behind until the next
/// change in the registry, which may never come.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_LONGEST: Duration = Duration::from_secs(30);

type Events = Pin<Box<dyn Stream<Item = Result<WatchEvent, ClientError>> + Send>>;

/// Parses `MIN:MAX` (or one duration for both).
fn parse_wait(text: &str) -> anyhow::Result<(Duration, Duration)> {
    let (min, max) = text.split_once(':').unwrap_or((text, text));
    let min = switchyard_model::duration::parse_duration(min).map_err(anyhow::Error::msg)?;
    let max = switchyard_model::duration::parse_duration(max).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(min <= max, "--wait {text}: MIN must not exceed MAX");
    Ok((min, max))
}

struct Proxy<'a> {
    client: &'a RegistryClient,
    args: &'a TemplateArgs,
    proxy_id: String,
    templates: Templates,
    outputs: Vec<Output>,
    view: ServiceView,
    /// Revision of the last view every output was applied from.
    applied_revision: u64,
    healthy: bool,
    message: String,
    metrics: TemplateMetrics,
    /// HAProxy's runtime mode (`--haproxy-runtime`).
    runtime: Option<HaproxyRuntime>,
}

impl Proxy<'_> {
    /// Renders and applies every output from the current view, reloads
    /// once if any changed, then reports. `since`: when the first change
    /// of this pass arrived.
    async fn render_all(&mut self, since: Option<Instant>) {
        let span = tracing::info_span!(
            "render",
            proxy = %self.proxy_id,
            revision = self.view.revision,
        );
        self.render_all_in(since).instrument(span).await;
    }

    async fn render_all_in(&mut self, since: Option<Instant>) {
        let failures = if self.runtime.is_some() {
            self.runtime_pass().await
        } else {
            let (replaced, mut failures) = self.apply_outputs().await;
            self.reload(replaced, &mut failures).await;
            failures
        };
        if failures.is_empty() {
            self.applied_revision = self.view.revision;
            self.healthy = true;
            self.message.clear();
            self.metrics
                .applied(self.applied_revision, since.map(|at| at.elapsed()));
        } else {
            self.healthy = false;
            self.message = failures.join("; ");
        }
        self.report().await;
        self.write_files_behind().await;
    }

    /// Runs `--reload` once when outputs were `replaced`; when it fails,
    /// puts the last good files back (and reloads them).
    async fn reload(&mut self, replaced: Vec<usize>, failures: &mut Vec<String>) {
        let Some(reload) = &self.args.reload else {
            return;
        };
        if replaced.is_empty() {
            return;
        }
        let reloaded = apply::run(reload, None, self.view.revision).await;
        self.metrics.reloaded(reloaded.is_ok());
        if let Err(error) = reloaded {
            tracing::error!("{error:#}; putting the last good configuration back");
            failures.push(format!("reload: {error:#}"));
            for index in replaced {
                self.outputs[index].revert();
            }
            if let Err(error) = apply::run(reload, None, self.applied_revision).await {
                tracing::error!("reloading the last good configuration failed too: {error:#}");
            }
        }
    }

    /// Puts each output in place: the indexes of those replaced, and what
    /// failed.
    async fn apply_outputs(&mut self) -> (Vec<usize>, Vec<String>) {
        let context = render::context(&self.view);
        let live = render::live_counts(&self.view);
        let commands = Commands {
            check: self.args.check.as_deref(),
            allow_empty: self.args.allow_empty,
        };
        let mut replaced = Vec::new();
        let mut failures = Vec::new();
        for (index, output) in self.outputs.iter_mut().enumerate() {
            // The same view at the revision the output in place was
            // rendered from: when it renders exactly as it stands, the
            // changes since touched nothing but the revision number (say,
            // an instance of the idle color turned healthy), and the proxy
            // is spared a reload that would delay the next real one, such
            // as a flip right behind it.
            let same_but_revision = output.rendered_at().is_some_and(|at| {
                let mut as_applied = context.clone();
                as_applied.revision = at;
                self.templates
                    .render(&output.template, &as_applied)
                    .is_ok_and(|rendered| output.holds(&rendered))
            });
            let result = if same_but_revision {
                output.keep(&live);
                Ok(Applied::Unchanged)
            } else {
                match self.templates.render(&output.template, &context) {
                    Ok(rendered) => {
                        output
                            .apply(rendered, self.view.revision, &live, &commands)
                            .await
                    }
                    Err(error) => Err(error),
                }
            };
            match result {
                Ok(Applied::Replaced) => {
                    self.metrics.rendered("replaced");
                    tracing::info!(path = %output.path.display(), revision = self.view.revision, "configuration replaced");
                    replaced.push(index);
                }
                Ok(Applied::Unchanged) => self.metrics.rendered("unchanged"),
                Err(error) => {
                    self.metrics.rendered("failed");
                    tracing::error!(path = %output.path.display(), "{error:#}");
                    failures.push(format!("{}: {error:#}", output.path.display()));
                }
            }
        }
        (replaced, failures)
    }

    async fn report(&self) {
        let status = ProxyStatus {
            proxy_id: self.proxy_id.clone(),
            applied_revision: self.applied_revision,
            reported_at_ms: 0,
            healthy: self.healthy,
            message: self.message.clone(),
            connections: self
                .runtime
                .as_ref()
                .map(|runtime| runtime.connections.clone())
                .unwrap_or_default(),
        };
        if let Err(error) = self.client.report_proxy(&status).await {
            tracing::warn!(%error, "could not report the applied revision to the registry");
        }
    }
}

fn default_proxy_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let cleaned: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    if cleaned.is_empty() {
        "proxy".into()
    } else {
        format!("proxy-{cleaned}")
    }
}

impl<'a> Proxy<'a> {
    /// The proxy `args` describe: its id and its templates, read and
    /// parsed, each with its output; nothing rendered yet.
    fn from_args(
        client: &'a RegistryClient,
        args: &'a TemplateArgs,
        metrics: TemplateMetrics,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !args.template.is_empty() && args.template.len() == args.out.len(),
            "give --template and --out in pairs (got {} templates and {} outputs)",
            args.template.len(),
            args.out.len()
        );
        let proxy_id = args.proxy_id.clone().unwrap_or_else(default_proxy_id);
        switchyard_model::validate::identifier("--proxy-id", &proxy_id)?;
        let mut templates = Templates::new();
        let mut outputs = Vec::new();
        for (index, (template, out)) in args.template.iter().zip(&args.out).enumerate() {
            let source = std::fs::read_to_string(template)
                .with_context(|| format!("reading template {}", template.display()))?;
            let name = format!("{index}:{}", template.display());
            templates.add(name.clone(), source)?;
            outputs.push(Output::new(name, out.clone()));
        }
        Ok(Proxy {
            client,
            args,
            proxy_id,
            templates,
            outputs,
            view: ServiceView::default(),
            applied_revision: 0,
            healthy: false,
            message: String::new(),
            metrics,
            runtime: args.haproxy_runtime.clone().map(HaproxyRuntime::new),
        })
    }
}

/// The watch a proxy follows: open, or when to try again.
struct Watching {
    events: Option<Events>,
    backoff: Duration,
    reconnect_at: Instant,
}

impl Watching {
    /// Opens the watch from `from` when it is closed and due; on failure
    /// backs off (up to 5 s).
    async fn connect(&mut self, client: &RegistryClient, from: u64) {
        if self.events.is_some() || Instant::now() < self.reconnect_at {
            return;
        }
        match client.watch(&[], from).await {
            Ok(stream) => {
                tracing::info!(registry = client.current_url(), from, "watching");
                self.events = Some(Box::pin(stream));
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?self.backoff, "cannot watch the registry");
                self.reconnect_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// The watch broke: resume after the backoff.
    fn lost(&mut self) {
        self.events = None;
        self.reconnect_at = Instant::now() + self.backoff;
    }
}

pub async fn template(client: &RegistryClient, args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let (quiet, longest) = parse_wait(&args.wait)?;
    let listen =
        switchyard_program::metrics::parse_listen("--metrics-listen", &args.metrics_listen)?;
    let (metrics, registry) = TemplateMetrics::new();
    let mut proxy = Proxy::from_args(client, &args, metrics)?;
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    let _stop_metrics_on_return = stop_metrics.clone().drop_guard();
    if let Some(address) = listen {
        let app = switchyard_program::metrics::router(registry);
        let bound = switchyard_program::http::serve(
            "metrics",
            address,
            app,
            switchyard_program::http::HttpLimits::default(),
            stop_metrics,
        )
        .await?;
        tracing::info!(address = %bound, "metrics listening");
    }
    let mut watching = Watching {
        events: None,
        backoff: Duration::from_millis(200),
        reconnect_at: Instant::now(),
    };
    let mut first_change: Option<Instant> = None;
    let mut last_change = Instant::now();
    let mut rendered_once = false;
    let mut heartbeat = tokio::time::interval(args.report_interval);
    heartbeat.tick().await;
    let mut retry_at = Instant::now() + RETRY_FIRST;
    let mut retry_after = RETRY_FIRST;
    let mut connections_poll = tokio::time::interval(CONNECTIONS_POLL);
    connections_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Listen for SIGTERM/SIGINT once, for the whole run: a signal that came
    // while a render ran must not be lost.
    let shutdown = switchyard_program::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        watching.connect(client, proxy.view.revision).await;
        let render_at = match first_change {
            Some(first) if rendered_once => (last_change + quiet).min(first + longest),
            Some(_) => Instant::now(),
            None => far_future(),
        };
        tokio::select! {
            event = next_event(&mut watching.events) => match event {
                Some(Ok(event)) => {
                    watching.backoff = Duration::from_millis(200);
                    tracing::debug!(?event, "watch event");
                    if proxy.view.apply(&event) {
                        first_change.get_or_insert_with(Instant::now);
                        last_change = Instant::now();
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "watch interrupted; resuming from revision {}", proxy.view.revision);
                    watching.lost();
                }
                None => {
                    tracing::warn!("watch ended; resuming from revision {}", proxy.view.revision);
                    watching.lost();
                }
            },
            () = tokio::time::sleep_until(render_at), if first_change.is_some() => {
                proxy.render_all(first_change.take()).await;
                rendered_once = true;
                if args.once {
                    return Ok(ExitCode::from(if proxy.healthy { 0 } else { 1 }));
                }
            }
            () = tokio::time::sleep_until(watching.reconnect_at), if watching.events.is_none() => {}
            _ = heartbeat.tick() => {
                if rendered_once {
                    // Nothing pending and the last pass applied cleanly: the
                    // configuration reflects everything up to the view's
                    // revision (progress messages move it past revisions
                    // that changed nothing watched).
                    if first_change.is_none() && proxy.healthy {
                        proxy.applied_revision = proxy.applied_revision.max(proxy.view.revision);
                    }
                    proxy.report().await;
                }
            }
            _ = connections_poll.tick(), if rendered_once => {
                if proxy.healthy || first_change.is_some() {
                    retry_after = RETRY_FIRST;
                    retry_at = Instant::now() + retry_after;
                    proxy.poll_connections().await;
                } else if Instant::now() >= retry_at {
                    tracing::info!(revision = proxy.view.revision, "trying the failed pass again");
                    proxy.render_all(None).await;
                    retry_after = (retry_after * 2).min(RETRY_LONGEST);
                    retry_at = Instant::now() + retry_after;
                }
            }
            () = &mut shutdown => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn next_event(events: &mut Option<Events>) -> Option<Result<WatchEvent, ClientError>> {
    match events {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
