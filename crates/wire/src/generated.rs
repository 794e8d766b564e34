//! Code generated at build time from `schema/*.capnp`,
//! `proto/log_service.proto` and the OTLP logs files of
//! `proto/opentelemetry/` (see this crate's `build.rs`). These types are
//! the wire contract of `docs/PROTOCOL.md`; the rest of the crate reads them
//! only in [`crate::decode`] and [`crate::otlp`], and writes them only in
//! [`crate::encode`].

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

    /// Encoded `FileDescriptorSet` of `proto/log_service.proto` and the OTLP
    /// logs service, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/log_service_descriptor.bin"));
}

/// The OTLP logs messages and the tonic client of
/// `opentelemetry.proto.collector.logs.v1.LogsService`, from
/// `proto/opentelemetry/` (nested as the packages are, which the generated
/// code's paths between packages need).
pub mod opentelemetry {
    pub mod proto {
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.common.v1");
            }
        }
        pub mod resource {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.resource.v1");
            }
        }
        pub mod logs {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.logs.v1");
            }
        }
        pub mod collector {
            pub mod logs {
                pub mod v1 {
                    tonic::include_proto!("opentelemetry.proto.collector.logs.v1");
                }
            }
        }
    }
}
