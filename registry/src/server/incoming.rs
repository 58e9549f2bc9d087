//! The registry's accept loop, in front of tonic: it bounds connections in
//! total and per source ([`switchyard_program::sources`]), closes
//! connections idle for `--idle-timeout` ([`super::idle`]), closes sockets that never start HTTP/2 (or TLS) within the
//! handshake timeout, runs the TLS handshake when the listener has TLS, and
//! backs off (logging once) when accepting fails for lack of file
//! descriptors or memory instead of spinning on the error.
//!
//! tonic's own `TcpIncoming` does none of this: a few hundred silent sockets
//! held every descriptor the process had, and the loop then retried the
//! failing `accept` as fast as a core allowed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use switchyard_program::sources::{Admitted, Refused, Source, Sources};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use super::idle::IdleTimer;
use crate::connection::{Calls, Peer, WatchCount};

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest pause between accept attempts while descriptors are exhausted.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per this long about refused connections.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Limits of the accept loop.
#[derive(Clone)]
pub struct ConnectionLimits {
    /// Connections open at once, handshaking or serving.
    pub max_connections: usize,
    /// Of those, how many one source may hold.
    pub per_source: usize,
    /// How long a connection may go without a call open.
    pub idle_timeout: Duration,
    /// How long a new connection may take to send the HTTP/2 preface, or
    /// to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// TLS for every connection, when the listener has it (read at each
    /// handshake: SIGHUP replaces it).
    pub tls: Option<super::Tls>,
}

/// An accepted connection that started HTTP/2 (or finished its TLS
/// handshake); holds its place among [`ConnectionLimits::max_connections`]
/// until it is dropped.
pub struct Connection {
    io: Io,
    peer: Peer,
    _slot: Admitted<Source>,
    idle: IdleTimer,
    /// The current flush has already waited its turn (see [`Connection::defer`]).
    deferred: bool,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Accepts on `listener` until `stop` fires; yields connections that sent
/// the preface (or finished TLS) in time. The stream ends when `stop` fires.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Connection>> {
    let (ready, connections) = mpsc::channel(64);
    tokio::spawn(async move {
        let served = ready.clone();
        // The listening socket closes with this task, so new clients are
        // refused at once after shutdown starts.
        tokio::select! {
            () = accept_loop(listener, limits, ready) => {}
            () = stop.cancelled() => {}
            () = served.closed() => {}
        }
    });
    ReceiverStream::new(connections)
}

async fn accept_loop(
    listener: TcpListener,
    limits: ConnectionLimits,
    ready: mpsc::Sender<io::Result<Connection>>,
) {
    let slots = Sources::new(limits.per_source, limits.max_connections);
    let mut refused = Refusals::default();
    let mut exhausted = Exhaustion::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_resource_error(&error) => {
                tokio::time::sleep(exhausted.failed(&error)).await;
                continue;
            }
            // The peer gave up before we accepted (ECONNABORTED and kin).
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                continue;
            }
        };
        exhausted.recovered();
        let slot = match slots.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                refused.note(peer, why, &limits);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ready = ready.clone();
        let tls = limits.tls.as_ref().map(super::Tls::acceptor);
        let timeout = limits.handshake_timeout;
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, handshake(stream, peer, tls)).await {
                Ok(Ok((io, peer))) => {
                    let connection = Connection {
                        io,
                        idle: IdleTimer::new(peer.calls.clone(), idle_timeout),
                        peer,
                        _slot: slot,
                        deferred: false,
                    };
                    let _ = ready.send(Ok(connection)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "connection closed before HTTP/2"),
                Err(_) => tracing::debug!(
                    %peer,
                    ?timeout,
                    "connection did not start HTTP/2 (or TLS) in time; closed"
                ),
            }
        });
    }
}

/// TLS when the listener has it (the handshake is the sign of life), else
/// the HTTP/2 preface.
async fn handshake(
    stream: TcpStream,
    address: SocketAddr,
    tls: Option<TlsAcceptor>,
) -> io::Result<(Io, Peer)> {
    let mut peer = Peer {
        address: Some(address),
        certificates: None,
        watches: WatchCount::default(),
        calls: Calls::default(),
    };
    let Some(tls) = tls else {
        await_preface(&stream).await?;
        return Ok((Io::Plain(stream), peer));
    };
    let stream = tls.accept(stream).await?;
    peer.certificates = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| Arc::new(chain.iter().map(|cert| cert.clone().into_owned()).collect()));
    Ok((Io::Tls(Box::new(stream)), peer))
}

