//! What each request touches, for the authorizer: the lookups that turn a
//! session id or an instance id into the node it belongs to. The decision
//! itself is `crate::auth` (one table for every request). Also the guard on
//! how many watch streams may be open at once.

use switchyard_model::auth::{Action, Principal};
use switchyard_model::{Instance, SessionId};
use switchyard_program::sources::{Admitted, Refused, Source};
use tonic::{Request, Status};

use super::{RegistryApi, status_of};
use crate::auth::Authorizer;
use crate::catalog::Catalog;
use crate::connection::{Authenticated, CountedWatch, Peer};

/// One watch stream's place among `--max-watchers` and on its connection.
pub(super) struct WatchPermit {
    _place: Admitted<WatchHolder>,
    _on_connection: Option<CountedWatch>,
}

/// Who a watch stream's place is counted against: the token (or
/// certificate) that opened it, or its source without `--auth`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum WatchHolder {
    Principal(String),
    Source(Source),
    /// No token and no address (in-process callers): one shared share.
    Unknown,
}

impl RegistryApi {
    /// Who is calling (`UNAUTHENTICATED` without a valid credential). The
    /// front gate (the server's interceptor) has already authenticated the call
    /// before its body was read, and left the answer in its extensions.
    pub(super) fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        if let Some(Authenticated(who)) = request.extensions().get::<Authenticated>() {
            return Ok(who.clone());
        }
        self.auth
            .authenticate(request.metadata(), request.extensions().get::<Peer>())
    }

    /// The name a write is recorded under: the caller as the registry knows
    /// them, only when `--auth` makes that name mean something.
    pub(super) fn principal_name<'a>(&self, who: &'a Principal) -> Option<&'a str> {
        self.auth.enabled().then_some(who.name.as_str())
    }

    /// A place for one more watch stream of `who`, held as long as the
    /// stream lives (and counted on the connection of `peer`);
    /// `RESOURCE_EXHAUSTED` at `--max-watchers`, or once `who` holds
    /// `--max-watchers-per-principal`.
    pub(super) fn watch_permit(
        &self,
        who: &Principal,
        peer: Option<&Peer>,
    ) -> Result<WatchPermit, Status> {
        let holder = match (&who.token, peer.and_then(|peer| peer.address)) {
            (Some(token), _) => WatchHolder::Principal(token.clone()),
            (None, _) if self.auth.enabled() => WatchHolder::Principal(who.name.clone()),
            (None, Some(address)) => WatchHolder::Source(Source::from(address.ip())),
            (None, None) => WatchHolder::Unknown,
        };
        let place = self
            .watchers
            .admit(holder)
            .map_err(|refused| match refused {
                Refused::Full => Status::resource_exhausted(format!(
                    "{} watch streams are open, the registry's limit (--max-watchers): close \
                 unused watches or raise the limit",
                    self.watchers.total()
                )),
                Refused::ShareFull => Status::resource_exhausted(format!(
                    "this caller holds {} watch streams, its share (--max-watchers-per-principal): \
                 close unused watches, give each proxy a token of its own, or raise the share",
                    self.watchers.per_key()
                )),
            })?;
        Ok(WatchPermit {
            _place: place,
            _on_connection: peer.map(|peer| peer.watches.opened()),
        })
    }

    /// Who is calling and what they sent (within the size limit), once
    /// they may deploy the service `service` names in it.
    pub(super) fn deployer<T: prost::Message>(
        &self,
        request: Request<T>,
        service: impl Fn(&T) -> &str,
    ) -> Result<(Principal, T), Status> {
        let who = self.caller(&request)?;
        let request = super::errors::within_limit(request)?;
        self.auth.allow(
            &who,
            Action::Deploy {
                service: service(&request),
            },
        )?;
        Ok((who, request))
    }

    /// `caller`, then `action`.
    pub(super) fn check<T>(
        &self,
        request: &Request<T>,
        action: Action<'_>,
    ) -> Result<Principal, Status> {
        let who = self.caller(request)?;
        self.auth.allow(&who, action)?;
        Ok(who)
    }

    /// An instance registered by `who`, under `session` or as an external
    /// one: the new owner's side. The current owner's side is
    /// [`Self::owner_agrees`], which the catalog asks inside its write.
    pub(super) async fn may_register(
        &self,
        who: &Principal,
        instance: &Instance,
        session: Option<SessionId>,
    ) -> Result<(), Status> {
        if !self.auth.enabled() {
            return Ok(());
        }
        let node = match session {
            None => None,
            Some(session) => {
                let node = may_use_session(&self.auth, &self.catalog, who, session).await?;
                Some(if instance.node.is_empty() {
                    node
                } else {
                    instance.node.clone()
                })
            }
        };
        self.auth.allow(
            who,
            Action::Instances {
                node: node.as_deref(),
                service: &instance.service,
            },
        )
    }

    /// What the catalog asks about the instance an id names now before it
    /// replaces or removes it: whether `who` may act for its owner.
    pub(super) fn owner_agrees<'a>(
        &'a self,
        who: &'a Principal,
    ) -> impl Fn(&Instance) -> Result<(), String> + Sync + 'a {
        move |current| {
            self.auth
                .allow(who, owner_of(current))
                .map_err(|refused| refused.message().to_string())
        }
    }

    /// Deregistering instance `id`: refused at once to roles that change
    /// no instances; the owner's side is [`Self::owner_agrees`].
    pub(super) fn may_deregister(&self, who: &Principal) -> Result<(), Status> {
        self.auth.allow(who, Action::SomeInstances)
    }
}

/// Who owns `instance`: its node's agent while it lives in a session, its
/// service's deployers when it is external (and admins, always).
pub(super) fn owner_of(instance: &Instance) -> Action<'_> {
    Action::Instances {
        node: instance.session.is_some().then_some(instance.node.as_str()),
        service: &instance.service,
    }
}

/// The node of `session`, once `who` may use it.
pub(super) async fn may_use_session(
    auth: &Authorizer,
    catalog: &Catalog,
    who: &Principal,
    session: SessionId,
) -> Result<String, Status> {
    if !auth.enabled() {
        return Ok(String::new());
    }
    let node = catalog.session_node(session).await.map_err(status_of)?;
    auth.allow(who, Action::Session { node: &node })?;
    Ok(node)
}
