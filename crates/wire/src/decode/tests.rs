//! Tests of payload decoding: round trips through `crate::encode`, hello
//! detection, and malformed payloads that must fail without touching the
//! batch.

use super::*;

use crate::{
    encode::{hello_payload, logger_payload, Packing},
    fields::{Fields, Level, TEXT_FIELDS},
    hello_capnp::hello_msg,
    logger_capnp,
    proto::LogRequest,
    unpack::{expand_portable, unpack_with, TAG_BYTE_MASKS},
};

const MAX: usize = 4 * 1024 * 1024;

/// Sixteen distinct texts, one per text field, in wire order.
fn texts(tag: &str) -> [String; TEXT_FIELDS] {
    [
        "2026-01-02T15:04:05.000000000Z",
        "host",
        "logger",
        "module",
        "file.py",
        "function",
        "123",
        "message text",
        "/path/name",
        "4242",
        "process",
        "777",
        "thread",
        "service",
        "stack trace",
        "{\"attr\":1}",
    ]
    .map(|s| format!("{s}-{tag}"))
}

fn fields<'a>(t: &'a [String; TEXT_FIELDS], level: Level) -> Fields<'a> {
    Fields::from_texts(std::array::from_fn(|i| t[i].as_str()), level)
}

/// A snapshot of a batch, to check that a failed decode left it alone.
fn snapshot(batch: &DecodedBatch) -> (usize, String, Vec<Fields<'_>>) {
    (batch.len(), batch.text.clone(), batch.iter().collect())
}

/// A batch holding one message already, so "unchanged" is not trivially
/// "empty".
fn primed() -> (Decoder, DecodedBatch, [String; TEXT_FIELDS]) {
    let t = texts("first");
    let mut decoder = Decoder::new(MAX);
    let mut batch = DecodedBatch::default();
    let payload = logger_payload(&fields(&t, Level(9)), Packing::Packed);
    assert_eq!(decoder.decode(&payload, &mut batch).unwrap(), Decoded::Log);
    (decoder, batch, t)
}

fn assert_fails_unchanged(
    decoder: &mut Decoder,
    batch: &mut DecodedBatch,
    payload: &[u8],
    what: &str,
) {
    let before = snapshot(batch);
    let before = (
        before.0,
        before.1,
        before
            .2
            .iter()
            .map(|f| format!("{f:?}"))
            .collect::<Vec<_>>(),
    );
    let result = decoder.decode(payload, batch);
    assert!(result.is_err(), "{what}: expected an error, got {result:?}");
    let after = snapshot(batch);
    let after = (
        after.0,
        after.1,
        after.2.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
    );
    assert_eq!(before, after, "{what}: the batch changed");
}

