//! Lines of the log files -> one encoded OTLP `ExportLogsServiceRequest`
//! (pure: no I/O).
//!
//! Sits in the forwarder between the file follower (which reads what the
//! writer wrote, `_main.log` and the rotated files) and the OTLP client
//! (`forward::export`): [`RequestBuilder::push`] takes one line at a time,
//! [`RequestBuilder::take_encoded`] hands over the protobuf bytes of every
//! line pushed since, in order. It inverts the mapping OTLP ingest applies
//! (`ingest::otlp::map`, docs/PROTOCOL.md "OTLP logs"), so a line forwarded
//! to another log-server's OTLP ingest comes out as the same line there
//! (except what the table calls lossy).
//!
//! Each line is detected on its own: a line that starts with `{"seq":` and
//! parses as the object of `--format json` is JSON, anything else is a text
//! line (docs/PROTOCOL.md "Line format"). A line that parses as neither
//! (not UTF-8, not the columns of a text line) is never dropped: it becomes
//! a record whose body is the whole line (lossy UTF-8) with the attribute
//! `log_server.unparsed = true`.
//!
//! # Mapping
//!
//! | line (text / json key)                 | OTLP                                                        |
//! | -------------------------------------- | ----------------------------------------------------------- |
//! | timestamp / `timestamp`                | `time_unix_nano` if RFC 3339 (`T` or space, fraction, `Z` or offset); else attribute `log_server.timestamp` |
//! | – / `received_at`                      | `observed_time_unix_nano`                                   |
//! | – / `seq`                              | attribute `log_server.seq` (int)                            |
//! | hostname / `hostname`                  | resource `host.name`                                        |
//! | `svc=` / `service_name`                | resource `service.name`                                     |
//! | `pid=` / `process_id`                  | resource `process.pid` (int when a plain integer)           |
//! | `pname=` / `process_name`              | resource `process.executable.name`                          |
//! | `resource=` / `resource`               | the other resource attributes, typed; `dropped_attributes_count` |
//! | `--forward_resource k=v`               | resource attributes (string) the line does not set itself  |
//! | logger / `logger_name`                 | scope name                                                  |
//! | `scope=` / `scope`                     | scope `version`, `attributes`, `dropped_attributes_count`   |
//! | LEVEL / `level`                        | `severity_number` (below) and `severity_text` = the name    |
//! | `severity=` / `severity_text`          | `severity_text` (instead of the level's name)               |
//! | `severity_number=` / `severity_number` | `severity_number` (instead of the level's)                  |
//! | `path=` / `path_name`, else filename   | attribute `code.file.path`                                  |
//! | function / `function_name`             | attribute `code.function.name`                              |
//! | line / `line_number`                   | attribute `code.line.number` (int when a plain integer)     |
//! | `mod=` / `module`                      | attribute `code.namespace`                                  |
//! | `tid=` / `thread_id`                   | attribute `thread.id` (int when a plain integer)            |
//! | `tname=` / `thread_name`               | attribute `thread.name`                                     |
//! | `stack=` / `stack_trace`               | attribute `exception.stacktrace`                            |
//! | message / `message`                    | body (string)                                               |
//! | `attrs=` / `attributes` (JSON object)  | attributes with typed values: integers int, other numbers double, bools, strings, arrays, objects as kvlist, `null` empty; anything but an object: attribute `log_server.attributes` (string) |
//! | `trace_id=`, `span_id=` (hex)          | `trace_id`, `span_id` bytes (not hex: attribute `log_server.trace_id` / `log_server.span_id`) |
//! | `flags=`, `event=`, `dropped=`         | `flags`, `event_name`, `dropped_attributes_count`           |
//!
//! Levels: NOTSET 0 (unspecified), DEBUG 5, STREAM 8 (DEBUG4), INFO 9,
//! LOGON, LOGOUT, TRADE, SCHEDULE and REPORT 10 (INFO2), WARNING 13,
//! ERROR 17, CRITICAL 21, `LEVEL(n)` n when 1..=24 (else 0).
//!
//! Consecutive records with the same resource (host, service, pid, process
//! name, `resource=`) share one `ResourceLogs`, and with the same scope
//! (logger, `scope=`) one `ScopeLogs`; the records keep their order exactly.
//!
//! # What is lossy
//!
//! JSON lines are lossless for what they hold. Text lines lose:
//! - column padding, so trailing spaces of a column's value; a value cut at
//!   its column's width stays cut (`--format json` does not cut);
//! - ` | ` in place of a line break (not reversible: it stays ` | `); a
//!   `\xNN` / `\u{N}` that a client wrote itself is read back as the
//!   control character the server would have escaped that way;
//! - a message that itself ends in text shaped like a metadata suffix
//!   (` [metadata: pid=1]`) is read as metadata;
//! - the file column when `path=` is set (the path's last part is the file
//!   name again), and a file name without a path that holds a `/`.
//!
//! Both formats lose the timestamp's own text once it is read as a time
//! (another log-server writes it back as UTC with nanoseconds), a severity
//! number within OTLP's range beyond what the level says (INFO3 comes back
//! as INFO, 9), and the type of bytes values (they were written as base64
//! strings).
//!
//! What another log-server then writes differs from the line read here
//! only in: the timestamp's spelling (the same instant; B's own receive
//! time for an empty one in text, A's `received_at` in JSON); the level of
//! a name OTLP has no number for (STREAM -> DEBUG, LOGON .. REPORT ->
//! INFO, `LEVEL(n)` by n), with A's level name as `severity=` (every line
//! without one gains it); `attrs=` as compact JSON; a JSON line's stack
//! trace without trailing line breaks (ingest trims them); JSON's `seq` as
//! the attribute `log_server.seq`. The tests (`lines/tests.rs`) hold B's
//! lines to exactly that.

