//! Lines -> request -> the server's own OTLP ingest -> lines again.

use std::time::{Duration, UNIX_EPOCH};

use log_server_wire::{
    fields::{Fields, Level},
    otlp::{
        collector::logs::v1::ExportLogsServiceRequest,
        common::v1::{
            any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
        },
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        resource::v1::Resource,
        view::ExportRequestView,
    },
};
use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::{
    format::{rfc3339_nanos, Extra, ExtraValue, LineFormat, LineFormatter, ReceivedAt},
    ingest::otlp::{map::level_of, write_lines},
};

const MAX_LINE: usize = 10 << 20;
/// What B (the receiving server) uses for records without a time.
const B_RECEIVED_NS: u64 = 1_700_000_000_123_456_789;

fn formatter(format: LineFormat) -> LineFormatter {
    LineFormatter::new(format, MAX_LINE)
}

/// Lines (each without its newline) of `out`.
fn split(out: &[u8]) -> Vec<String> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A's lines through the builder into one request.
fn forward(lines: &[String]) -> Bytes {
    let mut builder = RequestBuilder::new(Vec::new());
    for line in lines {
        builder.push(line.as_bytes());
    }
    assert_eq!(builder.records(), lines.len());
    let len = builder.encoded_len();
    let request = builder.take_encoded();
    assert!(
        len >= request.len() && len <= request.len() + 8,
        "{len} vs {}",
        request.len()
    );
    assert_eq!(builder.records(), 0);
    request
}

/// What server B writes for `request`: the ingest path's own function.
fn ingest(request: &[u8], format: LineFormat, first: u64, at: &ReceivedAt) -> Vec<String> {
    let view = ExportRequestView::parse(request).expect("a valid request");
    let mut out = Vec::new();
    write_lines(&formatter(format), view, first, B_RECEIVED_NS, at, &mut out);
    split(&out)
}

/// A JSON line with B's `log_server.seq` attribute checked and removed
/// (A's `seq` is in the line itself).
fn without_seq_attribute(line: &str, seq: u64) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    let object = v.as_object_mut().unwrap();
    let attributes = object
        .get_mut("attributes")
        .and_then(|a| a.as_object_mut())
        .expect("B's line has attributes");
    assert_eq!(
        attributes.remove("log_server.seq"),
        Some(seq.into()),
        "{line}"
    );
    if attributes.is_empty() {
        object.remove("attributes");
    }
    v
}

fn decode(request: &[u8]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest::decode(request).expect("prost decodes it")
}

fn records(request: &ExportLogsServiceRequest) -> Vec<&LogRecord> {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .collect()
}

fn attribute<'r>(record: &'r LogRecord, key: &str) -> Option<&'r Value> {
    record
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn body(record: &LogRecord) -> &str {
    match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => s,
        None => "",
        other => panic!("body {other:?}"),
    }
}

// ---- Random messages of the native protocol: A formats, forwards, B ingests.

/// Pieces of field text: escapes and what looks like them, line breaks,
/// controls, non-ASCII, metadata punctuation. Letters only from a set that
/// spells no metadata key (a value holding ` pid=` is ambiguous, see the
/// module doc; hand cases cover it). No text that spells an escape of a
/// control character itself (`\x01`): read back as the character, it is
/// written back the same, but can be cut at another place in a column.
fn piece() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "a",
        "b",
        "c",
        "e",
        "X",
        "Z",
        "0",
        "9",
        "-",
        " ",
        "  ",
        "\\",
        "\\x41",
        "\n",
        "\r\n",
        "\r",
        "\u{1}",
        "\u{1b}",
        "\t",
        "\u{7f}",
        "\u{85}",
        "\u{2028}",
        "é",
        "日本",
        "|",
        " | ",
        "[",
        "]",
        "=",
        "{",
        "}",
        "\"",
        ":",
        " [metadata: ",
    ])
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(piece(), 0..max).prop_map(|p| p.concat())
}

/// A field that is empty a third of the time.
fn field(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![1 => Just(String::new()), 2 => text(max)]
}

/// A plain integer or text (pids, thread ids, line numbers).
fn number_or_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..5_000_000).prop_map(|n| n.to_string()),
        Just("007".to_owned()),
        field(4),
    ]
}

