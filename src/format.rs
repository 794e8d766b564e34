//! Line formatting: [`Fields`] of one message -> one line of the log file.
//!
//! Sits on the ingest side of the pipeline (after `log_server_wire::decode`, before the
//! queue), so formatting runs on the ingest threads in parallel and the
//! writer only moves bytes. Pure functions over a reused output buffer: no
//! I/O, no per-field allocation.
//!
//! Whatever a client sends, one message is exactly one line:
//! - `text` writes CR, LF and CRLF as ` | ` and escapes every other control
//!   character (C0 but tab, DEL, C1, U+2028, U+2029) as `\xNN` or `\u{N}`,
//!   so no client text can start a line or forge a record;
//! - `json` uses JSON string escapes (plus `\u2028`/`\u2029`).
//!
//! A line is never longer than the configured maximum (a file must hold it):
//! in the rare case it would be (a huge message full of escapes), the
//! unbounded fields are cut and end with [`TRUNCATED_MARK`].

use std::{
    borrow::Cow,
    time::{SystemTime, UNIX_EPOCH},
};

use log_server_wire::fields::{Fields, RawFields};

/// How a message becomes a line (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LineFormat {
    /// Fixed-width columns of docs/PROTOCOL.md, for people reading the file.
    #[default]
    Text,
    /// One JSON object per line with every field, `seq` and `received_at`,
    /// for log shippers.
    Json,
}

/// Ends a field that was cut to keep its line within the maximum length.
pub const TRUNCATED_MARK: &str = "[truncated]";

/// Column widths of the text format, in characters (docs/PROTOCOL.md).
mod width {
    pub(super) const TIMESTAMP: usize = 33;
    pub(super) const HOSTNAME: usize = 12;
    pub(super) const LOGGER: usize = 22;
    pub(super) const LEVEL: usize = 10;
    pub(super) const FILENAME: usize = 20;
    pub(super) const FUNCTION: usize = 25;
    pub(super) const LINE_NUMBER: usize = 6;
}

/// Bytes of a line that are not field text (column padding, metadata keys,
/// JSON keys and punctuation), with room to spare. The smallest line limit
/// accepted is larger than this.
pub const LINE_OVERHEAD: usize = 1024;

/// A message's receive time, rendered once per batch as RFC 3339 UTC with
/// microseconds (`2026-01-02T15:04:05.123456Z`) for the JSON `received_at`.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedAt([u8; 27]);

