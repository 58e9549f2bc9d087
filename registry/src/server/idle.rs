//! Closing connections that hold a place and do nothing with it (gRPC's
//! "max connection idle"): a connection is idle while it has no call open,
//! counted by [`CallsLayer`] from a request's headers to the end of its
//! response body, and [`IdleTimer`] ends it once idle for `--idle-timeout`.
//!
//! HTTP/2 pings keep the bytes flowing on a connection nobody uses, so
//! idleness cannot be read off the socket; it is the calls that count.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::connection::{Calls, OpenCall, Peer};

/// Ends a connection's reads (as if the client had closed it) once it has
/// been idle for `timeout`; hyper then closes the connection.
pub struct IdleTimer {
    calls: Calls,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    pub fn new(calls: Calls, timeout: Duration) -> Self {
        IdleTimer {
            calls,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Whether the connection has been idle long enough; otherwise the
    /// timer is set to wake the reader when it might be.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            match self.calls.idle_deadline(self.timeout) {
                Some(deadline) if deadline <= Instant::now() => return true,
                Some(deadline) => self.sleep.as_mut().reset(deadline),
                // A call is open: look again a whole timeout later; the
                // call's end moves the deadline past that anyway.
                None => self.sleep.as_mut().reset(Instant::now() + self.timeout),
            }
        }
    }
}

/// Counts every call on its connection's [`Calls`].
#[derive(Debug, Clone, Default)]
pub struct CallsLayer;

impl<S> tower::Layer<S> for CallsLayer {
    type Service = CountCalls<S>;

    fn layer(&self, inner: S) -> CountCalls<S> {
        CountCalls { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CountCalls<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, Request, ResponseBody> tower::Service<http::Request<Request>> for CountCalls<S>
where
    S: tower::Service<http::Request<Request>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Body + Send + Unpin + 'static,
{
    type Response = http::Response<CountedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Request>) -> Self::Future {
        let call = request
            .extensions()
            .get::<Peer>()
            .map(|peer| peer.calls.opened());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| CountedBody { inner, _call: call }))
        })
    }
}

/// A response body that keeps its call open until it is dropped.
pub struct CountedBody<B> {
    inner: B,
    _call: Option<OpenCall>,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_with_no_call_open_for_the_whole_timeout() {
        let calls = Calls::default();
        let mut timer = IdleTimer::new(calls.clone(), Duration::from_secs(10));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(!timer.expired(&mut cx));

        let call = calls.opened();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!timer.expired(&mut cx), "a call is open");
        drop(call);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!timer.expired(&mut cx), "idle for 9 s of 10");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(timer.expired(&mut cx));
    }
}
