use proptest::prelude::*;
use prost::Message as _;
use serde_json::{json, Map, Value as Json};

use super::*;

/// How the test encoder writes what OTLP/JSON lets a writer choose.
#[derive(Debug, Clone, Copy)]
struct Style {
    /// snake_case keys (proto field names) instead of lowerCamelCase.
    snake: bool,
    /// 64-bit integers as JSON numbers instead of strings.
    numbers: bool,
    /// Severity numbers as their enum names where they have one.
    names: bool,
    /// Write fields at their default values too (and `null` for unset
    /// messages) instead of leaving them out.
    defaults: bool,
}

impl Style {
    const JS: Style = Style {
        snake: false,
        numbers: false,
        names: false,
        defaults: false,
    };

    fn key(&self, camel: &'static str, snake: &'static str) -> String {
        if self.snake { snake } else { camel }.to_string()
    }

    fn u64(&self, v: u64) -> Json {
        if self.numbers {
            json!(v)
        } else {
            json!(v.to_string())
        }
    }
}

/// A small OTLP/JSON encoder, written from the spec, independent of the
/// decoder.
struct Encoder(Style);

impl Encoder {
    fn put(&self, o: &mut Map<String, Json>, camel: &'static str, snake: &'static str, v: Json) {
        let default = match &v {
            // "0" is a default only where it stands for a number.
            Json::String(s) => {
                s.is_empty()
                    || (s == "0"
                        && matches!(
                            camel,
                            "timeUnixNano"
                                | "observedTimeUnixNano"
                                | "intValue"
                                | "droppedAttributesCount"
                                | "flags"
                                | "severityNumber"
                        ))
            }
            Json::Number(n) => n.as_f64() == Some(0.0),
            Json::Array(a) => a.is_empty(),
            Json::Null => true,
            _ => false,
        };
        if !default || self.0.defaults {
            o.insert(self.0.key(camel, snake), v);
        }
    }

    fn request(&self, r: &ExportLogsServiceRequest) -> Json {
        let mut o = Map::new();
        let v = r
            .resource_logs
            .iter()
            .map(|r| self.resource_logs(r))
            .collect();
        self.put(&mut o, "resourceLogs", "resource_logs", Json::Array(v));
        Json::Object(o)
    }

    fn resource_logs(&self, r: &ResourceLogs) -> Json {
        let mut o = Map::new();
        let resource = r.resource.as_ref().map_or(Json::Null, |res| {
            let mut ro = Map::new();
            self.put(
                &mut ro,
                "attributes",
                "attributes",
                self.kvs(&res.attributes),
            );
            self.put(
                &mut ro,
                "droppedAttributesCount",
                "dropped_attributes_count",
                json!(res.dropped_attributes_count),
            );
            Json::Object(ro)
        });
        self.put(&mut o, "resource", "resource", resource);
        let scopes = r.scope_logs.iter().map(|s| self.scope_logs(s)).collect();
        self.put(&mut o, "scopeLogs", "scope_logs", Json::Array(scopes));
        self.put(&mut o, "schemaUrl", "schema_url", json!(r.schema_url));
        Json::Object(o)
    }

    fn scope_logs(&self, s: &ScopeLogs) -> Json {
        let mut o = Map::new();
        let scope = s.scope.as_ref().map_or(Json::Null, |sc| {
            let mut so = Map::new();
            self.put(&mut so, "name", "name", json!(sc.name));
            self.put(&mut so, "version", "version", json!(sc.version));
            self.put(
                &mut so,
                "attributes",
                "attributes",
                self.kvs(&sc.attributes),
            );
            Json::Object(so)
        });
        self.put(&mut o, "scope", "scope", scope);
        let records = s.log_records.iter().map(|r| self.record(r)).collect();
        self.put(&mut o, "logRecords", "log_records", Json::Array(records));
        self.put(&mut o, "schemaUrl", "schema_url", json!(s.schema_url));
        Json::Object(o)
    }

