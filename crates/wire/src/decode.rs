//! Payload decoding: the bytes of one frame (or one protobuf request) ->
//! the [`Fields`] of a log message, or the identity of a hello.
//!
//! Second stage of the ingest path, after `frame` and before formatting.
//! Pure: no I/O. The Cap'n Proto reader works under limits derived from the
//! maximum frame size (traversal limit, nesting limit, largest unpacked
//! size), so a hostile frame costs bounded work and memory, and a malformed
//! payload is an error value for that frame only. The traversal limit is
//! also never more than the message's own size, and both readers (the fast
//! one and capnp's) charge every text each time a field references it: a
//! frame whose pointers alias one big text (issue 9's amplification frame)
//! is refused instead of handing on 15 times what it holds.

use capnp::message::{ReaderOptions, ReaderSegments, SegmentArray};
use thiserror::Error;

use crate::{
    fields::{Fields, Level, RawFields, TEXT_FIELDS},
    hello_capnp::hello_msg,
    logger_capnp::logger_msg,
    proto::LogRequest,
    unpack::unpack,
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
    /// The packed encoding stops in the middle of a word or a run.
    #[error("the packed payload is truncated")]
    TruncatedPacking,
    /// The payload unpacks to more than the maximum message size.
    #[error("the payload unpacks to more than {limit} bytes")]
    TooLarge { limit: usize },
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

    /// Bytes its buffers hold (capacities), for the memory budget.
    pub fn capacity_bytes(&self) -> usize {
        self.text.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Gives back the memory of an emptied batch above `keep` bytes of text
    /// (after a large message).
    pub fn shrink(&mut self, keep: usize) {
        if self.is_empty() && self.capacity_bytes() > keep {
            self.text = String::new();
            self.entries = Vec::new();
        }
    }

    /// The fields of message `i`.
    pub fn get(&self, i: usize) -> Fields<'_> {
        let entry = &self.entries[i];
        let start = if i == 0 {
            0
        } else {
            self.entries[i - 1].ends[TEXT_FIELDS - 1]
        };
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
    fn push(&mut self, raw: RawFields<'_>) {
        let texts = [
            raw.timestamp,
            raw.hostname,
            raw.logger_name,
            raw.module,
            raw.filename,
            raw.function_name,
            raw.line_number,
            raw.message,
            raw.path_name,
            raw.process_id,
            raw.process_name,
            raw.thread_id,
            raw.thread_name,
            raw.service_name,
            raw.stack_trace,
            raw.attributes,
        ];
        let level = raw.level;
        let mut ends = [0; TEXT_FIELDS];
        for (end, bytes) in ends.iter_mut().zip(texts) {
            // `from_utf8` is much faster than the lossy path on valid text.
            match std::str::from_utf8(bytes) {
                Ok(text) => self.text.push_str(text),
                Err(_) => self.text.push_str(&String::from_utf8_lossy(bytes)),
            }
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
    /// Largest unpacked message (segment table included), in bytes.
    max_unpacked: usize,
    /// Where packed payloads are unpacked; only grows.
    scratch: Vec<u8>,
    /// Bytes this decoder has produced or handed on so far: unpacked bytes
    /// plus the text of every field of every accepted message (aliased
    /// fields counted each time). A measure of decoding work that does not
    /// depend on the clock, for tests and for callers that bound the work
    /// done for one connection before serving others.
    touched: u64,
}

/// Longest `fromName` and `fromHost` of a hello kept, in characters each:
/// the identity is repeated in diagnostics, so a client must not be able to
/// make every one of them megabytes long.
pub const MAX_IDENTITY_PART_CHARS: usize = 128;

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
            max_unpacked: max_message_bytes + MAX_SEGMENT_TABLE_BYTES,
            scratch: Vec::new(),
            touched: 0,
        }
    }

    /// Bytes unpacked and field bytes handed on since this decoder was
    /// made (see the field's doc). Grows by at most the unpacked size plus
    /// the traversal limit per payload, whatever the payload.
    pub fn bytes_touched(&self) -> u64 {
        self.touched
    }

    /// Bytes the scratch buffer holds (its capacity), for the memory budget.
    pub fn scratch_capacity(&self) -> usize {
        self.scratch.capacity()
    }

    /// Gives back the scratch buffer's memory above `keep` bytes: after a
    /// large message, so that it does not stay allocated per connection.
    pub fn shrink(&mut self, keep: usize) {
        if self.scratch.capacity() > keep {
            self.scratch.truncate(keep);
            self.scratch.shrink_to(keep);
        }
    }

    /// Decodes one frame payload. A `LoggerMsg` is appended to `batch`; a
    /// `HelloMsg` returns the identity it carries. On error `batch` is left
    /// as it was.
    pub fn decode(
        &mut self,
        payload: &[u8],
        batch: &mut DecodedBatch,
    ) -> Result<Decoded, DecodeError> {
        self.decode_with(payload, |raw| batch.push(raw))
    }

    /// Decodes one frame payload and hands a `LoggerMsg`'s fields, as they
    /// are on the wire, to `sink` (called once, and only on success). For
    /// formatting straight from the frame, with no copy in between.
    pub fn decode_with(
        &mut self,
        payload: &[u8],
        mut sink: impl FnMut(RawFields<'_>),
    ) -> Result<Decoded, DecodeError> {
        let mut handed_on = 0u64;
        let mut sink = |raw: RawFields<'_>| {
            handed_on += raw.text_len() as u64;
            sink(raw)
        };
        let result = self.decode_counted(payload, &mut sink);
        self.touched += handed_on;
        result
    }

    fn decode_counted(
        &mut self,
        payload: &[u8],
        sink: &mut impl FnMut(RawFields<'_>),
    ) -> Result<Decoded, DecodeError> {
        // A packed payload never starts with four zero bytes (docs/PROTOCOL.md):
        // those are the segment count of an unpacked message, which is read
        // in place (capnp's `unaligned` feature: no copy to align it).
        if payload.starts_with(&[0, 0, 0, 0]) {
            return decode_flat(payload, self.options, sink);
        }
        let packed = unpack(payload, &mut self.scratch, self.max_unpacked).and_then(|len| {
            self.touched += len as u64;
            decode_flat(&self.scratch[..len], self.options, sink)
        });
        match packed {
            // An unpacked message of several segments starts with a non-zero
            // segment count, like a packed one: try it that way too before
            // calling the frame bad. Bounded: at most twice the work.
            Err(e) if payload.len() % 8 == 0 => {
                decode_flat(payload, self.options, sink).map_err(|_| e)
            }
            other => other,
        }
    }
}

/// Reads an unpacked message (segment table + segments) in place. The
/// common single-segment case skips capnp's general segment-table parsing.
///
/// The traversal limit is the smaller of the configured one and the
/// message's own size: a message built by any Cap'n Proto writer references
/// each of its words at most once, so only aliased pointers can reference
/// more than the message holds, and refusing those bounds what one frame
/// hands to the formatter by its unpacked size (not 15 times it, nor the
/// 4 MiB limit for a 250 KB message).
fn decode_flat(
    bytes: &[u8],
    options: ReaderOptions,
    sink: &mut impl FnMut(RawFields<'_>),
) -> Result<Decoded, DecodeError> {
    let configured = options.traversal_limit_in_words.unwrap_or(usize::MAX);
    if let Some(table) = bytes.first_chunk::<8>() {
        let words = u32::from_le_bytes([table[4], table[5], table[6], table[7]]) as usize;
        if table[..4] == [0, 0, 0, 0] {
            if let Some(segment) = words.checked_mul(8).and_then(|len| bytes.get(8..8 + len)) {
                // The segment's size is checked like capnp checks it; what
                // the fields reference (aliasing included) is charged by the
                // fast reader itself.
                let limit = configured.min(words);
                if let Some((texts, level)) = (words <= configured)
                    .then(|| logger_fields_fast(segment, limit))
                    .flatten()
                {
                    sink(RawFields::from_texts(texts, level));
                    return Ok(Decoded::Log);
                }
                let segments = [segment];
                let message = capnp::message::Reader::new(
                    SegmentArray::new(&segments),
                    with_limit(options, limit),
                );
                return decode_message(&message, sink);
            }
        }
    }
    // The segment table is counted too: a few words more than the
    // segments, which only makes the limit a little looser.
    let limit = configured.min(bytes.len() / 8);
    let mut slice = bytes;
    let message = capnp::serialize::read_message_from_flat_slice_no_alloc(
        &mut slice,
        with_limit(options, limit),
    )?;
    decode_message(&message, sink)
}

/// `options` with a traversal limit of `words` (at least 1: capnp reads
/// the root pointer even of an empty message).
fn with_limit(mut options: ReaderOptions, words: usize) -> ReaderOptions {
    options.traversal_limit_in_words(Some(words.max(1)));
    options
}

/// Reads a `LoggerMsg` straight from a single segment when it has the plain
/// shape every logger produces: a struct root pointer and byte-list text
/// pointers, all inside the segment. Anything else (far pointers, a hello,
/// a bad pointer) returns `None`, and the generic capnp reader decides,
/// with its own errors. Same result as the generic reader where both apply
/// (a property test checks), at a fraction of its cost: the TCP profile had
/// capnp's pointer-following as a top cost.
///
/// It charges `limit_words` exactly as capnp's traversal limit would: the
/// root pointer, the root struct, then every text it hands out, in words,
/// each time a text is referenced. Fifteen pointers aliasing one 4 MiB
/// list cost 60 MiB of budget, not 4: without that, a 4 KiB packed frame
/// turned into 60 MiB of field text to copy and format (issue 9). Over the
/// budget it returns `None`, and capnp refuses the message with its own
/// "read limit exceeded" error. A plain message charges exactly its
/// segment's words, so a limit of the segment's size never refuses one.
fn logger_fields_fast(segment: &[u8], limit_words: usize) -> Option<([&[u8]; TEXT_FIELDS], Level)> {
    let root = u64::from_le_bytes(*segment.first_chunk::<8>()?);
    if root & 3 != 0 {
        return None;
    }
    // Signed 30-bit word offset of a struct or list pointer.
    let offset = |p: u64| i64::from((p as u32 as i32) >> 2);
    let data_words = ((root >> 32) & 0xffff) as usize;
    let pointers = (root >> 48) as usize;
    if data_words == 0 {
        return None; // a hello: the generic path handles it
    }
    let start = usize::try_from(1 + offset(root)).ok()?;
    let pointer_base = start + data_words;
    if (pointer_base + pointers) * 8 > segment.len() || 1 + data_words + pointers > limit_words {
        return None;
    }
    let level = Level(i32::from(u16::from_le_bytes([
        segment[start * 8],
        segment[start * 8 + 1],
    ])));
    // The pointer section is in the segment (checked above): one slice, so
    // the loop reads whole words without a bounds check per word (this loop
    // runs for every field of every TCP message).
    let section = &segment[pointer_base * 8..(pointer_base + pointers) * 8];
    // capnp charges one word for the root pointer, then the whole struct,
    // then each text as it is referenced. A text is at most 2^29 bytes and
    // there are at most TEXT_FIELDS of them, so the sum cannot overflow and
    // is compared once, after the loop: over the limit is `None` either way.
    let mut charged = 1 + data_words + pointers;
    let mut texts: [&[u8]; TEXT_FIELDS] = [&[]; TEXT_FIELDS];
    for (i, (text, p)) in texts.iter_mut().zip(section.chunks_exact(8)).enumerate() {
        let p = u64::from_le_bytes(p.try_into().ok()?);
        if p == 0 {
            continue; // null: empty text
        }
        // A list pointer (kind 1) of bytes (element size 2) with at least the
        // NUL terminator.
        let count = (p >> 35) as usize;
        if p & 0x7_0000_0003 != 0x2_0000_0001 || count == 0 {
            return None;
        }
        // The pointer's word plus one plus its offset: fits an i64 easily
        // (a word index below 2^61 and an offset below 2^29).
        let first = usize::try_from((pointer_base + i) as i64 + 1 + offset(p)).ok()?;
        let bytes = segment.get(first.checked_mul(8)?..)?.get(..count)?;
        charged += count.div_ceil(8);
        let (&nul, body) = bytes.split_last()?;
        if nul != 0 {
            return None;
        }
        *text = body;
    }
    (charged <= limit_words).then_some((texts, level))
}

/// Size of the root struct's data section, in words, read from the root
/// pointer (following a far pointer if there is one). A `HelloMsg` has none,
/// a `LoggerMsg` has one: docs/PROTOCOL.md tells them apart this way.
fn root_data_words<S: ReaderSegments>(
    message: &capnp::message::Reader<S>,
) -> Result<u16, DecodeError> {
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
            let pad = if double_far {
                word(segment, offset + 1)?
            } else {
                word(segment, offset)?
            };
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
    sink: &mut impl FnMut(RawFields<'_>),
) -> Result<Decoded, DecodeError> {
    if root_data_words(message)? == 0 {
        let hello: hello_msg::Reader<'_> = message.get_root()?;
        let mut identity = String::new();
        push_identity_part(&mut identity, hello.get_from_name()?.as_bytes());
        identity.push('@');
        push_identity_part(&mut identity, hello.get_from_host()?.as_bytes());
        return Ok(Decoded::Hello(identity));
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
        msg.get_attributes()?.as_bytes(),
    ];
    sink(RawFields::from_texts(texts, level));
    Ok(Decoded::Log)
}

/// Appends at most [`MAX_IDENTITY_PART_CHARS`] characters of `bytes` to
/// `out`, invalid UTF-8 as U+FFFD, reading no further than it keeps. The
/// text is kept as sent: escaping is for where it is shown.
fn push_identity_part(out: &mut String, bytes: &[u8]) {
    let mut left = MAX_IDENTITY_PART_CHARS;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if left == 0 {
                return;
            }
            out.push(c);
            left -= 1;
        }
        if !chunk.invalid().is_empty() {
            if left == 0 {
                return;
            }
            out.push(char::REPLACEMENT_CHARACTER);
            left -= 1;
        }
    }
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
        attributes: &r.attributes,
    }
}

#[cfg(test)]
mod tests;
