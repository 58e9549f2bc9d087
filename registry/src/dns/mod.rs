//! The registry's DNS interface (`--dns-listen`, off by default): UDP and
//! TCP on one port, served by hickory-server, answered from a view of the
//! services that the catalog's own watch keeps current (a watcher like any
//! other: it never blocks a write, and starts over from a snapshot after a
//! reset). Names and what they answer: [`answer`].
//!
//! DNS cannot acknowledge: a flip is visible here at once, but clients
//! and resolvers keep what they cached for up to the TTL (`--dns-ttl`,
//! 1 s by default), and `cdctl deploy` cannot know when they moved. Use it
//! for discovery (HAProxy `server-template … resolvers`, Prometheus
//! `dns_sd_configs`), not where a flip must be confirmed.

mod answer;
mod rate;
mod tcp;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use switchyard_model::view::ServiceView;
use tokio_util::sync::CancellationToken;

use answer::Answer;
pub use answer::Zone;
pub use tcp::TcpLimits;

use crate::catalog::Catalog;

/// Largest UDP payload answered to EDNS clients (larger answers are
/// truncated, and the client asks again over TCP): the DNS flag day 2020
/// size, which fits an IPv6 packet without fragmenting.
const UDP_PAYLOAD: u16 = 1232;
/// What every DNS client takes (RFC 1035 §4.2.1).
const UDP_MINIMUM: u16 = 512;

/// Where and how the DNS interface answers.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub listen: SocketAddr,
    pub zone: Zone,
    pub tcp: TcpLimits,
    /// Whole answers a second per source over UDP; `None`: no limit.
    pub udp_rate: Option<u32>,
}

/// Answers questions from the shared view.
struct Handler {
    zone: Zone,
    view: Arc<RwLock<ServiceView>>,
    udp_rate: Option<rate::RateLimit>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        // No bigger than the client asked for: an answer larger than its
        // buffer is what a reflection attack amplifies with.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(UDP_MINIMUM, UDP_PAYLOAD));
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let question = match request.request_info() {
            Ok(info)
                if request.metadata.message_type == MessageType::Query
                    && request.metadata.op_code == OpCode::Query =>
            {
                info.query
            }
            _ => {
                let code = if request.metadata.op_code == OpCode::Query {
                    ResponseCode::FormErr
                } else {
                    ResponseCode::NotImp
                };
                let message = builder.error_msg(&request.metadata, code);
                return sent(response.send_response(message).await, metadata);
            }
        };
        if request.protocol() == Protocol::Udp
            && self
                .udp_rate
                .as_ref()
                .is_some_and(|rate| !rate.allow(request.src().ip()))
        {
            // Over the source's rate: no records, ask again over TCP.
            metadata.truncation = true;
            let none: Vec<Record> = Vec::new();
            let message = builder.build(metadata, &none, &none, &none, &none);
            return sent(response.send_response(message).await, metadata);
        }
        let (answer, revision) = match self.view.read() {
            Ok(view) => (
                self.zone
                    .answer(&view, question.name(), question.query_type()),
                view.revision,
            ),
            Err(_) => (Answer::Refused, 0),
        };
        metadata.authoritative = answer != Answer::Refused;
        let soa = vec![self.zone.soa(revision)];
        let none: Vec<Record> = Vec::new();
        let (answers, negative, additionals) = match &answer {
            Answer::Found {
                answers,
                additionals,
            } => (answers, &none, additionals),
            Answer::NoData => (&none, &soa, &none),
            Answer::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                (&none, &soa, &none)
            }
            Answer::Refused => {
                metadata.response_code = ResponseCode::Refused;
                (&none, &none, &none)
            }
        };
        let message = builder.build(metadata, answers, &none, negative, additionals);
        sent(response.send_response(message).await, metadata)
    }
}

/// What was sent, or SERVFAIL when sending failed (the client went away).
fn sent<E: std::fmt::Display>(
    result: Result<ResponseInfo, E>,
    mut metadata: Metadata,
) -> ResponseInfo {
    result.unwrap_or_else(|error| {
        tracing::debug!(%error, "could not send a DNS answer");
        metadata.response_code = ResponseCode::ServFail;
        ResponseInfo::from(Header {
            metadata,
            counts: HeaderCounts::default(),
        })
    })
}

/// Binds UDP and TCP on `config.listen` (port 0: one free port for both),
/// follows the catalog into the view, and serves until `stop`; answers
/// the address bound.
pub async fn serve(
    config: DnsConfig,
    catalog: Catalog,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let udp = tokio::net::UdpSocket::bind(config.listen)
        .await
        .with_context(|| format!("--dns-listen {}: binding UDP", config.listen))?;
    let bound = udp.local_addr()?;
    let tcp = tokio::net::TcpListener::bind(bound)
        .await
        .with_context(|| format!("--dns-listen {bound}: binding TCP"))?;
    let view = Arc::new(RwLock::new(ServiceView::default()));
    tokio::spawn(follow(catalog, Arc::clone(&view), stop.clone()));
    let handler = Arc::new(Handler {
        zone: config.zone,
        view,
        udp_rate: config.udp_rate.map(rate::RateLimit::new),
    });
    tokio::spawn(tcp::serve(
        tcp,
        Arc::clone(&handler),
        config.tcp,
        stop.clone(),
    ));
    let mut server = Server::new(Shared(handler));
    server.register_socket(udp);
    tokio::spawn(async move {
        stop.cancelled().await;
        if let Err(error) = server.shutdown_gracefully().await {
            tracing::warn!(%error, "the DNS interface stopped with an error");
        }
    });
    Ok(bound)
}

/// The handler as hickory's UDP server holds it, shared with [`tcp`].
struct Shared(Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        self.0.handle_request::<R, T>(request, response).await
    }
}

/// The catalog's watch of every service into `view`.
async fn follow(catalog: Catalog, view: Arc<RwLock<ServiceView>>, stop: CancellationToken) {
    catalog
        .follow_services(stop, "dns", |event| {
            if let Ok(mut view) = view.write() {
                view.apply(event);
            }
        })
        .await;
}
