//! The forwarder's pure stage on one core: 512 lines of the log files ->
//! one encoded OTLP `ExportLogsServiceRequest` (`forward::lines`), for
//! realistic text and JSON lines of native messages (~200 bytes of text
//! line) and for lines that came in over OTLP (attributes, resource, scope
//! and trace context in the metadata). Target: 1.5 M text lines/s.
//!
//! `cargo bench --bench forward`

use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use log_server::{
    format::{LineFormat, LineFormatter, ReceivedAt},
    forward::lines::RequestBuilder,
    ingest::otlp::write_lines,
};
use log_server_wire::{
    fields::{Fields, Level},
    otlp::view::ExportRequestView,
};
use otlp_request::{request, BATCH};
use prost::Message as _;

#[path = "common/otlp_request.rs"]
mod otlp_request;

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

/// 512 lines of OTLP records as OTLP ingest writes them (the request the
/// OTLP benchmark sends: an SDK's resource, one scope, a body, code location,
/// two attributes and a trace context).
fn otlp_lines(format: LineFormat) -> Vec<Vec<u8>> {
    let encoded = request(0).encode_to_vec();
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
