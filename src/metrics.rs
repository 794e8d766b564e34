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
    time::Duration,
};

use hdrhistogram::Histogram;

/// Highest latency the histograms track; larger values are clamped to it.
const MAX_TRACKED_MICROS: u64 = 3_600 * 1_000_000;

/// A new latency histogram: microseconds, 1 us to 1 h, 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3).expect("static histogram bounds are valid")
}

/// Records `count` samples of `latency` into `h`, clamped to the tracked range.
pub fn record_latency(h: &mut Histogram<u64>, latency: Duration, count: u64) {
    let micros = (latency.as_micros() as u64).clamp(1, MAX_TRACKED_MICROS);
    // Cannot fail: the value is within the histogram's bounds.
    let _ = h.record_n(micros, count);
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        LatencySummary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={}us p90={}us p99={}us p99.9={}us max={}us",
            self.count, self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// What the writer thread has done so far.
#[derive(Debug)]
pub struct WriterStats {
    /// Lines (messages) written to files.
    pub lines: AtomicU64,
    /// Bytes written to files.
    pub bytes: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// `writev` calls that wrote something.
    pub writes: AtomicU64,
    /// Failed file operations (write, open, rename, sync).
    pub errors: AtomicU64,
    /// Attempts made again after a failure.
    pub retries: AtomicU64,
    /// Rotations done.
    pub rotations: AtomicU64,
    /// Gaps in the sequence given up on after the gap timeout.
    pub gap_skips: AtomicU64,
    /// Records that arrived after their gap was given up on (written out
    /// of order rather than dropped).
    pub late_records: AtomicU64,
    /// Lines abandoned because the file system kept failing past the
    /// shutdown timeout. Zero unless the disk never came back.
    pub abandoned_lines: AtomicU64,
    /// Lines waiting in the reorder buffer behind a gap (after the last batch).
    pub reorder_waiting: AtomicU64,
    /// Receive-to-written latency of every line: since start, and since
    /// the last [`WriterStats::take_interval_latency`].
    latency: Mutex<Latencies>,
}

#[derive(Debug)]
struct Latencies {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            lines: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
            gap_skips: AtomicU64::new(0),
            late_records: AtomicU64::new(0),
            abandoned_lines: AtomicU64::new(0),
            reorder_waiting: AtomicU64::new(0),
            latency: Mutex::new(Latencies {
                total: new_latency_histogram(),
                interval: new_latency_histogram(),
            }),
        }
    }
}

impl WriterStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records `count` lines written `latency` after they were received
    /// (the writer calls this once per record; the lock is uncontended but
    /// for the stats reader).
    pub fn record_latencies(&self, samples: impl Iterator<Item = (Duration, u64)>) {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for (latency, count) in samples {
            record_latency(&mut l.total, latency, count);
            record_latency(&mut l.interval, latency, count);
        }
    }

    /// Receive-to-written latency percentiles since start.
    pub fn latency(&self) -> LatencySummary {
        LatencySummary::of(&self.latency.lock().unwrap_or_else(|e| e.into_inner()).total)
    }

    /// A copy of the whole-run latency histogram.
    pub fn latency_histogram(&self) -> Histogram<u64> {
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total
            .clone()
    }

    /// Percentiles since the last call, and starts a new interval.
    pub fn take_interval_latency(&self) -> LatencySummary {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let summary = LatencySummary::of(&l.interval);
        l.interval.reset();
        summary
    }
}

