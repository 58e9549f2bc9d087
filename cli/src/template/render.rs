//! The template context (documented in the README and `examples/`) built
//! from a [`ServiceView`], and rendering with minijinja.

use std::collections::BTreeMap;

use minijinja::Environment;
use serde::Serialize;
use switchyard_client::view::ServiceView;
use switchyard_model::{Color, Instance, Service};

use switchyard_model::routes::Route;

/// One instance as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceContext {
    pub id: String,
    /// The id as a proxy server name (`@` made `_`): the name HAProxy's
    /// runtime mode gives the instance's server.
    pub server_name: String,
    pub address: String,
    pub port: u16,
    /// `address:port` (`[address]:port` for IPv6).
    pub target: String,
    pub node: String,
    pub color: Option<&'static str>,
    pub health: &'static str,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// The share of requests (percent) of the instance's color, and the
    /// instance's relative server weight (1–256, for nginx's and HAProxy's
    /// `weight`): 0 and 0 when it is not routed to (not passing, or of a
    /// color with no weight).
    pub share: u8,
    pub weight: u16,
}

/// One service as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceContext {
    pub name: String,
    /// `blue`, `green`, or none.
    pub active_color: Option<&'static str>,
    pub color_revision: u64,
    /// Passing instances of the live color: what to route to without
    /// weights.
    pub live: Vec<InstanceContext>,
    /// The share of requests (percent) each color takes: `blue` and
    /// `green`. During a canary both are above 0; otherwise the live color
    /// has 100.
    pub weights: BTreeMap<&'static str, u8>,
    /// Passing instances of every color with a share above 0, each with its
    /// server weight: what to route to when the proxy honours canaries.
    /// Without a canary, the same servers as `live`.
    pub routes: Vec<InstanceContext>,
    /// During a canary, whether each client keeps the color it was first
    /// sent to (route by a client cookie's hash, not round robin).
    pub sticky: bool,
    /// Every passing instance that is not draining, whatever its color (for
    /// services that do not use colors).
    pub passing: Vec<InstanceContext>,
    /// Every instance.
    pub instances: Vec<InstanceContext>,
    /// Every instance by color (`blue`, `green`, `none`).
    pub by_color: BTreeMap<&'static str, Vec<InstanceContext>>,
}

/// The whole context: `services` (by name) and `revision`.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub revision: u64,
    pub services: BTreeMap<String, ServiceContext>,
}