    fn record(&self, r: &LogRecord) -> Json {
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut o = Map::new();
        let st = self.0;
        self.put(
            &mut o,
            "timeUnixNano",
            "time_unix_nano",
            st.u64(r.time_unix_nano),
        );
        self.put(
            &mut o,
            "observedTimeUnixNano",
            "observed_time_unix_nano",
            st.u64(r.observed_time_unix_nano),
        );
        let severity = match SeverityNumber::try_from(r.severity_number) {
            Ok(s) if st.names => json!(s.as_str_name()),
            _ => json!(r.severity_number),
        };
        // Name or not, severity 0 is the default.
        if r.severity_number != 0 || st.defaults {
            o.insert(st.key("severityNumber", "severity_number"), severity);
        }
        self.put(
            &mut o,
            "severityText",
            "severity_text",
            json!(r.severity_text),
        );
        if let Some(body) = &r.body {
            o.insert("body".into(), self.any(body));
        } else if st.defaults {
            o.insert("body".into(), Json::Null);
        }
        self.put(&mut o, "attributes", "attributes", self.kvs(&r.attributes));
        self.put(
            &mut o,
            "droppedAttributesCount",
            "dropped_attributes_count",
            json!(r.dropped_attributes_count),
        );
        self.put(&mut o, "flags", "flags", json!(r.flags));
        self.put(&mut o, "traceId", "trace_id", json!(hex(&r.trace_id)));
        self.put(&mut o, "spanId", "span_id", json!(hex(&r.span_id)));
        self.put(&mut o, "eventName", "event_name", json!(r.event_name));
        Json::Object(o)
    }

    fn kvs(&self, kvs: &[KeyValue]) -> Json {
        Json::Array(
            kvs.iter()
                .map(|kv| {
                    let mut o = Map::new();
                    o.insert("key".into(), json!(kv.key));
                    if let Some(v) = &kv.value {
                        o.insert("value".into(), self.any(v));
                    }
                    Json::Object(o)
                })
                .collect(),
        )
    }

    fn any(&self, v: &AnyValue) -> Json {
        use base64::engine::general_purpose::STANDARD;
        let st = self.0;
        let (camel, snake, v) = match &v.value {
            None => return json!({}),
            Some(Value::StringValue(s)) => ("stringValue", "string_value", json!(s)),
            Some(Value::BoolValue(b)) => ("boolValue", "bool_value", json!(b)),
            Some(Value::IntValue(i)) if st.numbers => ("intValue", "int_value", json!(i)),
            Some(Value::IntValue(i)) => ("intValue", "int_value", json!(i.to_string())),
            Some(Value::DoubleValue(d)) if d.is_nan() => {
                ("doubleValue", "double_value", json!("NaN"))
            }
            Some(Value::DoubleValue(d)) if d.is_infinite() => (
                "doubleValue",
                "double_value",
                json!(if *d > 0.0 { "Infinity" } else { "-Infinity" }),
            ),
            Some(Value::DoubleValue(d)) => ("doubleValue", "double_value", json!(d)),
            Some(Value::BytesValue(b)) => ("bytesValue", "bytes_value", json!(STANDARD.encode(b))),
            Some(Value::ArrayValue(a)) => (
                "arrayValue",
                "array_value",
                json!({ "values": a.values.iter().map(|v| self.any(v)).collect::<Vec<_>>() }),
            ),
            Some(Value::KvlistValue(l)) => (
                "kvlistValue",
                "kvlist_value",
                json!({ "values": self.kvs(&l.values) }),
            ),
        };
        let mut o = Map::new();
        o.insert(st.key(camel, snake), v);
        Json::Object(o)
    }
}

fn decode(json: &str) -> ExportLogsServiceRequest {
    decode_request(json.as_bytes()).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn only_record(r: &ExportLogsServiceRequest) -> &LogRecord {
    &r.resource_logs[0].scope_logs[0].log_records[0]
}

/// A body as the JavaScript OTLP/HTTP JSON exporter sends it: camelCase,
/// hex ids, nanoseconds as strings, the resource and scope as objects.
#[test]
fn decodes_what_the_js_exporter_sends() {
    let r = decode(
        r#"{"resourceLogs":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"shop"}},
            {"key":"process.pid","value":{"intValue":4242}}],"droppedAttributesCount":0},
          "scopeLogs":[{"scope":{"name":"checkout","version":"1.2.3"},
            "logRecords":[{"timeUnixNano":"1795502173123456789",
              "observedTimeUnixNano":"1795502173123456790",
              "severityNumber":9,"severityText":"INFO",
              "body":{"stringValue":"paid"},
              "attributes":[{"key":"n","value":{"doubleValue":1.5}},
                {"key":"ok","value":{"boolValue":true}},
                {"key":"raw","value":{"bytesValue":"AQL/"}},
                {"key":"list","value":{"arrayValue":{"values":[{"intValue":"-7"}]}}}],
              "droppedAttributesCount":0,"flags":1,
              "traceId":"0102030405060708090A0b0c0d0e0f10","spanId":"abababababababab"}]}]}]}"#,
    );
    let resource = r.resource_logs[0].resource.as_ref().unwrap();
    assert_eq!(resource.attributes[0].key, "service.name");
    assert_eq!(
        resource.attributes[1].value.as_ref().unwrap().value,
        Some(Value::IntValue(4242))
    );
    let scope = r.resource_logs[0].scope_logs[0].scope.as_ref().unwrap();
    assert_eq!((&*scope.name, &*scope.version), ("checkout", "1.2.3"));
    let record = only_record(&r);
    assert_eq!(record.time_unix_nano, 1_795_502_173_123_456_789);
    assert_eq!(record.observed_time_unix_nano, 1_795_502_173_123_456_790);
    assert_eq!(record.severity_number, 9);
    assert_eq!(record.severity_text, "INFO");
    assert_eq!(
        record.body.as_ref().unwrap().value,
        Some(Value::StringValue("paid".into()))
    );
    let values: Vec<_> = record
        .attributes
        .iter()
        .map(|kv| kv.value.clone().unwrap().value.unwrap())
        .collect();
    assert_eq!(
        values,
        [
            Value::DoubleValue(1.5),
            Value::BoolValue(true),
            Value::BytesValue(vec![1, 2, 255]),
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::IntValue(-7))
                }]
            }),
        ]
    );
    assert_eq!(record.flags, 1);
    assert_eq!(record.trace_id, (1..=16).collect::<Vec<u8>>());
    assert_eq!(record.span_id, vec![0xab; 8]);
}

