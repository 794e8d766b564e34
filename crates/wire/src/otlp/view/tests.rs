use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::otlp::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{
        any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
    },
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// The generated types' reading of a value, for comparison.
fn same_value(view: Option<AnyValueRef<'_>>, proto: Option<&AnyValue>) -> bool {
    match (view, proto.and_then(|v| v.value.as_ref())) {
        (None, None) => true,
        (Some(AnyValueRef::String(a)), Some(Value::StringValue(b))) => a == b,
        (Some(AnyValueRef::Bool(a)), Some(Value::BoolValue(b))) => a == *b,
        (Some(AnyValueRef::Int(a)), Some(Value::IntValue(b))) => a == *b,
        (Some(AnyValueRef::Double(a)), Some(Value::DoubleValue(b))) => a.to_bits() == b.to_bits(),
        (Some(AnyValueRef::Bytes(a)), Some(Value::BytesValue(b))) => a == b.as_slice(),
        (Some(AnyValueRef::Array(a)), Some(Value::ArrayValue(b))) => {
            a.values().count() == b.values.len()
                && a.values()
                    .zip(&b.values)
                    .all(|(x, y)| same_value(x, Some(y)))
        }
        (Some(AnyValueRef::KvList(a)), Some(Value::KvlistValue(b))) => {
            same_kvs(a.values(), &b.values)
        }
        _ => false,
    }
}

fn same_kvs<'a>(view: impl Iterator<Item = KeyValueRef<'a>>, proto: &[KeyValue]) -> bool {
    let view: Vec<_> = view.collect();
    view.len() == proto.len()
        && view
            .iter()
            .zip(proto)
            .all(|(a, b)| a.key == b.key && same_value(a.value, b.value.as_ref()))
}

/// Everything the view reads equals what prost decodes.
fn assert_same(request: &ExportLogsServiceRequest) {
    let bytes = request.encode_to_vec();
    let view = ExportRequestView::parse(&bytes).unwrap();
    let expected: usize = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    assert_eq!(view.record_count(), expected);
    let resources: Vec<_> = view.resource_logs().collect();
    assert_eq!(resources.len(), request.resource_logs.len());
    for (rv, rp) in resources.iter().zip(&request.resource_logs) {
        match (rv.resource(), &rp.resource) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                assert!(same_kvs(a.attributes(), &b.attributes));
                assert_eq!(a.dropped_attributes_count(), b.dropped_attributes_count);
            }
            (a, b) => panic!("resource {a:?} vs {b:?}"),
        }
        let scopes: Vec<_> = rv.scope_logs().collect();
        assert_eq!(scopes.len(), rp.scope_logs.len());
        for (sv, sp) in scopes.iter().zip(&rp.scope_logs) {
            match (sv.scope(), &sp.scope) {
                (None, None) => {}
                (Some(a), Some(b)) => {
                    assert_eq!(a.name(), b.name);
                    assert_eq!(a.version(), b.version);
                    assert!(same_kvs(a.attributes(), &b.attributes));
                }
                (a, b) => panic!("scope {a:?} vs {b:?}"),
            }
            let records: Vec<_> = sv.log_records().collect();
            assert_eq!(records.len(), sp.log_records.len());
            for (a, b) in records.iter().zip(&sp.log_records) {
                assert_eq!(a.time_unix_nano, b.time_unix_nano);
                assert_eq!(a.observed_time_unix_nano, b.observed_time_unix_nano);
                assert_eq!(a.severity_number, b.severity_number);
                assert_eq!(a.severity_text, b.severity_text);
                assert!(same_value(a.body, b.body.as_ref()));
                assert!(same_kvs(a.attributes(), &b.attributes));
                assert_eq!(a.dropped_attributes_count, b.dropped_attributes_count);
                assert_eq!(a.flags, b.flags);
                assert_eq!(a.trace_id, b.trace_id.as_slice());
                assert_eq!(a.span_id, b.span_id.as_slice());
                assert_eq!(a.event_name, b.event_name);
            }
        }
    }
}