/// An unpacked message: segment table for one segment, then `words`.
fn one_segment(words: &[u64]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0];
    out.extend_from_slice(&(words.len() as u32).to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------- round trips

#[test]
fn logger_msg_round_trips_packed_and_unpacked() {
    for packing in [Packing::Packed, Packing::Unpacked] {
        for level in 0..12 {
            let t = texts(&format!("{packing:?}-{level}"));
            let f = fields(&t, Level(level));
            let payload = logger_payload(&f, packing);
            assert_eq!(
                payload.starts_with(&[0, 0, 0, 0]),
                packing == Packing::Unpacked
            );
            let mut decoder = Decoder::new(MAX);
            let mut batch = DecodedBatch::default();
            assert_eq!(decoder.decode(&payload, &mut batch).unwrap(), Decoded::Log);
            assert_eq!(batch.len(), 1);
            assert!(!batch.is_empty());
            let got = batch.get(0);
            assert_eq!(got, f);
            // Field by field, so a swap of two fields is named in the failure.
            assert_eq!(got.timestamp, t[0]);
            assert_eq!(got.hostname, t[1]);
            assert_eq!(got.logger_name, t[2]);
            assert_eq!(got.module, t[3]);
            assert_eq!(got.filename, t[4]);
            assert_eq!(got.function_name, t[5]);
            assert_eq!(got.line_number, t[6]);
            assert_eq!(got.message, t[7]);
            assert_eq!(got.path_name, t[8]);
            assert_eq!(got.process_id, t[9]);
            assert_eq!(got.process_name, t[10]);
            assert_eq!(got.thread_id, t[11]);
            assert_eq!(got.thread_name, t[12]);
            assert_eq!(got.service_name, t[13]);
            assert_eq!(got.stack_trace, t[14]);
            assert_eq!(got.level, Level(level));
        }
    }
}

#[test]
fn empty_and_unicode_fields_round_trip() {
    let mut t = texts("x");
    t[0] = String::new();
    t[3] = String::new();
    t[7] = "héllo 日本 😀 \n\r\t\x1b".to_owned();
    t[14] = String::new();
    for packing in [Packing::Packed, Packing::Unpacked] {
        let f = fields(&t, Level(0));
        let mut batch = DecodedBatch::default();
        assert_eq!(
            Decoder::new(MAX)
                .decode(&logger_payload(&f, packing), &mut batch)
                .unwrap(),
            Decoded::Log
        );
        assert_eq!(batch.get(0), f);
    }
    // Every field empty.
    let f = Fields::default();
    let mut batch = DecodedBatch::default();
    Decoder::new(MAX)
        .decode(&logger_payload(&f, Packing::Packed), &mut batch)
        .unwrap();
    assert_eq!(batch.get(0), f);
}

#[test]
fn unknown_level_is_kept() {
    for packing in [Packing::Packed, Packing::Unpacked] {
        for raw in [12, 42, 1000, 65535] {
            let t = texts("lvl");
            let f = fields(&t, Level(raw));
            let mut batch = DecodedBatch::default();
            let decoded = Decoder::new(MAX).decode(&logger_payload(&f, packing), &mut batch);
            assert_eq!(decoded.unwrap(), Decoded::Log, "{packing:?} level {raw}");
            assert_eq!(batch.get(0).level, Level(raw), "{packing:?}");
            assert_eq!(batch.get(0), f);
        }
    }
}

/// A `LoggerMsg` built directly, with a chosen first segment size (a small
/// one spreads the message over several segments).
fn build_logger(
    f: &Fields<'_>,
    first_segment_words: u32,
) -> capnp::message::Builder<capnp::message::HeapAllocator> {
    let mut message = capnp::message::Builder::new(
        capnp::message::HeapAllocator::new().first_segment_words(first_segment_words),
    );
    {
        let mut m = message.init_root::<logger_capnp::logger_msg::Builder<'_>>();
        crate::encode::set_texts(&mut m, f);
        m.set_level(logger_capnp::Level::try_from(f.level.0 as u16).unwrap());
    }
    message
}

fn packed_bytes<A: capnp::message::Allocator>(message: &capnp::message::Builder<A>) -> Vec<u8> {
    let mut out = Vec::new();
    capnp::serialize_packed::write_message(&mut out, message).unwrap();
    out
}

#[test]
fn packed_far_pointer_root_decodes() {
    // A first segment of one word holds only the root pointer: the struct
    // lands in a second segment behind a far pointer.
    let t = texts("far");
    let f = fields(&t, Level(9));
    let message = build_logger(&f, 1);
    assert!(message.get_segments_for_output().len() >= 2);
    let mut batch = DecodedBatch::default();
    assert_eq!(
        Decoder::new(MAX)
            .decode(&packed_bytes(&message), &mut batch)
            .unwrap(),
        Decoded::Log
    );
    assert_eq!(batch.get(0), f);

    // The same for a hello.
    let mut message =
        capnp::message::Builder::new(capnp::message::HeapAllocator::new().first_segment_words(1));
    {
        let mut h = message.init_root::<hello_msg::Builder<'_>>();
        h.set_from_name("farapp");
        h.set_from_host("farhost");
    }
    let mut batch = DecodedBatch::default();
    assert_eq!(
        Decoder::new(MAX)
            .decode(&packed_bytes(&message), &mut batch)
            .unwrap(),
        Decoded::Hello("farapp@farhost".into())
    );
    assert!(batch.is_empty());
}

/// An unpacked message of more than one segment starts with the segment
/// count minus one (not zero): docs/PROTOCOL.md says unpacked payloads are
/// accepted, and Cap'n Proto writers start a new segment once the first
/// one is full (8 KiB by default in capnp-rust, so any message field over
/// ~8 KB does this).
#[test]
fn unpacked_multi_segment_payload_decodes() {
    let t = texts("far");
    let f = fields(&t, Level(9));
    let payload = capnp::serialize::write_message_to_words(&build_logger(&f, 1));
    assert_ne!(&payload[..4], &[0, 0, 0, 0]);
    let mut batch = DecodedBatch::default();
    let r = Decoder::new(MAX).decode(&payload, &mut batch);
    assert!(
        matches!(r, Ok(Decoded::Log)),
        "multi-segment unpacked LoggerMsg: {r:?}"
    );
    assert_eq!(batch.get(0), f);

    // Through the crate's own encoder: a 10 kB message field.
    let big = "a".repeat(10_000);
    let f = Fields {
        message: &big,
        ..fields(&t, Level(3))
    };
    let payload = logger_payload(&f, Packing::Unpacked);
    let mut batch = DecodedBatch::default();
    let r = Decoder::new(1 << 20).decode(&payload, &mut batch);
    assert!(
        matches!(r, Ok(Decoded::Log)),
        "logger_payload(10 kB, Unpacked): {r:?}"
    );
    assert_eq!(batch.get(0), f);
}

// ---------------------------------------------------------------- hello

#[test]
fn hello_is_detected_and_appends_nothing() {
    let (mut decoder, mut batch, t) = primed();
    let payload = hello_payload("app", "host1");
    assert!(payload.starts_with(&[0, 0, 0, 0]));
    assert_eq!(
        decoder.decode(&payload, &mut batch).unwrap(),
        Decoded::Hello("app@host1".into())
    );
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.get(0), fields(&t, Level(9)));

    let mut empty = DecodedBatch::default();
    assert_eq!(
        decoder.decode(&payload, &mut empty).unwrap(),
        Decoded::Hello("app@host1".into())
    );
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
}

