//! Accepting TCP connections and handing them out: admission
//! (`--max_connections`, the descriptor reserve), keepalive, the dispatch
//! to the thread with the fewest open connections, the backoff after a
//! failed accept, and the backlog taken at shutdown. Runs on the acceptor
//! thread (thread 0), before a connection reaches its engine.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::mpsc;

use super::thread::{Handoff, ThreadCtx};

/// Hands each accepted connection to the thread with the fewest open ones.
/// The kernel's `SO_REUSEPORT` spreading hashes connections to threads, and
/// two connections land on the same thread half the time: measured, two
/// busy clients then ran no faster than one.
pub(super) struct Dispatcher {
    pub(super) senders: Vec<mpsc::UnboundedSender<Handoff>>,
    pub(super) loads: Arc<[AtomicUsize]>,
}

/// The load a thread found dead is given, so that the least-loaded choice
/// never picks it again (its own connections going away only lower it a
/// little).
const DEAD: usize = usize::MAX / 2;

impl Dispatcher {
    /// Hands the connection to the living thread with the fewest open
    /// connections. A thread found gone (it panicked, or its runtime could
    /// not start) is marked dead and the next one is tried; the connection
    /// comes back only when no thread is left.
    pub(super) fn dispatch(
        &self,
        mut stream: std::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<(), std::net::TcpStream> {
        loop {
            let target = (0..self.loads.len())
                .min_by_key(|&i| self.loads[i].load(Ordering::Relaxed))
                .unwrap_or(0);
            // Half of DEAD: a dead thread's last connections going away
            // lower its load a little, never that far.
            if self.loads[target].load(Ordering::Relaxed) >= DEAD / 2 {
                return Err(stream);
            }
            self.loads[target].fetch_add(1, Ordering::Relaxed);
            match self.senders[target].send((stream, peer)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError((back, _))) => {
                    self.loads[target].store(DEAD, Ordering::Relaxed);
                    tracing::error!(
                        thread = target,
                        "A TCP ingest thread is gone; new connections go to the other threads."
                    );
                    stream = back;
                }
            }
        }
    }
}

/// The acceptor's loop: accept until shutdown, then take what is left in
/// the backlog, handing everything out. Returns when no more will come.
pub(super) async fn accept_loop(listener: TcpListener, dispatcher: Dispatcher, ctx: &ThreadCtx) {
    let backlog = listener.try_clone();
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Cannot register the listener; TCP is not served.");
            return;
        }
    };
    let handoff = |stream: std::net::TcpStream, peer: SocketAddr| {
        if fds_left(ctx, &stream, peer) && admit(ctx, peer) {
            set_keepalive(&stream, peer);
            if let Err(stream) = dispatcher.dispatch(stream, peer) {
                // Counted by `admit` but served by nobody: give the slot back.
                unadmit(ctx);
                drop(stream);
                tracing::error!(%peer, "No TCP ingest thread is left; closing the connection.");
            }
        }
    };
    let mut stop = ctx.stop.clone();
    // Accepts failed in a row, for the backoff.
    let mut failures = 0u32;
    loop {
        // tokio's accept is cancel-safe: stopping loses no connection.
        tokio::select! {
            _ = stop.wait_for(Option::is_some) => break,
            accepted = listener.accept() => match accepted.and_then(|(s, peer)| Ok((s.into_std()?, peer))) {
                Ok((stream, peer)) => {
                    failures = 0;
                    handoff(stream, peer);
                }
                Err(e) => {
                    accept_failed(ctx, e, failures).await;
                    failures = failures.saturating_add(1);
                }
            },
        }
    }
    match backlog {
        Ok(backlog) => accept_backlog(&backlog, handoff),
        Err(e) => tracing::warn!(error = %e, "Cannot accept the backlog at shutdown."),
    }
}

/// Whether a new connection may be served; counts it if so.
pub(super) fn admit(ctx: &ThreadCtx, peer: SocketAddr) -> bool {
    let max = ctx.config.max_connections;
    let stats = &ctx.conn.stats;
    if ctx.open.fetch_add(1, Ordering::AcqRel) >= max {
        ctx.open.fetch_sub(1, Ordering::AcqRel);
        ctx.conn.diag.emit(&[&stats.connections_refused], 1, |held| {
            tracing::warn!(%peer, max_connections = max, suppressed = held, "Refusing a connection: the server is at --max_connections.");
        });
        return false;
    }
    stats.connections_accepted.add(1);
    stats.connections_open.add(1);
    tracing::debug!(%peer, "Connection opened.");
    true
}

/// Accepts every connection still waiting in the listener's backlog at
/// shutdown: their clients connected and may have sent data before the
/// signal, so they are served (and drained) like the others.
pub(super) fn accept_backlog(
    listener: &TcpListener,
    mut serve: impl FnMut(std::net::TcpStream, SocketAddr),
) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => serve(stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "Accepting the connections left in the backlog at shutdown failed.");
                return;
            }
        }
    }
}

