//! Generates the server side of the gRPC services of `proto/` (the wire
//! crate, `crates/wire`, generates the messages and clients): the service
//! traits and tower services `src/ingest/grpc` implements and serves, built
//! with the server's own codec (`src/ingest/grpc/codec.rs`), which answers
//! malformed and oversized requests with the status codes of
//! `docs/PROTOCOL.md`. Only the server needs them, so clients and loadgen do
//! not compile or link any server code.

fn main() {
    let proto = "proto/log_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"]).expect("protox rejected proto/log_service.proto");
    tonic_prost_build::configure()
        .codec_path("crate::ingest::grpc::codec::LogCodec")
        // The messages are the wire crate's: generate none here.
        .extern_path(".logservice", "::log_server_wire::proto")
        .build_client(false)
        .build_server(true)
        .compile_fds(fds)
        .expect("gRPC server code generation failed");
}