#[test]
fn packed_hello_is_detected_too() {
    let mut message = capnp::message::Builder::new_default();
    {
        let mut h = message.init_root::<hello_msg::Builder<'_>>();
        h.set_from_name("pyapp");
        h.set_from_host("box");
        h.set_from_address("10.0.0.1");
    }
    let mut payload = Vec::new();
    capnp::serialize_packed::write_message(&mut payload, &message).unwrap();
    assert!(!payload.starts_with(&[0, 0, 0, 0]));
    let mut batch = DecodedBatch::default();
    assert_eq!(
        Decoder::new(MAX).decode(&payload, &mut batch).unwrap(),
        Decoded::Hello("pyapp@box".into())
    );
    assert!(batch.is_empty());
}

#[test]
fn hello_with_invalid_utf8_names_is_lossy() {
    let mut message = capnp::message::Builder::new_default();
    {
        let mut h = message.init_root::<hello_msg::Builder<'_>>();
        h.set_from_name(capnp::text::Reader::from(&b"a\xffp"[..]));
        h.set_from_host("h\u{e9}");
    }
    let payload = capnp::serialize::write_message_to_words(&message);
    let mut batch = DecodedBatch::default();
    assert_eq!(
        Decoder::new(MAX).decode(&payload, &mut batch).unwrap(),
        Decoded::Hello("a\u{FFFD}p@h\u{e9}".into())
    );
}

// ---------------------------------------------------------------- invalid UTF-8

fn logger_with_raw_message(message_bytes: &[u8], packing: Packing) -> Vec<u8> {
    let mut message = capnp::message::Builder::new_default();
    {
        let mut m = message.init_root::<logger_capnp::logger_msg::Builder<'_>>();
        m.set_hostname("h");
        m.set_message(capnp::text::Reader::from(message_bytes));
        m.set_stack_trace("st");
        m.set_level(logger_capnp::Level::Info);
    }
    match packing {
        Packing::Unpacked => capnp::serialize::write_message_to_words(&message),
        Packing::Packed => {
            let mut out = Vec::new();
            capnp::serialize_packed::write_message(&mut out, &message).unwrap();
            out
        }
    }
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    for packing in [Packing::Packed, Packing::Unpacked] {
        let (mut decoder, mut batch, t) = primed();
        let payload = logger_with_raw_message(b"ab\xffcd", packing);
        assert_eq!(decoder.decode(&payload, &mut batch).unwrap(), Decoded::Log);
        assert_eq!(batch.len(), 2);
        let got = batch.get(1);
        assert_eq!(got.message, "ab\u{FFFD}cd");
        assert_eq!(got.hostname, "h");
        assert_eq!(got.stack_trace, "st");
        assert_eq!(got.level, Level(3));
        // The earlier message is untouched and the field boundaries hold.
        assert_eq!(batch.get(0), fields(&t, Level(9)));

        // A truncated multi-byte sequence at the end, and a lone
        // continuation byte.
        let mut batch = DecodedBatch::default();
        decoder
            .decode(&logger_with_raw_message(b"x\xe6\x97", packing), &mut batch)
            .unwrap();
        decoder
            .decode(&logger_with_raw_message(b"\x80y", packing), &mut batch)
            .unwrap();
        assert_eq!(batch.get(0).message, "x\u{FFFD}");
        assert_eq!(batch.get(1).message, "\u{FFFD}y");
        assert_eq!(batch.get(1).stack_trace, "st");
    }
}

// ---------------------------------------------------------------- malformed

