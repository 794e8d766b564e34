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
//! ingest::tcp / ingest::grpc -> ingest::frame -> ingest::decode -> format
//!     -> ingest::batch -> queue (Sequencer + RecordQueue)
//!     -> writer (reorder -> batch -> writev -> retry -> rotate) -> files
//! ```
//!
//! - [`server`]: wires it all from one `ServerConfig`; the binary and the
//!   tests start a `Server`.
//! - [`ingest`]: the front doors (TCP over io_uring or epoll, gRPC),
//!   framing and decoding (pure), and the step that turns decoded messages
//!   into sequenced, formatted records.
//! - [`format`](mod@format): one message -> one text or JSON line (pure).
//! - [`record`]: the types that cross stages: [`record::Fields`] (and
//!   [`record::RawFields`], as on the wire) and [`record::Record`].
//! - [`queue`]: the global sequencer and the bounded lock-free queue.
//! - [`writer`]: the writer thread: reorder buffer, dynamic batches,
//!   vectored writes, retries, rotation, fsync, watermarks.
//! - [`metrics`]: counters and latency histograms.
//! - [`encode`]: the client side of the TCP contract (loadgen, tests).
//! - [`wire`]: code generated from `schema/` and `proto/`.

pub mod encode;
pub mod format;
pub mod ingest;
pub mod metrics;
pub mod prometheus;
pub mod queue;
pub mod record;
pub mod server;
pub mod systemd;
pub mod wire;
pub mod writer;