/// Waits until the peer has sent the whole HTTP/2 preface, without
/// consuming it (hyper reads it next). A peer that sends something else is
/// left to hyper, which answers it with a protocol error.
async fn await_preface(stream: &TcpStream) -> io::Result<()> {
    let mut buffer = [0u8; PREFACE.len()];
    loop {
        stream.readable().await?;
        let seen = stream.peek(&mut buffer).await?;
        if seen == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if seen == PREFACE.len() || buffer[..seen] != PREFACE[..seen] {
            return Ok(());
        }
        // Part of the preface: peek would answer at once again, so wait a
        // little for the rest rather than spin.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Accepting while out of descriptors or memory: how long to back off, and
/// a log line at the first failure and then at most once per
/// [`REPORT_EVERY`] (silent sockets closed by the handshake timeout free
/// descriptors and the next ones take them, so episodes repeat).
#[derive(Default)]
struct Exhaustion {
    backoff: Duration,
    failures: u64,
    last_report: Option<Instant>,
}

/// At most one log line per this long about accept failures.
const REPORT_EVERY: Duration = Duration::from_secs(60);

impl Exhaustion {
    /// Notes a failure; answers how long to wait before the next accept.
    fn failed(&mut self, error: &io::Error) -> Duration {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(5), MAX_BACKOFF);
        self.failures += 1;
        if self
            .last_report
            .is_none_or(|last| last.elapsed() >= REPORT_EVERY)
        {
            tracing::error!(
                %error,
                failures = self.failures,
                "cannot accept connections: out of file descriptors or memory; raise the \
                 limit (LimitNOFILE, ulimit -n) or lower --max-connections; retrying with \
                 backoff (failures counted since the last report)"
            );
            self.failures = 0;
            self.last_report = Some(Instant::now());
        }
        self.backoff
    }

    fn recovered(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

/// Errors of `accept` that come from this process or host running out of
/// something, not from the peer: retrying at once cannot succeed.
fn is_resource_error(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Counts connections refused at the limit and logs them at most once per
/// [`WARN_EVERY`].
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, peer: SocketAddr, why: Refused, limits: &ConnectionLimits) {
        self.since_warning += 1;
        if self
            .last_warning
            .is_some_and(|last| last.elapsed() < WARN_EVERY)
        {
            return;
        }
        let (flag, limit) = match why {
            Refused::Full => ("--max-connections", limits.max_connections),
            Refused::ShareFull => ("--max-connections-per-source", limits.per_source),
        };
        tracing::warn!(
            %peer,
            refused = self.since_warning,
            limit,
            "connection refused: {flag} reached (refusals counted since the last warning)"
        );
        self.since_warning = 0;
        self.last_warning = Some(Instant::now());
    }
}

impl Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

/// Runs `$call` on the plain or the TLS stream, whichever this is.
macro_rules! on_io {
    ($self:ident, $stream:ident => $call:expr) => {
        match &mut $self.get_mut().io {
            Io::Plain($stream) => {
                let $stream = Pin::new($stream);
                $call
            }
            Io::Tls($stream) => {
                let $stream = Pin::new($stream.as_mut());
                $call
            }
        }
    };
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.as_mut();
        let read = on_io!(this, stream => stream.poll_read(cx, buf));
        if read.is_pending() && self.idle.expired(cx) {
            tracing::debug!(peer = ?self.peer.address, "closing a connection idle for --idle-timeout");
            // Nothing read: the end of the stream, and hyper closes.
            return Poll::Ready(Ok(()));
        }
        read
    }
}

impl Connection {
    /// On a connection with several watch streams, holds the first write
    /// of each flush back for one turn of the scheduler: the connection's
    /// task goes to the back of the run queue (it wakes itself), and the
    /// streams already woken by the same change add their frames to
    /// HTTP/2's buffer meanwhile, so one `writev` carries them all. Without
    /// it the connection wrote after each stream's frame: one system call
    /// per watcher, 41% of the registry's CPU in a 1,000-watcher fan-out.
    /// Connections of unary calls only never wait (there it measured about
    /// 15% fewer reads a second: nothing to gather, one more poll).
    fn defer(&mut self, cx: &mut Context<'_>) -> bool {
        if self.deferred || self.peer.watches.get() < 2 {
            return false;
        }
        self.deferred = true;
        cx.waker().wake_by_ref();
        true
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.defer(cx) {
            return Poll::Pending;
        }
        on_io!(self, stream => stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.defer(cx) {
            return Poll::Pending;
        }
        on_io!(self, stream => stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.as_mut();
        let flushed = on_io!(this, stream => stream.poll_flush(cx));
        if flushed.is_ready() {
            // Everything is out: the next write starts a new flush.
            self.deferred = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, stream => stream.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    async fn serve(
        limits: ConnectionLimits,
    ) -> (SocketAddr, ReceiverStream<io::Result<Connection>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        (
            address,
            incoming(listener, limits, CancellationToken::new()),
        )
    }

    async fn next_accepted(
        connections: &mut ReceiverStream<io::Result<Connection>>,
        patience: Duration,
    ) -> bool {
        let next = tokio::time::timeout(patience, connections.next()).await;
        matches!(next, Ok(Some(Ok(_))))
    }

    #[tokio::test]
    async fn silent_sockets_are_closed_and_free_their_slot() {
        let limits = ConnectionLimits {
            max_connections: 1,
            per_source: 100,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_millis(200),
            tls: None,
        };
        let (address, mut connections) = serve(limits).await;
        let started = std::time::Instant::now();
        let _silent = TcpStream::connect(address).await.expect("connect");
        // While the silent socket holds the only slot (accepted first: one
        // loop accepts in order), a client is closed at once...
        let mut refused = TcpStream::connect(address).await.expect("connect");
        refused.write_all(PREFACE).await.expect("write");
        let mut byte = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut refused, &mut byte).await;
        assert!(matches!(read, Ok(0) | Err(_)), "closed at once: {read:?}");
        // ...and once the silent one timed out, the next one gets through.
        let mut tries = 0;
        loop {
            let mut client = TcpStream::connect(address).await.expect("connect");
            client.write_all(PREFACE).await.expect("write");
            if next_accepted(&mut connections, Duration::from_millis(100)).await {
                break;
            }
            tries += 1;
            assert!(tries < 50, "no connection got through in 5s");
        }
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_preface_sent_in_pieces_is_accepted() {
        let limits = ConnectionLimits {
            max_connections: 4,
            per_source: 100,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(5),
            tls: None,
        };
        let (address, mut connections) = serve(limits).await;
        let mut client = TcpStream::connect(address).await.expect("connect");
        client.write_all(&PREFACE[..10]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(&PREFACE[10..]).await.expect("write");
        assert!(next_accepted(&mut connections, Duration::from_secs(5)).await);
    }
}

#[cfg(test)]
mod gathering {
    use std::task::Waker;

    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A connection accepted by `incoming`, and its client's socket.
    async fn accepted() -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let limits = ConnectionLimits {
            max_connections: 1,
            per_source: 100,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(5),
            tls: None,
        };
        let mut connections = incoming(listener, limits, CancellationToken::new());
        let mut client = TcpStream::connect(address).await.expect("connect");
        client.write_all(PREFACE).await.expect("write");
        let connection = tokio::time::timeout(Duration::from_secs(5), connections.next())
            .await
            .expect("accepted within 5s")
            .expect("a connection")
            .expect("no accept error");
        (connection, client)
    }

    /// Counts the wakes it gets.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn write(connection: &mut Connection, waker: &Waker) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(waker);
        Pin::new(connection).poll_write(&mut cx, b"frame")
    }

    #[tokio::test]
    async fn with_several_watches_the_first_write_of_a_flush_waits_one_turn() {
        let (mut connection, _client) = accepted().await;
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = Waker::from(Arc::clone(&wakes));
        let watches = connection.peer.watches.clone();
        let _first = watches.opened();
        assert!(
            write(&mut connection, &waker).is_ready(),
            "one watch: no wait"
        );
        let second = watches.opened();
        let mut cx = Context::from_waker(&waker);
        for flush in 1..=2 {
            assert!(write(&mut connection, &waker).is_pending(), "a flush waits");
            assert_eq!(
                wakes.0.load(std::sync::atomic::Ordering::SeqCst),
                flush,
                "woken"
            );
            assert!(write(&mut connection, &waker).is_ready(), "once");
            assert!(write(&mut connection, &waker).is_ready(), "once per flush");
            assert!(Pin::new(&mut connection).poll_flush(&mut cx).is_ready());
        }
        drop(second);
        assert!(
            write(&mut connection, &waker).is_ready(),
            "one watch again: no wait"
        );
    }
}
