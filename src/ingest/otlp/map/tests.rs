use log_server_wire::otlp::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
    view::ExportRequestView,
};
use prost::Message as _;

use super::*;

/// Runs `f` on the line of `record` (under `resource`), read as the server
/// reads a request: encoded, then viewed.
fn with_line<R>(
    resource: Option<Resource>,
    record: LogRecord,
    received_ns: u64,
    f: impl FnOnce(&RecordLine<'_>) -> R,
) -> R {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs {
                log_records: vec![record],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    let bytes = request.encode_to_vec();
    let view = ExportRequestView::parse(&bytes).unwrap();
    let resource_logs = view.resource_logs().next().unwrap();
    let resource = ResourceColumns::new(resource_logs.resource());
    let scope_logs = resource_logs.scope_logs().next().unwrap();
    let scope = ScopeColumns::new(scope_logs.scope());
    let record = scope_logs.log_records().next().unwrap();
    f(&RecordLine::new(&resource, &scope, record, received_ns))
}

fn any(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: any(value),
    }
}

/// A value as JSON, read as the server reads it (the body of a record).
fn json(value: Option<AnyValue>) -> String {
    let record = LogRecord {
        body: value,
        ..LogRecord::default()
    };
    with_line(None, record, 0, |line| {
        let mut out = String::new();
        write_json_value(&mut out, line.record.body);
        out
    })
}

#[test]
fn severity_ranges_map_to_levels() {
    let name = |n| level_of(n).name().into_owned();
    assert_eq!(name(0), "NOTSET");
    for (range, level) in [
        (1..=8, "DEBUG"),
        (9..=12, "INFO"),
        (13..=16, "WARNING"),
        (17..=20, "ERROR"),
        (21..=24, "CRITICAL"),
    ] {
        for n in range {
            assert_eq!(name(n), level, "severity {n}");
        }
    }
    for n in [-1, 25, i32::MAX, i32::MIN] {
        assert_eq!(name(n), "NOTSET", "severity {n}");
    }
}

#[test]
fn any_values_become_compact_json() {
    assert_eq!(json(None), "null");
    assert_eq!(json(Some(AnyValue { value: None })), "null");
    assert_eq!(
        json(any(Value::StringValue("a\"b\\c\n\u{2028}\u{1}".into()))),
        r#""a\"b\\c\n\u2028\u0001""#
    );
    assert_eq!(json(any(Value::IntValue(i64::MIN))), "-9223372036854775808");
    assert_eq!(json(any(Value::DoubleValue(1.0))), "1.0");
    assert_eq!(json(any(Value::DoubleValue(1e300))), "1e300");
    assert_eq!(json(any(Value::DoubleValue(f64::NAN))), r#""NaN""#);
    assert_eq!(
        json(any(Value::DoubleValue(f64::NEG_INFINITY))),
        r#""-Infinity""#
    );
    assert_eq!(json(any(Value::BoolValue(false))), "false");
    assert_eq!(
        json(any(Value::BytesValue(b"hello".to_vec()))),
        r#""aGVsbG8=""#
    );
    assert_eq!(json(any(Value::BytesValue(b"hi".to_vec()))), r#""aGk=""#);
    assert_eq!(json(any(Value::BytesValue(b"abc".to_vec()))), r#""YWJj""#);
    let nested = Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("k", Value::IntValue(1)),
                        kv("e", Value::ArrayValue(ArrayValue::default())),
                    ],
                })),
            },
            AnyValue {
                value: Some(Value::KvlistValue(KeyValueList::default())),
            },
        ],
    });
    let text = json(any(nested));
    assert_eq!(text, r#"[{"k":1,"e":[]},{}]"#);
    // Whatever it holds, it is JSON serde reads back.
    serde_json::from_str::<serde_json::Value>(&text).unwrap();
}

fn one_record(attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        attributes,
        ..LogRecord::default()
    }
}

/// The first of two names for a column fills it; the second value is kept
/// with the other attributes, not lost.
#[test]
fn a_second_value_for_a_column_stays_in_the_attributes() {
    let record = one_record(vec![
        kv("code.lineno", Value::IntValue(10)),
        kv("code.line.number", Value::IntValue(11)),
        kv("code.filepath", Value::StringValue("app.py".into())),
    ]);
    with_line(None, record, 0, |line| {
        let f = line.fields();
        assert_eq!(f.line_number, "10");
        // No directory: the name is the file column and there is no path.
        assert_eq!(f.filename, "app.py");
        assert_eq!(f.path_name, "");
        assert_eq!(line.attributes, r#"{"code.line.number":11}"#);
    });
}

/// Timestamp: the record's time, else its observed time, else receipt.
#[test]
fn the_timestamp_falls_back_to_observed_then_received() {
    let stamp = |time, observed| {
        let record = LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: observed,
            ..LogRecord::default()
        };
        with_line(None, record, 3_000_000_007, |line| {
            line.fields().timestamp.to_owned()
        })
    };
    assert_eq!(stamp(1_000_000_001, 2), "1970-01-01T00:00:01.000000001Z");
    assert_eq!(stamp(0, 2_000_000_000), "1970-01-01T00:00:02.000000000Z");
    assert_eq!(stamp(0, 0), "1970-01-01T00:00:03.000000007Z");
}

/// Process columns come from the record, else from the resource; unset
/// trace ids (all zero) write nothing; only non-empty extras are listed.
#[test]
fn resource_fills_process_columns_and_empty_extras_are_left_out() {
    let resource = Resource {
        attributes: vec![
            kv("process.pid", Value::IntValue(7)),
            kv("process.executable.name", Value::StringValue("node".into())),
        ],
        ..Resource::default()
    };
    let mut record = one_record(vec![kv("process.pid", Value::IntValue(8))]);
    record.trace_id = vec![0; 16];
    with_line(Some(resource), record, 0, |line| {
        assert_eq!(line.fields().process_id, "8");
        assert_eq!(line.fields().process_name, "node");
        let (_, n) = line.extras();
        assert_eq!(n, 0);
    });
}

/// A stack trace's final line break is not written (it would end the text
/// line's `stack=` in ` | `); the ones inside stay.
#[test]
fn a_stack_trace_loses_only_its_final_line_break() {
    let record = one_record(vec![kv(
        "exception.stacktrace",
        Value::StringValue("Traceback:\n  at f\nValueError\r\n".into()),
    )]);
    with_line(None, record, 0, |line| {
        assert_eq!(line.fields().stack_trace, "Traceback:\n  at f\nValueError");
    });
}
