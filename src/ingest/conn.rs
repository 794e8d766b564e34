//! One TCP connection's protocol state, independent of the I/O engine:
//! bytes read -> frames -> decoded messages, plus the connection's identity
//! and its diagnostics.
//!
//! Between the socket (`tcp::uring` or `tcp::epoll`, which own the buffer
//! and do the reads) and `ingest::ingress` (which sequences and queues what
//! was decoded). Synchronous and free of I/O, so both engines share it.

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use log_server_wire::{
    decode::{Decoded, Decoder},
    frame::{self, Frame, FrameError, Frames},
};

use super::{
    budget::{Charge, MemoryBudget},
    ingress::Pending,
};
use crate::{
    format::{ClientText, LineFormatter, ReceivedAt},
    metrics::{IngestStats, RateLimiter},
};

/// What the engine does after [`Connection::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Drop the first `consumed` bytes of the buffer and read on. `need` is
    /// the buffer length the partial frame at the end will take, when its
    /// prefix is already there (grow the buffer to it). `more`: the feed
    /// stopped after [`WORK_PER_TURN`] with whole frames still buffered;
    /// publish, let the thread's other connections run, then feed the rest
    /// before reading again (`need` is then meaningless).
    Continue {
        consumed: usize,
        need: Option<usize>,
        more: bool,
    },
    /// The stream cannot be framed any more: publish what was decoded, then
    /// close the connection.
    Close,
}

/// Bytes of payload read plus bytes of lines produced after which a feed
/// stops and lets the ingest thread's other connections run: one client
/// sending expensive frames back to back cannot hold the thread for longer
/// than this much work (at least one frame) at a time. Above a whole 64 KiB
/// read of ordinary messages, so the common path never stops early.
pub const WORK_PER_TURN: usize = 512 * 1024;

/// Most bytes of lines a feed reserves before decoding: a busy connection's
/// read (`--read_buffer`'s default). Larger feeds grow the lines as needed.
const LINES_RESERVE: usize = 64 * 1024;

/// Shared by all connections: counters and the diagnostics rate limit.
#[derive(Debug)]
pub struct ConnShared {
    pub stats: Arc<IngestStats>,
    /// The memory every connection's buffers are charged to.
    pub budget: Arc<MemoryBudget>,
    pub diag: RateLimiter,
    pub max_frame_size: usize,
    /// How lines are formatted (text lines are formatted as frames are
    /// decoded).
    pub formatter: LineFormatter,
}

/// Protocol state of one connection.
#[derive(Debug)]
pub struct Connection {
    peer: SocketAddr,
    /// `fromName@fromHost` from the hello frame, if the client sent one.
    identity: Option<String>,
    decoder: Decoder,
    /// What the last [`Connection::feed`] decoded, until it is published.
    pending: Pending,
    shared: Arc<ConnShared>,
    /// Messages accepted on this connection.
    messages: u64,
    /// What this connection's buffers hold of the ingest memory budget.
    charge: Charge,
}

