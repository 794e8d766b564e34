//! Payload decoding: the bytes of one frame (or one protobuf request) ->
//! the [`Fields`] of a log message, or the identity of a hello.
//!
//! Second stage of the ingest path, after `frame` and before formatting.
//! Pure: no I/O. The Cap'n Proto reader works under limits derived from the
//! maximum frame size (traversal limit, nesting limit, largest unpacked
//! size), so a hostile frame costs bounded work and memory, and a malformed
//! payload is an error value for that frame only.

use capnp::message::{ReaderOptions, ReaderSegments};
use thiserror::Error;

use crate::{
    record::{Fields, Level, TEXT_FIELDS},
    wire::{hello_capnp::hello_msg, logger_capnp::logger_msg, proto::LogRequest},
};

/// Why one payload could not be decoded. The frame is skipped; the
/// connection may go on.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The payload is not a Cap'n Proto message of the expected shape
    /// (bad segment table, pointer out of bounds, wrong pointer kind, limit
    /// exceeded).
    #[error("payload is not a valid Cap'n Proto message: {0}")]
    Capnp(#[from] capnp::Error),
    /// The message carries no root struct at all.
    #[error("payload is an empty Cap'n Proto message (null root pointer)")]
    EmptyMessage,
    /// The root pointer is something other than a struct.
    #[error("the root of the Cap'n Proto message is not a struct")]
    RootNotStruct,
}

/// What one payload turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A `LoggerMsg`; its fields were appended to the [`DecodedBatch`].
    Log,
    /// A `HelloMsg`: the connection's identity, `fromName@fromHost`.
    Hello(String),
}

/// Where each text field of one decoded message ends in
/// [`DecodedBatch::text`], and its level.
#[derive(Debug, Clone, Copy)]
struct Entry {
    ends: [usize; TEXT_FIELDS],
    level: Level,
}

/// The messages decoded from one socket read, owned, so that they can all
/// be counted (and given sequence numbers in one step) before any is
/// formatted. Reused from read to read: its buffers only grow.
#[derive(Debug, Default)]
pub struct DecodedBatch {
    /// The text of every field of every message, concatenated.
    text: String,
    entries: Vec<Entry>,
}

impl DecodedBatch {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
    }

    /// The fields of message `i`.
    pub fn get(&self, i: usize) -> Fields<'_> {
        let entry = &self.entries[i];
        let start = if i == 0 { 0 } else { self.entries[i - 1].ends[TEXT_FIELDS - 1] };
        let mut prev = start;
        let texts = entry.ends.map(|end| {
            let s = &self.text[prev..end];
            prev = end;
            s
        });
        Fields::from_texts(texts, entry.level)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Fields<'_>> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends one message from its text fields in wire order; invalid UTF-8
    /// is kept with U+FFFD in place of the bad bytes.
    fn push(&mut self, texts: [&[u8]; TEXT_FIELDS], level: Level) {
        let mut ends = [0; TEXT_FIELDS];
        for (end, bytes) in ends.iter_mut().zip(texts) {
            self.text.push_str(&String::from_utf8_lossy(bytes));
            *end = self.text.len();
        }
        self.entries.push(Entry { ends, level });
    }
}

/// Decodes Cap'n Proto payloads under fixed limits, unpacking into a
/// scratch buffer it keeps between calls (no allocation per message once
/// warm). One per connection or per ingest thread.
#[derive(Debug)]
pub struct Decoder {
    options: ReaderOptions,
    /// Largest unpacked message, in bytes: the maximum frame size.
    max_message_bytes: usize,
    /// Where packed payloads are unpacked. Grows on demand up to
    /// `max_message_bytes` plus the largest segment table.
    scratch: Vec<u8>,
}

/// Room for the largest segment table capnp accepts (512 segments).
const MAX_SEGMENT_TABLE_BYTES: usize = 4 * 512 + 8;

/// Nesting a LoggerMsg or HelloMsg needs is 1 (root struct -> text); a
/// little headroom costs nothing and still stops deep-nesting attacks.
const NESTING_LIMIT: i32 = 8;

impl Decoder {
    /// A decoder for messages of at most `max_message_bytes` unpacked bytes
    /// (normally the maximum frame size).
    pub fn new(max_message_bytes: usize) -> Self {
        let mut options = ReaderOptions::new();
        options
            .traversal_limit_in_words(Some(max_message_bytes.div_ceil(8).max(1)))
            .nesting_limit(NESTING_LIMIT);
        Decoder {
            options,
            max_message_bytes,
            scratch: vec![0; 4096],
        }
    }

