//! The client side of the TCP wire contract: [`Fields`] -> a `LoggerMsg`
//! payload or frame, and hello frames.
//!
//! Not part of the server's data flow. `loadgen`, the benches and the tests
//! use it to speak exactly what loggers speak (docs/PROTOCOL.md), and Rust
//! programs can use it as a client library.

use crate::{fields::Fields, frame::write_frame, hello_capnp::hello_msg, logger_capnp};

/// How a payload is serialized. Loggers send packed; unpacked is accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    Packed,
    Unpacked,
}

/// Serializes `f` as a `LoggerMsg` payload (no length prefix). A level
/// outside the schema is written as its raw value, as a newer client would.
pub fn logger_payload(f: &Fields<'_>, packing: Packing) -> Vec<u8> {
    let raw_level = u16::try_from(f.level.0).unwrap_or(u16::MAX);
    let known_level = logger_capnp::Level::try_from(raw_level).ok();
    let mut message = capnp::message::Builder::new_default();
    {
        let mut m = message.init_root::<logger_capnp::logger_msg::Builder<'_>>();
        set_texts(&mut m, f);
        if let Some(level) = known_level {
            m.set_level(level);
        }
    }
    if known_level.is_some() {
        return serialize(&message, packing);
    }
    // The generated setter takes only levels in the schema. Write the raw
    // value into the serialized message: `init_root` put the root struct
    // right after the root pointer at the start of segment 0, so `level`
    // (the first u16 of the data section) is 8 bytes into segment 0, which
    // starts after the segment table (4 bytes per segment plus 4, padded
    // to a word).
    let mut words = capnp::serialize::write_message_to_words(&message);
    let segments = u32::from_le_bytes(words[0..4].try_into().expect("4 bytes")) as usize + 1;
    let seg0 = (4 * (segments + 1)).next_multiple_of(8);
    let root = u64::from_le_bytes(words[seg0..seg0 + 8].try_into().expect("8 bytes"));
    assert!(
        root & 0xffff_ffff == 0 && (root >> 32) & 0xffff >= 1,
        "root struct right after the root pointer"
    );
    words[seg0 + 8..seg0 + 10].copy_from_slice(&raw_level.to_le_bytes());
    match packing {
        Packing::Unpacked => words,
        Packing::Packed => {
            // Re-encode through a reader: the copy keeps the raw data bits.
            let mut slice = &words[..];
            let reader =
                capnp::serialize::read_message_from_flat_slice(&mut slice, Default::default())
                    .expect("a message we just wrote");
            let mut copy = capnp::message::Builder::new_default();
            copy.set_root(
                reader
                    .get_root::<logger_capnp::logger_msg::Reader<'_>>()
                    .expect("root"),
            )
            .expect("copy a message into a new builder");
            serialize(&copy, Packing::Packed)
        }
    }
}

/// Sets every text field of a `LoggerMsg` builder from `f`.
pub fn set_texts(m: &mut logger_capnp::logger_msg::Builder<'_>, f: &Fields<'_>) {
    m.set_timestamp(f.timestamp);
    m.set_hostname(f.hostname);
    m.set_logger_name(f.logger_name);
    m.set_module(f.module);
    m.set_filename(f.filename);
    m.set_function_name(f.function_name);
    m.set_line_number(f.line_number);
    m.set_message(f.message);
    m.set_path_name(f.path_name);
    m.set_process_id(f.process_id);
    m.set_process_name(f.process_name);
    m.set_thread_id(f.thread_id);
    m.set_thread_name(f.thread_name);
    m.set_service_name(f.service_name);
    m.set_stack_trace(f.stack_trace);
    // Only when there are some: an empty text still takes a word, and most
    // messages carry no structured fields.
    if !f.attributes.is_empty() {
        m.set_attributes(f.attributes);
    }
}

/// Serializes a `HelloMsg` payload (always unpacked, as loggers send it).
pub fn hello_payload(from_name: &str, from_host: &str) -> Vec<u8> {
    let mut message = capnp::message::Builder::new_default();
    {
        let mut h = message.init_root::<hello_msg::Builder<'_>>();
        h.set_from_name(from_name);
        h.set_from_host(from_host);
        h.set_from_address("127.0.0.1");
        h.set_to_address("127.0.0.1:4020");
        h.set_from_public_i_p("");
    }
    serialize(&message, Packing::Unpacked)
}

fn serialize<A: capnp::message::Allocator>(
    message: &capnp::message::Builder<A>,
    packing: Packing,
) -> Vec<u8> {
    match packing {
        Packing::Unpacked => capnp::serialize::write_message_to_words(message),
        Packing::Packed => {
            let mut out = Vec::new();
            capnp::serialize_packed::write_message(&mut out, message)
                .expect("writing to a Vec cannot fail");
            out
        }
    }
}

/// Appends a whole `LoggerMsg` frame (length prefix + payload) to `out`.
pub fn push_logger_frame(out: &mut Vec<u8>, f: &Fields<'_>, packing: Packing) {
    write_frame(out, &logger_payload(f, packing));
}

/// Appends a hello frame to `out`.
pub fn push_hello_frame(out: &mut Vec<u8>, from_name: &str, from_host: &str) {
    write_frame(out, &hello_payload(from_name, from_host));
}

/// Appends a heartbeat (a zero-length frame) to `out`.
pub fn push_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&0u32.to_be_bytes());
}

