//! Cap'n Proto unpacking for [`crate::decode`]: the one place with
//! `unsafe` in the wire crate (a BMI2 fast path chosen at run time on
//! x86-64), kept apart so the decoder itself is safe code only.

use crate::decode::DecodeError;

/// Undoes Cap'n Proto's packing (capnproto.org/encoding.html#packing) of a
/// whole payload into `out`, refusing to produce more than `limit` bytes,
/// and returns the unpacked length: the message is `out[..len]`. A tag byte
/// says which of the next word's 8 bytes are non-zero, and those follow;
/// tag 0x00 is followed by a count of further zero words, tag 0xff by 8
/// bytes and then a count of raw words.
///
/// Our own loop over slices rather than capnp's `PackedRead`, which reads
/// through `BufRead` a few bytes at a time: the profile of the TCP path
/// showed it as its largest single cost. `out` keeps its length between
/// calls (it is only ever grown), so nothing is zero-filled twice and every
/// word is a fixed-size store. Mixed words (most words of a LoggerMsg:
/// pointers and short texts) are expanded with one BMI2 `pdep` where the
/// CPU has it.
pub fn unpack(packed: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<usize, DecodeError> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("bmi2") && std::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU supports BMI2 and POPCNT, checked just above.
        return unsafe { unpack_bmi2(packed, out, limit) };
    }
    unpack_with(packed, out, limit, expand_portable)
}

#[cfg(target_arch = "x86_64")]
// POPCNT too: without it, each mixed word's `count_ones` is a dozen
// instructions of bit twiddling instead of one.
#[target_feature(enable = "bmi2,popcnt")]
fn unpack_bmi2(packed: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<usize, DecodeError> {
    unpack_with(packed, out, limit, |tag, literal| {
        std::arch::x86_64::_pdep_u64(literal, TAG_BYTE_MASKS[usize::from(tag)])
    })
}

/// For each packing tag, 0xff in every byte whose tag bit is set.
pub(crate) const TAG_BYTE_MASKS: [u64; 256] = {
    let mut masks = [0u64; 256];
    let mut tag = 0;
    while tag < 256 {
        let mut bit = 0;
        while bit < 8 {
            if (tag >> bit) & 1 == 1 {
                masks[tag] |= 0xff << (8 * bit);
            }
            bit += 1;
        }
        tag += 1;
    }
    masks
};

/// Spreads the low bytes of `literal` (one per set tag bit, in order) to the
/// byte positions of the set bits; zero elsewhere. Branch-free.
pub(crate) fn expand_portable(tag: u8, literal: u64) -> u64 {
    let bytes = literal.to_le_bytes();
    let mut word = [0u8; 8];
    let mut k = 0;
    for (bit, slot) in word.iter_mut().enumerate() {
        let set = (tag >> bit) & 1;
        *slot = bytes[k & 7] & 0u8.wrapping_sub(set);
        k += usize::from(set);
    }
    u64::from_le_bytes(word)
}

#[inline(always)]
pub(crate) fn unpack_with(
    packed: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
    expand: impl Fn(u8, u64) -> u64,
) -> Result<usize, DecodeError> {
    let too_large = DecodeError::TooLarge { limit };
    let mut pos = 0;
    let mut i = 0;
    while i < packed.len() {
        if pos + 8 > limit {
            return Err(too_large);
        }
        grow(out, pos + 8);
        let tag = packed[i];
        i += 1;
        match tag {
            0x00 => {
                let run = usize::from(*packed.get(i).ok_or(DecodeError::TruncatedPacking)?);
                i += 1;
                let len = 8 * (run + 1);
                if pos + len > limit {
                    return Err(too_large);
                }
                grow(out, pos + len);
                // One word (a run of none) is the common case, and a store
                // of fixed size rather than a call to memset.
                if run == 0 {
                    out[pos..pos + 8].copy_from_slice(&[0; 8]);
                } else {
                    out[pos..pos + len].fill(0);
                }
                pos += len;
            }
            0xff => {
                let word: &[u8; 8] = packed
                    .get(i..i + 8)
                    .and_then(|w| w.try_into().ok())
                    .ok_or(DecodeError::TruncatedPacking)?;
                out[pos..pos + 8].copy_from_slice(word);
                pos += 8;
                let run = usize::from(*packed.get(i + 8).ok_or(DecodeError::TruncatedPacking)?);
                i += 9;
                let raw = packed
                    .get(i..i + 8 * run)
                    .ok_or(DecodeError::TruncatedPacking)?;
                if run > 0 {
                    if pos + raw.len() > limit {
                        return Err(too_large);
                    }
                    grow(out, pos + raw.len());
                    out[pos..pos + raw.len()].copy_from_slice(raw);
                    pos += raw.len();
                    i += raw.len();
                }
            }
            _ => {
                let n = tag.count_ones() as usize;
                if i + n > packed.len() {
                    return Err(DecodeError::TruncatedPacking);
                }
                // A fixed 8-byte load (bytes past `n` are ignored): a copy of
                // variable length would be a memcpy call per word.
                let literal = match packed.get(i..i + 8) {
                    Some(eight) => u64::from_le_bytes(eight.try_into().expect("8 bytes")),
                    None => {
                        let mut tail = [0u8; 8];
                        tail[..n].copy_from_slice(&packed[i..i + n]);
                        u64::from_le_bytes(tail)
                    }
                };
                let low = if n == 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * n)) - 1
                };
                out[pos..pos + 8].copy_from_slice(&expand(tag, literal & low).to_le_bytes());
                pos += 8;
                i += n;
            }
        }
    }
    Ok(pos)
}

/// Makes `out` at least `len` bytes long, doubling to keep growth rare.
fn grow(out: &mut Vec<u8>, len: usize) {
    if out.len() < len {
        out.resize(len.max(out.len() * 2).max(4096), 0);
    }
}
