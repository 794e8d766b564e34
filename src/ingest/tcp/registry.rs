//! The connections of one ingest thread: a registry that lets the thread
//! end reads (idle and frame timeouts, shutdown) without cancelling them,
//! the slot each connection holds, the sweeper of silent connections, and
//! the drain at shutdown.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    os::fd::RawFd,
    rc::Rc,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use super::{accept::release, thread::ThreadCtx};
use crate::metrics::IngestStats;

/// The connections of one ingest thread, so that the thread can end reads
/// (idle timeout, shutdown) without cancelling them.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) conns: RefCell<HashMap<u64, Entry>>,
    pub(super) next_id: Cell<u64>,
    /// Notified when the last connection ends.
    pub(super) empty: Notify,
    /// Set at the shutdown deadline: every connection stops reading.
    pub(super) hard_stop: Cell<bool>,
    pub(super) hard_stop_notify: Notify,
    /// Set at the shutdown deadline: connections still waiting for room in
    /// the queue stop waiting.
    pub(super) give_up: Cell<bool>,
    pub(super) give_up_notify: Notify,
}

pub(super) struct Entry {
    pub(super) fd: RawFd,
    pub(super) last_read: Instant,
    /// Already shut down for reading (idle or draining).
    pub(super) closing: bool,
    /// The server, not the client, is holding the connection up (waiting
    /// for room in the queue or for memory): silence then is not the
    /// client's, and neither timeout applies.
    pub(super) waiting: bool,
    /// Part of a frame is buffered: silence now is `--frame_timeout`'s.
    pub(super) mid_frame: bool,
    /// Bytes read so far.
    pub(super) read: u64,
    /// Once the drain has begun: the most `read` can reach with bytes the
    /// client had sent before it (see [`drain`]).
    pub(super) sent_before_drain: Option<u64>,
    /// Stopped by the drain: still sending past `sent_before_drain` after
    /// the drain timeout. Its reads end at once.
    pub(super) stopped: bool,
}

