//! `cdctl template --haproxy-runtime`: instance changes, flips and drains
//! applied to a running HAProxy through its Runtime API, with no reload.
//!
//! Convention (shared with `examples/haproxy-runtime/`): each service is a
//! backend of the same name, each passing instance a server named by
//! [`server_name`]. Servers of a color with a weight (the live color, and
//! a canary's) are `ready` at their server weight; passing servers of
//! another color are `drain` (no new requests, those in flight finish);
//! servers of instances gone or failing are put in `maint` and deleted
//! (a server still busy is deleted on a later pass). Every pass reads what
//! HAProxy has (`show stat`) and sends only the difference, so a restarted
//! `cdctl` or a reloaded HAProxy is brought in step the same way.

use std::collections::BTreeMap;

use switchyard_client::view::ServiceView;
use switchyard_model::{Color, Health, Service};

use super::haproxy::{RuntimeSocket, ServerStat, ServerState, Stats};

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
    /// The server weight while ready.
    weight: u16,
}

/// Servers each service's backend should have: routed instances ready at
/// their weight, other passing ones draining.
fn wanted(service: &Service) -> BTreeMap<String, Wanted> {
    let routes = switchyard_model::routes::routes(service);
    service
        .instances
        .iter()
        .filter(|i| i.health == Health::Passing)
        .map(|i| {
            let route = routes.iter().find(|route| route.instance.id == i.id);
            let (state, weight) = match route {
                Some(route) => (ServerState::Ready, route.weight),
                None => (ServerState::Drain, 0),
            };
            (
                server_name(&i.id),
                Wanted {
                    addr: i.target(),
                    state,
                    weight,
                },
            )
        })
        .collect()
}

/// The commands that make server `id` (now `current`, if it exists) what
/// `want` says: into `adds` what puts it in rotation or changes it, into
/// `drains` what takes it out.
fn server_commands(
    id: &str,
    want: &Wanted,
    current: Option<&ServerStat>,
    adds: &mut Vec<String>,
    drains: &mut Vec<String>,
) {
    let ready = want.state == ServerState::Ready;
    let Some(current) = current else {
        adds.push(format!("add server {id} {}", want.addr));
        if ready {
            adds.push(format!("set weight {id} {}", want.weight));
        }
        adds.push(format!("set server {id} state {}", want.state.as_str()));
        return;
    };
    if current.addr != want.addr {
        let (host, port) = split_target(&want.addr);
        adds.push(format!("set server {id} addr {host} port {port}"));
    }
    // A draining server shows weight 0: its weight is set as it comes back.
    if ready && (current.state != ServerState::Ready || current.weight != want.weight) {
        adds.push(format!("set weight {id} {}", want.weight));
    }
    if current.state != want.state {
        let into = if ready { adds } else { drains };
        into.push(format!("set server {id} state {}", want.state.as_str()));
    }
}

/// The commands that bring `stats` to what `view` wants, in an order that
/// never leaves a backend with fewer ready servers than needed: new and
/// changed servers first, then drains, then removals.
pub fn plan(view: &ServiceView, stats: &Stats) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    let mut commands = Commands::default();
    for (name, service) in &view.services {
        let Some(has) = stats.backends.get(name) else {
            missing.push(name.as_str());
            continue;
        };
        commands.backend(name, &wanted(service), has);
        // Preview backends are optional: managed where the configuration
        // has them.
        for color in [Color::Blue, Color::Green] {
            let preview = preview_backend(name, color);
            if let Some(has) = stats.backends.get(&preview) {
                commands.backend(&preview, &preview_wanted(service, color), has);
            }
        }
    }
    anyhow::ensure!(
        missing.is_empty(),
        "HAProxy has no backend for {}: the configuration must have one backend per service, \
         named after it (a reload adds it)",
        missing.join(", ")
    );
    let Commands {
        mut adds,
        drains,
        removals,
    } = commands;
    adds.extend(drains);
    adds.extend(removals);
    Ok(adds)
}

/// A plan's commands by kind, sent in this order.
#[derive(Default)]
struct Commands {
    adds: Vec<String>,
    drains: Vec<String>,
    removals: Vec<String>,
}

impl Commands {
    /// What makes backend `name` (which `has` these servers) hold `wants`.
    fn backend(
        &mut self,
        name: &str,
        wants: &BTreeMap<String, Wanted>,
        has: &BTreeMap<String, ServerStat>,
    ) {
        for (server, want) in wants {
            let id = format!("{name}/{server}");
            server_commands(&id, want, has.get(server), &mut self.adds, &mut self.drains);
        }
        for (server, current) in has {
            if !wants.contains_key(server) {
                let id = format!("{name}/{server}");
                if current.state != ServerState::Maint {
                    self.removals.push(format!("set server {id} state maint"));
                }
                self.removals.push(format!("del server {id}"));
            }
        }
    }
}