impl ReceivedAt {
    pub fn new(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, dd) = civil_from_days(days as i64);
        let mut b = [0u8; 27];
        put_digits(&mut b[0..4], y as u64);
        b[4] = b'-';
        put_digits(&mut b[5..7], u64::from(m));
        b[7] = b'-';
        put_digits(&mut b[8..10], u64::from(dd));
        b[10] = b'T';
        put_digits(&mut b[11..13], rem / 3600);
        b[13] = b':';
        put_digits(&mut b[14..16], rem % 3600 / 60);
        b[16] = b':';
        put_digits(&mut b[17..19], rem % 60);
        b[19] = b'.';
        put_digits(&mut b[20..26], u64::from(d.subsec_micros()));
        b[26] = b'Z';
        ReceivedAt(b)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Unix nanoseconds as RFC 3339 UTC with nanoseconds
/// (`2026-01-02T15:04:05.123456789Z`), as LoggerMsg timestamps are written;
/// OTLP record times become line timestamps with this.
pub fn rfc3339_nanos(ns: u64) -> [u8; 30] {
    let micros = ReceivedAt::new(UNIX_EPOCH + std::time::Duration::from_secs(ns / 1_000_000_000));
    let mut b = [0u8; 30];
    b[..20].copy_from_slice(&micros.0[..20]);
    put_digits(&mut b[20..29], ns % 1_000_000_000);
    b[29] = b'Z';
    b
}

/// Writes `v` as zero-padded decimal filling `out` (most significant first).
fn put_digits(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Turns [`Fields`] into lines of one [`LineFormat`], never longer than a
/// maximum. Cheap to copy; one per ingest thread or connection.
#[derive(Debug, Clone, Copy)]
pub struct LineFormatter {
    format: LineFormat,
    /// Upper bound of one line in bytes, newline included.
    max_line: usize,
}

impl LineFormatter {
    /// `max_line` is the longest line that may be written (at least
    /// [`LINE_OVERHEAD`] * 2; normally the maximum file size).
    pub fn new(format: LineFormat, max_line: usize) -> Self {
        LineFormatter {
            format,
            max_line: max_line.max(2 * LINE_OVERHEAD),
        }
    }

    pub fn format(&self) -> LineFormat {
        self.format
    }

    /// Appends one line for `f` (terminated by `\n`) to `out`. `seq` and
    /// `received_at` appear only in JSON lines. Returns `true` when fields
    /// had to be cut to respect the maximum line length.
    pub fn write(
        &self,
        f: &Fields<'_>,
        seq: u64,
        received_at: &ReceivedAt,
        out: &mut Vec<u8>,
    ) -> bool {
        self.write_extended(&f.into(), &[], seq, received_at, out)
    }

    /// Like [`LineFormatter::write`], from fields as they came off the wire
    /// (text that is not valid UTF-8 is written with U+FFFD).
    pub fn write_raw(
        &self,
        f: &RawFields<'_>,
        seq: u64,
        received_at: &ReceivedAt,
        out: &mut Vec<u8>,
    ) -> bool {
        self.write_extended(f, &[], seq, received_at, out)
    }

    /// Like [`LineFormatter::write`], with `extras` after the fields: what
    /// an OTLP record carries beyond the sixteen fields (see [`Extra`]).
    pub fn write_with_extras(
        &self,
        f: &Fields<'_>,
        extras: &[Extra<'_>],
        seq: u64,
        received_at: &ReceivedAt,
        out: &mut Vec<u8>,
    ) -> bool {
        self.write_extended(&f.into(), extras, seq, received_at, out)
    }

    fn write_extended(
        &self,
        f: &RawFields<'_>,
        extras: &[Extra<'_>],
        seq: u64,
        received_at: &ReceivedAt,
        out: &mut Vec<u8>,
    ) -> bool {
        let start = out.len();
        // One pass that gives up as soon as the line passes the limit: a
        // field is never escaped further than the line could hold, so a
        // 4 MiB field of control characters costs at most `max_line` bytes
        // of output here, not 16 MiB escaped and then thrown away.
        //
        // Every byte of a field that is not cut at a column width becomes at
        // least one byte of the line (escapes and U+FFFD only lengthen), so
        // when those fields alone pass the limit the line will be cut, and
        // that pass is skipped.
        let fields = match self.format {
            LineFormat::Text => [
                f.timestamp,
                f.message,
                f.module,
                f.path_name,
                f.process_id,
                f.process_name,
                f.thread_id,
                f.thread_name,
                f.service_name,
                f.stack_trace,
                f.attributes,
            ]
            .iter()
            .map(|t| t.len())
            .sum::<usize>(),
            LineFormat::Json => f.text_len(),
        };
        let unbounded = fields + extras.iter().map(|e| e.value.text().len()).sum::<usize>();
        if unbounded <= self.max_line {
            let mut line = Line {
                out,
                end: start + self.max_line,
            };
            if self.format == LineFormat::Text && write_text_plain(f, extras, &mut line) {
                return false;
            }
            if self.write_capped(f, extras, seq, received_at, usize::MAX, &mut line)
                && out.len() - start <= self.max_line
            {
                return false;
            }
        }
        // Each output character takes at most 4 bytes, and a line has 17
        // fields and the extras plus the overhead: this cap fits every
        // field at once.
        let cap =
            (self.max_line - LINE_OVERHEAD) / ((17 + extras.len()) * 4) - TRUNCATED_MARK.len();
        out.truncate(start);
        let mut line = Line {
            out,
            end: usize::MAX,
        };
        self.write_capped(f, extras, seq, received_at, cap, &mut line);
        debug_assert!(out.len() - start <= self.max_line);
        true
    }

    /// Writes the line with fields of at most `cap` characters; false if it
    /// stopped because the line reached `line.end`.
    fn write_capped(
        &self,
        f: &RawFields<'_>,
        extras: &[Extra<'_>],
        seq: u64,
        at: &ReceivedAt,
        cap: usize,
        line: &mut Line<'_>,
    ) -> bool {
        match self.format {
            LineFormat::Text => write_text(f, extras, cap, line).is_some(),
            LineFormat::Json => write_json(f, extras, seq, at, cap, line).is_some(),
        }
    }
}

/// One more key of a line, after the sixteen fields: what an OTLP record
/// carries that has no column (its other attributes, resource, trace
/// context, severity text). In a text line it is `text_key=value` in the
/// metadata suffix, escaped like every field; in a JSON line
/// `"json_key":value`.
#[derive(Debug, Clone, Copy)]
pub struct Extra<'a> {
    pub text_key: &'static str,
    pub json_key: &'static str,
    pub value: ExtraValue<'a>,
}

/// The value of an [`Extra`].
#[derive(Debug, Clone, Copy)]
pub enum ExtraValue<'a> {
    /// Text: a JSON string in JSON lines.
    Text(&'a str),
    /// A compact JSON value (object, array, number) the server built itself,
    /// so it holds no raw control character: written into JSON lines as it
    /// is, and into text lines as its JSON text. A line that must be cut
    /// to fit a file has it as a string, cut like every other value.
    Json(&'a str),
}

impl<'a> ExtraValue<'a> {
    /// The value's text (for `Json`, the JSON).
    pub fn text(self) -> &'a str {
        match self {
            ExtraValue::Text(t) | ExtraValue::Json(t) => t,
        }
    }
}

/// The output buffer of one line and where the line must stop: escaping
/// gives up (returns `None`) rather than write past `end`.
struct Line<'a> {
    out: &'a mut Vec<u8>,
    /// Length of `out` the line must not pass (`usize::MAX`: no limit).
    end: usize,
}

impl Line<'_> {
    /// Appends `piece` if the line stays within its end.
    #[inline]
    fn push(&mut self, piece: &[u8]) -> Option<()> {
        if self.out.len() + piece.len() > self.end {
            return None;
        }
        self.out.extend_from_slice(piece);
        Some(())
    }
}

/// The characters of `bytes` as `String::from_utf8_lossy` would give them
/// (U+FFFD for each invalid sequence), decoded lazily: a caller that stops
/// after a few characters has read only those, and nothing is allocated.
fn lossy_chars(bytes: &[u8]) -> impl Iterator<Item = char> + '_ {
    bytes.utf8_chunks().flat_map(|chunk| {
        let bad = (!chunk.invalid().is_empty()).then_some(char::REPLACEMENT_CHARACTER);
        chunk.valid().chars().chain(bad)
    })
}

// How many bytes the escaping loops have examined on this thread, for tests
// that bound the work of formatting without timing it.
#[cfg(test)]
thread_local! {
    static EXAMINED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
fn examined(n: usize) {
    EXAMINED.with(|e| e.set(e.get() + n));
}

#[cfg(not(test))]
#[inline(always)]
fn examined(_: usize) {}

/// The text line of docs/PROTOCOL.md. `cap` bounds, in characters, the fields
/// that have no column width (timestamp, message, metadata values). `None`
/// if the line reached its end.
fn write_text(
    f: &RawFields<'_>,
    extras: &[Extra<'_>],
    cap: usize,
    line: &mut Line<'_>,
) -> Option<()> {
    // The timestamp is padded but never cut at its width: only the line cap
    // applies to it.
    let written = escape_text(line, f.timestamp, cap, true)?;
    pad(line, written, width::TIMESTAMP)?;
    line.push(b" ")?;
    column(line, f.hostname, width::HOSTNAME)?;
    line.push(b" ")?;
    column(line, f.logger_name, width::LOGGER)?;
    line.push(b" ")?;
    // The level name is the server's own text; `LEVEL(n)` is never cut.
    let level = f.level.name();
    line.push(level.as_bytes())?;
    pad(line, level.len(), width::LEVEL)?;
    line.push(b" ")?;
    column(line, f.filename, width::FILENAME)?;
    line.push(b" ")?;
    column(line, f.function_name, width::FUNCTION)?;
    line.push(b" ")?;
    column(line, f.line_number, width::LINE_NUMBER)?;
    line.push(b" ")?;
    escape_text(line, f.message, cap, true)?;

    let mut first = true;
    for (key, value) in metadata(f, extras) {
        if value.is_empty() {
            continue;
        }
        line.push(if first { METADATA_OPEN } else { b" " })?;
        first = false;
        line.push(key.as_bytes())?;
        line.push(b"=")?;
        escape_text(line, value, cap, true)?;
    }
    if !first {
        line.push(b"]")?;
    }
    line.push(b"\n")
}

/// The `key=value` pairs of a text line's metadata suffix, in order: the
/// fields without a column, then the extras (empty ones are left out when
/// written).
fn metadata<'a>(
    f: &RawFields<'a>,
    extras: &'a [Extra<'a>],
) -> impl Iterator<Item = (&'static str, &'a [u8])> + 'a {
    let fields = [
        ("mod", f.module),
        ("path", f.path_name),
        ("pid", f.process_id),
        ("pname", f.process_name),
        ("tid", f.thread_id),
        ("tname", f.thread_name),
        ("svc", f.service_name),
        ("stack", f.stack_trace),
        ("attrs", f.attributes),
    ];
    let extras = extras
        .iter()
        .map(|e| (e.text_key, e.value.text().as_bytes()));
    fields.into_iter().chain(extras)
}

