//! TCP ingest: listeners, ingest threads, connection limits, idle timeout
//! and graceful shutdown, for both I/O engines.
//!
//! The front door of the TCP path: sockets -> [`Connection`] (framing and
//! decoding) -> [`Ingress`] (sequence, format, queue). `--tcp_threads`
//! threads each run their own single-threaded runtime; the first also
//! accepts, and hands each connection to the thread with the fewest open
//! ones, so ingest scales with cores. The engine is
//! io_uring (tokio-uring, `uring.rs`) or plain epoll (tokio, `epoll.rs`);
//! everything but the read and accept calls is shared here.
//!
//! Shutdown never cancels a read that may hold accepted data: it stops the
//! accept loops, then `shutdown(SHUT_RD)`s every connection, so each read
//! returns what the kernel had buffered and then end-of-stream. Only a
//! client still sending after the drain timeout is cut off. The whole
//! shutdown has one deadline, from the signal: a connection still waiting
//! for room in a full queue then (a stuck file system) gives up, and the
//! messages it had not queued are counted as not written.

mod epoll;
mod uring;

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    io,
    net::{SocketAddr, TcpListener},
    os::fd::RawFd,
    rc::Rc,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::sync::{mpsc, watch, Notify};

use super::{
    batch::Ingress,
    conn::{ConnShared, Connection, Feed},
};
use crate::metrics::IngestStats;

/// Which I/O engine the TCP ingest threads use (`--io_engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IoEngine {
    /// io_uring if this kernel and sandbox allow it, else epoll (with a
    /// warning).
    #[default]
    Auto,
    /// io_uring through tokio-uring; fail to start if unavailable.
    Uring,
    /// Plain tokio (epoll).
    Epoll,
}

impl std::fmt::Display for IoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoEngine::Auto => "auto",
            IoEngine::Uring => "io_uring",
            IoEngine::Epoll => "epoll",
        })
    }
}

/// Settings of the TCP ingest.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub addr: SocketAddr,
    pub threads: usize,
    pub engine: IoEngine,
    /// Connections open at once, over all threads.
    pub max_connections: usize,
    /// Close connections silent for this long.
    pub idle_timeout: Option<Duration>,
    /// Close connections silent for this long in the middle of a frame
    /// (slowloris), and connections that waited this long for memory.
    pub frame_timeout: Option<Duration>,
    /// File descriptors kept free below the open-files limit: a connection
    /// that would take one of them is refused, so the writer can always
    /// open the next log file.
    pub fd_reserve: u64,
    /// At shutdown, how long connections may take to hand over what the
    /// kernel buffered for them.
    pub drain_timeout: Duration,
    /// Read buffer of a busy connection, bytes. A connection starts with at
    /// most [`BASE_READ_BUFFER`], doubles up to this while its reads fill
    /// the buffer, grows beyond it only for a frame larger than it, and
    /// returns to the base after such a frame.
    pub read_buffer: usize,
}

/// Why TCP ingest could not start.
#[derive(Debug, Error)]
pub enum TcpError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// `--io_engine uring` was asked for and io_uring is not available.
    #[error("io_uring is not available here ({0}); use --io_engine epoll or auto")]
    UringUnavailable(#[source] io::Error),
    /// An ingest thread could not be started.
    #[error("cannot start a TCP ingest thread: {0}")]
    Spawn(#[source] io::Error),
}

/// The running TCP ingest.
#[derive(Debug)]
pub struct TcpIngest {
    local_addr: SocketAddr,
    engine: IoEngine,
    /// `Some(deadline)` once shutdown has begun.
    stop: watch::Sender<Option<Instant>>,
    threads: Vec<JoinHandle<()>>,
}

impl TcpIngest {
    /// The address the listeners are bound to (the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine in use: [`IoEngine::Uring`] or [`IoEngine::Epoll`].
    pub fn engine(&self) -> IoEngine {
        self.engine
    }

    /// Stops accepting, lets every connection hand over what the kernel has
    /// buffered for it (bounded by the drain timeout), and waits until all
    /// of it is in the queue. Returns when every ingest thread has ended.
    pub fn shutdown(self) {
        self.shutdown_by(Instant::now() + NO_DEADLINE);
    }

    /// [`TcpIngest::shutdown`] with a deadline: connections still waiting
    /// for room in the queue at `deadline` give up, so this returns soon
    /// after it even when the writer is stuck.
    pub fn shutdown_by(mut self, deadline: Instant) {
        self.stop.send_if_modified(|stop| {
            stop.get_or_insert(deadline);
            true
        });
        self.stop_and_join();
    }

    /// An ingest thread has ended. Before a shutdown that means it died.
    pub fn any_thread_finished(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    fn stop_and_join(&mut self) {
        self.stop.send_if_modified(|stop| {
            // Dropped without a shutdown: drain as `shutdown` does.
            stop.get_or_insert_with(|| Instant::now() + NO_DEADLINE);
            true
        });
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("A TCP ingest thread panicked.");
            }
        }
    }
}