/// Undoes [`admit`] when a connection ends.
pub(super) fn release(ctx: &ThreadCtx) {
    ctx.loads[ctx.index].fetch_sub(1, Ordering::Relaxed);
    unadmit(ctx);
}

/// Undoes the counts of [`admit`].
fn unadmit(ctx: &ThreadCtx) {
    ctx.open.fetch_sub(1, Ordering::AcqRel);
    ctx.conn.stats.connections_open.sub(1);
}

/// An accept failed: say so (rate limited) and pause. Out of file
/// descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) the pause doubles
/// with every failure in a row, from 10 ms up to 1 s: the listener stays
/// readable while the backlog waits, so retrying at once would spin, and
/// nothing frees descriptors faster for being asked often. A connection
/// that failed on its own (reset before it was accepted) is no reason to
/// wait.
pub(super) async fn accept_failed(ctx: &ThreadCtx, e: io::Error, failures_before: u32) {
    let pause = accept_backoff(&e, failures_before);
    ctx.conn.diag.emit(&[], 1, |held| {
        tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, suppressed = held, "Accepting a connection failed; retrying after a pause.");
    });
    tokio::time::sleep(pause).await;
}

/// The pause after a failed accept, given how many failed just before.
pub(super) fn accept_backoff(e: &io::Error, failures_before: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            FIRST.saturating_mul(1 << failures_before.min(7)).min(MAX)
        }
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => Duration::ZERO,
        _ => FIRST,
    }
}

/// Default [`TcpConfig::fd_reserve`](super::TcpConfig::fd_reserve): descriptors kept free for the writer
/// (the next `_main.log`, a rotated file waiting for its fsync, the log
/// directory) and for gRPC and the process itself.
pub const DEFAULT_FD_RESERVE: u64 = 64;

/// Whether a just-accepted connection leaves enough descriptors below the
/// open-files limit; closes it (with a rate-limited warning) if not.
///
/// The kernel hands out the lowest free descriptor, so an accepted socket
/// numbered `n` means descriptors 0..n are all in use: its number tells how
/// full the table is without counting. The limit is read each time, since
/// it can be raised while the server runs.
pub(super) fn fds_left(ctx: &ThreadCtx, stream: &std::net::TcpStream, peer: SocketAddr) -> bool {
    use std::os::fd::AsRawFd;
    let fd = u64::try_from(stream.as_raw_fd()).unwrap_or(0);
    let limit = open_files_limit();
    if fd.saturating_add(ctx.config.fd_reserve) < limit {
        return true;
    }
    let stats = &ctx.conn.stats;
    let counters = [&stats.connections_refused, &stats.connections_refused_fds];
    ctx.conn.diag.emit(&counters, 1, |held| {
        tracing::warn!(
            %peer,
            open_files_limit = limit,
            reserve = ctx.config.fd_reserve,
            suppressed = held,
            "Refusing a connection: the server is near its open-files limit, and the last descriptors are kept for the log files."
        );
    });
    false
}

/// The soft `RLIMIT_NOFILE`; unlimited if it cannot be read.
pub(super) fn open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct passed, a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        u64::MAX
    }
}

/// TCP keepalive on an accepted connection: a client host that vanished
/// (power off, cable pulled, NAT state dropped) never sends a FIN, and
/// without probes its connection, slot and buffers would stay forever.
/// First probe after 60 s of silence, then every 10 s, dead after 5 unanswered.
pub(super) fn set_keepalive(stream: &std::net::TcpStream, peer: SocketAddr) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(5);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%peer, error = %e, "Cannot turn on TCP keepalive for a connection.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> (std::net::TcpStream, SocketAddr, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = stream.local_addr().unwrap();
        (stream, peer, listener)
    }

    /// A dead ingest thread (its receiver gone) is never chosen again: the
    /// connection handed to it goes to a live thread instead of being
    /// closed, and so do all later ones, though the dead thread's load
    /// would otherwise make it the least loaded forever.
    #[test]
    fn a_dead_thread_is_skipped_and_its_connections_go_to_the_living() {
        let (tx0, rx0) = mpsc::unbounded_channel();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        drop(rx0);
        let dispatcher = Dispatcher {
            senders: vec![tx0, tx1],
            loads: (0..2).map(|_| AtomicUsize::new(0)).collect(),
        };
        let mut keep = Vec::new();
        for _ in 0..3 {
            let (stream, peer, listener) = connection();
            keep.push(listener);
            let _ = dispatcher.dispatch(stream, peer);
        }
        for i in 0..3 {
            assert!(
                rx1.try_recv().is_ok(),
                "connection {i} was not handed to the living thread"
            );
        }
        assert_eq!(dispatcher.loads[1].load(Ordering::Relaxed), 3);

        // With no thread left, the connection comes back to the caller,
        // which gives back its slot and closes it.
        drop(rx1);
        let (stream, peer, _listener) = connection();
        assert!(dispatcher.dispatch(stream, peer).is_err());
    }
}