/// An RFC 3339 time in one of its spellings, with the Unix nanoseconds it
/// stands for; or an empty timestamp.
fn timestamp() -> impl Strategy<Value = (String, Option<u64>)> {
    let rfc = (
        0u64..4_000_000_000,
        0u32..1_000_000_000,
        0usize..=9,
        prop_oneof![Just(None), (-14 * 60i64..=14 * 60).prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(|(secs, nanos, digits, offset, space)| {
            let nanos =
                u64::from(nanos) / 10u64.pow(9 - digits as u32) * 10u64.pow(9 - digits as u32);
            let ns = secs * 1_000_000_000 + nanos;
            let shift = offset.unwrap_or(0) * 60_000_000_000;
            let local = (ns as i64 + shift).max(0) as u64;
            let ns = (local as i64 - shift) as u64;
            let text = rfc3339_nanos(local);
            let text = std::str::from_utf8(&text).unwrap();
            let mut s = text[..19].to_owned();
            if space {
                s.replace_range(10..11, " ");
            }
            if digits > 0 {
                s.push_str(&text[19..20 + digits]);
            }
            match offset {
                None => s.push('Z'),
                Some(m) => {
                    let sign = if m < 0 { '-' } else { '+' };
                    s.push_str(&format!("{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60));
                }
            }
            (s, Some(ns))
        });
    prop_oneof![1 => Just((String::new(), None)), 6 => rfc]
}

/// A compact JSON object as ingest writes one (keys in order), or none.
fn attributes() -> impl Strategy<Value = String> {
    let key = proptest::sample::select(vec!["a", "b.c", "user", "X", "e e", "k=v"]);
    let value = prop_oneof![
        "[a-c é\"\\\\\n=]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        any::<i32>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("null".to_owned()),
        Just("[1,\"x\",{\"n\":[true]}]".to_owned()),
        Just("{\"deep\":{\"er\":-5}}".to_owned()),
    ];
    prop_oneof![
        1 => Just(String::new()),
        2 => proptest::collection::vec((key, value), 1..4).prop_map(|kvs| {
            let mut seen = std::collections::HashSet::new();
            let body: Vec<String> = kvs
                .into_iter()
                .filter(|(k, _)| seen.insert(*k))
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                .collect();
            format!("{{{}}}", body.join(","))
        }),
    ]
}

#[derive(Debug, Clone)]
struct Message {
    timestamp: (String, Option<u64>),
    texts: Vec<String>,
    level: i32,
    attributes: String,
}

fn message() -> impl Strategy<Value = Message> {
    let level = prop_oneof![4 => 0i32..12, 1 => any::<i32>(), 1 => -3i32..30];
    (
        timestamp(),
        (
            field(16),
            field(26),
            field(6),
            field(24),
            field(30),
            field(24),
        ),
        (
            number_or_text(),
            field(8),
            number_or_text(),
            field(8),
            field(8),
            field(12),
        ),
        field(40),
        level,
        attributes(),
    )
        .prop_map(
            |(
                timestamp,
                (host, logger, module, file, function, dir),
                (pid, pname, tid, tname, svc, stack),
                msg,
                level,
                attributes,
            )| {
                // The file column is the path's last part when there is a
                // path (as ingest makes it), and holds no '/' itself. No
                // line break either: B cuts its file column from the path,
                // where a break is ` | ` already, cut like three characters
                // rather than as one escape.
                let file = file.replace(['/', '\n', '\r'], "");
                let path = if dir.is_empty() {
                    String::new()
                } else {
                    format!("/{dir}/{file}")
                };
                let line = if module.is_empty() {
                    String::new()
                } else {
                    module.clone()
                };
                Message {
                    timestamp,
                    texts: vec![
                        host, logger, module, file, function, line, msg, path, pid, pname, tid,
                        tname, svc, stack,
                    ],
                    level,
                    attributes,
                }
            },
        )
}

impl Message {
    /// The fields, with `timestamp` and `stack_trace` given.
    fn fields<'a>(
        &'a self,
        timestamp: &'a str,
        stack: &'a str,
        attributes: &'a str,
        level: Level,
    ) -> Fields<'a> {
        let t = &self.texts;
        Fields {
            timestamp,
            hostname: &t[0],
            logger_name: &t[1],
            module: &t[2],
            level,
            filename: &t[3],
            function_name: &t[4],
            line_number: &t[5],
            message: &t[6],
            path_name: &t[7],
            process_id: &t[8],
            process_name: &t[9],
            thread_id: &t[10],
            thread_name: &t[11],
            service_name: &t[12],
            stack_trace: stack,
            attributes,
        }
    }
}

/// Round trip of one native message in one format: A's line, forwarded,
/// as B writes it, against the line B should write: A's fields with
/// - the timestamp in B's spelling (UTC, nanoseconds) of the same instant
///   (B's own receive time when A's is empty in text; A's `received_at`
///   in JSON);
/// - the level OTLP's severity number gives back (STREAM -> DEBUG, LOGON
///   .. REPORT -> INFO, `LEVEL(n)` by n), A's level name in `severity=`;
/// - the attributes as OTLP attributes (`attrs=` after the fields);
/// - in JSON, the stack trace without trailing line breaks (ingest trims
///   them), B's `log_server.seq` attribute (A's seq) taken out.
fn round_trip(m: &Message, format: LineFormat) -> Result<(), TestCaseError> {
    let seq = 77;
    let at_micros = 1_600_000_000_654_321u64;
    let at = ReceivedAt::new(UNIX_EPOCH + Duration::from_micros(at_micros));
    let level = Level(m.level);
    let stack = &m.texts[13];
    let mut a = Vec::new();
    formatter(format).write(
        &m.fields(&m.timestamp.0, stack, &m.attributes, level),
        seq,
        &at,
        &mut a,
    );
    let a = split(&a);
    prop_assert_eq!(a.len(), 1);

    let b = ingest(&forward(&a), format, seq, &at);

    let ns = match (m.timestamp.1, format) {
        (Some(ns), _) => ns,
        (None, LineFormat::Text) => B_RECEIVED_NS,
        (None, LineFormat::Json) => at_micros * 1000,
    };
    let ts = rfc3339_nanos(ns);
    let ts = std::str::from_utf8(&ts).unwrap();
    let stack = match format {
        LineFormat::Text => stack.as_str(),
        LineFormat::Json => stack.trim_end_matches(['\n', '\r']),
    };
    let name = level.name();
    let b_level = level_of(severity_of(&name));
    let mut extras = Vec::new();
    if !m.attributes.is_empty() {
        extras.push(Extra {
            text_key: "attrs",
            json_key: "attributes",
            value: ExtraValue::Json(&m.attributes),
        });
    }
    extras.push(Extra {
        text_key: "severity",
        json_key: "severity_text",
        value: ExtraValue::Text(&name),
    });
    let mut expected = Vec::new();
    formatter(format).write_with_extras(
        &m.fields(ts, stack, "", b_level),
        &extras,
        seq,
        &at,
        &mut expected,
    );
    let expected = split(&expected);
    match format {
        LineFormat::Text => prop_assert_eq!(&b, &expected, "A's line: {:?}", a),
        LineFormat::Json => prop_assert_eq!(
            without_seq_attribute(&b[0], seq),
            serde_json::from_str::<serde_json::Value>(&expected[0]).unwrap(),
            "A's line: {:?}",
            a
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn native_messages_round_trip_through_otlp_ingest(m in message()) {
        round_trip(&m, LineFormat::Text)?;
        round_trip(&m, LineFormat::Json)?;
    }

    /// Any bytes: no panic, one record a line, a request prost and the
    /// server's view both read.
    #[test]
    fn any_bytes_are_one_record_each(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20)) {
        let mut builder = RequestBuilder::new(vec![("k".into(), "v".into())]);
        for line in &lines {
            builder.push(line);
        }
        let request = builder.take_encoded();
        ExportRequestView::parse(&request).unwrap();
        prop_assert_eq!(records(&decode(&request)).len(), lines.len());
    }
}

/// A hand-picked native message in both formats.
fn native(
    texts: [&str; 14],
    timestamp: &str,
    ns: Option<u64>,
    level: i32,
    attributes: &str,
) -> Message {
    Message {
        timestamp: (timestamp.to_owned(), ns),
        texts: texts.iter().map(|t| (*t).to_owned()).collect(),
        level,
        attributes: attributes.to_owned(),
    }
}

#[test]
fn hand_picked_native_messages_round_trip() {
    let cases = [
        // Every field empty.
        native([""; 14], "", None, 0, ""),
        // Escapes, line breaks, a message holding the metadata suffix's
        // own text before the real suffix, non-ASCII.
        native(
            [
                "hôst\u{1}",
                "app.logger\u{85}",
                "mod",
                "app.py",
                "handle",
                "42",
                "one\ntwo\r\n\u{1b}[31mred \\x41 [metadata: x] [metadata: ]",
                "/srv/app/app.py",
                "4242",
                "python3",
                "140001",
                "Main\u{2028}",
                "svc",
                "Traceback\n  File \"x\"\n",
            ],
            "2026-01-02T15:04:05.123456789Z",
            Some(1_767_366_245_123_456_789),
            9,
            "{\"user\":\"ada\",\"n\":1.5,\"pid=1 x\":\" svc=y severity=z\",\"l\":[1,{\"a\":null}]}",
        ),
        // Columns cut at their widths; LEVEL(n) in and out of OTLP's range.
        native(
            [
                "a-very-long-hostname.example.com",
                "a.logger.name.longer.than.twenty.two",
                "",
                "a_file_name_longer_than_twenty.py",
                "a_function_name_longer_than_twenty_five",
                "1234567890",
                "m",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            ],
            "2026-01-02 15:04:05+02:00",
            Some(1_767_359_045_000_000_000),
            14,
            "",
        ),
        native(
            [
                "h", "h", "h", "h", "h", "h", "h", "/h/h", "h", "h", "h", "h", "h", "h",
            ],
            "2026-01-02T15:04:05Z",
            Some(1_767_366_245_000_000_000),
            -7,
            "",
        ),
        // A level name of its own (REPORT) and a timestamp wider than its
        // column.
        native(
            ["", "", "", "", "", "", "m  ", "", "", "", "", "", "", ""],
            "2026-01-02T15:04:05.123456789-11:30",
            Some(1_767_407_645_123_456_789),
            8,
            "",
        ),
    ];
    for m in &cases {
        round_trip(m, LineFormat::Text).unwrap();
        round_trip(m, LineFormat::Json).unwrap();
    }
}

// ---- Lines that came in over OTLP carry every extra.

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn otlp_request() -> ExportLogsServiceRequest {
    let full = LogRecord {
        time_unix_nano: 1_767_366_245_123_456_789,
        observed_time_unix_nano: 1_767_366_245_200_000_000,
        severity_number: 10,
        severity_text: "INFO2".into(),
        body: Some(AnyValue {
            value: Some(s("user logged in\nsecond line \u{85}")),
        }),
        attributes: vec![
            kv("code.file.path", s("/srv/app/app.py")),
            kv("code.function.name", s("login")),
            kv("code.line.number", Value::IntValue(42)),
            kv("code.namespace", s("app.auth")),
            kv("thread.id", Value::IntValue(140_001)),
            kv("thread.name", s("worker-1")),
            kv("exception.stacktrace", s("Traceback:\n  line 1\n")),
            kv("user", s("ada lovelace")),
            kv("ratio", Value::DoubleValue(1.5)),
            kv("nan", Value::DoubleValue(f64::NAN)),
            kv("ok", Value::BoolValue(true)),
            kv("raw", Value::BytesValue(vec![0, 1, 2, 255])),
            kv(
                "list",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(s("a b=c")),
                        },
                        AnyValue { value: None },
                    ],
                }),
            ),
            kv(
                "obj",
                Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("k", s(" svc=x event=y ")),
                        KeyValue {
                            key: "empty".into(),
                            value: None,
                        },
                    ],
                }),
            ),
        ],
        dropped_attributes_count: 3,
        flags: 1,
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        event_name: "session.start".into(),
    };
    let bare = LogRecord {
        severity_number: 99,
        severity_text: "CUSTOM".into(),
        body: Some(AnyValue {
            value: Some(s("no time, odd severity")),
        }),
        observed_time_unix_nano: 1_767_366_246_000_000_000,
        ..LogRecord::default()
    };
    // No severity text: B gets the level's name as one.
    let plain = LogRecord {
        time_unix_nano: 1_767_366_247_000_000_000,
        severity_number: 17,
        body: Some(AnyValue {
            value: Some(s("plain")),
        }),
        ..LogRecord::default()
    };
    let resource = Resource {
        attributes: vec![
            kv("host.name", s("web-1")),
            kv("service.name", s("shop")),
            kv("process.pid", Value::IntValue(4242)),
            kv("process.executable.name", s("python3")),
            kv("deployment.environment", s("prod")),
            kv(
                "k8s",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("pod", s("web-1-abc"))],
                }),
            ),
        ],
        dropped_attributes_count: 2,
        ..Resource::default()
    };
    let scope = InstrumentationScope {
        name: "app.auth".into(),
        version: "1.2.3".into(),
        attributes: vec![kv("lib", s("otel"))],
        dropped_attributes_count: 1,
    };
    ExportLogsServiceRequest {
        resource_logs: vec![
            ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![
                    ScopeLogs {
                        scope: Some(scope),
                        log_records: vec![full.clone(), bare.clone()],
                        ..ScopeLogs::default()
                    },
                    ScopeLogs {
                        scope: None,
                        log_records: vec![plain.clone()],
                        ..ScopeLogs::default()
                    },
                ],
                ..ResourceLogs::default()
            },
            ResourceLogs {
                resource: None,
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records: vec![full, bare, plain],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            },
        ],
    }
}

