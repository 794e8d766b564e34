//! The fields of one log message as the wire carries them: [`Level`],
//! [`Fields`] (valid UTF-8, as a client builds it or gRPC delivers it) and
//! [`RawFields`] (bytes exactly as a TCP frame held them).
//!
//! Decoding produces these, encoding consumes them, and the server's
//! formatter turns them into one line each.

use std::{borrow::Cow, fmt};

/// Severity of a message. Kept as the raw wire value so that a level this
/// server does not know (a newer client, a bug) is written as `LEVEL(n)`
/// instead of being dropped or mapped to something it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Level(pub i32);

impl Level {
    /// Names of the known levels, indexed by wire value (docs/PROTOCOL.md).
    const NAMES: [&'static str; 12] = [
        "NOTSET", "DEBUG", "STREAM", "INFO", "LOGON", "LOGOUT", "TRADE", "SCHEDULE", "REPORT",
        "WARNING", "ERROR", "CRITICAL",
    ];

    /// The upper-case name, or `LEVEL(n)` for a value outside the schema.
    pub fn name(self) -> Cow<'static, str> {
        match usize::try_from(self.0)
            .ok()
            .and_then(|i| Self::NAMES.get(i))
        {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("LEVEL({})", self.0)),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The sixteen fields of one log message, borrowed from wherever the ingest
/// side decoded them (a [`crate::decode::DecodedBatch`] for TCP, a
/// protobuf `LogRequest` for gRPC). All text is valid UTF-8 by the time it
/// gets here; escaping of control characters is the formatter's job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields<'a> {
    pub timestamp: &'a str,
    pub hostname: &'a str,
    pub logger_name: &'a str,
    pub module: &'a str,
    pub level: Level,
    pub filename: &'a str,
    pub function_name: &'a str,
    pub line_number: &'a str,
    pub message: &'a str,
    pub path_name: &'a str,
    pub process_id: &'a str,
    pub process_name: &'a str,
    pub thread_id: &'a str,
    pub thread_name: &'a str,
    pub service_name: &'a str,
    pub stack_trace: &'a str,
}

/// Number of text fields of a message (every field but `level`).
pub const TEXT_FIELDS: usize = 15;

impl<'a> Fields<'a> {
    /// Builds the fields from the text fields in wire order (timestamp,
    /// hostname, loggerName, module, filename, functionName, lineNumber,
    /// message, pathName, processId, processName, threadId, threadName,
    /// serviceName, stackTrace) and the level.
    pub fn from_texts(t: [&'a str; TEXT_FIELDS], level: Level) -> Self {
        let [timestamp, hostname, logger_name, module, filename, function_name, line_number, message, path_name, process_id, process_name, thread_id, thread_name, service_name, stack_trace] =
            t;
        Fields {
            timestamp,
            hostname,
            logger_name,
            module,
            level,
            filename,
            function_name,
            line_number,
            message,
            path_name,
            process_id,
            process_name,
            thread_id,
            thread_name,
            service_name,
            stack_trace,
        }
    }
}

/// The same sixteen fields as bytes exactly as they came off the wire:
/// text that may not be valid UTF-8. The formatter reads this, so the TCP
/// path can format straight from a decoded frame (invalid UTF-8 becomes
/// U+FFFD there) without validating and copying every field first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawFields<'a> {
    pub timestamp: &'a [u8],
    pub hostname: &'a [u8],
    pub logger_name: &'a [u8],
    pub module: &'a [u8],
    pub level: Level,
    pub filename: &'a [u8],
    pub function_name: &'a [u8],
    pub line_number: &'a [u8],
    pub message: &'a [u8],
    pub path_name: &'a [u8],
    pub process_id: &'a [u8],
    pub process_name: &'a [u8],
    pub thread_id: &'a [u8],
    pub thread_name: &'a [u8],
    pub service_name: &'a [u8],
    pub stack_trace: &'a [u8],
}

impl<'a> RawFields<'a> {
    /// From the text fields in wire order (see [`Fields::from_texts`]).
    pub fn from_texts(t: [&'a [u8]; TEXT_FIELDS], level: Level) -> Self {
        let [timestamp, hostname, logger_name, module, filename, function_name, line_number, message, path_name, process_id, process_name, thread_id, thread_name, service_name, stack_trace] =
            t;
        RawFields {
            timestamp,
            hostname,
            logger_name,
            module,
            level,
            filename,
            function_name,
            line_number,
            message,
            path_name,
            process_id,
            process_name,
            thread_id,
            thread_name,
            service_name,
            stack_trace,
        }
    }
}

impl RawFields<'_> {
    /// Bytes of text in all fields together (what a message costs to copy,
    /// and the least a line of it takes once formatted).
    pub fn text_len(&self) -> usize {
        [
            self.timestamp,
            self.hostname,
            self.logger_name,
            self.module,
            self.filename,
            self.function_name,
            self.line_number,
            self.message,
            self.path_name,
            self.process_id,
            self.process_name,
            self.thread_id,
            self.thread_name,
            self.service_name,
            self.stack_trace,
        ]
        .iter()
        .map(|t| t.len())
        .sum()
    }
}

impl<'a> From<&Fields<'a>> for RawFields<'a> {
    fn from(f: &Fields<'a>) -> Self {
        RawFields {
            timestamp: f.timestamp.as_bytes(),
            hostname: f.hostname.as_bytes(),
            logger_name: f.logger_name.as_bytes(),
            module: f.module.as_bytes(),
            level: f.level,
            filename: f.filename.as_bytes(),
            function_name: f.function_name.as_bytes(),
            line_number: f.line_number.as_bytes(),
            message: f.message.as_bytes(),
            path_name: f.path_name.as_bytes(),
            process_id: f.process_id.as_bytes(),
            process_name: f.process_name.as_bytes(),
            thread_id: f.thread_id.as_bytes(),
            thread_name: f.thread_name.as_bytes(),
            service_name: f.service_name.as_bytes(),
            stack_trace: f.stack_trace.as_bytes(),
        }
    }
}