/// `instance` as templates see it, with `routes`' share and weight for it.
fn instance(instance: &Instance, routes: &[Route<'_>]) -> InstanceContext {
    let (share, weight) = routes
        .iter()
        .find(|route| route.instance.id == instance.id)
        .map_or((0, 0), |route| (route.share, route.weight));
    InstanceContext {
        share,
        weight,
        id: instance.id.clone(),
        server_name: super::haproxy_runtime::server_name(&instance.id),
        address: instance.address.to_string(),
        port: instance.port,
        target: instance.target(),
        node: instance.node.clone(),
        color: instance.color.map(|c| c.as_str()),
        health: instance.health.as_str(),
        tags: instance.tags.clone(),
        metadata: instance.metadata.clone(),
    }
}

fn service(service: &Service) -> ServiceContext {
    let routes = switchyard_model::routes::routes(service);
    let instance = |i: &Instance| instance(i, &routes);
    let mut by_color: BTreeMap<&'static str, Vec<InstanceContext>> = BTreeMap::new();
    for i in &service.instances {
        by_color
            .entry(switchyard_model::color_name(i.color))
            .or_default()
            .push(instance(i));
    }
    ServiceContext {
        name: service.name.clone(),
        active_color: service.active_color.map(|c| c.as_str()),
        color_revision: service.color_revision,
        live: service.live_instances().map(instance).collect(),
        weights: [Color::Blue, Color::Green]
            .into_iter()
            .map(|color| (color.as_str(), service.weight_of(Some(color))))
            .collect(),
        routes: routes
            .iter()
            .map(|route| instance(route.instance))
            .collect(),
        sticky: service.canary_sticky,
        passing: service
            .instances
            .iter()
            .filter(|i| i.takes_requests())
            .map(instance)
            .collect(),
        instances: service.instances.iter().map(instance).collect(),
        by_color,
    }
}

pub fn context(view: &ServiceView) -> Context {
    Context {
        revision: view.revision,
        services: view
            .services
            .iter()
            .map(|(name, s)| (name.clone(), service(s)))
            .collect(),
    }
}

/// The context with every service's instances, colors and revisions left
/// out: what a configuration renders from when it depends only on which
/// services exist. HAProxy's runtime mode reloads only when this renders
/// differently.
pub fn structure_context(view: &ServiceView) -> Context {
    let mut context = context(view);
    context.revision = 0;
    for service in context.services.values_mut() {
        service.active_color = None;
        service.color_revision = 0;
        service.live.clear();
        service.weights.clear();
        service.routes.clear();
        // `sticky` stays: it changes the balancing, which only a reload
        // changes in HAProxy's runtime mode.
        service.passing.clear();
        service.instances.clear();
        service.by_color.clear();
    }
    context
}

/// How many live instances each service has: what the empty-backend guard
/// compares between the applied configuration and the next one.
pub fn live_counts(view: &ServiceView) -> BTreeMap<String, usize> {
    view.services
        .iter()
        .map(|(name, s)| (name.clone(), s.live_instances().count()))
        .collect()
}

/// Compiled templates, one per output.
pub struct Templates {
    environment: Environment<'static>,
}

impl Templates {
    pub fn new() -> Self {
        let mut environment = Environment::new();
        environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        // Block tags swallow their own line, as config templates want.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
        {
            environment.set_syntax(syntax);
        }
        // env("NAME", "default"): the process environment, for settings such
        // as the listen port that do not come from the registry.
        environment.add_function("env", |name: String, default: Option<String>| {
            std::env::var(&name).ok().or(default).ok_or_else(|| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("environment variable {name} is not set and has no default"),
                )
            })
        });
        // Registry data as one quoted argument (docs/security.md).
        environment.add_filter("nginx", |value: String| super::escape::nginx(&value));
        environment.add_filter("haproxy", |value: String| super::escape::haproxy(&value));
        Templates { environment }
    }

    /// Adds a template under `name`; a syntax error is reported with its line.
    pub fn add(&mut self, name: String, source: String) -> anyhow::Result<()> {
        self.environment
            .add_template_owned(name.clone(), source)
            .map_err(|error| anyhow::anyhow!("template {name}: {error:#}"))
    }

    pub fn render(&self, name: &str, context: &Context) -> anyhow::Result<String> {
        let template = self
            .environment
            .get_template(name)
            .map_err(|error| anyhow::anyhow!("template {name}: {error:#}"))?;
        template
            .render(minijinja::value::Serde(context))
            .map_err(|error| anyhow::anyhow!("rendering {name}: {error:#}"))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use switchyard_model::Health;
    use switchyard_model::watch::WatchEvent;

    pub(in crate::template) fn instance_of(
        id: &str,
        port: u16,
        color: Option<Color>,
        health: Health,
    ) -> Instance {
        Instance {
            id: id.into(),
            service: "web".into(),
            color,
            node: "n1".into(),
            address: "10.0.0.1".parse().expect("ip"),
            port,
            tags: vec![],
            metadata: Default::default(),
            health,
            session: None,
            create_revision: 1,
            mod_revision: 1,
        }
    }

    /// Service `web` with `instances`, live color `active`, in a view.
    pub(in crate::template) fn view_of(active: Color, instances: Vec<Instance>) -> ServiceView {
        let mut web = Service::new("web");
        web.active_color = Some(active);
        web.instances = instances;
        let mut view = ServiceView::default();
        view.apply(&WatchEvent::Snapshot {
            revision: 7,
            services: vec![web],
            complete: true,
        });
        view
    }

    fn view() -> ServiceView {
        view_of(
            Color::Blue,
            vec![
                instance_of("b1", 8001, Some(Color::Blue), Health::Passing),
                instance_of("b2", 8002, Some(Color::Blue), Health::Critical),
                instance_of("g1", 8003, Some(Color::Green), Health::Passing),
            ],
        )
    }

    #[test]
    fn the_context_routes_to_passing_instances_of_the_live_color() {
        let mut templates = Templates::new();
        let source = "{% for name, s in services|items %}upstream {{ name }} {\n\
                      {% for i in s.live %}  server {{ i.target }};\n{% endfor %}}\n{% endfor %}\
                      # revision {{ revision }}, green {{ services.web.by_color.green|length }}\n";
        templates
            .add("nginx".into(), source.into())
            .expect("compiles");
        let rendered = templates
            .render("nginx", &context(&view()))
            .expect("renders");
        assert_eq!(
            rendered,
            "upstream web {\n  server 10.0.0.1:8001;\n}\n# revision 7, green 1\n"
        );
        assert_eq!(live_counts(&view()).get("web"), Some(&1));
    }

    #[test]
    fn template_mistakes_are_reported_with_the_name() {
        let mut templates = Templates::new();
        let error = templates
            .add("bad".into(), "{% for %}".into())
            .expect_err("syntax error");
        assert!(error.to_string().contains("bad"), "{error}");
        templates
            .add("undefined".into(), "{{ nope.x }}".into())
            .expect("compiles");
        assert!(templates.render("undefined", &context(&view())).is_err());
    }
}
