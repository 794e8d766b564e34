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
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
    view::ExportRequestView,
};
use prost::Message as _;
use tonic::transport::Channel;

/// Records per request: the default batch of OpenTelemetry SDKs' batch
/// processors.
const BATCH: usize = 512;
/// Requests in flight at once in the end-to-end run.
const IN_FLIGHT: usize = 8;
/// Requests per end-to-end run.
const REQUESTS: usize = 400;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

/// A request as the Node SDK sends it: the SDK's resource, one scope, and
/// records with a ~100-byte body, code location, two attributes and a trace
/// context (~200 bytes of line each, like the TCP benchmarks' messages).
fn request(first: usize) -> ExportLogsServiceRequest {
    let records = (first..first + BATCH)
        .map(|n| LogRecord {
            time_unix_nano: 1_795_502_173_000_000_000 + n as u64,
            observed_time_unix_nano: 1_795_502_173_000_000_000 + n as u64,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(format!(
                    "n={n:08} GET /api/v1/orders/8812 200 12.4ms user=4411 upstream=orders-svc"
                ))),
            }),
            attributes: vec![
                text("code.file.path", "/srv/app/server.js"),
                text("code.function.name", "handleRequest"),
                kv("code.line.number", Value::IntValue(142)),
                text("http.route", "/api/v1/orders/:id"),
                kv("user.id", Value::IntValue(4411)),
            ],
            trace_id: vec![0x5b; 16],
            span_id: vec![0x3c; 8],
            flags: 1,
            ..LogRecord::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "orders"),
                    text("host.name", "web-01"),
                    kv("process.pid", Value::IntValue(4242)),
                    text("telemetry.sdk.language", "nodejs"),
                    text("telemetry.sdk.name", "opentelemetry"),
                    text("telemetry.sdk.version", "1.30.1"),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app.http".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

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
