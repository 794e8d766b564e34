//! OTLP logs ingest end to end: OTLP/gRPC `Export` calls from a tonic
//! client on loopback, checked line by line in the files. (The real SDKs
//! of Node and Python are in `interop`.)

use std::{net::SocketAddr, thread, time::Duration};

use log_server::{format::LineFormat, ingest::grpc::AckMode, server::ServerConfig};
use log_server_wire::otlp::{
    collector::logs::v1::{logs_service_client::LogsServiceClient, ExportLogsServiceRequest},
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use tonic::{transport::Channel, Code};

use crate::util::*;

fn otlp_server(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start_with(|c| {
        c.only_tcp = false;
        c.grpc_port = 0;
        tweak(c);
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn client(addr: SocketAddr) -> LogsServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    LogsServiceClient::new(channel)
}

fn text(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(s.into())),
    })
}

fn int(i: i64) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::IntValue(i)),
    })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
    }
}

/// One resource, one scope, `records` records.
fn request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", text(service)),
                    kv("host.name", text("otel-host")),
                    kv("process.pid", int(4242)),
                    kv("deployment.environment", text("test")),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "checkout".into(),
                    version: "1.2.3".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn record(body: &str, severity: i32) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_795_502_173_123_456_789,
        severity_number: severity,
        body: text(body),
        ..LogRecord::default()
    }
}

/// Every column of docs/PROTOCOL.md's mapping, in a text line: timestamp
/// with nanoseconds, host, logger (scope), level from the severity range,
/// file name (path in `path=`), function, line, message, and the rest in
/// the metadata suffix: other attributes, resource, scope, trace context,
/// severity text.
#[test]
fn an_export_becomes_lines_with_the_mapped_columns() {
    let mut s = otlp_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    let mut full = record("payment accepted", 10);
    full.severity_text = "INFO2".into();
    full.trace_id = (1..=16).collect();
    full.span_id = vec![0xab; 8];
    full.flags = 1;
    full.attributes = vec![
        kv("code.file.path", text("/srv/app/checkout.py")),
        kv("code.function.name", text("pay")),
        kv("code.line.number", int(77)),
        kv("thread.name", text("worker-1")),
        kv("user.id", text("ada")),
        kv(
            "cart",
            Some(AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![kv("items", int(3))],
                })),
            }),
        ),
    ];
    let levels = [
        (0, "NOTSET"),
        (1, "DEBUG"),
        (8, "DEBUG"),
        (9, "INFO"),
        (13, "WARNING"),
        (17, "ERROR"),
        (21, "CRITICAL"),
        (24, "CRITICAL"),
        (99, "NOTSET"),
    ];
    let mut records = vec![full];
    records.extend(
        levels
            .iter()
            .map(|&(n, _)| record(&format!("severity {n}"), n)),
    );
    let response = runtime().block_on(async {
        client(addr)
            .await
            .export(request("shop", records))
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(response.partial_success, None);
    let lines = s.stop();
    assert_eq!(lines.len(), 1 + levels.len(), "{lines:#?}");
    let first = &lines[0];
    for expected in [
        "2026-11-24T", // the date of 1_795_502_173 s
        ".123456789Z",
        "otel-host",
        "checkout",
        "INFO ",
        "checkout.py",
        "pay",
        "77",
        "payment accepted",
        "path=/srv/app/checkout.py",
        "pid=4242",
        "tname=worker-1",
        "svc=shop",
        r#"attrs={"user.id":"ada","cart":{"items":3}}"#,
        r#"resource={"deployment.environment":"test"}"#,
        r#"scope={"version":"1.2.3"}"#,
        "trace_id=0102030405060708090a0b0c0d0e0f10",
        "span_id=abababababababab",
        "flags=1",
        "severity=INFO2",
    ] {
        assert!(first.contains(expected), "{expected:?} not in {first}");
    }
    for (line, (n, level)) in lines[1..].iter().zip(levels) {
        assert!(line.contains(&format!(" {level} ")), "{n}: {line}");
        assert!(line.contains(&format!("severity {n}")), "{n}: {line}");
    }
    assert!(lines.last().unwrap().contains("severity_number=99"));
}

/// In JSON lines the extras are keys: objects as objects, text as strings.
#[test]
fn json_lines_carry_the_extras_as_objects() {
    let mut s = otlp_server(|c| c.format = LineFormat::Json);
    let addr = s.server().grpc_addr().unwrap();
    let mut r = record("hello", 13);
    r.severity_text = "WARN".into();
    r.attributes = vec![kv("user.id", text("ada"))];
    runtime().block_on(async {
        client(addr)
            .await
            .export(request("shop", vec![r]))
            .await
            .unwrap();
    });
    let lines = s.stop();
    assert_eq!(lines.len(), 1);
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["level"], "WARNING");
    assert_eq!(line["message"], "hello");
    assert_eq!(line["service_name"], "shop");
    assert_eq!(line["logger_name"], "checkout");
    assert_eq!(line["timestamp"], "2026-11-24T06:36:13.123456789Z");
    assert_eq!(line["attributes"]["user.id"], "ada");
    assert_eq!(line["resource"]["deployment.environment"], "test");
    assert_eq!(line["scope"]["version"], "1.2.3");
    assert_eq!(line["severity_text"], "WARN");
}

