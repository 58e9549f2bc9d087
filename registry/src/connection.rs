//! What the registry knows of one connection and the caller on it, as
//! every request carries it in its extensions: a leaf that the server
//! (which fills it in), the authorizer and the API (which read it) all
//! import, so none of them imports another for it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// Who is on the other end, as each request sees it in its extensions.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub address: Option<SocketAddr>,
    /// The client's certificate chain, leaf first, when it sent one over TLS.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// Watch streams open on this connection.
    pub watches: WatchCount,
    /// Calls open on this connection, for the idle timeout.
    pub calls: Calls,
}

/// Watch streams open on one connection: with two or more, a change may
/// reach several of them at once, and the connection holds its writes back
/// a moment to send them together (`server/incoming.rs`).
#[derive(Debug, Clone, Default)]
pub struct WatchCount(Arc<AtomicUsize>);

/// One open watch stream, counted on its connection until dropped.
pub struct CountedWatch(WatchCount);

impl WatchCount {
    pub fn opened(&self) -> CountedWatch {
        self.0.fetch_add(1, Ordering::Relaxed);
        CountedWatch(self.clone())
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for CountedWatch {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Calls open on one connection, and since when it has had none.
#[derive(Debug, Clone)]
pub struct Calls(Arc<CallsInner>);

#[derive(Debug)]
struct CallsInner {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Default for Calls {
    fn default() -> Self {
        Calls(Arc::new(CallsInner {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }))
    }
}

/// One open call, counted until dropped.
pub struct OpenCall(Calls);

impl Calls {
    pub(crate) fn opened(&self) -> OpenCall {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        OpenCall(self.clone())
    }

    /// When the connection may be closed: `None` while a call is open.
    pub(crate) fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.0.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(since + timeout)
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        let inner = &(self.0).0;
        // The time is set before the count falls, so a timer that sees no
        // call open also sees when the last one ended.
        *inner
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The caller the front gate authenticated, in a request's extensions.
#[derive(Debug, Clone)]
pub struct Authenticated(pub switchyard_model::auth::Principal);
