//! The wire contract of log-server, without the server: what clients send
//! and how it is framed, decoded and encoded. The server, `loadgen`, the
//! tests and Rust clients all use this crate; `docs/PROTOCOL.md` is its
//! specification.
//!
//! # Layout
//!
//! ```text
//! TCP bytes -> frame -> decode -> fields (Fields / RawFields)
//! fields -> encode -> TCP bytes          (the client side)
//! gRPC: proto::LogRequest -> decode::fields_from_request -> fields
//! OTLP/JSON body -> otlp_json::decode_request -> otlp::...::ExportLogsServiceRequest
//! ```
//!
//! - [`frame`]: split a TCP byte stream into length-prefixed frames (pure).
//! - [`decode`]: a frame payload (Cap'n Proto, packed or not) or a gRPC
//!   request -> the fields of a message, or a hello's identity (pure).
//! - [`unpack`]: Cap'n Proto unpacking, with a BMI2 fast path on x86-64.
//! - [`encode`]: the client side: fields -> payloads and frames, hellos,
//!   heartbeats.
//! - [`fields`]: the sixteen fields of one message and its [`fields::Level`].
//! - [`logger_capnp`], [`hello_capnp`], [`proto`]: code generated from
//!   `schema/` and `proto/` at the top of the repository (see `build.rs`);
//!   `proto` holds the messages and the tonic clients.
//! - [`otlp_json`]: an OTLP/JSON `ExportLogsServiceRequest` (the body of
//!   OTLP/HTTP `POST /v1/logs` as `application/json`) -> the prost
//!   [`otlp`] messages the protobuf body and OTLP/gRPC give.
//! - [`output`]: the names of the files the server writes, for tools that
//!   read them back.

pub mod decode;
pub mod encode;
pub mod fields;
pub mod frame;
mod generated;
pub mod otlp_json;
pub mod output;
pub mod unpack;

pub use generated::{hello_capnp, logger_capnp, proto};

/// The OTLP logs messages (`opentelemetry.proto.*.v1`) and the tonic client
/// of `LogsService`, as OpenTelemetry SDKs send them.
pub mod otlp {
    pub use crate::generated::opentelemetry::proto::{collector, common, logs, resource};
}
