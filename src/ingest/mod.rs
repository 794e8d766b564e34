//! The ingest side of the pipeline: bytes from clients -> formatted
//! [`Record`](crate::record::Record)s in the queue.
//!
//! - [`frame`]: split a TCP byte stream into length-prefixed frames (pure).
//! - [`decode`]: a frame payload (Cap'n Proto) or a gRPC request -> the
//!   fields of a message (pure).
//! - [`batch`]: decoded messages -> sequence numbers -> formatted lines ->
//!   one record pushed to the queue; shared by every front door.

pub mod batch;
pub mod conn;
pub mod decode;
pub mod frame;
pub mod grpc;
pub mod tcp;
