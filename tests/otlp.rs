//! OTLP logs ingest end to end: OTLP/gRPC `Export` calls from a tonic
//! client on loopback, checked line by line in the files. (The real SDKs
//! of Node and Python are in `interop`.)

use std::{net::SocketAddr, time::Duration};

use log_server::{format::LineFormat, server::ServerConfig};
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
    let (server, fifo) = stuck_grpc_server(dir.path());
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
    let (report, lines) = shutdown_reading_fifo(server, fifo);
    let accepted = exports * per_export;
    assert_eq!(report.otlp_records, accepted as u64);
    assert_eq!(report.writer.lines, accepted as u64);
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

// OTLP/HTTP: `POST /v1/logs` on the gRPC port.

/// An HTTP answer read by [`http1`].
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`),
/// written and read with a plain std socket: the request line, `headers`,
/// a `Content-Length` unless `headers` set one, and `body`.
fn http1(addr: SocketAddr, method: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} /v1/logs HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {answer:?}"));
    let head = std::str::from_utf8(&answer[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let answer = Answer {
        status,
        headers,
        body: answer[end + 4..].to_vec(),
    };
    assert_ne!(
        answer.header("transfer-encoding"),
        Some("chunked"),
        "this client reads only Content-Length bodies"
    );
    answer
}

fn post(addr: SocketAddr, content_type: &str, body: &[u8]) -> Answer {
    http1(addr, "POST", &[("Content-Type", content_type)], body)
}

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An OTLP/JSON request of one record a message, as the JavaScript
/// exporter writes it.
fn json_request(messages: &[String]) -> String {
    let records: Vec<_> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "timeUnixNano": "1795502173123456789",
                "severityNumber": 9,
                "body": { "stringValue": m },
            })
        })
        .collect();
    serde_json::json!({ "resourceLogs": [{
        "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "shop" } }] },
        "scopeLogs": [{ "scope": { "name": "checkout" }, "logRecords": records }],
    }]})
    .to_string()
}

fn proto_request(messages: &[String]) -> Vec<u8> {
    let records = messages.iter().map(|m| record(m, 9)).collect();
    prost::Message::encode_to_vec(&request("shop", records))
}

/// The `google.rpc.Status` of an error answer (protobuf body).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A body exactly as the JavaScript http/json exporter sends it
/// (`@opentelemetry/exporter-logs-otlp-http`: camelCase keys, hex ids,
/// nanoseconds as strings, zero counts written out).
const JS_EXPORTER_BODY: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}},{"key":"host.name","value":{"stringValue":"otel-host"}},{"key":"process.pid","value":{"intValue":4242}}],"droppedAttributesCount":0},"scopeLogs":[{"scope":{"name":"checkout","version":"1.2.3"},"logRecords":[{"timeUnixNano":"1795502173123456789","observedTimeUnixNano":"1795502173200000000","severityNumber":13,"severityText":"WARN","body":{"stringValue":"conn=1 n=0 from the js exporter"},"attributes":[{"key":"user.id","value":{"stringValue":"ada"}},{"key":"cart","value":{"kvlistValue":{"values":[{"key":"items","value":{"intValue":3}}]}}}],"droppedAttributesCount":0,"flags":1,"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"abababababababab"}]}]}]}"#;

/// Over HTTP/1.1, protobuf and JSON bodies, plain and gzipped, are all
/// answered 200 with an empty `ExportLogsServiceResponse` in the request's
/// content type, and every record becomes one line, once, in order; the
/// JavaScript exporter's body is mapped column by column like a gRPC
/// export.
#[test]
fn otlp_http_protobuf_and_json_bodies_become_lines() {
    let mut s = otlp_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    let mut n = 0;
    let mut next = |count: usize| {
        let m: Vec<String> = (n..n + count).map(|i| message(0, i)).collect();
        n += count;
        m
    };
    for (content_type, gzipped) in [
        (PROTOBUF, false),
        (JSON, false),
        (PROTOBUF, true),
        (JSON, true),
    ] {
        let messages = next(5);
        let mut body = match content_type {
            PROTOBUF => proto_request(&messages),
            _ => json_request(&messages).into_bytes(),
        };
        let mut headers = vec![("Content-Type", content_type)];
        if gzipped {
            body = gzip(&body);
            headers.push(("Content-Encoding", "gzip"));
        }
        let answer = http1(addr, "POST", &headers, &body);
        assert_eq!(
            answer.status, 200,
            "{content_type} gzip={gzipped}: {answer:?}"
        );
        assert_eq!(answer.header("content-type"), Some(content_type));
        match content_type {
            PROTOBUF => assert!(answer.body.is_empty(), "{answer:?}"),
            _ => assert_eq!(answer.body, b"{}"),
        }
    }
    let answer = post(
        addr,
        "application/json; charset=utf-8",
        JS_EXPORTER_BODY.as_bytes(),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    let lines = s.stop();
    let (from_js, ours): (Vec<String>, Vec<String>) =
        lines.into_iter().partition(|l| l.contains("conn=1 "));
    assert_all_once_in_order(&ours, &[n]);
    assert_eq!(from_js.len(), 1, "{from_js:#?}");
    for expected in [
        "2026-11-24T06:36:13.123456789Z",
        "otel-host",
        "checkout",
        " WARNING ",
        "conn=1 n=0 from the js exporter",
        "pid=4242",
        "svc=shop",
        r#"attrs={"user.id":"ada","cart":{"items":3}}"#,
        "trace_id=0102030405060708090a0b0c0d0e0f10",
        "span_id=abababababababab",
        "flags=1",
    ] {
        assert!(
            from_js[0].contains(expected),
            "{expected:?} not in {}",
            from_js[0]
        );
    }
}

/// h2c with prior knowledge (what gRPC-less HTTP/2 clients do): a
/// protobuf export is answered 200 and written; a body streamed without a
/// Content-Length past `--max_frame_size` is answered 413 and nothing of
/// it is written.
#[test]
fn otlp_http_over_h2c() {
    let mut s = otlp_server(|c| c.max_frame_size = 64 * 1024);
    let addr = s.server().grpc_addr().unwrap();
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let post = |body: Vec<u8>, chunks: usize| {
            let client = client.clone();
            async move {
                let request = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://{addr}/v1/logs"))
                    .header("content-type", PROTOBUF)
                    .body(())
                    .unwrap();
                let mut ready = client.ready().await.unwrap();
                let (response, mut stream) = ready.send_request(request, false).unwrap();
                let size = body.len().div_ceil(chunks);
                let mut chunks = body.chunks(size).peekable();
                while let Some(chunk) = chunks.next() {
                    stream.reserve_capacity(chunk.len());
                    // The server may answer and reset the stream before
                    // the rest is sent (413): stop sending then.
                    if stream
                        .send_data(
                            bytes::Bytes::copy_from_slice(chunk),
                            chunks.peek().is_none(),
                        )
                        .is_err()
                    {
                        break;
                    }
                }
                let response = response.await.unwrap();
                let status = response.status();
                let mut body = response.into_body();
                let mut bytes = Vec::new();
                while let Some(Ok(chunk)) = body.data().await {
                    bytes.extend_from_slice(&chunk);
                }
                (status, bytes)
            }
        };
        let messages: Vec<String> = (0..3).map(|n| message(0, n)).collect();
        let (status, body) = post(proto_request(&messages), 1).await;
        assert_eq!(status, 200);
        assert!(body.is_empty());
        let big: Vec<String> = (0..2000).map(|n| message(1, n)).collect();
        let big = proto_request(&big);
        assert!(big.len() > 64 * 1024);
        let (status, body) = post(big, 8).await;
        assert_eq!(status, 413);
        let status: RpcStatus = prost::Message::decode(&body[..]).unwrap();
        assert_eq!(status.code, Code::ResourceExhausted as i32);
    });
    assert_all_once_in_order(&s.stop(), &[3]);
}

/// Each way a request can be wrong gets its answer, with a
/// `google.rpc.Status` body in the request's content type, and nothing of
/// it is written: 400 for a body that does not decode (protobuf, JSON,
/// gzip), 413 above `--max_frame_size` (announced, or a gzip bomb that
/// would expand past it), 415 for another content type or encoding, 405
/// for another method. A good request after all of them is written.
#[test]
fn otlp_http_refusals() {
    let max = 64 * 1024;
    let mut s = otlp_server(|c| c.max_frame_size = max);
    let addr = s.server().grpc_addr().unwrap();

    let answer = post(addr, PROTOBUF, b"\x0a\xff\xff\xff\xff\x0f");
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some(PROTOBUF));
    let status: RpcStatus = prost::Message::decode(&answer.body[..]).unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(status.message.contains("protobuf"), "{status:?}");

    let answer = post(
        addr,
        JSON,
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"not hex"}]}]}]}"#,
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some(JSON));
    let status: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(status["code"], 3);
    assert!(
        status["message"].as_str().unwrap().contains("hex"),
        "{status}"
    );

    let answer = http1(
        addr,
        "POST",
        &[("Content-Type", JSON), ("Content-Encoding", "gzip")],
        b"not gzip at all",
    );
    assert_eq!(answer.status, 400, "{answer:?}");

    // Announced too large: refused before the body is sent.
    let too_long = (max + 1).to_string();
    let answer = http1(
        addr,
        "POST",
        &[("Content-Type", PROTOBUF), ("Content-Length", &too_long)],
        b"",
    );
    assert_eq!(answer.status, 413, "{answer:?}");
    let status: RpcStatus = prost::Message::decode(&answer.body[..]).unwrap();
    assert_eq!(status.code, Code::ResourceExhausted as i32);

    // 16 MiB of JSON-ish zeros in a few KiB of gzip members.
    let member = gzip(&vec![b' '; 1 << 20]);
    let bomb = member.repeat(16);
    assert!(bomb.len() < max);
    let answer = http1(
        addr,
        "POST",
        &[("Content-Type", JSON), ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(answer.status, 413, "{answer:?}");

    let good = proto_request(&[message(0, 0)]);
    let answer = post(addr, "text/plain", &good);
    assert_eq!(answer.status, 415, "{answer:?}");
    let answer = http1(
        addr,
        "POST",
        &[("Content-Type", PROTOBUF), ("Content-Encoding", "br")],
        &good,
    );
    assert_eq!(answer.status, 415, "{answer:?}");
    let answer = http1(addr, "GET", &[], b"");
    assert_eq!(answer.status, 405, "{answer:?}");
    assert_eq!(answer.header("allow"), Some("POST"));
    let answer = http1(addr, "PUT", &[("Content-Type", PROTOBUF)], &good);
    assert_eq!(answer.status, 405, "{answer:?}");

    let answer = post(addr, PROTOBUF, &good);
    assert_eq!(answer.status, 200, "{answer:?}");
    let report = s.server.take().unwrap().shutdown();
    assert_eq!(report.otlp_records, 1);
    assert_all_once_in_order(
        &read_lines(&s.config.log_dir, s.config.writer.max_files),
        &[1],
    );
}

/// With the writer stuck, the queue fills and a POST is refused whole with
/// 503 and `Retry-After` (what OTLP/HTTP exporters retry on); every record
/// of every POST answered 200, protobuf and JSON alike, is written once,
/// in order.
#[test]
fn otlp_http_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let (server, fifo) = stuck_grpc_server(dir.path());
    let addr = server.grpc_addr().unwrap();
    let per_post = 10;
    let mut posts = 0;
    let refused = loop {
        let messages: Vec<String> = (0..per_post)
            .map(|n| message(0, posts * per_post + n))
            .collect();
        let answer = if posts % 2 == 0 {
            post(addr, PROTOBUF, &proto_request(&messages))
        } else {
            post(addr, JSON, json_request(&messages).as_bytes())
        };
        if answer.status != 200 {
            break answer;
        }
        posts += 1;
        assert!(posts < 10_000, "the queue never filled");
    };
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let (report, lines) = shutdown_reading_fifo(server, fifo);
    let accepted = posts * per_post;
    assert_eq!(report.otlp_records, accepted as u64);
    assert_eq!(report.writer.lines, accepted as u64);
    assert_all_once_in_order(&lines, &[accepted]);
}