#[test]
fn truncated_payloads_fail_without_touching_the_batch() {
    let t = texts("cut");
    for packing in [Packing::Packed, Packing::Unpacked] {
        let payload = logger_payload(&fields(&t, Level(3)), packing);
        let (mut decoder, mut batch, _) = primed();
        for len in 0..payload.len() {
            assert_fails_unchanged(
                &mut decoder,
                &mut batch,
                &payload[..len],
                &format!("{packing:?} cut at {len}"),
            );
        }
        // The decoder still works after all those errors.
        assert_eq!(decoder.decode(&payload, &mut batch).unwrap(), Decoded::Log);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.get(1), fields(&t, Level(3)));
    }
    let hello = hello_payload("app", "host");
    let (mut decoder, mut batch, _) = primed();
    for len in [0, 3, 4, 8, 15, 16, hello.len() - 1] {
        assert_fails_unchanged(
            &mut decoder,
            &mut batch,
            &hello[..len],
            &format!("hello cut at {len}"),
        );
    }
}

#[test]
fn garbage_fails_without_touching_the_batch() {
    let (mut decoder, mut batch, _) = primed();
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![0xff; 64],
        b"this is not a capnp message at all".to_vec(),
        vec![0x01],
        vec![0, 0, 0, 0],
        vec![0, 0, 0, 0, 0, 0, 0, 0],
        vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ];
    // A deterministic pseudo-random stream.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1, 7, 8, 9, 16, 33, 100, 1000] {
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as u8);
        }
        garbage.push(v);
    }
    for g in &garbage {
        assert_fails_unchanged(
            &mut decoder,
            &mut batch,
            g,
            &format!("garbage {:?}", &g[..g.len().min(16)]),
        );
    }
}

#[test]
fn huge_declared_segment_fails() {
    let (mut decoder, mut batch, _) = primed();
    let payload = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8];
    assert_fails_unchanged(&mut decoder, &mut batch, &payload, "huge segment");
    // Many segments declared, none present.
    let mut payload = vec![0xff, 0x01, 0, 0];
    payload.extend_from_slice(&[0xff; 64]);
    assert_fails_unchanged(&mut decoder, &mut batch, &payload, "many segments");
    // Packed: a segment table declaring a huge segment.
    // Tag byte 0xf0 = bytes 4..8 of the first word present, then the size.
    let payload = [0xf0, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00];
    assert_fails_unchanged(&mut decoder, &mut batch, &payload, "packed huge segment");
}

#[test]
fn null_root_is_an_empty_message() {
    let (mut decoder, mut batch, _) = primed();
    let payload = one_segment(&[0]);
    assert_fails_unchanged(&mut decoder, &mut batch, &payload, "null root");
    assert!(matches!(
        decoder.decode(&payload, &mut batch),
        Err(DecodeError::EmptyMessage)
    ));
    // An empty first segment has no root pointer at all.
    assert_fails_unchanged(&mut decoder, &mut batch, &one_segment(&[]), "empty segment");
}

#[test]
fn non_struct_root_is_refused() {
    let (mut decoder, mut batch, _) = primed();
    // List pointer (offset 0, byte elements, 8 of them) to one word.
    let list = one_segment(&[1 | (2 << 32) | (8 << 35), 0]);
    assert_fails_unchanged(&mut decoder, &mut batch, &list, "list root");
    assert!(matches!(
        decoder.decode(&list, &mut batch),
        Err(DecodeError::RootNotStruct)
    ));
    // Empty list pointer.
    assert_fails_unchanged(
        &mut decoder,
        &mut batch,
        &one_segment(&[1]),
        "empty list root",
    );
    // Capability pointer.
    let cap = one_segment(&[3]);
    assert_fails_unchanged(&mut decoder, &mut batch, &cap, "capability root");
    assert!(matches!(
        decoder.decode(&cap, &mut batch),
        Err(DecodeError::RootNotStruct)
    ));
}

/// Two segments of one word each; segment 0 holds `root`, segment 1 `pad`.
fn two_segments(root: u64, pad: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes()); // 2 segments
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // padding
    out.extend_from_slice(&root.to_le_bytes());
    out.extend_from_slice(&pad.to_le_bytes());
    out
}

#[test]
fn bad_far_pointer_roots_are_refused() {
    let (mut decoder, mut batch, _) = primed();
    // Far pointer to segment 1, offset 0, whose landing pad is a list pointer.
    let payload = two_segments(2 | (1 << 32), 1);
    assert_fails_unchanged(&mut decoder, &mut batch, &payload, "far to list");
    // Landing pad out of bounds of segment 1.
    assert_fails_unchanged(
        &mut decoder,
        &mut batch,
        &two_segments(2 | (5 << 3) | (1 << 32), 0),
        "far out of bounds",
    );
    // Far pointer to a segment that does not exist.
    assert_fails_unchanged(
        &mut decoder,
        &mut batch,
        &two_segments(2 | (7 << 32), 0),
        "far to segment 7",
    );
    // Double-far whose tag word lies outside the segment.
    assert_fails_unchanged(
        &mut decoder,
        &mut batch,
        &two_segments(2 | 4 | (1 << 32), 2),
        "double far",
    );
}