#[test]
fn a_rich_request_reads_as_prost_decodes_it() {
    let nested = Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", Value::DoubleValue(-0.5))],
                })),
            },
            AnyValue { value: None },
            AnyValue {
                value: Some(Value::BytesValue(vec![0, 255])),
            },
        ],
    });
    let request = ExportLogsServiceRequest {
        resource_logs: vec![
            ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", Value::StringValue("shop".into())),
                        kv("pid", Value::IntValue(-7)),
                    ],
                    dropped_attributes_count: 3,
                    ..Resource::default()
                }),
                scope_logs: vec![
                    ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: "checkout".into(),
                            version: "1.0".into(),
                            attributes: vec![kv("b", Value::BoolValue(true))],
                            dropped_attributes_count: 0,
                        }),
                        log_records: vec![
                            LogRecord {
                                time_unix_nano: u64::MAX,
                                observed_time_unix_nano: 1,
                                severity_number: -3,
                                severity_text: "WARN\u{e9}".into(),
                                body: Some(AnyValue {
                                    value: Some(nested),
                                }),
                                attributes: vec![kv("x", Value::StringValue("y\nz".into()))],
                                dropped_attributes_count: 2,
                                flags: 0xffff_ffff,
                                trace_id: vec![1; 16],
                                span_id: vec![2; 8],
                                event_name: "e".into(),
                            },
                            LogRecord::default(),
                        ],
                        schema_url: "s".into(),
                    },
                    ScopeLogs::default(),
                ],
                schema_url: String::new(),
            },
            ResourceLogs::default(),
        ],
    };
    assert_same(&request);
    assert_same(&ExportLogsServiceRequest::default());
}

#[test]
fn malformed_bytes_are_refused_with_a_reason() {
    let good = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    severity_text: "INFO".into(),
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec();
    // Every cut of a valid request is refused (lengths no longer fit).
    for cut in 1..good.len() {
        assert!(
            ExportRequestView::parse(&good[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // Invalid UTF-8 in severity_text.
    let mut bad = good.clone();
    let at = bad.windows(4).position(|w| w == b"INFO").unwrap();
    bad[at] = 0xff;
    assert!(matches!(
        ExportRequestView::parse(&bad),
        Err(ViewError::Utf8 { field: 3, .. })
    ));
    // A group wire type, field zero, a varint that never ends.
    assert_eq!(
        ExportRequestView::parse(&[0x0b]).unwrap_err(),
        ViewError::WireType(3)
    );
    assert_eq!(
        ExportRequestView::parse(&[0x00, 0x00]).unwrap_err(),
        ViewError::FieldZero
    );
    assert_eq!(
        ExportRequestView::parse(&[0x80; 12]).unwrap_err(),
        ViewError::LongVarint
    );
    // resource_logs as a varint.
    assert!(matches!(
        ExportRequestView::parse(&[0x08, 0x01]),
        Err(ViewError::FieldType { field: 1, .. })
    ));
}

/// Values nested deeper than MAX_DEPTH are refused, whatever the input
/// size, without deep recursion.
#[test]
fn deep_nesting_is_refused() {
    let mut value = AnyValue {
        value: Some(Value::IntValue(1)),
    };
    for _ in 0..MAX_DEPTH + 2 {
        value = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(value),
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    assert_eq!(
        ExportRequestView::parse(&request.encode_to_vec()).unwrap_err(),
        ViewError::TooDeep
    );
}

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        ".*".prop_map(Value::StringValue),
        any::<bool>().prop_map(Value::BoolValue),
        any::<i64>().prop_map(Value::IntValue),
        any::<f64>().prop_map(Value::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::BytesValue),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| Value::ArrayValue(
                ArrayValue {
                    values: v.into_iter().map(|v| AnyValue { value: Some(v) }).collect()
                }
            )),
            proptest::collection::vec(("[a-z.]{0,6}", inner), 0..4).prop_map(|v| {
                Value::KvlistValue(KeyValueList {
                    values: v.into_iter().map(|(k, v)| kv(&k, v)).collect(),
                })
            }),
        ]
    })
}

fn record_strategy() -> impl Strategy<Value = LogRecord> {
    (
        any::<u64>(),
        any::<i32>(),
        ".{0,8}",
        proptest::option::of(value_strategy()),
        proptest::collection::vec(("[a-z.]{0,8}", value_strategy()), 0..4),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..17),
    )
        .prop_map(
            |(time, severity, text, body, attributes, flags, id)| LogRecord {
                time_unix_nano: time,
                severity_number: severity,
                severity_text: text,
                body: body.map(|v| AnyValue { value: Some(v) }),
                attributes: attributes.into_iter().map(|(k, v)| kv(&k, v)).collect(),
                flags,
                trace_id: id.clone(),
                span_id: id,
                ..LogRecord::default()
            },
        )
}

proptest! {
    #[test]
    fn random_requests_read_as_prost_decodes_them(
        records in proptest::collection::vec(record_strategy(), 0..6),
        name in ".{0,8}",
    ) {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name, ..InstrumentationScope::default() }),
                    log_records: records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        };
        assert_same(&request);
    }

    /// Any bytes: an answer, never a panic; what the view accepts, prost
    /// accepts too (the view is never the more lenient).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(view) = ExportRequestView::parse(&bytes) {
            for r in view.resource_logs() {
                for s in r.scope_logs() {
                    for record in s.log_records() {
                        let _ = record.attributes().count();
                    }
                }
            }
        }
    }
}
