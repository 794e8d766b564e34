//! The ingest side of the pipeline: bytes from clients -> formatted
//! [`Record`](crate::record::Record)s in the queue.
//!
//! - [`tcp`]: listeners, ingest threads, io_uring and epoll engines,
//!   connection limits, graceful shutdown.
//! - [`budget`]: the memory budget shared by every TCP connection's
//!   buffers (`--ingest_memory`).
//! - [`conn`]: one TCP connection's protocol state, engine-independent.
//! - [`grpc`]: the tonic server on its own thread and runtime.
//! - [`frame`]: split a TCP byte stream into length-prefixed frames (pure).
//! - [`decode`]: a frame payload (Cap'n Proto) or a gRPC request -> the
//!   fields of a message (pure).
//! - [`batch`]: decoded messages -> sequence numbers -> formatted lines ->
//!   one record pushed to the queue; shared by every front door.

pub mod batch;
pub mod budget;
pub mod conn;
pub mod decode;
pub mod frame;
pub mod grpc;
pub mod tcp;
