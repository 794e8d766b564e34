//! A zero-copy reader of OTLP `ExportLogsServiceRequest` bytes: the server's
//! decoder for OTLP logs (gRPC and `POST /v1/logs`), before the records
//! become lines.
//!
//! Decoding a 512-record request into the generated types allocates a dozen
//! strings and vectors per record; that alone cost more than turning the
//! records into lines. Instead, [`ExportRequestView::parse`] walks the bytes
//! once and checks everything the server will read (wire types, lengths,
//! UTF-8 of every string, nesting depth), then the views read records,
//! attributes and values straight out of the buffer. A request is thus
//! refused whole (before any of it is taken) or read without errors.
//!
//! Semantics are protobuf's where they matter: unknown fields are skipped,
//! the last value of a singular field wins. One simplification: a singular
//! message field sent twice is not merged; the last one is read.

use thiserror::Error;

/// Deepest nesting of values (arrays and maps inside values) accepted: as
/// deep as any real attribute goes, and a bound on the reader's recursion.
pub const MAX_DEPTH: usize = 32;

/// Why a request's bytes are not an `ExportLogsServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ViewError {
    #[error("the protobuf message ends in the middle of a field")]
    Truncated,
    #[error("a protobuf varint is longer than 10 bytes")]
    LongVarint,
    #[error("protobuf wire type {0} (groups or invalid) is not supported")]
    WireType(u8),
    #[error("protobuf field number 0 is invalid")]
    FieldZero,
    #[error("field {field} of {message} has the wrong wire type")]
    FieldType { message: &'static str, field: u32 },
    #[error("field {field} of {message} is not valid UTF-8")]
    Utf8 { message: &'static str, field: u32 },
    #[error("attribute values nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// One field's value as the wire carries it.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    I64(u64),
    Len(&'a [u8]),
    I32(u32),
}

/// What is wrong with a field's encoding: two bytes, so that results come
/// back in registers on the reader's hot path ([`ViewError`] at the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Truncated,
    LongVarint,
    WireType(u8),
    FieldZero,
}

impl From<Bad> for ViewError {
    fn from(bad: Bad) -> Self {
        match bad {
            Bad::Truncated => ViewError::Truncated,
            Bad::LongVarint => ViewError::LongVarint,
            Bad::WireType(t) => ViewError::WireType(t),
            Bad::FieldZero => ViewError::FieldZero,
        }
    }
}

#[inline]
fn varint(buf: &mut &[u8]) -> Result<u64, Bad> {
    // Tags, lengths and small numbers: one byte.
    if let Some((&b, rest)) = buf.split_first() {
        if b < 0x80 {
            *buf = rest;
            return Ok(u64::from(b));
        }
    }
    varint_long(buf)
}

#[inline(never)]
fn varint_long(buf: &mut &[u8]) -> Result<u64, Bad> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(Bad::Truncated)?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(Bad::LongVarint)
}

#[inline]
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Bad> {
    if buf.len() < n {
        return Err(Bad::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// The fields of one message, in wire order.
#[derive(Debug, Clone)]
struct FieldIter<'a>(&'a [u8]);

impl<'a> FieldIter<'a> {
    #[inline]
    fn field(&mut self) -> Result<(u32, Wire<'a>), Bad> {
        let buf = &mut self.0;
        let tag = varint(buf)?;
        let number = u32::try_from(tag >> 3).map_err(|_| Bad::FieldZero)?;
        if number == 0 {
            return Err(Bad::FieldZero);
        }
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(buf)?),
            1 => {
                let b = take(buf, 8)?;
                let mut le = [0u8; 8];
                le.copy_from_slice(b);
                Wire::I64(u64::from_le_bytes(le))
            }
            2 => {
                let len = usize::try_from(varint(buf)?).map_err(|_| Bad::Truncated)?;
                Wire::Len(take(buf, len)?)
            }
            5 => {
                let b = take(buf, 4)?;
                let mut le = [0u8; 4];
                le.copy_from_slice(b);
                Wire::I32(u32::from_le_bytes(le))
            }
            other => return Err(Bad::WireType(other as u8)),
        };
        Ok((number, wire))
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Result<(u32, Wire<'a>), Bad>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            // Stop after the first error.
            self.0 = &[];
        }
        Some(item)
    }
}

/// The fields of a message already checked: reading cannot fail.
#[inline]
fn fields(bytes: &[u8]) -> impl Iterator<Item = (u32, Wire<'_>)> {
    FieldIter(bytes).map_while(Result::ok)
}

/// Text of a checked string field.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// What a field must be, for [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Varint,
    I64,
    I32,
    Bytes,
    Str,
    /// A message, checked by the function given.
    Message,
}