/// Opens a text line's metadata suffix; a space separates the pairs after
/// the first.
const METADATA_OPEN: &[u8] = b" [metadata: ";

/// Longest line [`write_text_plain`] lays out. When a line turns out not to
/// be plain, the general path starts over, so the work done in vain is
/// bounded by this, not by the line limit (megabytes).
const PLAIN_LINE_MAX: usize = 16 * 1024;

/// The text line of a message that needs no escaping and no cutting but at
/// column widths, in one go: the line's length follows from the fields'
/// lengths, each field is checked for bytes that are not printable ASCII or
/// tab (32 bytes a step), and the line is laid out over spaces (the
/// columns' padding) with each field copied to its place. `false`, with
/// nothing written, when the line is not plain, or longer than
/// [`PLAIN_LINE_MAX`] or than the line may be; [`write_text`] then escapes
/// field by field. Same bytes as [`write_text`] for every line it accepts
/// (a property test checks): the general path costs a call, a scan and a
/// bounds check per field and per padding, which made it the largest part
/// of the TCP path's formatting.
fn write_text_plain(f: &RawFields<'_>, extras: &[Extra<'_>], line: &mut Line<'_>) -> bool {
    let level = f.level.name();
    // (text, width, cut at the width?) of each column, in order; each is
    // followed by one space. The timestamp and the level are never cut.
    let columns: [(&[u8], usize, bool); 7] = [
        (f.timestamp, width::TIMESTAMP, false),
        (f.hostname, width::HOSTNAME, true),
        (f.logger_name, width::LOGGER, true),
        (level.as_bytes(), width::LEVEL, false),
        (f.filename, width::FILENAME, true),
        (f.function_name, width::FUNCTION, true),
        (f.line_number, width::LINE_NUMBER, true),
    ];
    // What each column shows of its text, and the room it takes.
    let shown = columns.map(|(text, width, cut)| {
        let shown = if cut {
            &text[..text.len().min(width)]
        } else {
            text
        };
        (shown, if cut { width } else { text.len().max(width) })
    });
    let pairs = || metadata(f, extras).filter(|(_, v)| !v.is_empty());
    // Every piece is checked where it is read, before anything is written.
    // Checking the line once written read back words that copies of other
    // sizes had just stored, and each read waited for them (the largest
    // cost of this path in a profile of the server). The length so far is
    // checked before each piece is read: a long line goes to the general
    // path after at most `PLAIN_LINE_MAX` bytes read here.
    let plain = |text: &[u8]| {
        examined(text.len());
        all_plain(text)
    };
    let mut len = shown.iter().map(|(_, room)| room + 1).sum::<usize>() + f.message.len();
    if len > PLAIN_LINE_MAX || !shown.iter().all(|(text, _)| plain(text)) || !plain(f.message) {
        return false;
    }
    let mut any_pair = false;
    for (key, value) in pairs() {
        len += key.len() + 1 + value.len() + 1;
        if len > PLAIN_LINE_MAX || !plain(value) {
            return false;
        }
        any_pair = true;
    }
    if any_pair {
        // The opening minus the first pair's separator, and the `]`.
        len += METADATA_OPEN.len() - 1 + 1;
    }
    len += 1; // newline
    let start = line.out.len();
    if len > PLAIN_LINE_MAX || start + len > line.end {
        return false;
    }
    line.out.resize(start + len, b' ');
    let buf = &mut line.out[start..];
    let mut at = 0;
    let mut put = |at: &mut usize, piece: &[u8]| {
        buf[*at..*at + piece.len()].copy_from_slice(piece);
        *at += piece.len();
    };
    for (text, room) in shown {
        put(&mut at, text);
        at += room - text.len() + 1;
    }
    put(&mut at, f.message);
    let mut first = true;
    for (key, value) in pairs() {
        put(&mut at, if first { METADATA_OPEN } else { b" " });
        first = false;
        put(&mut at, key.as_bytes());
        put(&mut at, b"=");
        put(&mut at, value);
    }
    if !first {
        put(&mut at, b"]");
    }
    put(&mut at, b"\n");
    debug_assert_eq!(at, len);
    true
}

