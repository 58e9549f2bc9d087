//! What the DNS interface answers, from the registry's in-memory view of
//! the services (no store read per query). Names under the zone (default
//! `switchyard.`), matched without regard to case:
//!
//! - `SERVICE.service.ZONE` A/AAAA: passing instances of the live color.
//! - `COLOR.SERVICE.service.ZONE` A/AAAA: passing instances of that color
//!   (a preview of the idle color).
//! - `_SERVICE._tcp.service.ZONE` SRV: the live instances' ports, each
//!   with a target `HEX.addr.ZONE` whose address is in the additional
//!   section (Consul's scheme: the target encodes the address).
//! - `HEX.addr.ZONE` A/AAAA: the address the name encodes, when it is an
//!   instance's (NXDOMAIN for any other: no rebinding through the zone).
//! - The zone itself: its SOA.
//!
//! A known name without records of the type asked is NOERROR with no
//! answer (NODATA); an unknown name under the zone is NXDOMAIN; both carry
//! the zone's SOA so resolvers cache the negative answer for the TTL.
//! Names outside the zone are refused.

use std::net::IpAddr;

use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use switchyard_model::view::ServiceView;
use switchyard_model::{Color, Instance, Service};

/// The zone's names and the TTL of every answer.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase and fully qualified (`switchyard.`).
    pub domain: LowerName,
    pub ttl: u32,
}

/// The outcome of one question.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// NOERROR with these records.
    Found {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// NOERROR, nothing of that type: the SOA goes in the authority section.
    NoData,
    /// NXDOMAIN, with the SOA.
    NxDomain,
    /// Not under this zone.
    Refused,
}

/// What a name under the zone names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Apex,
    Live(&'a str),
    Color(Color, &'a str),
    Srv(&'a str),
    Addr(IpAddr),
}

impl Zone {
    pub fn new(domain: &str, ttl: u32) -> Result<Self, String> {
        let mut name = Name::from_ascii(domain)
            .map_err(|error| format!("--dns-domain {domain:?} is not a domain name: {error}"))?;
        name.set_fqdn(true);
        Ok(Zone {
            domain: LowerName::new(&name),
            ttl,
        })
    }

    /// Answers `name`/`kind` from `view`.
    pub fn answer(&self, view: &ServiceView, name: &LowerName, kind: RecordType) -> Answer {
        if !self.domain.zone_of(name) {
            return Answer::Refused;
        }
        let text = name.to_string();
        let Some(target) = self.target(&text) else {
            return Answer::NxDomain;
        };
        let owner = Name::from(name.clone());
        let (answers, additionals) = match target {
            Target::Apex if kind == RecordType::SOA => (vec![self.soa(view.revision)], vec![]),
            Target::Apex => (vec![], vec![]),
            Target::Live(service) | Target::Color(_, service) | Target::Srv(service)
                if !view.services.contains_key(service) =>
            {
                return Answer::NxDomain;
            }
            Target::Live(service) => {
                let instances = live(&view.services[service]);
                (addresses(&owner, &instances, kind, self.ttl), vec![])
            }
            Target::Color(color, service) => {
                let instances = of_color(&view.services[service], color);
                (addresses(&owner, &instances, kind, self.ttl), vec![])
            }
            Target::Srv(_) if kind != RecordType::SRV => (vec![], vec![]),
            Target::Srv(service) => self.srv(&owner, &weighted(&view.services[service])),
            // Only addresses of instances: a name that turns into any
            // address the asker picks is what DNS rebinding needs.
            Target::Addr(address) if !registered(view, address) => return Answer::NxDomain,
            Target::Addr(address) => (address_records(&owner, address, kind, self.ttl), vec![]),
        };
        if answers.is_empty() {
            Answer::NoData
        } else {
            Answer::Found {
                answers,
                additionals,
            }
        }
    }

    /// What `name` (lowercase, fully qualified) names under the zone.
    fn target<'a>(&self, name: &'a str) -> Option<Target<'a>> {
        let domain = self.domain.to_string();
        if name == domain {
            return Some(Target::Apex);
        }
        let relative = name.strip_suffix(&domain)?.strip_suffix('.')?;
        let labels: Vec<&str> = relative.split('.').collect();
        match labels.as_slice() {
            [service, "service"] => Some(Target::Live(service)),
            [service, "_tcp", "service"] => Some(Target::Srv(service.strip_prefix('_')?)),
            [color, service, "service"] => Some(Target::Color(color_named(color)?, service)),
            [hex, "addr"] => Some(Target::Addr(address_of_hex(hex)?)),
            _ => None,
        }
    }

    /// The zone's SOA, serial from the registry revision (its low 32 bits,
    /// as serial arithmetic expects a number that grows and wraps).
    pub fn soa(&self, revision: u64) -> Record {
        let apex = Name::from(self.domain.clone());
        let host = |label: &str| Name::from_ascii(label).and_then(|l| l.append_domain(&apex));
        let mname = host("ns").unwrap_or_else(|_| apex.clone());
        let rname = host("hostmaster").unwrap_or_else(|_| apex.clone());
        let soa = SOA::new(mname, rname, revision as u32, 3600, 600, 86_400, self.ttl);
        Record::from_rdata(apex, self.ttl, RData::SOA(soa))
    }

    /// SRV records for `instances` at their weights, and the address of
    /// each target.
    fn srv(&self, owner: &Name, instances: &[(&Instance, u16)]) -> (Vec<Record>, Vec<Record>) {
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for (instance, weight) in instances {
            let Ok(target) = self.addr_name(instance.address) else {
                continue;
            };
            let srv = SRV::new(1, *weight, instance.port, target.clone());
            answers.push(Record::from_rdata(owner.clone(), self.ttl, RData::SRV(srv)));
            additionals.extend(address_records(
                &target,
                instance.address,
                RecordType::ANY,
                self.ttl,
            ));
        }
        (answers, additionals)
    }

    /// `HEX.addr.ZONE` for `address`.
    fn addr_name(&self, address: IpAddr) -> Result<Name, String> {
        let hex: String = match address {
            IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
            IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
        };
        Name::from_ascii(format!("{hex}.addr"))
            .and_then(|name| name.append_domain(&Name::from(self.domain.clone())))
            .map_err(|error| error.to_string())
    }
}

