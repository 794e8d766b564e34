//! OTLP log records -> what the line of each holds (pure: no I/O, no state).
//!
//! Sits between decoding an `ExportLogsServiceRequest` (protobuf or JSON,
//! `src/ingest/otlp`) and the [`Ingress`](crate::ingest::ingress::Ingress)
//! that numbers and formats lines. The mapping is docs/PROTOCOL.md's, "OTLP
//! logs": the columns a `LoggerMsg` has are filled from the record, its
//! scope and its resource by OpenTelemetry's semantic conventions, and
//! everything else the client sent goes into [`Extra`]s (the metadata
//! suffix of a text line, keys of a JSON line), so nothing is dropped in
//! silence. Values shared by many records (a resource's, a scope's) are
//! worked out once per resource and scope.

use std::{borrow::Cow, fmt::Write as _};

use base64::Engine as _;
use log_server_wire::{
    fields::{Fields, Level},
    otlp::view::{AnyValueRef, KeyValueRef, LogRecordRef, ResourceRef, ScopeRef},
};

use crate::format::{rfc3339_nanos, Extra, ExtraValue};

/// What every record of one `ResourceLogs` takes from its resource.
#[derive(Debug, Default)]
pub struct ResourceColumns<'a> {
    host_name: Cow<'a, str>,
    service_name: Cow<'a, str>,
    process_id: Cow<'a, str>,
    process_name: Cow<'a, str>,
    /// The other resource attributes as one compact JSON object; empty if
    /// there are none.
    others: String,
}

impl<'a> ResourceColumns<'a> {
    pub fn new(resource: Option<ResourceRef<'a>>) -> Self {
        let mut view = ResourceColumns::default();
        let Some(resource) = resource else {
            return view;
        };
        let mut others = JsonObject::default();
        for kv in resource.attributes() {
            let slot = match kv.key {
                "host.name" => Some(&mut view.host_name),
                "service.name" => Some(&mut view.service_name),
                "process.pid" => Some(&mut view.process_id),
                "process.executable.name" => Some(&mut view.process_name),
                _ => None,
            };
            fill(slot, kv, &mut others);
        }
        if resource.dropped_attributes_count() > 0 {
            others.add_raw(
                "dropped_attributes_count",
                &resource.dropped_attributes_count().to_string(),
            );
        }
        view.others = others.finish();
        view
    }
}

/// What every record of one `ScopeLogs` takes from its instrumentation
/// scope: the logger name, and the rest of the scope as one JSON object.
#[derive(Debug, Default)]
pub struct ScopeColumns<'a> {
    name: &'a str,
    /// `{"version":..,"attributes":{..}}` with what the scope has; empty if
    /// it has nothing but a name.
    others: String,
}

impl<'a> ScopeColumns<'a> {
    pub fn new(scope: Option<ScopeRef<'a>>) -> Self {
        let Some(scope) = scope else {
            return ScopeColumns::default();
        };
        let mut others = JsonObject::default();
        if !scope.version().is_empty() {
            others.add_str("version", scope.version());
        }
        let mut attributes = JsonObject::default();
        for kv in scope.attributes() {
            attributes.add(kv);
        }
        let attributes = attributes.finish();
        if !attributes.is_empty() {
            others.add_raw("attributes", &attributes);
        }
        if scope.dropped_attributes_count() > 0 {
            others.add_raw(
                "dropped_attributes_count",
                &scope.dropped_attributes_count().to_string(),
            );
        }
        ScopeColumns {
            name: scope.name(),
            others: others.finish(),
        }
    }
}

/// Puts the value of `kv` in its column `slot`, unless the attribute has no
/// column or the column is filled already (the first of two names for one
/// column fills it): then `kv` is kept in `others`, never dropped.
fn fill<'a>(slot: Option<&mut Cow<'a, str>>, kv: KeyValueRef<'a>, others: &mut JsonObject) {
    match slot {
        Some(slot) if slot.is_empty() => *slot = text_of(kv.value),
        _ => others.add(kv),
    }
}

/// Most extras one line can have (see [`RecordLine::extras`]).
pub const MAX_EXTRAS: usize = 10;

/// The line of one log record: its [`Fields`] and [`Extra`]s.
#[derive(Debug)]
pub struct RecordLine<'r> {
    resource: &'r ResourceColumns<'r>,
    scope: &'r ScopeColumns<'r>,
    record: LogRecordRef<'r>,
    timestamp: [u8; 30],
    message: Cow<'r, str>,
    filename: Cow<'r, str>,
    path_name: Cow<'r, str>,
    function_name: Cow<'r, str>,
    line_number: Cow<'r, str>,
    module: Cow<'r, str>,
    process_id: Cow<'r, str>,
    process_name: Cow<'r, str>,
    thread_id: Cow<'r, str>,
    thread_name: Cow<'r, str>,
    stack_trace: Cow<'r, str>,
    /// The other attributes, one compact JSON object; empty if none.
    attributes: String,
    trace_id: String,
    span_id: String,
    /// Numbers written only when they say something: non-zero flags and
    /// dropped-attribute count, a severity number outside OTLP's enum.
    flags: String,
    dropped: String,
    severity_number: String,
}

