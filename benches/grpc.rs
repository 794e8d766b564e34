//! gRPC ingest on loopback, server in-process (release), at the server's
//! defaults (10 MiB files, rotation, fsync on rotation, `written` acks):
//! unary calls with 64 in flight, beside the same calls to a tonic server
//! whose handler does nothing (tonic's own ceiling on this machine, same
//! client, same run); one client stream; and the latency of a `written`
//! acknowledgement (printed as percentiles after the throughput runs).
//!
//! `cargo bench --bench grpc`

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use log_server::{
    ingest::grpc::{
        codec::MessageLimitLayer,
        service::log_bridge_server::{LogBridge, LogBridgeServer},
    },
    metrics::{new_latency_histogram, record_latency, LatencySummary},
    server::{Server, ServerConfig},
};
use log_server_wire::proto::{
    log_bridge_client::LogBridgeClient, LogRequest, LogResponse, LogSummary,
};
use tonic::{transport::Channel, Request, Response, Status, Streaming};

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
        ..ServerConfig::default()
    })
    .unwrap()
}

/// A `LogBridge` that answers at once and keeps nothing: what tonic itself
/// costs per call.
struct NoOp;

#[tonic::async_trait]
impl LogBridge for NoOp {
    async fn log_message(&self, _: Request<LogRequest>) -> Result<Response<LogResponse>, Status> {
        Ok(Response::new(LogResponse { success: true }))
    }

    async fn log_stream(
        &self,
        request: Request<Streaming<LogRequest>>,
    ) -> Result<Response<LogSummary>, Status> {
        let mut stream = request.into_inner();
        let mut accepted = 0;
        while stream.message().await?.is_some() {
            accepted += 1;
        }
        Ok(Response::new(LogSummary { accepted }))
    }
}

/// Serves [`NoOp`] on 127.0.0.1:0 (with TCP_NODELAY, as log-server's
/// sockets have it) on `rt`; returns its address.
fn start_noop(rt: &tokio::runtime::Runtime) -> SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .layer(MessageLimitLayer(4 << 20))
            .add_service(LogBridgeServer::new(NoOp))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
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
    let noop = start_noop(&rt);
    g.bench_function(format!("tonic_noop_unary_{CONCURRENCY}_in_flight"), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                rt.block_on(unary(noop, UNARY));
            }
            t.elapsed()
        })
    });
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