#[test]
fn bad_text_pointer_fails_without_touching_the_batch() {
    let t = texts("bad");
    let payload = logger_payload(&fields(&t, Level(3)), Packing::Unpacked);
    // Root struct: 1 data word then 15 pointers. Point the last one (stack
    // trace) far out of the segment.
    let root = u64::from_le_bytes(payload[8..16].try_into().unwrap());
    assert_eq!(root & 3, 0);
    let offset = ((root as u32 as i32) >> 2) as usize;
    let last_ptr = 8 + 8 * (1 + offset + 1 + 14);
    for bad in [
        1u64 | (0x0fff_fff0 << 2) | (2 << 32) | (4 << 35), // list far out of bounds
        (1u64 << 2) | (1 << 32),                           // a struct, not a text
        2u64 | (9 << 32),                                  // far to a missing segment
    ] {
        let mut p = payload.clone();
        p[last_ptr..last_ptr + 8].copy_from_slice(&bad.to_le_bytes());
        let (mut decoder, mut batch, _) = primed();
        assert_fails_unchanged(
            &mut decoder,
            &mut batch,
            &p,
            &format!("bad text pointer {bad:#x}"),
        );
    }
}

#[test]
fn unpacked_size_is_bounded_by_the_decoder_limit() {
    let big = "a".repeat(10_000);
    let zeros = "\0".repeat(10_000);
    for msg in [&big, &zeros] {
        let f = Fields {
            message: msg,
            hostname: "h",
            ..Fields::default()
        };
        // Packed as loggers send it, and unpacked in one segment (a first
        // segment large enough for the whole message).
        let packed = logger_payload(&f, Packing::Packed);
        let unpacked = capnp::serialize::write_message_to_words(&build_logger(&f, 4096));
        assert!(unpacked.starts_with(&[0, 0, 0, 0]));
        for (what, payload) in [("packed", packed), ("unpacked", unpacked)] {
            let mut small = Decoder::new(1024);
            let mut batch = DecodedBatch::default();
            let r = small.decode(&payload, &mut batch);
            assert!(r.is_err(), "{what}: {r:?}");
            assert!(batch.is_empty());
            // A small message still goes through the same decoder.
            let ok = logger_payload(
                &Fields {
                    message: "small",
                    ..f
                },
                Packing::Packed,
            );
            assert_eq!(small.decode(&ok, &mut batch).unwrap(), Decoded::Log);
            assert_eq!(batch.get(0).message, "small");

            let mut large = Decoder::new(1 << 20);
            let mut batch = DecodedBatch::default();
            assert_eq!(
                large.decode(&payload, &mut batch).unwrap(),
                Decoded::Log,
                "{what}"
            );
            assert_eq!(batch.get(0).message, msg.as_str());
            assert_eq!(batch.get(0).hostname, "h");
        }
    }
    // Zeros pack to almost nothing: the packed payload is small but would
    // unpack to ~10 kB.
    let f = Fields {
        message: &zeros,
        ..Fields::default()
    };
    assert!(logger_payload(&f, Packing::Packed).len() < 200);
}

// ---------------------------------------------------------------- batches

#[test]
fn several_messages_keep_their_order() {
    let mut decoder = Decoder::new(MAX);
    let mut batch = DecodedBatch::default();
    let all: Vec<[String; TEXT_FIELDS]> = (0..20).map(|i| texts(&format!("m{i}"))).collect();
    for (i, t) in all.iter().enumerate() {
        let packing = if i % 2 == 0 {
            Packing::Packed
        } else {
            Packing::Unpacked
        };
        assert_eq!(
            decoder
                .decode(
                    &logger_payload(&fields(t, Level(i as i32 % 14)), packing),
                    &mut batch
                )
                .unwrap(),
            Decoded::Log
        );
        if i == 7 {
            // A hello and a failure in the middle change nothing.
            decoder
                .decode(&hello_payload("a", "b"), &mut batch)
                .unwrap();
            assert!(decoder.decode(b"junk", &mut batch).is_err());
        }
    }
    assert_eq!(batch.len(), 20);
    for (i, t) in all.iter().enumerate() {
        assert_eq!(batch.get(i), fields(t, Level(i as i32 % 14)), "message {i}");
    }
    let iter = batch.iter();
    assert_eq!(iter.len(), 20);
    for (i, (got, t)) in iter.zip(&all).enumerate() {
        assert_eq!(got, fields(t, Level(i as i32 % 14)), "iter {i}");
    }

    batch.clear();
    assert!(batch.is_empty());
    assert_eq!(batch.iter().count(), 0);
    // Reused after clear.
    decoder
        .decode(
            &logger_payload(&fields(&all[3], Level(1)), Packing::Packed),
            &mut batch,
        )
        .unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.get(0), fields(&all[3], Level(1)));
}

