//! OTLP/JSON: the `application/json` body of OTLP/HTTP `POST /v1/logs` ->
//! the generated prost [`ExportLogsServiceRequest`], the same message the
//! protobuf body and OTLP/gRPC give, so the server maps one type whatever
//! the encoding (`src/ingest/otlp/http.rs` calls [`decode_request`]).
//!
//! OTLP/JSON is proto3's JSON mapping with OTLP's own exceptions
//! (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>):
//!
//! - keys are lowerCamelCase; the original snake_case names are accepted
//!   too, as proto3 JSON parsers must; unknown keys are ignored (a newer
//!   SDK's fields must not make a request fail);
//! - `traceId` and `spanId` are hex strings, not base64 (OTLP's exception);
//!   `bytesValue` is base64 (standard or URL-safe, padding optional);
//! - 64-bit integers (`timeUnixNano`, `observedTimeUnixNano`, `intValue`)
//!   are decimal strings or numbers, as are the 32-bit ones;
//! - `severityNumber` is an integer or its enum name
//!   (`"SEVERITY_NUMBER_WARN"`);
//! - `doubleValue` is a number or `"NaN"`, `"Infinity"`, `"-Infinity"`;
//! - `null` for any field means the field's default.
//!
//! The decoder is a set of serde visitors straight into the prost types
//! (no intermediate `serde_json::Value`, keys borrowed from the input).
//! It never panics; nesting (`arrayValue`/`kvlistValue` inside each other)
//! is bounded by serde_json's recursion limit (128), and the input's size
//! by the caller.

use std::{borrow::Cow, cell::Cell, fmt, marker::PhantomData};

use base64::Engine as _;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

use crate::otlp::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{
        any_value::Value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue,
        KeyValueList,
    },
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};

/// Why a body is not an OTLP/JSON `ExportLogsServiceRequest`.
#[derive(Debug, Error)]
#[error("not a valid OTLP/JSON ExportLogsServiceRequest: {0}")]
pub struct OtlpJsonError(#[from] serde_json::Error);

/// Body bytes each decoded message (record, attribute, value...) must
/// stand for at least. `{}` is two bytes of JSON but a generated message of
/// up to ~200 bytes: without a bound, a 4 MiB body of empty records would
/// take ~280 MB. Real OTLP/JSON spends ~30 bytes a message.
pub const MIN_MESSAGE_BYTES: usize = 16;

thread_local! {
    /// Messages the decode running on this thread may still make.
    static MESSAGES_LEFT: Cell<usize> = const { Cell::new(0) };
}

/// Decodes an OTLP/JSON `ExportLogsServiceRequest` (one JSON object, and
/// nothing after it but whitespace), making at most one message per
/// [`MIN_MESSAGE_BYTES`] of `json`.
pub fn decode_request(json: &[u8]) -> Result<ExportLogsServiceRequest, OtlpJsonError> {
    MESSAGES_LEFT.with(|left| left.set(json.len() / MIN_MESSAGE_BYTES + 16));
    let mut de = serde_json::Deserializer::from_slice(json);
    let decoded = de::Deserialize::deserialize(&mut de).and_then(|Msg(request)| {
        de.end()?;
        Ok(request)
    });
    MESSAGES_LEFT.with(|left| left.set(0));
    Ok(decoded?)
}

/// A message read from a JSON object key by key.
trait JsonMessage: Default {
    /// What the visitor expects, for error messages.
    const EXPECTING: &'static str;

    /// Reads the value of `key` into `self`; `false` when the key is not a
    /// field of this message (the caller skips its value).
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// A field's value, `null` read as the field's default.
fn value<'de, T, A>(map: &mut A) -> Result<T, A::Error>
where
    T: Default + de::Deserialize<'de>,
    A: MapAccess<'de>,
{
    Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
}

/// A field's value through the wrapper `W` that knows its JSON form.
fn wrapped<'de, W, A>(map: &mut A) -> Result<W::Inner, A::Error>
where
    W: Wrapper + de::Deserialize<'de>,
    A: MapAccess<'de>,
{
    Ok(map
        .next_value::<Option<W>>()?
        .map(Wrapper::into_inner)
        .unwrap_or_default())
}

/// A newtype deserializing its inner type from OTLP/JSON's form of it.
trait Wrapper {
    type Inner: Default;
    fn into_inner(self) -> Self::Inner;
}

/// A message.
struct Msg<T>(T);

impl<T: Default> Wrapper for Msg<T> {
    type Inner = T;
    fn into_inner(self) -> T {
        self.0
    }
}

impl<'de, T: JsonMessage> de::Deserialize<'de> for Msg<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MsgVisitor(PhantomData))
    }
}