/// Names a connection in diagnostics: its peer address and, once known,
/// its identity (client text, so escaped, and capped by the decoder).
struct Who<'a>(&'a SocketAddr, &'a Option<String>);

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(id) => write!(f, "{} ({})", self.0, ClientText(id)),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Connection {
    pub fn new(peer: SocketAddr, shared: Arc<ConnShared>) -> Self {
        Connection {
            peer,
            identity: None,
            decoder: Decoder::new(shared.max_frame_size),
            pending: Pending::for_format(shared.formatter.format()),
            charge: Charge::new(shared.budget.clone()),
            shared,
            messages: 0,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Messages accepted on this connection so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// The messages decoded by the last [`Connection::feed`], to publish
    /// (see [`crate::ingest::ingress::Ingress::publish_pending`]).
    pub fn pending(&mut self) -> &mut Pending {
        &mut self.pending
    }

    /// Bytes held by the decoder and the lines not yet published: what the
    /// connection holds besides its read buffer.
    fn held_besides_buffer(&self) -> usize {
        let pending = match &self.pending {
            Pending::Lines { lines, .. } => lines.capacity(),
            Pending::Fields(batch) => batch.capacity_bytes(),
        };
        self.decoder.scratch_capacity() + pending
    }

    /// Bytes this connection is charged for now.
    pub fn charged(&self) -> usize {
        self.charge.held()
    }

    /// Charges what the connection holds with a read buffer of
    /// `buffer_capacity` bytes, over the budget if need be (the memory is
    /// already allocated; what is not yet allocated goes through
    /// [`Connection::reserve`]).
    pub fn account(&mut self, buffer_capacity: usize) {
        let total = buffer_capacity + self.held_besides_buffer();
        self.charge.set(total);
    }

    /// Gets budget for a read buffer of `buffer_capacity` bytes before it is
    /// allocated, waiting up to `max_wait` (forever if `None`) for other
    /// connections to give memory back. False if the budget stayed spent.
    pub async fn reserve(&mut self, buffer_capacity: usize, max_wait: Option<Duration>) -> bool {
        let total = buffer_capacity + self.held_besides_buffer();
        self.charge.set_within(total, max_wait).await
    }

    /// Like [`Connection::reserve`] without waiting: for growth that is
    /// welcome but not needed.
    pub fn try_reserve(&mut self, buffer_capacity: usize) -> bool {
        let total = buffer_capacity + self.held_besides_buffer();
        self.charge.try_set(total)
    }

    /// After a large message: gives back decoder scratch and empty line
    /// buffers above `keep` bytes, so that one large frame does not leave a
    /// connection holding its size for good. Call after publishing.
    pub fn shrink(&mut self, keep: usize) {
        self.decoder.shrink(keep);
        match &mut self.pending {
            Pending::Lines { lines, .. } => {
                if lines.is_empty() && lines.capacity() > keep {
                    *lines = Vec::new();
                }
            }
            Pending::Fields(batch) => batch.shrink(keep),
        }
    }

    /// Takes in the connection's buffered bytes: every complete frame is
    /// decoded into [`Connection::pending`], which must have been published
    /// since the last call. Stops early after [`WORK_PER_TURN`] (see
    /// [`Feed::Continue`]).
    pub fn feed(&mut self, buf: &[u8]) -> Feed {
        debug_assert!(self.pending.is_empty());
        let stats = &self.shared.stats;
        let formatter = self.shared.formatter;
        // Text lines carry neither sequence number nor receive time.
        let no_stamp = ReceivedAt::new(std::time::UNIX_EPOCH);
        if let Pending::Lines { lines, .. } = &mut self.pending {
            // A text line is about as long as its frame (200-byte frames
            // make 195-byte lines): room for what this feed may decode,
            // allocated now rather than held since the last publish. Only
            // what the budget allows: the buffer may hold just part of a
            // frame, and lines decoded past this are charged as they come.
            if lines.capacity() == 0 {
                let expect = buf.len().min(LINES_RESERVE);
                let want = expect + expect / 8;
                if self.charge.try_set(self.charge.held() + want) {
                    lines.reserve_exact(want);
                }
            }
        }
        let mut frames = Frames::new(buf, self.shared.max_frame_size);
        let mut result = None;
        let mut more = false;
        let mut work = 0;
        loop {
            if work >= WORK_PER_TURN {
                // The next feed starts where this one stopped, before
                // reading; a partial frame there just means reading on.
                let rest = &buf[frames.consumed()..];
                more = !matches!(frame::parse(rest, self.shared.max_frame_size), Ok(None));
                break;
            }
            let Some(frame) = frames.next() else { break };
            match frame {
                Ok(Frame::Heartbeat) => stats.heartbeats.add(1),
                Ok(Frame::Payload(payload)) => {
                    let produced = self.pending_bytes();
                    let decoded = match &mut self.pending {
                        Pending::Lines {
                            lines,
                            count,
                            truncated,
                        } => self.decoder.decode_with(payload, |raw| {
                            *truncated +=
                                usize::from(formatter.write_raw(&raw, 0, &no_stamp, lines));
                            *count += 1;
                        }),
                        Pending::Fields(batch) => self.decoder.decode(payload, batch),
                    };
                    work += payload.len() + self.pending_bytes().saturating_sub(produced);
                    match decoded {
                        Ok(Decoded::Log) => {}
                        Ok(Decoded::Hello(id)) => {
                            stats.hellos.add(1);
                            tracing::debug!(peer = %self.peer, identity = %ClientText(&id), "Client said hello.");
                            self.identity = Some(id);
                        }
                        Err(e) => {
                            self.shared.diag.emit(&[&stats.decode_errors], 1, |held| {
                                tracing::warn!(
                                    peer = %Who(&self.peer, &self.identity),
                                    bytes = payload.len(),
                                    suppressed = held,
                                    "Skipped a frame that does not decode: {}.",
                                    // capnp's messages are its own, but
                                    // may quote what it read.
                                    ClientText(&e.to_string())
                                );
                            });
                        }
                    }
                }
                Err(e @ FrameError::TooLarge { .. }) => {
                    self.shared.diag.emit(&[&stats.oversized_frames], 1, |held| {
                        tracing::warn!(
                            peer = %Who(&self.peer, &self.identity),
                            suppressed = held,
                            "Closing the connection: {e}; nothing after it can be trusted to be a frame."
                        );
                    });
                    result = Some(Feed::Close);
                }
            }
        }
        let n = self.pending.len() as u64;
        self.messages += n;
        stats.tcp_messages.add(n);
        result.unwrap_or(Feed::Continue {
            consumed: frames.consumed(),
            need: frames
                .pending_frame_len()
                .map(|end| end - frames.consumed()),
            more,
        })
    }

    /// Bytes of lines (or decoded text) produced so far by this feed.
    fn pending_bytes(&self) -> usize {
        match &self.pending {
            Pending::Lines { lines, .. } => lines.len(),
            Pending::Fields(batch) => batch.capacity_bytes(),
        }
    }

    /// The client closed the connection (or it was closed) with `leftover`
    /// bytes of an incomplete frame buffered: those are lost, and said so.
    pub fn finish(&self, leftover: usize) {
        if leftover > 0 {
            let partial = &self.shared.stats.partial_frames;
            self.shared.diag.emit(&[partial], 1, |held| {
                tracing::warn!(
                    peer = %Who(&self.peer, &self.identity),
                    bytes = leftover,
                    suppressed = held,
                    "The connection ended in the middle of a frame; its incomplete last frame is dropped."
                );
            });
        }
        tracing::debug!(
            peer = %Who(&self.peer, &self.identity),
            messages = self.messages,
            "Connection closed."
        );
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::format::LineFormat;
    use log_server_wire::{
        encode::{push_heartbeat, push_logger_frame, Packing},
        fields::Fields,
    };

    fn connection(format: LineFormat) -> Connection {
        connection_with(format, 4096)
    }

    fn connection_with(format: LineFormat, max_frame_size: usize) -> Connection {
        let stats = Arc::new(IngestStats::default());
        let shared = Arc::new(ConnShared {
            stats: stats.clone(),
            budget: Arc::new(MemoryBudget::new(usize::MAX, stats)),
            diag: RateLimiter::new(0),
            max_frame_size,
            formatter: LineFormatter::new(format, 1 << 20),
        });
        Connection::new("127.0.0.1:1".parse().unwrap(), shared)
    }

    /// Feeds `stream` in reads of the given sizes the way an engine does;
    /// returns the lines formatted and whether the connection was closed.
    fn run(conn: &mut Connection, stream: &[u8], reads: &[usize]) -> (usize, bool) {
        let mut buf = Vec::new();
        let (mut at, mut lines) = (0, 0);
        for &n in reads.iter().chain(std::iter::repeat(&64)) {
            if at >= stream.len() {
                break;
            }
            let end = (at + n.max(1)).min(stream.len());
            buf.extend_from_slice(&stream[at..end]);
            at = end;
            let feed = conn.feed(&buf);
            lines += conn.pending().len();
            *conn.pending() = Pending::for_format(LineFormat::Text);
            match feed {
                Feed::Continue { consumed, .. } => {
                    buf.drain(..consumed);
                }
                Feed::Close => return (lines, true),
            }
        }
        (lines, false)
    }

    /// Everything `tracing` writes on this thread while `f` runs (debug and
    /// up, no colours), as the fmt layer would write it to stderr.
    fn captured_logs(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// Issue 9, point 8: a hello whose identity carries a newline, a forged
    /// diagnostic line and terminal escapes, 10 KB long, then a frame that
    /// does not decode (its warning names the identity). Each diagnostic is
    /// one line, with no control character from the client in it, and the
    /// identity is capped.
    #[test]
    fn client_text_in_diagnostics_is_escaped_and_capped() {
        let forged = "2026-01-01T00:00:00.000000Z  WARN log_server: forged line";
        let name = format!(
            "evil\n{forged}\x1b[2J\x1b]0;pwned\x07{}",
            "x".repeat(10_000)
        );
        let mut stream = Vec::new();
        log_server_wire::encode::push_hello_frame(&mut stream, &name, "host\r\nnext\u{2028}");
        log_server_wire::frame::write_frame(&mut stream, b"not capnp at all, not at all");
        let stats = Arc::new(IngestStats::default());
        let shared = Arc::new(ConnShared {
            stats: stats.clone(),
            budget: Arc::new(MemoryBudget::new(usize::MAX, stats)),
            diag: RateLimiter::new(100),
            max_frame_size: 1 << 20,
            formatter: LineFormatter::new(LineFormat::Text, 1 << 20),
        });
        let mut conn = Connection::new("127.0.0.1:1".parse().unwrap(), shared);
        let logs = captured_logs(|| {
            conn.feed(&stream);
        });
        let identity = conn.identity().unwrap();
        assert!(
            identity.chars().count() <= 2 * log_server_wire::decode::MAX_IDENTITY_PART_CHARS + 1,
            "an identity of {} characters",
            identity.chars().count()
        );
        assert!(identity.starts_with("evil\n"), "kept as sent: {identity:?}");
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 2, "one line per diagnostic: {logs}");
        assert!(lines[0].contains("Client said hello."), "{logs}");
        assert!(lines[1].contains("Skipped a frame"), "{logs}");
        for line in &lines {
            assert!(
                line.contains(r"evil\x0a2026-01-01"),
                "escaped newline: {line}"
            );
            assert!(
                !line.chars().any(|c| c.is_control() || c == '\u{2028}'),
                "a control character reached the diagnostics: {line:?}"
            );
            assert!(line.len() < 1024, "a diagnostic of {} bytes", line.len());
        }
    }

    /// Issue 9, point 8: the truncation warning is rate-limited like every
    /// other warning a client can cause; the count of cut lines stays exact.
    #[test]
    fn truncation_warnings_are_rate_limited() {
        use crate::{ingest::ingress::Ingress, queue::RecordQueue};
        let ingress = Ingress::new(
            Arc::new(RecordQueue::new(1024, 1 << 30)),
            LineFormatter::new(LineFormat::Text, 4096),
            0,
        );
        let huge = "m".repeat(64 * 1024);
        let f = Fields {
            message: &huge,
            ..Fields::default()
        };
        let logs = captured_logs(|| {
            for _ in 0..100 {
                let record = ingress.sequence_fields(std::iter::once(f), std::time::Instant::now());
                assert!(record.is_some());
            }
        });
        assert_eq!(ingress.truncated_lines(), 100);
        let warnings = logs
            .lines()
            .filter(|l| l.contains("were cut to fit"))
            .count();
        // One a second; the loop may straddle a second boundary.
        assert!((1..=2).contains(&warnings), "{warnings} warnings: {logs}");
    }

    /// One client's buffer full of expensive frames is taken in a bounded
    /// amount of work at a time (the engine lets other connections run in
    /// between), and every frame still comes out exactly once.
    #[test]
    fn a_feed_stops_after_a_bounded_amount_of_work() {
        let mut conn = connection_with(LineFormat::Text, 1 << 20);
        let big = "y".repeat(200 * 1024);
        let mut stream = Vec::new();
        for _ in 0..8 {
            let f = Fields {
                message: &big,
                ..Fields::default()
            };
            push_logger_frame(&mut stream, &f, Packing::Packed);
        }
        let (mut at, mut turns, mut lines) = (0, 0, 0);
        loop {
            let feed = conn.feed(&stream[at..]);
            lines += conn.pending().len();
            *conn.pending() = Pending::for_format(LineFormat::Text);
            turns += 1;
            match feed {
                Feed::Continue { consumed, more, .. } => {
                    at += consumed;
                    if !more {
                        break;
                    }
                }
                Feed::Close => panic!("closed"),
            }
            assert!(turns < 100, "no progress");
        }
        assert_eq!((lines, at), (8, stream.len()));
        // 8 frames of ~400 KiB of work each (payload + line), at most
        // WORK_PER_TURN (and one frame) per turn.
        assert!(turns >= 4, "all in {turns} turns");
    }

    proptest! {
        /// Arbitrary bytes in arbitrary reads: no panic, and the work is
        /// bounded (every call returns).
        #[test]
        fn arbitrary_bytes_never_panic(
            stream in prop::collection::vec(any::<u8>(), 0..4000),
            reads in prop::collection::vec(1usize..300, 1..40),
        ) {
            let mut conn = connection(LineFormat::Text);
            let _ = run(&mut conn, &stream, &reads);
        }

        /// Valid frames with garbage frames and heartbeats between them, in
        /// arbitrary reads: every valid message comes out, every garbage
        /// frame is skipped, the connection stays open.
        #[test]
        fn garbage_frames_are_skipped_and_good_ones_kept(
            garbage in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 0..20),
            reads in prop::collection::vec(1usize..500, 1..40),
        ) {
            let mut stream = Vec::new();
            let mut good = 0;
            for (i, g) in garbage.iter().enumerate() {
                let text = format!("message {i}");
                push_logger_frame(&mut stream, &Fields { message: &text, ..Fields::default() }, Packing::Packed);
                good += 1;
                push_heartbeat(&mut stream);
                log_server_wire::frame::write_frame(&mut stream, g);
            }
            let mut conn = connection(LineFormat::Text);
            let (lines, closed) = run(&mut conn, &stream, &reads);
            prop_assert!(!closed);
            // A garbage frame may happen to be a valid message (rare): never fewer.
            prop_assert!(lines >= good, "{} of {} lines", lines, good);
            prop_assert!(lines <= good + garbage.len());
        }
    }
}
