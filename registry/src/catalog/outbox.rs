//! The queue between one watch's producer (the catalog task following the
//! store) and its gRPC stream, bounded in messages **and** bytes.
//!
//! A bound in messages alone let a client that opened streams and never read
//! them pin about a megabyte per stream (1,024 queued changes): a few
//! thousand such streams took gigabytes. Here the producer waits once the
//! queued events reach the byte budget, exactly as it waits on a full
//! channel; the store's watcher behind it then falls back to its on-disk
//! history, and the client is reset only if that history is compacted past
//! it. One event is always let through, so an event larger than the budget
//! (a big snapshot part) still moves, alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{CatalogError, WatchEvent};

type Item = Result<WatchEvent, CatalogError>;

/// Bytes queued, shared by both ends.
struct Budget {
    queued: AtomicUsize,
    max: usize,
    /// The consumer took something off the queue.
    freed: Notify,
}

/// The producing end.
pub(super) struct Outbox {
    sender: mpsc::Sender<(Item, usize)>,
    budget: Arc<Budget>,
}

/// A queue of at most `messages` events and about `bytes` bytes; answers
/// the producing end and the stream the client reads.
pub(super) fn outbox(
    messages: usize,
    bytes: usize,
) -> (Outbox, impl Stream<Item = Item> + Send + 'static) {
    let (sender, receiver) = mpsc::channel(messages.max(1));
    let budget = Arc::new(Budget {
        queued: AtomicUsize::new(0),
        max: bytes.max(1),
        freed: Notify::new(),
    });
    let consumer = Arc::clone(&budget);
    let stream = ReceiverStream::new(receiver).map(move |(item, size)| {
        consumer.queued.fetch_sub(size, Ordering::AcqRel);
        consumer.freed.notify_one();
        item
    });
    (Outbox { sender, budget }, stream)
}

impl Outbox {
    /// Queues `item` once the budget has room for it; false when the client
    /// went away.
    pub(super) async fn send(&self, item: Item) -> bool {
        let size = match &item {
            Ok(event) => event.approx_bytes(),
            Err(_) => 0,
        };
        loop {
            // Registered before looking, so a take in between still wakes us.
            let freed = self.budget.freed.notified();
            let queued = self.budget.queued.load(Ordering::Acquire);
            if queued == 0 || queued + size <= self.budget.max {
                break;
            }
            tokio::select! {
                () = freed => {}
                () = self.sender.closed() => return false,
            }
        }
        self.budget.queued.fetch_add(size, Ordering::AcqRel);
        if self.sender.send((item, size)).await.is_ok() {
            return true;
        }
        self.budget.queued.fetch_sub(size, Ordering::AcqRel);
        false
    }

    /// Completes when the client went away.
    pub(super) async fn closed(&self) {
        self.sender.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use switchyard_model::watch::Change;

    fn removal(id_len: usize) -> WatchEvent {
        WatchEvent::Changes {
            revision: 1,
            changes: vec![Change::InstanceRemoved {
                service: "web".into(),
                id: "x".repeat(id_len),
            }],
        }
    }

    #[tokio::test]
    async fn the_producer_waits_at_the_byte_budget_and_resumes_when_read() {
        let event = removal(1_000);
        let size = event.approx_bytes();
        let (outbox, stream) = outbox(1_000, size * 3);
        let mut stream = Box::pin(stream);
        for _ in 0..3 {
            assert!(outbox.send(Ok(event.clone())).await);
        }
        let fourth =
            tokio::time::timeout(Duration::from_millis(100), outbox.send(Ok(event.clone())));
        assert!(fourth.await.is_err(), "a fourth event exceeds the budget");
        assert!(stream.next().await.is_some());
        let fourth = tokio::time::timeout(Duration::from_secs(5), outbox.send(Ok(event.clone())));
        assert_eq!(fourth.await.ok(), Some(true), "room again after one read");
    }

    #[tokio::test]
    async fn an_event_larger_than_the_budget_goes_alone() {
        let (outbox, stream) = outbox(10, 100);
        let mut stream = Box::pin(stream);
        assert!(outbox.send(Ok(removal(10_000))).await);
        let second = tokio::time::timeout(Duration::from_millis(100), outbox.send(Ok(removal(1))));
        assert!(second.await.is_err(), "nothing joins an oversize event");
        assert!(stream.next().await.is_some());
        assert!(outbox.send(Ok(removal(1))).await);
    }

    #[tokio::test]
    async fn a_waiting_producer_stops_when_the_client_goes_away() {
        let (outbox, stream) = outbox(10, 100);
        assert!(outbox.send(Ok(removal(1_000))).await);
        drop(stream);
        let sent = tokio::time::timeout(Duration::from_secs(5), outbox.send(Ok(removal(1_000))));
        assert_eq!(sent.await.ok(), Some(false));
    }
}
