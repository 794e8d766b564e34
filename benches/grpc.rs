//! gRPC ingest on loopback, server in-process (release): unary calls with
//! 64 in flight, one client stream, and the latency of a `written`
//! acknowledgement (printed as percentiles after the throughput runs).
//!
//! `cargo bench --bench grpc`

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use log_server::{
    metrics::{new_latency_histogram, record_latency, LatencySummary},
    server::{Server, ServerConfig},
    writer::WriterConfig,
};
use log_server_wire::proto::{log_bridge_client::LogBridgeClient, LogRequest};
use tonic::transport::Channel;

const UNARY: usize = 20_480; // a multiple of CONCURRENCY
const CONCURRENCY: usize = 64;
const STREAMED: usize = 200_000;

fn request(n: usize) -> LogRequest {
    LogRequest {
        timestamp: "2026-01-02T15:04:05.000000000Z".into(),
        hostname: "web-01".into(),
        logger_name: "app.http".into(),
        level: 3,
        filename: "server.js".into(),
        function_name: "handleRequest".into(),
        line_number: "142".into(),
        message: format!(
            "n={n:08} GET /api/v1/orders/8812 200 12.4ms user=4411 upstream=orders-svc"
        ),
        process_id: "4242".into(),
        ..LogRequest::default()
    }
}

fn start(dir: &std::path::Path) -> Server {
    Server::start(ServerConfig {
        port: 0,
        grpc_port: 0,
        log_dir: dir.to_path_buf(),
        writer: WriterConfig {
            max_file_size: 1 << 30,
            ..WriterConfig::default()
        },
        ..ServerConfig::default()
    })
    .unwrap()
}

async fn client(addr: SocketAddr) -> LogBridgeClient<Channel> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    LogBridgeClient::new(ch)
}

/// `total` unary calls, `CONCURRENCY` in flight; returns each call's latency.
async fn unary(addr: SocketAddr, total: usize) -> Vec<Duration> {
    let per_task = total / CONCURRENCY;
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let mut c = client(addr).await;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for n in 0..per_task {
                let start = Instant::now();
                assert!(
                    c.log_message(request(t * per_task + n))
                        .await
                        .unwrap()
                        .into_inner()
                        .success
                );
                latencies.push(start.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn grpc_ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("grpc_ingest");
    g.sample_size(10).measurement_time(Duration::from_secs(15));

    g.throughput(Throughput::Elements(UNARY as u64));
    g.bench_function(format!("unary_{CONCURRENCY}_in_flight_written_ack"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let server = start(dir.path());
                let addr = server.grpc_addr().unwrap();
                let t = Instant::now();
                rt.block_on(unary(addr, UNARY));
                total += t.elapsed();
                assert_eq!(server.shutdown().writer.lines, UNARY as u64);
            }
            total
        })
    });

    g.throughput(Throughput::Elements(STREAMED as u64));
    g.bench_function("one_stream", |b| {
        let requests: Vec<LogRequest> = (0..STREAMED).map(request).collect();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let server = start(dir.path());
                let addr = server.grpc_addr().unwrap();
                let requests = requests.clone();
                let t = Instant::now();
                let accepted = rt.block_on(async move {
                    client(addr)
                        .await
                        .log_stream(tokio_stream::iter(requests))
                        .await
                        .unwrap()
                        .into_inner()
                        .accepted
                });
                total += t.elapsed();
                assert_eq!(accepted, STREAMED as u64);
                server.shutdown();
            }
            total
        })
    });
    g.finish();

    // Latency of a `written` acknowledgement at the load above.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let latencies = rt.block_on(unary(server.grpc_addr().unwrap(), UNARY));
    let mut h = new_latency_histogram();
    for l in latencies {
        record_latency(&mut h, l, 1);
    }
    eprintln!(
        "grpc unary written-ack latency ({CONCURRENCY} in flight): {}",
        LatencySummary::of(&h)
    );
    server.shutdown();
}

criterion_group!(benches, grpc_ingest);
criterion_main!(benches);
