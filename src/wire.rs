//! Code generated at build time from `schema/*.capnp` and
//! `proto/log_service.proto` (see `build.rs`). These types are the wire
//! contract of PROTOCOL.md; the rest of the crate reads them only in
//! `ingest::decode` and writes them only in `encode`.

#![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]

capnp::generated_code!(pub mod logger_capnp);
capnp::generated_code!(pub mod hello_capnp);

/// Protobuf messages and the tonic client and server of package `logservice`.
pub mod proto {
    tonic::include_proto!("logservice");

    /// Encoded `FileDescriptorSet` of `proto/log_service.proto`, for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/log_service_descriptor.bin"));
}