/// True if every byte is printable ASCII or tab: [`first_special`]'s test
/// (text lines) as a yes/no, 32 bytes a step.
#[inline]
fn all_plain(bytes: &[u8]) -> bool {
    let suspect = unprintable_lanes;
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    // A tab makes a chunk suspect and is fine: the exact check decides.
    let plain = |chunk: &[u8], flags: u64| flags == 0 || chunk.iter().all(|&b| is_plain_ascii(b));
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        let flags = suspect(word(&chunk[..8]))
            | suspect(word(&chunk[8..16]))
            | suspect(word(&chunk[16..24]))
            | suspect(word(&chunk[24..]));
        if !plain(chunk, flags) {
            return false;
        }
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(8);
    if !words.all(|w| plain(w, suspect(word(w)))) {
        return false;
    }
    // The last 1-7 bytes as one word, not a loop: most fields are short,
    // so this is most of the work. Overlapping loads, and spaces (plain)
    // in the lanes no byte fills.
    let tail = words.remainder();
    let n = bytes.len();
    let w = match tail.len() {
        0 => return true,
        // The last 8 bytes, overlapping what was checked.
        _ if n >= 8 => word(&bytes[n - 8..]),
        4.. => {
            let half = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes")));
            half(&tail[..4]) | half(&tail[tail.len() - 4..]) << 32
        }
        len => {
            let byte = |i: usize| u64::from(tail[i]);
            byte(0) | byte(len / 2) << 8 | byte(len - 1) << 16 | (ONES * 0x20) << 24
        }
    };
    plain(tail, suspect(w))
}

