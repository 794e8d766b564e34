//! The client side of the TCP wire contract: [`Fields`] -> a `LoggerMsg`
//! payload or frame, and hello frames.
//!
//! Not part of the server's data flow. `loadgen`, the benches and the tests
//! use it to speak exactly what loggers speak (PROTOCOL.md), and Rust
//! programs can use it as a client library.

use crate::{
    ingest::frame::write_frame,
    record::Fields,
    wire::{hello_capnp::hello_msg, logger_capnp},
};

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
