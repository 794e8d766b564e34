//! `--format text` lines back into [`Parsed`]: the fixed-width columns of
//! docs/PROTOCOL.md ("Line format"), then the message, then the
//! ` [metadata: k=v ...]` suffix, with the escapes `format.rs` writes
//! undone.
//!
//! Read by position, not by splitting on spaces (values hold spaces): the
//! columns have fixed widths in characters. Only the timestamp may be wider
//! than its column; the level column, always one of the server's own names,
//! anchors where the columns after it start.

use std::borrow::Cow;

use super::{json, Parsed};

// Column widths in characters (src/format.rs, docs/PROTOCOL.md).
const TIMESTAMP: usize = 33;
const HOSTNAME: usize = 12;
const LOGGER: usize = 22;
const LEVEL: usize = 10;
const FILENAME: usize = 20;
const FUNCTION: usize = 25;
const LINE_NUMBER: usize = 6;

// Metadata keys in the order a line has them: the fields', then the OTLP
// extras' (`ingest::otlp::map::RecordLine::extras`), numbered in that order.
const MOD: usize = 0;
const PATH: usize = 1;
const PID: usize = 2;
const PNAME: usize = 3;
const TID: usize = 4;
const TNAME: usize = 5;
const SVC: usize = 6;
const STACK: usize = 7;
const ATTRS: usize = 8;
const RESOURCE: usize = 9;
const SCOPE: usize = 10;
const TRACE_ID: usize = 11;
const SPAN_ID: usize = 12;
const FLAGS: usize = 13;
const SEVERITY: usize = 14;
const SEVERITY_NUMBER: usize = 15;
const EVENT: usize = 16;
const DROPPED: usize = 17;

/// Keys of values that are JSON objects when ingest wrote them.
const JSON_KEYS: std::ops::RangeInclusive<usize> = ATTRS..=SCOPE;

const METADATA: &str = " [metadata: ";

/// One text line; `None` if it does not have the columns of one.
pub(super) fn parse_line(line: &str) -> Option<Parsed<'_>> {
    let column_end = skip_chars(line, 0, TIMESTAMP)?;
    if let Some(p) = columns(line, column_end) {
        return Some(p);
    }
    // A timestamp longer than its column ends at one of the later spaces:
    // the first after which the columns read.
    line[column_end..]
        .match_indices(' ')
        .filter(|&(i, _)| i > 0)
        .find_map(|(i, _)| columns(line, column_end + i))
}

/// Byte offset `n` characters after `from`, if the text has them.
fn skip_chars(s: &str, from: usize, n: usize) -> Option<usize> {
    let rest = s.get(from..)?;
    if rest.len() >= n && rest.as_bytes()[..n].is_ascii() {
        return Some(from + n);
    }
    let mut chars = rest.char_indices();
    for _ in 0..n {
        chars.next()?;
    }
    Some(from + chars.offset())
}

/// The line read with the timestamp ending at byte `ts_end`.
fn columns(line: &str, ts_end: usize) -> Option<Parsed<'_>> {
    let b = line.as_bytes();
    let space = |at: usize| (b.get(at) == Some(&b' ')).then_some(at + 1);
    // One fixed-width column starting at `at`: its value and where the next
    // column starts.
    let column = |at: usize, width: usize| -> Option<(&str, usize)> {
        let end = skip_chars(line, at, width)?;
        Some((&line[at..end], space(end)?))
    };
    let at = space(ts_end)?;
    let (hostname, at) = column(at, HOSTNAME)?;
    let (logger_name, level_at) = column(at, LOGGER)?;
    let level_len = line[level_at..].find(' ')?;
    let level = &line[level_at..level_at + level_len];
    if !is_level(level) {
        return None;
    }
    let padded = level_at + level_len.max(LEVEL);
    if !line
        .get(level_at + level_len..padded)?
        .bytes()
        .all(|c| c == b' ')
    {
        return None;
    }
    let at = space(padded)?;
    let (filename, at) = column(at, FILENAME)?;
    let (function_name, at) = column(at, FUNCTION)?;
    let (line_number, at) = column(at, LINE_NUMBER)?;
    let (message, metadata) = split_metadata(&line[at..]);
    let mut p = Parsed {
        timestamp: unescape(line[..ts_end].trim_end_matches(' ')),
        hostname: value(hostname),
        logger_name: value(logger_name),
        level: Cow::Borrowed(level),
        filename: value(filename),
        function_name: value(function_name),
        line_number: value(line_number),
        message: unescape(message),
        ..Parsed::default()
    };
    if let Some(metadata) = metadata {
        read_metadata(metadata, &mut p);
    }
    Some(p)
}

/// A column's value: padding removed, escapes undone.
fn value(column: &str) -> Cow<'_, str> {
    unescape(column.trim_end_matches(' '))
}

/// One of the level names the server writes (`log_server_wire::fields::Level`).
fn is_level(s: &str) -> bool {
    match s.as_bytes() {
        b"NOTSET" | b"DEBUG" | b"STREAM" | b"INFO" | b"LOGON" | b"LOGOUT" | b"TRADE"
        | b"SCHEDULE" | b"REPORT" | b"WARNING" | b"ERROR" | b"CRITICAL" => true,
        _ => s
            .strip_prefix("LEVEL(")
            .and_then(|n| n.strip_suffix(')'))
            .is_some_and(|n| n.parse::<i32>().is_ok()),
    }
}