/// What proto3 JSON lets a writer choose: snake_case keys, enum names,
/// integers as numbers or strings (also written as integral floats),
/// special doubles, URL-safe unpadded base64, nulls, unknown keys.
#[test]
fn decodes_the_other_spellings_proto3_json_allows() {
    let r = decode(
        r#"{"resource_logs":[{"resource":null,"unknown":{"deep":[1,{"x":null}]},
          "scope_logs":[{"log_records":[{"time_unix_nano":1e18,"severity_number":"SEVERITY_NUMBER_WARN",
            "observed_time_unix_nano":null,"dropped_attributes_count":"3","span_id":"",
            "body":{"double_value":"-Infinity"},"attributes":[
              {"key":"a","value":{"double_value":"NaN"}},
              {"key":"b","value":{"double_value":"Infinity"}},
              {"key":"c","value":{"bytes_value":"-_8"}},
              {"key":"d","value":{"int_value":"9223372036854775807"}},
              {"key":"e","value":{"double_value":"2.5e3"}},
              {"key":"f","value":{}},
              {"key":"g"},
              {"key":"h","value":{"kvlist_value":{"values":[{"key":"x","value":{"string_value":"\u00e9\n"}}]}}}]}]}]}],
          "future_field":"ignored"}"#,
    );
    assert_eq!(r.resource_logs[0].resource, None);
    let record = only_record(&r);
    assert_eq!(record.time_unix_nano, 1_000_000_000_000_000_000);
    assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(record.observed_time_unix_nano, 0);
    assert_eq!(record.dropped_attributes_count, 3);
    assert_eq!(
        record.body.as_ref().unwrap().value,
        Some(Value::DoubleValue(f64::NEG_INFINITY))
    );
    let value = |i: usize| record.attributes[i].value.clone().and_then(|v| v.value);
    assert!(matches!(value(0), Some(Value::DoubleValue(d)) if d.is_nan()));
    assert_eq!(value(1), Some(Value::DoubleValue(f64::INFINITY)));
    assert_eq!(value(2), Some(Value::BytesValue(vec![0xfb, 0xff])));
    assert_eq!(value(3), Some(Value::IntValue(i64::MAX)));
    assert_eq!(value(4), Some(Value::DoubleValue(2500.0)));
    assert_eq!(value(5), None);
    assert_eq!(record.attributes[6].value, None);
    assert_eq!(
        value(7),
        Some(Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "x".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("é\n".into()))
                })
            }]
        }))
    );
    // The empty request, and an empty object.
    assert_eq!(decode("{}"), ExportLogsServiceRequest::default());
    assert_eq!(
        decode(r#" {"resourceLogs":[]} "#),
        ExportLogsServiceRequest::default()
    );
}

/// Each of these is refused with an error, not a panic and not a guess.
#[test]
fn refuses_what_is_not_otlp_json() {
    let bad = [
        "",
        "[]",
        "null",
        "{} {}",
        r#"{"resourceLogs":{}}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"-1"}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":1.5}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"18446744073709551616"}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"flags":4294967296}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"0g"}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"abc"}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"AQID"}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"LOUD"}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":2147483648}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":"inf"}}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"bytesValue":"@@"}}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"boolValue":"true"}}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":"text"}]}]}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"a"}}"#,
    ];
    for json in bad {
        assert!(decode_request(json.as_bytes()).is_err(), "{json}");
    }
}

