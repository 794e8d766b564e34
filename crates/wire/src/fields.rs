//! The fields of one log message as the wire carries them: [`Level`] and
//! [`Fields`], whose text is `str` (valid UTF-8, as a client builds it or
//! gRPC delivers it) or bytes ([`RawFields`], exactly as a TCP frame held
//! them).
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
/// side decoded them (a [`crate::decode::DecodedBatch`] or a TCP frame, a
/// protobuf `LogRequest` for gRPC). One type for both kinds of text, used
/// through its two names: [`Fields`] (`T = str`, valid UTF-8) and
/// [`RawFields`] (`T = [u8]`). Escaping of control characters is the
/// formatter's job.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldsOf<'a, T: ?Sized> {
    pub timestamp: &'a T,
    pub hostname: &'a T,
    pub logger_name: &'a T,
    pub module: &'a T,
    pub level: Level,
    pub filename: &'a T,
    pub function_name: &'a T,
    pub line_number: &'a T,
    pub message: &'a T,
    pub path_name: &'a T,
    pub process_id: &'a T,
    pub process_name: &'a T,
    pub thread_id: &'a T,
    pub thread_name: &'a T,
    pub service_name: &'a T,
    pub stack_trace: &'a T,
    /// Structured fields as one JSON object (docs/PROTOCOL.md); empty when
    /// the client sent none.
    pub attributes: &'a T,
}

/// The fields as valid UTF-8: what a client builds and gRPC delivers.
pub type Fields<'a> = FieldsOf<'a, str>;

/// The fields as bytes exactly as they came off the wire: text that may not
/// be valid UTF-8. The formatter reads this, so the TCP path can format
/// straight from a decoded frame (invalid UTF-8 becomes U+FFFD there)
/// without validating and copying every field first.
pub type RawFields<'a> = FieldsOf<'a, [u8]>;

/// Number of text fields of a message (every field but `level`).
pub const TEXT_FIELDS: usize = 16;

// By hand: derived, these would require `T: Clone` and `T: Default`, which
// `str` and `[u8]` are not (the references are).
impl<T: ?Sized> Clone for FieldsOf<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for FieldsOf<'_, T> {}

impl<'a, T: ?Sized> Default for FieldsOf<'a, T>
where
    &'a T: Default,
{
    fn default() -> Self {
        Self::from_texts([<&'a T>::default(); TEXT_FIELDS], Level::default())
    }
}

impl<'a, T: ?Sized> FieldsOf<'a, T> {
    /// Builds the fields from the text fields in wire order (timestamp,
    /// hostname, loggerName, module, filename, functionName, lineNumber,
    /// message, pathName, processId, processName, threadId, threadName,
    /// serviceName, stackTrace, attributes) and the level.
    pub fn from_texts(t: [&'a T; TEXT_FIELDS], level: Level) -> Self {
        let [timestamp, hostname, logger_name, module, filename, function_name, line_number, message, path_name, process_id, process_name, thread_id, thread_name, service_name, stack_trace, attributes] =
            t;
        FieldsOf {
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
            attributes,
        }
    }

    /// The text fields in wire order (see [`FieldsOf::from_texts`]).
    pub fn texts(&self) -> [&'a T; TEXT_FIELDS] {
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
            self.attributes,
        ]
    }
}

impl<T: ?Sized + AsRef<[u8]>> FieldsOf<'_, T> {
    /// Bytes of text in all fields together (what a message costs to copy,
    /// and the least a line of it takes once formatted).
    pub fn text_len(&self) -> usize {
        self.texts().iter().map(|t| t.as_ref().len()).sum()
    }
}

impl<'a> From<&Fields<'a>> for RawFields<'a> {
    fn from(f: &Fields<'a>) -> Self {
        RawFields::from_texts(f.texts().map(str::as_bytes), f.level)
    }
}