#[test]
fn messages_with_empty_fields_keep_boundaries() {
    // Empty fields at both ends of messages must not shift the boundaries.
    let mut decoder = Decoder::new(MAX);
    let mut batch = DecodedBatch::default();
    let a = Fields {
        message: "a",
        ..Fields::default()
    };
    let b = Fields::default();
    let c = Fields {
        timestamp: "c0",
        stack_trace: "c14",
        ..Fields::default()
    };
    for f in [&a, &b, &c, &b] {
        decoder
            .decode(&logger_payload(f, Packing::Packed), &mut batch)
            .unwrap();
    }
    let got: Vec<_> = batch.iter().collect();
    assert_eq!(got, vec![a, b, c, b]);
}

// ---------------------------------------------------------------- gRPC

#[test]
fn fields_from_request_maps_every_field() {
    let t = texts("grpc");
    for (raw, level) in [
        (3, Level(3)),
        (99, Level(99)),
        (0, Level(0)),
        (-5, Level(-5)),
    ] {
        let r = LogRequest {
            timestamp: t[0].clone(),
            hostname: t[1].clone(),
            logger_name: t[2].clone(),
            module: t[3].clone(),
            level: raw,
            filename: t[4].clone(),
            function_name: t[5].clone(),
            line_number: t[6].clone(),
            message: t[7].clone(),
            path_name: t[8].clone(),
            process_id: t[9].clone(),
            process_name: t[10].clone(),
            thread_id: t[11].clone(),
            thread_name: t[12].clone(),
            service_name: t[13].clone(),
            stack_trace: t[14].clone(),
            attributes: t[15].clone(),
        };
        let f = fields_from_request(&r);
        assert_eq!(f, fields(&t, level));
        assert_eq!(f.timestamp, t[0]);
        assert_eq!(f.hostname, t[1]);
        assert_eq!(f.logger_name, t[2]);
        assert_eq!(f.module, t[3]);
        assert_eq!(f.filename, t[4]);
        assert_eq!(f.function_name, t[5]);
        assert_eq!(f.line_number, t[6]);
        assert_eq!(f.message, t[7]);
        assert_eq!(f.path_name, t[8]);
        assert_eq!(f.process_id, t[9]);
        assert_eq!(f.process_name, t[10]);
        assert_eq!(f.thread_id, t[11]);
        assert_eq!(f.thread_name, t[12]);
        assert_eq!(f.service_name, t[13]);
        assert_eq!(f.stack_trace, t[14]);
        assert_eq!(f.level, level);
    }
}

proptest::proptest! {
    /// Our unpacker undoes capnp's packer exactly, for messages with any
    /// field contents (runs of zero bytes, 0xff-heavy words, long raw runs).
    #[test]
    fn unpack_inverts_capnp_packing(
        message in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
        zeros in 0usize..4000,
        level in 0i32..70_000,
    ) {
        let text = String::from_utf8_lossy(&message).into_owned() + &"\0".repeat(zeros);
        let f = Fields { message: &text, stack_trace: "\u{ff}\u{ff}", level: Level(level.min(65_535)), ..Fields::default() };
        let unpacked = logger_payload(&f, Packing::Unpacked);
        let packed = logger_payload(&f, Packing::Packed);
        let mut out = Vec::new();
        let len = super::unpack(&packed, &mut out, 1 << 20).unwrap();
        proptest::prop_assert_eq!(&out[..len], &unpacked[..]);
        // Any strict prefix that cuts a tag's payload is refused, never a panic.
        for cut in [1, packed.len() / 2, packed.len().saturating_sub(1)] {
            let _ = super::unpack(&packed[..cut.min(packed.len())], &mut out, 1 << 20);
        }
        // The output limit holds.
        proptest::prop_assert!(super::unpack(&packed, &mut out, 64).is_err() || unpacked.len() <= 64);
    }
}

