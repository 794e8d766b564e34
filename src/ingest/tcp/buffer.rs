//! A connection's read buffer against the memory budget
//! (`--ingest_memory`): the first buffer, waiting for memory, and the
//! size after each read (grow for a large frame or a busy client, give
//! back after it).

use std::sync::atomic::Ordering;

use super::{registry::Registry, thread::ThreadCtx, TcpConfig};
use crate::ingest::conn::Connection;

/// The read buffer a connection starts with and returns to after a large
/// frame (or `read_buffer` if that is smaller). Small, so that many mostly
/// idle connections cost little of `--ingest_memory`; busy ones double up
/// to `read_buffer`.
pub const BASE_READ_BUFFER: usize = 16 * 1024;

/// What the busy buffers of one ingest thread's connections may add up to:
/// a busy connection's buffer doubles up to `read_buffer` while the thread
/// serves at most this over `read_buffer` connections (128 at the default
/// 64 KiB), and up to its share of this beyond (the base at 512). With
/// io_uring every connection's buffer is in a read at all times, and 1,000
/// busy connections held 64 MiB of them; with that many clients each one
/// sends little at a time, so smaller reads cost little.
const THREAD_BUSY_BUFFERS: usize = 8 * 1024 * 1024;

/// Gives a new connection its read buffer, once the memory budget allows
/// it. `None` if it never did (the connection is then closed).
pub(super) async fn open_buffer(
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

pub(super) fn base_buffer(config: &TcpConfig) -> usize {
    config
        .read_buffer
        .clamp(2 * log_server_wire::frame::PREFIX_LEN, BASE_READ_BUFFER)
}

/// Gets `capacity` bytes of read buffer from the budget for this
/// connection, waiting (not reading: TCP flow control holds the client
/// back) for at most `--frame_timeout` or until the drain stops it. False,
/// said once (rate limited), if the budget stayed spent.
pub(super) async fn wait_for_memory(
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
        () = registry.wait_stopped(id) => false,
    };
    registry.set_waiting(id, false);
    if !got && !registry.is_stopped(id) {
        let stats = &ctx.conn.stats;
        ctx.conn.diag.emit(&[&stats.connections_memory_closed], 1, |held| {
            tracing::warn!(
                peer = %conn.peer(),
                bytes = capacity,
                ingest_memory = ctx.conn.budget.limit(),
                suppressed = held,
                "Closing a connection that waited --frame_timeout for memory for its frame: --ingest_memory is spent."
            );
        });
    }
    got
}

/// What a connection's read buffer should hold next: the frame it is in the
/// middle of, if that is larger than the buffer (it must have that); twice
/// the buffer, up to `busy`, after a read that filled it (welcome, not
/// needed); back to `base` after a large frame, and after a read that
/// brought no more than a quarter of the buffer (the client slowed down or
/// went quiet). The io_uring engine keeps the buffer in the kernel's hands
/// while a connection waits for data, so a buffer left at `busy` by one
/// burst would be held for as long as the connection stays open; with
/// 1,000 connections that was 64 MiB of mostly idle buffers.
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
    read: ReadSize,
    base: usize,
    busy: usize,
) -> Resize {
    let need = need.unwrap_or(0);
    if need > capacity {
        return Resize::Need(need);
    }
    // Down to what is buffered (or still needed) but at least the base.
    let floor = need.max(len).max(base);
    if capacity > busy {
        // Larger than any busy connection's buffer: what is left of a large
        // frame.
        if floor < capacity {
            return Resize::Shrink(floor);
        }
        return Resize::Keep;
    }
    if read.filled && capacity < busy {
        return Resize::Want((capacity * 2).min(busy));
    }
    if read.bytes.saturating_mul(4) <= capacity && floor < capacity {
        // A grown buffer the last read hardly used: give it back until a
        // burst fills the base buffer again (then it doubles again).
        return Resize::Shrink(floor);
    }
    if len == capacity {
        // A full buffer with no complete frame and no known length cannot
        // happen (a prefix is 4 bytes); grow anyway rather than spin.
        return Resize::Need(capacity + base);
    }
    Resize::Keep
}