/// What the ingest side has taken in, across all connections and threads.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Log messages accepted over TCP (each becomes one line).
    pub tcp_messages: AtomicU64,
    /// Bytes read from TCP connections.
    pub tcp_bytes: AtomicU64,
    /// Log messages accepted over gRPC.
    pub grpc_messages: AtomicU64,
    /// Hello frames seen.
    pub hellos: AtomicU64,
    /// Heartbeat frames seen.
    pub heartbeats: AtomicU64,
    /// Frames whose payload did not decode (skipped).
    pub decode_errors: AtomicU64,
    /// Connections closed for announcing a frame above the maximum size.
    pub oversized_frames: AtomicU64,
    /// Connections that ended in the middle of a frame.
    pub partial_frames: AtomicU64,
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections refused at `--max_connections`.
    pub connections_refused: AtomicU64,
    /// Connections closed by `--idle_timeout`.
    pub connections_idle_closed: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// gRPC connections open now.
    pub grpc_connections_open: AtomicU64,
    /// gRPC connections closed at once for passing `--grpc_max_connections`.
    pub grpc_connections_refused: AtomicU64,
    /// Request bytes gRPC calls hold in memory now (under
    /// `--grpc_max_inflight_bytes`).
    pub grpc_inflight_bytes: AtomicU64,
    /// Connections closed for staying silent in the middle of a frame for
    /// `--frame_timeout` (slowloris).
    pub connections_frame_timeout: AtomicU64,
    /// Connections closed because `--ingest_memory` stayed spent for
    /// `--frame_timeout` while they needed memory for a frame.
    pub connections_memory_closed: AtomicU64,
    /// Connections refused because open file descriptors came within the
    /// reserve kept for the log files.
    pub connections_refused_fds: AtomicU64,
    /// Bytes of buffers TCP connections hold now (read buffers, decoder
    /// scratch, lines not yet queued), as counted by `--ingest_memory`.
    pub ingest_memory_bytes: AtomicU64,
    /// The highest `ingest_memory_bytes` so far.
    pub ingest_memory_peak_bytes: AtomicU64,
}

impl IngestStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
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
    pub fn emit(&self, counters: &[&AtomicU64], n: u64, log: impl FnOnce(u64)) {
        for counter in counters {
            counter.fetch_add(n, Ordering::Relaxed);
        }
        if let Some(suppressed) = self.check() {
            log(suppressed);
        }
    }
}

/// Writes `h` (microseconds) as an HdrHistogram percentile distribution
/// (`.hgrm`, the text the standard HdrHistogram plotter reads), values in
/// milliseconds.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl std::io::Write) -> std::io::Result<()> {
    const SCALE: f64 = 1000.0; // microseconds per millisecond
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to();
        let total = h.count_between(0, value);
        if q < 1.0 {
            writeln!(
                out,
                "{:12.3} {q:14.12} {total:10} {:14.2}",
                value as f64 / SCALE,
                1.0 / (1.0 - q)
            )?;
        } else {
            writeln!(out, "{:12.3} {q:14.12} {total:10}", value as f64 / SCALE)?;
        }
    }
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / SCALE,
        h.stdev() / SCALE
    )?;
    writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / SCALE,
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An internal event is always counted, and logged only within the
    /// rate; the first line let through after a held-back burst says how
    /// many were held back.
    #[test]
    fn events_are_all_counted_and_logged_within_the_rate() {
        let limiter = RateLimiter::new(3);
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut logged = Vec::new();
        for _ in 0..10 {
            limiter.emit(&[&a, &b], 2, |held| logged.push(held));
        }
        assert_eq!((a.into_inner(), b.into_inner()), (20, 20));
        // Within one second only three get through (a second boundary in
        // the middle of the loop lets a few more through, never fewer).
        assert!(logged.len() >= 3 && logged.len() < 10, "{logged:?}");
        assert_eq!(logged[..3], [0, 0, 0]);
    }

    #[test]
    fn hgrm_output_has_percentiles_and_totals() {
        let mut h = new_latency_histogram();
        for v in 1..=1000u64 {
            record_latency(&mut h, Duration::from_micros(v * 10), 1);
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
            "{text}"
        );
        // The median is about 5 ms.
        let median = text
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|q| q.starts_with("0.5000"))
            })
            .unwrap();
        let ms: f64 = median.split_whitespace().next().unwrap().parse().unwrap();
        assert!((4.9..=5.1).contains(&ms), "{median}");
        assert!(text.contains("Total count    =         1000]"), "{text}");
        let last = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert!(last.contains(" 1.000000000000 "), "{last}");
    }

    #[test]
    fn interval_latency_resets_but_the_total_keeps_counting() {
        let s = WriterStats::default();
        s.record_latencies([(Duration::from_micros(100), 3)].into_iter());
        assert_eq!(s.take_interval_latency().count, 3);
        assert_eq!(s.take_interval_latency().count, 0);
        s.record_latencies([(Duration::from_millis(2), 1)].into_iter());
        assert_eq!(s.take_interval_latency().count, 1);
        assert_eq!(s.latency().count, 4);
    }
}