/// One fixed-width column: `s` cut at `width` characters or padded to it.
#[inline]
fn column(line: &mut Line<'_>, s: &[u8], width: usize) -> Option<()> {
    let written = escape_text(line, s, width, false)?;
    pad(line, written, width)
}

#[inline]
fn pad(line: &mut Line<'_>, written: usize, width: usize) -> Option<()> {
    const SPACES: [u8; 64] = [b' '; 64];
    let mut left = width.saturating_sub(written);
    while left > 0 {
        let n = left.min(SPACES.len());
        line.push(&SPACES[..n])?;
        left -= n;
    }
    Some(())
}

/// Where the first byte of `bytes` is that a line cannot take as it is:
/// anything but printable ASCII and tab (text lines), or anything but
/// printable ASCII, `"` and `\\` included (`json`, inside a JSON string).
/// Eight bytes a step: a field is almost always plain, and this scan ran a
/// byte at a time over every byte of every line (the largest part of
/// formatting's instructions).
#[inline]
fn first_special(bytes: &[u8], json: bool) -> Option<usize> {
    // Some byte of `v` is zero (exact as a yes/no, not as a position).
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let special = |b: u8| {
        if json {
            !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\'
        } else {
            !is_plain_ascii(b)
        }
    };
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte below 0x20, or 0x7f and above, or (JSON) a quote or a
        // backslash: then look at this chunk byte by byte (a tab in a text
        // line gets here and is fine).
        let escaped = json
            && (has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\'))));
        if unprintable_lanes(w) != 0 || escaped {
            if let Some(i) = chunk.iter().position(|&b| special(b)) {
                return Some(at + i);
            }
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| special(b))
        .map(|i| at + i)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte lane of `w` (eight bytes) that is below 0x20
/// or 0x7f and above; no bit if there is none. Lanes after a flagged one
/// may be flagged too (borrows and carries), so a non-zero result means
/// "look at these bytes one by one", not where.
#[inline]
fn unprintable_lanes(w: u64) -> u64 {
    ((w.wrapping_sub(ONES * 0x20) & !w) | w.wrapping_add(ONES) | w) & HIGH
}

/// True for bytes that can be copied to a text line as they are: printable
/// ASCII and tab.
#[inline]
fn is_plain_ascii(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || b == b'\t'
}

/// Appends `bytes` with line breaks written as ` | ` and other control
/// characters escaped, stopping before the character (or escape) that would
/// take the output past `max` characters. When `mark` is set (`max` is the
/// line-length cap rather than a column width), a cut field ends with
/// [`TRUNCATED_MARK`]. Returns the characters written, or `None` if the
/// line reached its end first. Reads no more of `bytes` than it writes (a
/// CRLF is two bytes for three): one pass, however long the field.
fn escape_text(line: &mut Line<'_>, bytes: &[u8], max: usize, mark: bool) -> Option<usize> {
    // Fast path: the common case of short printable ASCII (which is valid
    // UTF-8 too, so nothing validated it before). Only when the whole field
    // fits, so the check reads no more than is written.
    if bytes.len() <= max && line.out.len() + bytes.len() <= line.end {
        let special = first_special(bytes, false);
        examined(special.map_or(bytes.len(), |at| at + 1));
        if special.is_none() {
            line.push(bytes)?;
            return Some(bytes.len());
        }
    }
    let mut written = 0;
    let mut chars = lossy_chars(bytes).peekable();
    let mut scratch = [0u8; 16];
    while let Some(c) = chars.next() {
        examined(c.len_utf8());
        let piece: &[u8] = match c {
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                b" | "
            }
            '\r' | '\n' => b" | ",
            '\t' => b"\t",
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                escape_code(&mut scratch, c)
            }
            c => c.encode_utf8(&mut scratch).as_bytes(),
        };
        // Escapes are ASCII, so their characters are their bytes; a plain
        // character is one character.
        let n = if piece.is_ascii() { piece.len() } else { 1 };
        if written + n > max {
            if mark {
                line.push(TRUNCATED_MARK.as_bytes())?;
                written += TRUNCATED_MARK.len();
            }
            break;
        }
        line.push(piece)?;
        written += n;
    }
    Some(written)
}

