//! The authorization table of `docs/security.md`, read from that file, and
//! a property test that every decision of [`allowed`] is the table's: for
//! any role, binding, service globs and action.

use proptest::prelude::*;

use super::{Action, Principal, Role, allowed, glob_matches};

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md"));
const ROLES: [Role; 5] = [
    Role::Reader,
    Role::Proxy,
    Role::Agent,
    Role::Deployer,
    Role::Admin,
];

/// What one kind of action is, by its row's name in the doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Session,
    NodeInstances,
    ExternalInstances,
    SomeInstances,
    Deploy,
    ReportProxy,
    Admin,
}

const KINDS: [(&str, Kind); 8] = [
    ("read", Kind::Read),
    ("session of a node", Kind::Session),
    ("instances of a node (in its session)", Kind::NodeInstances),
    ("external instances of a service", Kind::ExternalInstances),
    ("some instance (an id that names none)", Kind::SomeInstances),
    ("deploy a service", Kind::Deploy),
    ("report as a proxy", Kind::ReportProxy),
    ("administration", Kind::Admin),
];

/// The table: for each kind, a cell per role in [`ROLES`]' order.
fn table() -> Vec<(Kind, [String; 5])> {
    let start = DOC
        .find("<!-- authorization-table")
        .expect("docs/security.md has the authorization table");
    let rows = DOC[start..]
        .lines()
        .skip(3) // the marker, the header and the separator
        .take_while(|line| line.starts_with('|'));
    rows.map(|line| {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_string())
            .collect();
        let kind = KINDS
            .iter()
            .find(|(name, _)| *name == cells[0])
            .unwrap_or_else(|| panic!("unknown row {:?} in docs/security.md", cells[0]))
            .1;
        let decisions: [String; 5] = cells[1..]
            .to_vec()
            .try_into()
            .unwrap_or_else(|_| panic!("row {line:?} needs a cell per role"));
        (kind, decisions)
    })
    .collect()
}

/// What the table's `cell` says for `principal` and the name the action
/// touches.
fn decide(cell: &str, principal: &Principal, name: &str) -> bool {
    match cell {
        "yes" => true,
        "no" => false,
        "binding" => principal
            .binding
            .as_deref()
            .is_some_and(|glob| glob_matches(glob, name)),
        "services" => {
            principal.services.is_empty()
                || principal
                    .services
                    .iter()
                    .any(|glob| glob_matches(glob, name))
        }
        other => panic!("unknown cell {other:?} in docs/security.md"),
    }
}

fn action(kind: Kind, name: &str) -> Action<'_> {
    match kind {
        Kind::Read => Action::Read,
        Kind::Session => Action::Session { node: name },
        Kind::NodeInstances => Action::Instances {
            node: Some(name),
            service: "web",
        },
        Kind::ExternalInstances => Action::Instances {
            node: None,
            service: name,
        },
        Kind::SomeInstances => Action::SomeInstances,
        Kind::Deploy => Action::Deploy { service: name },
        Kind::ReportProxy => Action::ReportProxy { proxy: name },
        Kind::Admin => Action::Admin,
    }
}

const NAMES: [&str; 8] = [
    "n1", "n2", "web", "api-eu", "edge-1", "proxy-3", "db", "x*y",
];
const GLOBS: [&str; 7] = ["n1", "n*", "*", "edge-1", "proxy-*", "web", "api-*"];

fn principals() -> impl Strategy<Value = Principal> {
    (
        0..ROLES.len(),
        proptest::option::of(proptest::sample::select(GLOBS.to_vec())),
        proptest::collection::vec(proptest::sample::select(GLOBS.to_vec()), 0..3),
    )
        .prop_map(|(role, binding, services)| Principal {
            role: ROLES[role],
            binding: binding.map(str::to_string),
            services: services.into_iter().map(str::to_string).collect(),
            name: "t".into(),
            token: None,
        })
}

#[test]
fn the_doc_has_a_row_for_every_kind_of_action() {
    let kinds: Vec<Kind> = table().into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(kinds, KINDS.map(|(_, kind)| kind).to_vec());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]
    #[test]
    fn every_decision_is_the_documented_one(
        principal in principals(),
        row in 0..KINDS.len(),
        name in proptest::sample::select(NAMES.to_vec()),
    ) {
        let table = table();
        let (kind, cells) = &table[row];
        let column = ROLES.iter().position(|r| *r == principal.role).unwrap_or(0);
        let expected = decide(&cells[column], &principal, name);
        let decided = allowed(&principal, action(*kind, name)).is_ok();
        prop_assert_eq!(decided, expected, "{:?} {:?} on {}", principal, kind, name);
    }
}