/// A's lines for `request` (received at `at`, numbered from `first`).
fn lines_of(
    request: &ExportLogsServiceRequest,
    format: LineFormat,
    first: u64,
    at: &ReceivedAt,
) -> Vec<String> {
    let bytes = request.encode_to_vec();
    ingest(&bytes, format, first, at)
}

#[test]
fn otlp_lines_with_every_extra_round_trip() {
    let at = ReceivedAt::new(UNIX_EPOCH + Duration::from_micros(1_767_366_248_000_001));
    let request = otlp_request();
    // What B should write: the same, except that a record without a
    // severity text has its level's name as one.
    let mut expected_request = request.clone();
    for resource in &mut expected_request.resource_logs {
        for scope in &mut resource.scope_logs {
            for record in &mut scope.log_records {
                if record.severity_text.is_empty() {
                    record.severity_text = level_of(record.severity_number).name().into_owned();
                }
            }
        }
    }
    for format in [LineFormat::Text, LineFormat::Json] {
        let a = lines_of(&request, format, 500, &at);
        let b = ingest(&forward(&a), format, 500, &at);
        let expected = lines_of(&expected_request, format, 500, &at);
        assert_eq!(b.len(), 6);
        match format {
            LineFormat::Text => {
                assert_eq!(b, expected, "A's lines: {a:#?}");
                // Every extra was there to be read back.
                for key in [
                    "attrs=",
                    "resource=",
                    "scope=",
                    "trace_id=",
                    "span_id=",
                    "flags=",
                    "severity=",
                    "severity_number=",
                    "event=",
                    "dropped=",
                    "path=",
                    "stack=",
                ] {
                    assert!(a[0].contains(key) || a[1].contains(key), "{key} in {a:?}");
                }
            }
            LineFormat::Json => {
                for (i, (b, e)) in b.iter().zip(&expected).enumerate() {
                    let e: serde_json::Value = serde_json::from_str(e).unwrap();
                    assert_eq!(
                        without_seq_attribute(b, 500 + i as u64),
                        e,
                        "A's line: {}",
                        a[i]
                    );
                }
            }
        }
    }
}

