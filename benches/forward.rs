//! The forwarder's pure stage on one core: 512 lines of the log files ->
//! one encoded OTLP `ExportLogsServiceRequest` (`forward::lines`), for
//! realistic text and JSON lines of native messages (~200 bytes of text
//! line) and for lines that came in over OTLP (attributes, resource, scope
//! and trace context in the metadata). Target: 1.5 M text lines/s.
//!
//! `cargo bench --bench forward`

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use log_server::{
    format::{LineFormat, LineFormatter, ReceivedAt},
    forward::lines::RequestBuilder,
    ingest::otlp::write_lines,
};
use log_server_wire::{
    fields::{Fields, Level},
    otlp::{
        collector::logs::v1::ExportLogsServiceRequest,
        common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        resource::v1::Resource,
        view::ExportRequestView,
    },
};
use prost::Message as _;

/// Lines per request: an SDK's default batch.
const BATCH: usize = 512;

/// 512 lines of native messages as the writer writes them.
fn native_lines(format: LineFormat) -> Vec<Vec<u8>> {
    let formatter = LineFormatter::new(format, 10 << 20);
    let at = ReceivedAt::new(SystemTime::now());
    (0..BATCH)
        .map(|i| {
            let timestamp = format!(
                "2026-01-02T15:04:{:02}.{:06}Z",
                i % 60,
                i * 1931 % 1_000_000
            );
            let line_number = (100 + i % 400).to_string();
            let message = format!(
                "order {i} accepted for customer {} with {} items, total {}.{:02} EUR",
                i * 7919 % 100_000,
                1 + i % 9,
                10 + i % 990,
                i % 100
            );
            let f = Fields {
                timestamp: &timestamp,
                hostname: "web-01",
                logger_name: "shop.orders",
                level: Level([3, 3, 3, 1, 9, 10][i % 6]),
                filename: "orders.py",
                function_name: "accept_order",
                line_number: &line_number,
                message: &message,
                process_id: "4242",
                thread_id: "140001",
                service_name: "shop",
                ..Fields::default()
            };
            let mut out = Vec::new();
            formatter.write(&f, i as u64, &at, &mut out);
            out.pop();
            out
        })
        .collect()
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// 512 lines of OTLP records as OTLP ingest writes them.
fn otlp_lines(format: LineFormat) -> Vec<Vec<u8>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let records = (0..BATCH)
        .map(|i| LogRecord {
            time_unix_nano: now.as_nanos() as u64 + i as u64,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(format!(
                    "GET /api/items/{i} 200 in {} ms",
                    i % 50
                ))),
            }),
            attributes: vec![
                kv(
                    "code.file.path",
                    Value::StringValue("/srv/app/handlers.py".into()),
                ),
                kv("code.function.name", Value::StringValue("get_item".into())),
                kv("code.line.number", Value::IntValue(88)),
                kv("http.route", Value::StringValue("/api/items/{id}".into())),
                kv("http.status_code", Value::IntValue(200)),
            ],
            trace_id: (0..16).map(|b| (b * 7 + i) as u8).collect(),
            span_id: (0..8).map(|b| (b * 3 + i) as u8).collect(),
            flags: 1,
            ..LogRecord::default()
        })
        .collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("host.name", Value::StringValue("web-01".into())),
                    kv("service.name", Value::StringValue("shop".into())),
                    kv("process.pid", Value::IntValue(4242)),
                    kv("deployment.environment", Value::StringValue("prod".into())),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "shop.api".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let encoded = request.encode_to_vec();
    let mut out = Vec::new();
    let view = ExportRequestView::parse(&encoded).expect("a valid request");
    let formatter = LineFormatter::new(format, 10 << 20);
    write_lines(
        &formatter,
        view,
        0,
        0,
        &ReceivedAt::new(SystemTime::now()),
        &mut out,
    );
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn lines_to_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward_lines_512");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, lines) in [
        ("text", native_lines(LineFormat::Text)),
        ("json", native_lines(LineFormat::Json)),
        ("otlp_text", otlp_lines(LineFormat::Text)),
        ("otlp_json", otlp_lines(LineFormat::Json)),
    ] {
        let bytes: usize = lines.iter().map(Vec::len).sum();
        eprintln!("{name}: {} bytes a line on average", bytes / lines.len());
        let mut builder = RequestBuilder::new(vec![("log_server.forwarder".into(), "a".into())]);
        g.bench_function(name, |b| {
            b.iter(|| {
                for line in &lines {
                    builder.push(line);
                }
                builder.take_encoded()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lines_to_request);
criterion_main!(benches);
