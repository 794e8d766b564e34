//! Counters and latency histograms of the pipeline, beside the data flow:
//! stages bump counters here, and the binary reads them for its periodic
//! stats line and its final summary.
//!
//! Counters are relaxed atomics (one add per batch, not per message). The
//! receive-to-written latency goes into an HdrHistogram in microseconds,
//! recorded by the writer once per record with the record's line count.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use hdrhistogram::Histogram;
// The histograms and their summaries are shared with loadgen.
pub use log_server_latency::{new_latency_histogram, record_latency, write_hgrm, LatencySummary};

/// One count or level of the pipeline: a relaxed atomic, since stages add
/// once per batch and readers (the stats line, `/metrics`, the summary)
/// only need a recent value.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// For the gauges: what was added and is given back.
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// For the gauges: the level now.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// For peaks: raises the value to `v` if it is below.
    pub fn raise_to(&self, v: u64) {
        self.0.fetch_max(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The atomic itself, for a stage whose own arithmetic is on it (the
    /// TCP memory budget's compare-and-swap).
    pub fn as_atomic(&self) -> &AtomicU64 {
        &self.0
    }
}

/// What the writer thread has done so far.
#[derive(Debug)]
pub struct WriterStats {
    /// Lines (messages) written to files.
    pub lines: Counter,
    /// Bytes written to files.
    pub bytes: Counter,
    /// Batches written.
    pub batches: Counter,
    /// `writev` calls that wrote something.
    pub writes: Counter,
    /// Failed file operations (write, open, rename, sync).
    pub errors: Counter,
    /// Attempts made again after a failure.
    pub retries: Counter,
    /// Rotations done.
    pub rotations: Counter,
    /// Gaps in the sequence given up on after the gap timeout.
    pub gap_skips: Counter,
    /// Records that arrived after their gap was given up on (written out
    /// of order rather than dropped).
    pub late_records: Counter,
    /// Lines abandoned because the file system kept failing past the
    /// shutdown timeout. Zero unless the disk never came back.
    pub abandoned_lines: Counter,
    /// Lines waiting in the reorder buffer behind a gap (after the last batch).
    pub reorder_waiting: Counter,
    /// Receive-to-written latency of every line: since start, and since
    /// the last [`WriterStats::take_interval_latency`].
    latency: Mutex<Latencies>,
}

/// Where a line's time went (issue: "a regression shows its stage").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Received (read off the socket or the gRPC call) to written.
    EndToEnd = 0,
    /// Received to in the queue: decoding, formatting, and any wait for
    /// room in a full queue.
    ToQueue = 1,
    /// In the queue to written: the queue, reordering, the write itself,
    /// rotations and retries.
    QueueToWritten = 2,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::EndToEnd, Stage::ToQueue, Stage::QueueToWritten];

    /// A short name, for file names and log fields.
    pub fn name(self) -> &'static str {
        match self {
            Stage::EndToEnd => "received-to-written",
            Stage::ToQueue => "received-to-queued",
            Stage::QueueToWritten => "queued-to-written",
        }
    }
}

#[derive(Debug)]
struct Latencies {
    /// Per [`Stage`]: since start, and since the last interval was taken.
    total: [Histogram<u64>; 3],
    interval: [Histogram<u64>; 3],
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            lines: Counter::default(),
            bytes: Counter::default(),
            batches: Counter::default(),
            writes: Counter::default(),
            errors: Counter::default(),
            retries: Counter::default(),
            rotations: Counter::default(),
            gap_skips: Counter::default(),
            late_records: Counter::default(),
            abandoned_lines: Counter::default(),
            reorder_waiting: Counter::default(),
            latency: Mutex::new(Latencies {
                total: std::array::from_fn(|_| new_latency_histogram()),
                interval: std::array::from_fn(|_| new_latency_histogram()),
            }),
        }
    }
}

impl WriterStats {
    /// Records `count` lines written at `written` that were received at
    /// `received` and queued at `queued` (the writer calls this once per
    /// record; the lock is uncontended but for the stats reader).
    pub fn record_latencies(
        &self,
        written: Instant,
        samples: impl Iterator<Item = (Instant, Instant, u64)>,
    ) {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for (received, queued, count) in samples {
            let stages = [
                written.saturating_duration_since(received),
                queued.saturating_duration_since(received),
                written.saturating_duration_since(queued),
            ];
            for (i, latency) in stages.into_iter().enumerate() {
                record_latency(&mut l.total[i], latency, count);
                record_latency(&mut l.interval[i], latency, count);
            }
        }
    }

    /// Receive-to-written latency percentiles since start.
    pub fn latency(&self) -> LatencySummary {
        self.stage_latency(Stage::EndToEnd)
    }

    /// One stage's latency percentiles since start.
    pub fn stage_latency(&self, stage: Stage) -> LatencySummary {
        LatencySummary::of(
            &self.latency.lock().unwrap_or_else(|e| e.into_inner()).total[stage as usize],
        )
    }