mod json;
mod pb;
mod text;

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use self::pb::{
    begin, end, end_slack, put_bytes, put_fixed32, put_fixed64, put_tag, put_uint, Open, LEN,
};

/// Builds OTLP export requests from consecutive lines of the log files.
#[derive(Debug)]
pub struct RequestBuilder {
    /// `--forward_resource` attributes, put on every resource that does not
    /// set the same key itself.
    resource: Vec<(String, String)>,
    /// The request so far: `ResourceLogs` fields of an
    /// `ExportLogsServiceRequest`, the last one (and its last `ScopeLogs`)
    /// still open.
    out: BytesMut,
    /// Records pushed since the last take.
    records: usize,
    /// The open `ResourceLogs` and `ScopeLogs` (their lengths are written
    /// when they end).
    open_resource: Option<Open>,
    open_scope: Option<Open>,
    /// What the open `ResourceLogs` was built from (host, service, pid,
    /// process name, `resource=`): a record with the same joins it.
    resource_key: [String; 5],
    /// What the open `ScopeLogs` was built from (logger, `scope=`).
    scope_key: [String; 2],
}

/// One line, read: every value as the line holds it (escapes undone),
/// empty when absent. Borrowed from the line where nothing needed undoing.
#[derive(Debug, Default)]
struct Parsed<'a> {
    timestamp: Cow<'a, str>,
    received_at: Cow<'a, str>,
    seq: Option<u64>,
    hostname: Cow<'a, str>,
    service_name: Cow<'a, str>,
    process_id: Cow<'a, str>,
    process_name: Cow<'a, str>,
    resource: Cow<'a, str>,
    logger_name: Cow<'a, str>,
    scope: Cow<'a, str>,
    level: Cow<'a, str>,
    severity_text: Cow<'a, str>,
    severity_number: Cow<'a, str>,
    filename: Cow<'a, str>,
    path_name: Cow<'a, str>,
    function_name: Cow<'a, str>,
    line_number: Cow<'a, str>,
    module: Cow<'a, str>,
    thread_id: Cow<'a, str>,
    thread_name: Cow<'a, str>,
    stack_trace: Cow<'a, str>,
    message: Cow<'a, str>,
    attributes: Cow<'a, str>,
    trace_id: Cow<'a, str>,
    span_id: Cow<'a, str>,
    flags: Cow<'a, str>,
    event_name: Cow<'a, str>,
    dropped: Cow<'a, str>,
}

