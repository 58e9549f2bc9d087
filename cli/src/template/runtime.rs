//! `cdctl template --haproxy-runtime`: instance changes, flips and drains
//! applied to a running HAProxy through its Runtime API, with no reload.
//!
//! Convention (shared with `examples/haproxy-runtime/`): each service is a
//! backend of the same name, each passing instance a server named by
//! [`server_name`]. The live color's servers are `ready`; passing servers
//! of another color are `drain` (no new requests, those in flight finish);
//! servers of instances gone or failing are put in `maint` and deleted
//! (a server still busy is deleted on a later pass). Every pass reads what
//! HAProxy has (`show stat`) and sends only the difference, so a restarted
//! `cdctl` or a reloaded HAProxy is brought in step the same way.

use std::collections::BTreeMap;

use switchyard_client::view::ServiceView;
use switchyard_model::{Color, Health, Service};

use super::haproxy::{RuntimeSocket, ServerState, Stats};

/// A server name HAProxy accepts for an instance id: ids may hold `@`,
/// which HAProxy refuses in names.
pub fn server_name(id: &str) -> String {
    id.replace('@', "_")
}

/// One server as the view wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    addr: String,
    state: ServerState,
}

/// Servers each service's backend should have.
fn wanted(service: &Service) -> BTreeMap<String, Wanted> {
    service
        .instances
        .iter()
        .filter(|i| i.health == Health::Passing)
        .map(|i| {
            let live = service.active_color.is_some() && i.color == service.active_color;
            let state = if live {
                ServerState::Ready
            } else {
                ServerState::Drain
            };
            (
                server_name(&i.id),
                Wanted {
                    addr: i.target(),
                    state,
                },
            )
        })
        .collect()
}

/// The commands that bring `stats` to what `view` wants, in an order that
/// never leaves a backend with fewer ready servers than needed: new and
/// changed servers first, then drains, then removals.
pub fn plan(view: &ServiceView, stats: &Stats) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    let (mut adds, mut drains, mut removals) = (Vec::new(), Vec::new(), Vec::new());
    for (name, service) in &view.services {
        let Some(has) = stats.backends.get(name) else {
            missing.push(name.as_str());
            continue;
        };
        let wants = wanted(service);
        for (server, want) in &wants {
            let id = format!("{name}/{server}");
            match has.get(server) {
                None => {
                    adds.push(format!("add server {id} {}", want.addr));
                    adds.push(format!("set server {id} state {}", want.state.as_str()));
                }
                Some(current) => {
                    if current.addr != want.addr {
                        let (host, port) = split_target(&want.addr);
                        adds.push(format!("set server {id} addr {host} port {port}"));
                    }
                    if current.state != want.state {
                        let into = if want.state == ServerState::Ready {
                            &mut adds
                        } else {
                            &mut drains
                        };
                        into.push(format!("set server {id} state {}", want.state.as_str()));
                    }
                }
            }
        }
        for (server, current) in has {
            if !wants.contains_key(server) {
                let id = format!("{name}/{server}");
                if current.state != ServerState::Maint {
                    removals.push(format!("set server {id} state maint"));
                }
                removals.push(format!("del server {id}"));
            }
        }
    }
    anyhow::ensure!(
        missing.is_empty(),
        "HAProxy has no backend for {}: the configuration must have one backend per service, \
         named after it (a reload adds it)",
        missing.join(", ")
    );
    adds.extend(drains);
    adds.extend(removals);
    Ok(adds)
}

/// `host` and `port` of an `address:port` target (`[v6]:port` too).
fn split_target(target: &str) -> (&str, &str) {
    let (host, port) = target.rsplit_once(':').unwrap_or((target, "0"));
    (host.trim_start_matches('[').trim_end_matches(']'), port)
}

/// Services of `view` that HAProxy has no backend for.
pub fn missing_backends<'a>(view: &'a ServiceView, stats: &Stats) -> Vec<&'a str> {
    view.services
        .keys()
        .filter(|name| !stats.backends.contains_key(*name))
        .map(String::as_str)
        .collect()
}

/// Services that have ready servers in HAProxy and would have none: what
/// `--allow-empty` must allow.
pub fn emptied<'a>(view: &'a ServiceView, stats: &Stats) -> Vec<&'a str> {
    view.services
        .iter()
        .filter(|(name, service)| {
            let ready_now = stats
                .backends
                .get(*name)
                .is_some_and(|servers| servers.values().any(|s| s.state == ServerState::Ready));
            ready_now
                && !wanted(service)
                    .values()
                    .any(|w| w.state == ServerState::Ready)
        })
        .map(|(name, _)| name.as_str())
        .collect()
}