impl Registry {
    pub(super) fn add(&self, fd: RawFd) -> u64 {
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
                read: 0,
                sent_before_drain: None,
                stopped: false,
            },
        );
        id
    }

    /// A read of `bytes` completed at `at`.
    pub(super) fn touch(&self, id: u64, at: Instant, bytes: usize) {
        if let Some(e) = self.conns.borrow_mut().get_mut(&id) {
            e.last_read = at;
            e.read += bytes as u64;
        }
    }

    /// Marks the connection as held up by the server (see [`Entry::waiting`]);
    /// when the wait ends its silence is counted from then.
    pub(super) fn set_waiting(&self, id: u64, waiting: bool) {
        if let Some(e) = self.conns.borrow_mut().get_mut(&id) {
            e.waiting = waiting;
            if !waiting {
                e.last_read = Instant::now();
            }
        }
    }

    pub(super) fn set_mid_frame(&self, id: u64, mid_frame: bool) {
        if let Some(e) = self.conns.borrow_mut().get_mut(&id) {
            e.mid_frame = mid_frame;
        }
    }

    /// Removed by the connection itself before its socket is closed, so the
    /// fd is never used after close.
    pub(super) fn remove(&self, id: u64) {
        let mut conns = self.conns.borrow_mut();
        conns.remove(&id);
        if conns.is_empty() {
            self.empty.notify_waiters();
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.conns.borrow().is_empty()
    }

    /// Ends reading on the connections that match: their pending read
    /// returns the buffered bytes, then end-of-stream. Returns how many.
    pub(super) fn shut_reads(&self, mut which: impl FnMut(&Entry) -> bool) -> usize {
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

    pub(super) async fn wait_empty(&self) {
        while !self.is_empty() {
            let notified = self.empty.notified();
            if self.is_empty() {
                break;
            }
            notified.await;
        }
    }

    /// Whether connection `id` must stop reading now: the drain stopped it
    /// or the shutdown deadline passed.
    pub(super) fn is_stopped(&self, id: u64) -> bool {
        self.hard_stop.get() || self.conns.borrow().get(&id).is_some_and(|e| e.stopped)
    }

    pub(super) async fn wait_stopped(&self, id: u64) {
        while !self.is_stopped(id) {
            self.hard_stop_notify.notified().await;
        }
    }

    /// Stops the connections that match (their reads end at once, what
    /// their kernel buffers hold is not read). Returns how many.
    fn stop(&self, mut which: impl FnMut(&Entry) -> bool) -> usize {
        let mut n = 0;
        for e in self.conns.borrow_mut().values_mut() {
            if !e.stopped && which(e) {
                e.stopped = true;
                n += 1;
            }
        }
        if n > 0 {
            self.hard_stop_notify.notify_waiters();
        }
        n
    }

    pub(super) async fn wait_give_up(&self) {
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
pub(super) struct Slot {
    ctx: Rc<ThreadCtx>,
    registry: Rc<Registry>,
    id: u64,
}

impl Slot {
    pub(super) fn new(ctx: &Rc<ThreadCtx>, registry: &Rc<Registry>, id: u64) -> Self {
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

/// How long a connection must have been silent, once shutdown has begun,
/// before its reads are ended: long enough for what a client had finished
/// writing to cross over from its send buffer.
const DRAIN_QUIET: Duration = Duration::from_millis(50);

/// Bytes the kernel holds for `fd` that no read has taken yet (`FIONREAD`);
/// 0 if it cannot tell.
pub(super) fn unread_bytes(fd: RawFd) -> usize {
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

/// Linux's default most a TCP socket's send buffer grows to
/// (`net.ipv4.tcp_wmem`), where the file cannot be read.
const DEFAULT_SEND_BUFFER_MAX: u64 = 4 * 1024 * 1024;

/// The most a socket's send buffer grows to on this host: the third value
/// of `net.ipv4.tcp_wmem` ("4096 16384 4194304").
fn send_buffer_max() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| parse_tcp_wmem_max(&s))
        .unwrap_or(DEFAULT_SEND_BUFFER_MAX)
}

fn parse_tcp_wmem_max(text: &str) -> Option<u64> {
    text.split_whitespace().nth(2)?.parse().ok()
}

/// The thread's housekeeping after its accept loop ended: each connection
/// reads on until it has been quiet for [`DRAIN_QUIET`] with nothing left
/// unread in the kernel (a busy thread is not a quiet client), then its reads are
/// ended (it gets the rest of its kernel buffer, then end-of-stream).
///
/// At the drain timeout, connections still sending are stopped, but only
/// once they have read more than their client can have sent before the
/// drain began: what the kernel held for them then (`FIONREAD`) plus a full
/// send buffer on the client's side (`net.ipv4.tcp_wmem`'s most). Until
/// then the bytes may be the client's from before the signal, held up by a
/// slow writer: with 1,000 connections that had sent 400 MB and a writer
/// at 0.75 M lines/s, stopping every connection at the timeout dropped
/// 12% of what the clients had sent before the signal. A client that keeps
/// sending passes its bound; at the shutdown deadline every read ends.
pub(super) async fn drain(registry: &Registry, ctx: &ThreadCtx) {
    let give_up_at = ctx.stop.borrow().unwrap_or_else(Instant::now);
    let deadline = (Instant::now() + ctx.config.drain_timeout).min(give_up_at);
    if !registry.is_empty() {
        tracing::debug!(
            connections = registry.conns.borrow().len(),
            "Draining connections."
        );
    }
    let in_flight = send_buffer_max();
    let mut stopped = 0;
    loop {
        let now = Instant::now();
        // Connections accepted from the backlog join the drain here.
        for e in registry.conns.borrow_mut().values_mut() {
            if e.sent_before_drain.is_none() {
                e.sent_before_drain = Some(e.read + unread_bytes(e.fd) as u64 + in_flight);
            }
        }
        registry.shut_reads(|e| {
            now.duration_since(e.last_read) >= DRAIN_QUIET && unread_bytes(e.fd) == 0
        });
        if now >= deadline {
            let n = registry.stop(|e| e.sent_before_drain.is_some_and(|b| e.read > b));
            if n > 0 && stopped == 0 {
                tracing::warn!(
                    connections = n,
                    "Connections still sending after the drain timeout, past what they could have sent before shutdown began, are closed; what they send from now on is not read."
                );
            }
            stopped += n;
        }
        if registry.is_empty() {
            return;
        }
        if now >= give_up_at {
            break;
        }
        let _ = tokio::time::timeout(DRAIN_QUIET / 5, registry.wait_empty()).await;
    }
    tracing::error!(
        connections = registry.conns.borrow().len(),
        stopped_for_sending_on = stopped,
        "Shutdown deadline reached with connections still reading or waiting for room in the queue; what they had not queued is not written."
    );
    registry.hard_stop.set(true);
    registry.hard_stop_notify.notify_waiters();
    registry.give_up.set(true);
    registry.give_up_notify.notify_waiters();
    registry.wait_empty().await;
}

/// Closes connections silent for longer than the idle timeout, and
/// connections silent in the middle of a frame for longer than the frame
/// timeout, checking a few times per timeout. A connection the server
/// itself holds up (full queue, spent memory budget) is neither.
pub(super) async fn sweeper(
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
            stats.connections_frame_timeout.add(n as u64);
            tracing::info!(
                connections = n,
                "Closing connections silent in the middle of a frame (--frame_timeout); their incomplete frames are dropped."
            );
        }
        let n = registry.shut_reads(|e| silent_for(e, idle));
        if n > 0 {
            stats.connections_idle_closed.add(n as u64);
            tracing::debug!(
                connections = n,
                "Closing idle connections (--idle_timeout)."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::watch;

    use super::{
        super::{accept::admit, IoEngine, TcpConfig, DEFAULT_FD_RESERVE},
        *,
    };
    use crate::{
        format::{LineFormat, LineFormatter},
        ingest::{conn::ConnShared, ingress::Ingress},
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

    #[test]
    fn the_send_buffer_bound_is_tcp_wmem_s_third_value() {
        assert_eq!(
            parse_tcp_wmem_max("4096\t16384\t4194304\n"),
            Some(4_194_304)
        );
        assert_eq!(parse_tcp_wmem_max("4096 16384"), None);
        assert_eq!(parse_tcp_wmem_max("4096 16384 lots"), None);
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
        assert_eq!(ctx.conn.stats.connections_open.get(), 0);
    }
}