// Field numbers of the OTLP messages written here.
/// `ExportLogsServiceRequest.resource_logs`.
const REQUEST_RESOURCE_LOGS: u32 = 1;
/// `ResourceLogs.resource`, `.scope_logs`.
const RESOURCE_LOGS_RESOURCE: u32 = 1;
const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
/// `Resource.attributes`, `.dropped_attributes_count`.
const RESOURCE_ATTRIBUTES: u32 = 1;
const RESOURCE_DROPPED: u32 = 2;
/// `ScopeLogs.scope`, `.log_records`.
const SCOPE_LOGS_SCOPE: u32 = 1;
const SCOPE_LOGS_RECORDS: u32 = 2;
/// `InstrumentationScope` fields.
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
const SCOPE_ATTRIBUTES: u32 = 3;
const SCOPE_DROPPED: u32 = 4;
/// `LogRecord` fields.
const RECORD_TIME: u32 = 1;
const RECORD_SEVERITY_NUMBER: u32 = 2;
const RECORD_SEVERITY_TEXT: u32 = 3;
const RECORD_BODY: u32 = 5;
const RECORD_ATTRIBUTES: u32 = 6;
const RECORD_DROPPED: u32 = 7;
const RECORD_FLAGS: u32 = 8;
const RECORD_TRACE_ID: u32 = 9;
const RECORD_SPAN_ID: u32 = 10;
const RECORD_OBSERVED_TIME: u32 = 11;
const RECORD_EVENT_NAME: u32 = 12;

/// The key ingest writes a resource's or scope's dropped-attribute count
/// under, inside `resource=` / `scope=`.
const DROPPED_KEY: &str = "dropped_attributes_count";

impl RequestBuilder {
    /// `resource`: extra resource attributes (`--forward_resource
    /// key=value`, repeatable) put on every resource.
    pub fn new(resource: Vec<(String, String)>) -> Self {
        RequestBuilder {
            resource,
            out: BytesMut::with_capacity(64 * 1024),
            records: 0,
            open_resource: None,
            open_scope: None,
            resource_key: Default::default(),
            scope_key: Default::default(),
        }
    }

    /// Adds one line (without its '\n'). Never fails and never drops a
    /// line: see the module doc for how it is read.
    pub fn push(&mut self, line: &[u8]) {
        self.records += 1;
        let Ok(text) = std::str::from_utf8(line) else {
            // The writer writes only UTF-8: this is not one of its lines.
            return self.push_unparsed(line);
        };
        let parsed = if text.starts_with("{\"seq\":") {
            json::parse_line(text).or_else(|| text::parse_line(text))
        } else {
            text::parse_line(text)
        };
        match parsed {
            Some(parsed) => self.push_parsed(&parsed),
            None => self.push_unparsed(line),
        }
    }

    /// Records pushed since the last take.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes the encoded request would have (a close upper bound: the open
    /// resource's and scope's lengths may need a few more bytes), for
    /// batching by size.
    pub fn encoded_len(&self) -> usize {
        self.out.len()
            + self.open_resource.map_or(0, end_slack)
            + self.open_scope.map_or(0, end_slack)
    }

    /// The request for every line pushed since the last take, encoded;
    /// starts over, keeping allocations (the buffer is reused once the
    /// returned bytes are dropped).
    pub fn take_encoded(&mut self) -> Bytes {
        self.close_scope();
        self.close_resource();
        self.records = 0;
        self.resource_key.iter_mut().for_each(String::clear);
        self.scope_key.iter_mut().for_each(String::clear);
        self.out.split().freeze()
    }

    fn close_scope(&mut self) {
        if let Some(open) = self.open_scope.take() {
            end(&mut self.out, open);
        }
    }

    fn close_resource(&mut self) {
        self.close_scope();
        if let Some(open) = self.open_resource.take() {
            end(&mut self.out, open);
        }
    }

    /// A line that is neither format: the whole line as the body.
    fn push_unparsed(&mut self, line: &[u8]) {
        let message = String::from_utf8_lossy(line);
        let parsed = Parsed {
            message,
            ..Parsed::default()
        };
        self.group(&parsed);
        let open = self.begin_record();
        let out = &mut self.out;
        put_body(out, &parsed.message);
        put_kv_bool(out, RECORD_ATTRIBUTES, "log_server.unparsed", true);
        end(out, open);
    }

    fn begin_record(&mut self) -> Open {
        put_tag(&mut self.out, SCOPE_LOGS_RECORDS, LEN);
        // Most records are 128 B to 16 KiB.
        begin(&mut self.out, 2)
    }