/// Checks one field's wire type against `kind`; returns the bytes of a
/// length-delimited field.
fn expect<'a>(
    message: &'static str,
    field: u32,
    wire: Wire<'a>,
    kind: Kind,
) -> Result<&'a [u8], ViewError> {
    let bad = ViewError::FieldType { message, field };
    match (kind, wire) {
        (Kind::Varint, Wire::Varint(_)) | (Kind::I64, Wire::I64(_)) | (Kind::I32, Wire::I32(_)) => {
            Ok(&[])
        }
        (Kind::Bytes | Kind::Message, Wire::Len(b)) => Ok(b),
        (Kind::Str, Wire::Len(b)) => match std::str::from_utf8(b) {
            Ok(_) => Ok(b),
            Err(_) => Err(ViewError::Utf8 { message, field }),
        },
        _ => Err(bad),
    }
}

/// Checks the fields of one message: `schema` gives the kind of each known
/// field (unknown ones are skipped), `nested` checks an embedded message
/// field and returns the log records it holds.
fn check(
    message: &'static str,
    bytes: &[u8],
    schema: impl Fn(u32) -> Option<Kind>,
    mut nested: impl FnMut(u32, &[u8]) -> Result<usize, ViewError>,
) -> Result<usize, ViewError> {
    let mut records = 0;
    for field in FieldIter(bytes) {
        let (number, wire) = field.map_err(ViewError::from)?;
        let Some(kind) = schema(number) else {
            continue;
        };
        let b = expect(message, number, wire, kind)?;
        if kind == Kind::Message {
            records += nested(number, b)?;
        }
    }
    Ok(records)
}

fn check_key_value(bytes: &[u8], depth: usize) -> Result<usize, ViewError> {
    check(
        "KeyValue",
        bytes,
        |n| match n {
            1 => Some(Kind::Str),
            2 => Some(Kind::Message),
            _ => None,
        },
        |_, b| check_any_value(b, depth),
    )
}

fn check_any_value(bytes: &[u8], depth: usize) -> Result<usize, ViewError> {
    if depth > MAX_DEPTH {
        return Err(ViewError::TooDeep);
    }
    check(
        "AnyValue",
        bytes,
        |n| match n {
            1 => Some(Kind::Str),
            2 | 3 => Some(Kind::Varint),
            4 => Some(Kind::I64),
            5 | 6 => Some(Kind::Message),
            7 => Some(Kind::Bytes),
            _ => None,
        },
        |n, b| {
            let element = if n == 5 {
                check_any_value
            } else {
                check_key_value
            };
            check(
                if n == 5 { "ArrayValue" } else { "KeyValueList" },
                b,
                |n| (n == 1).then_some(Kind::Message),
                |_, b| element(b, depth + 1),
            )
        },
    )
}

fn check_attributes_holder(
    message: &'static str,
    bytes: &[u8],
    schema: impl Fn(u32) -> Option<Kind>,
    attributes: u32,
) -> Result<usize, ViewError> {
    check(message, bytes, schema, |n, b| {
        if n == attributes {
            check_key_value(b, 0)
        } else {
            Ok(0)
        }
    })
}

fn check_log_record(bytes: &[u8]) -> Result<usize, ViewError> {
    check(
        "LogRecord",
        bytes,
        |n| match n {
            1 | 11 => Some(Kind::I64),
            2 | 7 => Some(Kind::Varint),
            3 | 12 => Some(Kind::Str),
            5 | 6 => Some(Kind::Message),
            8 => Some(Kind::I32),
            9 | 10 => Some(Kind::Bytes),
            _ => None,
        },
        |n, b| {
            if n == 5 {
                check_any_value(b, 0)
            } else {
                check_key_value(b, 0)
            }
        },
    )?;
    Ok(1)
}

/// Checks a `ResourceLogs` or a `ScopeLogs`: field 1 its `header` (a
/// resource or a scope, whose attributes are its field `attributes`),
/// field 2 its `children`, field 3 its schema URL.
fn check_group(
    message: &'static str,
    bytes: &[u8],
    header: &'static str,
    header_schema: impl Fn(u32) -> Option<Kind>,
    attributes: u32,
    children: fn(&[u8]) -> Result<usize, ViewError>,
) -> Result<usize, ViewError> {
    check(
        message,
        bytes,
        |n| match n {
            1 | 2 => Some(Kind::Message),
            3 => Some(Kind::Str),
            _ => None,
        },
        |n, b| {
            if n == 2 {
                children(b)
            } else {
                check_attributes_holder(header, b, &header_schema, attributes)
            }
        },
    )
}