/// The request itself, field by field, for the first line above.
#[test]
fn otlp_line_becomes_the_same_record() {
    let at = ReceivedAt::new(UNIX_EPOCH);
    let original = otlp_request();
    for format in [LineFormat::Text, LineFormat::Json] {
        let a = lines_of(&original, format, 1, &at);
        let request = decode(&forward(&a[..1]));
        let resource = request.resource_logs[0].resource.as_ref().unwrap();
        let want = original.resource_logs[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes, want.attributes, "{format:?}");
        assert_eq!(resource.dropped_attributes_count, 2);
        let scope = request.resource_logs[0].scope_logs[0]
            .scope
            .as_ref()
            .unwrap();
        assert_eq!(
            scope,
            original.resource_logs[0].scope_logs[0]
                .scope
                .as_ref()
                .unwrap()
        );
        let record = records(&request)[0];
        let want = &original.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.time_unix_nano, want.time_unix_nano);
        assert_eq!(record.severity_number, 9, "INFO2 comes back as INFO");
        assert_eq!(record.severity_text, "INFO2");
        match format {
            LineFormat::Json => assert_eq!(record.body, want.body),
            // A line break is ` | ` in a text line, for good.
            LineFormat::Text => assert_eq!(body(record), "user logged in | second line \u{85}"),
        }
        assert_eq!(
            (record.trace_id.as_slice(), record.span_id.as_slice()),
            (want.trace_id.as_slice(), want.span_id.as_slice())
        );
        assert_eq!(
            (
                record.flags,
                record.dropped_attributes_count,
                record.event_name.as_str()
            ),
            (1, 3, "session.start")
        );
        assert_eq!(
            attribute(record, "code.line.number"),
            Some(&Value::IntValue(42))
        );
        assert_eq!(
            attribute(record, "thread.id"),
            Some(&Value::IntValue(140_001))
        );
        assert_eq!(attribute(record, "ratio"), Some(&Value::DoubleValue(1.5)));
        assert_eq!(attribute(record, "ok"), Some(&Value::BoolValue(true)));
        assert_eq!(
            attribute(record, "list"),
            want.attributes
                .iter()
                .find(|kv| kv.key == "list")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        );
        // Bytes were written as base64 text: they come back as a string.
        assert_eq!(attribute(record, "raw"), Some(&s("AAEC/w==")));
        match format {
            LineFormat::Json => {
                assert_eq!(
                    record.observed_time_unix_nano, 0,
                    "received_at of UNIX_EPOCH is 0"
                );
                assert_eq!(
                    attribute(record, "log_server.seq"),
                    Some(&Value::IntValue(1))
                );
            }
            LineFormat::Text => assert_eq!(attribute(record, "log_server.seq"), None),
        }
    }
}