impl<'r> RecordLine<'r> {
    /// `received_ns`: when the request arrived (Unix nanoseconds), the
    /// timestamp of a record that has none.
    pub fn new(
        resource: &'r ResourceColumns<'r>,
        scope: &'r ScopeColumns<'r>,
        record: LogRecordRef<'r>,
        received_ns: u64,
    ) -> Self {
        let at = [record.time_unix_nano, record.observed_time_unix_nano]
            .into_iter()
            .find(|&t| t != 0)
            .unwrap_or(received_ns);
        let mut view = RecordLine {
            resource,
            scope,
            record,
            timestamp: rfc3339_nanos(at),
            message: text_of(record.body),
            filename: Cow::Borrowed(""),
            path_name: Cow::Borrowed(""),
            function_name: Cow::Borrowed(""),
            line_number: Cow::Borrowed(""),
            module: Cow::Borrowed(""),
            process_id: Cow::Borrowed(""),
            process_name: Cow::Borrowed(""),
            thread_id: Cow::Borrowed(""),
            thread_name: Cow::Borrowed(""),
            stack_trace: Cow::Borrowed(""),
            attributes: String::new(),
            trace_id: hex_id(record.trace_id),
            span_id: hex_id(record.span_id),
            flags: nonzero(u64::from(record.flags)),
            dropped: nonzero(u64::from(record.dropped_attributes_count)),
            severity_number: if (0..=24).contains(&record.severity_number) {
                String::new()
            } else {
                record.severity_number.to_string()
            },
        };
        let mut others = JsonObject::default();
        for kv in record.attributes() {
            // OpenTelemetry's semantic conventions: current names first,
            // then the older ones SDKs still send.
            let slot = match kv.key {
                "code.file.path" | "code.filepath" => Some(&mut view.path_name),
                "code.function.name" | "code.function" => Some(&mut view.function_name),
                "code.line.number" | "code.lineno" => Some(&mut view.line_number),
                "code.namespace" => Some(&mut view.module),
                "process.pid" => Some(&mut view.process_id),
                "process.executable.name" => Some(&mut view.process_name),
                "thread.id" => Some(&mut view.thread_id),
                "thread.name" => Some(&mut view.thread_name),
                "exception.stacktrace" => Some(&mut view.stack_trace),
                _ => None,
            };
            fill(slot, kv, &mut others);
        }
        // The file column shows the file's name; the whole path is `path`.
        match view.path_name.rfind('/') {
            Some(cut) => {
                view.filename = match &view.path_name {
                    Cow::Borrowed(p) => Cow::Borrowed(&p[cut + 1..]),
                    Cow::Owned(p) => Cow::Owned(p[cut + 1..].to_owned()),
                };
            }
            None => view.filename = std::mem::take(&mut view.path_name),
        }
        // A stack trace ends in a line break (Python's do): without it, the
        // text line does not end its `stack=` in ` | `.
        view.stack_trace = match std::mem::take(&mut view.stack_trace) {
            Cow::Borrowed(t) => Cow::Borrowed(t.trim_end_matches(['\n', '\r'])),
            Cow::Owned(t) => Cow::Owned(t.trim_end_matches(['\n', '\r']).to_owned()),
        };
        // Process columns from the resource when the record has none.
        for (slot, from) in [
            (&mut view.process_id, &resource.process_id),
            (&mut view.process_name, &resource.process_name),
        ] {
            if slot.is_empty() {
                *slot = Cow::Borrowed(from.as_ref());
            }
        }
        view.attributes = others.finish();
        view
    }