/// Requests in flight per service and color (servers HAProxy has for
/// instances of a known color; the ids of instances already gone are
/// remembered in `colors`).
pub fn sessions_by_color(
    stats: &Stats,
    colors: &BTreeMap<(String, String), Color>,
) -> BTreeMap<(String, Color), u64> {
    let mut counts = BTreeMap::new();
    for (backend, servers) in &stats.backends {
        for (server, stat) in servers {
            if let Some(color) = colors.get(&(backend.clone(), server.clone())) {
                *counts.entry((backend.clone(), *color)).or_default() += stat.sessions;
            }
        }
    }
    counts
}

/// Remembers the color of every server of `view` (kept after the instance
/// is gone, so a draining server is still counted under its color).
pub fn remember_colors(view: &ServiceView, colors: &mut BTreeMap<(String, String), Color>) {
    for (name, service) in &view.services {
        for instance in &service.instances {
            if let Some(color) = instance.color {
                colors.insert((name.clone(), server_name(&instance.id)), color);
            }
        }
    }
}

/// Applies `plan` through `socket`; a deletion HAProxy refuses because the
/// server is still busy is left for a later pass (the server is in `maint`
/// and takes no new request), every other refusal fails the pass.
pub async fn apply(socket: &mut RuntimeSocket, plan: &[String]) -> anyhow::Result<usize> {
    let mut deferred = 0;
    for command in plan {
        match socket.change(command).await {
            Ok(()) => tracing::debug!(command, "runtime command applied"),
            Err(error) if command.starts_with("del server") => {
                tracing::info!(command, %error, "server still busy; deleting it on a later pass");
                deferred += 1;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(deferred)
}

#[cfg(test)]
mod tests {
    use super::super::haproxy::ServerStat;
    use super::super::render::tests::{instance_of, view_of};
    use super::*;
    use switchyard_model::Instance;

    fn instance(id: &str, last: u16, color: Color, health: Health) -> Instance {
        instance_of(id, 8000 + last, Some(color), health)
    }

    fn view(active: Color, instances: Vec<Instance>) -> ServiceView {
        view_of(active, instances)
    }

    fn server(last: u16, state: ServerState, sessions: u64) -> ServerStat {
        ServerStat {
            addr: format!("10.0.0.1:{}", 8000 + last),
            state,
            sessions,
        }
    }

    fn stats(servers: Vec<(&str, ServerStat)>) -> Stats {
        let mut stats = Stats::default();
        stats.backends.insert(
            "web".into(),
            servers
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect(),
        );
        stats
    }

    #[test]
    fn a_flip_readies_the_new_color_before_draining_the_old() {
        let flipped = view(
            Color::Green,
            vec![
                instance("b1", 1, Color::Blue, Health::Passing),
                instance("g@1", 2, Color::Green, Health::Passing),
            ],
        );
        let before = stats(vec![
            ("b1", server(1, ServerState::Ready, 1)),
            ("g_1", server(2, ServerState::Drain, 0)),
        ]);
        assert_eq!(
            plan(&flipped, &before).expect("plan"),
            [
                "set server web/g_1 state ready",
                "set server web/b1 state drain"
            ]
        );
        let mut colors = BTreeMap::new();
        remember_colors(&flipped, &mut colors);
        let counts = sessions_by_color(&before, &colors);
        assert_eq!(counts[&("web".to_string(), Color::Blue)], 1);
        assert_eq!(counts[&("web".to_string(), Color::Green)], 0);
        assert!(emptied(&flipped, &before).is_empty());
    }

    #[test]
    fn new_moved_and_gone_instances_are_added_readdressed_and_removed() {
        let now = view(
            Color::Blue,
            vec![
                instance("b1", 9, Color::Blue, Health::Passing),
                instance("b2", 2, Color::Blue, Health::Passing),
                instance("b3", 3, Color::Blue, Health::Critical),
            ],
        );
        let before = stats(vec![
            ("b1", server(1, ServerState::Ready, 0)),
            ("b3", server(3, ServerState::Ready, 0)),
            ("old", server(4, ServerState::Maint, 0)),
        ]);
        assert_eq!(
            plan(&now, &before).expect("plan"),
            [
                "set server web/b1 addr 10.0.0.1 port 8009",
                "add server web/b2 10.0.0.1:8002",
                "set server web/b2 state ready",
                "set server web/b3 state maint",
                "del server web/b3",
                "del server web/old",
            ]
        );
        assert!(plan(&now, &Stats::default()).is_err(), "no backend: reload");
        assert_eq!(missing_backends(&now, &Stats::default()), ["web"]);
    }

    #[test]
    fn taking_every_ready_server_away_is_noticed() {
        let none_passing = view(
            Color::Blue,
            vec![instance("b1", 1, Color::Blue, Health::Critical)],
        );
        let before = stats(vec![("b1", server(1, ServerState::Ready, 0))]);
        assert_eq!(emptied(&none_passing, &before), ["web"]);
        assert_eq!(split_target("[::1]:8080"), ("::1", "8080"));
    }
}
