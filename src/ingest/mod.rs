//! The ingest side of the pipeline: bytes from clients -> formatted
//! [`Record`](crate::record::Record)s in the queue.
//!
//! - [`tcp`]: listeners, ingest threads, io_uring and epoll engines,
//!   connection limits, graceful shutdown.
//! - [`budget`]: the memory budget shared by every TCP connection's
//!   buffers (`--ingest_memory`).
//! - [`conn`]: one TCP connection's protocol state, engine-independent.
//! - [`grpc`]: the tonic server on its own thread and runtime.
//! - [`otlp`]: OpenTelemetry logs (OTLP/gRPC, OTLP/HTTP) on the gRPC port:
//!   records -> the same lines, numbers and queue.
//! - [`ingress`]: decoded messages -> sequence numbers -> formatted lines ->
//!   one record pushed to the queue; shared by every front door.
//!
//! Framing and decoding (pure) are the wire crate's
//! ([`log_server_wire::frame`], [`log_server_wire::decode`]).

pub mod budget;
pub mod conn;
pub mod grpc;
pub mod ingress;
pub mod otlp;
pub mod tcp;