    /// A copy of the whole-run receive-to-written histogram.
    pub fn latency_histogram(&self) -> Histogram<u64> {
        self.stage_histogram(Stage::EndToEnd)
    }

    /// A copy of one stage's whole-run histogram.
    pub fn stage_histogram(&self, stage: Stage) -> Histogram<u64> {
        self.latency.lock().unwrap_or_else(|e| e.into_inner()).total[stage as usize].clone()
    }

    /// Receive-to-written percentiles since the last call, and starts a new
    /// interval for every stage.
    pub fn take_interval_latency(&self) -> LatencySummary {
        self.take_interval_latencies()[0]
    }

    /// Every stage's percentiles since the last call (in [`Stage::ALL`]
    /// order), and starts a new interval.
    pub fn take_interval_latencies(&self) -> [LatencySummary; 3] {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let summaries = std::array::from_fn(|i| LatencySummary::of(&l.interval[i]));
        for h in &mut l.interval {
            h.reset();
        }
        summaries
    }
}

/// What the ingest side has taken in, across all connections and threads.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Log messages accepted over TCP (each becomes one line).
    pub tcp_messages: Counter,
    /// Bytes read from TCP connections.
    pub tcp_bytes: Counter,
    /// Log messages accepted over gRPC.
    pub grpc_messages: Counter,
    /// OTLP log records accepted (OTLP/gRPC and OTLP/HTTP).
    pub otlp_records: Counter,
    /// Hello frames seen.
    pub hellos: Counter,
    /// Heartbeat frames seen.
    pub heartbeats: Counter,
    /// Frames whose payload did not decode (skipped).
    pub decode_errors: Counter,
    /// Connections closed for announcing a frame above the maximum size.
    pub oversized_frames: Counter,
    /// Connections that ended in the middle of a frame.
    pub partial_frames: Counter,
    /// Connections accepted since start.
    pub connections_accepted: Counter,
    /// Connections refused at `--max_connections`.
    pub connections_refused: Counter,
    /// Connections closed by `--idle_timeout`.
    pub connections_idle_closed: Counter,
    /// Connections open now.
    pub connections_open: Counter,
    /// gRPC connections open now.
    pub grpc_connections_open: Counter,
    /// gRPC connections closed at once for passing `--grpc_max_connections`.
    pub grpc_connections_refused: Counter,
    /// Request bytes gRPC calls hold in memory now (under
    /// `--grpc_max_inflight_bytes`).
    pub grpc_inflight_bytes: Counter,
    /// Connections closed for staying silent in the middle of a frame for
    /// `--frame_timeout` (slowloris).
    pub connections_frame_timeout: Counter,
    /// Connections closed because `--ingest_memory` stayed spent for
    /// `--frame_timeout` while they needed memory for a frame.
    pub connections_memory_closed: Counter,
    /// Connections refused because open file descriptors came within the
    /// reserve kept for the log files.
    pub connections_refused_fds: Counter,
    /// Bytes of buffers TCP connections hold now (read buffers, decoder
    /// scratch, lines not yet queued), as counted by `--ingest_memory`.
    pub ingest_memory_bytes: Counter,
    /// The highest `ingest_memory_bytes` so far.
    pub ingest_memory_peak_bytes: Counter,
}

/// Lets through at most `per_second` diagnostics per second across the
/// whole server, so a hostile client cannot flood stderr; counts the rest
/// and reports them with the next line let through.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u64,
    /// Second (since `epoch`) of the current window.
    window: AtomicU64,
    /// Lines let through in the current window.
    used: AtomicU64,
    /// Lines held back since the last one let through.
    suppressed: AtomicU64,
    epoch: std::time::Instant,
}

