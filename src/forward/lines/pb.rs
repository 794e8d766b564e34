//! Protobuf wire format, written by hand into one growing buffer: what
//! [`super::RequestBuilder`] encodes requests with, field by field, without
//! building the prost message tree first (no allocation per record).
//!
//! A nested message's length comes before its bytes but is known only
//! after them: [`begin`] reserves room for a length of a typical size and
//! [`end`] writes it, moving the bytes only when the length needs another
//! number of bytes than reserved.

use bytes::{BufMut, BytesMut};

/// Wire type of a varint field.
pub(super) const VARINT: u8 = 0;
/// Wire type of a fixed 64-bit field.
pub(super) const I64: u8 = 1;
/// Wire type of a length-delimited field (strings, bytes, messages).
pub(super) const LEN: u8 = 2;
/// Wire type of a fixed 32-bit field.
pub(super) const I32: u8 = 5;

#[inline]
pub(super) fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub(super) fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

#[inline]
pub(super) fn put_tag(out: &mut BytesMut, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// Bytes a length-delimited field of `len` bytes takes (field number < 16).
#[inline]
pub(super) fn len_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A length-delimited field: a string, bytes, or an encoded message.
#[inline]
pub(super) fn put_bytes(out: &mut BytesMut, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.put_slice(bytes);
}

#[inline]
pub(super) fn put_uint(out: &mut BytesMut, field: u32, v: u64) {
    put_tag(out, field, VARINT);
    put_varint(out, v);
}

#[inline]
pub(super) fn put_fixed64(out: &mut BytesMut, field: u32, v: u64) {
    put_tag(out, field, I64);
    out.put_u64_le(v);
}

#[inline]
pub(super) fn put_fixed32(out: &mut BytesMut, field: u32, v: u32) {
    put_tag(out, field, I32);
    out.put_u32_le(v);
}

/// Where a nested message's length goes, returned by [`begin`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Open {
    /// Offset of the reserved length bytes.
    at: usize,
    /// How many bytes were reserved.
    reserved: usize,
}

/// Starts a nested message (its tag is already written), reserving
/// `reserved` bytes (1..=5) for its length: 2 for a record (128 B to
/// 16 KiB), 3 for a scope or resource (up to 2 MiB).
#[inline]
pub(super) fn begin(out: &mut BytesMut, reserved: usize) -> Open {
    let at = out.len();
    out.put_bytes(0, reserved);
    Open { at, reserved }
}

/// Ends the message [`begin`] started: writes its length, moving its bytes
/// if the length takes more or fewer bytes than reserved.
#[inline]
pub(super) fn end(out: &mut BytesMut, open: Open) {
    let body = open.at + open.reserved;
    let len = out.len() - body;
    let need = varint_len(len as u64);
    if need != open.reserved {
        let old_end = out.len();
        if need > open.reserved {
            out.resize(old_end + need - open.reserved, 0);
        }
        out.copy_within(body..old_end, open.at + need);
        out.truncate(open.at + need + len);
    }
    let mut v = len as u64;
    for i in 0..need {
        let more = if i + 1 < need { 0x80 } else { 0 };
        out[open.at + i] = (v as u8 & 0x7f) | more;
        v >>= 7;
    }
}

/// Bytes the length of an open message may still grow by when [`end`]
/// writes it (a length needs at most 5 bytes).
pub(super) fn end_slack(open: Open) -> usize {
    5 - open.reserved
}
