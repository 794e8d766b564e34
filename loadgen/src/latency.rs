//! Send-to-acknowledged latency of loadgen's gRPC calls: a histogram in
//! microseconds and its percentiles for the report. The server keeps its
//! own (receive-to-written) in `log_server::metrics`; loadgen does not link
//! the server, and the two measure different things.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency tracked; larger values are clamped to it.
const MAX_TRACKED_MICROS: u64 = 3_600 * 1_000_000;

/// A new latency histogram: microseconds, 1 us to 1 h, 3 significant digits.
pub(crate) fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3).expect("static histogram bounds are valid")
}

/// Records `count` samples of `latency` into `h`, clamped to the tracked range.
pub(crate) fn record_latency(h: &mut Histogram<u64>, latency: Duration, count: u64) {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TRACKED_MICROS);
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
