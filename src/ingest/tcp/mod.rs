//! TCP ingest: listeners, ingest threads, connection limits, idle timeout
//! and graceful shutdown, for both I/O engines.
//!
//! The front door of the TCP path: sockets ->
//! [`Connection`](crate::ingest::conn::Connection) (framing and decoding)
//! -> [`Ingress`] (sequence, format, queue). `--tcp_threads` threads each
//! run their own single-threaded runtime; the first also accepts, and hands
//! each connection to the thread with the fewest open ones, so ingest
//! scales with cores. The engine is io_uring (tokio-uring, `uring.rs`) or
//! plain epoll (tokio, `epoll.rs`); everything but their reads and runtimes
//! is shared by both, in the modules below.
//!
//! Shutdown never cancels a read that may hold accepted data: it stops the
//! accept loops, then `shutdown(SHUT_RD)`s every connection, so each read
//! returns what the kernel had buffered and then end-of-stream. Only a
//! client still sending after the drain timeout, past what it can have sent
//! before shutdown began, is cut off (`registry::drain`). The whole
//! shutdown has one deadline, from the signal: a connection still waiting
//! for room in a full queue then (a stuck file system) gives up, and the
//! messages it had not queued are counted as not written.
//!
//! The module by concern:
//!
//! - this file: the API ([`start`], [`TcpIngest`], [`TcpConfig`]) and
//!   startup: the engine choice, the listener, the threads;
//! - `thread`: an ingest thread's life (its role, serving, draining);
//! - `accept`: accepting, admission (`--max_connections`, the descriptor
//!   reserve) and dispatch to the least loaded thread;
//! - `registry`: each thread's connections, the idle and frame timeouts,
//!   and the drain at shutdown;
//! - `buffer`: read buffers sized against the memory budget;
//! - `read`: what happens after every read, for both engines;
//! - `uring`, `epoll`: the two engines, nothing but their reads and runtimes.

mod accept;
mod buffer;
mod epoll;
mod read;
mod registry;
mod thread;
mod uring;

use std::{
    io,
    net::{SocketAddr, TcpListener},
    sync::{atomic::AtomicUsize, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use self::{
    accept::Dispatcher,
    thread::{Role, ThreadCtx},
};
pub use self::{accept::DEFAULT_FD_RESERVE, buffer::BASE_READ_BUFFER};
use super::{conn::ConnShared, ingress::Ingress};

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
    /// the buffer (up to a share of 8 MiB while its thread serves more than
    /// 8 MiB / this connections), grows beyond it only for a frame larger
    /// than it, and returns to the base after such a frame.
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
    /// buffered for it (see `registry::drain`), and waits until all
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
pub(super) const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

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
        let handle = std::thread::Builder::new()
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