struct MsgVisitor<T>(PhantomData<T>);

impl<'de, T: JsonMessage> Visitor<'de> for MsgVisitor<T> {
    type Value = Msg<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Msg<T>, A::Error> {
        let spent = MESSAGES_LEFT.with(|left| {
            let n = left.get();
            left.set(n.saturating_sub(1));
            n == 0
        });
        if spent {
            return Err(de::Error::custom(format_args!(
                "more messages than one per {MIN_MESSAGE_BYTES} bytes of the body"
            )));
        }
        let mut message = T::default();
        while let Some(CowStr(key)) = map.next_key()? {
            if !message.field(&key, &mut map)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Msg(message))
    }
}

/// A repeated field: a JSON array of `W`'s form.
struct Repeated<W: Wrapper>(Vec<W::Inner>);

impl<W: Wrapper> Wrapper for Repeated<W> {
    type Inner = Vec<W::Inner>;
    fn into_inner(self) -> Self::Inner {
        self.0
    }
}

impl<'de, W: Wrapper + de::Deserialize<'de>> de::Deserialize<'de> for Repeated<W> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<W>(PhantomData<W>);
        impl<'de, W: Wrapper + de::Deserialize<'de>> Visitor<'de> for V<W> {
            type Value = Repeated<W>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Repeated<W>, S::Error> {
                // The hint is the parser's guess, capped so that a lying
                // one cannot make us allocate much.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element::<Option<W>>()? {
                    // proto3 JSON has no null elements; read one as the
                    // default rather than refuse the request.
                    out.push(item.map(Wrapper::into_inner).unwrap_or_default());
                }
                Ok(Repeated(out))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// A plain value whose serde form is its JSON form (strings, booleans).
struct Plain<T>(T);

impl<T: Default> Wrapper for Plain<T> {
    type Inner = T;
    fn into_inner(self) -> T {
        self.0
    }
}

impl<'de, T: DeserializeOwned> de::Deserialize<'de> for Plain<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Plain)
    }
}

/// A JSON string (an object key, or a value), borrowed from the input
/// unless it has escapes (`Cow<str>`'s own `Deserialize` always copies).
/// The forwarder reads `--format json` lines with it too.
#[derive(Debug)]
pub struct CowStr<'de>(pub Cow<'de, str>);