proptest::proptest! {
    /// Differential test of the fast LoggerMsg reader: on valid messages
    /// and on randomly corrupted ones, whenever it answers, it answers
    /// exactly what capnp's generic reader answers.
    #[test]
    fn fast_reader_agrees_with_capnp(
        msg in "[ -~é日\\x00\\n]{0,300}",
        host in "[a-z]{0,20}",
        level in 0i32..70_000,
        flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..6),
    ) {
        let f = Fields { message: &msg, hostname: &host, stack_trace: "st", level: Level(level.min(65_535)), ..Fields::default() };
        let mut words = logger_payload(&f, Packing::Unpacked);
        for (at, byte) in flips {
            if words.len() > 8 {
                let at = 8 + at % (words.len() - 8);
                words[at] ^= byte;
            }
        }
        let segment = &words[8..];
        if let Some((texts, level)) = super::logger_fields_fast(segment, usize::MAX) {
            let segments = [segment];
            let message = capnp::message::Reader::new(capnp::message::SegmentArray::new(&segments), Default::default());
            let root: crate::logger_capnp::logger_msg::Reader<'_> = message.get_root().unwrap();
            let raw_level = match root.get_level() { Ok(l) => l as i32, Err(capnp::NotInSchema(n)) => i32::from(n) };
            proptest::prop_assert_eq!(level, Level(raw_level));
            let generic = [
                root.get_timestamp().unwrap().as_bytes(), root.get_hostname().unwrap().as_bytes(),
                root.get_logger_name().unwrap().as_bytes(), root.get_module().unwrap().as_bytes(),
                root.get_filename().unwrap().as_bytes(), root.get_function_name().unwrap().as_bytes(),
                root.get_line_number().unwrap().as_bytes(), root.get_message().unwrap().as_bytes(),
                root.get_path_name().unwrap().as_bytes(), root.get_process_id().unwrap().as_bytes(),
                root.get_process_name().unwrap().as_bytes(), root.get_thread_id().unwrap().as_bytes(),
                root.get_thread_name().unwrap().as_bytes(), root.get_service_name().unwrap().as_bytes(),
                root.get_stack_trace().unwrap().as_bytes(), root.get_attributes().unwrap().as_bytes(),
            ];
            proptest::prop_assert_eq!(texts, generic);
        }
    }
}

#[test]
fn every_tag_expands_the_same_with_and_without_bmi2() {
    // The portable expansion against the definition, for all 256 tags.
    let literal = u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8]);
    for tag in 0..=255u8 {
        let mut want = [0u8; 8];
        let mut k = 0;
        for (bit, slot) in want.iter_mut().enumerate() {
            if tag & (1 << bit) != 0 {
                k += 1;
                *slot = k;
            }
        }
        let n = tag.count_ones();
        let low = if n == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * n)) - 1
        };
        assert_eq!(
            expand_portable(tag, literal & low).to_le_bytes(),
            want,
            "tag {tag:#04x}"
        );
        assert_eq!(TAG_BYTE_MASKS[usize::from(tag)].count_ones(), 8 * n);
    }
    // Whichever path `unpack` takes here, it agrees with the portable one.
    let payload = logger_payload(&fields(&texts("bmi"), Level(3)), Packing::Packed);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let len = super::unpack(&payload, &mut a, 1 << 20).unwrap();
    let len2 = unpack_with(&payload, &mut b, 1 << 20, expand_portable).unwrap();
    assert_eq!(a[..len], b[..len2]);
}

proptest::proptest! {
    /// Valid messages with random bytes flipped, cut short or stretched,
    /// packed or not, through the whole decoder: an error or a message,
    /// never a panic, and the batch changes only on success.
    #[test]
    fn mutated_payloads_never_panic(
        msg in "[ -~]{0,200}",
        packed in proptest::prelude::any::<bool>(),
        flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..12),
        cut in 0usize..4096,
        extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32),
    ) {
        let f = Fields { message: &msg, hostname: "h", ..Fields::default() };
        let mut payload = logger_payload(&f, if packed { Packing::Packed } else { Packing::Unpacked });
        for (at, byte) in flips {
            let at = at % payload.len();
            payload[at] ^= byte;
        }
        payload.truncate(payload.len().min(cut.max(1)));
        payload.extend_from_slice(&extra);
        let mut batch = DecodedBatch::default();
        let mut decoder = Decoder::new(64 * 1024);
        match decoder.decode(&payload, &mut batch) {
            Ok(Decoded::Log) => proptest::prop_assert_eq!(batch.len(), 1),
            Ok(Decoded::Hello(_)) | Err(_) => proptest::prop_assert_eq!(batch.len(), 0),
        }
    }
}

// ------------------------------------------- amplification (issue 9, point 1)

use crate::encode::RawLoggerMsg;

