//! The OTLP request the benchmarks send and forward: 512 records as an
//! OpenTelemetry SDK batches them. Included by `otlp.rs` and `forward.rs`
//! (`#[path]`), not a benchmark of its own.

use log_server_wire::otlp::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};

/// Records per request: the default batch of OpenTelemetry SDKs' batch
/// processors.
pub(crate) const BATCH: usize = 512;

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
pub(crate) fn request(first: usize) -> ExportLogsServiceRequest {
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
