//! Code generated at build time from `schema/*.capnp` and
//! `proto/log_service.proto` (see this crate's `build.rs`). These types are
//! the wire contract of `docs/PROTOCOL.md`; the rest of the crate reads them
//! only in [`crate::decode`] and writes them only in [`crate::encode`].

#![allow(
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]

capnp::generated_code!(pub mod logger_capnp);
capnp::generated_code!(pub mod hello_capnp);

/// Protobuf messages and the tonic clients of package `logservice`. The
/// server side of the services is generated in the server crate, which
/// alone implements them.
pub mod proto {
    tonic::include_proto!("logservice");

    /// Encoded `FileDescriptorSet` of `proto/log_service.proto`, for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/log_service_descriptor.bin"));
}
