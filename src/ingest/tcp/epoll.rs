//! The epoll engine (plain tokio), for where io_uring is unavailable (old
//! kernels, `kernel.io_uring_disabled`, container seccomp profiles). Same
//! connection logic as the io_uring engine; only accept and read differ.

use std::{net::SocketAddr, os::fd::AsRawFd, rc::Rc};

use tokio::{io::AsyncReadExt, net::TcpStream, task::LocalSet};

use super::{
    buffer::open_buffer,
    read::{after_read, AfterRead},
    registry::{Registry, Slot},
    thread::{serve_thread, Role, ThreadCtx},
};
use crate::ingest::conn::Connection;

pub(super) fn run_thread(role: Role, ctx: ThreadCtx) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start a tokio runtime; this ingest thread is not serving.");
            return;
        }
    };
    let serve = serve_thread(role, ctx, |ctx, registry, stream, peer| {
        match stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        {
            Ok(stream) => {
                let id = registry.add(stream.as_raw_fd());
                tokio::task::spawn_local(connection(
                    stream,
                    peer,
                    id,
                    ctx.clone(),
                    registry.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "Cannot register a connection with epoll; closing it.");
                super::accept::release(ctx);
            }
        }
    });
    LocalSet::new().block_on(&rt, serve);
}

async fn connection(
    mut stream: TcpStream,
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
        // tokio reads are cancel-safe: nothing read is lost if the drain
        // timeout ends this one.
        let res = tokio::select! {
            r = stream.read_buf(&mut buf) => r,
            _ = registry.wait_stopped(id) => break buf.len(),
        };
        if let AfterRead::Done { leftover } =
            after_read(&mut conn, &ctx, &registry, id, res, &mut buf).await
        {
            break leftover;
        }
    };
    conn.finish(leftover);
}