    /// The sixteen fields of the line.
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            // Only ASCII digits and punctuation.
            timestamp: std::str::from_utf8(&self.timestamp).unwrap_or(""),
            hostname: &self.resource.host_name,
            logger_name: self.scope.name,
            module: &self.module,
            level: level_of(self.record.severity_number),
            filename: &self.filename,
            function_name: &self.function_name,
            line_number: &self.line_number,
            message: &self.message,
            path_name: &self.path_name,
            process_id: &self.process_id,
            process_name: &self.process_name,
            thread_id: &self.thread_id,
            thread_name: &self.thread_name,
            service_name: &self.resource.service_name,
            stack_trace: &self.stack_trace,
            attributes: "",
        }
    }

    /// What the record carries beyond the fields, in the order lines show
    /// them; the first `n` of the array (`n` returned too).
    pub fn extras(&self) -> ([Extra<'_>; MAX_EXTRAS], usize) {
        let r = &self.record;
        let candidates: [(&'static str, &'static str, ExtraValue<'_>); MAX_EXTRAS] = [
            ("attrs", "attributes", ExtraValue::Json(&self.attributes)),
            (
                "resource",
                "resource",
                ExtraValue::Json(&self.resource.others),
            ),
            ("scope", "scope", ExtraValue::Json(&self.scope.others)),
            ("trace_id", "trace_id", ExtraValue::Text(&self.trace_id)),
            ("span_id", "span_id", ExtraValue::Text(&self.span_id)),
            ("flags", "flags", ExtraValue::Json(&self.flags)),
            (
                "severity",
                "severity_text",
                ExtraValue::Text(r.severity_text),
            ),
            (
                "severity_number",
                "severity_number",
                ExtraValue::Json(&self.severity_number),
            ),
            ("event", "event_name", ExtraValue::Text(r.event_name)),
            (
                "dropped",
                "dropped_attributes_count",
                ExtraValue::Json(&self.dropped),
            ),
        ];
        let mut out = [Extra {
            text_key: "",
            json_key: "",
            value: ExtraValue::Text(""),
        }; MAX_EXTRAS];
        let mut n = 0;
        for (text_key, json_key, value) in candidates {
            if value.text().is_empty() {
                continue;
            }
            out[n] = Extra {
                text_key,
                json_key,
                value,
            };
            n += 1;
        }
        (out, n)
    }
}

/// `n` in decimal, or empty for 0.
fn nonzero(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        n.to_string()
    }
}

/// OTLP severity number -> level (docs/PROTOCOL.md, "OTLP logs"): TRACE and
/// DEBUG are DEBUG, FATAL is CRITICAL, 0 and numbers outside the enum are
/// NOTSET (the number itself is kept as an extra).
pub fn level_of(severity: i32) -> Level {
    Level(match severity {
        1..=8 => 1,
        9..=12 => 3,
        13..=16 => 9,
        17..=20 => 10,
        21..=24 => 11,
        _ => 0,
    })
}

/// A trace or span id as lower-case hex; empty when unset (no bytes, or all
/// zero, which OTLP says means unset).
fn hex_id(id: &[u8]) -> String {
    if id.iter().all(|&b| b == 0) {
        return String::new();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(id.len() * 2);
    for &b in id {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// An attribute value as the text of a column: a string as it is, a number
/// or bool as written in JSON, anything else as compact JSON.
fn text_of(value: Option<AnyValueRef<'_>>) -> Cow<'_, str> {
    match value {
        Some(AnyValueRef::String(s)) => Cow::Borrowed(s),
        None => Cow::Borrowed(""),
        Some(_) => {
            let mut out = String::new();
            write_json_value(&mut out, value);
            Cow::Owned(out)
        }
    }
}

/// Builds one compact JSON object, key by key.
#[derive(Debug, Default)]
struct JsonObject(String);

impl JsonObject {
    fn key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        push_json_str(&mut self.0, key);
        self.0.push(':');
    }

    fn add(&mut self, kv: KeyValueRef<'_>) {
        self.key(kv.key);
        write_json_value(&mut self.0, kv.value);
    }

    fn add_str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_str(&mut self.0, value);
    }

    /// `json` must be one JSON value.
    fn add_raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.0.push_str(json);
    }

    /// The object; empty if no key was added.
    fn finish(mut self) -> String {
        if !self.0.is_empty() {
            self.0.push('}');
        }
        self.0
    }
}

/// An OTLP `AnyValue` as compact JSON, as OTLP/JSON writes it where JSON
/// has the type (strings, bools, numbers, arrays, maps); bytes as base64,
/// doubles JSON cannot hold as the strings proto3 JSON uses, an empty value
/// as `null`.
pub fn write_json_value(out: &mut String, value: Option<AnyValueRef<'_>>) {
    match value {
        None => out.push_str("null"),
        Some(AnyValueRef::String(s)) => push_json_str(out, s),
        Some(AnyValueRef::Bool(b)) => out.push_str(if b { "true" } else { "false" }),
        Some(AnyValueRef::Int(i)) => out.push_str(itoa::Buffer::new().format(i)),
        Some(AnyValueRef::Double(d)) if d.is_finite() => {
            // Debug prints the shortest text that reads back as the same
            // number, always valid JSON (`1.0`, `1e300`).
            let _ = write!(out, "{d:?}");
        }
        Some(AnyValueRef::Double(d)) => out.push_str(if d.is_nan() {
            "\"NaN\""
        } else if d > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        }),
        Some(AnyValueRef::Bytes(b)) => {
            // Standard base64 with padding, as OTLP/JSON writes bytes.
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push('"');
        }
        Some(AnyValueRef::Array(a)) => {
            out.push('[');
            for (i, v) in a.values().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_value(out, v);
            }
            out.push(']');
        }
        Some(AnyValueRef::KvList(kvs)) => {
            out.push('{');
            for (i, kv) in kvs.values().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(out, kv.key);
                out.push(':');
                write_json_value(out, kv.value);
            }
            out.push('}');
        }
    }
}

/// `s` as a JSON string. Control characters and U+2028/U+2029 are escaped,
/// so the text holds no line break of any kind.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escaped);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests;
