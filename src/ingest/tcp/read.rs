//! What happens after every read, for both engines: count the bytes,
//! frame, decode and queue what the read completed, and make room for the
//! next read, or say that the connection is done.

use std::{io, time::Instant};

use super::{
    buffer::{resize, ReadSize},
    registry::Registry,
    thread::ThreadCtx,
};
use crate::ingest::conn::{Connection, Feed};

/// What a connection does after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) enum AfterRead {
    /// Read again: the buffer has room for what comes next.
    ReadAgain,
    /// The connection is done (end of stream, a read error, a stream that
    /// cannot be framed, no memory for its next frame, or the shutdown
    /// deadline). `leftover` bytes of an incomplete last frame are lost.
    Done { leftover: usize },
}

/// Everything after a read completed, shared by both engines: count it,
/// decode and publish what it completed, and make room for the next read.
pub(super) async fn after_read(
    conn: &mut Connection,
    ctx: &ThreadCtx,
    registry: &Registry,
    id: u64,
    res: io::Result<usize>,
    buf: &mut Vec<u8>,
) -> AfterRead {
    let received = Instant::now();
    let read = match res {
        Ok(0) => {
            return AfterRead::Done {
                leftover: buf.len(),
            }
        }
        Ok(n) => {
            ctx.conn.stats.tcp_bytes.add(n as u64);
            registry.touch(id, received, n);
            ReadSize {
                bytes: n,
                filled: buf.len() == buf.capacity(),
            }
        }
        Err(e) => {
            read_failed(ctx, conn, &e);
            return AfterRead::Done {
                leftover: buf.len(),
            };
        }
    };
    let keep = 4 * ctx.config.read_buffer;
    loop {
        if !ctx.ingress.queue().has_room() {
            // Wait with the bytes as read, before decoding them: no
            // sequence numbers are taken yet, and no lines wait in memory
            // beside them. At the shutdown deadline the wait ends and the
            // usual path below reports what could not be queued.
            registry.set_waiting(id, true);
            tokio::select! {
                biased;
                () = ctx.ingress.queue().until_room() => {}
                () = registry.wait_give_up() => {}
            }
            registry.set_waiting(id, false);
        }
        let feed = conn.feed(buf);
        // Decoded lines are memory already; count them while they wait.
        conn.account(buf.capacity());
        if !conn.pending().is_empty() {
            // A full queue holds the connection up, not its client.
            registry.set_waiting(id, true);
            let messages = conn.pending().len();
            let queued = tokio::select! {
                biased;
                () = ctx.ingress.publish_pending(conn.pending(), received) => true,
                // Only at the shutdown deadline, with the queue still full:
                // the messages' numbers were taken, so the writer counts
                // them as skipped and the final summary as not written.
                () = registry.wait_give_up() => false,
            };
            registry.set_waiting(id, false);
            if !queued {
                ctx.conn.diag.emit(&[], 1, |held| {
                    tracing::error!(peer = %conn.peer(), messages, suppressed = held, "Shutdown deadline reached while the queue was full; these messages were not queued.");
                });
                return AfterRead::Done { leftover: 0 };
            }
        }
        conn.shrink(keep);
        match feed {
            Feed::Continue {
                consumed,
                more: true,
                ..
            } => {
                buf.drain(..consumed);
                conn.account(buf.capacity());
                // Bounded work done: let the thread's other connections
                // run before this one decodes the rest of its buffer.
                tokio::task::yield_now().await;
            }
            Feed::Continue { consumed, need, .. } => {
                buf.drain(..consumed);
                if !resize(conn, ctx, registry, id, buf, need, read).await {
                    return AfterRead::Done {
                        leftover: buf.len(),
                    };
                }
                registry.set_mid_frame(id, !buf.is_empty());
                return AfterRead::ReadAgain;
            }
            Feed::Close => return AfterRead::Done { leftover: 0 },
        }
    }
}

/// A read failed: the connection ends. A reset is the client's way to
/// leave and not worth a warning.
pub(super) fn read_failed(ctx: &ThreadCtx, conn: &Connection, e: &io::Error) {
    if e.kind() == io::ErrorKind::ConnectionReset {
        tracing::debug!(peer = %conn.peer(), "The client reset the connection.");
    } else {
        ctx.conn.diag.emit(&[], 1, |held| {
            tracing::warn!(peer = %conn.peer(), error = %e, suppressed = held, "Reading from a connection failed; closing it.");
        });
    }
}
