//! The gRPC port's accept loop: between the listening socket and tonic.
//!
//! tonic sets `TCP_NODELAY` and keepalive only on sockets it accepts
//! itself; a server fed its own listener gets the kernel defaults, and
//! Nagle's algorithm then holds each small response until the client's
//! delayed ACK (~40 ms a round of calls from Node's `@grpc/grpc-js`). So
//! every accepted socket gets `TCP_NODELAY` and TCP keepalive here, and
//! the loop also enforces what tonic leaves open: a cap on connections
//! (each holds a permit until it closes) and a backoff when `accept`
//! fails for want of file descriptors instead of spinning on the error.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use socket2::{SockRef, TcpKeepalive};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::{IngestStats, RateLimiter};

/// Socket settings and limits of accepted gRPC connections.
#[derive(Debug, Clone)]
pub struct AcceptLimits {
    /// Most gRPC connections open at once; more are closed as soon as they
    /// are accepted (the client sees UNAVAILABLE and can retry).
    pub max_connections: usize,
    /// Idle time before TCP keepalive probes start, so a peer that vanished
    /// without a FIN does not hold a connection slot forever.
    pub tcp_keepalive: Duration,
}

/// One accepted connection: the socket and its slot under the cap, given
/// back when tonic drops the connection.
#[derive(Debug)]
pub struct GrpcConn {
    stream: TcpStream,
    _slot: Slot,
}

/// A connection's place under [`AcceptLimits::max_connections`]; also
/// keeps the open-connections gauge true.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<IngestStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.grpc_connections_open.sub(1);
    }
}

/// Starts the accept loop on the current runtime and returns the stream of
/// connections tonic serves. The loop ends when `stop` turns true or tonic
/// stops taking connections.
pub fn incoming(
    listener: TcpListener,
    limits: AcceptLimits,
    stats: Arc<IngestStats>,
    diag: Arc<RateLimiter>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<GrpcConn>> {
    // One connection handed over at a time: the next accept waits until
    // tonic took the previous one.
    let (tx, rx) = mpsc::channel(1);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let keepalive = TcpKeepalive::new()
        .with_time(limits.tcp_keepalive)
        .with_interval(Duration::from_secs(10).min(limits.tcp_keepalive))
        .with_retries(3);
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            let accepted = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    let pause = backoff.next();
                    diag.emit(&[], 1, |held| {
                        tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, suppressed = held,
                            "Accepting a gRPC connection failed; pausing before the next accept.");
                    });
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            backoff = Backoff::default();
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                diag.emit(&[&stats.grpc_connections_refused], 1, |held| {
                    tracing::warn!(%peer, limit = limits.max_connections, suppressed = held,
                        "Too many gRPC connections; closing the new one.");
                });
                continue;
            };
            // Failing to set an option leaves a working, if slower,
            // connection: worth a debug line, not a refusal.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "Cannot set TCP_NODELAY on a gRPC connection.");
            }
            if let Err(e) = SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                tracing::debug!(%peer, error = %e, "Cannot set TCP keepalive on a gRPC connection.");
            }
            stats.grpc_connections_open.add(1);
            let conn = GrpcConn {
                stream,
                _slot: Slot {
                    _permit: permit,
                    stats: stats.clone(),
                },
            };
            if tx.send(Ok(conn)).await.is_err() {
                return; // tonic stopped serving
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Errors that concern only the connection being accepted (it was reset
/// or aborted before we took it): accept again at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Pause after an accept error (EMFILE, ENFILE, ENOBUFS): 10 ms, doubling
/// up to 1 s, so a process out of descriptors does not spin a core while
/// connections close and free some.
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(10))
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
        now
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_one_second() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..9).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }
}