/// Deep nesting is refused by serde_json's recursion limit, not by
/// overflowing the stack; nesting within the limit decodes.
#[test]
fn nesting_is_bounded() {
    let nest = |depth: usize| {
        let mut body = String::from(r#"{"stringValue":"x"}"#);
        for _ in 0..depth {
            body = format!(r#"{{"arrayValue":{{"values":[{body}]}}}}"#);
        }
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{body}}}]}}]}}]}}"#)
    };
    assert!(decode_request(nest(20).as_bytes()).is_ok());
    let err = decode_request(nest(100_000).as_bytes()).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(None),
        any::<String>().prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        // One NaN: the decoder gives f64::NAN for "NaN", whatever its bits
        // were.
        prop_oneof![
            any::<f64>().prop_filter("not NaN", |d| !d.is_nan()),
            Just(f64::NAN)
        ]
        .prop_map(|d| Some(Value::DoubleValue(d))),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| Some(Value::BytesValue(b))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values }))
            }),
            prop::collection::vec(key_value(inner), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList { values }))
            }),
        ]
    })
}

fn key_value(value: impl Strategy<Value = AnyValue>) -> impl Strategy<Value = KeyValue> {
    (any::<String>(), prop::option::of(value)).prop_map(|(key, value)| KeyValue { key, value })
}

fn log_record() -> impl Strategy<Value = LogRecord> {
    (
        (any::<u64>(), any::<u64>(), -2..30i32, any::<String>()),
        (
            prop::option::of(any_value()),
            prop::collection::vec(key_value(any_value()), 0..4),
            any::<u32>(),
            any::<u32>(),
        ),
        (
            prop::collection::vec(any::<u8>(), 0..=16),
            prop::collection::vec(any::<u8>(), 0..=8),
            any::<String>(),
        ),
    )
        .prop_map(
            |(
                (time, observed, severity, severity_text),
                (body, attributes, dropped, flags),
                (trace_id, span_id, event_name),
            )| LogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: observed,
                severity_number: severity,
                severity_text,
                body,
                attributes,
                dropped_attributes_count: dropped,
                flags,
                trace_id,
                span_id,
                event_name,
            },
        )
}

fn export_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope = prop::option::of(
        (
            any::<String>(),
            any::<String>(),
            prop::collection::vec(key_value(any_value()), 0..3),
        )
            .prop_map(|(name, version, attributes)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count: 0,
            }),
    );
    let scope_logs = (
        scope,
        prop::collection::vec(log_record(), 0..4),
        any::<String>(),
    )
        .prop_map(|(scope, log_records, schema_url)| ScopeLogs {
            scope,
            log_records,
            schema_url,
        });
    let resource = prop::option::of(
        (
            prop::collection::vec(key_value(any_value()), 0..3),
            any::<u32>(),
        )
            .prop_map(|(attributes, dropped_attributes_count)| Resource {
                attributes,
                dropped_attributes_count,
                entity_refs: Vec::new(),
            }),
    );
    let resource_logs = (
        resource,
        prop::collection::vec(scope_logs, 0..3),
        any::<String>(),
    )
        .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        });
    prop::collection::vec(resource_logs, 0..3)
        .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(snake, numbers, names, defaults)| Style {
            snake,
            numbers,
            names,
            defaults,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any request, written in any of the styles OTLP/JSON allows, decodes
    /// to the same message (compared as protobuf bytes, so that NaN equals
    /// NaN).
    #[test]
    fn json_round_trips(request in export_request(), style in style()) {
        let json = Encoder(style).request(&request).to_string();
        let decoded = decode_request(json.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
        prop_assert_eq!(decoded.encode_to_vec(), request.encode_to_vec(), "{}", json);
    }

    /// Arbitrary bytes, and arbitrary edits of a valid body, never panic.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        request in export_request(),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let _ = decode_request(&bytes);
        let mut json = Encoder(Style::JS).request(&request).to_string().into_bytes();
        if !json.is_empty() {
            let at = cut.index(json.len());
            let _ = decode_request(&json[..at]);
            json[at] = byte;
            let _ = decode_request(&json);
        }
    }
}

/// Small in JSON, large in memory: a body of empty records (three bytes
/// each) is refused before it makes more than one message per 16 bytes;
/// the same records at a real size are decoded.
#[test]
fn a_body_of_empty_records_is_refused() {
    let body = |n: usize, record: &str| {
        let records = vec![record; n].join(",");
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{records}]}}]}}]}}"#)
    };
    let err = decode_request(body(200_000, "{}").as_bytes()).unwrap_err();
    assert!(err.to_string().contains("more messages than"), "{err}");
    let real = r#"{"timeUnixNano":"1","severityNumber":9,"body":{"stringValue":"hello"}}"#;
    let decoded = decode_request(body(20_000, real).as_bytes()).unwrap();
    assert_eq!(
        decoded.resource_logs[0].scope_logs[0].log_records.len(),
        20_000
    );
    // The budget is per call: the next small body decodes.
    decode_request(b"{}").unwrap();
}