fn check_scope_logs(bytes: &[u8]) -> Result<usize, ViewError> {
    let scope = |n| match n {
        1 | 2 => Some(Kind::Str),
        3 => Some(Kind::Message),
        4 => Some(Kind::Varint),
        _ => None,
    };
    check_group(
        "ScopeLogs",
        bytes,
        "InstrumentationScope",
        scope,
        3,
        check_log_record,
    )
}

fn check_resource_logs(bytes: &[u8]) -> Result<usize, ViewError> {
    let resource = |n| match n {
        // entity_refs (3) is not read: skipped unchecked.
        1 => Some(Kind::Message),
        2 => Some(Kind::Varint),
        _ => None,
    };
    check_group(
        "ResourceLogs",
        bytes,
        "Resource",
        resource,
        1,
        check_scope_logs,
    )
}

/// A checked `ExportLogsServiceRequest` (or `LogsData`: same fields).
#[derive(Debug, Clone, Copy)]
pub struct ExportRequestView<'a> {
    bytes: &'a [u8],
    records: usize,
}

impl<'a> ExportRequestView<'a> {
    /// Checks `bytes` whole; the views then read them without errors.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ViewError> {
        let records = check(
            "ExportLogsServiceRequest",
            bytes,
            |n| (n == 1).then_some(Kind::Message),
            |_, b| check_resource_logs(b),
        )?;
        Ok(ExportRequestView { bytes, records })
    }

    /// Log records in the request.
    pub fn record_count(&self) -> usize {
        self.records
    }

    pub fn resource_logs(&self) -> impl Iterator<Item = ResourceLogsView<'a>> {
        messages(self.bytes, 1).map(ResourceLogsView)
    }
}

/// The embedded messages of field `number`, in order.
#[inline]
fn messages(bytes: &[u8], number: u32) -> impl Iterator<Item = &[u8]> {
    fields(bytes).filter_map(move |(n, w)| match w {
        Wire::Len(b) if n == number => Some(b),
        _ => None,
    })
}

/// The last embedded message of field `number`.
fn last_message(bytes: &[u8], number: u32) -> Option<&[u8]> {
    messages(bytes, number).last()
}

/// The attributes (`KeyValue`s of field `number`) of a message.
fn key_values(bytes: &[u8], number: u32) -> impl Iterator<Item = KeyValueRef<'_>> {
    messages(bytes, number).map(KeyValueRef::read)
}

fn last_varint(bytes: &[u8], number: u32) -> u64 {
    fields(bytes)
        .filter_map(|(n, w)| match w {
            Wire::Varint(v) if n == number => Some(v),
            _ => None,
        })
        .last()
        .unwrap_or(0)
}

/// One `ResourceLogs`: a resource and its scopes' records.
#[derive(Debug, Clone, Copy)]
pub struct ResourceLogsView<'a>(&'a [u8]);

impl<'a> ResourceLogsView<'a> {
    pub fn resource(&self) -> Option<ResourceRef<'a>> {
        last_message(self.0, 1).map(ResourceRef)
    }

    pub fn scope_logs(&self) -> impl Iterator<Item = ScopeLogsView<'a>> {
        messages(self.0, 2).map(ScopeLogsView)
    }
}

/// A `Resource`.
#[derive(Debug, Clone, Copy)]
pub struct ResourceRef<'a>(&'a [u8]);

impl<'a> ResourceRef<'a> {
    pub fn attributes(&self) -> impl Iterator<Item = KeyValueRef<'a>> {
        key_values(self.0, 1)
    }

    pub fn dropped_attributes_count(&self) -> u32 {
        last_varint(self.0, 2) as u32
    }
}

/// One `ScopeLogs`: an instrumentation scope and its records.
#[derive(Debug, Clone, Copy)]
pub struct ScopeLogsView<'a>(&'a [u8]);

impl<'a> ScopeLogsView<'a> {
    pub fn scope(&self) -> Option<ScopeRef<'a>> {
        last_message(self.0, 1).map(ScopeRef)
    }

    pub fn log_records(&self) -> impl Iterator<Item = LogRecordRef<'a>> {
        messages(self.0, 2).map(LogRecordRef::read)
    }
}

/// An `InstrumentationScope`.
#[derive(Debug, Clone, Copy)]
pub struct ScopeRef<'a>(&'a [u8]);

impl<'a> ScopeRef<'a> {
    fn last_text(&self, number: u32) -> &'a str {
        messages(self.0, number).last().map_or("", text)
    }

    pub fn name(&self) -> &'a str {
        self.last_text(1)
    }

    pub fn version(&self) -> &'a str {
        self.last_text(2)
    }

    pub fn attributes(&self) -> impl Iterator<Item = KeyValueRef<'a>> {
        key_values(self.0, 3)
    }

    pub fn dropped_attributes_count(&self) -> u32 {
        last_varint(self.0, 4) as u32
    }
}

