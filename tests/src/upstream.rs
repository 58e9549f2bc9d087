//! Tiny HTTP upstreams on loopback for proxy tests that need no container:
//! one that answers every request with a fixed body, one that accepts and
//! closes without a word (an instance dying behind Docker's port proxy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A listening upstream, stopped when dropped.
pub struct Upstream {
    pub address: SocketAddr,
    /// Connections (mute) or requests (answering) it took.
    pub hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Answers every request with 200 and `body` (then closes, like
    /// busybox httpd).
    pub async fn answering(body: &str) -> Self {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        Self::serve(move |mut stream| {
            let response = response.clone();
            async move {
                // Read up to the end of the headers (requests here have no body).
                let mut seen = Vec::new();
                let mut buffer = [0_u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        })
        .await
    }

    /// Accepts each connection and closes it without answering.
    pub async fn mute() -> Self {
        Self::serve(|stream| async move { drop(stream) }).await
    }

    async fn serve<F, Fut>(handle: F) -> Self
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for an upstream");
        let address = listener.local_addr().expect("the upstream's address");
        let hits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(stream));
            }
        });
        Upstream {
            address,
            hits,
            task,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