/// Client-supplied text as it may appear in a diagnostic on stderr: every
/// control character (newlines and ESC included), DEL, C1, U+2028 and
/// U+2029 written as `\xNN` or `\u{N}`, and a backslash doubled, so a
/// client can neither start a line of its own in the server's diagnostics
/// (a forged warning) nor send the operator's terminal control sequences,
/// and an escape in the output always means the server wrote it.
#[derive(Debug, Clone, Copy)]
pub struct ClientText<'a>(pub &'a str);

impl std::fmt::Display for ClientText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut scratch = [0u8; 16];
        let mut plain = 0;
        for (i, c) in self.0.char_indices() {
            let escaped: &[u8] = match c {
                '\\' => b"\\\\",
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    escape_code(&mut scratch, c)
                }
                _ => continue,
            };
            f.write_str(&self.0[plain..i])?;
            // Escapes are ASCII.
            f.write_str(std::str::from_utf8(escaped).unwrap_or("?"))?;
            plain = i + c.len_utf8();
        }
        f.write_str(&self.0[plain..])
    }
}

/// `\xNN` for a C0 control or DEL, `\u{N}` for any other escaped character.
fn escape_code(buf: &mut [u8; 16], c: char) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = c as u32;
    if v < 0x80 {
        buf[..2].copy_from_slice(b"\\x");
        buf[2] = HEX[(v >> 4) as usize];
        buf[3] = HEX[(v & 0xf) as usize];
        return &buf[..4];
    }
    buf[..3].copy_from_slice(b"\\u{");
    let digits = (32 - v.leading_zeros()).div_ceil(4) as usize;
    for k in 0..digits {
        buf[3 + k] = HEX[((v >> (4 * (digits - 1 - k))) & 0xf) as usize];
    }
    buf[3 + digits] = b'}';
    &buf[..4 + digits]
}

