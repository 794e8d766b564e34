//! `GET /metrics`: the pipeline's counters, gauges and receive-to-written
//! histogram in the Prometheus text format, beside the data flow like
//! [`crate::metrics`], which it reads at each scrape.
//!
//! Served on the gRPC port's HTTP side and, with `--metrics_port`, on a port
//! of its own (so it also works with `--only_tcp`). The stages keep their
//! plain atomics; a [`Collector`] turns them into metrics only when scraped,
//! so metrics cost nothing on the hot path. Names are `log_server_*`;
//! counters end in `_total` (the encoder adds it), sizes in `_bytes`,
//! durations in `_seconds`.

use std::{
    net::SocketAddr,
    sync::Arc,
    thread::{self, JoinHandle},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use thiserror::Error;
use tokio::sync::watch;

use crate::{
    ingest::ingress::Ingress,
    metrics::{Counter, ForwardStats, IngestStats},
    writer::WriterShared,
};

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency histogram's buckets, seconds: 50 us to 10 s,
/// dense around the 1 ms a receive-to-written latency should stay under.
const LATENCY_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
    10.0,
];

/// What `/metrics` reads: the stages' own counters.
#[derive(Debug, Clone)]
pub struct Sources {
    pub ingest: Arc<IngestStats>,
    pub writer: Arc<WriterShared>,
    pub ingress: Arc<Ingress>,
    /// `--forward_otlp`'s counters, when forwarding is on.
    pub forward: Option<Arc<ForwardStats>>,
}

/// The exporter: a registry holding one collector over [`Sources`].
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::with_prefix("log_server");
        registry.register_collector(Box::new(PipelineCollector(sources)));
        Exporter { registry }
    }

    /// The metrics as of now, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[derive(Debug)]
struct PipelineCollector(Sources);

/// One sample of a family: its label (`transport="tcp"` and the like), if
/// the family has several, and its value.
type Sample = (Option<(&'static str, &'static str)>, u64);

/// A metric family as exported: name (without the prefix and `_total`),
/// help, kind, and its samples.
struct Family(&'static str, &'static str, MetricType, Vec<Sample>);

impl PipelineCollector {
    fn families(&self) -> Vec<Family> {
        use MetricType::{Counter as C, Gauge as G};
        let (i, w) = (&self.0.ingest, &self.0.writer.stats);
        let queue = self.0.ingress.queue();
        let one = |c: &Counter| vec![(None, c.get())];
        let by = |key, samples: &[(&'static str, &Counter)]| {
            samples
                .iter()
                .map(|&(v, c)| (Some((key, v)), c.get()))
                .collect()
        };
        let mut families = vec![
            Family(
                "messages_received",
                "Log messages accepted, by transport.",
                C,
                by(
                    "transport",
                    &[
                        ("tcp", &i.tcp_messages),
                        ("grpc", &i.grpc_messages),
                        ("otlp", &i.otlp_records),
                    ],
                ),
            ),
            Family(
                "tcp_received_bytes",
                "Bytes read from TCP connections.",
                C,
                one(&i.tcp_bytes),
            ),
            Family(
                "decode_errors",
                "TCP frames whose payload did not decode (skipped).",
                C,
                one(&i.decode_errors),
            ),
            Family(
                "connections_accepted",
                "TCP connections accepted.",
                C,
                one(&i.connections_accepted),
            ),
            Family(
                "connections_refused",
                "Connections refused, by reason.",
                C,
                by(
                    "reason",
                    &[
                        ("tcp_max_connections", &i.connections_refused),
                        ("tcp_fd_reserve", &i.connections_refused_fds),
                        ("grpc_max_connections", &i.grpc_connections_refused),
                    ],
                ),
            ),
            Family(
                "connections_closed",
                "TCP connections closed by the server, by reason.",
                C,
                by(
                    "reason",
                    &[
                        ("oversized_frame", &i.oversized_frames),
                        ("idle_timeout", &i.connections_idle_closed),
                        ("frame_timeout", &i.connections_frame_timeout),
                        ("memory", &i.connections_memory_closed),
                    ],
                ),
            ),
            Family(
                "lines_written",
                "Lines (messages) written to the log files.",
                C,
                one(&w.lines),
            ),
            Family(
                "written_bytes",
                "Bytes written to the log files.",
                C,
                one(&w.bytes),
            ),
            Family(
                "write_errors",
                "Failed file operations (write, open, rename, sync).",
                C,
                one(&w.errors),
            ),
            Family(
                "write_retries",
                "File operations attempted again after a failure.",
                C,
                one(&w.retries),
            ),
            Family("rotations", "Log file rotations.", C, one(&w.rotations)),
            Family(
                "gap_skips",
                "Gaps in the sequence given up on after the gap timeout.",
                C,
                one(&w.gap_skips),
            ),
            Family(
                "queue_records",
                "Records waiting in the queue between ingest and the writer.",
                G,
                vec![(None, queue.len() as u64)],
            ),
            Family(
                "queue_bytes",
                "Bytes of lines waiting in the queue.",
                G,
                vec![(None, queue.queued_bytes() as u64)],
            ),
            Family(
                "writer_moves",
                "Times a producer moved the writer off a CPU where it waited to run behind another thread.",
                C,
                vec![(None, queue.consumer_moves())],
            ),
            Family(
                "reorder_waiting_lines",
                "Lines waiting in the writer's reorder buffer behind a gap.",
                G,
                one(&w.reorder_waiting),
            ),
            Family(
                "connections_open",
                "Connections open now, by transport.",
                G,
                by(
                    "transport",
                    &[
                        ("tcp", &i.connections_open),
                        ("grpc", &i.grpc_connections_open),
                    ],
                ),
            ),
            Family(
                "ingest_memory_bytes",
                "Bytes TCP connections' buffers hold (under --ingest_memory).",
                G,
                one(&i.ingest_memory_bytes),
            ),
            Family(
                "grpc_inflight_bytes",
                "Request bytes gRPC calls hold (under --grpc_max_inflight_bytes).",
                G,
                one(&i.grpc_inflight_bytes),
            ),
        ];
        if let Some(f) = &self.0.forward {
            families.extend(forward_families(f, w.lines.get()));
        }
        families
    }
}

/// `--forward_otlp`'s families, exported only when forwarding is on.
fn forward_families(f: &ForwardStats, written: u64) -> Vec<Family> {
    use MetricType::{Counter as C, Gauge as G};
    let one = |c: &Counter| vec![(None, c.get())];
    vec![
        Family(
            "forwarded_lines",
            "Lines the forwarding destination acknowledged.",
            C,
            one(&f.lines),
        ),
        Family(
            "forward_rejected_lines",
            "Lines the forwarding destination rejected (partial success, or refused as bad data).",
            C,
            one(&f.rejected),
        ),
        Family(
            "forward_retries",
            "Export requests sent again after a retryable answer or none.",
            C,
            one(&f.retries),
        ),
        Family(
            "forward_lost_lines",
            "Lines rotation removed before they were forwarded.",
            C,
            one(&f.lost_lines),
        ),
        Family(
            "forward_lost_files",
            "Log files rotation removed before they were forwarded in full.",
            C,
            one(&f.lost_files),
        ),
        Family(
            "forward_resent_lines",
            "Lines sent again after a stop left them unacknowledged (the destination may have them twice).",
            C,
            one(&f.resent),
        ),
        Family(
            "forward_lag_lines",
            "Lines written to the files and not yet forwarded.",
            G,
            vec![(None, f.lag_lines(written))],
        ),
        Family(
            "forward_lag_milliseconds",
            "Time since forwarding last had nothing left to send (0 when it has nothing left).",
            G,
            vec![(None, (f.lag_seconds(written) * 1000.0) as u64)],
        ),
    ]
}

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for Family(name, help, kind, samples) in self.families() {
            let counter = kind == MetricType::Counter;
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            match samples.as_slice() {
                // An unlabelled family: one sample, under the name itself.
                &[(None, value)] => encode_value(metric, value, counter)?,
                _ => {
                    for (label, value) in samples {
                        let label = [label.unwrap_or(("", ""))];
                        encode_value(metric.encode_family(&label)?, value, counter)?;
                    }
                }
            }
        }
        // The whole run's receive-to-written latency, kept in microseconds.
        let h = self.0.writer.stats.latency_histogram();
        let buckets = latency_buckets(&h);
        let sum = h.mean() * h.len() as f64 / 1e6;
        encoder
            .encode_descriptor(
                "receive_to_written_seconds",
                "Time from reading a message to its line being in the file.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, h.len(), &buckets, None)
    }
}

