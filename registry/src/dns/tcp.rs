//! DNS over TCP (RFC 7766), served here rather than by hickory's own TCP
//! listener, which admits any number of connections from anyone: this one
//! admits a connection only within [`TcpLimits`] (per source and in all,
//! [`switchyard_program::sources`]) and closes it once idle. Each query is
//! a two-byte length and a message; answers go back in order.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use switchyard_program::sources::Sources;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Handler;

/// What the TCP listener admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at once from one source.
    pub per_source: usize,
    /// Connections open at once in all.
    pub max_connections: usize,
    /// How long a connection may wait for, or take to send, its next query.
    pub idle: Duration,
}

impl Default for TcpLimits {
    /// A resolver falls back to TCP only for truncated answers and keeps
    /// one or two connections; 16 per source is plenty.
    fn default() -> Self {
        TcpLimits {
            per_source: 16,
            max_connections: 512,
            idle: Duration::from_secs(10),
        }
    }
}

/// Serves `listener` until `stop`.
pub(super) async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    limits: TcpLimits,
    stop: CancellationToken,
) {
    let sources = Sources::new(limits.per_source, limits.max_connections);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "accepting a DNS connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match sources.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refused) => {
                tracing::debug!(%peer, reason = refused.reason(), "DNS connection refused");
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        let stop = stop.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            tokio::select! {
                served = connection(stream, peer, &handler, limits.idle) => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "DNS connection ended");
                    }
                }
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Answers the queries of one connection until it closes, sends something
/// that is not DNS, or stays idle for `idle`.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    idle: Duration,
) -> io::Result<()> {
    loop {
        let mut length = [0u8; 2];
        let Ok(read) = tokio::time::timeout(idle, stream.read_exact(&mut length)).await else {
            return Ok(());
        };
        match read {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
        let Ok(read) = tokio::time::timeout(idle, stream.read_exact(&mut message)).await else {
            return Ok(());
        };
        read?;
        let request = Request::from_bytes(message, peer, Protocol::Tcp)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
        let answer = Captured::default();
        handler
            .handle_request::<_, TokioTime>(&request, answer.clone())
            .await;
        let Some(bytes) = answer.take() else {
            return Ok(());
        };
        let Ok(length) = u16::try_from(bytes.len()) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
    }
}

/// The encoded answer, kept for the connection to write.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Option<Vec<u8>>>>);

impl Captured {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Captured {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        // A TCP message is at most what its two-byte length can say.
        encoder.set_max_size(u16::MAX);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes);
        Ok(info)
    }
}