/// What capnp's generic reader makes of one unpacked segment under a
/// traversal limit of `limit_words`: the texts, or `None` if it refuses.
fn capnp_texts(segment: &[u8], limit_words: usize) -> Option<Vec<Vec<u8>>> {
    let segments = [segment];
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(Some(limit_words));
    let message = capnp::message::Reader::new(SegmentArray::new(&segments), options);
    let root: logger_capnp::logger_msg::Reader<'_> = message.get_root().ok()?;
    type Getter =
        for<'a> fn(&logger_capnp::logger_msg::Reader<'a>) -> capnp::Result<capnp::text::Reader<'a>>;
    let getters: [Getter; TEXT_FIELDS] = [
        |r| r.get_timestamp(),
        |r| r.get_hostname(),
        |r| r.get_logger_name(),
        |r| r.get_module(),
        |r| r.get_filename(),
        |r| r.get_function_name(),
        |r| r.get_line_number(),
        |r| r.get_message(),
        |r| r.get_path_name(),
        |r| r.get_process_id(),
        |r| r.get_process_name(),
        |r| r.get_thread_id(),
        |r| r.get_thread_name(),
        |r| r.get_service_name(),
        |r| r.get_stack_trace(),
        |r| r.get_attributes(),
    ];
    getters
        .iter()
        .map(|get| get(&root).ok().map(|t| t.as_bytes().to_vec()))
        .collect()
}

/// The bomb of issue 9: a ~4 KiB packed frame whose 15 text pointers all
/// alias one list of ~4 MiB of zero bytes. Before the fix the fast reader
/// handed out 15 x 4 MiB of text (60 MiB to copy and format); now it is
/// refused, packed or not, and costs only its unpacking.
#[test]
fn aliased_pointers_to_one_huge_list_are_refused() {
    let len = MAX - 4096;
    for packing in [Packing::Packed, Packing::Unpacked] {
        let payload = RawLoggerMsg::aliased_zeros(len).payload(packing);
        if packing == Packing::Packed {
            assert!(payload.len() < 8 * 1024, "{} bytes packed", payload.len());
        }
        let (mut decoder, mut batch, _) = primed();
        let before = decoder.bytes_touched();
        assert_fails_unchanged(&mut decoder, &mut batch, &payload, "aliased bomb");
        let mut formatted = 0;
        let result = decoder.decode_with(&payload, |raw| formatted += raw.text_len());
        assert!(result.is_err(), "{packing:?}: {result:?}");
        assert_eq!(formatted, 0, "{packing:?}: no text handed on");
        // Twice (decode and decode_with): at most the unpacked size each.
        let work = decoder.bytes_touched() - before;
        assert!(
            work <= 2 * (MAX as u64 + 4096),
            "{packing:?}: {work} bytes touched"
        );
    }
    // The same through far pointers (capnp's generic reader) is refused too.
    let mut far = RawLoggerMsg::aliased_zeros(len);
    far.texts[0].1 = true;
    let (mut decoder, mut batch, _) = primed();
    assert_fails_unchanged(
        &mut decoder,
        &mut batch,
        &far.payload(Packing::Packed),
        "far bomb",
    );
    // Aliasing that stays within the 4 MiB limit (15 x 250 KB) but
    // references 15 times what the message holds is refused as well: it
    // would format to 10 MB from a 1 KiB frame.
    let (mut decoder, mut batch, _) = primed();
    let small = RawLoggerMsg::aliased_zeros(250_000).payload(Packing::Packed);
    assert!(small.len() < 1024);
    assert_fails_unchanged(&mut decoder, &mut batch, &small, "aliased within the limit");
    // One field holding the whole list, no aliasing, is a valid message.
    let mut single = RawLoggerMsg::aliased_zeros(len);
    single.fields = [None; TEXT_FIELDS];
    single.fields[7] = Some(0);
    let mut batch = DecodedBatch::default();
    let mut decoder = Decoder::new(MAX);
    decoder
        .decode(&single.payload(Packing::Packed), &mut batch)
        .unwrap();
    assert_eq!(batch.get(0).message.len(), len);
}

/// At the exact boundary of the traversal limit, the fast reader and
/// capnp's generic reader accept and refuse the same aliased messages.
#[test]
fn fast_reader_charges_aliased_texts_like_capnp() {
    // Root pointer + struct (1 data word, one pointer per text field),
    // then every field aliasing one text of 10 words.
    let limit = 2 + TEXT_FIELDS + TEXT_FIELDS * 10;
    for text_words in 8..12 {
        let len = text_words * 8 - 1; // plus the NUL: exactly `text_words`
        let payload = RawLoggerMsg::aliased_zeros(len).payload(Packing::Unpacked);
        let segment = &payload[8..];
        let fast = logger_fields_fast(segment, limit);
        let generic = capnp_texts(segment, limit);
        assert_eq!(fast.is_some(), generic.is_some(), "{text_words} words");
        assert_eq!(fast.is_some(), text_words <= 10, "{text_words} words");
    }
}