/// The backend that previews `color` of `service` (a request with header
/// `X-Switchyard-Color` or cookie `switchyard-color`): `SERVICE__COLOR`.
/// Service names have no `_`, so it never names a service.
pub fn preview_backend(service: &str, color: Color) -> String {
    format!("{service}__{color}")
}

/// The service a backend serves: itself, or the service it previews.
fn service_of(backend: &str) -> &str {
    backend
        .strip_suffix("__blue")
        .or_else(|| backend.strip_suffix("__green"))
        .unwrap_or(backend)
}

/// Servers a preview backend should have: every passing instance of
/// `color`, whatever the weights.
fn preview_wanted(service: &Service, color: Color) -> BTreeMap<String, Wanted> {
    service
        .instances
        .iter()
        .filter(|i| i.takes_requests() && i.color == Some(color))
        .map(|i| {
            let want = Wanted {
                addr: i.target(),
                state: ServerState::Ready,
                weight: 1,
            };
            (server_name(&i.id), want)
        })
        .collect()
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
        let service = service_of(backend).to_string();
        for (server, stat) in servers {
            if let Some(color) = colors.get(&(service.clone(), server.clone())) {
                *counts.entry((service.clone(), *color)).or_default() += stat.sessions;
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
            weight: if state == ServerState::Ready { 256 } else { 0 },
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
                "set weight web/g_1 256",
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
                "set weight web/b2 256",
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
    fn a_canary_step_sets_weights_and_readies_the_canary_color() {
        let mut canary = view(
            Color::Blue,
            vec![
                instance("b1", 1, Color::Blue, Health::Passing),
                instance("g1", 2, Color::Green, Health::Passing),
            ],
        );
        if let Some(web) = canary.services.get_mut("web") {
            web.canary_weight = 20;
        }
        let before = stats(vec![
            ("b1", server(1, ServerState::Ready, 0)),
            ("g1", server(2, ServerState::Drain, 0)),
        ]);
        assert_eq!(
            plan(&canary, &before).expect("plan"),
            ["set weight web/g1 64", "set server web/g1 state ready"]
        );
        // At 20%, green is ready at 64; the step to 50% evens the weights.
        let mut at_twenty = server(2, ServerState::Ready, 0);
        at_twenty.weight = 64;
        let during = stats(vec![
            ("b1", server(1, ServerState::Ready, 0)),
            ("g1", at_twenty),
        ]);
        assert!(plan(&canary, &during).expect("plan").is_empty());
        if let Some(web) = canary.services.get_mut("web") {
            web.canary_weight = 50;
        }
        assert_eq!(
            plan(&canary, &during).expect("plan"),
            ["set weight web/g1 256"]
        );
    }

    #[test]
    fn preview_backends_hold_every_passing_instance_of_their_color() {
        let web = view(
            Color::Blue,
            vec![
                instance("b1", 1, Color::Blue, Health::Passing),
                instance("g1", 2, Color::Green, Health::Passing),
                instance("g2", 3, Color::Green, Health::Critical),
            ],
        );
        let mut has = stats(vec![("b1", server(1, ServerState::Ready, 0))]);
        has.backends.insert("web__green".into(), BTreeMap::new());
        let mut old = server(9, ServerState::Ready, 2);
        old.weight = 1;
        has.backends
            .insert("web__blue".into(), [("gone".to_string(), old)].into());
        assert_eq!(
            plan(&web, &has).expect("plan"),
            [
                "add server web/g1 10.0.0.1:8002",
                "set server web/g1 state drain",
                "add server web__blue/b1 10.0.0.1:8001",
                "set weight web__blue/b1 1",
                "set server web__blue/b1 state ready",
                "add server web__green/g1 10.0.0.1:8002",
                "set weight web__green/g1 1",
                "set server web__green/g1 state ready",
                "set server web__blue/gone state maint",
                "del server web__blue/gone",
            ]
        );
        // Requests previewing a color count as in flight to it.
        let mut colors = BTreeMap::new();
        colors.insert(("web".to_string(), "gone".to_string()), Color::Blue);
        let counts = sessions_by_color(&has, &colors);
        assert_eq!(counts[&("web".to_string(), Color::Blue)], 2);
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