    /// Decodes one frame payload. A `LoggerMsg` is appended to `batch`; a
    /// `HelloMsg` returns the identity it carries. On error `batch` is left
    /// as it was.
    pub fn decode(&mut self, payload: &[u8], batch: &mut DecodedBatch) -> Result<Decoded, DecodeError> {
        // A packed payload never starts with four zero bytes (PROTOCOL.md):
        // those are the segment count of an unpacked message.
        if payload.starts_with(&[0, 0, 0, 0]) {
            let mut slice = payload;
            let message = capnp::serialize::read_message_from_flat_slice_no_alloc(&mut slice, self.options)?;
            return decode_message(&message, batch);
        }
        loop {
            let mut slice = payload;
            match capnp::serialize_packed::read_message_no_alloc(&mut slice, &mut self.scratch, self.options) {
                Ok(message) => return decode_message(&message, batch),
                Err(e) if e.kind == capnp::ErrorKind::BufferNotLargeEnough => {
                    let limit = self.max_message_bytes + MAX_SEGMENT_TABLE_BYTES;
                    if self.scratch.len() >= limit {
                        return Err(e.into());
                    }
                    let grown = (self.scratch.len() * 2).min(limit);
                    self.scratch.resize(grown, 0);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Size of the root struct's data section, in words, read from the root
/// pointer (following a far pointer if there is one). A `HelloMsg` has none,
/// a `LoggerMsg` has one: PROTOCOL.md tells them apart this way.
fn root_data_words<S: ReaderSegments>(message: &capnp::message::Reader<S>) -> Result<u16, DecodeError> {
    let segments = message.get_segments();
    let word = |seg: u32, index: usize| -> Result<u64, DecodeError> {
        let bytes = segments
            .get_segment(seg)
            .and_then(|s| s.get(index * 8..index * 8 + 8))
            .ok_or_else(|| capnp::Error::failed("root pointer out of bounds".into()))?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8-byte slice")))
    };
    let root = word(0, 0)?;
    let tag = match root & 3 {
        _ if root == 0 => return Err(DecodeError::EmptyMessage),
        0 => root,
        2 => {
            // Far pointer: the landing pad holds the struct pointer, or for a
            // double-far, a far pointer then the tag with the sizes.
            let double_far = root & 4 != 0;
            let offset = ((root >> 3) & 0x1fff_ffff) as usize;
            let segment = (root >> 32) as u32;
            let pad = if double_far { word(segment, offset + 1)? } else { word(segment, offset)? };
            if pad & 3 != 0 {
                return Err(DecodeError::RootNotStruct);
            }
            pad
        }
        _ => return Err(DecodeError::RootNotStruct),
    };
    Ok((tag >> 32) as u16)
}

fn decode_message<S: ReaderSegments>(
    message: &capnp::message::Reader<S>,
    batch: &mut DecodedBatch,
) -> Result<Decoded, DecodeError> {
    if root_data_words(message)? == 0 {
        let hello: hello_msg::Reader<'_> = message.get_root()?;
        let name = String::from_utf8_lossy(hello.get_from_name()?.as_bytes()).into_owned();
        let host = String::from_utf8_lossy(hello.get_from_host()?.as_bytes());
        return Ok(Decoded::Hello(format!("{name}@{host}")));
    }
    let msg: logger_msg::Reader<'_> = message.get_root()?;
    let level = match msg.get_level() {
        Ok(known) => Level(known as i32),
        Err(capnp::NotInSchema(raw)) => Level(i32::from(raw)),
    };
    let texts = [
        msg.get_timestamp()?.as_bytes(),
        msg.get_hostname()?.as_bytes(),
        msg.get_logger_name()?.as_bytes(),
        msg.get_module()?.as_bytes(),
        msg.get_filename()?.as_bytes(),
        msg.get_function_name()?.as_bytes(),
        msg.get_line_number()?.as_bytes(),
        msg.get_message()?.as_bytes(),
        msg.get_path_name()?.as_bytes(),
        msg.get_process_id()?.as_bytes(),
        msg.get_process_name()?.as_bytes(),
        msg.get_thread_id()?.as_bytes(),
        msg.get_thread_name()?.as_bytes(),
        msg.get_service_name()?.as_bytes(),
        msg.get_stack_trace()?.as_bytes(),
    ];
    batch.push(texts, level);
    Ok(Decoded::Log)
}

/// The fields of a gRPC `LogRequest`. prost has already rejected invalid
/// UTF-8; an enum value outside the schema is kept as it came.
pub fn fields_from_request(r: &LogRequest) -> Fields<'_> {
    Fields {
        timestamp: &r.timestamp,
        hostname: &r.hostname,
        logger_name: &r.logger_name,
        module: &r.module,
        level: Level(r.level),
        filename: &r.filename,
        function_name: &r.function_name,
        line_number: &r.line_number,
        message: &r.message,
        path_name: &r.path_name,
        process_id: &r.process_id,
        process_name: &r.process_name,
        thread_id: &r.thread_id,
        thread_name: &r.thread_name,
        service_name: &r.service_name,
        stack_trace: &r.stack_trace,
    }
}

#[cfg(test)]
mod tests;
