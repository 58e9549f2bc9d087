//! What rolling a service back to its previous color means: one rule for
//! `cdctl rollback` and the dashboard's button, decided from the service as
//! read under its deploy lock and its newest deploy record.

use crate::{Color, Deployment, Outcome, Service, labels::meta};

/// A rollback the rule allows: flip `from` → `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPlan {
    pub from: Color,
    pub to: Color,
    /// The image the previous color runs, as its instances report it.
    pub image: Option<String>,
}

/// Why a rollback is refused; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefusal {
    /// The other color holds a paused deploy's unpromoted instances, not
    /// the previous release.
    #[error(
        "deploy {deploy} of {service} is paused for promotion: its new instances are the other \
         color; `cdctl promote {service}` or `cdctl abort {service}` instead"
    )]
    Paused { service: String, deploy: String },
    #[error("{service} has no live color: nothing to roll back")]
    NotLive { service: String },
    #[error(
        "{previous} (the previous color of {service}) has no instance taking requests \
         (passing and not draining): nothing to roll back to; deploy the old image again"
    )]
    NothingToRollBackTo { service: String, previous: Color },
}

/// Whether `service` may roll back now, given its newest deploy record.
pub fn plan(
    service: &Service,
    newest: Option<&Deployment>,
) -> Result<RollbackPlan, RollbackRefusal> {
    let name = service.name.clone();
    if let Some(paused) = newest.filter(|d| d.outcome == Outcome::Paused) {
        return Err(RollbackRefusal::Paused {
            service: name,
            deploy: paused.id.clone(),
        });
    }
    let Some(from) = service.active_color else {
        return Err(RollbackRefusal::NotLive { service: name });
    };
    let to = from.other();
    let mut kept = service
        .instances
        .iter()
        .filter(|i| i.color == Some(to) && i.takes_requests())
        .peekable();
    if kept.peek().is_none() {
        return Err(RollbackRefusal::NothingToRollBackTo {
            service: name,
            previous: to,
        });
    }
    let image = kept.find_map(|i| i.metadata.get(meta::IMAGE).cloned());
    Ok(RollbackPlan { from, to, image })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Health, Instance};

    fn instance(id: &str, color: Color, health: Health, draining: bool) -> Instance {
        let mut instance = Instance {
            id: id.into(),
            service: "web".into(),
            color: Some(color),
            node: "n1".into(),
            address: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 80,
            tags: Vec::new(),
            metadata: Default::default(),
            health,
            session: None,
            create_revision: 0,
            mod_revision: 0,
        };
        instance
            .metadata
            .insert(meta::IMAGE.into(), format!("img-{id}"));
        if draining {
            instance.metadata.insert(meta::DRAINING.into(), "1".into());
        }
        instance
    }

    fn web(instances: Vec<Instance>) -> Service {
        Service {
            name: "web".into(),
            active_color: Some(Color::Green),
            instances,
            ..Service::default()
        }
    }

    #[test]
    fn the_rule() {
        let live = instance("g1", Color::Green, Health::Passing, false);
        let kept = instance("b1", Color::Blue, Health::Passing, false);
        let ok = web(vec![live.clone(), kept.clone()]);
        assert_eq!(
            plan(&ok, None),
            Ok(RollbackPlan {
                from: Color::Green,
                to: Color::Blue,
                image: Some("img-b1".into()),
            })
        );
        let paused = Deployment {
            id: "d9".into(),
            outcome: Outcome::Paused,
            ..Deployment::default()
        };
        assert!(matches!(
            plan(&ok, Some(&paused)),
            Err(RollbackRefusal::Paused { .. })
        ));
        let promoted = Deployment {
            outcome: Outcome::Promoted,
            ..paused.clone()
        };
        assert!(plan(&ok, Some(&promoted)).is_ok());
        for previous in [
            instance("b1", Color::Blue, Health::Critical, false),
            instance("b1", Color::Blue, Health::Passing, true),
        ] {
            assert!(matches!(
                plan(&web(vec![live.clone(), previous]), None),
                Err(RollbackRefusal::NothingToRollBackTo { .. })
            ));
        }
        let mut dark = ok.clone();
        dark.active_color = None;
        assert!(matches!(
            plan(&dark, None),
            Err(RollbackRefusal::NotLive { .. })
        ));
    }
}