/// The message, and the inside of the metadata suffix if the line has one:
/// the last ` [metadata: ` (the message comes first and may hold that text
/// itself) that starts a well-formed suffix.
fn split_metadata(rest: &str) -> (&str, Option<&str>) {
    let Some(inner_end) = rest.len().checked_sub(1).filter(|_| rest.ends_with(']')) else {
        return (rest, None);
    };
    let mut search_end = rest.len();
    while let Some(at) = memchr::memmem::rfind(&rest.as_bytes()[..search_end], METADATA.as_bytes())
    {
        let inner = &rest[at + METADATA.len()..inner_end.max(at + METADATA.len())];
        if key_at(inner, 0).is_some() {
            return (&rest[..at], Some(inner));
        }
        // The pattern can overlap itself by its last character.
        search_end = at + METADATA.len() - 1;
    }
    (rest, None)
}

/// The metadata key starting at byte `at` (`key=`): its number (`MOD` ..
/// `DROPPED`) and where its value starts.
fn key_at(inner: &str, at: usize) -> Option<(usize, usize)> {
    let tail = inner.get(at..)?.as_bytes();
    let eq = tail
        .iter()
        .position(|&c| !(c.is_ascii_lowercase() || c == b'_'))
        .filter(|&i| tail[i] == b'=')?;
    Some((key_index(&tail[..eq])?, at + eq + 1))
}

/// The number of metadata key `key`. A byte-pattern match (a length switch
/// and byte compares) rather than comparing with each key: this runs at
/// every space of every metadata value, and calls to `memcmp` were half of
/// the time to read a line.
fn key_index(key: &[u8]) -> Option<usize> {
    Some(match key {
        b"mod" => MOD,
        b"path" => PATH,
        b"pid" => PID,
        b"pname" => PNAME,
        b"tid" => TID,
        b"tname" => TNAME,
        b"svc" => SVC,
        b"stack" => STACK,
        b"attrs" => ATTRS,
        b"resource" => RESOURCE,
        b"scope" => SCOPE,
        b"trace_id" => TRACE_ID,
        b"span_id" => SPAN_ID,
        b"flags" => FLAGS,
        b"severity" => SEVERITY,
        b"severity_number" => SEVERITY_NUMBER,
        b"event" => EVENT,
        b"dropped" => DROPPED,
        _ => return None,
    })
}

/// True if a value of key `index` can end at byte `at`: a space and a key
/// that comes later in the line's order.
fn boundary(inner: &str, at: usize, index: usize) -> bool {
    inner.as_bytes().get(at) == Some(&b' ')
        && key_at(inner, at + 1).is_some_and(|(next, _)| next > index)
}

/// Fills `p` from the inside of a metadata suffix (it starts with a key).
/// A value ends at the first space followed by a later key; a JSON object
/// (`attrs`, `resource`, `scope`) where the object ends, so that a
/// ` key=` inside its strings does not cut it.
fn read_metadata<'a>(inner: &'a str, p: &mut Parsed<'a>) {
    let mut next = key_at(inner, 0);
    while let Some((index, start)) = next {
        let json_end = (JSON_KEYS.contains(&index) && inner[start..].starts_with('{'))
            .then(|| json::value_end(&inner[start..]))
            .flatten()
            .map(|n| start + n)
            .filter(|&end| end == inner.len() || boundary(inner, end, index));
        let end = json_end.unwrap_or_else(|| {
            inner[start..]
                .match_indices(' ')
                .map(|(i, _)| start + i)
                .find(|&at| boundary(inner, at, index))
                .unwrap_or(inner.len())
        });
        let v = unescape(&inner[start..end]);
        let slot = match index {
            MOD => &mut p.module,
            PATH => &mut p.path_name,
            PID => &mut p.process_id,
            PNAME => &mut p.process_name,
            TID => &mut p.thread_id,
            TNAME => &mut p.thread_name,
            SVC => &mut p.service_name,
            STACK => &mut p.stack_trace,
            ATTRS => &mut p.attributes,
            RESOURCE => &mut p.resource,
            SCOPE => &mut p.scope,
            TRACE_ID => &mut p.trace_id,
            SPAN_ID => &mut p.span_id,
            FLAGS => &mut p.flags,
            SEVERITY => &mut p.severity_text,
            SEVERITY_NUMBER => &mut p.severity_number,
            EVENT => &mut p.event_name,
            _ => &mut p.dropped,
        };
        *slot = v;
        next = if end < inner.len() {
            key_at(inner, end + 1)
        } else {
            None
        };
    }
}

/// Undoes the escapes `format.rs` writes into text lines: `\xNN` for C0
/// controls and DEL, `\u{N}` for C1 controls, U+2028 and U+2029, exactly
/// as written there (lower-case hex, no leading zeros). Any other
/// backslash is the client's own text and stays.
fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match escape_at(tail) {
            Some((c, n)) => {
                out.push(c);
                rest = &tail[n..];
            }
            None => {
                out.push('\\');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character an escape at the start of `t` stands for, and its length.
fn escape_at(t: &str) -> Option<(char, usize)> {
    let lower_hex =
        |s: &str| !s.is_empty() && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if let Some(digits) = t.strip_prefix("\\x").and_then(|r| r.get(..2)) {
        let v = u8::from_str_radix(digits, 16)
            .ok()
            .filter(|_| lower_hex(digits))?;
        // Tab is written as it is, CR and LF as ` | `.
        let escaped = (v < 0x20 && !matches!(v, b'\t' | b'\n' | b'\r')) || v == 0x7f;
        return escaped.then_some((char::from(v), 4));
    }
    let inner = t.strip_prefix("\\u{")?;
    let close = inner.find('}')?;
    let digits = &inner[..close];
    if !lower_hex(digits) || digits.len() > 6 || digits.starts_with('0') {
        return None;
    }
    let c = char::from_u32(u32::from_str_radix(digits, 16).ok()?)?;
    let escaped = ('\u{80}'..='\u{9f}').contains(&c) || c == '\u{2028}' || c == '\u{2029}';
    escaped.then_some((c, 4 + close))
}