// ---- Grouping.

/// A text line of `host` and `logger` with message `msg`.
fn text_line(host: &str, svc: &str, logger: &str, msg: &str) -> String {
    let f = Fields {
        timestamp: "2026-01-02T15:04:05Z",
        hostname: host,
        logger_name: logger,
        service_name: svc,
        message: msg,
        level: Level(3),
        ..Fields::default()
    };
    let mut out = Vec::new();
    formatter(LineFormat::Text).write(&f, 0, &ReceivedAt::new(UNIX_EPOCH), &mut out);
    split(&out).remove(0)
}

#[test]
fn records_of_interleaved_resources_and_scopes_keep_their_order() {
    let lines = [
        text_line("h1", "", "l1", "0"),
        text_line("h1", "", "l1", "1"),
        text_line("h1", "", "l2", "2"),
        text_line("h2", "", "l2", "3"),
        text_line("h1", "", "l2", "4"),
        text_line("h1", "s", "l2", "5"),
        "garbage".to_owned(),
        text_line("h1", "s", "l2", "7"),
        text_line("h1", "s", "l2", "8"),
    ];
    let mut builder = RequestBuilder::new(vec![
        ("deployment.environment".into(), "prod".into()),
        ("host.name".into(), "ignored".into()),
    ]);
    for line in &lines {
        builder.push(line.as_bytes());
    }
    let request = decode(&builder.take_encoded());
    let bodies: Vec<&str> = records(&request).into_iter().map(body).collect();
    assert_eq!(bodies, ["0", "1", "2", "3", "4", "5", "garbage", "7", "8"]);
    let shape: Vec<(String, Vec<(String, usize)>)> = request
        .resource_logs
        .iter()
        .map(|r| {
            let attrs = &r.resource.as_ref().unwrap().attributes;
            let host = attrs
                .iter()
                .find(|kv| kv.key == "host.name")
                .map(|kv| format!("{:?}", kv.value.as_ref().unwrap().value.as_ref().unwrap()))
                .unwrap_or_default();
            // --forward_resource is on every resource, after the line's own.
            assert!(attrs.iter().any(|kv| kv.key == "deployment.environment"));
            let scopes = r
                .scope_logs
                .iter()
                .map(|s| {
                    (
                        s.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                        s.log_records.len(),
                    )
                })
                .collect();
            (host, scopes)
        })
        .collect();
    let host = |h: &str| format!("{:?}", s(h));
    assert_eq!(
        shape,
        [
            (host("h1"), vec![("l1".to_owned(), 2), ("l2".to_owned(), 1)]),
            (host("h2"), vec![("l2".to_owned(), 1)]),
            (host("h1"), vec![("l2".to_owned(), 1)]),
            (host("h1"), vec![("l2".to_owned(), 1)]),
            // The unparsed line has no host: --forward_resource gives one.
            (host("ignored"), vec![(String::new(), 1)]),
            (host("h1"), vec![("l2".to_owned(), 2)]),
        ]
    );
    // Taken: the next request starts over.
    builder.push(lines[0].as_bytes());
    assert_eq!(records(&decode(&builder.take_encoded())).len(), 1);
}

