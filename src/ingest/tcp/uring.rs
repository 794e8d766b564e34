//! The io_uring engine (tokio-uring): every io_uring specific of the TCP
//! ingest lives here, so the engine can be swapped.
//!
//! Accepting is shared with the epoll engine (tokio, cancel-safe); reads,
//! the hot path, are io_uring. Reads use owned buffers: the buffer goes into the read and comes back
//! with its result. To append after a partial frame, the read goes into
//! `buf.slice(filled..)` and the Vec is taken back with `into_inner()`.

use std::{net::SocketAddr, os::fd::AsRawFd, rc::Rc};

use tokio_uring::{buf::BoundedBuf, net::TcpStream};

use super::{
    buffer::open_buffer,
    read::{after_read, AfterRead},
    registry::{Registry, Slot},
    thread::{serve_thread, Role, ThreadCtx},
};
use crate::ingest::conn::Connection;

pub(super) fn run_thread(role: Role, ctx: ThreadCtx) {
    match tokio_uring::Runtime::new(&tokio_uring::builder()) {
        Ok(rt) => rt.block_on(serve_thread(role, ctx, |ctx, registry, stream, peer| {
            let stream = TcpStream::from_std(stream);
            let id = registry.add(stream.as_raw_fd());
            tokio_uring::spawn(connection(stream, peer, id, ctx.clone(), registry.clone()));
        })),
        Err(e) => {
            tracing::error!(error = %e, "Cannot start an io_uring runtime; this ingest thread is not serving.")
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    ctx: Rc<ThreadCtx>,
    registry: Rc<Registry>,
) {
    let _slot = Slot::new(&ctx, &registry, id);
    let mut conn = Connection::new(peer, ctx.conn.clone());
    let Some(mut buf) = open_buffer(&mut conn, &ctx, &registry, id).await else {
        conn.finish(0);
        return;
    };
    let leftover = loop {
        if registry.is_stopped(id) {
            break buf.len();
        }
        let filled = buf.len();
        let (res, slice) = tokio::select! {
            r = stream.read(buf.slice(filled..)) => r,
            // The read is cancelled only after the drain timeout, when the
            // client is still sending past what it had sent before shutdown
            // began, or at the shutdown deadline.
            _ = registry.wait_stopped(id) => break filled,
        };
        buf = slice.into_inner();
        if let AfterRead::Done { leftover } =
            after_read(&mut conn, &ctx, &registry, id, res, &mut buf).await
        {
            break leftover;
        }
    };
    conn.finish(leftover);
}