/// One `LogRecord`, its scalar fields read in one pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogRecordRef<'a> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: &'a str,
    pub body: Option<AnyValueRef<'a>>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub event_name: &'a str,
    /// The part of the record's bytes that holds its attributes (from the
    /// first to the end of the last), so reading them skips the rest.
    attributes: &'a [u8],
}

impl<'a> LogRecordRef<'a> {
    fn read(bytes: &'a [u8]) -> Self {
        let mut r = LogRecordRef::default();
        let (mut first_attribute, mut after_attributes) = (None, 0);
        let mut iter = FieldIter(bytes);
        loop {
            let at = bytes.len() - iter.0.len();
            let Some(Ok((n, w))) = iter.next() else {
                break;
            };
            match (n, w) {
                (6, _) => {
                    first_attribute.get_or_insert(at);
                    after_attributes = bytes.len() - iter.0.len();
                }
                (1, Wire::I64(v)) => r.time_unix_nano = v,
                (11, Wire::I64(v)) => r.observed_time_unix_nano = v,
                // An enum is an int32 on the wire (negative ones sign-extended).
                (2, Wire::Varint(v)) => r.severity_number = v as i32,
                (3, Wire::Len(b)) => r.severity_text = text(b),
                (5, Wire::Len(b)) => r.body = AnyValueRef::read(b),
                (7, Wire::Varint(v)) => r.dropped_attributes_count = v as u32,
                (8, Wire::I32(v)) => r.flags = v,
                (9, Wire::Len(b)) => r.trace_id = b,
                (10, Wire::Len(b)) => r.span_id = b,
                (12, Wire::Len(b)) => r.event_name = text(b),
                _ => {}
            }
        }
        if let Some(first) = first_attribute {
            r.attributes = &bytes[first..after_attributes];
        }
        r
    }

    pub fn attributes(&self) -> impl Iterator<Item = KeyValueRef<'a>> {
        key_values(self.attributes, 6)
    }
}

/// A `KeyValue`: an attribute.
#[derive(Debug, Clone, Copy)]
pub struct KeyValueRef<'a> {
    pub key: &'a str,
    /// `None` when the value is unset (or sets no kind).
    pub value: Option<AnyValueRef<'a>>,
}

impl<'a> KeyValueRef<'a> {
    fn read(bytes: &'a [u8]) -> Self {
        let mut kv = KeyValueRef {
            key: "",
            value: None,
        };
        for (n, w) in fields(bytes) {
            match (n, w) {
                (1, Wire::Len(b)) => kv.key = text(b),
                (2, Wire::Len(b)) => kv.value = AnyValueRef::read(b),
                _ => {}
            }
        }
        kv
    }
}

/// An `AnyValue` of one kind.
#[derive(Debug, Clone, Copy)]
pub enum AnyValueRef<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(ArrayRef<'a>),
    KvList(KvListRef<'a>),
}

impl<'a> AnyValueRef<'a> {
    /// The value of an `AnyValue` message; `None` if it sets no kind.
    fn read(bytes: &'a [u8]) -> Option<Self> {
        let mut value = None;
        for (n, w) in fields(bytes) {
            value = match (n, w) {
                (1, Wire::Len(b)) => Some(AnyValueRef::String(text(b))),
                (2, Wire::Varint(v)) => Some(AnyValueRef::Bool(v != 0)),
                (3, Wire::Varint(v)) => Some(AnyValueRef::Int(v as i64)),
                (4, Wire::I64(v)) => Some(AnyValueRef::Double(f64::from_bits(v))),
                (5, Wire::Len(b)) => Some(AnyValueRef::Array(ArrayRef(b))),
                (6, Wire::Len(b)) => Some(AnyValueRef::KvList(KvListRef(b))),
                (7, Wire::Len(b)) => Some(AnyValueRef::Bytes(b)),
                _ => continue,
            };
        }
        value
    }
}

/// An `ArrayValue`.
#[derive(Debug, Clone, Copy)]
pub struct ArrayRef<'a>(&'a [u8]);

impl<'a> ArrayRef<'a> {
    /// Its elements; `None` for an element that sets no kind.
    pub fn values(&self) -> impl Iterator<Item = Option<AnyValueRef<'a>>> {
        messages(self.0, 1).map(AnyValueRef::read)
    }
}

/// A `KeyValueList`.
#[derive(Debug, Clone, Copy)]
pub struct KvListRef<'a>(&'a [u8]);

impl<'a> KvListRef<'a> {
    pub fn values(&self) -> impl Iterator<Item = KeyValueRef<'a>> {
        key_values(self.0, 1)
    }
}

#[cfg(test)]
mod tests;
