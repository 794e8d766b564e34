//! JSON for [`super::RequestBuilder`]: `--format json` lines back into
//! [`Parsed`], and JSON values (`attributes`, `resource`, `scope`) encoded
//! straight into protobuf `AnyValue`s as serde reads them, keys in the
//! order the line has them, with no `serde_json::Value` tree in between.

use std::{borrow::Cow, fmt};

use bytes::BytesMut;
use log_server_wire::otlp::json::CowStr;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    pb::{begin, end, put_bytes, put_fixed64, put_tag, put_uint, LEN},
    put_kv_str, Parsed,
};

/// One `--format json` line; `None` if it is not one (not JSON, not an
/// object, a key of ours with a value of the wrong type).
pub(super) fn parse_line(line: &str) -> Option<Parsed<'_>> {
    serde_json::from_str::<JsonLine<'_>>(line).ok().map(|l| l.0)
}

struct JsonLine<'a>(Parsed<'a>);

impl<'de> de::Deserialize<'de> for JsonLine<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(LineVisitor)
    }
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = JsonLine<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log-server JSON line")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonLine<'de>, A::Error> {
        let mut p = Parsed::default();
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let slot = match key.0.as_ref() {
                "seq" => {
                    p.seq = Some(map.next_value::<u64>()?);
                    continue;
                }
                // Values the server wrote as JSON (objects, numbers), or as
                // strings in a line that had to be cut: kept as JSON text,
                // or as the string's text.
                "attributes"
                | "resource"
                | "scope"
                | "flags"
                | "severity_number"
                | "dropped_attributes_count" => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    let text = match serde_json::from_str::<CowStr<'de>>(raw.get()) {
                        Ok(s) => s.0,
                        Err(_) => Cow::Borrowed(raw.get()),
                    };
                    match key.0.as_ref() {
                        "attributes" => p.attributes = text,
                        "resource" => p.resource = text,
                        "scope" => p.scope = text,
                        "flags" => p.flags = text,
                        "severity_number" => p.severity_number = text,
                        _ => p.dropped = text,
                    }
                    continue;
                }
                "received_at" => &mut p.received_at,
                "timestamp" => &mut p.timestamp,
                "hostname" => &mut p.hostname,
                "logger_name" => &mut p.logger_name,
                "module" => &mut p.module,
                "level" => &mut p.level,
                "filename" => &mut p.filename,
                "function_name" => &mut p.function_name,
                "line_number" => &mut p.line_number,
                "message" => &mut p.message,
                "path_name" => &mut p.path_name,
                "process_id" => &mut p.process_id,
                "process_name" => &mut p.process_name,
                "thread_id" => &mut p.thread_id,
                "thread_name" => &mut p.thread_name,
                "service_name" => &mut p.service_name,
                "stack_trace" => &mut p.stack_trace,
                "trace_id" => &mut p.trace_id,
                "span_id" => &mut p.span_id,
                "severity_text" => &mut p.severity_text,
                "event_name" => &mut p.event_name,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value::<CowStr<'de>>()?.0;
        }
        Ok(JsonLine(p))
    }
}

/// Calls `f` with every key and value of the JSON object `json`, in order.
/// False (and `f` not called) if `json` is not exactly one JSON object.
pub(super) fn for_each_entry<'a>(json: &'a str, mut f: impl FnMut(&str, &'a RawValue)) -> bool {
    // Checked whole first, so that nothing is written for text that turns
    // out not to be an object halfway.
    if !json.trim_start().starts_with('{') || serde_json::from_str::<IgnoredAny>(json).is_err() {
        return false;
    }
    struct Entries<F>(F);
    impl<'de, F: FnMut(&str, &'de RawValue)> Visitor<'de> for Entries<F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<CowStr<'de>>()? {
                let value = map.next_value::<&'de RawValue>()?;
                (self.0)(&key.0, value);
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(Entries(&mut f)).is_ok()
}

/// Where the JSON value at the start of `s` ends (bytes), if `s` starts
/// with one.
pub(super) fn value_end(s: &str) -> Option<usize> {
    let mut values = serde_json::Deserializer::from_str(s).into_iter::<IgnoredAny>();
    values.next()?.ok()?;
    Some(values.byte_offset())
}

/// A `KeyValue` (field `field`) of `key` and the JSON value `json` as an
/// `AnyValue`; if `json` is not JSON (it always is, checked by
/// [`for_each_entry`], but for nesting deeper than serde_json reads), the
/// text as a string value instead.
pub(super) fn put_kv_json(out: &mut BytesMut, field: u32, key: &str, json: &str) {
    let mark = out.len();
    put_tag(out, field, LEN);
    let kv = begin(out, 1);
    put_bytes(out, 1, key.as_bytes());
    put_tag(out, 2, LEN);
    let value = begin(out, 1);
    let mut de = serde_json::Deserializer::from_str(json);
    if AnyValue(out).deserialize(&mut de).is_err() {
        out.truncate(mark);
        return put_kv_str(out, field, key, json);
    }
    end(out, value);
    end(out, kv);
}

/// Writes the fields of one `AnyValue` for the JSON value it reads.
struct AnyValue<'b>(&'b mut BytesMut);

// `AnyValue` fields.
const STRING: u32 = 1;
const BOOL: u32 = 2;
const INT: u32 = 3;
const DOUBLE: u32 = 4;
const ARRAY: u32 = 5;
const KVLIST: u32 = 6;

impl<'de> DeserializeSeed<'de> for AnyValue<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AnyValue<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        put_uint(self.0, BOOL, u64::from(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        put_uint(self.0, INT, v as u64);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => put_uint(self.0, INT, v as u64),
            Err(_) => put_fixed64(self.0, DOUBLE, (v as f64).to_bits()),
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        put_fixed64(self.0, DOUBLE, v.to_bits());
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        put_bytes(self.0, STRING, v.as_bytes());
        Ok(())
    }

    /// `null`: an `AnyValue` with no kind (ingest writes it back as `null`).
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        put_tag(out, ARRAY, LEN);
        let array = begin(out, 1);
        loop {
            // `ArrayValue.values`
            let mark = out.len();
            put_tag(out, 1, LEN);
            let value = begin(out, 1);
            if seq.next_element_seed(AnyValue(out))?.is_none() {
                out.truncate(mark);
                break;
            }
            end(out, value);
        }
        end(out, array);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        put_tag(out, KVLIST, LEN);
        let list = begin(out, 1);
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            // `KeyValueList.values`
            put_tag(out, 1, LEN);
            let kv = begin(out, 1);
            put_bytes(out, 1, key.0.as_bytes());
            put_tag(out, 2, LEN);
            let value = begin(out, 1);
            map.next_value_seed(AnyValue(out))?;
            end(out, value);
            end(out, kv);
        }
        end(out, list);
        Ok(())
    }
}