/// How large a busy connection's buffer may grow (`read_buffer`, from
/// `base`) while its thread serves `connections` (see
/// [`THREAD_BUSY_BUFFERS`]).
fn busy_buffer(read_buffer: usize, base: usize, connections: usize) -> usize {
    let share = THREAD_BUSY_BUFFERS / connections.max(1);
    read_buffer.min(share).max(base)
}

/// What the last read brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadSize {
    /// Bytes read.
    pub(super) bytes: usize,
    /// The read filled the buffer: the client has more to send than fits.
    pub(super) filled: bool,
}

/// Applies [`next_size`] to the buffer, charging the budget. False when a
/// frame needs more memory than the budget gave within `--frame_timeout`
/// (the connection is then done).
pub(super) async fn resize(
    conn: &mut Connection,
    ctx: &ThreadCtx,
    registry: &Registry,
    id: u64,
    buf: &mut Vec<u8>,
    need: Option<usize>,
    read: ReadSize,
) -> bool {
    let base = base_buffer(&ctx.config);
    let connections = ctx.loads[ctx.index].load(Ordering::Relaxed);
    let busy = busy_buffer(ctx.config.read_buffer, base, connections);
    match next_size(buf.capacity(), buf.len(), need, read, base, busy) {
        Resize::Need(to) => {
            if !wait_for_memory(conn, ctx, registry, id, to).await {
                return false;
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
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 16 * 1024;
    const BUSY: usize = 64 * 1024;

    fn read(bytes: usize, filled: bool) -> ReadSize {
        ReadSize { bytes, filled }
    }

    #[test]
    fn a_full_read_doubles_the_buffer_up_to_busy() {
        assert_eq!(
            next_size(BASE, 0, None, read(BASE, true), BASE, BUSY),
            Resize::Want(2 * BASE)
        );
        assert_eq!(
            next_size(BUSY, 0, None, read(BUSY, true), BASE, BUSY),
            Resize::Keep
        );
    }

    #[test]
    fn a_grown_buffer_a_small_read_hardly_used_goes_back_to_the_base() {
        // A quarter or less of the buffer: back to the base.
        assert_eq!(
            next_size(BUSY, 10, None, read(BUSY / 4, false), BASE, BUSY),
            Resize::Shrink(BASE)
        );
        // ...but never below what is buffered or what the frame needs.
        assert_eq!(
            next_size(BUSY, 20_000, Some(30_000), read(200, false), BASE, BUSY),
            Resize::Shrink(30_000)
        );
        // More than a quarter: the client is still busy, keep it.
        assert_eq!(
            next_size(BUSY, 0, None, read(BUSY / 4 + 1, false), BASE, BUSY),
            Resize::Keep
        );
        // The base itself is never shrunk.
        assert_eq!(
            next_size(BASE, 0, None, read(10, false), BASE, BUSY),
            Resize::Keep
        );
    }

    #[test]
    fn busy_buffers_share_a_thread_s_bound_beyond_128_connections() {
        assert_eq!(busy_buffer(BUSY, BASE, 1), BUSY);
        assert_eq!(busy_buffer(BUSY, BASE, 128), BUSY);
        assert_eq!(busy_buffer(BUSY, BASE, 256), BUSY / 2);
        assert_eq!(busy_buffer(BUSY, BASE, 512), BASE);
        // Never below the base, however many.
        assert_eq!(busy_buffer(BUSY, BASE, 4096), BASE);
        // A smaller --read_buffer stays the bound.
        assert_eq!(busy_buffer(BASE, BASE, 1), BASE);
    }

    #[test]
    fn a_frame_larger_than_the_buffer_is_needed_and_given_back_after() {
        assert_eq!(
            next_size(BASE, 100, Some(1 << 20), read(BASE, true), BASE, BUSY),
            Resize::Need(1 << 20)
        );
        assert_eq!(
            next_size(1 << 20, 0, None, read(1 << 20, true), BASE, BUSY),
            Resize::Shrink(BASE)
        );
    }
}
