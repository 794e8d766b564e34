//! Generates the server side of the gRPC services of `proto/` (the wire
//! crate, `crates/wire`, generates the messages and clients): the service
//! traits and tower services `src/ingest/grpc` and `src/ingest/otlp`
//! implement and serve, built with the server's own codec
//! (`src/ingest/grpc/codec.rs`), which answers malformed and oversized
//! requests with the status codes of `docs/PROTOCOL.md`. Only the server
//! needs them, so clients and loadgen do not compile or link any server
//! code.

fn main() {
    let protos = [
        "proto/log_service.proto",
        "proto/opentelemetry/proto/collector/logs/v1/logs_service.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"]).expect("protox rejected a file under proto/");
    tonic_prost_build::configure()
        .codec_path("crate::ingest::grpc::codec::LogCodec")
        // The messages are the wire crate's: generate none here.
        .extern_path(".logservice", "::log_server_wire::proto")
        .extern_path(".opentelemetry.proto", "::log_server_wire::otlp")
        // An export request reaches the handler as its bytes: the server
        // reads it with the wire crate's zero-copy view.
        .extern_path(
            ".opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
            "crate::ingest::otlp::RawExport",
        )
        .build_client(false)
        .build_server(true)
        .compile_fds(fds)
        .expect("gRPC server code generation failed");
}