/// One JSON object per line: every field under its protobuf name, plus `seq`
/// and `received_at`. `cap` bounds every string value, in characters.
/// `None` if the line reached its end.
fn write_json(
    f: &RawFields<'_>,
    extras: &[Extra<'_>],
    seq: u64,
    at: &ReceivedAt,
    cap: usize,
    line: &mut Line<'_>,
) -> Option<()> {
    line.push(b"{\"seq\":")?;
    line.push(itoa::Buffer::new().format(seq).as_bytes())?;
    line.push(b",\"received_at\":\"")?;
    line.push(at.as_str().as_bytes())?;
    line.push(b"\"")?;
    let level = f.level.name();
    let pairs: [(&str, &[u8]); 16] = [
        ("timestamp", f.timestamp),
        ("hostname", f.hostname),
        ("logger_name", f.logger_name),
        ("module", f.module),
        ("level", level.as_bytes()),
        ("filename", f.filename),
        ("function_name", f.function_name),
        ("line_number", f.line_number),
        ("message", f.message),
        ("path_name", f.path_name),
        ("process_id", f.process_id),
        ("process_name", f.process_name),
        ("thread_id", f.thread_id),
        ("thread_name", f.thread_name),
        ("service_name", f.service_name),
        ("stack_trace", f.stack_trace),
    ];
    for (key, value) in pairs {
        line.push(b",\"")?;
        line.push(key.as_bytes())?;
        line.push(b"\":\"")?;
        escape_json(line, value, cap)?;
        line.push(b"\"")?;
    }
    if !f.attributes.is_empty() {
        line.push(b",\"attributes\":")?;
        // A JSON object stays one, unless the line must be cut: then (in
        // the capped pass) it is a string, cut like every other value.
        match json_object(f.attributes).filter(|_| cap == usize::MAX) {
            Some(object) => line.push(&object)?,
            None => {
                line.push(b"\"")?;
                escape_json(line, f.attributes, cap)?;
                line.push(b"\"")?;
            }
        }
    }
    for extra in extras {
        line.push(b",\"")?;
        line.push(extra.json_key.as_bytes())?;
        line.push(b"\":")?;
        match extra.value {
            ExtraValue::Json(json) if cap == usize::MAX => line.push(json.as_bytes())?,
            value => {
                line.push(b"\"")?;
                escape_json(line, value.text().as_bytes(), cap)?;
                line.push(b"\"")?;
            }
        }
    }
    line.push(b"}\n")
}

/// `bytes` as one line of JSON if they are exactly one JSON object: as they
/// are when they hold no control character (so no line break), else
/// re-serialized compactly. `None` for anything else (not UTF-8, not JSON,
/// not an object, text after it): the caller writes it as a string.
fn json_object(bytes: &[u8]) -> Option<Cow<'_, [u8]>> {
    let raw: &serde_json::value::RawValue = serde_json::from_slice(bytes).ok()?;
    let text = raw.get().as_bytes();
    if text.first() != Some(&b'{') {
        return None;
    }
    if !text.iter().any(|&b| b < 0x20) {
        return Some(Cow::Borrowed(text));
    }
    let value: serde_json::Value = serde_json::from_slice(text).ok()?;
    serde_json::to_vec(&value).ok().map(Cow::Owned)
}

/// Appends `bytes` as the inside of a JSON string, at most `cap` characters
/// of output; a cut value ends with [`TRUNCATED_MARK`]. `None` if the line
/// reached its end first. One pass, reading no more than it writes.
fn escape_json(line: &mut Line<'_>, bytes: &[u8], cap: usize) -> Option<()> {
    if bytes.len() <= cap && line.out.len() + bytes.len() <= line.end {
        let special = first_special(bytes, true);
        examined(special.map_or(bytes.len(), |at| at + 1));
        if special.is_none() {
            return line.push(bytes);
        }
    }
    // Not valid UTF-8 (from the TCP path): U+FFFD in place of bad bytes.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut written = 0;
    let mut scratch = [0u8; 6];
    for c in lossy_chars(bytes) {
        examined(c.len_utf8());
        let piece: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let v = c as u32;
                scratch[..2].copy_from_slice(b"\\u");
                for k in 0..4 {
                    scratch[2 + k] = HEX[((v >> (4 * (3 - k))) & 0xf) as usize];
                }
                &scratch[..]
            }
            c => c.encode_utf8(&mut scratch).as_bytes(),
        };
        let n = if piece.is_ascii() { piece.len() } else { 1 };
        if written + n > cap {
            line.push(TRUNCATED_MARK.as_bytes())?;
            break;
        }
        line.push(piece)?;
        written += n;
    }
    Some(())
}

#[cfg(test)]
mod tests;