impl<'de> de::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An integer field: a JSON number (integral, in range) or a decimal
/// string, as proto3 JSON writes 64-bit integers.
macro_rules! integer {
    ($name:ident, $t:ty, $what:literal) => {
        struct $name($t);

        impl Wrapper for $name {
            type Inner = $t;
            fn into_inner(self) -> $t {
                self.0
            }
        }

        impl<'de> de::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        <$t>::try_from(v)
                            .map($name)
                            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        <$t>::try_from(v)
                            .map($name)
                            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$name, E> {
                        // 1e18 or 5.0: integral numbers written as floats.
                        // `MAX + 1` is a power of two, exact as an f64
                        // (rounding makes it so for 64 bits), as is `MIN`:
                        // the cast is exact whenever the bounds hold.
                        let (min, end) = (<$t>::MIN as f64, <$t>::MAX as f64 + 1.0);
                        if v.fract() == 0.0 && v >= min && v < end {
                            Ok($name(v as $t))
                        } else {
                            Err(E::invalid_value(de::Unexpected::Float(v), &self))
                        }
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse::<$t>()
                            .map($name)
                            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

integer!(
    U64,
    u64,
    "an unsigned 64-bit integer (number or decimal string)"
);
integer!(I64, i64, "a 64-bit integer (number or decimal string)");
integer!(
    U32,
    u32,
    "an unsigned 32-bit integer (number or decimal string)"
);

/// `doubleValue`: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`, or
/// a number in a string.
struct F64(f64);

impl Wrapper for F64 {
    type Inner = f64;
    fn into_inner(self) -> f64 {
        self.0
    }
}

impl<'de> de::Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = F64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, \"NaN\", \"Infinity\" or \"-Infinity\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F64, E> {
                Ok(F64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F64, E> {
                Ok(F64(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F64, E> {
                Ok(F64(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<F64, E> {
                match v {
                    "NaN" => Ok(F64(f64::NAN)),
                    "Infinity" => Ok(F64(f64::INFINITY)),
                    "-Infinity" => Ok(F64(f64::NEG_INFINITY)),
                    // Rust also parses "inf" and "nan", which proto3 JSON
                    // does not allow.
                    _ if v
                        .bytes()
                        .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
                    {
                        Err(E::invalid_value(de::Unexpected::Str(v), &self))
                    }
                    _ => v
                        .parse()
                        .map(F64)
                        .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `severityNumber`: an integer (any `i32`: proto3 enums are open) or one
/// of the enum's names.
struct Severity(i32);

impl Wrapper for Severity {
    type Inner = i32;
    fn into_inner(self) -> i32 {
        self.0
    }
}

impl<'de> de::Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Severity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a severity number or name (\"SEVERITY_NUMBER_INFO\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Severity, E> {
                i32::try_from(v)
                    .map(Severity)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Severity, E> {
                i32::try_from(v)
                    .map(Severity)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Severity, E> {
                SeverityNumber::from_str_name(v)
                    .map(|s| Severity(s as i32))
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// `traceId`, `spanId`: hex, either case (OTLP's exception to proto3's
/// base64).
struct Hex(Vec<u8>);

impl Wrapper for Hex {
    type Inner = Vec<u8>;
    fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

impl<'de> de::Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Hex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Hex, E> {
                let invalid = || E::invalid_value(de::Unexpected::Str(v), &self);
                let digit = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
                let bytes = v.as_bytes();
                if bytes.len() % 2 != 0 {
                    return Err(invalid());
                }
                bytes
                    .chunks_exact(2)
                    .map(|p| Some((digit(p[0])? << 4) | digit(p[1])?))
                    .collect::<Option<Vec<u8>>>()
                    .map(Hex)
                    .ok_or_else(invalid)
            }
        }
        d.deserialize_str(V)
    }
}

/// `bytesValue`: base64, standard or URL-safe alphabet, padded or not (all
/// four are proto3 JSON).
struct Base64(Vec<u8>);

impl Wrapper for Base64 {
    type Inner = Vec<u8>;
    fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

impl<'de> de::Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Base64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Base64, E> {
                use base64::engine::{
                    general_purpose::{GeneralPurpose, GeneralPurposeConfig},
                    DecodePaddingMode,
                };
                const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent);
                const STANDARD: GeneralPurpose =
                    GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
                const URL_SAFE: GeneralPurpose =
                    GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
                let engine = if v.contains(['-', '_']) {
                    &URL_SAFE
                } else {
                    &STANDARD
                };
                engine
                    .decode(v)
                    .map(Base64)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// `AnyValue`: an object with one of the `*Value` keys (the last one wins,
/// as for a protobuf oneof); `{}` is an empty value.
impl JsonMessage for AnyValue {
    const EXPECTING: &'static str = "an AnyValue object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        let value = match key {
            "stringValue" | "string_value" => {
                map.next_value::<Option<String>>()?.map(Value::StringValue)
            }
            "boolValue" | "bool_value" => map.next_value::<Option<bool>>()?.map(Value::BoolValue),
            "intValue" | "int_value" => map
                .next_value::<Option<I64>>()?
                .map(|v| Value::IntValue(v.0)),
            "doubleValue" | "double_value" => map
                .next_value::<Option<F64>>()?
                .map(|v| Value::DoubleValue(v.0)),
            "arrayValue" | "array_value" => map
                .next_value::<Option<Msg<ArrayValue>>>()?
                .map(|v| Value::ArrayValue(v.0)),
            "kvlistValue" | "kvlist_value" => map
                .next_value::<Option<Msg<KeyValueList>>>()?
                .map(|v| Value::KvlistValue(v.0)),
            "bytesValue" | "bytes_value" => map
                .next_value::<Option<Base64>>()?
                .map(|v| Value::BytesValue(v.0)),
            _ => return Ok(false),
        };
        if value.is_some() {
            self.value = value;
        }
        Ok(true)
    }
}

impl JsonMessage for ArrayValue {
    const EXPECTING: &'static str = "an ArrayValue object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "values" => self.values = wrapped::<Repeated<Msg<AnyValue>>, _>(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl JsonMessage for KeyValueList {
    const EXPECTING: &'static str = "a KeyValueList object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "values" => self.values = wrapped::<Repeated<Msg<KeyValue>>, _>(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl JsonMessage for KeyValue {
    const EXPECTING: &'static str = "a KeyValue object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "key" => self.key = value(map)?,
            "value" => self.value = map.next_value::<Option<Msg<AnyValue>>>()?.map(|v| v.0),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl JsonMessage for InstrumentationScope {
    const EXPECTING: &'static str = "an InstrumentationScope object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "name" => self.name = value(map)?,
            "version" => self.version = value(map)?,
            "attributes" => self.attributes = wrapped::<Repeated<Msg<KeyValue>>, _>(map)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                self.dropped_attributes_count = wrapped::<U32, _>(map)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl JsonMessage for EntityRef {
    const EXPECTING: &'static str = "an EntityRef object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "schemaUrl" | "schema_url" => self.schema_url = value(map)?,
            "type" => self.r#type = value(map)?,
            "idKeys" | "id_keys" => self.id_keys = wrapped::<Repeated<Plain<String>>, _>(map)?,
            "descriptionKeys" | "description_keys" => {
                self.description_keys = wrapped::<Repeated<Plain<String>>, _>(map)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl JsonMessage for Resource {
    const EXPECTING: &'static str = "a Resource object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "attributes" => self.attributes = wrapped::<Repeated<Msg<KeyValue>>, _>(map)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                self.dropped_attributes_count = wrapped::<U32, _>(map)?;
            }
            "entityRefs" | "entity_refs" => {
                self.entity_refs = wrapped::<Repeated<Msg<EntityRef>>, _>(map)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl JsonMessage for LogRecord {
    const EXPECTING: &'static str = "a LogRecord object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "timeUnixNano" | "time_unix_nano" => self.time_unix_nano = wrapped::<U64, _>(map)?,
            "observedTimeUnixNano" | "observed_time_unix_nano" => {
                self.observed_time_unix_nano = wrapped::<U64, _>(map)?;
            }
            "severityNumber" | "severity_number" => {
                self.severity_number = wrapped::<Severity, _>(map)?;
            }
            "severityText" | "severity_text" => self.severity_text = value(map)?,
            "body" => self.body = map.next_value::<Option<Msg<AnyValue>>>()?.map(|v| v.0),
            "attributes" => self.attributes = wrapped::<Repeated<Msg<KeyValue>>, _>(map)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                self.dropped_attributes_count = wrapped::<U32, _>(map)?;
            }
            "flags" => self.flags = wrapped::<U32, _>(map)?,
            "traceId" | "trace_id" => self.trace_id = wrapped::<Hex, _>(map)?,
            "spanId" | "span_id" => self.span_id = wrapped::<Hex, _>(map)?,
            "eventName" | "event_name" => self.event_name = value(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl JsonMessage for ScopeLogs {
    const EXPECTING: &'static str = "a ScopeLogs object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "scope" => self.scope = map.next_value::<Option<Msg<_>>>()?.map(|v| v.0),
            "logRecords" | "log_records" => {
                self.log_records = wrapped::<Repeated<Msg<LogRecord>>, _>(map)?;
            }
            "schemaUrl" | "schema_url" => self.schema_url = value(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl JsonMessage for ResourceLogs {
    const EXPECTING: &'static str = "a ResourceLogs object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "resource" => self.resource = map.next_value::<Option<Msg<_>>>()?.map(|v| v.0),
            "scopeLogs" | "scope_logs" => {
                self.scope_logs = wrapped::<Repeated<Msg<ScopeLogs>>, _>(map)?;
            }
            "schemaUrl" | "schema_url" => self.schema_url = value(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl JsonMessage for ExportLogsServiceRequest {
    const EXPECTING: &'static str = "an ExportLogsServiceRequest object";

    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "resourceLogs" | "resource_logs" => {
                self.resource_logs = wrapped::<Repeated<Msg<ResourceLogs>>, _>(map)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
