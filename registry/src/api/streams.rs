//! Catalog streams as response streams: each item converted at the edge,
//! the watch permit (`--max-watchers`) held for exactly as long as the
//! client reads (tonic drops the stream when the client goes away), and the
//! stream ended with `UNAUTHENTICATED` once the token that opened it is
//! revoked or expires.

use std::future::Future;

use futures::{Stream, StreamExt};
use tonic::Status;

use super::{BoxStream, status_of};
use crate::catalog::CatalogError;

/// The status a stream ends with when its token goes.
pub(super) fn revoked_status() -> Status {
    Status::unauthenticated(
        "the token this stream was opened with was revoked or has expired: open it again \
         with a valid one",
    )
}

pub(super) fn held<T, W: Send + 'static>(
    stream: impl Stream<Item = Result<T, CatalogError>> + Send + 'static,
    permit: super::guard::WatchPermit,
    to_wire: impl Fn(T) -> W + Send + 'static,
    revoked: Option<impl Future<Output = ()> + Send + 'static>,
) -> BoxStream<W> {
    let items = stream.map(move |item| -> Result<W, Status> {
        let _held = &permit;
        item.map(&to_wire).map_err(status_of)
    });
    match revoked {
        None => Box::pin(items),
        Some(revoked) => ended_by(items, revoked),
    }
}

/// `items` until `revoked` resolves, then `UNAUTHENTICATED` and the end.
/// A status ends a gRPC stream, so nothing follows the first error either.
pub(super) fn ended_by<W: Send + 'static>(
    items: impl Stream<Item = Result<W, Status>> + Send + 'static,
    revoked: impl Future<Output = ()> + Send + 'static,
) -> BoxStream<W> {
    let start = Some((Box::pin(items), Box::pin(revoked)));
    Box::pin(futures::stream::unfold(start, |state| async move {
        let (mut items, mut revoked) = state?;
        tokio::select! {
            biased;
            () = &mut revoked => Some((Err(revoked_status()), None)),
            item = items.next() => {
                let item = item?;
                let more = item.is_ok().then_some((items, revoked));
                Some((item, more))
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_revocation_ends_the_stream_with_unauthenticated() {
        let (revoke, revoked) = tokio::sync::oneshot::channel::<()>();
        let items = futures::stream::iter([Ok(1), Ok(2)]).chain(futures::stream::pending());
        let mut stream = ended_by(items, async {
            let _ = revoked.await;
        });
        assert_eq!(stream.next().await.map(|r| r.ok()), Some(Some(1)));
        assert_eq!(stream.next().await.map(|r| r.ok()), Some(Some(2)));
        let _ = revoke.send(());
        let ended = stream.next().await.expect("an item").expect_err("a status");
        assert_eq!(ended.code(), tonic::Code::Unauthenticated);
        assert!(stream.next().await.is_none());
    }
}
