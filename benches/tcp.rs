//! The real TCP path on loopback: pre-encoded ~200-byte packed frames from
//! 1 and 2 client connections -> io_uring or epoll ingest -> queue ->
//! writer -> a file, timed until the last line is written.
//!
//! `cargo bench --bench tcp` measures both engines side by side in one run.

use std::{
    io::Write,
    net::TcpStream,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use log_server::{
    ingest::tcp::{uring_available, IoEngine},
    server::{Server, ServerConfig},
    writer::WriterConfig,
};
use log_server_wire::{
    encode::{push_logger_frame, Packing},
    fields::{Fields, Level},
};

const MESSAGES_PER_CONNECTION: usize = 200_000;

/// Pre-encoded frames of connection `conn`, each message ~200 bytes.
fn stream(conn: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for n in 0..MESSAGES_PER_CONNECTION {
        let msg = format!(
            "conn={conn} n={n:08} GET /api/v1/orders/8812 200 12.4ms user=4411 upstream=orders"
        );
        push_logger_frame(
            &mut out,
            &Fields {
                timestamp: "2026-01-02T15:04:05.000000000Z",
                hostname: "web-01",
                logger_name: "app.http",
                level: Level(3),
                filename: "server.py",
                function_name: "handle_request",
                line_number: "142",
                message: &msg,
                process_id: "4242",
                ..Fields::default()
            },
            Packing::Packed,
        );
    }
    out
}

fn tcp_ingest(c: &mut Criterion) {
    let streams: Vec<Arc<Vec<u8>>> = (0..2).map(|i| Arc::new(stream(i))).collect();
    let mut engines = vec![IoEngine::Epoll];
    match uring_available() {
        Ok(()) => engines.insert(0, IoEngine::Uring),
        Err(e) => eprintln!("io_uring unavailable ({e}): measuring epoll only"),
    }
    let mut g = c.benchmark_group("tcp_ingest");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for conns in [1usize, 2] {
        g.throughput(Throughput::Elements(
            (conns * MESSAGES_PER_CONNECTION) as u64,
        ));
        for &engine in &engines {
            g.bench_function(format!("{engine}_{conns}_connections"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run_once(engine, &streams[..conns]);
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

/// Starts a fresh server, sends every stream on its own connection, and
/// returns the time until the writer has written every line.
fn run_once(engine: IoEngine, streams: &[Arc<Vec<u8>>]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig {
        port: 0,
        only_tcp: true,
        io_engine: engine,
        log_dir: dir.path().to_path_buf(),
        writer: WriterConfig {
            max_file_size: 1 << 30,
            ..WriterConfig::default()
        },
        ..ServerConfig::default()
    })
    .unwrap();
    let addr = server.tcp_addr();
    let expected = (streams.len() * MESSAGES_PER_CONNECTION) as u64;
    let start = Instant::now();
    let clients: Vec<_> = streams
        .iter()
        .map(|s| {
            let s = s.clone();
            thread::spawn(move || {
                let mut conn = TcpStream::connect(addr).unwrap();
                conn.write_all(&s).unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let progress = server.progress().clone();
    while progress.written() < expected {
        thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    let report = server.shutdown();
    assert_eq!(report.writer.lines, expected);
    elapsed
}

criterion_group!(benches, tcp_ingest);
criterion_main!(benches);