    /// Opens a new `ResourceLogs` and/or `ScopeLogs` unless `p` belongs to
    /// the open ones.
    fn group(&mut self, p: &Parsed<'_>) {
        let resource = [
            &p.hostname,
            &p.service_name,
            &p.process_id,
            &p.process_name,
            &p.resource,
        ];
        let same_resource = self.open_resource.is_some() && holds(&self.resource_key, &resource);
        if !same_resource {
            self.close_resource();
            keep(&mut self.resource_key, &resource);
            put_tag(&mut self.out, REQUEST_RESOURCE_LOGS, LEN);
            self.open_resource = Some(begin(&mut self.out, 3));
            self.put_resource(p);
        }
        let scope = [&p.logger_name, &p.scope];
        let same_scope =
            same_resource && self.open_scope.is_some() && holds(&self.scope_key, &scope);
        if !same_scope {
            self.close_scope();
            keep(&mut self.scope_key, &scope);
            put_tag(&mut self.out, RESOURCE_LOGS_SCOPE_LOGS, LEN);
            self.open_scope = Some(begin(&mut self.out, 3));
            put_scope(&mut self.out, &p.logger_name, &p.scope);
        }
    }

    /// The `Resource` of a new `ResourceLogs`.
    fn put_resource(&mut self, p: &Parsed<'_>) {
        let out = &mut self.out;
        put_tag(out, RESOURCE_LOGS_RESOURCE, LEN);
        let open = begin(out, 2);
        let mut keys: Vec<Cow<'_, str>> = Vec::new();
        for (key, value, int) in [
            ("host.name", &p.hostname, false),
            ("service.name", &p.service_name, false),
            ("process.pid", &p.process_id, true),
            ("process.executable.name", &p.process_name, false),
        ] {
            if !value.is_empty() {
                put_kv_text(out, RESOURCE_ATTRIBUTES, key, value, int);
                keys.push(Cow::Borrowed(key));
            }
        }
        let mut dropped = None;
        if !p.resource.is_empty() {
            let whole = json::for_each_entry(&p.resource, |key, raw| {
                if key == DROPPED_KEY {
                    if let Ok(n) = raw.get().parse::<u32>() {
                        dropped = Some(n);
                        return;
                    }
                }
                json::put_kv_json(out, RESOURCE_ATTRIBUTES, key, raw.get());
                keys.push(Cow::Owned(key.to_owned()));
            });
            if !whole {
                put_kv_str(out, RESOURCE_ATTRIBUTES, "log_server.resource", &p.resource);
            }
        }
        for (key, value) in &self.resource {
            if !keys.iter().any(|k| k == key) {
                put_kv_str(out, RESOURCE_ATTRIBUTES, key, value);
            }
        }
        if let Some(n) = dropped {
            put_uint(out, RESOURCE_DROPPED, u64::from(n));
        }
        end(out, open);
    }