/// A body with line breaks (and a body that is not a string) is still one
/// line each, the breaks written as ` | `.
#[test]
fn a_body_with_newlines_is_one_line() {
    let mut s = otlp_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    let mut structured = record("", 9);
    structured.body = Some(AnyValue {
        value: Some(Value::KvlistValue(KeyValueList {
            values: vec![kv("text", text("a\nb"))],
        })),
    });
    runtime().block_on(async {
        let records = vec![record("first\nsecond\r\nthird", 9), structured];
        client(addr)
            .await
            .export(request("shop", records))
            .await
            .unwrap();
    });
    let lines = s.stop();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains("first | second | third"), "{}", lines[0]);
    assert!(lines[1].contains(r#"{"text":"a\nb"}"#), "{}", lines[1]);
}

/// With the writer stuck, the queue fills and an export is refused whole
/// with UNAVAILABLE (retryable in OTLP); every record of every export that
/// was answered OK is written once, in order.
#[test]
fn a_full_queue_answers_unavailable_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, fifo) = fifo_log_dir(dir.path());
    let server = log_server::server::Server::start(ServerConfig {
        port: 0,
        grpc_port: 0,
        log_dir: logs,
        queue_capacity: 4,
        grpc_ack: AckMode::Queued,
        grpc_queue_wait: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .unwrap();
    let addr = server.grpc_addr().unwrap();
    let per_export = 10;
    let exports = runtime().block_on(async {
        let mut client = client(addr).await;
        let mut exports = 0;
        loop {
            let records = (0..per_export)
                .map(|n| record(&message(0, exports * per_export + n), 9))
                .collect();
            match client.export(request("shop", records)).await {
                Ok(_) => {
                    exports += 1;
                    assert!(exports < 100_000, "the queue never filled");
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status}");
                    break exports;
                }
            }
        }
    });
    let reader = thread::spawn(move || std::fs::read(fifo).unwrap());
    let report = server.shutdown();
    let accepted = exports * per_export;
    assert_eq!(report.otlp_records, accepted as u64);
    assert_eq!(report.writer.lines, accepted as u64);
    let bytes = reader.join().unwrap();
    let lines: Vec<String> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_all_once_in_order(&lines, &[accepted]);
}

/// A request above `--max_frame_size` is refused with RESOURCE_EXHAUSTED, as
/// for LogBridge, and nothing of it is written.
#[test]
fn an_oversized_export_is_refused_whole() {
    let mut s = otlp_server(|c| c.max_frame_size = 64 * 1024);
    let addr = s.server().grpc_addr().unwrap();
    let code = runtime().block_on(async {
        let records = (0..1000).map(|n| record(&message(0, n), 9)).collect();
        client(addr)
            .await
            .export(request("shop", records))
            .await
            .unwrap_err()
            .code()
    });
    assert_eq!(code, Code::ResourceExhausted);
    assert!(s.stop().is_empty());
}

/// Small on the wire, huge as lines: a request of empty records (2 bytes
/// each) is refused with RESOURCE_EXHAUSTED before any line is made, and
/// the same request within the record limit is taken.
#[test]
fn a_request_of_many_empty_records_is_refused() {
    let mut s = otlp_server(|c| c.max_frame_size = 1 << 20);
    let addr = s.server().grpc_addr().unwrap();
    let empty = |n| request("shop", vec![LogRecord::default(); n]);
    let most = (1 << 20) / log_server::ingest::otlp::MIN_RECORD_BYTES;
    let (refused, taken) = runtime().block_on(async {
        let mut c = client(addr).await;
        // 500,000 records: ~1 MB of request, ~65 MB of lines.
        let refused = c.export(empty(500_000)).await.unwrap_err();
        let taken = c.export(empty(most)).await;
        (refused, taken)
    });
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("at most"), "{refused}");
    taken.unwrap();
    assert_eq!(s.stop().len(), most);
}
