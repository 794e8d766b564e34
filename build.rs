//! Generates the wire code at build time with no system tool: the Cap'n Proto
//! schemas are compiled by the capnp compiler embedded in `capnpc-embedded`,
//! the protobuf file by `protox` (a pure-Rust protoc). A machine with only
//! rustup builds the project with `cargo build`.

use std::{env, path::PathBuf};

use prost::Message as _;

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    for schema in ["schema/logger.capnp", "schema/hello.capnp"] {
        println!("cargo:rerun-if-changed={schema}");
    }
    let request = capnpc_embedded::CompileCommand::new()
        .src_prefix("schema")
        .file("schema/logger.capnp")
        .file("schema/hello.capnp")
        .compile()
        .expect("the embedded capnp compiler rejected a schema under schema/");
    capnpc::codegen::CodeGenerationCommand::new()
        .output_directory(&out_dir)
        .default_parent_module(vec!["wire".into()])
        .run(&request[..])
        .expect("capnp code generation failed");

    let proto = "proto/log_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"]).expect("protox rejected proto/log_service.proto");
    // Kept for gRPC server reflection, so grpcurl works without the .proto file.
    std::fs::write(
        out_dir.join("log_service_descriptor.bin"),
        fds.encode_to_vec(),
    )
    .expect("write the protobuf file descriptor set");
    tonic_prost_build::configure()
        // Our codec: protobuf errors become INVALID_ARGUMENT and oversized
        // messages RESOURCE_EXHAUSTED (see src/ingest/grpc/codec.rs).
        .codec_path("crate::ingest::grpc::codec::LogCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("protobuf code generation failed");
}
