//! OTLP logs ingest with requests of 512 records (an SDK's default batch):
//! the pure part on one core (protobuf decode, then records -> lines, text
//! and JSON), and OTLP/gRPC `Export` end to end on loopback against an
//! in-process server at its defaults (10 MiB files, rotation, fsync on
//! rotation, `written` acks), the requests encoded before the clock starts.
//!
//! `cargo bench --bench otlp`

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use log_server::{
    format::{LineFormat, LineFormatter, ReceivedAt},
    forward::export::{RawCodec, EXPORT_METHOD},
    ingest::otlp::write_lines,
    server::{Server, ServerConfig},
};
use log_server_wire::otlp::{
    collector::logs::v1::ExportLogsServiceRequest, view::ExportRequestView,
};
use otlp_request::{request, BATCH};
use prost::Message as _;
use tonic::transport::Channel;

#[path = "common/otlp_request.rs"]
mod otlp_request;

/// Requests in flight at once in the end-to-end run.
const IN_FLIGHT: usize = 8;
/// Requests per end-to-end run.
const REQUESTS: usize = 400;

/// Decode and format on one core: what the server spends per record before
/// the queue.
fn pure(c: &mut Criterion) {
    let encoded = request(0).encode_to_vec();
    let at = ReceivedAt::new(std::time::SystemTime::now());
    let mut g = c.benchmark_group("otlp_512");
    g.throughput(Throughput::Elements(BATCH as u64));
    // For comparison: the generated types (a dozen allocations a record).
    g.bench_function("decode_prost", |b| {
        b.iter(|| ExportLogsServiceRequest::decode(encoded.as_slice()).unwrap())
    });
    g.bench_function("check_view", |b| {
        b.iter(|| ExportRequestView::parse(&encoded).unwrap().record_count())
    });
    for (name, format) in [("text", LineFormat::Text), ("json", LineFormat::Json)] {
        let formatter = LineFormatter::new(format, 10 << 20);
        let mut out = Vec::with_capacity(BATCH * 512);
        g.bench_function(format!("check_and_lines_{name}"), |b| {
            b.iter(|| {
                out.clear();
                let request = ExportRequestView::parse(&encoded).unwrap();
                write_lines(&formatter, request, 0, 0, &at, &mut out)
            })
        });
    }
    g.finish();
}

// The client sends requests already encoded (the forwarder's codec): like
// the TCP benchmarks' pre-built frames, the sender's own encoding is left
// out of what the server is measured on (the machine has two cores).

/// `REQUESTS` exports of `BATCH` records, `IN_FLIGHT` at a time on one
/// connection (as one SDK process with concurrent exports would), each
/// request already encoded.
async fn exports(addr: SocketAddr, requests: &[bytes::Bytes]) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let path = http::uri::PathAndQuery::from_static(EXPORT_METHOD);
    let mut tasks = Vec::new();
    for t in 0..IN_FLIGHT {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let path = path.clone();
        let mine: Vec<_> = requests
            .iter()
            .skip(t)
            .step_by(IN_FLIGHT)
            .cloned()
            .collect();
        tasks.push(tokio::spawn(async move {
            for r in mine {
                grpc.ready().await.unwrap();
                grpc.unary(tonic::Request::new(r), path.clone(), RawCodec)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let requests: Vec<bytes::Bytes> = (0..REQUESTS)
        .map(|i| request(i * BATCH).encode_to_vec().into())
        .collect();
    let mut g = c.benchmark_group("otlp_grpc_export");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements((REQUESTS * BATCH) as u64));
    g.bench_function(
        format!("batches_of_{BATCH}_{IN_FLIGHT}_in_flight_defaults"),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let server = Server::start(ServerConfig {
                        port: 0,
                        grpc_port: 0,
                        log_dir: dir.path().join("logs"),
                        ..ServerConfig::default()
                    })
                    .unwrap();
                    let addr = server.grpc_addr().unwrap();
                    let t = Instant::now();
                    rt.block_on(exports(addr, &requests));
                    total += t.elapsed();
                    assert_eq!(server.shutdown().writer.lines, (REQUESTS * BATCH) as u64);
                }
                total
            })
        },
    );
    g.finish();
}

criterion_group!(benches, pure, end_to_end);
criterion_main!(benches);