fn color_named(label: &str) -> Option<Color> {
    match label {
        "blue" => Some(Color::Blue),
        "green" => Some(Color::Green),
        _ => None,
    }
}

/// The address 8 (IPv4) or 32 (IPv6) hex digits encode.
fn address_of_hex(hex: &str) -> Option<IpAddr> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect();
    match bytes?.as_slice() {
        [a, b, c, d] if hex.len() == 8 => Some(IpAddr::from([*a, *b, *c, *d])),
        sixteen if hex.len() == 32 => {
            let octets: [u8; 16] = sixteen.try_into().ok()?;
            Some(IpAddr::from(octets))
        }
        _ => None,
    }
}

/// Whether some instance of some service has `address`.
fn registered(view: &ServiceView, address: IpAddr) -> bool {
    view.services
        .values()
        .any(|service| service.instances.iter().any(|i| i.address == address))
}

fn live(service: &Service) -> Vec<&Instance> {
    service.live_instances().collect()
}

/// What SRV answers: the instances of every color with a weight, at their
/// server weights times 256 (a canary's share included; without one, the
/// live color at 65535 each). HAProxy divides SRV weights by 256 to get its
/// own (1–256), so a weight under 256 would reach it as 1; clients that
/// follow RFC 2782 see the same ratios. A and AAAA answers cannot carry
/// weights, so they stay the live color's.
fn weighted(service: &Service) -> Vec<(&Instance, u16)> {
    switchyard_model::routes::routes(service)
        .into_iter()
        .map(|route| {
            let scaled = u16::try_from(u32::from(route.weight) * 256).unwrap_or(u16::MAX);
            (route.instance, scaled)
        })
        .collect()
}

fn of_color(service: &Service, color: Color) -> Vec<&Instance> {
    service
        .instances
        .iter()
        .filter(|i| i.color == Some(color) && i.takes_requests())
        .collect()
}

/// A/AAAA records of `instances` for a question of `kind` (ANY: both);
/// each address once.
fn addresses(owner: &Name, instances: &[&Instance], kind: RecordType, ttl: u32) -> Vec<Record> {
    let mut seen = std::collections::BTreeSet::new();
    instances
        .iter()
        .filter(|i| seen.insert(i.address))
        .flat_map(|i| address_records(owner, i.address, kind, ttl))
        .collect()
}

fn address_records(owner: &Name, address: IpAddr, kind: RecordType, ttl: u32) -> Vec<Record> {
    let rdata = match (address, kind) {
        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
        _ => return Vec::new(),
    };
    vec![Record::from_rdata(owner.clone(), ttl, rdata)]
}

#[cfg(test)]
mod tests;