/// A `LoggerMsg` laid out word by word, for tests of the decoder's limits:
/// texts shared by several fields (aliased pointers) and texts reached
/// through far pointers in a second segment, which no Cap'n Proto builder
/// produces but which are valid messages all the same.
#[derive(Clone, Default)]
pub struct RawLoggerMsg {
    /// The raw level (first u16 of the data section).
    pub level: u16,
    /// Text bodies (a NUL is added to each), and whether the text lives in
    /// a second segment, reached through a far pointer.
    pub texts: Vec<(Vec<u8>, bool)>,
    /// Per text field in wire order: `None` for a null pointer, or the
    /// index in `texts` of the text it points at (several fields may name
    /// the same one).
    pub fields: [Option<usize>; crate::fields::TEXT_FIELDS],
}

/// Texts shown by length and first bytes: a generated message can hold
/// megabytes, which a failing property test would otherwise print whole.
impl std::fmt::Debug for RawLoggerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts: Vec<String> = self
            .texts
            .iter()
            .map(|(t, far)| {
                let head = &t[..t.len().min(16)];
                format!(
                    "{} bytes {head:?}{}",
                    t.len(),
                    if *far { " far" } else { "" }
                )
            })
            .collect();
        f.debug_struct("RawLoggerMsg")
            .field("level", &self.level)
            .field("texts", &texts)
            .field("fields", &self.fields)
            .finish()
    }
}

impl RawLoggerMsg {
    /// Every text field pointing at one text of `len` zero bytes, in one
    /// segment: the amplification frame of issue 9 (4 KiB packed for a
    /// 4 MiB text).
    pub fn aliased_zeros(len: usize) -> Self {
        RawLoggerMsg {
            level: 3,
            texts: vec![(vec![0; len], false)],
            fields: [Some(0); crate::fields::TEXT_FIELDS],
        }
    }

    /// The payload: segment table and segments, packed or not.
    pub fn payload(&self, packing: Packing) -> Vec<u8> {
        const FIELDS: usize = crate::fields::TEXT_FIELDS;
        let words_of = |t: &[u8]| (t.len() + 1).div_ceil(8);
        let list_pointer = |from: usize, to: usize, count: usize| -> u64 {
            let offset = (to as i64 - from as i64 - 1) as u64 & 0x3fff_ffff;
            1 | (offset << 2) | (2 << 32) | ((count as u64) << 35)
        };
        // Segment 0: root pointer, one data word, the pointers, near texts.
        let mut seg0 = vec![0u64; 2 + FIELDS];
        seg0[0] = (1 << 32) | ((FIELDS as u64) << 48);
        seg0[1] = u64::from(self.level);
        // Segment 1: per far text a landing pad, then the text.
        let mut seg1: Vec<u64> = Vec::new();
        let mut placed = vec![None; self.texts.len()];
        for (i, (text, far)) in self.texts.iter().enumerate() {
            let seg = if *far { &mut seg1 } else { &mut seg0 };
            let pad = seg.len();
            if *far {
                seg.push(0);
            }
            let at = seg.len();
            // The text's bytes, little-endian words, the rest of the last
            // word zero (the NUL included).
            seg.extend((0..words_of(text)).map(|w| {
                let mut word = [0u8; 8];
                let chunk = text.get(w * 8..).unwrap_or_default();
                let n = chunk.len().min(8);
                word[..n].copy_from_slice(&chunk[..n]);
                u64::from_le_bytes(word)
            }));
            if *far {
                seg[pad] = list_pointer(pad, at, text.len() + 1);
            }
            placed[i] = Some(if *far { pad } else { at });
        }
        for (f, field) in self.fields.iter().enumerate() {
            let Some(i) = *field else { continue };
            let (text, far) = &self.texts[i];
            let at = placed[i].expect("every text placed");
            let from = 2 + f;
            seg0[from] = if *far {
                // Single far pointer: landing pad `at` of segment 1.
                2 | ((at as u64) << 3) | (1 << 32)
            } else {
                list_pointer(from, at, text.len() + 1)
            };
        }
        let mut out = Vec::new();
        let segments: Vec<&[u64]> = if seg1.is_empty() {
            vec![&seg0]
        } else {
            vec![&seg0, &seg1]
        };
        out.extend_from_slice(&(segments.len() as u32 - 1).to_le_bytes());
        for s in &segments {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
        if out.len() % 8 != 0 {
            out.extend_from_slice(&[0; 4]);
        }
        for s in &segments {
            for w in s.iter() {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        match packing {
            Packing::Unpacked => out,
            Packing::Packed => pack_words(&out),
        }
    }
}

/// Cap'n Proto packing (capnproto.org/encoding.html#packing) of whole
/// words: zero words as runs, other words as a tag and their non-zero
/// bytes. Simpler than capnp's packer (no runs of raw words), and as valid.
fn pack_words(words: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() / 4 + 16);
    let mut chunks = words.chunks_exact(8).peekable();
    while let Some(word) = chunks.next() {
        let tag = word
            .iter()
            .enumerate()
            .fold(0u8, |tag, (i, &b)| tag | (u8::from(b != 0) << i));
        out.push(tag);
        out.extend(word.iter().filter(|&&b| b != 0));
        match tag {
            0x00 => {
                let mut run = 0u8;
                while run < u8::MAX && chunks.peek().is_some_and(|w| w.iter().all(|&b| b == 0)) {
                    chunks.next();
                    run += 1;
                }
                out.push(run);
            }
            0xff => out.push(0),
            _ => {}
        }
    }
    out
}