    fn push_parsed(&mut self, p: &Parsed<'_>) {
        self.group(p);
        let open = self.begin_record();
        let out = &mut self.out;
        let time = time_of(&p.timestamp);
        if let Some(t) = time {
            put_fixed64(out, RECORD_TIME, t);
        }
        let severity = match p.severity_number.parse::<i32>() {
            Ok(n) => n,
            Err(_) => severity_of(&p.level),
        };
        if severity != 0 {
            // An enum: negative numbers as 10-byte varints, as protobuf says.
            put_uint(out, RECORD_SEVERITY_NUMBER, i64::from(severity) as u64);
        }
        let severity_text = if p.severity_text.is_empty() {
            &p.level
        } else {
            &p.severity_text
        };
        if !severity_text.is_empty() {
            put_bytes(out, RECORD_SEVERITY_TEXT, severity_text.as_bytes());
        }
        if !p.message.is_empty() {
            put_body(out, &p.message);
        }
        let file = if p.path_name.is_empty() {
            &p.filename
        } else {
            &p.path_name
        };
        for (key, value, int) in [
            ("code.file.path", file, false),
            ("code.function.name", &p.function_name, false),
            ("code.line.number", &p.line_number, true),
            ("code.namespace", &p.module, false),
            ("thread.id", &p.thread_id, true),
            ("thread.name", &p.thread_name, false),
            ("exception.stacktrace", &p.stack_trace, false),
        ] {
            if !value.is_empty() {
                put_kv_text(out, RECORD_ATTRIBUTES, key, value, int);
            }
        }
        if !p.timestamp.is_empty() && time.is_none() {
            put_kv_str(out, RECORD_ATTRIBUTES, "log_server.timestamp", &p.timestamp);
        }
        if let Some(seq) = p.seq {
            put_kv_int(
                out,
                RECORD_ATTRIBUTES,
                "log_server.seq",
                i64::try_from(seq).unwrap_or(i64::MAX),
            );
        }
        if !p.attributes.is_empty()
            && !json::for_each_entry(&p.attributes, |key, raw| {
                json::put_kv_json(out, RECORD_ATTRIBUTES, key, raw.get());
            })
        {
            put_kv_str(
                out,
                RECORD_ATTRIBUTES,
                "log_server.attributes",
                &p.attributes,
            );
        }
        let ids = [
            (RECORD_TRACE_ID, &p.trace_id, "log_server.trace_id"),
            (RECORD_SPAN_ID, &p.span_id, "log_server.span_id"),
        ];
        for (_, id, key) in ids {
            if !id.is_empty() && !is_hex_id(id) {
                put_kv_str(out, RECORD_ATTRIBUTES, key, id);
            }
        }
        if let Ok(n) = p.dropped.parse::<u32>() {
            if n > 0 {
                put_uint(out, RECORD_DROPPED, u64::from(n));
            }
        }
        if let Ok(n) = p.flags.parse::<u32>() {
            if n > 0 {
                put_fixed32(out, RECORD_FLAGS, n);
            }
        }
        for (field, id, _) in ids {
            if is_hex_id(id) {
                put_hex(out, field, id);
            }
        }
        if let Some(t) = time_of(&p.received_at) {
            put_fixed64(out, RECORD_OBSERVED_TIME, t);
        }
        if !p.event_name.is_empty() {
            put_bytes(out, RECORD_EVENT_NAME, p.event_name.as_bytes());
        }
        end(out, open);
    }
}

/// The `InstrumentationScope` of a new `ScopeLogs`: the logger's name, and
/// what ingest wrote as `scope=` (`{"version":..,"attributes":{..},
/// "dropped_attributes_count":n}`; any other key becomes a scope attribute).
fn put_scope(out: &mut BytesMut, name: &str, others: &str) {
    if name.is_empty() && others.is_empty() {
        return;
    }
    put_tag(out, SCOPE_LOGS_SCOPE, LEN);
    let open = begin(out, 1);
    if !name.is_empty() {
        put_bytes(out, SCOPE_NAME, name.as_bytes());
    }
    if !others.is_empty() {
        let mut dropped = None;
        let whole = json::for_each_entry(others, |key, raw| {
            let value = raw.get();
            if key == "version" {
                if let Ok(version) = serde_json::from_str::<Cow<'_, str>>(value) {
                    put_bytes(out, SCOPE_VERSION, version.as_bytes());
                    return;
                }
            }
            if key == "attributes"
                && json::for_each_entry(value, |key, raw| {
                    json::put_kv_json(out, SCOPE_ATTRIBUTES, key, raw.get());
                })
            {
                return;
            }
            if key == DROPPED_KEY {
                if let Ok(n) = value.parse::<u32>() {
                    dropped = Some(n);
                    return;
                }
            }
            json::put_kv_json(out, SCOPE_ATTRIBUTES, key, value);
        });
        if !whole {
            put_kv_str(out, SCOPE_ATTRIBUTES, "log_server.scope", others);
        }
        if let Some(n) = dropped {
            put_uint(out, SCOPE_DROPPED, u64::from(n));
        }
    }
    end(out, open);
}

/// `a == b`, inline: seven of these run for every line (is it in the open
/// resource and scope?), mostly on short or empty text, and as calls to
/// `memcmp` they were more than half of the time to read a text line.
#[inline]
/// Whether the remembered `keys` of the open group are `values`.
fn holds(keys: &[String], values: &[impl AsRef<str>]) -> bool {
    keys.iter().zip(values).all(|(k, v)| same(k, v.as_ref()))
}

/// Remembers `values` as the keys of a new group (reusing the strings).
fn keep(keys: &mut [String], values: &[impl AsRef<str>]) {
    for (key, value) in keys.iter_mut().zip(values) {
        key.clear();
        key.push_str(value.as_ref());
    }
}

fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_ne_bytes(w)
    };
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = wa
        .remainder()
        .iter()
        .zip(wb.remainder())
        .all(|(x, y)| x == y);
    tail && wa.zip(wb).all(|(x, y)| word(x) == word(y))
}

/// OTLP severity number of a level name (see the module doc).
fn severity_of(level: &str) -> i32 {
    // Byte patterns: compared inline, not by a `memcmp` call per name.
    match level.as_bytes() {
        b"DEBUG" => 5,
        b"STREAM" => 8,
        b"INFO" => 9,
        b"LOGON" | b"LOGOUT" | b"TRADE" | b"SCHEDULE" | b"REPORT" => 10,
        b"WARNING" => 13,
        b"ERROR" => 17,
        b"CRITICAL" => 21,
        _ => level
            .strip_prefix("LEVEL(")
            .and_then(|n| n.strip_suffix(')'))
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|n| (1..=24).contains(n))
            .unwrap_or(0),
    }
}

/// A trace or span id as ingest writes it: lower-case hex of 1 to 32 bytes.
fn is_hex_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() % 2 == 0
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn put_hex(out: &mut BytesMut, field: u32, id: &str) {
    let mut bytes = [0u8; 32];
    let n = id.len() / 2;
    for (i, pair) in id.as_bytes().chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
        bytes[i] = digit(pair[0]) << 4 | digit(pair[1]);
    }
    put_bytes(out, field, &bytes[..n]);
}

/// `s` as the integer ingest would print the same way, if it is one (no
/// sign but `-`, no leading zero): a pid, thread id or line number an SDK
/// sent as an int comes back as one, and text stays text.
fn plain_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || (digits.starts_with('0') && s != "0") {
        return None;
    }
    s.parse().ok()
}

/// A string value; an int one when `int` (a key SDKs send as an int) and
/// the text is a plain integer.
fn put_kv_text(out: &mut BytesMut, field: u32, key: &str, value: &str, int: bool) {
    match plain_int(value).filter(|_| int) {
        Some(n) => put_kv_int(out, field, key, n),
        None => put_kv_str(out, field, key, value),
    }
}

/// The body: an `AnyValue` string.
fn put_body(out: &mut BytesMut, message: &str) {
    put_tag(out, RECORD_BODY, LEN);
    pb::put_varint(out, pb::len_field_len(message.len()) as u64);
    put_bytes(out, 1, message.as_bytes());
}

/// A `KeyValue` whose `AnyValue` is the `value_len` bytes `value` writes.
#[inline]
fn put_kv(
    out: &mut BytesMut,
    field: u32,
    key: &str,
    value_len: usize,
    value: impl FnOnce(&mut BytesMut),
) {
    let kv_len = pb::len_field_len(key.len()) + pb::len_field_len(value_len);
    put_tag(out, field, LEN);
    pb::put_varint(out, kv_len as u64);
    put_bytes(out, 1, key.as_bytes());
    put_tag(out, 2, LEN);
    pb::put_varint(out, value_len as u64);
    value(out);
}

fn put_kv_str(out: &mut BytesMut, field: u32, key: &str, value: &str) {
    put_kv(out, field, key, pb::len_field_len(value.len()), |out| {
        put_bytes(out, 1, value.as_bytes())
    });
}

fn put_kv_int(out: &mut BytesMut, field: u32, key: &str, value: i64) {
    put_kv(out, field, key, 1 + pb::varint_len(value as u64), |out| {
        put_uint(out, 3, value as u64)
    });
}

fn put_kv_bool(out: &mut BytesMut, field: u32, key: &str, value: bool) {
    put_kv(out, field, key, 2, |out| put_uint(out, 2, u64::from(value)));
}

/// RFC 3339 (`T`, `t` or a space between date and time; a fraction of any
/// length, nanoseconds kept; `Z` or an offset) -> Unix nanoseconds. `None`
/// for anything else, and for times before 1970 or after 2554 (what a u64
/// of nanoseconds holds).
fn time_of(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if b[at] == b'.' {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 9 {
                nanos = nanos * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        for _ in (at - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    let ns = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u64::try_from(ns).ok()
}

/// (year, month, day) of the proleptic Gregorian calendar -> days since
/// 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
