//! Catalog streams as response streams: each item converted at the edge,
//! and the watch permit (`--max-watchers`) held for exactly as long as the
//! client reads: tonic drops the stream when the client goes away.

use futures::{Stream, StreamExt};
use tonic::Status;

use super::{BoxStream, status_of};
use crate::catalog::CatalogError;

pub(super) fn held<T, W>(
    stream: impl Stream<Item = Result<T, CatalogError>> + Send + 'static,
    permit: super::guard::WatchPermit,
    to_wire: impl Fn(T) -> W + Send + 'static,
) -> BoxStream<W> {
    Box::pin(stream.map(move |item| -> Result<W, Status> {
        let _held = &permit;
        item.map(&to_wire).map_err(status_of)
    }))
}
