//! log-server: a log sink for one Linux host.
//!
//! Programs send log messages over TCP (length-prefixed Cap'n Proto) or
//! gRPC; the server gives every message a place in one global order and
//! writes it, as one line, to rotating files. Nothing it accepted is lost or
//! written twice.
//!
//! # Layout
//!
//! The modules follow the data flow:
//!
//! ```text
//! ingest::tcp / ingest::grpc -> wire: frame -> decode -> format
//!     -> ingest::ingress -> queue (Sequencer + RecordQueue)
//!     -> writer (reorder -> batch -> writev -> retry -> rotate) -> files
//! ```
//!
//! - The wire contract (schemas, codegen, framing, decoding, encoding, the
//!   fields of a message) is a crate of its own, `log_server_wire`
//!   (`crates/wire`), specified by `docs/PROTOCOL.md`; `loadgen` and Rust
//!   clients use it without linking the server.
//! - [`server`]: wires it all from one `ServerConfig`; the binary and the
//!   tests start a `Server`.
//! - [`ingest`]: the front doors (TCP over io_uring or epoll, gRPC) and
//!   the step that turns decoded messages into sequenced, formatted
//!   records.
//! - [`format`](mod@format): one message -> one text or JSON line (pure).
//! - [`record`]: the [`record::Record`] that crosses stages.
//! - [`queue`]: the global sequencer and the bounded lock-free queue.
//! - [`progress`]: the written/synced watermarks beside the queue: the
//!   writer advances them, gRPC acknowledgements wait on them.
//! - [`writer`]: the writer thread: reorder buffer, dynamic batches,
//!   vectored writes, retries, rotation, SIGHUP reopen; its finisher thread
//!   fsyncs and compresses rotated files.
//! - [`metrics`]: counters, internal events and latency histograms;
//!   [`prometheus`]: them as `GET /metrics`.
//! - [`forward`]: after the writer, beside the pipeline: follows the files
//!   and sends every line on over OTLP (`--forward_otlp`), at least once.
//! - [`rpc_status`]: `google.rpc.Status` and `RetryInfo`, the error
//!   details both ends of OTLP use.
//! - [`sched`]: what the writer and the forwarder ask of the kernel's
//!   scheduler, beside the data flow.
//! - [`systemd`]: READY/STOPPING/WATCHDOG notifications to the service
//!   manager, beside the data flow.

pub mod format;
pub mod forward;
pub mod ingest;
pub mod metrics;
pub mod progress;
pub mod prometheus;
pub mod queue;
pub mod record;
pub mod rpc_status;
pub mod sched;
pub mod server;
pub mod systemd;
pub mod writer;

/// What the library's own tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// Says that a test, or part of one, did not run and why: on stderr,
    /// and in the file `LOG_SERVER_SKIPS` names (`.ci/run` lists and
    /// counts the skips), as the integration tests' `util::skipped` does.
    pub(crate) fn skipped(what: &str) {
        use std::io::Write;
        eprintln!("SKIPPED: {what}");
        if let Some(path) = std::env::var_os("LOG_SERVER_SKIPS") {
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{what}"));
        }
    }
}