impl RateLimiter {
    pub fn new(per_second: u64) -> Self {
        RateLimiter {
            per_second,
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// `Some(n)` if a line may be written now, `n` being the lines held
    /// back since the last one; `None` if this one is held back.
    pub fn check(&self) -> Option<u64> {
        let now = self.epoch.elapsed().as_secs();
        if self.window.swap(now, Ordering::Relaxed) != now {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// An internal event, in one call: adds `n` to each of `counters`
    /// (always), then calls `log` with the number of lines held back before
    /// it, unless this line is held back too. Every diagnostic about
    /// clients, connections and input goes through here, so none is
    /// logged without being counted nor floods stderr.
    pub fn emit(&self, counters: &[&Counter], n: u64, log: impl FnOnce(u64)) {
        for counter in counters {
            counter.add(n);
        }
        if let Some(suppressed) = self.check() {
            log(suppressed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An internal event is always counted, and logged only within the
    /// rate; the first line let through after a held-back burst says how
    /// many were held back.
    #[test]
    fn events_are_all_counted_and_logged_within_the_rate() {
        let limiter = RateLimiter::new(3);
        let (a, b) = (Counter::default(), Counter::default());
        let mut logged = Vec::new();
        for _ in 0..10 {
            limiter.emit(&[&a, &b], 2, |held| logged.push(held));
        }
        assert_eq!((a.get(), b.get()), (20, 20));
        // Within one second only three get through (a second boundary in
        // the middle of the loop lets a few more through, never fewer).
        assert!(logged.len() >= 3 && logged.len() < 10, "{logged:?}");
        assert_eq!(logged[..3], [0, 0, 0]);
    }

    #[test]
    fn interval_latency_resets_but_the_total_keeps_counting() {
        let s = WriterStats::default();
        let received = Instant::now();
        let later = |us| received + Duration::from_micros(us);
        s.record_latencies(later(100), [(received, received, 3)].into_iter());
        assert_eq!(s.take_interval_latency().count, 3);
        assert_eq!(s.take_interval_latency().count, 0);
        s.record_latencies(later(2_000), [(received, received, 1)].into_iter());
        assert_eq!(s.take_interval_latency().count, 1);
        assert_eq!(s.latency().count, 4);
    }

    /// Each line's time is split by stage: received -> queued -> written,
    /// the two parts adding up to the whole.
    #[test]
    fn latency_is_kept_per_stage() {
        let s = WriterStats::default();
        let received = Instant::now();
        let queued = received + Duration::from_micros(300);
        let written = received + Duration::from_millis(5);
        s.record_latencies(written, [(received, queued, 2)].into_iter());
        let [whole, to_queue, queue_to_written] = s.take_interval_latencies();
        assert_eq!(
            (whole.count, to_queue.count, queue_to_written.count),
            (2, 2, 2)
        );
        assert!((4_990..=5_010).contains(&whole.p50), "{whole}");
        assert!((299..=301).contains(&to_queue.p50), "{to_queue}");
        assert!(
            (4_690..=4_710).contains(&queue_to_written.p50),
            "{queue_to_written}"
        );
        assert_eq!(s.stage_latency(Stage::ToQueue).count, 2);
    }
}

/// What the forwarder (`--forward_otlp`) has done so far.
#[derive(Debug)]
pub struct ForwardStats {
    /// Lines the destination acknowledged (those it said it rejected
    /// included: they were delivered and answered).
    pub lines: Counter,
    /// Of all lines sent, those the destination said it rejected
    /// (`partial_success`) or refused as bad data (dropped after a
    /// non-retryable answer).
    pub rejected: Counter,
    /// Export requests acknowledged.
    pub batches: Counter,
    /// Export requests sent again after a retryable answer or none.
    pub retries: Counter,
    /// Lines rotation removed before they were forwarded.
    pub lost_lines: Counter,
    /// Files rotation removed before they were forwarded in full.
    pub lost_files: Counter,
    /// Lines sent again after a stop that left a batch unacknowledged: the
    /// destination may have them twice.
    pub resent: Counter,
    /// Lines of batches the destination refused as bad data (not
    /// retryable): counted in `rejected`, never acknowledged, dropped.
    pub dropped: Counter,
    /// Empty lines passed over (a line torn by a crash, terminated).
    pub skipped: Counter,
    /// Lines in the files at startup not yet forwarded.
    pub backlog_at_start: Counter,
    /// When the forwarder last had sent everything written, in ms since
    /// `epoch`.
    caught_up_ms: Counter,
    epoch: std::time::Instant,
}

impl Default for ForwardStats {
    fn default() -> Self {
        ForwardStats {
            lines: Counter::default(),
            rejected: Counter::default(),
            batches: Counter::default(),
            retries: Counter::default(),
            lost_lines: Counter::default(),
            lost_files: Counter::default(),
            resent: Counter::default(),
            dropped: Counter::default(),
            skipped: Counter::default(),
            backlog_at_start: Counter::default(),
            caught_up_ms: Counter::default(),
            epoch: std::time::Instant::now(),
        }
    }
}

impl ForwardStats {
    /// Lines written to the files and not yet forwarded (nor lost), given
    /// the writer's count of lines written since startup.
    pub fn lag_lines(&self, written: u64) -> u64 {
        (self.backlog_at_start.get() + written).saturating_sub(
            self.lines.get() + self.dropped.get() + self.lost_lines.get() + self.skipped.get(),
        )
    }

    /// Seconds since the forwarder last had nothing left to send; 0 when it
    /// has nothing left now.
    pub fn lag_seconds(&self, written: u64) -> f64 {
        if self.lag_lines(written) == 0 {
            return 0.0;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(self.caught_up_ms.get()) as f64 / 1000.0
    }

    /// The forwarder has sent everything written.
    pub fn caught_up(&self) {
        self.caught_up_ms
            .set(self.epoch.elapsed().as_millis() as u64);
    }
}