impl Drop for TcpIngest {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The deadline of a shutdown that has none: pushes wait for room as long
/// as it takes (a year stands for forever without overflowing `Instant`).
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Whether io_uring can be used here: sets up (and drops) a small ring.
pub fn uring_available() -> Result<(), io::Error> {
    tokio_uring::Runtime::new(&tokio_uring::builder()).map(drop)
}

/// Binds the listeners and starts the ingest threads.
pub fn start(
    config: TcpConfig,
    ingress: Arc<Ingress>,
    conn: Arc<ConnShared>,
) -> Result<TcpIngest, TcpError> {
    let engine = match config.engine {
        IoEngine::Epoll => IoEngine::Epoll,
        IoEngine::Uring => {
            uring_available().map_err(TcpError::UringUnavailable)?;
            IoEngine::Uring
        }
        IoEngine::Auto => match uring_available() {
            Ok(()) => IoEngine::Uring,
            Err(e) => {
                tracing::warn!(error = %e, "io_uring is not available (kernel, sysctl or seccomp); using epoll.");
                IoEngine::Epoll
            }
        },
    };
    let threads = config.threads.max(1);
    // Bound here, so that a port in use is a startup error.
    let listener = bind(config.addr).map_err(|source| TcpError::Bind {
        addr: config.addr,
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| TcpError::Bind {
        addr: config.addr,
        source,
    })?;

    let (stop, stop_rx) = watch::channel(None);
    let open = Arc::new(AtomicUsize::new(0));
    let loads: Arc<[AtomicUsize]> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
    let mut dispatcher = Some(Dispatcher {
        senders,
        loads: loads.clone(),
    });
    let mut listener = Some(listener);
    let mut handles = Vec::with_capacity(threads);
    for (i, rx) in receivers.into_iter().enumerate() {
        let ctx = ThreadCtx {
            index: i,
            ingress: ingress.clone(),
            conn: conn.clone(),
            open: open.clone(),
            loads: loads.clone(),
            stop: stop_rx.clone(),
            config: config.clone(),
        };
        // Thread 0 accepts and hands each connection to the least loaded
        // thread (itself included); the others serve what they are handed.
        let role = match (listener.take(), dispatcher.take()) {
            (Some(listener), Some(dispatcher)) => Role::Acceptor {
                listener,
                dispatcher,
                own: rx,
            },
            _ => Role::Worker(rx),
        };
        let handle = thread::Builder::new()
            .name(format!("tcp-ingest-{i}"))
            .spawn(move || match engine {
                IoEngine::Uring => uring::run_thread(role, ctx),
                _ => epoll::run_thread(role, ctx),
            })
            .map_err(TcpError::Spawn)?;
        handles.push(handle);
    }
    Ok(TcpIngest {
        local_addr,
        engine,
        stop,
        threads: handles,
    })
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A connection handed from the accepting thread to an ingest thread.
type Handoff = (std::net::TcpStream, SocketAddr);

/// What an ingest thread does besides serving its connections.
enum Role {
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

/// Hands each accepted connection to the thread with the fewest open ones.
/// The kernel's `SO_REUSEPORT` spreading hashes connections to threads, and
/// two connections land on the same thread half the time: measured, two
/// busy clients then ran no faster than one.
struct Dispatcher {
    senders: Vec<mpsc::UnboundedSender<Handoff>>,
    loads: Arc<[AtomicUsize]>,
}

impl Dispatcher {
    fn dispatch(&self, stream: std::net::TcpStream, peer: SocketAddr) {
        let target = (0..self.loads.len())
            .min_by_key(|&i| self.loads[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.loads[target].fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError((stream, _))) = self.senders[target].send((stream, peer))
        {
            // That thread is gone (it panicked): the connection is closed.
            self.loads[target].fetch_sub(1, Ordering::Relaxed);
            drop(stream);
            tracing::error!(%peer, thread = target, "An ingest thread is gone; closing a connection handed to it.");
        }
    }
}

/// The acceptor's loop: accept until shutdown, then take what is left in
/// the backlog, handing everything out. Returns when no more will come.
async fn accept_loop(listener: TcpListener, dispatcher: Dispatcher, ctx: &ThreadCtx) {
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
            dispatcher.dispatch(stream, peer);
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

/// An ingest thread's life, for both engines: serve its role, then drain
/// its connections. `start` begins serving one connection on this thread
/// (the engine's part) after it was registered and counted.
async fn serve_thread(
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
async fn run_role(role: Role, ctx: &ThreadCtx, serve: impl Fn(std::net::TcpStream, SocketAddr)) {
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
struct ThreadCtx {
    /// This thread's place in `loads`.
    index: usize,
    ingress: Arc<Ingress>,
    conn: Arc<ConnShared>,
    /// Connections open over all threads.
    open: Arc<AtomicUsize>,
    /// Connections open per thread, for the dispatcher.
    loads: Arc<[AtomicUsize]>,
    /// `Some(deadline)` once shutdown has begun.
    stop: watch::Receiver<Option<Instant>>,
    config: TcpConfig,
}

/// The connections of one ingest thread, so that the thread can end reads
/// (idle timeout, shutdown) without cancelling them.
#[derive(Default)]
struct Registry {
    conns: RefCell<HashMap<u64, Entry>>,
    next_id: Cell<u64>,
    /// Notified when the last connection ends.
    empty: Notify,
    /// Set when the drain timeout has passed: connections stop reading.
    hard_stop: Cell<bool>,
    hard_stop_notify: Notify,
    /// Set at the shutdown deadline: connections still waiting for room in
    /// the queue stop waiting.
    give_up: Cell<bool>,
    give_up_notify: Notify,
}

struct Entry {
    fd: RawFd,
    last_read: Instant,
    /// Already shut down for reading (idle or draining).
    closing: bool,
    /// The server, not the client, is holding the connection up (waiting
    /// for room in the queue or for memory): silence then is not the
    /// client's, and neither timeout applies.
    waiting: bool,
    /// Part of a frame is buffered: silence now is `--frame_timeout`'s.
    mid_frame: bool,
}

impl Registry {
    fn add(&self, fd: RawFd) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.conns.borrow_mut().insert(
            id,
            Entry {
                fd,
                last_read: Instant::now(),
                closing: false,
                waiting: false,
                mid_frame: false,
            },
        );
        id
    }

    fn touch(&self, id: u64, at: Instant) {
        if let Some(e) = self.conns.borrow_mut().get_mut(&id) {
            e.last_read = at;
        }
    }

    /// Marks the connection as held up by the server (see [`Entry::waiting`]);
    /// when the wait ends its silence is counted from then.
    fn set_waiting(&self, id: u64, waiting: bool) {
        if let Some(e) = self.conns.borrow_mut().get_mut(&id) {
            e.waiting = waiting;
            if !waiting {
                e.last_read = Instant::now();
            }
        }
    }

    fn set_mid_frame(&self, id: u64, mid_frame: bool) {
        if let Some(e) = self.conns.borrow_mut().get_mut(&id) {
            e.mid_frame = mid_frame;
        }
    }

    /// Removed by the connection itself before its socket is closed, so the
    /// fd is never used after close.
    fn remove(&self, id: u64) {
        let mut conns = self.conns.borrow_mut();
        conns.remove(&id);
        if conns.is_empty() {
            self.empty.notify_waiters();
        }
    }

    fn is_empty(&self) -> bool {
        self.conns.borrow().is_empty()
    }

    /// Ends reading on the connections that match: their pending read
    /// returns the buffered bytes, then end-of-stream. Returns how many.
    fn shut_reads(&self, mut which: impl FnMut(&Entry) -> bool) -> usize {
        let mut n = 0;
        for e in self.conns.borrow_mut().values_mut() {
            if !e.closing && which(e) {
                e.closing = true;
                // SAFETY: `shutdown(2)` takes no pointers, and the fd is open:
                // a connection removes its entry before its socket closes.
                unsafe { libc::shutdown(e.fd, libc::SHUT_RD) };
                n += 1;
            }
        }
        n
    }

    async fn wait_empty(&self) {
        while !self.is_empty() {
            let notified = self.empty.notified();
            if self.is_empty() {
                break;
            }
            notified.await;
        }
    }

    async fn wait_hard_stop(&self) {
        while !self.hard_stop.get() {
            self.hard_stop_notify.notified().await;
        }
    }

    async fn wait_give_up(&self) {
        while !self.give_up.get() {
            self.give_up_notify.notified().await;
        }
    }
}

/// A connection's place on its thread: its registry entry and its share of
/// the connection counts. The connection's task holds it, so whatever ends
/// the task (a panic included) frees the slot, and the entry is removed
/// before the socket is closed (the task's locals drop before its
/// arguments, the stream among them).
struct Slot {
    ctx: Rc<ThreadCtx>,
    registry: Rc<Registry>,
    id: u64,
}

impl Slot {
    fn new(ctx: &Rc<ThreadCtx>, registry: &Rc<Registry>, id: u64) -> Self {
        Slot {
            ctx: ctx.clone(),
            registry: registry.clone(),
            id,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if thread::panicking() {
            tracing::error!(
                "A connection's task panicked (a bug); the connection is closed and its slot freed."
            );
        }
        self.registry.remove(self.id);
        release(&self.ctx);
    }
}

/// Whether a new connection may be served; counts it if so.
fn admit(ctx: &ThreadCtx, peer: SocketAddr) -> bool {
    let max = ctx.config.max_connections;
    let stats = &ctx.conn.stats;
    if ctx.open.fetch_add(1, Ordering::AcqRel) >= max {
        ctx.open.fetch_sub(1, Ordering::AcqRel);
        IngestStats::add(&stats.connections_refused, 1);
        if let Some(held) = ctx.conn.diag.check() {
            tracing::warn!(%peer, max_connections = max, suppressed = held, "Refusing a connection: the server is at --max_connections.");
        }
        return false;
    }
    IngestStats::add(&stats.connections_accepted, 1);
    IngestStats::add(&stats.connections_open, 1);
    tracing::debug!(%peer, "Connection opened.");
    true
}

/// Accepts every connection still waiting in the listener's backlog at
/// shutdown: their clients connected and may have sent data before the
/// signal, so they are served (and drained) like the others.
fn accept_backlog(listener: &TcpListener, mut serve: impl FnMut(std::net::TcpStream, SocketAddr)) {
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
fn release(ctx: &ThreadCtx) {
    ctx.open.fetch_sub(1, Ordering::AcqRel);
    ctx.loads[ctx.index].fetch_sub(1, Ordering::Relaxed);
    ctx.conn
        .stats
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

/// How long a connection must have been silent, once shutdown has begun,
/// before its reads are ended: long enough for what a client had finished
/// writing to cross over from its send buffer.
const DRAIN_QUIET: Duration = Duration::from_millis(50);

/// Bytes the kernel holds for `fd` that no read has taken yet (`FIONREAD`);
/// 0 if it cannot tell.
fn unread_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to
    // a live local; the fd is open (see `Registry::remove`).
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// The thread's housekeeping after its accept loop ended: each connection
/// reads on until it has been quiet for [`DRAIN_QUIET`] with nothing left
/// unread in the kernel (a busy thread is not a quiet client), then its reads are
/// ended (it gets the rest of its kernel buffer, then end-of-stream). At the
/// drain timeout, connections still sending are stopped.
async fn drain(registry: &Registry, ctx: &ThreadCtx) {
    let give_up_at = ctx.stop.borrow().unwrap_or_else(Instant::now);
    let deadline = (Instant::now() + ctx.config.drain_timeout).min(give_up_at);
    if !registry.is_empty() {
        tracing::debug!(
            connections = registry.conns.borrow().len(),
            "Draining connections."
        );
    }
    loop {
        let now = Instant::now();
        registry.shut_reads(|e| {
            now.duration_since(e.last_read) >= DRAIN_QUIET && unread_bytes(e.fd) == 0
        });
        if registry.is_empty() {
            return;
        }
        if now >= deadline {
            break;
        }
        let _ = tokio::time::timeout(DRAIN_QUIET / 5, registry.wait_empty()).await;
    }
    tracing::warn!(
        connections = registry.conns.borrow().len(),
        "Connections still sending after the drain timeout are closed; what they send from now on is not read."
    );
    registry.hard_stop.set(true);
    registry.hard_stop_notify.notify_waiters();
    let waited = tokio::time::timeout_at(give_up_at.into(), registry.wait_empty()).await;
    if waited.is_err() {
        tracing::error!(
            connections = registry.conns.borrow().len(),
            "Shutdown deadline reached with connections still waiting for room in the queue; what they had not queued is not written."
        );
        registry.give_up.set(true);
        registry.give_up_notify.notify_waiters();
        registry.wait_empty().await;
    }
}

/// Closes connections silent for longer than the idle timeout, and
/// connections silent in the middle of a frame for longer than the frame
/// timeout, checking a few times per timeout. A connection the server
/// itself holds up (full queue, spent memory budget) is neither.
async fn sweeper(
    registry: Rc<Registry>,
    stats: Arc<IngestStats>,
    idle: Option<Duration>,
    frame: Option<Duration>,
) {
    let shortest = idle.into_iter().chain(frame).min().unwrap_or(Duration::MAX);
    let mut tick = tokio::time::interval((shortest / 4).max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let silent_for = |e: &Entry, t: Option<Duration>| {
            !e.waiting && t.is_some_and(|t| now.duration_since(e.last_read) >= t)
        };
        let n = registry.shut_reads(|e| e.mid_frame && silent_for(e, frame));
        if n > 0 {
            IngestStats::add(&stats.connections_frame_timeout, n as u64);
            tracing::info!(
                connections = n,
                "Closing connections silent in the middle of a frame (--frame_timeout); their incomplete frames are dropped."
            );
        }
        let n = registry.shut_reads(|e| silent_for(e, idle));
        if n > 0 {
            IngestStats::add(&stats.connections_idle_closed, n as u64);
            tracing::debug!(
                connections = n,
                "Closing idle connections (--idle_timeout)."
            );
        }
    }
}

/// The read buffer a connection starts with and returns to after a large
/// frame (or `read_buffer` if that is smaller). Small, so that many mostly
/// idle connections cost little of `--ingest_memory`; busy ones double up
/// to `read_buffer`.
pub const BASE_READ_BUFFER: usize = 16 * 1024;

/// Gives a new connection its read buffer, once the memory budget allows
/// it. `None` if it never did (the connection is then closed).
async fn open_buffer(
    conn: &mut Connection,
    ctx: &ThreadCtx,
    registry: &Registry,
    id: u64,
) -> Option<Vec<u8>> {
    let base = base_buffer(&ctx.config);
    if !wait_for_memory(conn, ctx, registry, id, base).await {
        return None;
    }
    let buf = Vec::with_capacity(base);
    conn.account(buf.capacity());
    Some(buf)
}

fn base_buffer(config: &TcpConfig) -> usize {
    config
        .read_buffer
        .clamp(2 * log_server_wire::frame::PREFIX_LEN, BASE_READ_BUFFER)
}

/// Gets `capacity` bytes of read buffer from the budget for this
/// connection, waiting (not reading: TCP flow control holds the client
/// back) for at most `--frame_timeout` or until the drain timeout. False,
/// said once (rate limited), if the budget stayed spent.
async fn wait_for_memory(
    conn: &mut Connection,
    ctx: &ThreadCtx,
    registry: &Registry,
    id: u64,
    capacity: usize,
) -> bool {
    if conn.try_reserve(capacity) {
        return true;
    }
    registry.set_waiting(id, true);
    let got = tokio::select! {
        got = conn.reserve(capacity, ctx.config.frame_timeout) => got,
        () = registry.wait_hard_stop() => false,
    };
    registry.set_waiting(id, false);
    if !got && !registry.hard_stop.get() {
        let stats = &ctx.conn.stats;
        IngestStats::add(&stats.connections_memory_closed, 1);
        if let Some(held) = ctx.conn.diag.check() {
            tracing::warn!(
                peer = %conn.peer(),
                bytes = capacity,
                ingest_memory = ctx.conn.budget.limit(),
                suppressed = held,
                "Closing a connection that waited --frame_timeout for memory for its frame: --ingest_memory is spent."
            );
        }
    }
    got
}

/// Everything after a read completed, shared by both engines: count it,
/// decode and publish what it completed, and make room for the next read.
/// `Err(leftover)` when the connection is done (end of stream, error, a
/// stream that cannot be framed, or no memory for its next frame),
/// `leftover` being the bytes of an incomplete last frame.
async fn after_read(
    conn: &mut Connection,
    ctx: &ThreadCtx,
    registry: &Registry,
    id: u64,
    res: io::Result<usize>,
    buf: &mut Vec<u8>,
) -> Result<(), usize> {
    let received = Instant::now();
    // The read filled the buffer: the client has more to send than fits.
    let filled = buf.len() == buf.capacity();
    match res {
        Ok(0) => return Err(buf.len()),
        Ok(n) => {
            IngestStats::add(&ctx.conn.stats.tcp_bytes, n as u64);
            registry.touch(id, received);
        }
        Err(e) => {
            read_failed(ctx, conn, &e);
            return Err(buf.len());
        }
    }
    let keep = 4 * ctx.config.read_buffer;
    loop {
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
                if let Some(held) = ctx.conn.diag.check() {
                    tracing::error!(peer = %conn.peer(), messages, suppressed = held, "Shutdown deadline reached while the queue was full; these messages were not queued.");
                }
                return Err(0);
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
                resize(conn, ctx, registry, id, buf, need, filled).await?;
                registry.set_mid_frame(id, !buf.is_empty());
                return Ok(());
            }
            Feed::Close => return Err(0),
        }
    }
}

/// What a connection's read buffer should hold next: the frame it is in the
/// middle of, if that is larger than the buffer (it must have that); twice
/// the buffer, up to `busy`, after a read that filled it (welcome, not
/// needed); back to `base` after a large frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resize {
    /// Grow to this capacity; the frame cannot be read otherwise.
    Need(usize),
    /// Grow to this capacity if the budget allows.
    Want(usize),
    /// Give memory back down to this capacity.
    Shrink(usize),
    Keep,
}

fn next_size(
    capacity: usize,
    len: usize,
    need: Option<usize>,
    filled: bool,
    base: usize,
    busy: usize,
) -> Resize {
    let need = need.unwrap_or(0);
    if need > capacity {
        return Resize::Need(need);
    }
    if capacity > busy {
        // Larger than any busy connection's buffer: what is left of a large
        // frame. Down to what is buffered (or still needed) but at least
        // the base.
        let to = need.max(len).max(base);
        if to < capacity {
            return Resize::Shrink(to);
        }
        return Resize::Keep;
    }
    if filled && capacity < busy {
        return Resize::Want((capacity * 2).min(busy));
    }
    if len == capacity {
        // A full buffer with no complete frame and no known length cannot
        // happen (a prefix is 4 bytes); grow anyway rather than spin.
        return Resize::Need(capacity + base);
    }
    Resize::Keep
}

/// Applies [`next_size`] to the buffer, charging the budget.
async fn resize(
    conn: &mut Connection,
    ctx: &ThreadCtx,
    registry: &Registry,
    id: u64,
    buf: &mut Vec<u8>,
    need: Option<usize>,
    filled: bool,
) -> Result<(), usize> {
    let base = base_buffer(&ctx.config);
    let busy = ctx.config.read_buffer.max(base);
    match next_size(buf.capacity(), buf.len(), need, filled, base, busy) {
        Resize::Need(to) => {
            if !wait_for_memory(conn, ctx, registry, id, to).await {
                return Err(buf.len());
            }
            buf.reserve_exact(to - buf.len());
        }
        Resize::Want(to) => {
            if conn.try_reserve(to) {
                buf.reserve_exact(to - buf.len());
            }
        }
        Resize::Shrink(to) => buf.shrink_to(to),
        Resize::Keep => {}
    }
    conn.account(buf.capacity());
    Ok(())
}

/// An accept failed: say so (rate limited) and pause. Out of file
/// descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) the pause doubles
/// with every failure in a row, from 10 ms up to 1 s: the listener stays
/// readable while the backlog waits, so retrying at once would spin, and
/// nothing frees descriptors faster for being asked often. A connection
/// that failed on its own (reset before it was accepted) is no reason to
/// wait.
async fn accept_failed(ctx: &ThreadCtx, e: io::Error, failures_before: u32) {
    let pause = accept_backoff(&e, failures_before);
    if let Some(held) = ctx.conn.diag.check() {
        tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, suppressed = held, "Accepting a connection failed; retrying after a pause.");
    }
    tokio::time::sleep(pause).await;
}

/// The pause after a failed accept, given how many failed just before.
fn accept_backoff(e: &io::Error, failures_before: u32) -> Duration {
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

/// Default [`TcpConfig::fd_reserve`]: descriptors kept free for the writer
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
fn fds_left(ctx: &ThreadCtx, stream: &std::net::TcpStream, peer: SocketAddr) -> bool {
    use std::os::fd::AsRawFd;
    let fd = u64::try_from(stream.as_raw_fd()).unwrap_or(0);
    let limit = open_files_limit();
    if fd.saturating_add(ctx.config.fd_reserve) < limit {
        return true;
    }
    IngestStats::add(&ctx.conn.stats.connections_refused, 1);
    IngestStats::add(&ctx.conn.stats.connections_refused_fds, 1);
    if let Some(held) = ctx.conn.diag.check() {
        tracing::warn!(
            %peer,
            open_files_limit = limit,
            reserve = ctx.config.fd_reserve,
            suppressed = held,
            "Refusing a connection: the server is near its open-files limit, and the last descriptors are kept for the log files."
        );
    }
    false
}

/// The soft `RLIMIT_NOFILE`; unlimited if it cannot be read.
fn open_files_limit() -> u64 {
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
fn set_keepalive(stream: &std::net::TcpStream, peer: SocketAddr) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(5);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%peer, error = %e, "Cannot turn on TCP keepalive for a connection.");
    }
}

/// A read failed: the connection ends. A reset is the client's way to
/// leave and not worth a warning.
fn read_failed(ctx: &ThreadCtx, conn: &Connection, e: &io::Error) {
    if e.kind() == io::ErrorKind::ConnectionReset {
        tracing::debug!(peer = %conn.peer(), "The client reset the connection.");
    } else if let Some(held) = ctx.conn.diag.check() {
        tracing::warn!(peer = %conn.peer(), error = %e, suppressed = held, "Reading from a connection failed; closing it.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        format::{LineFormat, LineFormatter},
        metrics::RateLimiter,
        queue::RecordQueue,
    };

    fn thread_ctx() -> ThreadCtx {
        let formatter = LineFormatter::new(LineFormat::Text, 1 << 20);
        let (_, stop) = watch::channel(None);
        let stats = Arc::new(IngestStats::default());
        ThreadCtx {
            index: 0,
            ingress: Arc::new(Ingress::new(
                Arc::new(RecordQueue::new(4, 1 << 20)),
                formatter,
                0,
            )),
            conn: Arc::new(ConnShared {
                stats: stats.clone(),
                budget: Arc::new(crate::ingest::budget::MemoryBudget::new(usize::MAX, stats)),
                diag: RateLimiter::new(20),
                max_frame_size: 1 << 16,
                formatter,
            }),
            open: Arc::new(AtomicUsize::new(0)),
            loads: (0..1).map(|_| AtomicUsize::new(0)).collect(),
            stop,
            config: TcpConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                threads: 1,
                engine: IoEngine::Epoll,
                max_connections: 8,
                idle_timeout: None,
                drain_timeout: Duration::from_secs(1),
                read_buffer: 4096,
                frame_timeout: None,
                fd_reserve: DEFAULT_FD_RESERVE,
            },
        }
    }

    /// A connection task that panics (a bug) still gives back its slot:
    /// the connection counts go down and its registry entry is removed, so
    /// `--max_connections` does not leak, the drain at shutdown does not
    /// wait for it forever, and no stale fd is left to be shut down later.
    #[test]
    fn a_connection_task_that_panics_frees_its_slot() {
        let ctx = Rc::new(thread_ctx());
        let registry = Rc::new(Registry::default());
        // As the acceptor and the engine do for a new connection.
        assert!(admit(&ctx, "127.0.0.1:1".parse().unwrap()));
        ctx.loads[0].fetch_add(1, Ordering::Relaxed);
        let id = registry.add(-1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let task = local.spawn_local({
            let (ctx, registry) = (ctx.clone(), registry.clone());
            async move {
                let _slot = Slot::new(&ctx, &registry, id);
                tokio::task::yield_now().await;
                panic!("injected panic in a connection task");
            }
        });
        let outcome = local.block_on(&rt, task);
        assert!(outcome.is_err_and(|e| e.is_panic()));
        assert!(registry.is_empty(), "the registry entry is left behind");
        assert_eq!(ctx.open.load(Ordering::Relaxed), 0);
        assert_eq!(ctx.loads[0].load(Ordering::Relaxed), 0);
        assert_eq!(IngestStats::get(&ctx.conn.stats.connections_open), 0);
    }
}
