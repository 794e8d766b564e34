//! An ingest thread's life, for both engines: its role (the acceptor, or
//! a worker served by it), serving connections, then draining them at
//! shutdown. The engine (`uring`, `epoll`) supplies only how one
//! connection is read.

use std::{
    net::{SocketAddr, TcpListener},
    rc::Rc,
    sync::{atomic::AtomicUsize, Arc},
    time::Instant,
};

use tokio::sync::{mpsc, watch};

use super::{
    accept::{accept_loop, Dispatcher},
    registry::{drain, sweeper, Registry},
    TcpConfig,
};
use crate::ingest::{conn::ConnShared, ingress::Ingress};

/// A connection handed from the accepting thread to an ingest thread.
pub(super) type Handoff = (std::net::TcpStream, SocketAddr);

/// What an ingest thread does besides serving its connections.
pub(super) enum Role {
    /// Accepts for every thread.
    Acceptor {
        listener: TcpListener,
        dispatcher: Dispatcher,
        /// Its own share, handed to itself through the same path.
        own: mpsc::UnboundedReceiver<Handoff>,
    },
    /// Serves the connections the acceptor hands it.
    Worker(mpsc::UnboundedReceiver<Handoff>),
}

/// An ingest thread's life, for both engines: serve its role, then drain
/// its connections. `start` begins serving one connection on this thread
/// (the engine's part) after it was registered and counted.
pub(super) async fn serve_thread(
    role: Role,
    ctx: ThreadCtx,
    start: impl Fn(&Rc<ThreadCtx>, &Rc<Registry>, std::net::TcpStream, SocketAddr),
) {
    let ctx = Rc::new(ctx);
    let registry = Rc::new(Registry::default());
    // tokio-uring's runtime is a tokio `LocalSet` too, so `spawn_local`
    // serves both engines.
    let (idle, frame) = (ctx.config.idle_timeout, ctx.config.frame_timeout);
    let sweeper = (idle.is_some() || frame.is_some()).then(|| {
        tokio::task::spawn_local(sweeper(
            registry.clone(),
            ctx.conn.stats.clone(),
            idle,
            frame,
        ))
    });
    run_role(role, &ctx, |stream, peer| {
        start(&ctx, &registry, stream, peer)
    })
    .await;
    drain(&registry, &ctx).await;
    if let Some(s) = sweeper {
        s.abort();
    }
}

/// Runs an ingest thread's role: the acceptor accepts (serving its own
/// share as they come), a worker serves what it is handed, until no more
/// connections will come. `serve` starts serving one connection here.
pub(super) async fn run_role(
    role: Role,
    ctx: &ThreadCtx,
    serve: impl Fn(std::net::TcpStream, SocketAddr),
) {
    let mut own = match role {
        Role::Acceptor {
            listener,
            dispatcher,
            mut own,
        } => {
            // Serve this thread's share while accepting.
            let accepting = accept_loop(listener, dispatcher, ctx);
            tokio::pin!(accepting);
            loop {
                tokio::select! {
                    () = &mut accepting => break,
                    Some((stream, peer)) = own.recv() => serve(stream, peer),
                }
            }
            own
        }
        Role::Worker(rx) => rx,
    };
    // After the acceptor is done the senders are dropped: take what is left.
    while let Some((stream, peer)) = own.recv().await {
        serve(stream, peer);
    }
}

/// What every ingest thread gets.
pub(super) struct ThreadCtx {
    /// This thread's place in `loads`.
    pub(super) index: usize,
    pub(super) ingress: Arc<Ingress>,
    pub(super) conn: Arc<ConnShared>,
    /// Connections open over all threads.
    pub(super) open: Arc<AtomicUsize>,
    /// Connections open per thread, for the dispatcher.
    pub(super) loads: Arc<[AtomicUsize]>,
    /// `Some(deadline)` once shutdown has begun.
    pub(super) stop: watch::Receiver<Option<Instant>>,
    pub(super) config: TcpConfig,
}