// ---- Lines that are neither format.

#[test]
fn garbage_lines_are_one_unparsed_record_each() {
    let huge: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let lines: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\xfe not utf-8".to_vec(),
        b"{\"seq\":".to_vec(),
        b"{\"seq\":1,\"level\":5}".to_vec(),
        b"short text".to_vec(),
        b" [metadata: pid=1]".to_vec(),
        huge.clone(),
        vec![b' '; 200_000],
    ];
    let mut builder = RequestBuilder::new(Vec::new());
    for line in &lines {
        builder.push(line);
    }
    let bytes = builder.take_encoded();
    ExportRequestView::parse(&bytes).unwrap();
    let request = decode(&bytes);
    let records = records(&request);
    assert_eq!(records.len(), lines.len());
    for (record, line) in records.iter().zip(&lines) {
        assert_eq!(body(record), String::from_utf8_lossy(line));
        assert_eq!(
            attribute(record, "log_server.unparsed"),
            Some(&Value::BoolValue(true)),
            "{:?}",
            body(record)
        );
    }
}

#[test]
fn a_timestamp_that_is_no_time_is_kept_as_an_attribute() {
    for timestamp in [
        "Tue Nov 24 18:57:16 UTC 2026, with a lot more text after",
        "yesterday",
        "2026-13-02T15:04:05Z",
    ] {
        let f = Fields {
            timestamp,
            message: "m",
            level: Level(3),
            ..Fields::default()
        };
        for format in [LineFormat::Text, LineFormat::Json] {
            let mut out = Vec::new();
            formatter(format).write(&f, 1, &ReceivedAt::new(UNIX_EPOCH), &mut out);
            let request = decode(&forward(&split(&out)));
            let record = records(&request)[0];
            assert_eq!(record.time_unix_nano, 0);
            assert_eq!(
                attribute(record, "log_server.timestamp"),
                Some(&s(timestamp)),
                "{format:?}"
            );
            assert_eq!(body(record), "m");
        }
    }
}

#[test]
fn time_of_reads_rfc3339_spellings() {
    assert_eq!(time_of("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(time_of("1970-01-01 00:00:01.5z"), Some(1_500_000_000));
    assert_eq!(time_of("1970-01-01T01:00:00+01:00"), Some(0));
    assert_eq!(
        time_of("2026-01-02T15:04:05.1234567891234Z"),
        Some(1_767_366_245_123_456_789)
    );
    assert_eq!(time_of("1969-12-31T23:59:59Z"), None);
    for bad in [
        "",
        "2026-01-02T15:04:05",
        "2026-01-02T15:04:05.Z",
        "2026-01-02T25:04:05Z",
        "2026-01-02T15:04:05+0100",
        "２026-01-02T15:04:05Z",
    ] {
        assert_eq!(time_of(bad), None, "{bad}");
    }
}
