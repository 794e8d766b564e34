//! Line formatting: [`Fields`] of one message -> one line of the log file.
//!
//! Sits on the ingest side of the pipeline (after `ingest::decode`, before the
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

use std::time::{SystemTime, UNIX_EPOCH};

use std::borrow::Cow;

use crate::record::{Fields, RawFields};

/// How a message becomes a line (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LineFormat {
    /// Fixed-width columns of PROTOCOL.md, for people reading the file.
    #[default]
    Text,
    /// One JSON object per line with every field, `seq` and `received_at`,
    /// for log shippers.
    Json,
}

/// Ends a field that was cut to keep its line within the maximum length.
pub const TRUNCATED_MARK: &str = "[truncated]";

/// Column widths of the text format, in characters (PROTOCOL.md).
mod width {
    pub const TIMESTAMP: usize = 33;
    pub const HOSTNAME: usize = 12;
    pub const LOGGER: usize = 22;
    pub const LEVEL: usize = 10;
    pub const FILENAME: usize = 20;
    pub const FUNCTION: usize = 25;
    pub const LINE_NUMBER: usize = 6;
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
        self.write_raw(&f.into(), seq, received_at, out)
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
        let start = out.len();
        self.write_capped(f, seq, received_at, usize::MAX, out);
        if out.len() - start <= self.max_line {
            return false;
        }
        // Each output character takes at most 4 bytes, and a line has 16
        // fields plus the overhead: this cap fits every field at once.
        let cap = (self.max_line - LINE_OVERHEAD) / (16 * 4) - TRUNCATED_MARK.len();
        out.truncate(start);
        self.write_capped(f, seq, received_at, cap, out);
        debug_assert!(out.len() - start <= self.max_line);
        true
    }

    fn write_capped(
        &self,
        f: &RawFields<'_>,
        seq: u64,
        at: &ReceivedAt,
        cap: usize,
        out: &mut Vec<u8>,
    ) {
        match self.format {
            LineFormat::Text => write_text(f, cap, out),
            LineFormat::Json => write_json(f, seq, at, cap, out),
        }
    }
}

/// The text line of PROTOCOL.md. `cap` bounds, in characters, the fields
/// that have no column width (timestamp, message, metadata values).
fn write_text(f: &RawFields<'_>, cap: usize, out: &mut Vec<u8>) {
    // The timestamp is padded but never cut at its width: only the line cap
    // applies to it.
    let written = escape_text(out, f.timestamp, cap, true);
    pad(out, written, width::TIMESTAMP);
    out.push(b' ');
    column(out, f.hostname, width::HOSTNAME);
    out.push(b' ');
    column(out, f.logger_name, width::LOGGER);
    out.push(b' ');
    // The level name is the server's own text; `LEVEL(n)` is never cut.
    let level = f.level.name();
    out.extend_from_slice(level.as_bytes());
    pad(out, level.len(), width::LEVEL);
    out.push(b' ');
    column(out, f.filename, width::FILENAME);
    out.push(b' ');
    column(out, f.function_name, width::FUNCTION);
    out.push(b' ');
    column(out, f.line_number, width::LINE_NUMBER);
    out.push(b' ');
    escape_text(out, f.message, cap, true);

    let metadata = [
        ("mod", f.module),
        ("path", f.path_name),
        ("pid", f.process_id),
        ("pname", f.process_name),
        ("tid", f.thread_id),
        ("tname", f.thread_name),
        ("svc", f.service_name),
        ("stack", f.stack_trace),
    ];
    let mut first = true;
    for (key, value) in metadata {
        if value.is_empty() {
            continue;
        }
        out.extend_from_slice(if first { b" [metadata: " } else { b" " });
        first = false;
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        escape_text(out, value, cap, true);
    }
    if !first {
        out.push(b']');
    }
    out.push(b'\n');
}

/// One fixed-width column: `s` cut at `width` characters or padded to it.
fn column(out: &mut Vec<u8>, s: &[u8], width: usize) {
    let written = escape_text(out, s, width, false);
    pad(out, written, width);
}

fn pad(out: &mut Vec<u8>, written: usize, width: usize) {
    if written < width {
        out.resize(out.len() + (width - written), b' ');
    }
}

/// True for bytes that can be copied to a text line as they are: printable
/// ASCII and tab.
#[inline]
fn is_plain_ascii(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || b == b'\t'
}

/// Appends `s` with line breaks written as ` | ` and other control
/// characters escaped, stopping before the character (or escape) that would
/// take the output past `max` characters. When `mark` is set (`max` is the
/// line-length cap rather than a column width), a cut field ends with
/// [`TRUNCATED_MARK`]. Returns the characters written.
fn escape_text(out: &mut Vec<u8>, bytes: &[u8], max: usize, mark: bool) -> usize {
    // Fast path: the common case of short printable ASCII (which is valid
    // UTF-8 too, so nothing validated it before).
    if bytes.len() <= max && bytes.iter().all(|&b| is_plain_ascii(b)) {
        out.extend_from_slice(bytes);
        return bytes.len();
    }
    let s = String::from_utf8_lossy(bytes);
    let bytes = s.as_bytes();
    let mut written = 0;
    let mut chars = s.char_indices().peekable();
    let mut scratch = [0u8; 16];
    while let Some((i, c)) = chars.next() {
        let piece: &[u8] = match c {
            '\r' if chars.peek().map(|&(_, n)| n) == Some('\n') => {
                chars.next();
                b" | "
            }
            '\r' | '\n' => b" | ",
            '\t' => b"\t",
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                escape_code(&mut scratch, c)
            }
            _ => &bytes[i..i + c.len_utf8()],
        };
        // Escapes are ASCII, so their characters are their bytes; a plain
        // character is one character.
        let n = if piece.is_ascii() { piece.len() } else { 1 };
        if written + n > max {
            if mark {
                out.extend_from_slice(TRUNCATED_MARK.as_bytes());
                written += TRUNCATED_MARK.len();
            }
            break;
        }
        out.extend_from_slice(piece);
        written += n;
    }
    written
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
fn write_json(f: &RawFields<'_>, seq: u64, at: &ReceivedAt, cap: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"received_at\":\"");
    out.extend_from_slice(at.as_str().as_bytes());
    out.push(b'"');
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
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":\"");
        escape_json(out, value, cap);
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
}

/// Appends `s` as the inside of a JSON string, at most `cap` characters of
/// output; a cut value ends with [`TRUNCATED_MARK`].
fn escape_json(out: &mut Vec<u8>, bytes: &[u8], cap: usize) {
    if bytes.len() <= cap
        && bytes
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(bytes);
        return;
    }
    // Not valid UTF-8 (from the TCP path): U+FFFD in place of bad bytes.
    let s: Cow<'_, str> = String::from_utf8_lossy(bytes);
    let bytes = s.as_bytes();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut written = 0;
    let mut scratch = [0u8; 6];
    for (i, c) in s.char_indices() {
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
            _ => &bytes[i..i + c.len_utf8()],
        };
        let n = if piece.is_ascii() { piece.len() } else { 1 };
        if written + n > cap {
            out.extend_from_slice(TRUNCATED_MARK.as_bytes());
            break;
        }
        out.extend_from_slice(piece);
        written += n;
    }
}

#[cfg(test)]
mod tests;