/// One sample as a counter or a gauge.
fn encode_value(m: MetricEncoder<'_>, v: u64, counter: bool) -> Result<(), std::fmt::Error> {
    if counter {
        ConstCounter::new(v).encode(m)
    } else {
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)
    }
}

/// [`LATENCY_BUCKETS`] and `+Inf` with the count of each bucket of `h`
/// (microseconds) on its own: the encoder accumulates them.
fn latency_buckets(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    let mut below = 0;
    LATENCY_BUCKETS
        .iter()
        .map(|&s| h.count_between(0, (s * 1e6) as u64))
        .chain(std::iter::once(h.len()))
        .zip(LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]))
        .map(|(cumulative, bound)| {
            let own = cumulative.saturating_sub(below);
            below = cumulative.max(below);
            (bound, own)
        })
        .collect()
}

/// Why the metrics port could not start.
#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the metrics thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// The axum route serving `GET /metrics` from `exporter`.
pub fn router(exporter: Arc<Exporter>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = exporter.render();
            async move { ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], body) }
        }),
    )
}

/// `--metrics_port`: `/metrics` over HTTP/1.1 on a port of its own, served
/// by a thread with a small runtime.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, exporter: Arc<Exporter>) -> Result<Self, MetricsError> {
        let bind = |source| MetricsError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        let local_addr = listener.local_addr().map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let (stop, mut stopped) = watch::channel(false);
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "Cannot start the metrics runtime; /metrics is not served on --metrics_port.");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "Cannot register the metrics listener.");
                            return;
                        }
                    };
                    let serve = axum::serve(listener, router(exporter)).with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "The metrics server failed.");
                    }
                });
            })
            .map_err(MetricsError::Spawn)?;
        Ok(MetricsServer {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{new_latency_histogram, record_latency};

    #[test]
    fn latency_buckets_hold_each_their_own_count() {
        let mut h = new_latency_histogram();
        record_latency(&mut h, Duration::from_micros(300), 9);
        record_latency(&mut h, Duration::from_millis(30), 1);
        record_latency(&mut h, Duration::from_secs(60), 2);
        let b = latency_buckets(&h);
        assert_eq!(b.len(), LATENCY_BUCKETS.len() + 1);
        let count = |bound: f64| b.iter().find(|(x, _)| *x == bound).unwrap().1;
        assert_eq!(count(0.0005), 9);
        assert_eq!(count(0.05), 1);
        assert_eq!(count(f64::INFINITY), 2);
        assert_eq!(b.iter().map(|(_, n)| n).sum::<u64>(), 12);
    }
}
