//! Latency histograms in microseconds (HdrHistogram) and their summaries,
//! shared by the server (receive-to-written, by stage) and loadgen
//! (send-to-acknowledged), which does not link the server. Beside the data
//! flow: nothing here touches a message.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histograms track; larger values are clamped to it.
const MAX_TRACKED_MICROS: u64 = 3_600 * 1_000_000;

/// A new latency histogram: microseconds, 1 us to 1 h, 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3).expect("static histogram bounds are valid")
}

/// Records `count` samples of `latency` into `h`, clamped to the tracked range.
pub fn record_latency(h: &mut Histogram<u64>, latency: Duration, count: u64) {
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
}
